"""Integer corner cases: saturation, the most negative state, threshold ties, first-spike timing, silence.

Parameters are chosen so that every word is exact: dt = 1 ms, tau = 8 ms
(decay factor 0.125 = 256 words of Q(12,11)) and r = 8 (LIF, LI) or
r = 1000 (IF), so that the state scale r * dt / tau (or r * dt) is 1 and
NIR potentials map to state words one to one (1.0 = 64 words of Q(16,6)).
"""

from __future__ import annotations

import logging

import nir
import numpy as np
import pytest
from deploy_testing import dense_net, metadata, random_inputs, reference_forward

from ecs_common.formats import QuantConfig
from ecs_deploy.kernels import HAVE_NUMBA
from ecs_deploy.network import Network

BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])
STATE = QuantConfig().state_format
K_WORDS, DECAY_FL = 256, 11


def exact_neurons(kind: str, size: int, threshold: float = 1.0, v_leak: float = 0.0) -> nir.NIRNode:
    ones = np.ones(size)
    if kind == "if":
        return nir.IF(r=ones * 1000.0, v_threshold=ones * threshold, v_reset=ones * 0.0)
    if kind == "li":
        return nir.LI(tau=ones * 8e-3, r=ones * 8.0, v_leak=ones * v_leak)
    return nir.LIF(
        tau=ones * 8e-3, r=ones * 8.0, v_leak=ones * v_leak, v_threshold=ones * threshold, v_reset=ones * 0.0
    )


def one_layer(weight: np.ndarray, kind: str, **neuron_kwargs) -> Network:
    """Return input -> Linear(weight) -> one neuron layer -> output."""
    size, inputs = weight.shape
    nodes = {
        "input": nir.Input(np.array([inputs])),
        "fc": nir.Linear(weight),
        "neurons": exact_neurons(kind, size, **neuron_kwargs),
        "output": nir.Output(np.array([size])),
    }
    edges = [("input", "fc"), ("fc", "neurons"), ("neurons", "output")]
    return Network(nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata()))


def python_loop(drive: int, steps: int, leaky: bool, v_leak: int = 0) -> list[int]:
    """Membrane words of one non-firing neuron under a constant drive, with Python's floor shift."""
    v, values = 0, []
    for _ in range(steps):
        leak = ((v - v_leak) * K_WORDS) >> DECAY_FL if leaky else 0
        v = min(max(v - leak + drive, STATE.min_int), STATE.max_int)
        values.append(v)
    return values


def constant_input(batch: int, steps: int, inputs: int) -> np.ndarray:
    return np.ones((batch, steps, inputs), dtype=np.uint8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_saturates_at_maximum(backend):
    network = one_layer(np.full((2, 64), 127 / 64), "li")
    network.backend = backend
    result = network.simulate_batch(constant_input(1, 12, 64))
    states = result.output_states[network.latency :, 0, 0].tolist()
    assert states == python_loop(64 * 127, 12, leaky=True)
    assert states[-1] == STATE.max_int


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["li", "lif"])
def test_state_saturates_at_most_negative_word(backend, kind):
    network = one_layer(np.full((2, 64), -2.0), kind)
    network.backend = backend
    result = network.simulate_batch(constant_input(1, 12, 64))
    states = result.output_states[network.latency :, 0, 0].tolist()
    assert states == python_loop(-64 * 128, 12, leaky=True)
    assert min(states) == STATE.min_int
    assert states[-1] == STATE.min_int


@pytest.mark.parametrize("backend", BACKENDS)
def test_leak_shift_floors_negative_products(backend):
    """The leak of -1 word is floor(-256 / 2048) = -1, so -1 returns to 0; +1 leaks by 0 and stays.

    A shift that truncated toward zero would keep -1 forever instead.
    """
    network = one_layer(np.array([[-1 / 64], [1 / 64]]), "li")
    network.backend = backend
    inputs = np.zeros((1, 6, 1), dtype=np.uint8)
    inputs[0, 0, 0] = 1
    states = network.simulate_batch(inputs).output_states[network.latency :, 0, :]
    assert states[:, 0].tolist() == [-1, 0, 0, 0, 0, 0]
    assert states[:, 1].tolist() == [1] * 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_threshold_tie_does_not_fire(backend):
    """An IF neuron with threshold 64 words driven by 16 words per step reaches 64 exactly at step 3."""
    network = one_layer(np.full((1, 1), 0.25), "if")
    network.backend = backend
    result = network.simulate_batch(constant_input(1, 4, 1), record_spikes=True)
    states = result.output_states[network.latency :, 0, 0].tolist()
    assert states == [16, 32, 48, 64]
    assert not result.spikes["neurons"].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_if_neuron_fires_first_at_predicted_step(backend):
    """Drive 16 words per step, threshold 64: v = 16 (t + 1) > 64 first at t = 4, then every 5 steps."""
    network = one_layer(np.full((1, 1), 0.25), "if")
    network.backend = backend
    steps = 15
    result = network.simulate_batch(constant_input(1, steps, 1), record_spikes=True)
    fired = np.flatnonzero(result.spikes["neurons"][:, 0, 0])
    latency = network.latency
    assert latency == 2
    assert fired.tolist() == [4 + latency, 9 + latency, 14 + latency]
    states = result.output_states[latency:, 0, 0].tolist()
    assert states[:6] == [16, 32, 48, 64, 0, 16]


def test_if_neuron_one_word_above_tie_fires_a_step_earlier():
    network = one_layer(np.full((1, 1), 17 / 64), "if")
    result = network.simulate_batch(constant_input(1, 6, 1), record_spikes=True)
    fired = np.flatnonzero(result.spikes["neurons"][:, 0, 0])
    assert fired[0] == 3 + network.latency


def test_single_step_simulate_matches_batch_first_spike():
    network = one_layer(np.full((1, 1), 0.25), "if")
    events = [(t, 0) for t in range(10)]
    states = network.simulate(events)
    words = [value.word for value in (step[0] for step in states)]
    assert words[network.latency : network.latency + 6] == [16, 32, 48, 64, 0, 16]
    assert states[network.latency][0].to_float() == pytest.approx(0.25)


def test_all_zero_input_matches_reference():
    rng = np.random.default_rng(2)
    graph = dense_net(rng, sizes=(10, 8, 4))
    network = Network(graph)
    inputs = np.zeros((2, 10, 10), dtype=np.uint8)
    reference = reference_forward(graph, inputs)
    result = network.simulate_batch(inputs)
    np.testing.assert_array_equal(result.output_states[network.latency :], reference.states)
    assert result.spike_counts["input"].sum() == 0


def test_all_zero_input_without_bias_or_leak_stays_zero():
    network = one_layer(np.full((3, 5), 0.5), "lif")
    result = network.simulate_batch(np.zeros((2, 8, 5), dtype=np.uint8), record_spikes=True)
    assert not result.output_states.any()
    assert not any(raster.any() for raster in result.spikes.values())


def test_network_without_hidden_spikes():
    """Only inhibitory weights into the hidden layer: nothing spikes, outputs stay at zero."""
    rng = np.random.default_rng(4)
    nodes = {
        "input": nir.Input(np.array([12])),
        "fc1": nir.Linear(np.full((6, 12), -0.5)),
        "hidden": exact_neurons("lif", 6),
        "fc2": nir.Linear(rng.integers(1, 50, size=(3, 6)) / 64),
        "out": exact_neurons("li", 3),
        "output": nir.Output(np.array([3])),
    }
    edges = [("input", "fc1"), ("fc1", "hidden"), ("hidden", "fc2"), ("fc2", "out"), ("out", "output")]
    network = Network(nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata()))
    inputs = random_inputs(rng, 4, 10, (12,), 0.5)
    result = network.simulate_batch(inputs, record_spikes=True)
    assert result.spike_counts["input"].sum() > 0
    assert result.spike_counts["hidden"].sum() == 0
    assert not result.spikes["hidden"].any()
    assert not result.output_states.any()
    assert network.predict(result).tolist() == [0, 0, 0, 0]


def test_saturated_weights_are_counted_and_logged(caplog):
    weight = np.array([[3.0, 0.5], [-0.25, -4.0]])
    with caplog.at_level(logging.WARNING, logger="ecs_deploy.nir_import"):
        network = one_layer(weight, "li")
    assert network.model.saturated_weights == {"weight of Linear node 'fc'": 2}
    assert "saturated" in caplog.text
    dense = network.model.connections[0].weights.to_dense()
    assert dense.tolist() == [[127, 32], [-16, -128]]
