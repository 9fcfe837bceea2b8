"""Placement of neurons onto cores (ecs_common.placement): counts, splits, errors and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecs_common.errors import ResourceError
from ecs_common.hardware import HardwareConfig
from ecs_common.placement import Connection, LayerSpec, SparseWeights, place, placement_report


def chain(weights: list[np.ndarray], input_size: int) -> list[LayerSpec]:
    """Return an input layer and one layer per weight matrix ``[targets, sources]``."""
    layers = [LayerSpec("input", input_size)]
    for index, matrix in enumerate(weights):
        layers.append(LayerSpec(f"layer{index}", matrix.shape[0], (Connection(layers[-1].name, matrix),)))
    return layers


def test_counts_per_core_in_a_small_chain():
    w1 = np.array([[1, 0, 0], [2, 3, 0], [1, 1, 0], [-1, 0, 0]])  # 4 x 3, 6 synapses, values {-1, 1, 2, 3}
    w2 = np.array([[5, 5, 0, 0], [0, 0, 5, 0]])  # 2 x 4, 3 synapses, values {5}
    placement = place(chain([w1, w2], 3), HardwareConfig())
    usage = [(c.layer, c.neurons, c.synapses, c.routes, c.unique_weights) for c in placement.cores]
    # Input neuron 2 has no synapse; hidden neuron 3 reaches no output neuron.
    assert usage == [("input", 3, 0, 2, 0), ("layer0", 4, 6, 3, 4), ("layer1", 2, 3, 0, 1)]
    assert placement.core_of("layer0").tolist() == [1, 1, 1, 1]


def test_large_layer_is_split_over_cores():
    hardware = HardwareConfig(num_cores=8, num_neurons_core=4)
    placement = place(chain([np.ones((10, 6))], 6), hardware)
    assert placement.layer_cores == {"input": (0, 1), "layer0": (2, 3, 4)}
    assert placement.core_of("layer0").tolist() == [2, 2, 2, 2, 3, 3, 3, 3, 4, 4]
    assert placement.local_index("layer0").tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    # Every input neuron reaches all three cores of layer0: 4 and 2 input neurons, 3 routes each.
    assert [c.routes for c in placement.cores[:2]] == [12, 6]


def test_large_fan_in_splits_by_synapse_budget():
    hardware = HardwareConfig(num_cores=8, num_synapses_core=25)
    placement = place(chain([np.ones((6, 10))], 10), hardware)
    assert [c.neurons for c in placement.cores[1:]] == [2, 2, 2]
    assert all(c.synapses <= 25 for c in placement.cores)


def test_route_budget_splits_the_source_layer():
    hardware = HardwareConfig(num_cores=8, num_neurons_core=2, num_routes=4)
    # 4 targets on 2 cores; every input neuron reaches both, so 2 routes per input neuron.
    placement = place(chain([np.ones((4, 4))], 4), hardware)
    input_cores = [c for c in placement.cores if c.layer == "input"]
    assert [c.routes for c in input_cores] == [4, 4]


def test_unique_weight_budget_splits_a_layer():
    hardware = HardwareConfig(num_cores=8, num_weights_core=4)
    weights = np.arange(1, 9).reshape(4, 2)  # each neuron brings two new values
    placement = place(chain([weights], 2), hardware)
    assert [c.unique_weights for c in placement.cores[1:]] == [4, 4]


def test_pruning_lowers_synapses_not_unique_weights():
    rng = np.random.default_rng(0)
    weights = rng.choice([-3, -1, 2, 5], size=(8, 16))
    pruned = weights.copy()
    pruned[:, ::2] = 0
    full = placement_report(chain([weights], 16), HardwareConfig()).cores[1]
    sparse = placement_report(chain([pruned], 16), HardwareConfig()).cores[1]
    assert sparse.synapses == full.synapses // 2
    assert sparse.unique_weights == full.unique_weights == 4


def test_sparse_weights_equal_dense_weights():
    rng = np.random.default_rng(1)
    dense = rng.integers(-2, 3, size=(9, 7)) * (rng.random((9, 7)) < 0.4)
    target, source = np.nonzero(dense)
    sparse = SparseWeights(target, source, dense[target, source], dense.shape)
    hardware = HardwareConfig(num_cores=9, num_synapses_core=6)
    assert placement_report(chain([dense], 7), hardware).cores == placement_report(chain([sparse], 7), hardware).cores


def test_fan_in_above_core_capacity_raises_one_error():
    hardware = HardwareConfig(num_cores=8, num_synapses_core=5)
    with pytest.raises(ResourceError) as info:
        place(chain([np.ones((3, 8))], 8), hardware)
    error = info.value
    assert (error.layer, error.core, error.resource, error.limit, error.demand) == ("layer0", 1, "synapses", 5, 8)
    assert "neuron 0 of layer 'layer0' on core 1 needs 8 synapses, more than the limit of 5" in str(error)
    assert "prune the fan-in of each neuron of 'layer0' to at most 5 synapses" in str(error)

    report = placement_report(chain([np.ones((3, 8))], 8), hardware)
    assert not report.fits
    assert report.fan_in_out_pruning_necessary
    assert len(report.neuron_overflows) == 3


def test_neuron_reaching_too_many_cores_needs_fan_out_pruning():
    hardware = HardwareConfig(num_cores=8, num_neurons_core=2, num_routes=2)
    report = placement_report(chain([np.ones((6, 1))], 1), hardware)
    assert report.fan_in_out_pruning_necessary
    assert report.error.resource == "routes"
    assert report.error.demand == 3


def test_too_many_cores_names_remedies():
    hardware = HardwareConfig(num_cores=3, num_synapses_core=100)
    layers = chain([np.ones((20, 30)), np.ones((4, 20))], 30)
    with pytest.raises(ResourceError) as info:
        place(layers, hardware)
    error = info.value
    assert error.resource == "cores"
    assert (error.limit, error.demand, error.core, error.layer) == (3, 9, 3, "layer0")
    message = str(error)
    assert "needs 9 cores but the accelerator has 3" in message
    assert "set num_cores to at least 9" in message
    assert "prune at least 480 synapses, to at most 200 of the 680 in total" in message
    assert "shrink layer 'layer0' from 20" in message

    report = placement_report(layers, hardware)
    assert report.global_pruning_necessary
    assert report.synapses_to_prune == 480
    assert not report.fan_in_out_pruning_necessary
    assert place(layers, HardwareConfig(num_cores=9, num_synapses_core=100)).num_cores_used == 9


def test_neurons_alone_too_many_says_pruning_cannot_help():
    hardware = HardwareConfig(num_cores=2, num_neurons_core=4)
    with pytest.raises(ResourceError, match="pruning cannot help, because the neurons alone need 4 cores"):
        place(chain([np.ones((8, 8))], 8), hardware)


def test_report_lists_demand_against_capacity():
    report = placement_report(chain([np.ones((5, 4))], 4), HardwareConfig(num_cores=2))
    demand = {resource.resource: (resource.demand, resource.capacity) for resource in report.resources}
    assert demand == {
        "cores": (2, 2),
        "neurons": (9, 2048),
        "synapses": (20, 131072),
        "routes": (4, 8192),
        "unique_weights": (1, 512),
    }
    assert report.fits
    assert json.loads(json.dumps(report.to_dict()))["layers"][1]["cores"] == [1]


def test_recurrent_connection_counts_routes_to_own_cores():
    hardware = HardwareConfig(num_cores=8, num_neurons_core=3)
    recurrent = np.ones((6, 6))
    layers = [
        LayerSpec("input", 2),
        LayerSpec("rec", 6, (Connection("input", np.ones((6, 2))), Connection("rec", recurrent))),
    ]
    placement = place(layers, hardware)
    assert [c.routes for c in placement.cores if c.layer == "rec"] == [6, 6]
    assert [c.synapses for c in placement.cores if c.layer == "rec"] == [24, 24]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([LayerSpec("a", 2), LayerSpec("a", 2)], "layer name 'a' appears twice"),
        ([LayerSpec("a", 0)], "layer 'a' has 0 neurons"),
        ([LayerSpec("b", 2, (Connection("x", np.ones((2, 2))),))], "unknown layer 'x'"),
        (
            [LayerSpec("a", 3), LayerSpec("b", 2, (Connection("a", np.ones((3, 2))),))],
            r"shape \(3, 2\), expected \(2, 3\)",
        ),
    ],
)
def test_malformed_layers_are_rejected(layers, message):
    with pytest.raises(ValueError, match=message):
        placement_report(layers, HardwareConfig())


@settings(max_examples=30)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(1, 30), min_size=2, max_size=4),
    density=st.floats(0.05, 1.0),
    neurons=st.integers(2, 16),
    synapses=st.integers(30, 200),
    routes=st.integers(8, 64),
    distinct=st.integers(4, 16),
)
def test_placement_invariants(seed, sizes, density, neurons, synapses, routes, distinct):
    rng = np.random.default_rng(seed)
    weights = [
        rng.integers(1, 9, size=(sizes[i], sizes[i - 1])) * (rng.random((sizes[i], sizes[i - 1])) < density)
        for i in range(1, len(sizes))
    ]
    hardware = HardwareConfig(
        num_cores=64, num_neurons_core=neurons, num_synapses_core=synapses, num_routes=routes, num_weights_core=distinct
    )
    report = placement_report(chain(weights, sizes[0]), hardware)

    # Every neuron sits on exactly one core, in consecutive runs.
    for layer in report.layers:
        cores = [report.cores[index] for index in layer.cores]
        assert sum(core.neurons for core in cores) == layer.neurons
        assert [core.first_neuron for core in cores] == list(np.cumsum([0] + [c.neurons for c in cores[:-1]]))
    assert sum(core.synapses for core in report.cores) == sum(int(np.count_nonzero(w)) for w in weights)

    # Cores that hold more than one neuron respect every budget; single neurons may overflow and are reported.
    for core in report.cores:
        if core.neurons > 1:
            assert core.neurons <= neurons
            assert core.synapses <= synapses
            assert core.routes <= routes
            assert core.unique_weights <= distinct
    overflowing = {(o.layer, o.neuron) for o in report.neuron_overflows}
    for core in report.cores:
        if core.synapses > synapses or core.routes > routes or core.unique_weights > distinct:
            assert (core.layer, core.first_neuron) in overflowing
    if overflowing:
        assert not report.fits
    else:
        assert report.fits == (report.cores_needed <= 64)
