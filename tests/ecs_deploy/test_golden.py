"""ecs-deploy reproduces the committed golden vectors of ecs-train bit for bit, without torch.

tests/golden contains small networks exported by ecs-train
(scripts/make_golden.py), seeded input, and the output states and spike
rasters of ecs-train's quantized forward pass. The deploy side's output at step ``t + latency`` and
layer ``l``'s spikes at step ``t + D_l`` must equal the training side's at
step ``t``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ecs_common.vectors import INPUT_LAYER, load_expected, load_samples
from ecs_deploy.compare import simulate_and_compare
from ecs_deploy.memfiles import load_mem_files
from ecs_deploy.network import Network

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
CASES = ("feed_forward", "conv", "cubalif")


def golden(case: str) -> tuple[Network, np.ndarray, object]:
    network = Network.from_file(GOLDEN_DIR / f"{case}.nir")
    samples = load_samples(GOLDEN_DIR / f"{case}.npz")
    expected = load_expected(GOLDEN_DIR / f"{case}.npz")
    return network, samples.x, expected


def test_golden_files_present():
    missing = [case for case in CASES for suffix in (".nir", ".npz") if not (GOLDEN_DIR / f"{case}{suffix}").is_file()]
    assert not missing, f"golden files missing for {missing}; regenerate them with scripts/make_golden.py"


@pytest.mark.parametrize("case", CASES)
def test_golden_output_states(case):
    network, x, expected = golden(case)
    steps = x.shape[1]
    assert network.latency == expected.latency

    result = network.simulate_batch(x, steps + network.latency)
    states = result.output_states.transpose(1, 0, 2)

    assert not states[:, : network.latency].any(), "output changed before the first input could arrive"
    np.testing.assert_array_equal(states[:, network.latency :], expected.output_states)


@pytest.mark.parametrize("case", CASES)
def test_golden_spikes_every_layer(case):
    network, x, expected = golden(case)
    steps = x.shape[1]
    delays = network.model.layer_delays()
    result = network.simulate_batch(x, steps + network.latency, record_spikes=True)
    assert result.spikes is not None
    assert expected.spikes, "the golden file holds no spike rasters"

    for name, raster in expected.spikes.items():
        simulated = result.spikes[name][delays[name] : delays[name] + steps].transpose(1, 0, 2)
        np.testing.assert_array_equal(simulated, raster != 0, err_msg=f"spikes of layer {name}")

    relay = network.model.input_layer.name
    relayed = result.spikes[relay][delays[relay] : delays[relay] + steps].transpose(1, 0, 2)
    np.testing.assert_array_equal(relayed, x.reshape(x.shape[0], steps, -1) != 0, err_msg="input relays")


@pytest.mark.parametrize("case", CASES)
def test_golden_step_simulator(case):
    network, x, expected = golden(case)
    steps = x.shape[1]
    frames = x.reshape(x.shape[0], steps, -1).transpose(1, 0, 2)

    states, spikes = network.simulate_steps(frames, steps + network.latency)

    np.testing.assert_array_equal(states[network.latency :].transpose(1, 0, 2), expected.output_states)
    delays = network.model.layer_delays()
    for name, raster in expected.spikes.items():
        simulated = spikes[name][delays[name] : delays[name] + steps].transpose(1, 0, 2)
        np.testing.assert_array_equal(simulated, raster != 0, err_msg=f"step simulator spikes of layer {name}")


@pytest.mark.parametrize("case", CASES)
def test_golden_comparison_exact(case):
    network, x, expected = golden(case)

    evaluation, comparison = simulate_and_compare(network, x, expected, batch_size=3)

    assert comparison.exact, comparison.describe()
    assert comparison.max_abs_error == 0
    assert comparison.mse == 0.0
    assert set(comparison.spike_count_mismatches) == {INPUT_LAYER, *expected.spikes}
    np.testing.assert_array_equal(evaluation.predictions, expected.predictions)


@pytest.mark.parametrize("case", CASES)
def test_golden_through_memory_files(case, tmp_path):
    network, x, expected = golden(case)
    network.generate_mem_files(tmp_path, print_util=False)

    reloaded = load_mem_files(tmp_path)
    result = reloaded.simulate_batch(x, x.shape[1] + reloaded.latency)

    states = result.output_states.transpose(1, 0, 2)
    np.testing.assert_array_equal(states[:, reloaded.latency :], expected.output_states)


def test_comparison_counts_a_changed_state():
    network, x, expected = golden("feed_forward")
    expected.output_states[2, 5, 7] += 3

    _, comparison = simulate_and_compare(network, x, expected)

    assert not comparison.exact
    assert comparison.output_mismatches == 1
    assert comparison.mismatched_samples == 1
    assert comparison.max_abs_error == 3
    assert comparison.first_mismatch == [2, 5, 7]
    assert comparison.mse == pytest.approx(9 / expected.output_states.size)
