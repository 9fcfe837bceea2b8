"""Accelerator configuration assembled from NIR metadata or YAML values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ecs_common.formats import FixedPointFormat, QuantConfig, parse_format, quant_config_from
from ecs_common.hardware import HardwareConfig, hardware_config_from


@dataclass(frozen=True)
class AcceleratorConfig:
    """Hardware resources together with the number formats the cores compute in."""

    hardware: HardwareConfig
    quant: QuantConfig

    @property
    def weight_quant_scheme(self) -> FixedPointFormat:
        """Fixed-point format of the weights (``wl`` and ``fl``)."""
        return self.quant.weight_format

    @property
    def state_quant_scheme(self) -> FixedPointFormat:
        """Fixed-point format of the membrane state."""
        return self.quant.state_format

    @property
    def decay_quant_scheme(self) -> FixedPointFormat:
        """Fixed-point format of the decay factors."""
        return self.quant.decay_format

    def __getattr__(self, name: str) -> Any:
        # Hardware fields read directly: accelerator_config.num_cores.
        if name in HardwareConfig.model_fields:
            return getattr(self.hardware, name)
        raise AttributeError(name)


def from_metadata(hardware_cfg: Any, quant_cfg_or_weight_format: Any = None) -> AcceleratorConfig:
    """Build an :class:`AcceleratorConfig`.

    ``hardware_cfg`` is a :class:`HardwareConfig` or a dict. The second
    argument is a :class:`QuantConfig`, a dict of one, or just a weight format
    (``FixedPointFormat``, ``{"wl": 8, "fl": 6}``, ``(8, 6)`` or ``"Q8.6"``); a
    bare weight format keeps the default state and decay formats, with the
    state fractional length set to match the weights.
    """
    hardware = hardware_config_from(hardware_cfg)
    value = quant_cfg_or_weight_format
    if isinstance(value, QuantConfig) or value is None:
        return AcceleratorConfig(hardware=hardware, quant=quant_config_from(value))
    # An empty dict (``quant_cfg: {}`` in YAML) means the default QuantConfig, not a weight format.
    if isinstance(value, dict) and (not value or not set(value) <= {"wl", "fl"}):
        return AcceleratorConfig(hardware=hardware, quant=quant_config_from(value))

    weight_format = parse_format(value, "weight format")
    default = QuantConfig()
    state_format = FixedPointFormat(wl=max(default.state_format.wl, weight_format.wl), fl=weight_format.fl)
    quant = QuantConfig(weight_format=weight_format, state_format=state_format, decay_format=default.decay_format)
    return AcceleratorConfig(hardware=hardware, quant=quant)
