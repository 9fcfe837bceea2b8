"""Exceptions raised by the dataset readers."""

from __future__ import annotations

from ecs_common.errors import ECSError


class DatasetFormatError(ECSError, ValueError):
    """A recording, label list or dataset file exists but its contents are invalid."""


class DatasetUnavailableError(ECSError, OSError):
    """A dataset's folder, recordings or label lists are missing, or its download failed."""


def make_download_error(dataset: str, url: str, error: OSError) -> DatasetUnavailableError:
    """Build the error for a failed tonic download of ``dataset`` from ``url``."""
    reason = getattr(error, "reason", None) or error
    return DatasetUnavailableError(
        f"failed to download {dataset} from {url}: {reason}; without network access, pass --data-dir FOLDER with the "
        f"recordings (data_cfg.data_dir in the config)"
    )
