"""Quantization options in the shape the deploy side and the tutorial use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ecs_common.formats import FixedPointFormat, QuantConfig, quant_config_from


@dataclass(frozen=True)
class QuantOptions:
    """Fixed-point formats the accelerator computes in."""

    weight_format: FixedPointFormat
    state_format: FixedPointFormat
    decay_format: FixedPointFormat
    input_scaling: str = "state"

    def to_config(self) -> QuantConfig:
        """Return the equivalent :class:`QuantConfig`."""
        return QuantConfig(
            weight_format=self.weight_format,
            state_format=self.state_format,
            decay_format=self.decay_format,
        )


def options_from_config(quant_cfg: Any) -> QuantOptions:
    """Build :class:`QuantOptions` from a :class:`QuantConfig` or a plain dict."""
    config = quant_config_from(quant_cfg)
    return QuantOptions(
        weight_format=config.weight_format,
        state_format=config.state_format,
        decay_format=config.decay_format,
        input_scaling=config.input_scaling,
    )
