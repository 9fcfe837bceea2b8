"""Signed fixed-point formats ``Q(wl, fl)`` and the quantization configuration."""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ecs_common.errors import ConfigError

# Integer arithmetic runs in int64, and a decay product multiplies a state
# word by a decay word, so the two word lengths together must stay below 63.
MAX_WORD_LENGTH = 32

_FORMAT_PATTERN = re.compile(r"^\s*Q\s*\(?\s*(\d+)\s*[,.]\s*(\d+)\s*\)?\s*$", re.IGNORECASE)


class FixedPointFormat(BaseModel):
    """Signed two's-complement fixed-point format ``Q(wl, fl)``.

    ``wl`` is the word length in bits, sign bit included, and ``fl`` the
    fractional length: an integer word ``q`` stands for ``q * 2**-fl``.
    The representable words are ``[-2**(wl-1), 2**(wl-1) - 1]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    wl: int = Field(ge=2, le=MAX_WORD_LENGTH, description="word length in bits, sign included")
    fl: int = Field(ge=0, description="fractional length in bits")

    @model_validator(mode="before")
    @classmethod
    def _parse_string(cls, value: Any) -> Any:
        # Accept "Q8.6" and "Q(8, 6)" as written in YAML files.
        if isinstance(value, str):
            match = _FORMAT_PATTERN.match(value)
            if match is None:
                raise ValueError(f"invalid fixed-point format {value!r}: write it as 'Q(wl, fl)' or 'Q8.6'")
            return {"wl": int(match.group(1)), "fl": int(match.group(2))}
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return {"wl": value[0], "fl": value[1]}
        return value

    @model_validator(mode="after")
    def _check_fraction(self) -> FixedPointFormat:
        if self.fl >= self.wl:
            raise ValueError(f"fractional length fl={self.fl} must be smaller than word length wl={self.wl}")
        return self

    def __str__(self) -> str:
        return f"Q({self.wl},{self.fl})"

    @property
    def min_int(self) -> int:
        """Most negative integer word, ``-2**(wl-1)``."""
        return -(1 << (self.wl - 1))

    @property
    def max_int(self) -> int:
        """Largest integer word, ``2**(wl-1) - 1``."""
        return (1 << (self.wl - 1)) - 1

    @property
    def scale(self) -> float:
        """Number of words per unit value, ``2**fl``."""
        return float(1 << self.fl)

    @property
    def lsb(self) -> float:
        """Value of one least significant bit, ``2**-fl``."""
        return 1.0 / self.scale

    @property
    def min_value(self) -> float:
        """Most negative representable value."""
        return self.min_int * self.lsb

    @property
    def max_value(self) -> float:
        """Largest representable value."""
        return self.max_int * self.lsb

    def quantize(self, values: Any) -> np.ndarray:
        """Quantize real values to integer words (round half to even, then saturate)."""
        from ecs_common.fixed_point import quantize

        return quantize(values, self)

    def dequantize(self, words: Any) -> np.ndarray:
        """Return the real values (float64) that integer words stand for."""
        from ecs_common.fixed_point import dequantize

        return dequantize(words, self)


def parse_format(value: Any, field: str = "format") -> FixedPointFormat:
    """Build a :class:`FixedPointFormat` from a model, dict, tuple or ``"Q8.6"`` string."""
    if isinstance(value, FixedPointFormat):
        return value
    try:
        return FixedPointFormat.model_validate(value)
    except Exception as error:  # pydantic.ValidationError and ValueError
        raise ConfigError(f"invalid {field} {value!r}: {error}") from error


class QuantConfig(BaseModel):
    """Fixed-point formats of the accelerator and how training uses them.

    Weights, membrane state and decay factors each have their own format. The
    hardware adds weights to the membrane state without a multiplier, so the
    state format must have the same fractional length as the weight format.

    ``input_scaling`` records where the input scaling ``r * dt / tau`` of the
    NIR neuron equations is folded. The only mode, ``"state"``, keeps trained
    weights as they are and divides threshold, reset and leak potentials by
    ``r * dt / tau`` instead (see :mod:`ecs_common.neuron`).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="quantize the network at all")
    mode: Literal["ptq", "qat"] = Field("qat", description="post-training quantization or quantization-aware training")
    weight_format: FixedPointFormat = Field(default_factory=lambda: FixedPointFormat(wl=8, fl=6))
    state_format: FixedPointFormat = Field(default_factory=lambda: FixedPointFormat(wl=16, fl=6))
    decay_format: FixedPointFormat = Field(default_factory=lambda: FixedPointFormat(wl=12, fl=11))
    input_scaling: Literal["state"] = "state"

    @model_validator(mode="after")
    def _check_formats(self) -> QuantConfig:
        if self.state_format.fl != self.weight_format.fl:
            raise ValueError(
                f"state_format {self.state_format} and weight_format {self.weight_format} must have the same "
                "fractional length, because the accelerator adds weights to the membrane state unshifted"
            )
        if self.state_format.wl < self.weight_format.wl:
            raise ValueError(
                f"state_format {self.state_format} must be at least as wide as weight_format {self.weight_format}"
            )
        if self.state_format.wl + self.decay_format.wl > 62:
            raise ValueError(
                f"state_format {self.state_format} and decay_format {self.decay_format} together exceed 62 bits, "
                "so a decay product would overflow int64"
            )
        return self


def quant_config_from(value: Any) -> QuantConfig:
    """Validate a :class:`QuantConfig` from a model or a plain dict (as read from YAML)."""
    if isinstance(value, QuantConfig):
        return value
    if value is None:
        return QuantConfig()
    try:
        return QuantConfig.model_validate(dict(value))
    except Exception as error:
        raise ConfigError(f"invalid quantization config: {error}") from error
