"""NIR import: file errors, unsupported nodes, shapes, configs without metadata, chain collapsing."""

from __future__ import annotations

import logging

import h5py
import nir
import numpy as np
import pytest
from deploy_testing import (
    DT,
    _conv2d,
    chain_graph,
    dense_net,
    metadata,
    neuron_node,
    random_inputs,
    reference_forward,
    words,
)

from ecs_common.errors import ConfigError, MetadataError, QuantizationError
from ecs_common.formats import QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_common.hardware_config import from_metadata
from ecs_common.quant_options import options_from_config
from ecs_deploy.config import ASSUMED_DT
from ecs_deploy.errors import GraphError, MissingConfigError, NIRFileError, ShapeMismatchError, UnsupportedNodeError
from ecs_deploy.network import Network
from ecs_deploy.nir_import import SUPPORTED_NODES, import_graph, read_nir


def no_metadata_graph(rng: np.random.Generator) -> nir.NIRGraph:
    graph = dense_net(rng, sizes=(6, 4, 3))
    graph.metadata = {}
    return graph


# Files.


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(NIRFileError, match="not found; check the path"):
        read_nir(tmp_path / "absent.nir")


def test_directory_is_not_a_nir_file(tmp_path):
    with pytest.raises(NIRFileError, match="is a directory"):
        read_nir(tmp_path)


def test_truncated_file_is_reported(nir_file, tmp_path):
    path, _ = nir_file
    truncated = tmp_path / "truncated.nir"
    truncated.write_bytes(path.read_bytes()[:500])
    with pytest.raises(NIRFileError, match="truncated, corrupt or not a NIR file"):
        read_nir(truncated)


def test_garbage_file_is_reported(tmp_path):
    path = tmp_path / "garbage.nir"
    path.write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(NIRFileError, match="cannot open .* as HDF5"):
        read_nir(path)


def test_hdf5_without_graph_is_reported(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    with pytest.raises(NIRFileError, match="not a NIR graph"):
        read_nir(path)


def test_corrupt_node_type_is_reported(nir_file):
    path, _ = nir_file
    with h5py.File(path, "r+") as handle:
        del handle["node/nodes/fc1/type"]
        handle["node/nodes/fc1"].create_dataset("type", data="Bogus", dtype=h5py.string_dtype())
    with pytest.raises(UnsupportedNodeError, match="node 'fc1' .* has type Bogus"):
        read_nir(path)


def test_missing_dataset_is_reported(nir_file):
    path, _ = nir_file
    with h5py.File(path, "r+") as handle:
        del handle["node/nodes/fc1/weight"]
    with pytest.raises(NIRFileError, match="cannot read NIR graph"):
        read_nir(path)


def test_file_round_trip_equals_graph(nir_file, rng):
    path, graph = nir_file
    inputs = random_inputs(rng, 3, 8, (24,), 0.4)
    from_file = Network.from_file(path).simulate_batch(inputs).output_states
    from_graph = Network(graph).simulate_batch(inputs).output_states
    np.testing.assert_array_equal(from_file, from_graph)


# Nodes and shapes.


@pytest.mark.parametrize(
    "node",
    [nir.Threshold(np.ones(4)), nir.Scale(np.ones(4)), nir.Delay(np.ones(4))],
    ids=["Threshold", "Scale", "Delay"],
)
def test_unsupported_node_names_type_and_supported_list(node, tmp_path):
    rng = np.random.default_rng(0)
    graph = chain_graph(
        [("fc", nir.Linear(words(rng, (4, 5)))), ("odd", node), ("li", neuron_node("li", (4,), rng))], (5,), metadata()
    )
    expected = f"node 'odd' .* has type {type(node).__name__}, which the accelerator does not support"
    with pytest.raises(UnsupportedNodeError, match=expected) as info:
        Network(graph)
    assert ", ".join(SUPPORTED_NODES) in str(info.value)

    path = tmp_path / "odd.nir"
    nir.write(path, graph)
    with pytest.raises(UnsupportedNodeError, match="node 'odd' in .* has type"):
        read_nir(path)


def test_shape_mismatch_between_edges_in_file(tmp_path):
    rng = np.random.default_rng(0)
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([12])),
            "fc": nir.Linear(words(rng, (4, 10))),
            "li": neuron_node("li", (4,), rng),
            "output": nir.Output(np.array([4])),
        },
        edges=[("input", "fc"), ("fc", "li"), ("li", "output")],
        metadata=metadata(),
        type_check=False,
    )
    with pytest.raises(ShapeMismatchError, match="'fc' expects 10 inputs but receives 12"):
        Network(graph)
    path = tmp_path / "mismatch.nir"
    nir.write(path, graph)
    with pytest.raises(ShapeMismatchError, match="edge whose shapes disagree"):
        read_nir(path)


def test_neuron_count_mismatch_names_edge():
    rng = np.random.default_rng(0)
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([5])),
            "fc": nir.Linear(words(rng, (4, 5))),
            "li": neuron_node("li", (6,), rng),
            "output": nir.Output(np.array([6])),
        },
        edges=[("input", "fc"), ("fc", "li"), ("li", "output")],
        metadata=metadata(),
        type_check=False,
    )
    with pytest.raises(ShapeMismatchError, match="edge into neuron node 'li': .* delivers 4 values .* has 6 neurons"):
        Network(graph)


def test_two_weighted_nodes_in_one_chain_are_rejected():
    rng = np.random.default_rng(0)
    graph = chain_graph(
        [
            ("fc1", nir.Linear(words(rng, (6, 5)))),
            ("fc2", nir.Linear(words(rng, (3, 6)))),
            ("li", neuron_node("li", (3,), rng)),
        ],
        (5,),
        metadata(),
    )
    with pytest.raises(GraphError, match="chain through 'fc1' and 'fc2' has two weighted nodes"):
        Network(graph)


def test_output_behind_weights_is_rejected():
    rng = np.random.default_rng(0)
    graph = chain_graph(
        [
            ("fc", nir.Linear(words(rng, (4, 5)))),
            ("lif", neuron_node("lif", (4,), rng)),
            ("fc2", nir.Linear(words(rng, (3, 4)))),
        ],
        (5,),
        metadata(),
    )
    with pytest.raises(GraphError, match="Output node is fed through weighted or pooling nodes"):
        Network(graph)


def test_all_zero_weight_matrix_is_rejected():
    rng = np.random.default_rng(0)
    graph = chain_graph(
        [("fc", nir.Linear(np.full((4, 5), 0.001))), ("li", neuron_node("li", (4,), rng))], (5,), metadata()
    )
    with pytest.raises(QuantizationError, match="weight of Linear node 'fc' quantizes to all zeros"):
        Network(graph)


def test_chain_without_weighted_node_has_weight_one():
    rng = np.random.default_rng(0)
    graph = chain_graph([("li", neuron_node("li", (5,), rng))], (5,), metadata())
    network = Network(graph)
    dense = network.model.connections[0].weights.to_dense()
    np.testing.assert_array_equal(dense, np.eye(5, dtype=np.int64) * 64)


def test_parallel_chains_between_two_layers_are_summed():
    rng = np.random.default_rng(0)
    w1, w2 = words(rng, (3, 4)), words(rng, (3, 4))
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([4])),
            "a": nir.Linear(w1),
            "b": nir.Linear(w2),
            "li": neuron_node("li", (3,), rng),
            "output": nir.Output(np.array([3])),
        },
        edges=[("input", "a"), ("input", "b"), ("a", "li"), ("b", "li"), ("li", "output")],
        metadata=metadata(),
    )
    dense = Network(graph).model.connections[0].weights.to_dense()
    np.testing.assert_array_equal(dense, np.round(w1 * 64) + np.round(w2 * 64))


# Convolution and pooling matrices.


@pytest.mark.parametrize(
    ("stride", "padding", "dilation"),
    [(1, 0, 1), (2, 1, 1), (1, 2, 2), (2, 0, 1), (1, "same", 1)],
)
def test_conv_matrix_equals_direct_convolution(stride, padding, dilation):
    rng = np.random.default_rng(1)
    conv = nir.Conv2d(
        input_shape=(7, 6),
        weight=words(rng, (3, 2, 3, 3)),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=1,
        bias=np.zeros(3),
    )
    out_shape = tuple(int(n) for n in conv.output_type["output"])
    graph = chain_graph([("conv", conv), ("li", neuron_node("li", out_shape, rng))], (2, 7, 6), metadata())
    matrix = Network(graph).model.connections[0].weights.to_dense()
    x = rng.integers(0, 2, size=(5, 2, 7, 6))
    pad = 1 if padding == "same" else padding
    node = nir.Conv2d(
        input_shape=(7, 6),
        weight=conv.weight,
        stride=stride,
        padding=pad,
        dilation=dilation,
        groups=1,
        bias=np.zeros(3),
    )
    expected = _conv2d(x, node, np.round(conv.weight * 64).astype(np.int64)).reshape(5, -1)
    np.testing.assert_array_equal(x.reshape(5, -1) @ matrix.T, expected)


def test_grouped_conv_matrix_equals_per_group_convolution():
    rng = np.random.default_rng(2)
    weight = words(rng, (4, 1, 3, 3))
    conv = nir.Conv2d(input_shape=(5, 5), weight=weight, stride=1, padding=1, dilation=1, groups=2, bias=np.zeros(4))
    # nir 1.0.8 infers a grouped convolution's input channels as weight.shape[1], so skip its type check.
    graph = chain_graph([("conv", conv), ("li", neuron_node("li", (4, 5, 5), rng))], (2, 5, 5), metadata(), False)
    matrix = Network(graph).model.connections[0].weights.to_dense()
    x = rng.integers(0, 2, size=(3, 2, 5, 5))
    q = np.round(weight * 64).astype(np.int64)
    single = nir.Conv2d(input_shape=(5, 5), weight=q[:2], stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(2))
    expected = np.concatenate([_conv2d(x[:, :1], single, q[:2]), _conv2d(x[:, 1:], single, q[2:])], axis=1).reshape(
        3, -1
    )
    np.testing.assert_array_equal(x.reshape(3, -1) @ matrix.T, expected)


def test_overlapping_pool_after_conv_splits_large_sums_into_synapses(tmp_path):
    """Conv then a 2x2 stride-1 sum pool adds up to four weights, beyond the 8-bit weight range."""
    rng = np.random.default_rng(3)
    conv = nir.Conv2d(
        input_shape=(6, 6),
        weight=np.full((2, 1, 3, 3), 1.5),
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=np.zeros(2),
    )
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([1, 1]), padding=np.array([0, 0]))
    graph = chain_graph(
        [
            ("conv", conv),
            ("pool", pool),
            ("lif", neuron_node("lif", (2, 3, 3), rng, threshold=3.0)),
            ("flat", nir.Flatten(input_type={"input": np.array([2, 3, 3])}, start_dim=0)),
            ("fc", nir.Linear(words(rng, (3, 18)))),
            ("li", neuron_node("li", (3,), rng)),
        ],
        (1, 6, 6),
        metadata(),
    )
    network = Network(graph)
    matrix = network.model.connections[0].weights
    assert matrix.weight.max() == 4 * 96
    parts = matrix.split_to_format(QuantConfig().weight_format)
    assert len(parts) == 4
    assert sum(part.to_dense() for part in parts).tolist() == matrix.to_dense().tolist()
    assert all(np.abs(part.weight).max() <= 128 for part in parts)
    synapses = sum(layer.synapses for layer in network.placement_report().layers if layer.name == "lif")
    assert synapses == sum(part.nnz for part in parts)

    inputs = random_inputs(rng, 3, 8, (1, 6, 6), 0.3)
    reference = reference_forward(graph, inputs)
    result = network.simulate_batch(inputs)
    np.testing.assert_array_equal(result.output_states[network.latency :], reference.states)
    assert reference.spikes["lif"].sum() > 0

    from ecs_deploy.memfiles import load_mem_files

    network.generate_mem_files(tmp_path / "mem", print_util=False)
    reloaded = load_mem_files(tmp_path / "mem")
    np.testing.assert_array_equal(reloaded.simulate_batch(inputs).output_states, result.output_states)


# Configuration.


def test_file_without_metadata_needs_configs():
    graph = no_metadata_graph(np.random.default_rng(0))
    with pytest.raises(
        MissingConfigError, match="has no 'ecs' metadata .* the hardware and quant config must be given"
    ):
        Network(graph)
    with pytest.raises(MissingConfigError, match="the quant config must be given"):
        import_graph(graph, hardware={"num_cores": 8})


def test_file_without_metadata_logs_and_returns_assumptions(caplog, tmp_path):
    graph = no_metadata_graph(np.random.default_rng(0))
    with caplog.at_level(logging.WARNING, logger="ecs_deploy.config"):
        network = Network(graph, from_metadata({"num_cores": 8}), options_from_config({}))
    assert network.assumptions == {"dt": ASSUMED_DT, "reset_mode": "to_reset", "readout": "last"}
    assert "assuming dt=0.001" in caplog.text
    assert network.hardware.num_cores == 8


def test_configs_from_yaml_paths_and_dicts(tmp_path):
    graph = no_metadata_graph(np.random.default_rng(0))
    hardware = tmp_path / "hw.yaml"
    hardware.write_text("hardware_cfg:\n  num_cores: 6\n  num_neurons_core: 512\ndt: 0.002\n")
    quant = tmp_path / "quant.yaml"
    quant.write_text("weight_format: Q8.6\nstate_format: Q(18, 6)\nreset_mode: subtract\n")
    network = Network(graph, str(hardware), quant)
    assert network.hardware.num_neurons_core == 512
    assert network.quant.state_format.wl == 18
    assert network.model.dt == 0.002
    assert network.model.reset_mode == "subtract"
    assert network.assumptions == {"readout": "last"}

    from_dicts = Network(graph, {"num_cores": 6}, {"weight_format": "Q8.6"}, dt=0.002)
    assert from_dicts.assumptions == {"reset_mode": "to_reset", "readout": "last"}


def test_invalid_config_values_are_named(tmp_path):
    graph = no_metadata_graph(np.random.default_rng(0))
    with pytest.raises(ConfigError, match="num_cores"):
        Network(graph, {"num_cores": 0}, {})
    with pytest.raises(ConfigError, match="invalid reset_mode 'sideways'; expected one of to_reset, subtract"):
        Network(graph, {}, {}, reset_mode="sideways")
    with pytest.raises(ConfigError, match="config file .* not found"):
        Network(graph, tmp_path / "absent.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        Network(graph, bad, {})


def test_explicit_configs_override_metadata():
    graph = dense_net(np.random.default_rng(0), sizes=(6, 4, 3))
    network = Network(graph, from_metadata(HardwareConfig(num_cores=9)), dt=2 * DT)
    assert network.hardware.num_cores == 9
    assert network.model.dt == 2 * DT
    assert network.assumptions == {}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ('{"schema_version": 99, "dt": 0.001}', "schema version 99, newer than"),
        ('{"schema_version": 1}', "dt"),
        ("not json", "not valid JSON"),
        ('{"schema_version": 1, "dt": 0.001, "colour": "red"}', "colour"),
    ],
)
def test_wrong_metadata_schema_is_rejected(payload, message):
    graph = dense_net(np.random.default_rng(0), sizes=(6, 4, 3))
    graph.metadata = {"ecs": payload}
    with pytest.raises(MetadataError, match=message):
        Network(graph)


def test_metadata_survives_file_round_trip(tmp_path):
    graph = dense_net(np.random.default_rng(0), sizes=(6, 4, 3), readout="max", reset_mode="subtract")
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    network = Network.from_file(path)
    assert network.readout == "max"
    assert network.model.reset_mode == "subtract"
    assert network.assumptions == {}
