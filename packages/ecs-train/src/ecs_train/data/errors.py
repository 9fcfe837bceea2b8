"""Exceptions raised by the dataset readers."""

from __future__ import annotations

from ecs_common.errors import ECSError


class DatasetFormatError(ECSError, ValueError):
    """A recording, label list or dataset file exists but its contents are invalid."""
