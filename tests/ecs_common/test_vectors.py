"""Tests of ecs_common.vectors: the sample and expected-output files passed from ecs-train to ecs-deploy."""

from __future__ import annotations

import numpy as np
import pytest

from ecs_common.errors import VectorFileError
from ecs_common.vectors import (
    ExpectedOutputs,
    export_key,
    load_expected,
    load_samples,
    save_expected,
    save_samples,
    save_vectors,
)


def expected_outputs(count: int = 4, steps: int = 5) -> ExpectedOutputs:
    rng = np.random.default_rng(0)
    return ExpectedOutputs(
        output_states=rng.integers(-500, 500, size=(count, steps, 3)),
        predictions=rng.integers(0, 3, size=count),
        latency=3,
        output_layer="layers.4",
        state_format="Q(16,6)",
        spike_counts={"input": rng.integers(0, 5, size=(count, 8)), "layers.2": rng.integers(0, 5, size=(count, 6))},
        spikes={"layers.2": rng.integers(0, 2, size=(count, steps, 6)).astype(np.uint8)},
    )


def test_samples_round_trip(tmp_path):
    x = (np.random.default_rng(1).random((4, 5, 2, 3, 3)) < 0.5).astype(np.float32)
    y = np.array([0, 1, 2, 1])

    save_samples(tmp_path / "samples.npz", x, y)
    loaded = load_samples(tmp_path / "samples.npz")

    assert loaded.x.dtype == np.uint8
    np.testing.assert_array_equal(loaded.x, x)
    np.testing.assert_array_equal(loaded.y, y)
    assert loaded.num_samples == 4


def test_expected_round_trip(tmp_path):
    expected = expected_outputs()

    save_expected(tmp_path / "expected.npz", expected)
    loaded = load_expected(tmp_path / "expected.npz")

    np.testing.assert_array_equal(loaded.output_states, expected.output_states)
    np.testing.assert_array_equal(loaded.predictions, expected.predictions)
    assert loaded.latency == 3
    assert loaded.output_layer == "layers.4"
    assert loaded.state_format == "Q(16,6)"
    assert sorted(loaded.spike_counts) == ["input", "layers.2"]
    np.testing.assert_array_equal(loaded.spikes["layers.2"], expected.spikes["layers.2"])


def test_combined_archive_contains_both(tmp_path):
    x = np.zeros((4, 5, 8), dtype=np.uint8)
    save_vectors(tmp_path / "case.npz", x, None, expected_outputs())

    assert load_samples(tmp_path / "case.npz").y is None
    assert load_expected(tmp_path / "case.npz").num_timesteps == 5


def test_save_rejects_existing_file(tmp_path):
    save_samples(tmp_path / "samples.npz", np.zeros((1, 2, 3)))

    with pytest.raises(FileExistsError, match="force"):
        save_samples(tmp_path / "samples.npz", np.zeros((1, 2, 3)))
    save_samples(tmp_path / "samples.npz", np.ones((1, 2, 3)), force=True)
    assert load_samples(tmp_path / "samples.npz").x.all()


def test_samples_reject_non_binary(tmp_path):
    with pytest.raises(VectorFileError, match="0/1"):
        save_samples(tmp_path / "samples.npz", np.full((1, 2, 3), 2))


def test_samples_reject_label_count(tmp_path):
    with pytest.raises(VectorFileError, match="3 labels"):
        save_samples(tmp_path / "samples.npz", np.zeros((2, 2, 3)), [0, 1, 2])


def test_expected_rejects_bad_shapes(tmp_path):
    expected = expected_outputs()
    expected.predictions = expected.predictions[:2]

    with pytest.raises(VectorFileError, match="predictions"):
        save_expected(tmp_path / "expected.npz", expected)


def test_expected_rejects_newer_version(tmp_path):
    save_expected(tmp_path / "expected.npz", expected_outputs())
    with np.load(tmp_path / "expected.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["format_version"] = np.int64(99)
    np.savez(tmp_path / "newer.npz", **arrays)

    with pytest.raises(VectorFileError, match="version 99"):
        load_expected(tmp_path / "newer.npz")


def test_load_missing_file(tmp_path):
    with pytest.raises(VectorFileError, match="not found"):
        load_expected(tmp_path / "absent.npz")


def test_load_expected_missing_arrays(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros((1, 2, 3)))

    with pytest.raises(VectorFileError, match="output_states"):
        load_expected(tmp_path / "other.npz")


@pytest.mark.parametrize(
    ("dataset", "key"),
    [
        ("digits", "digits"),
        ("config/digits_feed_forward.yaml", "digits_feed_forward"),
        ("nmnist_feed_forward.yml", "nmnist_feed_forward"),
        ("runs/fsdd", "fsdd"),
    ],
)
def test_export_key(dataset, key):
    assert export_key(dataset) == key


def test_export_key_rejects_empty():
    with pytest.raises(VectorFileError, match="empty"):
        export_key(" ")
