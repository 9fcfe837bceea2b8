"""Free Spoken Digit Dataset (FSDD): 8 kHz recordings turned into spike trains by a cochlea-like encoder."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ecs_train.data.config import DataConfig
from ecs_train.data.errors import DatasetFormatError
from ecs_train.data.paths import shared_data_dir
from ecs_train.data.source import Part
from ecs_train.data.splits import SampleList

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 8000
FILE_PATTERN = re.compile(r"^(?P<digit>\d)_(?P<speaker>[^_]+)_(?P<index>\d+)\.wav$")

# FSDD's own split puts the recordings with index 0-4 of every speaker and digit in the test set.
NUM_TEST_INDICES = 5

# Recordings encoded per batch. Peak memory of one batch measured 180 MB (tracemalloc) at 700 channels
# and 100 time bins, and grows in proportion to both.
ENCODE_BATCH = 200


@dataclass(frozen=True)
class Recording:
    """One FSDD file, named ``{digit}_{speaker}_{index}.wav``."""

    path: Path
    digit: int
    speaker: str
    index: int


def list_recordings(folder: Path) -> list[Recording]:
    """List the FSDD recordings in a folder, ordered by index, speaker and digit.

    That order interleaves the classes, so the first N samples of a split cover all digits.
    """
    recordings = []
    skipped = []
    for path in folder.iterdir():
        match = FILE_PATTERN.match(path.name)
        if match is None:
            if path.suffix == ".wav":
                skipped.append(path.name)
            continue
        recordings.append(
            Recording(path=path, digit=int(match["digit"]), speaker=match["speaker"], index=int(match["index"]))
        )

    if skipped:
        logger.warning(
            "skipped %d .wav files in %s whose names are not {digit}_{speaker}_{index}.wav, e.g. %s",
            len(skipped),
            folder,
            skipped[0],
        )
    return sorted(recordings, key=lambda recording: (recording.index, recording.speaker, recording.digit))


def read_wav(path: Path) -> np.ndarray:
    """Read a mono 8 kHz wav file as float32 samples in [-1, 1]."""
    from scipy.io import wavfile

    rate, samples = wavfile.read(path)
    if rate != SAMPLE_RATE_HZ:
        raise DatasetFormatError(
            f"FSDD recording {path} has a sample rate of {rate} Hz, expected {SAMPLE_RATE_HZ} Hz. "
            "Resample it to 8 kHz (e.g. with scipy.signal.resample_poly)"
        )
    if samples.ndim != 1:
        raise DatasetFormatError(
            f"FSDD recording {path} has {samples.shape[1]} audio channels, expected 1 (mono). Mix it down to mono"
        )

    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(samples.dtype, np.integer):
        return samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    return samples.astype(np.float32)


def _erb_number(frequency_hz: np.ndarray | float) -> np.ndarray:
    # Glasberg & Moore (1990) ERB-number scale: cochlear place as a function of frequency.
    return 21.4 * np.log10(1.0 + 0.00437 * np.asarray(frequency_hz))


def _erb_frequency(erb_number: np.ndarray) -> np.ndarray:
    return (10.0 ** (erb_number / 21.4) - 1.0) / 0.00437


@dataclass(frozen=True)
class CochleaEncoder:
    """Cochlea-like spike encoder for 8 kHz audio.

    1. A short-time power spectrum (Hann window of ``window_s``, hop at most ``max_hop_s``) is
       averaged over each time bin.
    2. A bank of ``num_channels`` filters with 4th-order gammatone-like magnitude responses weights
       the spectrum. Their center frequencies are evenly spaced on the ERB-number scale between
       ``min_frequency_hz`` and ``max_frequency_hz``, and channel 0 is the lowest.
    3. Log compression maps each band energy to a level in [0, 1], from ``dynamic_range_db`` below
       the recording's loudest band energy up to that energy.
    4. One integrate-and-fire neuron per channel adds the level every bin and spikes each time its
       sum crosses the next integer, so a channel at full level spikes in every bin.

    The power spectrum is already the rectified energy envelope, so there is no separate half-wave
    rectification step.
    """

    num_channels: int = 700
    num_timesteps: int = 100
    duration_s: float = 1.0
    sample_rate_hz: int = SAMPLE_RATE_HZ
    min_frequency_hz: float = 80.0
    max_frequency_hz: float = 3800.0
    window_s: float = 0.025
    max_hop_s: float = 0.010
    dynamic_range_db: float = 45.0
    phase_seed: int = 0

    @property
    def num_samples(self) -> int:
        """Audio samples per encoded recording. Longer recordings are cut and shorter ones padded with silence."""
        return int(round(self.duration_s * self.sample_rate_hz))

    def center_frequencies(self) -> np.ndarray:
        """Return the channels' center frequencies in Hz, evenly spaced on the ERB-number scale."""
        low, high = _erb_number(self.min_frequency_hz), _erb_number(self.max_frequency_hz)
        return _erb_frequency(np.linspace(low, high, self.num_channels))

    def filter_bank(self, num_fft: int) -> np.ndarray:
        """Return the filters' power weights ``[num_fft // 2 + 1, num_channels]``, each column summing to 1."""
        frequencies = np.arange(num_fft // 2 + 1) * self.sample_rate_hz / num_fft
        centers = self.center_frequencies()
        bandwidths = 1.019 * 24.7 * (4.37 * centers / 1000.0 + 1.0)
        # Squared magnitude of a 4th-order gammatone filter, |H(f)|^2 = (1 + ((f - fc) / b)^2)^-4.
        weights = (1.0 + ((frequencies[:, None] - centers[None, :]) / bandwidths[None, :]) ** 2) ** -4.0
        weights /= weights.sum(axis=0, keepdims=True)
        return weights.astype(np.float32)

    def band_energy(self, signals: np.ndarray) -> np.ndarray:
        """Return the mean power per channel and time bin ``[N, T, num_channels]`` of signals ``[N, num_samples]``."""
        num_samples = self.num_samples
        window = max(2, int(round(self.window_s * self.sample_rate_hz)))
        num_fft = 1 << (window - 1).bit_length()
        hop = max(1, min(int(round(self.max_hop_s * self.sample_rate_hz)), num_samples // self.num_timesteps))

        # Frames are centered at multiples of `hop`, and the hop never exceeds a bin, so every bin gets a frame.
        padded = np.pad(signals, ((0, 0), (window // 2, window - window // 2)))
        num_frames = -(-num_samples // hop)
        frames = sliding_window_view(padded, window, axis=1)[:, ::hop][:, :num_frames]
        spectrum = np.fft.rfft(frames * np.hanning(window).astype(np.float32), n=num_fft, axis=-1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)

        frame_bins = np.minimum(self.num_timesteps - 1, np.arange(num_frames) * hop * self.num_timesteps // num_samples)
        frames_per_bin = np.maximum(1, np.bincount(frame_bins, minlength=self.num_timesteps)).astype(np.float32)
        averaging = np.zeros((num_frames, self.num_timesteps), dtype=np.float32)
        averaging[np.arange(num_frames), frame_bins] = 1.0 / frames_per_bin[frame_bins]

        binned = np.matmul(power.transpose(0, 2, 1), averaging).transpose(0, 2, 1)
        return np.matmul(binned, self.filter_bank(num_fft))

    def encode(self, recordings: Sequence[np.ndarray]) -> np.ndarray:
        """Encode audio recordings (float samples) into uint8 spike frames ``[N, T, num_channels]``."""
        signals = np.zeros((len(recordings), self.num_samples), dtype=np.float32)
        for row, recording in enumerate(recordings):
            clip = np.asarray(recording[: self.num_samples], dtype=np.float32)
            peak = float(np.abs(clip).max()) if clip.size else 0.0
            if peak > 0:
                signals[row, : clip.size] = clip / peak

        energy = self.band_energy(signals)

        # The level rises from 0 at `dynamic_range_db` below the loudest band energy to 1 at that energy.
        floor = energy.max(axis=(1, 2), keepdims=True) * 10.0 ** (-self.dynamic_range_db / 10.0)
        floor = np.maximum(floor, np.finfo(np.float32).tiny)
        np.maximum(energy, floor, out=energy)
        energy /= floor
        level = np.log(energy, out=energy)
        level *= 1.0 / np.log(10.0 ** (self.dynamic_range_db / 10.0))
        np.minimum(level, 1.0, out=level)

        # With integrate-and-fire and subtractive reset, the spike count up to bin t is floor(phase + sum
        # of levels), so a bin spikes when the floor steps up. Random initial phases keep channels at the
        # same level from firing in the same bins.
        phase = np.random.default_rng(self.phase_seed).random(self.num_channels).astype(np.float32)
        total = np.cumsum(level, axis=1, out=level)
        total += phase
        counts = np.floor(total, out=total)
        spikes = np.diff(counts, axis=1, prepend=np.floor(phase)[None, None, :].repeat(len(counts), axis=0))
        return (spikes > 0.5).astype(np.uint8)


class FSDDSource:
    """FSDD recordings as spike frames ``[T, num_channels]`` in the SHD layout, reported as FSDD and never as SHD."""

    name = "fsdd"
    num_classes = 10

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.input_shape: tuple[int, ...] = (cfg.num_channels,)
        self.encoder = CochleaEncoder(
            num_channels=cfg.num_channels,
            num_timesteps=cfg.num_timesteps,
            duration_s=cfg.resolved_duration_s(),
        )
        self.folder = self._locate()
        self.recordings = list_recordings(self.folder)
        if not self.recordings:
            raise FileNotFoundError(
                f"no FSDD recordings named {{digit}}_{{speaker}}_{{index}}.wav found in {self.folder}. "
                "Set data_dir to the FSDD folder or its recordings/ subfolder"
            )

    def _locate(self) -> Path:
        root = self.cfg.data_dir
        if root is None:
            sample = shared_data_dir()
            hint = f" (sample recordings found at {sample / 'fsdd'})" if sample and (sample / "fsdd").is_dir() else ""
            raise FileNotFoundError(
                "FSDD has no download, so set data_dir to the folder of {digit}_{speaker}_{index}.wav recordings"
                f" or the folder above its recordings/ subfolder{hint}"
            )
        if not root.is_dir():
            raise FileNotFoundError(
                f"FSDD folder {root} not found. Set data_dir to the folder of {{digit}}_{{speaker}}_{{index}}.wav "
                "recordings or the folder above its recordings/ subfolder"
            )
        return root / "recordings" if (root / "recordings").is_dir() else root

    def sample_lists(self) -> dict[Part, SampleList]:
        """Split by recording index into test (0-4) and training (the rest). Ids are positions in the recording list."""
        labels = np.asarray([recording.digit for recording in self.recordings], dtype=np.int64)
        is_test = np.asarray([recording.index < NUM_TEST_INDICES for recording in self.recordings])
        everything = SampleList(ids=np.arange(len(labels), dtype=np.int64), labels=labels)
        return {"train": everything.select(~is_test), "test": everything.select(is_test)}

    def cache_params(self, part: Part) -> dict[str, Any]:
        """Return the encoder parameters and the folder's path, file count and modification time."""
        return {
            "dataset": self.name,
            "part": part,
            "folder": str(self.folder.resolve()),
            "num_recordings": len(self.recordings),
            "folder_mtime_ns": self.folder.stat().st_mtime_ns,
            "encoder": dataclasses.asdict(self.encoder),
        }

    def convert(self, part: Part, samples: SampleList) -> np.ndarray:
        """Read and encode the recordings in batches."""
        batches = []
        cut = 0
        for start in range(0, len(samples), ENCODE_BATCH):
            ids = samples.ids[start : start + ENCODE_BATCH]
            audio = [read_wav(self.recordings[int(sample_id)].path) for sample_id in ids]
            cut += sum(len(recording) > self.encoder.num_samples for recording in audio)
            batches.append(self.encoder.encode(audio))

        if cut:
            logger.info("cut %d of %d FSDD recordings to duration_s=%.2f s", cut, len(samples), self.encoder.duration_s)
        if not batches:
            return np.zeros((0, self.cfg.num_timesteps, self.cfg.num_channels), dtype=np.uint8)
        return np.concatenate(batches)
