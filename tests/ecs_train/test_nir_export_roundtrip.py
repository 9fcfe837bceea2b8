"""Every supported layer type exports to a valid NIR file that reproduces the torch model's outputs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import nir
import norse.torch as snn
import numpy as np
import pytest
import torch
from norse.torch.functional.reset import reset_subtract

from ecs_common.metadata import ECSMetadata
from ecs_common.neuron import NeuronParameters
from ecs_train.models import SumPool2d
from ecs_train.nir_export import export_nir, list_layers, simulate_float

torch.set_num_threads(1)

DT = 1e-3
STEPS = 40
BATCH = 3
TOLERANCE = 1e-6


def _spikes(shape: tuple[int, ...], seed: int, rate: float = 0.3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator) < rate).to(torch.float64)


def _zero_state(state):
    if isinstance(state, torch.Tensor):
        return torch.zeros_like(state)
    return type(state)(*[_zero_state(item) for item in state])


def run_torch(network, inputs: torch.Tensor) -> np.ndarray:
    """Run ``network`` step by step in float64 from all-zero neuron states; ``inputs`` is ``[T, batch, ...]``.

    Zero initial states match NIR simulators and the accelerator (norse's own
    default starts some cells at v_leak or v_reset). Layers run in the order
    the exporter lists them, each consuming its source's output of the same step.
    """
    model = copy.deepcopy(network).double()
    layers = [module for _, module in list_layers(model)]
    states: list = [None] * len(layers)
    outputs = []
    with torch.no_grad():
        for step in range(inputs.shape[0]):
            x = inputs[step]
            for index, module in enumerate(layers):
                stateful = hasattr(module, "state_fallback") or callable(getattr(module, "neuron_parameters", None))
                if stateful:
                    if states[index] is None:
                        cell = getattr(module, "cell", module)
                        states[index] = _zero_state(cell.state_fallback(x))
                    x, states[index] = module(x, states[index])
                else:
                    x = module(x)
            outputs.append(x.numpy().copy())
    return np.stack(outputs)


def _per_neuron(size: int, low: float, high: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(size, generator=generator)


def _linear(inputs: int, outputs: int, seed: int, gain: float = 3.0, bias: bool = True) -> torch.nn.Linear:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(inputs, outputs, bias=bias)
    with torch.no_grad():
        layer.weight.mul_(gain)
    return layer


def _readout(hidden: int, outputs: int = 3, bias: bool = True) -> list[torch.nn.Module]:
    return [
        _linear(hidden, outputs, seed=11, bias=bias),
        snn.LIBoxCell(snn.LIBoxParameters(tau_mem_inv=torch.tensor(50.0)), dt=DT),
    ]


class FakeQuantizedNeuron(torch.nn.Module):
    """The QuantizedNeuron protocol: ``cell``, ``dt``, ``reset_mode`` and ``neuron_parameters()``."""

    def __init__(self, cell: snn.LIFBoxCell, size: int) -> None:
        super().__init__()
        self.cell = cell
        self.dt = cell.dt
        self.reset_mode = "subtract"
        self.size = size

    def neuron_parameters(self) -> NeuronParameters:
        p = self.cell.p
        ones = np.ones(self.size)
        return NeuronParameters(
            kind="lif",
            tau_mem=ones / p.tau_mem_inv.numpy(),
            r=ones,
            v_leak=ones * p.v_leak.numpy(),
            v_threshold=ones * p.v_th.numpy(),
            v_reset=ones * p.v_reset.numpy(),
        )

    def forward(self, x, state=None):
        return self.cell(x, state)


def lif_box_network() -> snn.SequentialState:
    params = snn.LIFBoxParameters(
        tau_mem_inv=_per_neuron(6, 50.0, 200.0, seed=1),
        v_th=_per_neuron(6, 0.3, 0.8, seed=2),
        v_reset=_per_neuron(6, -0.5, -0.1, seed=3),
    )
    return snn.SequentialState(_linear(5, 6, seed=4), snn.LIFBoxCell(params, dt=DT), *_readout(6))


def lif_box_subtract_network() -> snn.SequentialState:
    params = snn.LIFBoxParameters(tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(0.4), reset_method=reset_subtract)
    return snn.SequentialState(_linear(5, 6, seed=5), snn.LIFBoxCell(params, dt=DT), *_readout(6))


def iaf_network() -> snn.SequentialState:
    params = snn.IAFParameters(v_th=_per_neuron(6, 0.5, 1.5, seed=6), v_reset=torch.tensor(-0.3))
    return snn.SequentialState(_linear(5, 6, seed=7), snn.IAFCell(params, dt=DT), *_readout(6))


def lif_cuba_network() -> snn.SequentialState:
    params = snn.LIFParameters(
        tau_syn_inv=_per_neuron(6, 150.0, 300.0, seed=8),
        tau_mem_inv=torch.tensor(100.0),
        v_th=torch.tensor(0.3),
        v_reset=torch.tensor(-0.2),
    )
    return snn.SequentialState(_linear(5, 6, seed=9), snn.LIFCell(params, dt=DT), *_readout(6, bias=False))


def lif_one_step_current_network() -> snn.SequentialState:
    params = snn.LIFParameters(
        tau_syn_inv=torch.tensor(1.0 / DT), tau_mem_inv=torch.tensor(120.0), v_th=torch.tensor(0.3)
    )
    return snn.SequentialState(_linear(5, 6, seed=10), snn.LIFCell(params, dt=DT), *_readout(6))


def li_one_step_current_network() -> snn.SequentialState:
    params = snn.LIParameters(tau_syn_inv=torch.tensor(1.0 / DT), tau_mem_inv=_per_neuron(3, 40.0, 90.0, seed=12))
    return snn.SequentialState(
        _linear(5, 6, seed=13),
        snn.LIFBoxCell(snn.LIFBoxParameters(tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(0.3)), dt=DT),
        _linear(6, 3, seed=14),
        snn.LICell(params, dt=DT),
    )


def recurrent_network() -> snn.SequentialState:
    torch.manual_seed(15)
    params = snn.LIFParameters(
        tau_syn_inv=torch.tensor(1.0 / DT), tau_mem_inv=torch.tensor(150.0), v_th=torch.tensor(0.3)
    )
    cell = snn.LIFRecurrentCell(5, 6, p=params, dt=DT)
    with torch.no_grad():
        cell.input_weights.mul_(3.0)
        cell.recurrent_weights.mul_(2.0)
    return snn.SequentialState(cell, *_readout(6))


def quantized_neuron_network() -> snn.SequentialState:
    params = snn.LIFBoxParameters(tau_mem_inv=torch.tensor(90.0), v_th=torch.tensor(0.4), reset_method=reset_subtract)
    neuron = FakeQuantizedNeuron(snn.LIFBoxCell(params, dt=DT), size=6)
    return snn.SequentialState(_linear(5, 6, seed=16), neuron, *_readout(6))


# name -> (network factory, name and NIR type of the hidden neuron node, steps the NIR output lags behind torch)
NEURON_CASES: dict[str, tuple[Callable[[], torch.nn.Module], str, type, int]] = {
    "lif_box": (lif_box_network, "1", nir.LIF, 0),
    "lif_box_subtract": (lif_box_subtract_network, "1", nir.LIF, 0),
    "iaf": (iaf_network, "1", nir.IF, 0),
    "lif_cuba": (lif_cuba_network, "1", nir.CubaLIF, 0),
    "lif_one_step_current": (lif_one_step_current_network, "1", nir.LIF, 0),
    "li_one_step_current": (li_one_step_current_network, "3", nir.LI, 0),
    "recurrent": (recurrent_network, "0", nir.LIF, 0),
    "quantized_neuron": (quantized_neuron_network, "1", nir.LIF, 0),
}


def _export(network: torch.nn.Module, path: Path, sample_shape: tuple[int, ...]) -> nir.NIRGraph:
    export_nir(network, ECSMetadata(dt=DT), path, torch.zeros(sample_shape))
    return nir.read(path)


def _neuron_nodes(graph: nir.NIRGraph) -> dict[str, nir.NIRNode]:
    kinds = (nir.LIF, nir.LI, nir.IF, nir.CubaLIF)
    return {name: node for name, node in graph.nodes.items() if isinstance(node, kinds)}


@pytest.mark.parametrize("case", sorted(NEURON_CASES))
def test_layer_reads_back_type_checked(case: str, tmp_path: Path) -> None:
    factory, hidden, node_type, _ = NEURON_CASES[case]
    graph = _export(factory(), tmp_path / "net.nir", (5,))

    assert isinstance(graph.nodes[hidden], node_type)
    assert isinstance(nir.read(tmp_path / "net.nir", type_check=True), nir.NIRGraph)


@pytest.mark.parametrize("case", sorted(NEURON_CASES))
def test_layer_parameters_per_neuron(case: str, tmp_path: Path) -> None:
    factory, _, _, _ = NEURON_CASES[case]
    graph = _export(factory(), tmp_path / "net.nir", (5,))

    for name, node in _neuron_nodes(graph).items():
        layer_shape = tuple(int(size) for size in node.output_type["output"])
        for field in ("tau", "tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset", "w_in"):
            value = getattr(node, field, None)
            if value is None:
                continue
            assert value.shape == layer_shape, f"{name}.{field}"
            assert value.dtype == np.float32, f"{name}.{field}"


@pytest.mark.parametrize("case", sorted(NEURON_CASES))
def test_layer_round_trip_matches_torch(case: str, tmp_path: Path) -> None:
    factory, _, _, lag = NEURON_CASES[case]
    network = factory()
    graph = _export(network, tmp_path / "net.nir", (5,))
    inputs = _spikes((STEPS, BATCH, 5), seed=20)

    expected = run_torch(network, inputs)
    simulated = simulate_float(graph, inputs.numpy())

    assert np.max(np.abs(expected)) > 0.05, "the readout stays silent, so the comparison proves little"
    if lag:
        assert np.all(simulated[:lag] == 0)
    np.testing.assert_allclose(simulated[lag:], expected[: STEPS - lag], rtol=0, atol=TOLERANCE)


def test_lif_box_trained_values_exported(tmp_path: Path) -> None:
    network = lif_box_network()
    params = network[1].p
    graph = _export(network, tmp_path / "net.nir", (5,))

    node = graph.nodes["1"]
    np.testing.assert_array_equal(node.tau, (1.0 / params.tau_mem_inv.double()).float().numpy())
    np.testing.assert_array_equal(node.v_reset, params.v_reset.numpy())
    np.testing.assert_array_equal(node.v_threshold, params.v_th.numpy())
    np.testing.assert_array_equal(node.r, np.ones(6, dtype=np.float32))


def test_iaf_trained_values_exported(tmp_path: Path) -> None:
    network = iaf_network()
    graph = _export(network, tmp_path / "net.nir", (5,))

    node = graph.nodes["1"]
    np.testing.assert_array_equal(node.v_reset, np.full(6, -0.3, dtype=np.float32))
    np.testing.assert_array_equal(node.v_threshold, network[1].p.v_th.numpy())
    np.testing.assert_allclose(node.r, np.full(6, 1.0 / DT), rtol=1e-7)


def test_cuba_lif_trained_values_exported(tmp_path: Path) -> None:
    network = lif_cuba_network()
    params = network[1].p
    graph = _export(network, tmp_path / "net.nir", (5,))

    node = graph.nodes["1"]
    tau_syn = 1.0 / params.tau_syn_inv.double().numpy()
    np.testing.assert_allclose(node.tau_syn, tau_syn, rtol=1e-7)
    np.testing.assert_allclose(node.tau_mem, np.full(6, 0.01), rtol=1e-7)
    np.testing.assert_allclose(node.w_in, tau_syn / DT, rtol=1e-6)
    np.testing.assert_array_equal(node.v_reset, np.full(6, -0.2, dtype=np.float32))


def test_li_trained_values_exported(tmp_path: Path) -> None:
    network = li_one_step_current_network()
    graph = _export(network, tmp_path / "net.nir", (5,))

    node = graph.nodes["3"]
    assert isinstance(node, nir.LI)
    np.testing.assert_allclose(node.tau, 1.0 / network[3].p.tau_mem_inv.double().numpy(), rtol=1e-7)


def test_recurrent_edge_in_graph(tmp_path: Path) -> None:
    graph = _export(recurrent_network(), tmp_path / "net.nir", (5,))

    assert ("0", "0.recurrent") in graph.edges
    assert ("0.recurrent", "0") in graph.edges
    assert isinstance(graph.nodes["0.recurrent"], nir.Linear)
    assert isinstance(graph.nodes["0.input"], nir.Linear)


def conv_network(pooling: torch.nn.Module) -> snn.SequentialState:
    torch.manual_seed(30)
    first = torch.nn.Conv2d(2, 4, 3, padding=1)
    second = torch.nn.Conv2d(4, 4, 3, stride=1, bias=False)
    with torch.no_grad():
        first.weight.mul_(3.0)
        second.weight.mul_(3.0)
    box = snn.LIFBoxParameters(tau_mem_inv=torch.tensor(150.0), v_th=torch.tensor(0.3), v_reset=torch.tensor(-0.1))
    return snn.SequentialState(
        first,
        snn.LIFBoxCell(box, dt=DT),
        pooling,
        second,
        snn.LIFBoxCell(box, dt=DT),
        SumPool2d(2),
        torch.nn.Flatten(),
        _linear(4 * 1 * 1, 3, seed=31),
        snn.LIBoxCell(snn.LIBoxParameters(tau_mem_inv=torch.tensor(50.0)), dt=DT),
    )


POOLING_CASES = {
    "avg_pool": lambda: torch.nn.AvgPool2d(2),
    "sum_pool": lambda: SumPool2d(2),
    "lp_pool_sum": lambda: torch.nn.LPPool2d(1, 2),
}


@pytest.mark.parametrize("pooling", sorted(POOLING_CASES))
def test_conv_network_round_trip(pooling: str, tmp_path: Path) -> None:
    network = conv_network(POOLING_CASES[pooling]())
    graph = _export(network, tmp_path / "net.nir", (2, 2, 8, 8))
    inputs = _spikes((STEPS, BATCH, 2, 8, 8), seed=22)

    expected = run_torch(network, inputs)
    simulated = simulate_float(graph, inputs.numpy())

    assert np.max(np.abs(expected)) > 0.05
    np.testing.assert_allclose(simulated, expected, rtol=0, atol=TOLERANCE)


def test_avg_pool_scale_folded_into_next_neuron(tmp_path: Path) -> None:
    graph = _export(conv_network(torch.nn.AvgPool2d(2)), tmp_path / "net.nir", (2, 8, 8))

    assert isinstance(graph.nodes["2"], nir.SumPool2d)
    np.testing.assert_array_equal(graph.nodes["4"].r, np.full((4, 2, 2), 0.25, dtype=np.float32))
    np.testing.assert_array_equal(graph.nodes["1"].r, np.ones((4, 8, 8), dtype=np.float32))


def test_avg_pool_scale_crosses_bias(tmp_path: Path) -> None:
    torch.manual_seed(32)
    box = snn.LIFBoxParameters(tau_mem_inv=torch.tensor(150.0), v_th=torch.tensor(0.3))
    conv = torch.nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight.mul_(4.0)
        conv.bias.fill_(0.5)
    network = snn.SequentialState(
        torch.nn.AvgPool2d(2, stride=1, padding=1),
        conv,
        snn.LIFBoxCell(box, dt=DT),
        torch.nn.Flatten(),
        _linear(3 * 7 * 7, 3, seed=33),
        snn.LIBoxCell(dt=DT),
    )
    graph = _export(network, tmp_path / "net.nir", (2, 8, 8))
    inputs = _spikes((STEPS, BATCH, 2, 8, 8), seed=23)

    np.testing.assert_array_equal(graph.nodes["1"].bias, np.full(3, 2.0, dtype=np.float32))
    np.testing.assert_allclose(simulate_float(graph, inputs.numpy()), run_torch(network, inputs), atol=TOLERANCE)


def test_sequence_modules_round_trip(tmp_path: Path) -> None:
    params = snn.LIFParameters(tau_syn_inv=torch.tensor(250.0), tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(0.3))
    network = snn.SequentialState(
        snn.Lift(_linear(5, 6, seed=40)),
        snn.LIF(params, dt=DT),
        snn.Lift(_linear(6, 4, seed=41, bias=False)),
        snn.IAF(snn.IAFParameters(v_th=torch.tensor(0.5)), dt=DT),
    )
    graph = _export(network, tmp_path / "net.nir", (5,))
    inputs = _spikes((STEPS, BATCH, 5), seed=24)

    with torch.no_grad():
        expected, _ = copy.deepcopy(network).double()(inputs)
    simulated = simulate_float(graph, inputs.numpy())

    assert isinstance(graph.nodes["1"], nir.CubaLIF)
    assert isinstance(graph.nodes["3"], nir.IF)
    assert expected.sum() > 0
    np.testing.assert_allclose(simulated, expected.numpy(), atol=TOLERANCE)


def test_norse_from_nir_reproduces_outputs(tmp_path: Path) -> None:
    # norse 1.1.0's importer supports Affine, Linear, LIF (reset to 0) and CubaLIF, but not LI.
    box = snn.LIFBoxParameters(tau_mem_inv=torch.tensor(120.0), v_th=torch.tensor(0.3))
    cuba = snn.LIFParameters(tau_syn_inv=torch.tensor(200.0), tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(0.3))
    network = snn.SequentialState(
        _linear(5, 6, seed=50),
        snn.LIFBoxCell(box, dt=DT),
        _linear(6, 4, seed=51, gain=8.0, bias=False),
        snn.LIFCell(cuba, dt=DT),
    )
    _export(network, tmp_path / "net.nir", (5,))
    inputs = _spikes((STEPS, BATCH, 5), seed=25)

    imported = snn.from_nir(nir.read(tmp_path / "net.nir"), dt=DT).double()
    state = None
    outputs = []
    with torch.no_grad():
        for step in range(STEPS):
            out, state = imported(inputs[step], state)
            outputs.append(out.numpy())
    expected = run_torch(network, inputs)

    assert expected.sum() > 0
    np.testing.assert_allclose(np.stack(outputs), expected, atol=TOLERANCE)
