"""Property tests of ecs_common.fixed_point: rounding, saturation, shifts and round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ecs_common.errors import QuantizationError
from ecs_common.fixed_point import (
    FixedPointValue,
    count_saturated,
    dequantize,
    quantize,
    quantize_nonzero,
    saturate,
    shift_right,
)
from ecs_common.formats import MAX_WORD_LENGTH, FixedPointFormat

Q8_6 = FixedPointFormat(wl=8, fl=6)


@st.composite
def formats(draw: st.DrawFn, max_wl: int = MAX_WORD_LENGTH) -> FixedPointFormat:
    """Draw any valid format ``Q(wl, fl)`` with ``2 <= wl <= max_wl`` and ``0 <= fl < wl``."""
    wl = draw(st.integers(min_value=2, max_value=max_wl))
    fl = draw(st.integers(min_value=0, max_value=wl - 1))
    return FixedPointFormat(wl=wl, fl=fl)


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        (0.5, 0),
        (1.5, 2),
        (2.5, 2),
        (3.5, 4),
        (-0.5, 0),
        (-1.5, -2),
        (-2.5, -2),
        (-3.5, -4),
        (0.49, 0),
        (0.51, 1),
        (-0.51, -1),
    ],
)
def test_quantize_ties_to_even(ticks: float, expected: int) -> None:
    word = quantize(ticks * Q8_6.lsb, Q8_6)

    assert int(word) == expected, f"{ticks} LSB should round to {expected}, got {int(word)}"


@given(fmt=formats(max_wl=24), data=st.data())
def test_quantize_half_lsb_rounds_to_even_word(fmt: FixedPointFormat, data: st.DataObject) -> None:
    low = data.draw(st.integers(min_value=fmt.min_int, max_value=fmt.max_int - 1), label="low")
    tie = (low + 0.5) * fmt.lsb

    word = int(quantize(tie, fmt))

    assert word in (low, low + 1), f"tie {tie} must round to a neighbour of {low}"
    assert word % 2 == 0, f"tie {tie} rounded to odd word {word}"


def test_quantize_saturates_both_ways() -> None:
    words = quantize([1.984375, 1.99, 2.0, 100.0, 1e308, -2.0, -2.01, -100.0, -1e308], Q8_6)

    assert words.tolist() == [127, 127, 127, 127, 127, -128, -128, -128, -128]


@given(fmt=formats(), excess=st.floats(min_value=0.5, max_value=1e300, allow_nan=False))
def test_quantize_saturates_beyond_range(fmt: FixedPointFormat, excess: float) -> None:
    above = fmt.max_value + excess * fmt.lsb
    below = fmt.min_value - (excess + 0.5) * fmt.lsb

    assert int(quantize(above, fmt)) == fmt.max_int
    assert int(quantize(below, fmt)) == fmt.min_int


def test_quantize_most_negative_word() -> None:
    assert Q8_6.min_int == -128
    assert int(quantize(-2.0, Q8_6)) == -128
    assert float(dequantize(-128, Q8_6)) == -2.0

    # -128.5 LSB is a tie between -129 (out of range) and -128 (even).
    assert int(quantize(-2.0 - Q8_6.lsb / 2, Q8_6)) == -128

    assert int(saturate(-129, Q8_6)) == -128
    assert int(saturate(-(2**40), Q8_6)) == -128


@given(fmt=formats())
def test_most_negative_word_round_trips(fmt: FixedPointFormat) -> None:
    assert int(quantize(fmt.min_value, fmt)) == fmt.min_int
    assert float(dequantize(fmt.min_int, fmt)) == fmt.min_value
    assert int(saturate(fmt.min_int, fmt)) == fmt.min_int
    assert int(saturate(fmt.min_int - 1, fmt)) == fmt.min_int
    assert int(saturate(fmt.max_int + 1, fmt)) == fmt.max_int


@given(fmt=formats(), data=st.data())
def test_dequantize_quantize_within_half_lsb(fmt: FixedPointFormat, data: st.DataObject) -> None:
    value = data.draw(
        st.floats(min_value=fmt.min_value, max_value=fmt.max_value, allow_nan=False, allow_infinity=False),
        label="value",
    )

    restored = float(dequantize(quantize(value, fmt), fmt))

    assert abs(restored - value) <= fmt.lsb / 2, f"{value} came back as {restored} in {fmt}"


@given(fmt=formats(), word=st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_quantize_dequantize_is_identity_on_words(fmt: FixedPointFormat, word: int) -> None:
    assume(fmt.min_int <= word <= fmt.max_int)

    assert int(quantize(dequantize(word, fmt), fmt)) == word


def test_quantize_keeps_shape_and_returns_int64() -> None:
    values = np.linspace(-1, 1, 12).reshape(3, 4)

    words = quantize(values, Q8_6)

    assert words.shape == (3, 4)
    assert words.dtype == np.int64


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_quantize_rejects_non_finite(value: float) -> None:
    with pytest.raises(QuantizationError, match=r"cannot quantize non-finite value .* to Q\(8,6\)"):
        quantize([0.25, value], Q8_6)


def test_count_saturated_counts_both_ends() -> None:
    values = [1.984375, 1.99, 2.5, -2.0, -2.01, -3.0, 0.0]

    assert count_saturated(values, Q8_6) == 3


@given(value=st.integers(min_value=-(2**40), max_value=2**40), bits=st.integers(min_value=0, max_value=40))
def test_shift_right_is_floor_division(value: int, bits: int) -> None:
    shifted = int(shift_right(value, bits))

    assert shifted == value // (1 << bits), f"{value} >> {bits} gave {shifted}"


def test_shift_right_floors_negatives() -> None:
    assert shift_right([-1, -2, -3, -4, -5], 1).tolist() == [-1, -1, -2, -2, -3]
    assert shift_right([1, 2, 3, 4, 5], 1).tolist() == [0, 1, 1, 2, 2]
    assert int(shift_right(-1, 11)) == -1


def test_shift_right_rejects_negative_shift() -> None:
    with pytest.raises(ValueError, match="shift amount must be non-negative, got -1"):
        shift_right([4], -1)


def test_quantize_nonzero_rejects_all_zero_result() -> None:
    tiny = [Q8_6.lsb / 4, -Q8_6.lsb / 3, 0.0]

    with pytest.raises(QuantizationError, match=r"weight of layer 'fc1' quantizes to all zeros in Q\(8,6\)"):
        quantize_nonzero(tiny, Q8_6, "weight of layer 'fc1'")


def test_quantize_nonzero_rejects_half_lsb_tie() -> None:
    with pytest.raises(QuantizationError, match="below half an LSB"):
        quantize_nonzero([Q8_6.lsb / 2], Q8_6, "decay factor")


def test_quantize_nonzero_accepts_zeros_and_partial_zeros() -> None:
    assert quantize_nonzero([0.0, 0.0], Q8_6, "bias").tolist() == [0, 0]
    assert quantize_nonzero([Q8_6.lsb / 4, 0.5], Q8_6, "weight").tolist() == [0, 32]


@given(fmt=formats(max_wl=16), data=st.data())
def test_quantize_nonzero_raises_exactly_when_all_words_zero(fmt: FixedPointFormat, data: st.DataObject) -> None:
    values = data.draw(
        st.lists(st.floats(min_value=-4 * fmt.lsb, max_value=4 * fmt.lsb, allow_nan=False), min_size=1, max_size=5),
        label="values",
    )
    array = np.asarray(values)
    should_raise = bool(np.any(array != 0)) and not np.any(quantize(array, fmt) != 0)

    if should_raise:
        with pytest.raises(QuantizationError):
            quantize_nonzero(array, fmt, "values")
    else:
        assert np.array_equal(quantize_nonzero(array, fmt, "values"), quantize(array, fmt))


def test_fixed_point_value_conversions() -> None:
    value = FixedPointValue(word=-96, fmt=Q8_6)

    assert value.to_float() == -1.5
    assert float(value) == -1.5
    assert int(value) == -96
    assert repr(value) == "FixedPointValue(-96, Q(8,6) = -1.5)"


def test_format_methods_match_module_functions() -> None:
    values = [-2.5, -0.3, 0.0, 0.7, 3.0]

    assert np.array_equal(Q8_6.quantize(values), quantize(values, Q8_6))
    assert np.array_equal(Q8_6.dequantize([-128, 1, 127]), dequantize([-128, 1, 127], Q8_6))
