"""Exceptions raised by ecs-deploy, one type per kind of failure."""

from __future__ import annotations

from ecs_common.errors import ConfigError, ECSError, MetadataError, QuantizationError, ResourceError

__all__ = [
    "ConfigError",
    "DeployError",
    "GraphError",
    "InputError",
    "MemFileError",
    "MemFileIntegrityError",
    "MetadataError",
    "MissingConfigError",
    "NIRFileError",
    "OutputExistsError",
    "QuantizationError",
    "ResourceError",
    "ShapeMismatchError",
    "UnsupportedNodeError",
]


class DeployError(ECSError):
    """Base class of the errors ecs-deploy raises on purpose."""


class NIRFileError(DeployError, OSError):
    """A NIR file is missing, unreadable, truncated or not a valid NIR graph."""


class GraphError(DeployError, ValueError):
    """A NIR graph is readable but cannot be mapped onto the accelerator."""


class UnsupportedNodeError(GraphError):
    """A NIR graph contains a node type that the accelerator does not implement."""


class ShapeMismatchError(GraphError):
    """The shapes at the two ends of an edge of a NIR graph disagree."""


class MissingConfigError(DeployError, ConfigError):
    """A NIR file carries no ``ecs`` metadata and no configuration was given in its place."""


class InputError(DeployError, ValueError):
    """Input samples or events do not match the network's input layer."""


class MemFileError(DeployError, ValueError):
    """A memory-file set is incomplete, malformed or inconsistent with its manifest."""


class MemFileIntegrityError(MemFileError):
    """A memory file's sha256 differs from the one its manifest records."""


class OutputExistsError(DeployError, FileExistsError):
    """An output file exists already and overwriting it was not requested."""
