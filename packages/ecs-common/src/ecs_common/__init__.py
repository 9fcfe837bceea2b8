"""Schemas, fixed-point arithmetic and NIR metadata shared by ecs-train and ecs-deploy."""

from ecs_common.__about__ import __version__
from ecs_common.errors import ConfigError, ECSError, MetadataError, QuantizationError, ResourceError
from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_common.hardware import HardwareConfig

__all__ = [
    "ConfigError",
    "ECSError",
    "FixedPointFormat",
    "HardwareConfig",
    "MetadataError",
    "QuantConfig",
    "QuantizationError",
    "ResourceError",
    "__version__",
]
