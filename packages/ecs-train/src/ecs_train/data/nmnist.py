"""N-MNIST: a reader for folders of binary recordings with label lists, and tonic's NMNIST dataset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ecs_train.data.config import NMNIST_SENSOR_PIXELS, DataConfig
from ecs_train.data.errors import DatasetFormatError, make_download_error
from ecs_train.data.source import Part
from ecs_train.data.splits import SampleList

logger = logging.getLogger(__name__)

BYTES_PER_EVENT = 5
RECORDING_SUFFIXES = (".bs2", ".bin")

# Event layout of tonic's NMNIST dataset (tonic 1.7.0), which the tonic transforms expect.
EVENT_DTYPE = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])


def decode_events(raw: bytes | np.ndarray, source: str = "<bytes>") -> np.ndarray:
    """Decode N-MNIST binary events into a structured array with fields x, y, t (microseconds) and p.

    Each event is 5 bytes ``b0..b4``: ``x = b0``, ``y = b1``, ``p = b2 >> 7`` (1 for ON, 0 for OFF)
    and ``t = (b2 & 0x7F) << 16 | b3 << 8 | b4`` in microseconds.
    """
    data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, bytes) else np.asarray(raw, dtype=np.uint8)
    if data.size % BYTES_PER_EVENT:
        raise DatasetFormatError(
            f"N-MNIST recording {source} is truncated: {data.size} bytes is not a multiple of "
            f"{BYTES_PER_EVENT} bytes per event. Replace it with an intact copy"
        )

    fields = data.reshape(-1, BYTES_PER_EVENT).astype(np.int64)
    events = np.empty(len(fields), dtype=EVENT_DTYPE)
    events["x"] = fields[:, 0]
    events["y"] = fields[:, 1]
    events["p"] = fields[:, 2] >> 7
    events["t"] = ((fields[:, 2] & 0x7F) << 16) | (fields[:, 3] << 8) | fields[:, 4]

    # NOTE: tonic 1.7.0's reader treats y = 240 as a timestamp-overflow marker. Recordings of about
    # 0.3 s need no such marker and the 1,100 sample recordings contain none, so one is rejected here.
    outside = (events["x"] >= NMNIST_SENSOR_PIXELS) | (events["y"] >= NMNIST_SENSOR_PIXELS)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise DatasetFormatError(
            f"N-MNIST recording {source}: event {first} has pixel ({events['x'][first]}, {events['y'][first]}) "
            f"outside the {NMNIST_SENSOR_PIXELS} x {NMNIST_SENSOR_PIXELS} sensor, so it is not an N-MNIST recording"
        )
    return events


def read_recording(path: Path) -> np.ndarray:
    """Read one N-MNIST ``.bs2``/``.bin`` file into a structured event array (see ``decode_events``)."""
    return decode_events(np.fromfile(path, dtype=np.uint8), source=str(path))


def read_label_list(path: Path) -> SampleList:
    """Read a label list of ``<id> <label>`` lines, skipping blank lines and comment lines that start with ``#``."""
    if not path.is_file():
        raise FileNotFoundError(
            f"N-MNIST label list {path} not found. Put it beside the recordings or set nmnist_train_list / "
            "nmnist_test_list to the file names in data_dir"
        )

    ids: list[int] = []
    labels: list[int] = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split()
        try:
            sample_id, label = int(fields[0]), int(fields[1])
        except (IndexError, ValueError):
            raise DatasetFormatError(
                f"{path}, line {line_number}: expected '<id> <label>' with two integers, got {text!r}"
            ) from None
        if not 0 <= label <= 9:
            raise DatasetFormatError(f"{path}, line {line_number}: label {label} is not a digit 0-9")
        ids.append(sample_id)
        labels.append(label)

    if not ids:
        raise DatasetFormatError(f"N-MNIST label list {path} lists no recordings")
    return SampleList(ids=np.asarray(ids, dtype=np.int64), labels=np.asarray(labels, dtype=np.int64))


def events_to_frames(events: np.ndarray, size: int, num_timesteps: int, duration_us: int) -> np.ndarray:
    """Downsample N-MNIST events to ``size`` x ``size`` pixels and bin them into binary frames.

    Events at or after ``duration_us`` microseconds are dropped. Returns uint8 ``[T, 2, size, size]``
    with channel 0 for OFF and channel 1 for ON events.
    """
    from tonic.transforms import Downsample, ToFrame

    events = events.copy()

    # The timestamp becomes the integer bin index, so that every sample gets the same bin edges, and
    # ToFrame then cuts bins of width 1 from 0 to T.
    events["t"] = events["t"] * num_timesteps // duration_us
    events = events[events["t"] < num_timesteps]
    if np.any(np.diff(events["t"]) < 0):
        events = events[np.argsort(events["t"], kind="stable")]
    if len(events) == 0:
        return np.zeros((num_timesteps, 2, size, size), dtype=np.uint8)

    events = Downsample(spatial_factor=size / NMNIST_SENSOR_PIXELS)(events)
    to_frame = ToFrame(sensor_size=(size, size, 2), time_window=1, start_time=0, end_time=num_timesteps)
    counts = to_frame(events)
    return np.minimum(counts, 1).astype(np.uint8)


def interleave_classes(labels: np.ndarray) -> np.ndarray:
    """Return an order of the samples that cycles through the classes: first of every class, then second, ..."""
    rank_in_class = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank_in_class[members] = np.arange(len(members))
    return np.lexsort((labels, rank_in_class)).astype(np.int64)


class NMNISTSource:
    """N-MNIST recordings as frames ``[T, 2, nmnist_size, nmnist_size]``.

    ``data_dir`` may hold ``<id>.bs2`` recordings with the label lists ``nmnist_train_list`` and
    ``nmnist_test_list`` (the folder reader), or tonic's download layout (``NMNIST/Train``, ``NMNIST/Test``
    and the zip files). With ``data_dir`` None, tonic's NMNIST is read from (or downloaded into) ``cache_dir``.
    """

    name = "nmnist"
    num_classes = 10

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.input_shape: tuple[int, ...] = (2, cfg.nmnist_size, cfg.nmnist_size)
        self.duration_us = int(round(cfg.resolved_duration_s() * 1e6))
        self.layout, self.root = self._locate()
        self._tonic_datasets: dict[Part, Any] = {}

    def _locate(self) -> tuple[Literal["folder", "tonic"], Path]:
        # The root is the recordings folder, or the folder that tonic's `save_to` names.
        cfg = self.cfg
        root = cfg.data_dir
        if root is None:
            return "tonic", cfg.cache_dir

        if not root.is_dir():
            raise FileNotFoundError(
                f"N-MNIST folder {root} not found. Set data_dir to a folder of <id>.bs2 recordings with "
                f"{cfg.nmnist_train_list} and {cfg.nmnist_test_list}, or to tonic's NMNIST download folder"
            )
        if (root / "NMNIST").is_dir():
            return "tonic", root
        if root.name == "NMNIST" and (root / "Train").is_dir():
            return "tonic", root.parent
        # A label list that is missing raises in read_label_list, naming the file.
        return "folder", root

    def _tonic_dataset(self, part: Part) -> Any:
        if part not in self._tonic_datasets:
            import tonic

            location = self.root / "NMNIST"
            if self.cfg.data_dir is None and not self.cfg.download and not location.is_dir():
                raise FileNotFoundError(
                    f"N-MNIST not found in {location} and download is off. Set download=True, or set data_dir "
                    "to a folder of N-MNIST recordings"
                )
            logger.info("opening tonic's NMNIST (%s) in %s", part, location)
            try:
                self._tonic_datasets[part] = tonic.datasets.NMNIST(save_to=str(self.root), train=part == "train")
            except OSError as error:  # urllib's URLError is an OSError
                url = tonic.datasets.NMNIST.train_url if part == "train" else tonic.datasets.NMNIST.test_url
                raise make_download_error("N-MNIST", url, error) from error
        return self._tonic_datasets[part]

    def _label_list(self, part: Part) -> str:
        return self.cfg.nmnist_train_list if part == "train" else self.cfg.nmnist_test_list

    def sample_lists(self) -> dict[Part, SampleList]:
        """Return the training and test recordings: ids from the label lists, or tonic dataset indices."""
        lists: dict[Part, SampleList] = {}
        for part in ("train", "test"):
            if self.layout == "folder":
                lists[part] = read_label_list(self.root / self._label_list(part))
            else:
                # tonic lists the files class by class. Interleaving the classes makes the first samples
                # of a split, and the last ones held out for validation, cover every digit.
                labels = np.asarray(self._tonic_dataset(part).targets, dtype=np.int64)
                order = interleave_classes(labels)
                lists[part] = SampleList(ids=order, labels=labels[order])
        return lists

    def cache_params(self, part: Part) -> dict[str, Any]:
        """Return the binning parameters and the source folder."""
        source: dict[str, Any] = {"layout": self.layout, "root": str(self.root.resolve())}
        if self.layout == "folder":
            source["label_list"] = self._label_list(part)
        return {
            "dataset": self.name,
            "part": part,
            **source,
            "size": self.cfg.nmnist_size,
            "num_timesteps": self.cfg.num_timesteps,
            "duration_us": self.duration_us,
        }

    def _recording_path(self, sample_id: int) -> Path:
        for suffix in RECORDING_SUFFIXES:
            path = self.root / f"{sample_id}{suffix}"
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"N-MNIST recording {self.root / f'{sample_id}.bs2'} not found, but its label list names id "
            f"{sample_id}. Restore the file or remove the id from the list"
        )

    def convert(self, part: Part, samples: SampleList) -> np.ndarray:
        """Read, downsample and bin the recordings."""
        frames = np.empty((len(samples), self.cfg.num_timesteps, *self.input_shape), dtype=np.uint8)
        for row, sample_id in enumerate(samples.ids):
            if self.layout == "folder":
                events = read_recording(self._recording_path(int(sample_id)))
            else:
                events, _ = self._tonic_dataset(part)[int(sample_id)]
                events = np.asarray(events).astype(EVENT_DTYPE)
            frames[row] = events_to_frames(events, self.cfg.nmnist_size, self.cfg.num_timesteps, self.duration_us)
        return frames
