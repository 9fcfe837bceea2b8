"""Exceptions raised by ecs-train, next to the shared ones in ``ecs_common.errors``."""

from __future__ import annotations

from ecs_common.errors import ConfigError, ECSError, QuantizationError

__all__ = ["CheckpointError", "ConfigError", "ECSError", "OutputExistsError", "QuantizationError"]


class CheckpointError(ECSError, ValueError):
    """A checkpoint file is missing, unreadable or does not match the model config."""


class OutputExistsError(ECSError, FileExistsError):
    """A run would overwrite checkpoints that an earlier run wrote."""
