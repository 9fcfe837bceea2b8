"""Exceptions shared by the ECS packages, one type per kind of failure."""

from __future__ import annotations


class ECSError(Exception):
    """Base class of every error raised on purpose by the ECS toolchain."""


class ConfigError(ECSError, ValueError):
    """A hardware, quantization or experiment configuration is invalid."""


class QuantizationError(ECSError, ValueError):
    """A value cannot be represented usefully in its fixed-point format."""


class MetadataError(ECSError, ValueError):
    """The ``ecs`` metadata of a NIR graph is missing, malformed or too new."""


class VectorFileError(ECSError, ValueError):
    """A test-vector file (samples or expected outputs) is missing, malformed or too new."""


class ResourceError(ECSError):
    """A network does not fit the accelerator.

    The message names the core, the resource, the limit, the demand and what
    would make the network fit; the same facts are kept as attributes.
    """

    def __init__(
        self,
        message: str,
        *,
        layer: str | None = None,
        core: int | None = None,
        resource: str | None = None,
        limit: int | None = None,
        demand: int | None = None,
    ) -> None:
        super().__init__(message)
        self.layer = layer
        self.core = core
        self.resource = resource
        self.limit = limit
        self.demand = demand
