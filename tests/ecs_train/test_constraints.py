"""Tests of the hardware constraint checks: the tutorial scenarios, degenerate weights and agreement with ecs-deploy."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ecs_common.errors import ConfigError, QuantizationError, ResourceError
from ecs_common.formats import FixedPointFormat
from ecs_train.config import ExperimentConfig, load_yaml
from ecs_train.constraints import (
    EmptyLayerError,
    NeuronCapacityError,
    WeightSaturationError,
    accelerator_config_of,
    build_network_from_config,
    check_constraints,
    constraint_report,
    dense_pattern_words,
)
from ecs_train.models import build_model
from ecs_train.quantization import quantize_model

torch.set_num_threads(1)

REPOSITORY = Path(__file__).resolve().parents[2]
NMNIST_CONFIG = REPOSITORY / "config" / "nmnist_feed_forward.yaml"
DIGITS_CONFIG = REPOSITORY / "config" / "digits_feed_forward.yaml"


def nmnist_config() -> ExperimentConfig:
    """Return the N-MNIST feed-forward config; the shapes need no recordings, so data_dir is cleared."""
    config = load_yaml(NMNIST_CONFIG)
    config.data_cfg.data_dir = None
    config.data_cfg.download = False
    return config


def quantized_network(config: ExperimentConfig, seed: int = 0):
    """Return the config's network with random weights that are nonzero in the weight format, quantized."""
    torch.manual_seed(seed)
    network = build_network_from_config(config)
    fmt = config.model_cfg.quant_cfg.weight_format
    with torch.no_grad():
        for module in network.layers:
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module.weight.uniform_(-0.5, 0.5)
    return quantize_model(network, config.model_cfg.quant_cfg), fmt


# The three scenarios of the tutorial on the N-MNIST network 578-128-10.


def test_nmnist_fits_default_hardware() -> None:
    config = nmnist_config()

    check = check_constraints(config, accelerator_config_of(config))

    assert check == (False, False, 578 * 128, 578, (128,), 10)
    report = constraint_report(config)
    assert report.fits
    assert report.placement.cores_needed <= config.hardware_cfg.num_cores


def test_nmnist_neuron_budget_too_small_raises() -> None:
    config = nmnist_config()
    config.hardware_cfg.num_neurons_core = 512
    config.hardware_cfg.num_cores = 3

    with pytest.raises(NeuronCapacityError, match=r"layer 'input' has 578 neurons, more than the 512") as caught:
        check_constraints(config, accelerator_config_of(config))

    error = caught.value
    assert isinstance(error, ResourceError)
    assert (error.layer, error.resource, error.limit, error.demand) == ("input", "neurons", 512, 578)
    message = str(error)
    assert "the neurons alone need 4 cores (input: 2, layers.2: 1, layers.4: 1)" in message
    assert "has 3 (num_cores)" in message
    assert "set num_cores to at least 4" in message
    assert "raise num_neurons_core to at least 578" in message
    assert "make layer 'input' smaller" in message
    assert "pruning cannot help" in message


def test_too_few_cores_for_layers_raises() -> None:
    config = nmnist_config()
    config.hardware_cfg.num_cores = 2

    with pytest.raises(NeuronCapacityError, match=r"layers never share a core, so the 3 layers need 3 cores") as caught:
        check_constraints(config, accelerator_config_of(config))

    assert (caught.value.resource, caught.value.limit, caught.value.demand) == ("cores", 2, 3)
    assert "num_neurons_core" not in str(caught.value).split("To make it fit:")[1]


def test_nmnist_input_split_with_enough_cores() -> None:
    config = nmnist_config()
    config.hardware_cfg.num_neurons_core = 512
    config.hardware_cfg.num_cores = 8

    report = constraint_report(config)

    assert report.fits
    assert report.cores_of("input") == [(0, 0, 512), (1, 512, 66)]
    assert check_constraints(config, accelerator_config_of(config))[:2] == (False, False)
    assert "0: 0+512, 1: 512+66" in report.render()


def test_nmnist_synapse_budget_needs_global_pruning() -> None:
    config = nmnist_config()
    config.hardware_cfg.num_synapses_core = 16384
    config.hardware_cfg.num_routes = 16384

    fan_in_out, global_pruning, num_weights_hidden, *_ = check_constraints(config, accelerator_config_of(config))
    report = constraint_report(config)

    assert not fan_in_out
    assert global_pruning
    assert num_weights_hidden == 578 * 128
    assert not report.fits
    # 75264 synapses against 3 cores of 16384 left after the input core.
    assert report.synapses_to_prune == 578 * 128 + 128 * 10 - 3 * 16384
    assert "prune at least 26112 synapses" in report.message
    assert report.synapses_to_prune_by_magnitude is not None
    assert report.synapses_to_prune_by_magnitude >= report.synapses_to_prune
    assert "global magnitude pruning must remove" in report.summary()


def _prune_smallest(network, fmt: FixedPointFormat, count: int) -> None:
    """Zero the ``count`` weights with the smallest magnitude among those with a nonzero word, network-wide."""
    linears = [module for module in network.layers if isinstance(module, torch.nn.Linear)]
    values = torch.cat([module.weight.detach().flatten() for module in linears])
    candidates = torch.nonzero(torch.round(values * fmt.scale) != 0).flatten()
    chosen = candidates[torch.argsort(values[candidates].abs())[:count]]
    values[chosen] = 0.0
    with torch.no_grad():
        offset = 0
        for module in linears:
            size = module.weight.numel()
            module.weight.copy_(values[offset : offset + size].reshape(module.weight.shape))
            offset += size


def test_magnitude_search_count_is_smallest_that_fits() -> None:
    config = nmnist_config()
    config.hardware_cfg.num_synapses_core = 16384
    config.hardware_cfg.num_routes = 16384
    network, fmt = quantized_network(config)
    accelerator = accelerator_config_of(config)
    removed = constraint_report(network, accelerator).synapses_to_prune_by_magnitude
    assert removed is not None

    one_fewer = copy.deepcopy(network)
    _prune_smallest(one_fewer, fmt, removed - 1)
    _prune_smallest(network, fmt, removed)

    assert constraint_report(network, accelerator).fits
    assert not constraint_report(one_fewer, accelerator, search_pruning=False).fits


def test_split_layers_need_global_pruning() -> None:
    config = nmnist_config()
    config.hardware_cfg.num_synapses_core = 16384
    config.hardware_cfg.num_routes = 16384
    network, fmt = quantized_network(config)
    accelerator = accelerator_config_of(config)
    # Down to exactly the 3 * 16384 synapses that the cores after the input core store in total.
    _prune_smallest(network, fmt, constraint_report(network, accelerator).synapses_to_prune)

    report = constraint_report(network, accelerator, search_pruning=False)

    assert report.num_synapses == 3 * 16384
    assert not report.fits
    assert report.synapses_to_prune == 0
    assert report.global_pruning_necessary
    assert "at least 0 synapses" not in report.summary()
    assert "the synapses fit the cores in total, but the layers split over more cores" in report.summary()


def test_single_neuron_fan_in_overflow() -> None:
    config = nmnist_config()
    config.hardware_cfg.num_synapses_core = 500
    config.hardware_cfg.num_cores = 64

    check = check_constraints(config, accelerator_config_of(config))
    report = constraint_report(config)

    assert check.fan_in_out_pruning_necessary
    assert not report.fits
    assert "needs 578 synapses, more than the limit of 500" in report.message


def test_check_constraints_rejects_conv() -> None:
    config = nmnist_config()
    config.model_cfg.network_cfg.architecture = "conv"

    with pytest.raises(ConfigError, match="check_constraints handles feed-forward networks"):
        check_constraints(config)


def test_report_renders_tables_and_json() -> None:
    config = nmnist_config()

    report = constraint_report(config)
    text = report.render()
    values = json.loads(json.dumps(report.to_dict()))

    for title in ("Layers", "Resources", "Cores"):
        assert title in text
    assert "layers.2" in text
    assert values["fits"] is True
    assert values["num_synapses"] == 578 * 128 + 128 * 10
    assert [layer["name"] for layer in values["layers"]] == ["input", "layers.2", "layers.4"]


def test_dense_pattern_uses_every_nonzero_word() -> None:
    fmt = FixedPointFormat(wl=4, fl=2)

    words = dense_pattern_words((3, 10), fmt)

    assert words.shape == (3, 10)
    assert np.all(words != 0)
    assert set(words.ravel().tolist()) == set(range(-8, 0)) | set(range(1, 8))


def test_trained_weights_count_nonzero_words() -> None:
    config = nmnist_config()
    network, fmt = quantized_network(config)
    first = network.layers[1]
    with torch.no_grad():
        first.weight[:, :100] = 0.001  # below half an LSB of Q(8,6): no synapses

    report = constraint_report(network, accelerator_config_of(config))

    expected = int((torch.round(first.weight * fmt.scale) != 0).sum())
    assert report.layers[1].synapses == expected
    assert report.layers[1].synapses <= 128 * (578 - 100)
    assert 0.17 < report.layers[1].sparsity < 0.2


# Degenerate cases.


def test_layer_quantizing_to_zero_raises() -> None:
    config = nmnist_config()
    network, _ = quantized_network(config)
    with torch.no_grad():
        network.layers[3].weight.fill_(0.001)

    weight_format = re.escape(str(config.model_cfg.quant_cfg.weight_format))
    with pytest.raises(QuantizationError, match=rf"weights of 'layers.3' .* all round to zero in {weight_format}"):
        constraint_report(network, accelerator_config_of(config))


def test_decay_rounding_to_zero_raises() -> None:
    config = nmnist_config()
    config.model_cfg.network_cfg.tau_mem = 0.5
    config.model_cfg.quant_cfg.decay_format = FixedPointFormat(wl=8, fl=7)

    with pytest.raises(QuantizationError, match=r"decay factor dt / tau = 0.002 rounds to zero in Q\(8,7\)"):
        check_constraints(config)


def test_saturated_weights_raise_with_count() -> None:
    config = nmnist_config()
    network, _ = quantized_network(config)
    with torch.no_grad():
        network.layers[1].weight[0, :3] = 5.0

    with pytest.raises(WeightSaturationError, match=r"3 weight\(s\) saturate .* layers.1: 3 of 73984"):
        constraint_report(network, accelerator_config_of(config), allow_saturation=False)
    report = constraint_report(network, accelerator_config_of(config), allow_saturation=True)
    assert report.saturated_weights == 3
    assert report.layers[1].saturated_weights == 3


def test_saturation_default_depends_on_quantization() -> None:
    config = nmnist_config()
    network, _ = quantized_network(config)
    with torch.no_grad():
        network.layers[3].weight[0, 0] = -7.0
    accelerator = accelerator_config_of(config)

    report = constraint_report(network, accelerator)
    with network.float_forward(), pytest.raises(WeightSaturationError, match=r"layers.3: 1 of 1280"):
        constraint_report(network, accelerator)

    assert report.saturated_weights == 1
    weight_format = config.model_cfg.quant_cfg.weight_format
    assert f"1 of 1280 weights of layers.3 saturate in {weight_format}" in report.summary()


def test_empty_layer_raises() -> None:
    config = nmnist_config()
    network, _ = quantized_network(config)
    with torch.no_grad():
        network.layers[3].weight.zero_()

    with pytest.raises(EmptyLayerError, match=r"every one of the 1280 weights of 'layers.3' .* is zero"):
        constraint_report(network, accelerator_config_of(config))


def test_empty_layer_after_pruning_raises() -> None:
    config = nmnist_config()
    network, _ = quantized_network(config)
    torch.nn.utils.prune.custom_from_mask(network.layers[3], "weight", torch.zeros(10, 128))

    with pytest.raises(EmptyLayerError, match="'layers.3'"):
        check_constraints(config, accelerator_config_of(config), model=network)


# Agreement with ecs-deploy, which runs in its own process.


def deploy_check(nir_path: Path) -> dict:
    """Run ``ecs-deploy check --json`` on a NIR file in a subprocess and return its placement report."""
    result = subprocess.run(
        [sys.executable, "-c", "from ecs_deploy.cli import main; main()", "check", str(nir_path), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), f"ecs-deploy check failed: {result.stderr}"
    # The JSON document comes first; a line of text about the fit may follow it.
    report, _ = json.JSONDecoder().raw_decode(result.stdout)
    return report


@pytest.mark.parametrize(
    ("architecture", "hardware", "sparsity"),
    [
        ("feed_forward", {}, 0.0),
        ("feed_forward", {"num_synapses_core": 16384, "num_routes": 16384, "num_cores": 16}, 0.3),
        (
            "feed_forward",
            {"num_neurons_core": 100, "num_synapses_core": 8192, "num_weights_core": 64, "num_cores": 64},
            0.5,
        ),
        ("conv", {"num_neurons_core": 300, "num_synapses_core": 8192, "num_cores": 64}, 0.4),
    ],
)
def test_report_agrees_with_deploy(tmp_path: Path, architecture: str, hardware: dict, sparsity: float) -> None:
    from ecs_train.nir_export import export_nir
    from ecs_train.pruning import make_permanent, prune_to_sparsity

    config = nmnist_config()
    config.model_cfg.network_cfg.architecture = architecture
    for key, value in hardware.items():
        config.hardware_cfg[key] = value
    network, _ = quantized_network(config, seed=1)
    if sparsity:
        prune_to_sparsity(network, sparsity)
        make_permanent(network)
    path = tmp_path / "network.nir"
    metadata = {
        "hardware_cfg": config.hardware_cfg,
        "quant_cfg": config.model_cfg.quant_cfg,
        "dt": config.model_cfg.network_cfg.dt,
    }
    export_nir(network, metadata, path, torch.zeros(network.input_shape))

    mine = constraint_report(network, accelerator_config_of(config), search_pruning=False).placement.to_dict()
    theirs = deploy_check(path)

    assert len(mine["cores"]) > 1
    assert mine["cores"] == theirs["cores"]
    assert mine["resources"] == theirs["resources"]
    assert mine["fits"] == theirs["fits"]


def test_build_model_matches_config_shapes() -> None:
    config = load_yaml(DIGITS_CONFIG)

    network = build_network_from_config(config)
    reference = build_model(config.model_cfg.network_cfg, (2, 16, 16), 10)

    assert network.layer_shapes == reference.layer_shapes


# The check command.


def write_config(config: ExperimentConfig, path: Path) -> Path:
    from ecs_train.config import save_yaml

    return save_yaml(config, path)


@pytest.mark.parametrize(
    ("hardware", "exit_code", "expected"),
    [
        ({}, 0, "the network fits the accelerator"),
        ({"num_synapses_core": 16384, "num_routes": 16384}, 1, "global pruning necessary: at least 26112 synapses"),
        ({"num_neurons_core": 512, "num_cores": 3}, 1, "error: network does not fit: layer 'input' has 578 neurons"),
    ],
)
def test_check_command_exit_codes(tmp_path: Path, hardware: dict, exit_code: int, expected: str) -> None:
    from typer.testing import CliRunner

    from ecs_train.cli import app

    config = nmnist_config()
    for key, value in hardware.items():
        config.hardware_cfg[key] = value
    path = write_config(config, tmp_path / "config.yaml")

    result = CliRunner().invoke(app, ["check", str(path)])

    assert result.exit_code == exit_code, result.output
    assert expected in result.output


def test_check_command_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ecs_train.cli import app

    path = write_config(nmnist_config(), tmp_path / "config.yaml")

    result = CliRunner().invoke(app, ["check", str(path), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_synapses"] == 578 * 128 + 128 * 10


def test_check_json_unplaceable_network(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ecs_train.cli import app

    config = nmnist_config()
    config.hardware_cfg.num_neurons_core = 512
    config.hardware_cfg.num_cores = 3
    path = write_config(config, tmp_path / "config.yaml")

    result = CliRunner().invoke(app, ["check", str(path), "--json"])

    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["fits"] is False
    assert document["error"]["type"] == "NeuronCapacityError"
    assert "layer 'input' has 578 neurons" in document["error"]["message"]


def test_check_command_missing_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ecs_train.cli import app

    result = CliRunner().invoke(app, ["check", str(tmp_path / "missing.yaml")])

    assert result.exit_code == 2
    assert "not found" in result.output
