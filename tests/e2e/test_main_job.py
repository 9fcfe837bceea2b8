"""End-to-end tests of the main job: ``ecs-train run`` on the digits config, and ecs-deploy on ecs-train's NIR files.

Every command runs in a subprocess, as a user would run it. The main-job run
uses tiny settings (one float and one QAT epoch on a few batches, then
pruning with one fine-tuning epoch), so that it ends in about a minute on two
CPU cores. Its accuracy is low, but the deployed outputs must still equal the
training side's bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest
import yaml

from ecs_common.metadata import read_metadata

ROOT = Path(__file__).resolve().parent.parent.parent
DIGITS_CONFIG = ROOT / "config" / "digits_feed_forward.yaml"
STAGES = ["train", "quantize", "constraints", "prune", "export", "vectors", "simulate", "memfiles", "report"]


def ecs_train(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from ecs_train.cli import main; main()", *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def ecs_deploy(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ecs_deploy", *arguments]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def tiny_config(folder: Path, cache_dir: Path) -> Path:
    """Write the digits config with one float and one QAT epoch on four batches, and 30% pruning."""
    config = yaml.safe_load(DIGITS_CONFIG.read_text())
    config["trainer_cfg"].update(num_epochs=1, qat_epochs=1, limit_batches=4)
    config["data_cfg"]["cache_dir"] = str(cache_dir)
    config["pruning_cfg"] = {"sparsity": 0.3, "fine_tune_epochs": 1, "iterations": 1}
    path = folder / "digits_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_main_job_digits(tmp_path, cache_dir):
    config = tiny_config(tmp_path, cache_dir)
    output = tmp_path / "run"

    completed = ecs_train("run", str(config), "--output", str(output), cwd=tmp_path)

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = json.loads((output / "summary.json").read_text())

    # Every stage ran and reported its wall time.
    assert list(summary["stages"]) == STAGES
    for name, stage in summary["stages"].items():
        assert stage["status"] == "ok", f"stage {name}: {stage}"
        assert stage["wall_s"] >= 0
    assert summary["total_wall_s"] >= sum(stage["wall_s"] for stage in summary["stages"].values())

    # The deployed network computes exactly what the quantized (pruned) network computed in training.
    accuracy = summary["accuracy"]
    assert accuracy["deployed"] == accuracy["pruned"]
    assert 0.0 <= accuracy["float"] <= 1.0
    assert 0.0 <= accuracy["quantized"] <= 1.0
    comparison = summary["comparison"]
    assert comparison["exact"] is True
    assert comparison["output_mismatches"] == 0
    assert comparison["max_abs_error"] == 0
    assert comparison["mse"] == 0.0
    assert comparison["num_samples"] == summary["test_samples"]
    # Exported weights that round to zero add to the 30% pruned ones.
    assert 0.3 <= summary["sparsity"] < 0.35

    # Memory files: a manifest whose checksums match the files.
    manifest = json.loads((output / "memfiles" / "manifest.json").read_text())
    assert manifest["format"] == "ecs-memfiles"
    assert manifest["files"], "the manifest lists no memory files"
    for entry in manifest["files"]:
        data = (output / "memfiles" / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]

    # Utilization per core, report files, test vectors.
    assert summary["utilization"], "no per-core utilization in the summary"
    for core in summary["utilization"]:
        assert core["neurons"]["used"] <= core["neurons"]["capacity"]
    for name in ("utilization.txt", "utilization.png", "raster.png"):
        assert (output / "report" / name).stat().st_size > 0, name
    with np.load(output / "vectors" / "samples.npz") as samples:
        assert samples["x"].dtype == np.uint8
        assert samples["x"].shape == (summary["test_samples"], 20, 2, 16, 16)
    with np.load(output / "vectors" / "expected.npz") as expected:
        assert expected["output_states"].shape == (summary["test_samples"], 20, 10)
        assert expected["output_states"].dtype == np.int64

    # The NIR file's provenance describes the deployed (pruned) checkpoint.
    metadata = read_metadata(nir.read(output / "network.nir"))
    provenance = metadata.provenance
    pruned = (output / "checkpoints" / "pruned.ckpt").read_bytes()
    assert provenance.dataset == "digits"
    assert provenance.checkpoint_sha256 == hashlib.sha256(pruned).hexdigest()
    assert provenance.quant_test_acc == pytest.approx(accuracy["pruned"])
    assert provenance.sparsity == pytest.approx(summary["sparsity"])

    # The NIR file passes ecs-deploy's own check.
    check = ecs_deploy("check", str(output / "network.nir"), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "fits" in check.stdout

    # A second run without --force leaves the first run's outputs alone.
    before = (output / "summary.json").read_bytes()
    again = ecs_train("run", str(config), "--output", str(output), cwd=tmp_path)
    assert again.returncode == 2
    assert "exists already" in again.stderr
    assert (output / "summary.json").read_bytes() == before


def test_exported_nir_passes_deploy_check(tmp_path):
    script = """
import sys, torch
from ecs_common.metadata import ECSMetadata
from ecs_train.config import NetworkConfig
from ecs_train.models import build_model
from ecs_train.nir_export import export_nir
from ecs_train.quantization import prepare_quantized

torch.manual_seed(0)
metadata = ECSMetadata(dt=0.001)
network = build_model(NetworkConfig(hidden_sizes=[20]), (2, 8, 8), 10)
prepare_quantized(network, metadata.quant_cfg)
export_nir(network, metadata, sys.argv[1], torch.zeros(2, 8, 8))
"""
    path = tmp_path / "network.nir"
    written = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300)
    assert written.returncode == 0, written.stderr

    check = ecs_deploy("check", str(path), cwd=tmp_path)

    assert check.returncode == 0, check.stderr
    assert "fits: 3 of 4 cores used" in check.stdout


def test_failed_run_leaves_no_output(tmp_path, cache_dir):
    config = tiny_config(tmp_path, cache_dir)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    output = tmp_path / "run"

    completed = ecs_train("run", str(config), "--output", str(output), "--checkpoint", str(corrupt), cwd=tmp_path)

    assert completed.returncode == 2, completed.stderr
    assert "corrupt.ckpt" in completed.stderr
    assert not output.exists()
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".run.")], "staging folder left"


def test_existing_output_rejected_before_training(tmp_path):
    output = tmp_path / "run"
    output.mkdir()

    completed = ecs_train("run", "--config", str(DIGITS_CONFIG), "--output", str(output), cwd=tmp_path)

    assert completed.returncode == 2
    assert "pass --force" in completed.stderr
    assert list(output.iterdir()) == []
