"""ecs-train's own networks, quantized or not, export faithfully, and ``ecs-train export`` writes their metadata."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ecs_common.formats import QuantConfig
from ecs_train.config import ExperimentConfig, parse_config, save_yaml
from ecs_train.models import SpikingNetwork, build_model
from ecs_train.nir_export import NIRFileExistsError, read_metadata, simulate_float, to_nir_graph
from ecs_train.nir_export.checkpoint import FLOAT_TEST_ACC_KEY, QUANT_TEST_ACC_KEY, export_checkpoint
from ecs_train.quantization import prepare_quantized
from ecs_train.training import SpikingClassifier

torch.set_num_threads(1)

STEPS = 30
BATCH = 3
TOLERANCE = 1e-6
DIGITS_SHAPE = [2, 16, 16]  # input shape and classes of the default dataset, scikit-learn digits
DIGITS_CLASSES = 10


def _config(tmp_path: Path, **network: object) -> ExperimentConfig:
    network_cfg = {"hidden_sizes": [12], "init_gain": 4.0, "v_threshold": 0.5, **network}
    return parse_config(
        {
            "model_cfg": {"network_cfg": network_cfg},
            "trainer_cfg": {"output_path": str(tmp_path / "run")},
            "hardware_cfg": {"num_cores": 2, "num_weights_core": 128},
        }
    )


def _network(config: ExperimentConfig, input_shape: tuple[int, ...]) -> SpikingNetwork:
    torch.manual_seed(0)
    return build_model(config.model_cfg.network_cfg, input_shape, num_classes=4)


def _events(input_shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand((BATCH, STEPS, *input_shape), generator=generator) < 0.3).to(torch.float64)


def _run_float(network: SpikingNetwork, events: torch.Tensor) -> np.ndarray:
    model = copy.deepcopy(network).double()
    with torch.no_grad(), model.float_forward():
        return model.run(events).states.numpy()


# name -> (network config overrides, input shape, steps the NIR output lags behind torch)
MODEL_CASES: dict[str, tuple[dict[str, object], tuple[int, ...], int]] = {
    "lif": ({}, (2, 5, 5), 0),
    "lif_subtract": ({"reset_mode": "subtract"}, (2, 5, 5), 0),
    "if": ({"neuron_type": "if", "v_reset": -0.25}, (2, 5, 5), 0),
    "cubalif": ({"neuron_type": "cubalif", "v_reset": -0.25}, (2, 5, 5), 0),
    "conv": ({"architecture": "conv", "conv_channels": [3, 4], "init_gain": 8.0, "v_threshold": 0.3}, (2, 8, 8), 0),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_spiking_network_round_trip(case: str, tmp_path: Path) -> None:
    overrides, input_shape, lag = MODEL_CASES[case]
    config = _config(tmp_path, **overrides)
    network = _network(config, input_shape)
    metadata = {"dt": config.model_cfg.network_cfg.dt}
    graph = to_nir_graph(network, metadata, torch.zeros(input_shape))
    events = _events(input_shape, seed=1)

    expected = _run_float(network, events)
    simulated = simulate_float(graph, events.transpose(0, 1).numpy())

    assert np.max(np.abs(expected)) > 0.05, "the output stays silent, so the comparison proves little"
    np.testing.assert_allclose(simulated[lag:], expected[: STEPS - lag], rtol=0, atol=TOLERANCE)


def test_spiking_network_reset_mode_recorded(tmp_path: Path) -> None:
    config = _config(tmp_path, reset_mode="subtract")
    graph = to_nir_graph(_network(config, (2, 5, 5)), {"dt": 1e-3}, torch.zeros(2, 5, 5))

    assert read_metadata(graph).reset_mode == "subtract"


def test_quantized_network_weights_on_grid(tmp_path: Path) -> None:
    config = _config(tmp_path, architecture="conv", conv_channels=[3], pool_size=2)
    network = _network(config, (2, 8, 8))
    quant_cfg = QuantConfig()
    prepare_quantized(network, quant_cfg)
    graph = to_nir_graph(network, {"dt": 1e-3, "quant_cfg": quant_cfg}, torch.zeros(2, 8, 8))

    weights = [node.weight for node in graph.nodes.values() if isinstance(node, (nir.Linear, nir.Conv2d))]
    assert len(weights) == 3
    for weight in weights:
        words = weight.astype(np.float64) * quant_cfg.weight_format.scale
        np.testing.assert_array_equal(words, np.round(words))


def test_quantized_network_matches_float_forward(tmp_path: Path) -> None:
    config = _config(tmp_path)
    network = _network(config, (2, 5, 5))
    prepare_quantized(network, QuantConfig())
    graph = to_nir_graph(network, {"dt": 1e-3}, torch.zeros(2, 5, 5))
    events = _events((2, 5, 5), seed=2)

    expected = _run_float(network, events)

    assert isinstance(graph.nodes["layers.2"], nir.LIF)
    np.testing.assert_allclose(simulate_float(graph, events.transpose(0, 1).numpy()), expected, atol=TOLERANCE)


def _save_checkpoint(config: ExperimentConfig, path: Path, **entries: object) -> SpikingClassifier:
    torch.manual_seed(3)
    model = SpikingClassifier(config, DIGITS_SHAPE, DIGITS_CLASSES)
    with torch.no_grad():
        first = model.network.layers[1].weight
        first[:, : first.shape[1] // 2] = 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "ecs_quantized": False, **entries}, path)
    return model


def test_export_checkpoint_metadata(tmp_path: Path) -> None:
    config = _config(tmp_path, readout="max")
    checkpoint = tmp_path / "model.ckpt"
    _save_checkpoint(config, checkpoint, **{FLOAT_TEST_ACC_KEY: 0.9, QUANT_TEST_ACC_KEY: torch.tensor(0.875)})

    graph = export_checkpoint(config, checkpoint, tmp_path / "net.nir")

    metadata = read_metadata(tmp_path / "net.nir")
    assert metadata == read_metadata(graph)
    assert metadata.hardware_cfg == config.hardware_cfg
    assert metadata.quant_cfg == config.model_cfg.quant_cfg
    assert metadata.dt == config.model_cfg.network_cfg.dt
    assert metadata.reset_mode == "to_reset"
    assert metadata.readout == "max"
    assert metadata.provenance.dataset == "digits"
    assert metadata.provenance.checkpoint_sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert metadata.provenance.float_test_acc == 0.9
    assert metadata.provenance.quant_test_acc == 0.875
    assert metadata.provenance.producer == "ecs-train 0.1.0"


def test_export_checkpoint_sparsity_measured(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _save_checkpoint(config, tmp_path / "model.ckpt")

    graph = export_checkpoint(config, tmp_path / "model.ckpt", tmp_path / "net.nir")

    weights = [graph.nodes["layers.1"].weight, graph.nodes["layers.3"].weight]
    zeros = sum(int(np.count_nonzero(weight == 0)) for weight in weights)
    expected = zeros / sum(weight.size for weight in weights)
    assert expected > 0.4
    assert read_metadata(graph).provenance.sparsity == pytest.approx(expected)


def test_export_checkpoint_without_accuracies(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _save_checkpoint(config, tmp_path / "model.ckpt")

    graph = export_checkpoint(config, tmp_path / "model.ckpt", tmp_path / "net.nir")

    assert read_metadata(graph).provenance.float_test_acc is None
    assert read_metadata(graph).provenance.quant_test_acc is None


def test_export_checkpoint_folder(tmp_path: Path) -> None:
    config = _config(tmp_path)
    folder = tmp_path / "checkpoints"
    _save_checkpoint(config, folder / "final.ckpt")

    graph = export_checkpoint(config, folder, tmp_path / "net.nir")

    digest = hashlib.sha256((folder / "final.ckpt").read_bytes()).hexdigest()
    assert read_metadata(graph).provenance.checkpoint_sha256 == digest


def test_export_checkpoint_keeps_existing_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _save_checkpoint(config, tmp_path / "model.ckpt")
    (tmp_path / "net.nir").write_bytes(b"keep")

    with pytest.raises(NIRFileExistsError):
        export_checkpoint(config, tmp_path / "model.ckpt", tmp_path / "net.nir")
    assert (tmp_path / "net.nir").read_bytes() == b"keep"


@pytest.fixture
def cli_files(tmp_path: Path) -> tuple[Path, Path]:
    config = _config(tmp_path)
    config_path = save_yaml(config, tmp_path / "config.yaml")
    _save_checkpoint(config, tmp_path / "model.ckpt")
    return config_path, tmp_path / "model.ckpt"


def _invoke(*arguments: str):
    from ecs_train.cli import app

    return CliRunner().invoke(app, ["export", *arguments])


def test_export_command_writes_file(cli_files: tuple[Path, Path], tmp_path: Path) -> None:
    config_path, checkpoint = cli_files
    out = tmp_path / "network.nir"

    result = _invoke(str(config_path), "--checkpoint", str(checkpoint), "--out", str(out))

    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout
    assert read_metadata(out).provenance.checkpoint_sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()


def test_export_command_needs_force(cli_files: tuple[Path, Path], tmp_path: Path) -> None:
    config_path, checkpoint = cli_files
    out = tmp_path / "network.nir"
    out.write_bytes(b"old")

    refused = _invoke(str(config_path), "--checkpoint", str(checkpoint), "--out", str(out))
    forced = _invoke(str(config_path), "--checkpoint", str(checkpoint), "--out", str(out), "--force")

    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1
    assert "already exists" in refused.stderr
    assert "Traceback" not in refused.output
    assert forced.exit_code == 0, forced.output
    assert isinstance(nir.read(out), nir.NIRGraph)


def test_export_command_missing_checkpoint(cli_files: tuple[Path, Path], tmp_path: Path) -> None:
    config_path, _ = cli_files

    result = _invoke(str(config_path), "--checkpoint", str(tmp_path / "absent.ckpt"), "--out", str(tmp_path / "n.nir"))

    assert result.exit_code == 2
    assert result.stderr.startswith("error: checkpoint")
    assert "not found" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "n.nir").exists()


def test_export_command_invalid_config(cli_files: tuple[Path, Path], tmp_path: Path) -> None:
    _, checkpoint = cli_files
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_cfg: {network_cfg: {hidden_sizes: [0]}}\n", encoding="utf-8")

    result = _invoke(str(bad), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "n.nir"))

    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: invalid config ")
    assert lines[1] == "  model_cfg.network_cfg.hidden_sizes.0: Input should be greater than 0 (got 0)"
    assert len(lines) == 2
