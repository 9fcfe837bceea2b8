"""The fused whole-network kernel agrees with the numpy simulator and the delay-free integer_step reference."""

from __future__ import annotations

import nir
import numpy as np
import pytest
from deploy_testing import dense_net, metadata, neuron_node, random_inputs, reference_forward, words
from hypothesis import given, settings
from hypothesis import strategies as st

from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_deploy.fused import DENSE_TARGETS_MAX
from ecs_deploy.kernels import DENSE, HAVE_NUMBA, INPUT_SOURCE, LISTED, SOURCE, use_serial
from ecs_deploy.network import Network
from ecs_deploy.simulator import BatchResult, BatchSimulator

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")


def simulate(network: Network, inputs: np.ndarray, steps: int, backend: str, mode: str, record: bool) -> BatchResult:
    frames = inputs.reshape(*inputs.shape[:2], int(np.prod(inputs.shape[2:])))
    simulator = BatchSimulator(network.model, backend=backend, synapse_mode=mode)
    return simulator.run(frames, steps, record_spikes=record)


def assert_same_result(result: BatchResult, expected: BatchResult, label: str) -> None:
    """Check output states, spike counts and (where both have them) rasters of two runs."""
    np.testing.assert_array_equal(result.output_states, expected.output_states, err_msg=f"{label}: states")
    assert result.output_states.dtype == np.int64, label
    assert set(result.spike_counts) == set(expected.spike_counts), label
    for name, counts in expected.spike_counts.items():
        np.testing.assert_array_equal(result.spike_counts[name], counts, err_msg=f"{label}: counts of {name}")
    if result.spikes is not None and expected.spikes is not None:
        assert set(result.spikes) == set(expected.spikes), label
        for name, raster in expected.spikes.items():
            assert result.spikes[name].dtype == bool, f"{label}: raster of {name}"
            np.testing.assert_array_equal(result.spikes[name], raster, err_msg=f"{label}: raster of {name}")


def check_network(graph, inputs: np.ndarray, reset_mode: str, quant: QuantConfig | None = None) -> None:
    """Compare the fused kernel with the numpy simulator and with the reference, rasters on and off."""
    network = Network(graph)
    steps = inputs.shape[1] + network.latency
    reference = reference_forward(graph, inputs, quant=quant, reset_mode=reset_mode)
    expected = simulate(network, inputs, steps, "numpy", "gemm", record=True)
    np.testing.assert_array_equal(expected.output_states[network.latency :], reference.states)

    for record in (True, False):
        fused = simulate(network, inputs, steps, "numba", "fused", record=record)
        assert_same_result(fused, expected, f"fused, record_spikes={record}")
        np.testing.assert_array_equal(fused.output_states[network.latency :], reference.states)
        if not record:
            assert fused.spikes is None


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 40), min_size=2, max_size=4),
    hidden_kind=st.sampled_from(["lif", "if", "cubalif"]),
    reset_mode=st.sampled_from(["to_reset", "subtract"]),
    density=st.floats(0.0, 1.0),
    steps=st.integers(1, 12),
    batch=st.sampled_from([1, 2, 5]),
)
def test_random_networks_match_numpy_and_reference(seed, sizes, hidden_kind, reset_mode, density, steps, batch):
    rng = np.random.default_rng(seed)
    graph = dense_net(rng, sizes=tuple(sizes), hidden_kind=hidden_kind, reset_mode=reset_mode)
    check_network(graph, random_inputs(rng, batch, steps, (sizes[0],), density), reset_mode)


@pytest.mark.parametrize("hidden_kind", ["lif", "if", "cubalif"])
@pytest.mark.parametrize("reset_mode", ["to_reset", "subtract"])
def test_wide_and_narrow_layers_match(hidden_kind, reset_mode):
    # Relays -> 48 and 16 -> 17 add weight rows per spike; 48 -> 16 and 17 -> 4 take dot products.
    sizes = (30, 48, DENSE_TARGETS_MAX, DENSE_TARGETS_MAX + 1, 4)
    rng = np.random.default_rng(17)
    graph = dense_net(rng, sizes=sizes, hidden_kind=hidden_kind, reset_mode=reset_mode)
    fused = BatchSimulator(Network(graph).model, backend="numba", synapse_mode="fused").fused
    assert fused.connections[:, DENSE].tolist() == [0, 1, 0, 1]
    assert fused.connections[:, SOURCE].tolist() == [INPUT_SOURCE, 0, 1, 2]
    assert fused.relay_listed
    assert fused.layer_table[:, LISTED].tolist() == [0, 1, 0, 0]

    inputs = random_inputs(rng, 4, 25, (30,), 0.3)
    check_network(graph, inputs, reset_mode)
    reference = reference_forward(graph, inputs, reset_mode=reset_mode)
    assert all(reference.spikes[name].any() for name in list(reference.spikes)[:-1]), "a hidden layer never fired"


@pytest.mark.parametrize("batch", [1, 7])
def test_serial_and_parallel_kernels_agree(batch):
    import numba

    rng = np.random.default_rng(23)
    graph = dense_net(rng, sizes=(24, 40, 12, 5), hidden_kind="cubalif", reset_mode="subtract")
    network = Network(graph)
    inputs = random_inputs(rng, batch, 14, (24,), 0.3)
    steps = 14 + network.latency
    expected = simulate(network, inputs, steps, "numpy", "gemm", record=True)

    previous = numba.get_num_threads()
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            assert use_serial(batch) == (threads == 1 or batch < threads)
            for mode in ("fused", "layers", "event"):
                for record in (True, False):
                    result = simulate(network, inputs, steps, "numba", mode, record=record)
                    assert_same_result(result, expected, f"{mode} on {threads} thread(s), record_spikes={record}")
    finally:
        numba.set_num_threads(previous)


@pytest.mark.parametrize(("state_wl", "word"), [(16, np.int32), (24, np.int64)])
def test_word_width_follows_the_formats(state_wl, word):
    quant = QuantConfig(state_format=FixedPointFormat(wl=state_wl, fl=6))
    rng = np.random.default_rng(29)
    graph = dense_net(rng, sizes=(20, 24, 5), hidden_kind="cubalif", reset_mode="subtract", quant=quant)
    simulator = BatchSimulator(Network(graph).model, backend="numba", synapse_mode="fused")
    assert simulator.fused.word is word
    check_network(graph, random_inputs(rng, 3, 16, (20,), 0.4), "subtract", quant=quant)


def test_recurrent_layer_matches_numpy():
    rng = np.random.default_rng(31)
    nodes = {
        "input": nir.Input(np.array([12])),
        "fc": nir.Linear(words(rng, (20, 12))),
        "lif": neuron_node("lif", (20,), rng),
        "rec": nir.Linear(words(rng, (20, 20), -40, 40)),
        "fc_out": nir.Linear(words(rng, (4, 20))),
        "li": neuron_node("li", (4,), rng),
        "output": nir.Output(np.array([4])),
    }
    edges = [
        ("input", "fc"),
        ("fc", "lif"),
        ("lif", "rec"),
        ("rec", "lif"),
        ("lif", "fc_out"),
        ("fc_out", "li"),
        ("li", "output"),
    ]
    network = Network(nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata(), type_check=False))
    fused = BatchSimulator(network.model, backend="numba", synapse_mode="fused").fused
    assert fused.layer_table[0, LISTED] == 1, "a recurrent layer reads its own spike list"
    inputs = random_inputs(rng, 3, 20, (12,), 0.4)
    expected = simulate(network, inputs, 24, "numpy", "gemm", record=True)
    for record in (True, False):
        assert_same_result(simulate(network, inputs, 24, "numba", "fused", record), expected, f"record={record}")


@pytest.mark.parametrize(("batch", "input_steps", "steps"), [(2, 0, 6), (0, 5, 8), (3, 5, 0), (3, 5, 2)])
def test_empty_and_short_runs_match_numpy(batch, input_steps, steps):
    rng = np.random.default_rng(37)
    network = Network(dense_net(rng, sizes=(24, 30, 5)))
    inputs = random_inputs(rng, batch, input_steps, (24,), 0.5)
    expected = simulate(network, inputs, steps, "numpy", "gemm", record=True)
    result = simulate(network, inputs, steps, "numba", "fused", record=True)
    assert result.output_states.shape == (steps, batch, 5)
    assert_same_result(result, expected, "fused")


def test_every_input_dtype_gives_the_same_result():
    rng = np.random.default_rng(41)
    network = Network(dense_net(rng, sizes=(24, 30, 5)))
    inputs = random_inputs(rng, 4, 10, (24,), 0.3)
    expected = simulate(network, inputs, 13, "numpy", "gemm", record=True)
    for dtype in (np.uint8, bool, np.int8, np.float32, np.float64):
        result = simulate(network, inputs.astype(dtype), 13, "numba", "fused", record=True)
        assert_same_result(result, expected, np.dtype(dtype).name)


def test_fused_mode_needs_numba():
    network = Network(dense_net(np.random.default_rng(43)))
    with pytest.raises(ValueError, match="synapse_mode 'fused' needs the numba backend"):
        BatchSimulator(network.model, backend="numpy", synapse_mode="fused")


def test_auto_mode_follows_backend():
    model = Network(dense_net(np.random.default_rng(47))).model
    assert BatchSimulator(model, backend="numba").synapse_mode == "fused"
    assert BatchSimulator(model, backend="numpy").synapse_mode == "gemm"
