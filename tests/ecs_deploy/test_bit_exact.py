"""Bit-exactness of both simulators against the delay-free reference, shifted by the pipeline latency."""

from __future__ import annotations

import nir
import numpy as np
import pytest
from deploy_testing import conv_net, dense_net, metadata, neuron_node, random_inputs, reference_forward, words
from hypothesis import given, settings
from hypothesis import strategies as st

from ecs_common.fixed_point import quantize
from ecs_common.formats import QuantConfig
from ecs_common.neuron import initial_state, integer_step, network_latency
from ecs_deploy.kernels import HAVE_NUMBA
from ecs_deploy.network import Network
from ecs_deploy.simulator import BatchSimulator

BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])
NUMBA_MODES = [("numba", "fused"), ("numba", "layers"), ("numba", "gemm"), ("numba", "event")]
MODES = [("numpy", "gemm")] + (NUMBA_MODES if HAVE_NUMBA else [])


def run_all_modes(network: Network, inputs: np.ndarray, steps: int) -> dict[tuple[str, str], object]:
    frames = inputs.reshape(inputs.shape[0], inputs.shape[1], -1)
    results = {}
    for backend, mode in MODES:
        simulator = BatchSimulator(network.model, backend=backend, synapse_mode=mode)
        results[(backend, mode)] = simulator.run(frames.astype(np.float32), steps, record_spikes=True)
    return results


def assert_matches_reference(network: Network, graph: nir.NIRGraph, inputs: np.ndarray, reset_mode: str) -> None:
    """Check output states and every layer's spikes of all simulators against the reference."""
    steps = inputs.shape[1]
    reference = reference_forward(graph, inputs, reset_mode=reset_mode)
    latency = network.latency
    delays = network.model.layer_delays()
    total = steps + latency

    for key, result in run_all_modes(network, inputs, total).items():
        np.testing.assert_array_equal(result.output_states[latency:], reference.states, err_msg=f"states {key}")
        assert not result.output_states[:latency].any(), f"{key}: output before the latency"
        for name, spikes in reference.spikes.items():
            shifted = result.spikes[name][delays[name] : delays[name] + steps]
            np.testing.assert_array_equal(shifted, spikes[: shifted.shape[0]], err_msg=f"spikes of {name} {key}")
            counts = result.spikes[name].sum(axis=0)
            np.testing.assert_array_equal(result.spike_counts[name], counts, err_msg=f"counts of {name} {key}")

    frames = inputs.reshape(inputs.shape[0], steps, -1).transpose(1, 0, 2)
    step_states, step_spikes = network.simulate_steps(frames, total)
    np.testing.assert_array_equal(step_states[latency:], reference.states, err_msg="step simulator states")
    for name, spikes in reference.spikes.items():
        shifted = step_spikes[name][delays[name] : delays[name] + steps]
        np.testing.assert_array_equal(shifted, spikes[: shifted.shape[0]], err_msg=f"step simulator spikes of {name}")


@pytest.mark.parametrize("hidden_kind", ["lif", "if", "cubalif"])
@pytest.mark.parametrize("reset_mode", ["to_reset", "subtract"])
def test_dense_network_matches_reference(hidden_kind, reset_mode):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        graph = dense_net(rng, sizes=(24, 16, 12, 5), hidden_kind=hidden_kind, reset_mode=reset_mode)
        network = Network(graph)
        inputs = random_inputs(rng, 6, 15, (24,), 0.4)
        assert_matches_reference(network, graph, inputs, reset_mode)

        # The comparison means something only when hidden neurons spike.
        reference = reference_forward(graph, inputs, reset_mode=reset_mode)
        hidden = list(reference.spikes)[:-1]
        assert sum(reference.spikes[name].sum() for name in hidden) > 0


@pytest.mark.parametrize("output_kind", ["li", "lif"])
def test_output_layer_kinds_match_reference(output_kind):
    rng = np.random.default_rng(7)
    graph = dense_net(rng, sizes=(20, 10), output_kind=output_kind)
    network = Network(graph)
    assert_matches_reference(network, graph, random_inputs(rng, 4, 12, (20,), 0.5), "to_reset")


@pytest.mark.parametrize("kind", ["lif", "if"])
@pytest.mark.parametrize("reset_mode", ["to_reset", "subtract"])
def test_conv_pool_flatten_network_matches_reference(kind, reset_mode):
    rng = np.random.default_rng(11)
    graph = conv_net(rng, kind=kind, reset_mode=reset_mode)
    network = Network(graph)
    inputs = random_inputs(rng, 3, 10, (2, 8, 8), 0.3)
    assert_matches_reference(network, graph, inputs, reset_mode)
    assert reference_forward(graph, inputs, reset_mode=reset_mode).spikes["neurons"].sum() > 0


def test_latency_follows_network_latency():
    rng = np.random.default_rng(3)
    for hidden in ("lif", "cubalif"):
        graph = dense_net(rng, sizes=(8, 6, 6, 3), hidden_kind=hidden)
        network = Network(graph)
        assert network.latency == network_latency([hidden, hidden, "li"])
    assert Network(dense_net(rng, sizes=(8, 6, 3))).latency == 3


def test_simulate_batch_time_major_equals_batch_major():
    rng = np.random.default_rng(5)
    network = Network(dense_net(rng))
    inputs = random_inputs(rng, 5, 9, (24,), 0.3)
    batch_major = network.simulate_batch(inputs)
    time_major = network.simulate_batch(inputs.transpose(1, 0, 2), time_major=True)
    np.testing.assert_array_equal(batch_major.output_states, time_major.output_states)


def test_simulate_batch_accepts_every_binary_dtype():
    rng = np.random.default_rng(6)
    network = Network(dense_net(rng))
    inputs = random_inputs(rng, 3, 8, (24,), 0.3)
    expected = network.simulate_batch(inputs).output_states
    for dtype in (bool, np.int8, np.int32, np.int64, np.float32, np.float64):
        np.testing.assert_array_equal(network.simulate_batch(inputs.astype(dtype)).output_states, expected)


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 12), min_size=2, max_size=4),
    hidden_kind=st.sampled_from(["lif", "if", "cubalif"]),
    reset_mode=st.sampled_from(["to_reset", "subtract"]),
    density=st.floats(0.0, 1.0),
    steps=st.integers(1, 12),
)
def test_random_networks_match_reference(seed, sizes, hidden_kind, reset_mode, density, steps):
    rng = np.random.default_rng(seed)
    graph = dense_net(rng, sizes=tuple(sizes), hidden_kind=hidden_kind, reset_mode=reset_mode)
    network = Network(graph)
    inputs = random_inputs(rng, 3, steps, (sizes[0],), density)
    assert_matches_reference(network, graph, inputs, reset_mode)


def test_recurrent_layer_matches_reference():
    """A recurrent connection delivers the layer's spikes of the previous step, in both frameworks."""
    rng = np.random.default_rng(21)
    w_in, w_rec, w_out = words(rng, (10, 12)), words(rng, (10, 10), -40, 40), words(rng, (4, 10))
    nodes = {
        "input": nir.Input(np.array([12])),
        "fc": nir.Linear(w_in),
        "lif": neuron_node("lif", (10,), rng),
        "rec": nir.Linear(w_rec),
        "fc_out": nir.Linear(w_out),
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
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata(), type_check=False)
    network = Network(graph)
    inputs = random_inputs(rng, 4, 20, (12,), 0.4)

    # Reference: x_t = W_in s_in(t) + W_rec s_lif(t - 1).
    layers = {layer.name: layer for layer in network.model.layers}
    fmt = QuantConfig().weight_format
    q_in, q_rec, q_out = quantize(w_in, fmt), quantize(w_rec, fmt), quantize(w_out, fmt)
    hidden, out = initial_state(layers["lif"].params, (4,)), initial_state(layers["li"].params, (4,))
    previous = np.zeros((4, 10), dtype=np.int64)
    expected, fired_any = [], 0
    for t in range(20):
        drive = inputs[:, t].astype(np.int64) @ q_in.T + previous @ q_rec.T
        hidden, fired = integer_step(layers["lif"].params, hidden, drive)
        out, _ = integer_step(layers["li"].params, out, fired.astype(np.int64) @ q_out.T)
        previous = fired.astype(np.int64)
        fired_any += int(fired.sum())
        expected.append(out.v.copy())
    assert fired_any > 0

    latency = network.latency
    for backend in BACKENDS:
        network.backend, network._simulator = backend, None
        result = network.simulate_batch(inputs, 20 + latency)
        np.testing.assert_array_equal(result.output_states[latency:], np.stack(expected), err_msg=backend)
    step_states, _ = network.simulate_steps(inputs.transpose(1, 0, 2), 20 + latency)
    np.testing.assert_array_equal(step_states[latency:], np.stack(expected))


@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_shorter_than_latency(backend):
    rng = np.random.default_rng(9)
    network = Network(dense_net(rng))
    network.backend = backend
    inputs = random_inputs(rng, 2, 5, (24,), 0.5)
    full = network.simulate_batch(inputs, 8).output_states
    for steps in range(network.latency + 2):
        result = network.simulate_batch(inputs, steps)
        assert result.output_states.shape == (steps, 2, 5)
        np.testing.assert_array_equal(result.output_states, full[:steps])
        step_states, _ = network.simulate_steps(inputs.transpose(1, 0, 2), steps)
        np.testing.assert_array_equal(step_states, full[:steps])


def test_skip_connection_matches_reference(tmp_path):
    """The output layer hears the input directly and through a hidden layer; both arrive aligned."""
    rng = np.random.default_rng(13)
    w_hidden, w_out, w_skip = words(rng, (10, 8)), words(rng, (4, 10)), words(rng, (4, 8), -20, 20)
    nodes = {
        "input": nir.Input(np.array([8])),
        "fc": nir.Linear(w_hidden),
        "lif": neuron_node("lif", (10,), rng),
        "fc_out": nir.Linear(w_out),
        "skip": nir.Linear(w_skip),
        "li": neuron_node("li", (4,), rng),
        "output": nir.Output(np.array([4])),
    }
    edges = [
        ("input", "fc"),
        ("fc", "lif"),
        ("lif", "fc_out"),
        ("fc_out", "li"),
        ("input", "skip"),
        ("skip", "li"),
        ("li", "output"),
    ]
    network = Network(nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata()))
    delays = network.model.layer_delays()
    assert delays == {"input": 1, "lif": 2, "li": 3}
    skip = next(c for c in network.model.connections if c.source == "input" and c.target == "li")
    assert network.model.connection_delay(skip) == 2

    inputs = random_inputs(rng, 3, 15, (8,), 0.4)
    layers = {layer.name: layer for layer in network.model.layers}
    fmt = QuantConfig().weight_format
    q_hidden, q_out, q_skip = quantize(w_hidden, fmt), quantize(w_out, fmt), quantize(w_skip, fmt)
    hidden, out = initial_state(layers["lif"].params, (3,)), initial_state(layers["li"].params, (3,))
    expected = []
    for t in range(15):
        frame = inputs[:, t].astype(np.int64)
        hidden, fired = integer_step(layers["lif"].params, hidden, frame @ q_hidden.T)
        out, _ = integer_step(layers["li"].params, out, fired.astype(np.int64) @ q_out.T + frame @ q_skip.T)
        expected.append(out.v.copy())

    latency = network.latency
    for backend in BACKENDS:
        network.backend, network._simulator = backend, None
        result = network.simulate_batch(inputs)
        np.testing.assert_array_equal(result.output_states[latency:], np.stack(expected), err_msg=backend)
    step_states, _ = network.simulate_steps(inputs.transpose(1, 0, 2))
    np.testing.assert_array_equal(step_states[latency:], np.stack(expected))

    from ecs_deploy.memfiles import load_mem_files

    network.generate_mem_files(tmp_path, print_util=False)
    reloaded = load_mem_files(tmp_path)
    np.testing.assert_array_equal(reloaded.simulate_batch(inputs).output_states, result.output_states)
