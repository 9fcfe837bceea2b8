"""Unit tests of the main job's parts: configs, output folders, ecs-deploy processes, summaries and test runs."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from ecs_common.errors import ConfigError
from ecs_common.formats import QuantConfig
from ecs_train.cli import app
from ecs_train.config import NetworkConfig
from ecs_train.deploy_process import DeployProcessError, leading_json, run_deploy
from ecs_train.errors import OutputExistsError
from ecs_train.models import build_model
from ecs_train.pipeline import (
    Pipeline,
    PipelineError,
    RunOptions,
    default_config_path,
    prepare_config,
    remove_stale_staging,
    replace_folder,
    resolve_output,
    staging_folder,
    verify_manifest,
)
from ecs_train.quantization import quantize_model
from ecs_train.run_summary import core_utilization, summary_table
from ecs_train.vectors import expected_outputs, float_run, run_network

ROOT = Path(__file__).resolve().parent.parent.parent
DIGITS_CONFIG = ROOT / "config" / "digits_feed_forward.yaml"


def test_default_config_is_digits():
    assert default_config_path().resolve() == DIGITS_CONFIG.resolve()


def test_prepare_config_applies_overrides(tmp_path):
    options = RunOptions(data_dir=tmp_path, epochs=2, qat_epochs=0, limit_batches=3)

    config = prepare_config(DIGITS_CONFIG, options)

    assert config.data_cfg.data_dir == tmp_path
    assert config.trainer_cfg.num_epochs == 2
    assert config.trainer_cfg.qat_epochs == 0
    assert config.trainer_cfg.limit_batches == 3


def test_prepare_config_requires_quantization(tmp_path):
    text = DIGITS_CONFIG.read_text().replace("enabled: true", "enabled: false")
    path = tmp_path / "float.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError, match="quant_cfg.enabled"):
        prepare_config(path, RunOptions())


def test_resolve_output_rejects_existing(tmp_path):
    config = prepare_config(DIGITS_CONFIG, RunOptions())

    with pytest.raises(OutputExistsError, match="--force"):
        resolve_output(RunOptions(output=tmp_path), config)
    assert resolve_output(RunOptions(output=tmp_path, force=True), config) == tmp_path
    assert resolve_output(RunOptions(output=tmp_path / "new"), config) == tmp_path / "new"


def test_staging_folder_removed_on_error(tmp_path):
    target = tmp_path / "run"

    with pytest.raises(RuntimeError), staging_folder(target) as staging:
        (staging / "half.txt").write_text("partial")
        raise RuntimeError("stage failed")

    assert list(tmp_path.iterdir()) == []


def test_replace_folder(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging = tmp_path / ".run.partial"
    staging.mkdir()
    (staging / "new.txt").write_text("new")

    with pytest.raises(OutputExistsError):
        replace_folder(staging, target, force=False)
    replace_folder(staging, target, force=True)

    assert sorted(path.name for path in target.iterdir()) == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]


def test_verify_manifest_detects_changed_file(tmp_path):
    (tmp_path / "core000_neurons.mem").write_text("0001\n")
    digest = hashlib.sha256(b"0001\n").hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps({"files": [{"path": "core000_neurons.mem", "sha256": digest}]}))

    assert verify_manifest(tmp_path) == 1
    (tmp_path / "core000_neurons.mem").write_text("0002\n")
    with pytest.raises(PipelineError, match="core000_neurons.mem"):
        verify_manifest(tmp_path)


def test_run_deploy_exit_codes(tmp_path):
    command = [sys.executable, "-c", "import sys; print('out'); sys.exit(int(sys.argv[1]))"]

    result = run_deploy(["3"], cwd=tmp_path, command=command, capture=True, allowed=(0, 3))
    assert result.returncode == 3
    assert result.stdout.strip() == "out"
    with pytest.raises(DeployProcessError, match="exit code 2") as raised:
        run_deploy(["2"], cwd=tmp_path, command=command, capture=True)
    assert raised.value.returncode == 2


def test_run_deploy_missing_command(tmp_path):
    with pytest.raises(DeployProcessError, match="ECS_DEPLOY_COMMAND"):
        run_deploy(["check"], cwd=tmp_path, command=[str(tmp_path / "no-such-ecs-deploy")])


def test_leading_json_ignores_status_line():
    assert leading_json('{"fits": true}\nfits: 2 of 4 cores used\n', "check") == {"fits": True}
    with pytest.raises(DeployProcessError, match="did not print JSON"):
        leading_json("error: invalid", "check")


def summary(comparison_exact: bool = True) -> dict:
    placement = {
        "cores": [{"core": 0, "layer": "input", "neurons": 512, "synapses": 0, "routes": 512, "unique_weights": 0}]
    }
    hardware = {"num_neurons_core": 1024, "num_synapses_core": 65536, "num_routes": 4096, "num_weights_core": 256}
    return {
        "config": "config/digits_feed_forward.yaml",
        "test_samples": 10,
        "accuracy": {"float": 0.9, "quantized": 0.8, "pruned": None, "deployed": 0.8},
        "sparsity": 0.25,
        "comparison": {
            "num_samples": 10,
            "num_timesteps": 20,
            "num_outputs": 10,
            "output_mismatches": 0,
            "max_abs_error": 0,
            "mse": 0.0,
            "exact": comparison_exact,
        },
        "utilization": core_utilization(placement, hardware),
        "stages": {
            "train": {"status": "ok", "wall_s": 12.5, "detail": ""},
            "prune": {"status": "skipped", "wall_s": 0.0, "detail": ""},
        },
        "total_wall_s": 13.0,
    }


def test_core_utilization_pairs_use_and_capacity():
    cores = summary()["utilization"]

    assert cores[0]["neurons"] == {"used": 512, "capacity": 1024}
    assert cores[0]["unique_weights"] == {"used": 0, "capacity": 256}


def test_summary_table_lists_results():
    console = Console(file=io.StringIO(), width=120)

    console.print(summary_table(summary()))
    text = console.file.getvalue()

    for expected in ("90.00%", "80.00%", "25.00%", "0 of 2000", "neurons 50%", "12.5 s", "skipped", "13.0 s"):
        assert expected in text, f"{expected!r} missing from the summary table"


def tiny_network():
    torch.manual_seed(0)
    network = build_model(NetworkConfig(hidden_sizes=[6], readout="max"), (2, 3, 3), 4)
    with torch.no_grad():
        for layer in network.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(4.0)
    return quantize_model(network, QuantConfig())


def test_run_network_records_integer_outputs():
    network = tiny_network()
    x = (np.random.default_rng(0).random((5, 7, 2, 3, 3)) < 0.5).astype(np.uint8)
    y = np.array([0, 1, 2, 3, 0])

    run = run_network(network, x, y, batch_size=2, record_spikes=True)

    assert run.output_states.shape == (5, 7, 4)
    assert run.output_states.dtype == np.int64
    assert run.num_samples == 5
    assert run.accuracy == pytest.approx(np.mean(run.predictions == y))
    np.testing.assert_array_equal(run.spike_counts["input"], x.reshape(5, 7, -1).sum(axis=1))
    np.testing.assert_array_equal(run.spike_counts["layers.2"], run.spikes["layers.2"].sum(axis=1))
    # The readout is the maximum state over time, so predictions follow the words.
    np.testing.assert_array_equal(run.predictions, run.output_states.max(axis=1).argmax(axis=1))


def test_expected_outputs_of_run():
    network = tiny_network()
    x = np.ones((2, 4, 2, 3, 3), dtype=np.uint8)

    expected = expected_outputs(network, run_network(network, x))

    assert expected.latency == network.latency()
    assert expected.output_layer == "layers.4"
    assert expected.state_format == "Q(16,6)"


def test_float_run_has_no_integer_outputs():
    network = tiny_network()
    x = np.ones((2, 4, 2, 3, 3), dtype=np.uint8)

    run = float_run(network, x)

    assert run.output_states is None
    assert network.quantized, "float_run must leave the network quantized"
    with pytest.raises(ConfigError, match="not quantized"):
        expected_outputs(network, run)


def test_stale_staging_removed(tmp_path, caplog):
    target = tmp_path / "run"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".run.partial-{finished.stdout.strip()}"
    stale.mkdir()
    alive = tmp_path / f".run.partial-{os.getpid()}"
    alive.mkdir()

    with caplog.at_level(logging.WARNING, logger="ecs_train.pipeline"):
        removed = remove_stale_staging(target)

    assert removed == [stale]
    assert f"removed stale partial outputs {stale}" in caplog.text
    assert not stale.exists()
    assert alive.exists()


def test_run_interrupted_writes_nothing(tmp_path, monkeypatch):
    def interrupt(self, name, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(Pipeline, "_run_stage", interrupt)
    output = tmp_path / "run"
    config = Path(__file__).resolve().parents[2] / "config" / "digits_feed_forward.yaml"

    result = CliRunner().invoke(app, ["run", str(config), "--output", str(output)])

    assert result.exit_code == 130
    assert "interrupted; no outputs written" in result.output
    assert not output.exists()
    assert list(tmp_path.iterdir()) == []
