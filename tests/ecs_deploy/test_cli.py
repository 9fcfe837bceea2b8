"""The ecs-deploy command line: simulate, memfiles, report, check, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import h5py
import nir
import numpy as np
import pytest
from deploy_testing import dense_net
from typer.testing import CliRunner

from ecs_common.hardware import HardwareConfig
from ecs_deploy.cli import app
from ecs_deploy.memfiles import load_mem_files

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def assert_one_line_error(result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0]


def test_simulate_prints_predictions_and_accuracy(nir_file, samples_file, tmp_path):
    network_path, _ = nir_file
    samples_path, x, y = samples_file
    out = tmp_path / "results.npz"
    result = invoke("simulate", network_path, "--samples", samples_path, "--out", out, "--batch-size", 16, "--show", 2)
    assert result.exit_code == 0, result.output
    assert "sample 0: predicted" in result.output
    assert "accuracy: " in result.output
    with np.load(out) as saved:
        assert saved["predictions"].shape == (40,)
        np.testing.assert_array_equal(saved["labels"], y)
        assert saved["output_states"].shape[:2] == (40, 12 + int(saved["latency"]))
        assert "spike_counts_lif1" in saved.files

    again = invoke("simulate", network_path, "--samples", samples_path, "--out", out)
    assert_one_line_error(again, 2, "exists already", "--force")


def test_simulate_without_labels_prints_no_accuracy(nir_file, tmp_path):
    network_path, _ = nir_file
    np.save(tmp_path / "x.npy", np.zeros((3, 4, 24), dtype=np.uint8))
    result = invoke("simulate", network_path, "--samples", tmp_path / "x.npy")
    assert result.exit_code == 0, result.output
    assert "accuracy" not in result.output
    assert "simulated 3 samples" in result.output


def test_memfiles_writes_a_loadable_set(nir_file, tmp_path):
    network_path, _ = nir_file
    result = invoke("memfiles", network_path, "--out", tmp_path / "mem")
    assert result.exit_code == 0, result.output
    assert "Core utilization" in result.output
    assert load_mem_files(tmp_path / "mem").num_outputs == 5
    assert_one_line_error(
        invoke("memfiles", network_path, "--out", tmp_path / "mem"), 2, "contains memory files already"
    )
    assert invoke("memfiles", network_path, "--out", tmp_path / "mem", "--force").exit_code == 0


def test_report_writes_table_and_pngs(nir_file, samples_file, tmp_path):
    network_path, _ = nir_file
    samples_path, _, _ = samples_file
    result = invoke("report", network_path, "--out", tmp_path / "report", "--samples", samples_path)
    assert result.exit_code == 0, result.output
    for name in ("utilization.txt", "utilization.png", "raster.png"):
        assert (tmp_path / "report" / name).exists()


def test_check_exit_codes(nir_file, tmp_path):
    network_path, graph = nir_file
    fits = invoke("check", network_path)
    assert fits.exit_code == 0, fits.output
    assert "fits: 3 of 4 cores used" in fits.output

    small = tmp_path / "small.yaml"
    small.write_text("num_cores: 2\n")
    too_big = invoke("check", network_path, "--hardware", small)
    assert_one_line_error(too_big, 1, "needs 3 cores but the accelerator has 2", "num_cores to at least 3")


def test_check_json_report(nir_file):
    network_path, _ = nir_file
    result = invoke("check", network_path, "--json")
    assert result.exit_code == 0
    assert '"fits": true' in result.output


def test_file_without_metadata_needs_and_takes_configs(tmp_path):
    graph = dense_net(np.random.default_rng(0))
    graph.metadata = {}
    path = tmp_path / "foreign.nir"
    nir.write(path, graph)
    assert_one_line_error(invoke("check", path), 2, "no 'ecs' metadata", "--hardware hw.yaml and --quant quant.yaml")

    hardware, quant = tmp_path / "hw.yaml", tmp_path / "quant.yaml"
    hardware.write_text(HardwareConfig().model_dump_json())
    quant.write_text("weight_format: Q8.6\n")
    result = invoke("check", path, "--hardware", hardware, "--quant", quant)
    assert result.exit_code == 0, result.output
    assert "assumed dt=0.001, reset_mode='to_reset', readout='last'" in result.output


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        ("missing", ("not found",)),
        ("truncated", ("truncated, corrupt or not a NIR file",)),
        ("schema", ("schema version 7",)),
        ("unsupported", ("has type Threshold", "supported node types: Input, Output")),
        ("mismatch", ("edge whose shapes disagree",)),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(damage, fragments, tmp_path, nir_file):
    good, graph = nir_file
    path = tmp_path / f"{damage}.nir"
    if damage == "truncated":
        path.write_bytes(good.read_bytes()[:700])
    elif damage == "schema":
        graph.metadata = {"ecs": '{"schema_version": 7, "dt": 0.001}'}
        nir.write(path, graph)
    elif damage == "unsupported":
        graph.nodes["lif1"] = nir.Threshold(np.ones(16))
        nir.write(path, graph)
    elif damage == "mismatch":
        nir.write(path, graph)
        with h5py.File(path, "r+") as handle:
            del handle["node/nodes/fc2/weight"]
            handle["node/nodes/fc2"].create_dataset("weight", data=np.ones((12, 15)))
    for command in (("check",), ("memfiles", "--out", tmp_path / "m"), ("report", "--out", tmp_path / "r")):
        result = invoke(command[0], path, *command[1:])
        assert_one_line_error(result, 2, *fragments)


def test_cli_in_a_subprocess(nir_file, samples_file):
    network_path, _ = nir_file
    samples_path, _, _ = samples_file
    command = [sys.executable, "-c", "from ecs_deploy.cli import main; main()"]
    done = subprocess.run(
        [*command, "simulate", str(network_path), "--samples", str(samples_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "accuracy: " in done.stdout

    failed = subprocess.run(
        [*command, "check", str(network_path) + ".absent"], capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 2
    assert failed.stderr.strip().startswith("error: NIR file")
    assert "Traceback" not in failed.stderr


def test_simulate_rejects_non_numpy_samples(nir_file, tmp_path):
    network_path, _ = nir_file
    samples = tmp_path / "samples.txt"
    samples.write_text("0 1 0 1\n")
    result = invoke("simulate", network_path, "--samples", samples)
    assert_one_line_error(result, 2, "samples.txt' is not a valid .npy/.npz sample file", "x [N, T, *input_shape]")
    assert "allow_pickle" not in result.output
    assert "pickled" not in result.output


def test_simulate_reports_sample_file_shape(nir_file, tmp_path):
    network_path, _ = nir_file
    samples = tmp_path / "wrong_shape.npz"
    np.savez(samples, x=np.zeros((300, 20, 1, 16, 16), dtype=np.uint8))
    result = invoke("simulate", network_path, "--samples", samples, "--batch-size", 256)
    assert_one_line_error(result, 2, "wrong_shape.npz", "(300, 20, 1, 16, 16)", "input_shape (24,)")
    assert "(256, 20, 1, 16, 16)" not in result.output
    assert not result.output.startswith("\n")


def test_simulate_rejects_empty_samples(nir_file, tmp_path):
    network_path, _ = nir_file
    samples = tmp_path / "empty.npz"
    np.savez(samples, x=np.zeros((0, 12, 24), dtype=np.uint8), y=np.zeros(0, dtype=np.int64))
    result = invoke("simulate", network_path, "--samples", samples)
    assert_one_line_error(result, 2, "empty.npz' contains 0 samples")


def test_simulate_rejects_out_of_range_label(nir_file, tmp_path):
    network_path, _ = nir_file
    samples = tmp_path / "labels.npz"
    y = np.array([0, 4, 7, -1])
    np.savez(samples, x=np.zeros((4, 12, 24), dtype=np.uint8), y=y)
    result = invoke("simulate", network_path, "--samples", samples)
    assert_one_line_error(result, 2, "labels.npz' has label 7 at sample 2", "from 0 to 4")


@pytest.mark.parametrize("command", ["memfiles", "report"])
def test_unwritable_output_folder_named(nir_file, command):
    network_path, _ = nir_file
    result = invoke(command, network_path, "--out", "/proc/nope")
    assert_one_line_error(result, 2, "cannot write to output folder '/proc/nope'", "choose a writable folder")
    assert "Errno" not in result.output


def test_bundle_unwritable_output_folder_named(nir_file):
    network_path, _ = nir_file
    result = invoke("bundle", network_path, "--out", "/proc/nope/bundle")
    assert_one_line_error(result, 2, "cannot write to output folder '/proc/nope'", "choose a writable folder")
    assert "Errno" not in result.output


def test_existing_outputs_name_only_cli_flag(nir_file, samples_file, tmp_path):
    network_path, _ = nir_file
    samples_path, _, _ = samples_file
    memfiles = tmp_path / "memfiles"
    results = tmp_path / "results.npz"
    results.write_bytes(b"")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    assert invoke("memfiles", network_path, "--out", memfiles).exit_code == 0
    commands = [
        ("memfiles", network_path, "--out", memfiles),
        ("simulate", network_path, "--samples", samples_path, "--out", results),
        ("bundle", memfiles, "--out", bundle),
    ]
    for command in commands:
        result = invoke(*command)
        assert_one_line_error(result, 2, "pass --force")
        assert "force=True" not in result.output, command[0]


def test_missing_config_names_only_missing_option(tmp_path):
    graph = dense_net(np.random.default_rng(0))
    graph.metadata = {}
    path = tmp_path / "foreign.nir"
    nir.write(path, graph)
    hardware, quant = tmp_path / "hw.yaml", tmp_path / "quant.yaml"
    hardware.write_text(HardwareConfig().model_dump_json())
    quant.write_text("weight_format: Q8.6\n")

    result = invoke("check", path, "--hardware", hardware)
    assert_one_line_error(result, 2, "so the quant config must be given: pass --quant quant.yaml on")
    assert "--hardware hw.yaml" not in result.output
    assert "hardware=..." not in result.output

    result = invoke("check", path, "--quant", quant)
    assert_one_line_error(result, 2, "so the hardware config must be given: pass --hardware hw.yaml on")
    assert "--quant quant.yaml" not in result.output


@pytest.mark.parametrize(
    ("command", "fragment"),
    [("simulate", "3 when the simulated outputs differ"), ("transfer", "3 when the host is unreachable")],
)
def test_help_lists_exit_code_3(command, fragment):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    assert fragment in " ".join(result.output.split())
