"""Fixed-point arithmetic of the accelerator: quantize, saturate, shift, dequantize.

Every integer word is held in an ``int64`` numpy array. These functions are the
single definition of the numeric rules; the training side's quantized neurons
and the deploy simulator are both tested against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ecs_common.errors import QuantizationError
from ecs_common.formats import FixedPointFormat


def saturate(words: Any, fmt: FixedPointFormat) -> np.ndarray:
    """Clip integer words to ``[-2**(wl-1), 2**(wl-1) - 1]``."""
    return np.clip(np.asarray(words, dtype=np.int64), fmt.min_int, fmt.max_int)


def quantize(values: Any, fmt: FixedPointFormat) -> np.ndarray:
    """Quantize real values to integer words of ``fmt``.

    Rounds ``values * 2**fl`` to the nearest integer, ties to even (as
    ``np.round`` and ``torch.round`` do), then saturates. Returns ``int64``.
    Non-finite values raise :class:`QuantizationError`.
    """
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)].ravel()[0]
        raise QuantizationError(f"cannot quantize non-finite value {bad} to {fmt}")

    # Saturate in float first so that huge values cannot overflow the cast. A
    # product beyond the float64 range becomes +-inf, which saturates correctly.
    with np.errstate(over="ignore"):
        scaled = np.round(array * fmt.scale)
    scaled = np.clip(scaled, fmt.min_int, fmt.max_int)
    return scaled.astype(np.int64)


def count_saturated(values: Any, fmt: FixedPointFormat) -> int:
    """Count values whose rounded word lies outside the range of ``fmt``."""
    with np.errstate(over="ignore"):
        scaled = np.round(np.asarray(values, dtype=np.float64) * fmt.scale)
    return int(np.count_nonzero((scaled < fmt.min_int) | (scaled > fmt.max_int)))


def dequantize(words: Any, fmt: FixedPointFormat) -> np.ndarray:
    """Return the real values (float64) that integer words stand for."""
    return np.asarray(words, dtype=np.float64) * fmt.lsb


def quantize_nonzero(values: Any, fmt: FixedPointFormat, what: str) -> np.ndarray:
    """Quantize ``values`` and raise if nonzero input becomes all zeros.

    ``what`` names the parameter in the error, for example ``"weight of layer 'fc1'"``.
    """
    array = np.asarray(values, dtype=np.float64)
    words = quantize(array, fmt)
    if np.any(array != 0) and not np.any(words != 0):
        largest = float(np.max(np.abs(array)))
        raise QuantizationError(
            f"{what} quantizes to all zeros in {fmt}: its largest magnitude {largest:.3g} is below half an LSB "
            f"({fmt.lsb / 2:.3g}); use more fractional bits or rescale the parameter"
        )
    return words


def shift_right(words: Any, bits: int) -> np.ndarray:
    """Arithmetic shift right by ``bits`` (floor division by ``2**bits``)."""
    if bits < 0:
        raise ValueError(f"shift amount must be non-negative, got {bits}")
    return np.right_shift(np.asarray(words, dtype=np.int64), bits)


@dataclass(frozen=True)
class FixedPointValue:
    """One integer word together with its format, for example a membrane state."""

    word: int
    fmt: FixedPointFormat

    def to_float(self) -> float:
        """Return the real value the word stands for."""
        return float(self.word) * self.fmt.lsb

    def __float__(self) -> float:
        return self.to_float()

    def __int__(self) -> int:
        return int(self.word)

    def __repr__(self) -> str:
        return f"FixedPointValue({self.word}, {self.fmt} = {self.to_float():g})"
