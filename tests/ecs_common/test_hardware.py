"""Tests of ecs_common.hardware: validation of HardwareConfig and its dict-style access."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ecs_common.errors import ConfigError
from ecs_common.hardware import HardwareConfig, hardware_config_from

FIELDS = ["num_cores", "num_neurons_core", "num_synapses_core", "num_routes", "num_weights_core"]


def test_hardware_defaults() -> None:
    config = HardwareConfig()

    assert config.num_cores == 4
    assert config.num_neurons_core == 1024
    assert config.num_synapses_core == 65536
    assert config.num_routes == 4096
    assert config.num_weights_core == 256


def test_hardware_field_list() -> None:
    assert HardwareConfig().keys() == FIELDS


@given(field=st.sampled_from(FIELDS), value=st.integers(min_value=1, max_value=2**40))
def test_hardware_accepts_positive_ints(field: str, value: int) -> None:
    config = hardware_config_from({field: value})

    assert getattr(config, field) == value
    assert config[field] == value


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [0, -1])
def test_hardware_rejects_non_positive(field: str, value: int) -> None:
    with pytest.raises(ConfigError, match=rf"invalid hardware config: {field}={value}: Input should be greater than 0"):
        hardware_config_from({field: value})


@pytest.mark.parametrize("value", [2.5, "four", None])
def test_hardware_rejects_non_integers(value: object) -> None:
    with pytest.raises(ConfigError, match=r"invalid hardware config: num_routes=.*valid integer"):
        hardware_config_from({"num_routes": value})


def test_hardware_error_names_every_invalid_field() -> None:
    with pytest.raises(ConfigError) as caught:
        hardware_config_from({"num_cores": 0, "num_weights_core": -3})

    message = str(caught.value)
    assert "num_cores=0" in message
    assert "num_weights_core=-3" in message


def test_hardware_rejects_unknown_field() -> None:
    with pytest.raises(ConfigError, match="num_core=4: Extra inputs are not permitted"):
        hardware_config_from({"num_core": 4})


def test_hardware_config_from_model_and_non_mapping() -> None:
    config = HardwareConfig(num_cores=2)

    assert hardware_config_from(config) is config
    with pytest.raises(ConfigError, match="invalid hardware config"):
        hardware_config_from(42)


def test_hardware_item_access_reads_and_writes() -> None:
    config = HardwareConfig()

    config["num_neurons_core"] = 512

    assert config["num_neurons_core"] == 512
    assert config.num_neurons_core == 512
    assert dict(config) == config.model_dump()


def test_hardware_item_assignment_is_validated() -> None:
    config = HardwareConfig()

    with pytest.raises(ValidationError, match="num_routes"):
        config["num_routes"] = 0
    assert config.num_routes == 4096


@pytest.mark.parametrize("operation", ["get", "set"])
def test_hardware_item_access_rejects_unknown_key(operation: str) -> None:
    config = HardwareConfig()

    with pytest.raises(KeyError, match="unknown hardware field 'cores'; expected one of num_cores, "):
        if operation == "get":
            config["cores"]
        else:
            config["cores"] = 2
