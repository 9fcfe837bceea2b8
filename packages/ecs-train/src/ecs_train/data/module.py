"""Lightning data module that serves binned, binary event samples of every dataset."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ecs_common.errors import ConfigError
from ecs_train.data.augment import random_shift
from ecs_train.data.cache import PackedFrames, cache_key, ids_digest, load_or_convert
from ecs_train.data.config import DATASET_NAMES, DataConfig
from ecs_train.data.digits import DigitsSource
from ecs_train.data.errors import DatasetUnavailableError
from ecs_train.data.fsdd import FSDDSource
from ecs_train.data.nmnist import NMNISTSource
from ecs_train.data.shd import SHDSource
from ecs_train.data.source import EventSource, Part
from ecs_train.data.splits import SampleList, hold_out

logger = logging.getLogger(__name__)

SOURCES: dict[str, Callable[[DataConfig], EventSource]] = {
    "digits": DigitsSource,
    "nmnist": NMNISTSource,
    "shd": SHDSource,
    "fsdd": FSDDSource,
}

SPLITS = ("train", "val", "test")


class FrameDataset(Dataset):
    """Samples of one split as ``(x, y)``, with x float32 ``[T, *input_shape]`` of 0s and 1s and y an int64 scalar."""

    def __init__(
        self,
        packed: PackedFrames,
        augment: bool = False,
        max_shift: int = 0,
        max_time_shift: int = 0,
        seed: int = 0,
    ) -> None:
        self.packed = packed
        self.augment = augment
        self.max_shift = max_shift
        self.max_time_shift = max_time_shift
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(self.packed.frame(index)).to(torch.float32)
        if self.augment:
            x = random_shift(x, self.max_shift, self.max_time_shift, self.generator)
        y = torch.tensor(self.packed.labels[index], dtype=torch.int64)
        return x, y


def _seed_worker(worker_id: int) -> None:
    # Each worker's seed derives from the DataLoader's generator, so augmentation in worker
    # processes is as reproducible as in the main process.
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, FrameDataset):
        info.dataset.generator.manual_seed(info.seed)


class EventDataModule(pl.LightningDataModule):
    """Train, validation and test loaders of one event dataset, binned and cached on disk.

    Attributes:
        input_shape: shape of one time bin, e.g. ``(2, 16, 16)`` or ``(700,)``.
        num_classes: number of classes, with labels 0 to ``num_classes - 1``.
        num_timesteps: time bins per sample.
        dataset_name: the ``DataConfig.name``.
        time_bin_s: duration of one time bin, in seconds.
    """

    def __init__(self, cfg: DataConfig, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ConfigError(f"batch_size={batch_size} is invalid. Use a positive number of samples per batch")
        if cfg.name not in SOURCES:
            raise ConfigError(f"unknown dataset {cfg.name!r}. Choose one of {', '.join(DATASET_NAMES)}")

        self.cfg = cfg
        self.batch_size = batch_size
        self.seed = seed
        self.source: EventSource = SOURCES[cfg.name](cfg)
        self.dataset_name: str = cfg.name
        self.input_shape: tuple[int, ...] = tuple(self.source.input_shape)
        self.num_classes: int = self.source.num_classes
        self.num_timesteps: int = cfg.num_timesteps
        self.time_bin_s: float = cfg.resolved_duration_s() / cfg.num_timesteps
        self._splits: dict[str, PackedFrames] = {}

    def split_samples(self) -> dict[str, SampleList]:
        """Return the sample lists of the train, val and test splits, each cut to ``max_samples``."""
        lists = self.source.sample_lists()
        fraction, method = self.cfg.resolved_validation()
        train, val = hold_out(lists["train"], fraction, method, self.cfg.split_seed)
        limit = self.cfg.max_samples
        return {"train": train.head(limit), "val": val.head(limit), "test": lists["test"].head(limit)}

    def _load_split(self, split: str, samples: SampleList) -> PackedFrames:
        part: Part = "test" if split == "test" else "train"
        params = {**self.source.cache_params(part), "ids": ids_digest(samples.ids)}
        path = self.cfg.cache_dir / f"{self.dataset_name}-{split}-{cache_key(params)}.npz"

        def convert() -> PackedFrames:
            frames = self.source.convert(part, samples)
            return PackedFrames.from_frames(frames, samples.labels, samples.ids)

        return load_or_convert(path, convert, f"{self.dataset_name} {split}")

    def prepare_data(self) -> None:
        """Convert and cache every split that has no cache file yet."""
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        """Load every split from the cache, converting the missing ones."""
        if self._splits:
            return
        for split, samples in self.split_samples().items():
            if len(samples) == 0:
                logger.warning(
                    "the %s split of %s is empty. Add recordings or change validation_fraction",
                    split,
                    self.dataset_name,
                )
            self._splits[split] = self._load_split(split, samples)
        logger.info(
            "%s: %d train, %d val, %d test samples of shape %s x %s",
            self.dataset_name,
            len(self._splits["train"]),
            len(self._splits["val"]),
            len(self._splits["test"]),
            self.num_timesteps,
            self.input_shape,
        )

    def split(self, name: str) -> PackedFrames:
        """Return the packed samples of split ``name`` ('train', 'val' or 'test'), loading them if needed."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}. Choose one of {', '.join(SPLITS)}")
        self.setup()
        return self._splits[name]

    def _loader(self, split: str, train: bool) -> DataLoader:
        cfg = self.cfg
        dataset = FrameDataset(
            self.split(split),
            augment=train and cfg.augment,
            max_shift=cfg.max_shift,
            max_time_shift=cfg.max_time_shift,
            seed=self.seed,
        )
        options: dict[str, Any] = {}
        if cfg.num_workers > 0:
            options = {"worker_init_fn": _seed_worker, "persistent_workers": True}
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
            num_workers=cfg.num_workers,
            **options,
        )

    def train_dataloader(self) -> DataLoader:
        """Return the shuffled (and, with ``augment``, randomly shifted) training samples."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Return the validation samples in fixed order."""
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        """Return the test samples in fixed order."""
        return self._loader("test", train=False)

    def test_arrays(self, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the first ``num_samples`` test samples in loader order, as used for test vectors.

        x is float32 ``[N, T, *input_shape]`` of 0s and 1s, y is int64 ``[N]``.
        """
        test = self.split("test")
        if not 0 < num_samples <= len(test):
            raise ValueError(
                f"num_samples={num_samples} is invalid: the {self.dataset_name} test split has {len(test)} samples "
                "(max_samples may cut it). Request between 1 and that many"
            )
        return test.frames(num_samples).astype(np.float32), test.labels[:num_samples].copy()


def build_data_module(cfg: DataConfig, batch_size: int, seed: int = 0) -> EventDataModule:
    """Build the data module of ``cfg.name``, with ``seed`` setting the training shuffle and augmentation.

    The splits themselves depend only on the configuration (``split_seed``), so every seed sees the
    same train, validation and test samples.
    """
    return EventDataModule(cfg, batch_size=batch_size, seed=seed)


def check_data_files(cfg: DataConfig) -> None:
    """Check that ``cfg.data_dir`` and the files its dataset reads up front exist, before a long run starts.

    Raises :class:`DatasetUnavailableError` for a missing folder, recording
    folder, N-MNIST label list or SHD file. Datasets that tonic downloads
    (``data_dir`` None) are not checked here, because the download runs later.
    """
    data_dir = cfg.data_dir
    if data_dir is not None and not data_dir.is_dir():
        raise DatasetUnavailableError(
            f"data_dir {data_dir} of dataset {cfg.name} is not a folder; pass --data-dir FOLDER with the recordings"
        )
    try:
        source = SOURCES[cfg.name](cfg) if cfg.name in SOURCES else None
        if isinstance(source, NMNISTSource) and source.layout == "folder":
            for label_list in (cfg.nmnist_train_list, cfg.nmnist_test_list):
                if not (source.root / label_list).is_file():
                    raise FileNotFoundError(
                        f"N-MNIST label list {source.root / label_list} not found; data_dir must contain "
                        f"{cfg.nmnist_train_list} and {cfg.nmnist_test_list} beside the <id>.bs2 recordings"
                    )
        if isinstance(source, SHDSource) and data_dir is not None:
            for part in ("train", "test"):
                source.path(part)
    except FileNotFoundError as error:
        raise DatasetUnavailableError(str(error)) from error
