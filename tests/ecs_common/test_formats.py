"""Tests of ecs_common.formats: parsing Q(wl, fl) formats and validating QuantConfig."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ecs_common.errors import ConfigError
from ecs_common.formats import (
    MAX_WORD_LENGTH,
    FixedPointFormat,
    QuantConfig,
    parse_format,
    quant_config_from,
)


@pytest.mark.parametrize(
    "value",
    [
        "Q8.6",
        "Q(8, 6)",
        "Q(8,6)",
        "q8.6",
        " Q 8 . 6 ",
        {"wl": 8, "fl": 6},
        (8, 6),
        [8, 6],
        FixedPointFormat(wl=8, fl=6),
    ],
)
def test_parse_format_accepts_each_spelling(value: object) -> None:
    fmt = parse_format(value)

    assert fmt == FixedPointFormat(wl=8, fl=6)


@given(wl=st.integers(min_value=2, max_value=MAX_WORD_LENGTH), data=st.data())
def test_format_string_round_trips(wl: int, data: st.DataObject) -> None:
    fl = data.draw(st.integers(min_value=0, max_value=wl - 1), label="fl")
    fmt = FixedPointFormat(wl=wl, fl=fl)

    assert str(fmt) == f"Q({wl},{fl})"
    assert parse_format(str(fmt)) == fmt
    assert parse_format(f"Q{wl}.{fl}") == fmt


@pytest.mark.parametrize("value", ["Q8.8", "Q(8, 9)", {"wl": 4, "fl": 4}, (6, 7)])
def test_parse_format_rejects_fl_not_below_wl(value: object) -> None:
    with pytest.raises(ConfigError, match=r"(?s)invalid weight format .*fractional length fl=\d+ must be smaller"):
        parse_format(value, "weight format")


def test_format_constructor_rejects_fl_equal_wl() -> None:
    with pytest.raises(ValidationError, match="fractional length fl=8 must be smaller than word length wl=8"):
        FixedPointFormat(wl=8, fl=8)


@pytest.mark.parametrize("value", ["8.6", "Q8", "Qa.b", "Q8.6.1", "", "int8"])
def test_parse_format_rejects_malformed_strings(value: str) -> None:
    with pytest.raises(ConfigError, match=r"write it as 'Q\(wl, fl\)' or 'Q8.6'"):
        parse_format(value, "state format")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"wl": 1, "fl": 0}, "greater than or equal to 2"),
        ({"wl": MAX_WORD_LENGTH + 1, "fl": 0}, f"less than or equal to {MAX_WORD_LENGTH}"),
        ({"wl": 8, "fl": -1}, "greater than or equal to 0"),
        ({"wl": 8}, "fl"),
        ({"wl": 8, "fl": 6, "signed": True}, "signed"),
    ],
)
def test_parse_format_rejects_out_of_range_fields(value: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_format(value)


def test_format_properties_of_q8_6() -> None:
    fmt = FixedPointFormat(wl=8, fl=6)

    assert fmt.min_int == -128
    assert fmt.max_int == 127
    assert fmt.scale == 64.0
    assert fmt.lsb == 1 / 64
    assert fmt.min_value == -2.0
    assert fmt.max_value == 127 / 64


def test_format_is_frozen_and_hashable() -> None:
    fmt = FixedPointFormat(wl=8, fl=6)

    with pytest.raises(ValidationError, match="frozen"):
        fmt.wl = 9  # type: ignore[misc]
    assert len({fmt, FixedPointFormat(wl=8, fl=6)}) == 1


def test_quant_config_defaults() -> None:
    config = QuantConfig()

    assert config.weight_format == FixedPointFormat(wl=8, fl=6)
    assert config.state_format == FixedPointFormat(wl=16, fl=6)
    assert config.decay_format == FixedPointFormat(wl=12, fl=11)
    assert config.input_scaling == "state"
    assert config.enabled is True
    assert config.mode == "qat"


def test_quant_config_from_yaml_style_dict() -> None:
    config = quant_config_from(
        {"mode": "ptq", "weight_format": "Q6.4", "state_format": "Q(12, 4)", "decay_format": [10, 9]}
    )

    assert config.mode == "ptq"
    assert config.weight_format == FixedPointFormat(wl=6, fl=4)
    assert config.state_format == FixedPointFormat(wl=12, fl=4)
    assert config.decay_format == FixedPointFormat(wl=10, fl=9)


def test_quant_config_from_none_and_model() -> None:
    config = QuantConfig()

    assert quant_config_from(None) == QuantConfig()
    assert quant_config_from(config) is config


def test_quant_config_rejects_fl_mismatch() -> None:
    with pytest.raises(ValidationError, match=r"state_format Q\(16,7\) and weight_format Q\(8,6\) must have the same"):
        QuantConfig(state_format=FixedPointFormat(wl=16, fl=7))


def test_quant_config_from_rejects_fl_mismatch() -> None:
    with pytest.raises(ConfigError, match="(?s)invalid quantization config: .*must have the same fractional length"):
        quant_config_from({"weight_format": "Q8.5", "state_format": "Q16.6"})


def test_quant_config_rejects_mismatch_on_assignment() -> None:
    config = QuantConfig()

    with pytest.raises(ValidationError, match="must have the same fractional length"):
        config.weight_format = FixedPointFormat(wl=8, fl=5)


def test_quant_config_rejects_state_narrower_than_weight() -> None:
    with pytest.raises(ConfigError, match=r"state_format Q\(8,6\) must be at least as wide as weight_format Q\(10,6\)"):
        quant_config_from({"weight_format": "Q10.6", "state_format": "Q8.6"})


def test_quant_config_rejects_int64_overflow() -> None:
    with pytest.raises(ConfigError, match="together exceed 62 bits"):
        quant_config_from({"weight_format": "Q8.6", "state_format": "Q32.6", "decay_format": "Q31.30"})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"mode": "int8"}, "mode"),
        ({"input_scaling": "weights"}, "input_scaling"),
        ({"weight_bits": 8}, "weight_bits"),
        ({"weight_format": "Q8.9"}, "weight_format"),
    ],
)
def test_quant_config_from_names_invalid_field(value: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        quant_config_from(value)
