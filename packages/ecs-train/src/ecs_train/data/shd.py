"""Spiking Heidelberg Digits (SHD): spike recordings of spoken digits read from their HDF5 files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ecs_train.data.config import SHD_NUM_UNITS, DataConfig
from ecs_train.data.errors import DatasetFormatError, make_download_error
from ecs_train.data.source import Part
from ecs_train.data.splits import SampleList

logger = logging.getLogger(__name__)

NUM_CLASSES = 20
FILE_NAMES: dict[Part, str] = {"train": "shd_train.h5", "test": "shd_test.h5"}

# An SHD file contains ragged arrays of spike times in seconds and of unit (channel) indices 0-699,
# one per recording, and integer class labels 0-19 (English and German digits). It also contains
# extra/keys (class names), extra/speaker and extra/meta_info, which this reader does not need.
# NOTE: the layout follows tonic 1.7.0's SHD reader. This reader and the tonic download below have
# run only on small fixture files in that layout, not on the released files.
TIMES_KEY = "spikes/times"
UNITS_KEY = "spikes/units"
LABELS_KEY = "labels"

# Event layout of tonic's SHD dataset (tonic 1.7.0), which tonic.transforms.ToFrame expects.
EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int64), ("p", np.int64)])


def _dataset(file: Any, key: str, path: Path) -> Any:
    if key not in file:
        raise DatasetFormatError(f"SHD file {path} has no dataset {key!r}, so it is not in the SHD HDF5 layout")
    return file[key]


def read_labels(path: Path) -> np.ndarray:
    """Read the class labels of an SHD file as int64."""
    import h5py

    with h5py.File(path, "r") as file:
        labels = np.asarray(_dataset(file, LABELS_KEY, path)[()], dtype=np.int64)

    invalid = (labels < 0) | (labels >= NUM_CLASSES)
    if invalid.any():
        raise DatasetFormatError(
            f"SHD file {path}: label {labels[invalid][0]} is outside the {NUM_CLASSES} classes 0-{NUM_CLASSES - 1}"
        )
    return labels


def read_spikes(path: Path, indices: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read the spikes of the recordings at ``indices``, each as (times in seconds as float64, units as int64)."""
    import h5py

    recordings = []
    with h5py.File(path, "r") as file:
        times = _dataset(file, TIMES_KEY, path)
        units = _dataset(file, UNITS_KEY, path)
        for index in indices:
            spike_times = np.asarray(times[int(index)], dtype=np.float64)
            spike_units = np.asarray(units[int(index)], dtype=np.int64)
            if spike_times.shape != spike_units.shape:
                raise DatasetFormatError(
                    f"SHD file {path}, recording {index}: {spike_times.size} spike times but {spike_units.size} units"
                )
            if spike_units.size and (spike_units.min() < 0 or spike_units.max() >= SHD_NUM_UNITS):
                raise DatasetFormatError(
                    f"SHD file {path}, recording {index}: unit {spike_units.max()} is outside 0-{SHD_NUM_UNITS - 1}"
                )
            recordings.append((spike_times, spike_units))
    return recordings


def spikes_to_frames(
    times_s: np.ndarray, units: np.ndarray, num_channels: int, num_timesteps: int, duration_s: float
) -> np.ndarray:
    """Bin SHD spikes into binary frames ``[T, num_channels]``.

    Adjacent units are merged when ``num_channels`` is below 700 (channel = unit * num_channels // 700).
    Spikes at or after ``duration_s`` seconds are dropped.
    """
    from tonic.transforms import ToFrame

    time_bins = np.floor(times_s * (num_timesteps / duration_s)).astype(np.int64)
    keep = (time_bins >= 0) & (time_bins < num_timesteps)
    if not keep.any():
        return np.zeros((num_timesteps, num_channels), dtype=np.uint8)

    events = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    events["t"] = time_bins[keep]
    events["x"] = units[keep] * num_channels // SHD_NUM_UNITS
    events["p"] = 0

    # ToFrame needs events sorted by time. Bins of width 1 from 0 to T give one frame per time bin.
    events = events[np.argsort(events["t"], kind="stable")]
    to_frame = ToFrame(sensor_size=(num_channels, 1, 1), time_window=1, start_time=0, end_time=num_timesteps)
    counts = to_frame(events)
    return np.minimum(counts.reshape(num_timesteps, num_channels), 1).astype(np.uint8)


class SHDSource:
    """SHD recordings as frames ``[T, num_channels]``.

    The files ``shd_train.h5`` and ``shd_test.h5`` are looked up in ``data_dir`` and ``data_dir/SHD``.
    With ``data_dir`` None they are looked up in ``cache_dir/SHD``, where tonic's SHD dataset downloads
    them. The files are read with h5py directly because tonic 1.7.0's SHD class downloads again unless
    the zip archives lie beside the extracted files, and reopens the file for every sample.
    """

    name = "shd"
    num_classes = NUM_CLASSES

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.input_shape: tuple[int, ...] = (cfg.num_channels,)
        self.duration_s = cfg.resolved_duration_s()
        self._paths: dict[Part, Path] = {}

    def _candidate_folders(self) -> list[Path]:
        if self.cfg.data_dir is None:
            return [self.cfg.cache_dir / "SHD"]
        return [self.cfg.data_dir, self.cfg.data_dir / "SHD"]

    def path(self, part: Part) -> Path:
        """Return the HDF5 file of ``part``, downloading it through tonic when allowed and missing."""
        if part in self._paths:
            return self._paths[part]

        folders = self._candidate_folders()
        for folder in folders:
            candidate = folder / FILE_NAMES[part]
            if candidate.is_file():
                self._paths[part] = candidate
                return candidate

        if self.cfg.data_dir is not None or not self.cfg.download:
            looked = ", ".join(str(folder / FILE_NAMES[part]) for folder in folders)
            raise FileNotFoundError(
                f"SHD file {FILE_NAMES[part]} not found (looked for {looked}). Put shd_train.h5 and shd_test.h5 "
                "there, or set data_dir to None and download=True to let tonic download them"
            )

        import tonic

        logger.info("downloading SHD (%s) with tonic into %s", part, self.cfg.cache_dir)
        try:
            tonic.datasets.SHD(save_to=str(self.cfg.cache_dir), train=part == "train")
        except OSError as error:  # urllib's URLError is an OSError
            zip_name = tonic.datasets.SHD.train_zip if part == "train" else tonic.datasets.SHD.test_zip
            raise make_download_error("SHD", tonic.datasets.SHD.base_url + zip_name, error) from error
        self._paths[part] = folders[0] / FILE_NAMES[part]
        return self._paths[part]

    def sample_lists(self) -> dict[Part, SampleList]:
        """Return every recording of the training and test files, in file order."""
        lists: dict[Part, SampleList] = {}
        for part in ("train", "test"):
            labels = read_labels(self.path(part))
            lists[part] = SampleList(ids=np.arange(len(labels), dtype=np.int64), labels=labels)
        return lists

    def cache_params(self, part: Part) -> dict[str, Any]:
        """Return the binning parameters and the file's path, size and modification time."""
        path = self.path(part)
        stat = path.stat()
        return {
            "dataset": self.name,
            "part": part,
            "file": str(path.resolve()),
            "file_size": stat.st_size,
            "file_mtime_ns": stat.st_mtime_ns,
            "num_channels": self.cfg.num_channels,
            "num_timesteps": self.cfg.num_timesteps,
            "duration_s": self.duration_s,
        }

    def convert(self, part: Part, samples: SampleList) -> np.ndarray:
        """Read and bin the recordings."""
        frames = np.empty((len(samples), self.cfg.num_timesteps, self.cfg.num_channels), dtype=np.uint8)
        for row, (times_s, units) in enumerate(read_spikes(self.path(part), samples.ids)):
            frames[row] = spikes_to_frames(
                times_s, units, self.cfg.num_channels, self.cfg.num_timesteps, self.duration_s
            )
        return frames
