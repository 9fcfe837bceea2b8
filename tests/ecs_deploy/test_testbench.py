"""Test-bench files, deployment_export and ``ecs-deploy simulate --expected`` on the golden vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ecs_common.vectors import EXPECTED_FILE, SAMPLES_FILE, load_expected, load_samples, save_expected, save_samples
from ecs_deploy.cli import app
from ecs_deploy.errors import InputError
from ecs_deploy.export import deployment_export
from ecs_deploy.testbench import read_sample_file, sample_words, write_sample_file

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"


def vectors_folder(root: Path, name: str, case: str = "feed_forward") -> Path:
    """Lay out one golden case as training_export writes a checkpoint folder."""
    folder = root / name
    folder.mkdir(parents=True)
    shutil.copy(GOLDEN_DIR / f"{case}.nir", folder / "network.nir")
    samples = load_samples(GOLDEN_DIR / f"{case}.npz")
    save_samples(folder / SAMPLES_FILE, samples.x, samples.y)
    save_expected(folder / EXPECTED_FILE, load_expected(GOLDEN_DIR / f"{case}.npz"))
    return folder


def test_sample_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = (rng.random((6, 2, 3, 3)) < 0.3).astype(np.uint8)
    states = rng.integers(-40000, 40000, size=(9, 4))
    path = tmp_path / "sample.hex"

    count, digest = write_sample_file(path, frames, states, "sample 0")
    decoded = read_sample_file(path)

    timestep, neuron = np.nonzero(frames.reshape(6, -1))
    assert count == timestep.size
    assert len(digest) == 64
    np.testing.assert_array_equal(decoded.events, np.stack([timestep, neuron], axis=1))
    np.testing.assert_array_equal(decoded.expected_states, states)


def test_sample_file_words_are_32_bit_hex(tmp_path):
    frames = np.zeros((2, 4), dtype=np.uint8)
    frames[1, 3] = 1
    path = tmp_path / "sample.hex"

    write_sample_file(path, frames, np.array([[-3, 64]]), "sample 0")

    lines = path.read_text().splitlines()
    assert lines[0].startswith("//")
    assert lines[1:] == ["00000001", "00000001", "00000001", "00000002", "00010003", "fffffffd", "00000040"]


def test_sample_words_reject_wide_input():
    frames = np.zeros((2, 70000), dtype=np.uint8)

    with pytest.raises(InputError, match="below 65536"):
        sample_words(frames, np.zeros((3, 2), dtype=np.int64))


def test_deployment_export_writes_files(tmp_path):
    root = tmp_path / "test_vectors" / "golden"
    vectors_folder(root, "unpruned")
    vectors_folder(root, "pruned", case="conv")

    comparisons = deployment_export("golden", vectors_dir=root)

    assert sorted(comparisons) == ["pruned", "unpruned"]
    for name, comparison in comparisons.items():
        assert comparison.exact, f"{name}: {comparison.describe()}"
        assert comparison.max_abs_error == 0
        assert comparison.mse == 0.0
        folder = root / name
        assert (folder / "memfiles" / "manifest.json").is_file()
        index = json.loads((folder / "testbench" / "index.json").read_text())
        assert len(index["samples"]) == comparison.num_samples
        assert index["comparison_with_training"]["exact"] is True

    # The test-bench file contains the training side's states, shifted by the latency.
    expected = load_expected(root / "unpruned" / EXPECTED_FILE)
    decoded = read_sample_file(root / "unpruned" / "testbench" / "sample_0000.hex")
    latency = expected.latency
    np.testing.assert_array_equal(decoded.expected_states[latency:], expected.output_states[0])
    assert not decoded.expected_states[:latency].any()


def test_deployment_export_finds_folder_by_dataset(tmp_path, monkeypatch):
    vectors_folder(tmp_path / "test_vectors" / "digits_feed_forward", "unpruned")
    monkeypatch.chdir(tmp_path)

    comparisons = deployment_export("config/digits_feed_forward.yaml")

    assert list(comparisons) == ["unpruned"]


def test_deployment_export_rejects_existing_files(tmp_path):
    root = tmp_path / "vectors"
    vectors_folder(root, "unpruned")
    deployment_export("golden", vectors_dir=root)

    with pytest.raises(FileExistsError):
        deployment_export("golden", vectors_dir=root)


def test_deployment_export_missing_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        deployment_export("golden", vectors_dir=tmp_path / "absent")


def test_simulate_expected_writes_summary(tmp_path):
    folder = vectors_folder(tmp_path, "run")
    summary = tmp_path / "summary.json"
    arguments = ["simulate", str(folder / "network.nir"), "--samples", str(folder / SAMPLES_FILE)]
    arguments += ["--expected", str(folder / EXPECTED_FILE), "--summary", str(summary)]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 0, result.output
    assert "0 of" in result.output
    data = json.loads(summary.read_text())
    assert data["comparison"]["exact"] is True
    assert data["comparison"]["output_mismatches"] == 0
    assert data["num_samples"] == len(data["predictions"])


def test_simulate_expected_mismatch_exits_3(tmp_path):
    folder = vectors_folder(tmp_path, "run")
    expected = load_expected(folder / EXPECTED_FILE)
    expected.output_states[0, 3, 1] -= 5
    save_expected(folder / EXPECTED_FILE, expected, force=True)
    summary = tmp_path / "summary.json"
    arguments = ["simulate", str(folder / "network.nir"), "--samples", str(folder / SAMPLES_FILE)]
    arguments += ["--expected", str(folder / EXPECTED_FILE), "--summary", str(summary)]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 3, result.output
    comparison = json.loads(summary.read_text())["comparison"]
    assert comparison["output_mismatches"] == 1
    assert comparison["max_abs_error"] == 5
    assert comparison["exact"] is False
