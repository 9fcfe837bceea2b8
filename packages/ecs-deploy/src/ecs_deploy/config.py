"""Hardware, quantization and timing settings of a deployment, from NIR metadata or given explicitly."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ecs_common.errors import ConfigError, MetadataError
from ecs_common.formats import QuantConfig, quant_config_from
from ecs_common.hardware import HardwareConfig, hardware_config_from
from ecs_common.hardware_config import AcceleratorConfig
from ecs_common.metadata import ECSMetadata, decode, has_metadata
from ecs_common.neuron import RESET_MODES
from ecs_common.quant_options import QuantOptions
from ecs_deploy.errors import MissingConfigError

logger = logging.getLogger(__name__)

READOUTS: tuple[str, ...] = ("last", "max", "mean")

# Values used for a NIR file without ``ecs`` metadata when the caller gives none.
# 1 ms is norse's default timestep; the others are ECSMetadata's defaults.
ASSUMED_DT = 1e-3
ASSUMED_RESET_MODE = "to_reset"
ASSUMED_READOUT = "last"

# Section names under which a YAML file may nest each config.
_HARDWARE_KEYS = ("hardware_cfg", "hardware")
_QUANT_KEYS = ("quant_cfg", "quant", "quantization")


@dataclass(frozen=True)
class DeployConfig:
    """Settings a NIR graph is deployed with, and which of them were assumed.

    ``dt`` is the timestep in seconds. ``assumptions`` maps each setting that
    neither the file's metadata nor the caller provided to the value used.
    """

    hardware: HardwareConfig
    quant: QuantConfig
    dt: float
    reset_mode: str
    readout: str
    metadata: ECSMetadata | None = None
    assumptions: dict[str, Any] = field(default_factory=dict)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError as error:
        raise ConfigError(f"config file {str(path)!r} not found; check the path") from error
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def _section(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Return the nested section under one of ``keys``, or the whole mapping without timing keys."""
    for key in keys:
        if key in data:
            value = data[key]
            if not isinstance(value, dict):
                raise ConfigError(f"config section {key!r} must be a mapping, got {type(value).__name__}")
            return value
    return {key: value for key, value in data.items() if key not in ("dt", "reset_mode", "readout")}


def load_hardware(value: Any) -> tuple[HardwareConfig, dict[str, Any]]:
    """Return the hardware config from a model, dict or YAML path, and the timing keys the YAML set."""
    if isinstance(value, AcceleratorConfig):
        return value.hardware, {}
    if isinstance(value, (str, Path)):
        data = _read_yaml(Path(value))
        return hardware_config_from(_section(data, _HARDWARE_KEYS)), _timing_keys(data)
    return hardware_config_from(value), {}


def load_quant(value: Any) -> tuple[QuantConfig, dict[str, Any]]:
    """Return the quantization config from a model, dict or YAML path, and the timing keys the YAML set."""
    if isinstance(value, AcceleratorConfig):
        return value.quant, {}
    if isinstance(value, QuantOptions):
        return value.to_config(), {}
    if isinstance(value, (str, Path)):
        data = _read_yaml(Path(value))
        return quant_config_from(_section(data, _QUANT_KEYS)), _timing_keys(data)
    return quant_config_from(value), {}


def _timing_keys(data: dict[str, Any]) -> dict[str, Any]:
    return {key: data[key] for key in ("dt", "reset_mode", "readout") if key in data}


def _check_timing(dt: Any, reset_mode: Any, readout: Any) -> tuple[float, str, str]:
    try:
        dt_value = float(dt)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid timestep dt={dt!r}: give a positive number of seconds") from error
    if not dt_value > 0 or dt_value == float("inf"):
        raise ConfigError(f"invalid timestep dt={dt!r}: give a positive, finite number of seconds")
    if reset_mode not in RESET_MODES:
        raise ConfigError(f"invalid reset_mode {reset_mode!r}; expected one of {', '.join(RESET_MODES)}")
    if readout not in READOUTS:
        raise ConfigError(f"invalid readout {readout!r}; expected one of {', '.join(READOUTS)}")
    return dt_value, str(reset_mode), str(readout)


def resolve_config(
    graph_metadata: Any,
    hardware: Any = None,
    quant: Any = None,
    *,
    dt: float | None = None,
    reset_mode: str | None = None,
    readout: str | None = None,
    source: str = "the NIR graph",
) -> DeployConfig:
    """Combine a graph's ``ecs`` metadata with explicitly given settings; explicit ones win.

    ``hardware`` and ``quant`` are models, dicts or YAML paths (an
    :class:`AcceleratorConfig` serves as either). A graph without ``ecs``
    metadata needs both; its timestep, reset mode and readout fall back to
    :data:`ASSUMED_DT`, :data:`ASSUMED_RESET_MODE` and
    :data:`ASSUMED_READOUT` unless given, and the fallbacks are logged and
    listed in ``assumptions``. Raises :class:`MissingConfigError` or
    :class:`ConfigError`, and :class:`MetadataError` for invalid metadata.
    """
    metadata = decode(graph_metadata) if has_metadata(graph_metadata) else None

    timing: dict[str, Any] = {}
    hardware_config = quant_config = None
    if hardware is not None:
        hardware_config, from_yaml = load_hardware(hardware)
        timing.update(from_yaml)
    if quant is not None:
        quant_config, from_yaml = load_quant(quant)
        timing.update(from_yaml)
    if isinstance(hardware, AcceleratorConfig) and quant is None:
        quant_config = hardware.quant
    explicit = {"dt": dt, "reset_mode": reset_mode, "readout": readout}
    timing.update({key: value for key, value in explicit.items() if value is not None})

    if metadata is not None:
        if hardware_config is not None and hardware_config != metadata.hardware_cfg:
            logger.info("%s: using the given hardware config instead of the one in its metadata", source)
        if quant_config is not None and quant_config != metadata.quant_cfg:
            logger.info("%s: using the given quantization config instead of the one in its metadata", source)
        for key, value in timing.items():
            if value != getattr(metadata, key):
                logger.info(
                    "%s: using %s=%r instead of %r from its metadata", source, key, value, getattr(metadata, key)
                )
        dt_value, reset, read = _check_timing(
            timing.get("dt", metadata.dt),
            timing.get("reset_mode", metadata.reset_mode),
            timing.get("readout", metadata.readout),
        )
        return DeployConfig(
            hardware=hardware_config or metadata.hardware_cfg,
            quant=quant_config or metadata.quant_cfg,
            dt=dt_value,
            reset_mode=reset,
            readout=read,
            metadata=metadata,
        )

    missing = [name for name, value in (("hardware", hardware_config), ("quant", quant_config)) if value is None]
    if missing:
        options = " and ".join(f"--{name} {name if name == 'quant' else 'hw'}.yaml" for name in missing)
        arguments = " and ".join(f"{name}=..." for name in missing)
        raise MissingConfigError(
            f"{source} has no 'ecs' metadata (it was not written by ecs-train), so the {' and '.join(missing)} "
            f"config must be given: pass {options} on the command line, "
            f"or {arguments} (a dict, a YAML path or a config model) in Python"
        )
    assumptions = {}
    fallback = {"dt": ASSUMED_DT, "reset_mode": ASSUMED_RESET_MODE, "readout": ASSUMED_READOUT}
    for key, value in fallback.items():
        if key not in timing:
            timing[key] = value
            assumptions[key] = value
    if assumptions:
        described = ", ".join(f"{key}={value!r}" for key, value in assumptions.items())
        logger.warning("%s has no 'ecs' metadata; assuming %s (give them explicitly to change)", source, described)
    dt_value, reset, read = _check_timing(timing["dt"], timing["reset_mode"], timing["readout"])
    assert hardware_config is not None and quant_config is not None
    return DeployConfig(
        hardware=hardware_config,
        quant=quant_config,
        dt=dt_value,
        reset_mode=reset,
        readout=read,
        metadata=None,
        assumptions=assumptions,
    )


__all__ = [
    "ASSUMED_DT",
    "ASSUMED_READOUT",
    "ASSUMED_RESET_MODE",
    "DeployConfig",
    "MetadataError",
    "READOUTS",
    "load_hardware",
    "load_quant",
    "resolve_config",
]
