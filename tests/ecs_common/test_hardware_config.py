"""Tests of hardware_config.from_metadata and quant_options.options_from_config."""

from __future__ import annotations

import pytest

from ecs_common.errors import ConfigError
from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_common.hardware_config import AcceleratorConfig, from_metadata
from ecs_common.metadata import ECSMetadata
from ecs_common.quant_options import QuantOptions, options_from_config

Q8_6 = FixedPointFormat(wl=8, fl=6)
Q16_6 = FixedPointFormat(wl=16, fl=6)
Q12_11 = FixedPointFormat(wl=12, fl=11)


def test_from_metadata_with_models() -> None:
    hardware = HardwareConfig(num_cores=2)
    quant = QuantConfig(weight_format=FixedPointFormat(wl=6, fl=4), state_format=FixedPointFormat(wl=12, fl=4))

    config = from_metadata(hardware, quant)

    assert isinstance(config, AcceleratorConfig)
    assert config.hardware is hardware
    assert config.quant is quant
    assert config.weight_quant_scheme == FixedPointFormat(wl=6, fl=4)
    assert config.state_quant_scheme == FixedPointFormat(wl=12, fl=4)
    assert config.decay_quant_scheme == Q12_11


def test_from_metadata_with_dicts() -> None:
    config = from_metadata(
        {"num_cores": 8, "num_neurons_core": 256},
        {"weight_format": {"wl": 8, "fl": 5}, "state_format": "Q16.5", "mode": "ptq"},
    )

    assert config.hardware == HardwareConfig(num_cores=8, num_neurons_core=256)
    assert config.quant.weight_format == FixedPointFormat(wl=8, fl=5)
    assert config.quant.state_format == FixedPointFormat(wl=16, fl=5)
    assert config.quant.mode == "ptq"


@pytest.mark.parametrize("quant", [None, {}])
def test_from_metadata_defaults_quantization(quant: object) -> None:
    config = from_metadata({}, quant)

    assert config.hardware == HardwareConfig()
    assert config.quant == QuantConfig()


@pytest.mark.parametrize("weight_format", [Q8_6, {"wl": 8, "fl": 6}, (8, 6), "Q8.6", "Q(8, 6)"])
def test_from_metadata_with_bare_weight_format(weight_format: object) -> None:
    config = from_metadata(HardwareConfig(), weight_format)

    assert config.quant.weight_format == Q8_6
    assert config.quant.state_format == Q16_6
    assert config.quant.decay_format == Q12_11


@pytest.mark.parametrize(
    ("weight_format", "state_format"),
    [("Q4.3", FixedPointFormat(wl=16, fl=3)), ("Q20.10", FixedPointFormat(wl=20, fl=10))],
)
def test_bare_weight_format_sets_state_format(weight_format: str, state_format: FixedPointFormat) -> None:
    config = from_metadata({}, weight_format)

    assert config.quant.state_format == state_format


def test_from_metadata_reads_ecs_metadata_items() -> None:
    metadata = ECSMetadata(
        dt=1e-3,
        hardware_cfg=HardwareConfig(num_cores=3),
        quant_cfg=QuantConfig(weight_format=FixedPointFormat(wl=6, fl=5), state_format=FixedPointFormat(wl=14, fl=5)),
    )

    config = from_metadata(metadata["hardware_cfg"], metadata["quant_cfg"])

    assert config.hardware == metadata.hardware_cfg
    assert config.quant == metadata.quant_cfg


def test_accelerator_config_exposes_hardware_fields() -> None:
    config = from_metadata({"num_cores": 6, "num_routes": 100})

    assert config.num_cores == 6
    assert config.num_routes == 100
    assert config.num_weights_core == 256
    with pytest.raises(AttributeError, match="num_axons"):
        _ = config.num_axons


def test_from_metadata_rejects_invalid_hardware() -> None:
    with pytest.raises(ConfigError, match="invalid hardware config: num_synapses_core=0"):
        from_metadata({"num_synapses_core": 0}, None)


@pytest.mark.parametrize("weight_format", ["Q8.8", "8.6", {"wl": 8}, (8, 6, 1)])
def test_from_metadata_rejects_invalid_weight_format(weight_format: object) -> None:
    with pytest.raises(ConfigError, match="invalid weight format"):
        from_metadata({}, weight_format)


def test_from_metadata_rejects_invalid_quant_dict() -> None:
    with pytest.raises(ConfigError, match="(?s)invalid quantization config: .*same fractional length"):
        from_metadata({}, {"weight_format": "Q8.6", "state_format": "Q16.7"})


def test_options_from_quant_config() -> None:
    config = QuantConfig(weight_format=FixedPointFormat(wl=6, fl=4), state_format=FixedPointFormat(wl=12, fl=4))

    options = options_from_config(config)

    assert isinstance(options, QuantOptions)
    assert options.weight_format == FixedPointFormat(wl=6, fl=4)
    assert options.state_format == FixedPointFormat(wl=12, fl=4)
    assert options.decay_format == Q12_11
    assert options.input_scaling == "state"
    assert options.to_config() == config


def test_options_from_dict_and_none() -> None:
    from_dict = options_from_config({"weight_format": "Q8.6", "state_format": [16, 6], "decay_format": "Q10.9"})
    from_none = options_from_config(None)

    assert from_dict.decay_format == FixedPointFormat(wl=10, fl=9)
    assert from_none == QuantOptions(weight_format=Q8_6, state_format=Q16_6, decay_format=Q12_11)


def test_options_from_config_rejects_invalid_dict() -> None:
    with pytest.raises(ConfigError, match="(?s)invalid quantization config: .*decay_format"):
        options_from_config({"decay_format": "Q12.12"})
