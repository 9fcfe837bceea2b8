"""Tests of the FSDD reader and its cochlea-like spike encoder on synthetic and real recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from ecs_train.data import DataConfig, DatasetFormatError, build_data_module, shared_data_dir
from ecs_train.data.fsdd import CochleaEncoder, list_recordings, read_wav

RATE = 8000


def tone(frequency_hz: float, duration_s: float = 0.4, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(duration_s * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * frequency_hz * t)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    wavfile.write(path, rate, (samples * 32767).astype(np.int16))


def write_tone_folder(folder: Path, speakers: tuple[str, ...] = ("ann", "bob"), num_indices: int = 7) -> None:
    """Write a recording per digit, speaker and index: a tone whose frequency depends on the digit."""
    folder.mkdir(parents=True)
    for digit in range(10):
        for speaker in speakers:
            for index in range(num_indices):
                write_wav(folder / f"{digit}_{speaker}_{index}.wav", tone(200.0 + 300.0 * digit))


def test_read_wav_scales_int16(tmp_path):
    path = tmp_path / "0_ann_0.wav"
    wavfile.write(path, RATE, np.array([0, 16384, -32768], dtype=np.int16))

    np.testing.assert_allclose(read_wav(path), [0.0, 0.5, -1.0])


def test_read_wav_wrong_sample_rate(tmp_path):
    path = tmp_path / "0_ann_0.wav"
    write_wav(path, tone(440.0), rate=16000)

    with pytest.raises(DatasetFormatError, match=r"0_ann_0\.wav has a sample rate of 16000 Hz, expected 8000 Hz"):
        read_wav(path)


def test_read_wav_stereo(tmp_path):
    path = tmp_path / "0_ann_0.wav"
    wavfile.write(path, RATE, np.zeros((100, 2), dtype=np.int16))

    with pytest.raises(DatasetFormatError, match=r"has 2 audio channels, expected 1 \(mono\)"):
        read_wav(path)


def test_list_recordings_order_and_skips(tmp_path):
    for name in ("1_bob_0.wav", "0_bob_1.wav", "0_ann_0.wav", "notes.txt", "bad-name.wav"):
        (tmp_path / name).write_bytes(b"")

    names = [recording.path.name for recording in list_recordings(tmp_path)]

    assert names == ["0_ann_0.wav", "1_bob_0.wav", "0_bob_1.wav"]


def test_encoder_tone_excites_matching_channels():
    encoder = CochleaEncoder(num_channels=64, num_timesteps=20, duration_s=0.5)
    centers = encoder.center_frequencies()

    spikes = encoder.encode([tone(500.0), tone(2000.0), np.zeros(800)])

    assert spikes.shape == (3, 20, 64)
    assert spikes.dtype == np.uint8
    assert spikes.max() == 1
    for row, frequency in ((0, 500.0), (1, 2000.0)):
        counts = spikes[row].sum(axis=0)
        assert abs(centers[np.argmax(counts)] - frequency) < 0.1 * frequency
        assert counts[np.abs(centers - frequency) > 0.5 * frequency].max() < counts.max() / 2
    assert spikes[2].sum() == 0, "silence gives no spikes"


def test_encoder_silence_after_recording_end():
    encoder = CochleaEncoder(num_channels=32, num_timesteps=10, duration_s=1.0)

    spikes = encoder.encode([tone(800.0, duration_s=0.3)])

    assert spikes[0, :3].sum() > 0
    assert spikes[0, 5:].sum() == 0


def test_encoder_ignores_gain():
    encoder = CochleaEncoder(num_channels=32, num_timesteps=10, duration_s=0.5)

    loud, quiet = encoder.encode([tone(700.0, amplitude=0.9), tone(700.0, amplitude=0.01)])

    np.testing.assert_array_equal(loud, quiet)


def test_encoder_filter_bank_columns():
    encoder = CochleaEncoder(num_channels=700)
    weights = encoder.filter_bank(256)
    centers = encoder.center_frequencies()

    assert weights.shape == (129, 700)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, rtol=1e-5)
    assert centers[0] == pytest.approx(80.0)
    assert centers[-1] == pytest.approx(3800.0)
    assert np.all(np.diff(centers) > 0)


def test_fsdd_synthetic_module(tmp_path):
    write_tone_folder(tmp_path / "fsdd" / "recordings")
    cfg = DataConfig(
        name="fsdd",
        data_dir=tmp_path / "fsdd",
        cache_dir=tmp_path / "cache",
        num_timesteps=10,
        num_channels=48,
        validation_fraction=0.25,
    )

    module = build_data_module(cfg, batch_size=8)
    x, y = next(iter(module.train_dataloader()))

    assert module.dataset_name == "fsdd"
    assert module.input_shape == (48,)
    assert module.num_classes == 10
    assert x.shape == (8, 10, 48)
    assert x.dtype == torch.float32
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert y.dtype == torch.int64
    train, val, test = (module.split(name) for name in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (30, 10, 100)
    recordings = module.source.recordings
    assert all(recordings[i].index < 5 for i in test.ids)
    assert all(recordings[i].index >= 5 for i in np.concatenate([train.ids, val.ids]))
    assert not set(train.ids) & set(val.ids)
    np.testing.assert_array_equal(test.labels[:10], np.arange(10))


def test_fsdd_data_dir_may_be_recordings_folder(tmp_path):
    write_tone_folder(tmp_path / "recordings", speakers=("ann",), num_indices=6)
    cfg = DataConfig(
        name="fsdd",
        data_dir=tmp_path / "recordings",
        cache_dir=tmp_path / "cache",
        num_timesteps=5,
        num_channels=16,
        max_samples=4,
    )

    x, y = build_data_module(cfg, batch_size=4).test_arrays(4)

    assert x.shape == (4, 5, 16)
    np.testing.assert_array_equal(y, [0, 1, 2, 3])


def test_fsdd_without_data_dir():
    with pytest.raises(FileNotFoundError, match=r"FSDD has no download, so set data_dir"):
        build_data_module(DataConfig(name="fsdd"), batch_size=2)


def test_fsdd_missing_folder(tmp_path):
    cfg = DataConfig(name="fsdd", data_dir=tmp_path / "absent", cache_dir=tmp_path)

    with pytest.raises(FileNotFoundError, match=r"FSDD folder .*absent not found"):
        build_data_module(cfg, batch_size=2)


def test_fsdd_empty_folder(tmp_path):
    cfg = DataConfig(name="fsdd", data_dir=tmp_path, cache_dir=tmp_path / "cache")

    with pytest.raises(FileNotFoundError, match=r"no FSDD recordings named .* found in"):
        build_data_module(cfg, batch_size=2)


def test_fsdd_wrong_rate_in_folder(tmp_path):
    write_tone_folder(tmp_path / "recordings", speakers=("ann",), num_indices=1)
    write_wav(tmp_path / "recordings" / "3_ann_0.wav", tone(300.0), rate=44100)
    cfg = DataConfig(name="fsdd", data_dir=tmp_path, cache_dir=tmp_path / "cache")

    with pytest.raises(DatasetFormatError, match=r"3_ann_0\.wav has a sample rate of 44100 Hz"):
        build_data_module(cfg, batch_size=2).setup()


@pytest.mark.real_data
def test_fsdd_real_recordings(tmp_path):
    root = shared_data_dir()
    folder = root / "fsdd" if root is not None else None
    if folder is None or not (folder / "recordings").is_dir():
        pytest.skip(f"FSDD sample folder not found at {folder or 'ECS_DATA_DIR or shared/data'}")
    cfg = DataConfig(name="fsdd", data_dir=folder, cache_dir=tmp_path, num_timesteps=50, max_samples=10)

    module = build_data_module(cfg, batch_size=10)
    x, y = next(iter(module.test_dataloader()))

    assert x.shape == (10, 50, 700)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(y.numpy(), np.arange(10))
    spikes_per_sample = x.sum(dim=(1, 2))
    assert (spikes_per_sample > 100).all(), "every spoken digit produces spikes"
    assert (x.mean(dim=(1, 2)) < 0.5).all(), "silence before and after the word leaves most bins empty"
    assert len(module.split("train")) == 10
    assert len(module.split("val")) == 10
