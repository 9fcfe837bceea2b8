"""Event datasets for training: configuration, readers, binning, caching and the Lightning data module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ecs_train.data.config import DATASET_NAMES, DataConfig, DatasetName
from ecs_train.data.errors import DatasetFormatError, DatasetUnavailableError
from ecs_train.data.paths import shared_data_dir

if TYPE_CHECKING:
    from ecs_train.data.module import EventDataModule, build_data_module, check_data_files

__all__ = [
    "DATASET_NAMES",
    "DataConfig",
    "DatasetFormatError",
    "DatasetUnavailableError",
    "DatasetName",
    "EventDataModule",
    "build_data_module",
    "check_data_files",
    "shared_data_dir",
]


def __getattr__(name: str) -> Any:
    # The data module imports torch and Lightning, so it is imported on first use, and reading a
    # DataConfig (for example in --help) stays fast.
    if name in ("EventDataModule", "build_data_module", "check_data_files"):
        from ecs_train.data import module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
