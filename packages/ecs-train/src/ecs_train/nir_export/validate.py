"""Check that a NIR graph meets the contract of files that ecs-train writes for ecs-deploy."""

from __future__ import annotations

import nir
import numpy as np

from ecs_common.metadata import read_metadata
from ecs_train.nir_export.errors import ExportError

ALLOWED_NODE_TYPES: tuple[type, ...] = (
    nir.Input,
    nir.Output,
    nir.Affine,
    nir.Linear,
    nir.LIF,
    nir.LI,
    nir.CubaLIF,
    nir.IF,
    nir.Conv2d,
    nir.SumPool2d,
    nir.Flatten,
)

# Per-neuron parameters of each neuron node type, and which of them are time constants in seconds.
NEURON_FIELDS: dict[type, tuple[str, ...]] = {
    nir.LIF: ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    nir.LI: ("tau", "r", "v_leak"),
    nir.IF: ("r", "v_threshold", "v_reset"),
    nir.CubaLIF: ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
}
TIME_CONSTANTS = ("tau", "tau_syn", "tau_mem")

_WEIGHT_FIELDS: dict[type, tuple[str, ...]] = {
    nir.Affine: ("weight", "bias"),
    nir.Linear: ("weight",),
    nir.Conv2d: ("weight", "bias"),
}


def contract_violations(graph: nir.NIRGraph) -> list[str]:
    """List every way ``graph`` breaks the ecs-train file contract (empty when it meets it).

    The contract:

    * only the standard node types in :data:`ALLOWED_NODE_TYPES`, with one Input and one Output;
    * every neuron parameter a finite float32 array of the layer's shape, ``v_reset`` included;
    * time constants positive (in seconds);
    * weights and biases finite float32 arrays;
    * an ``ecs`` metadata entry that decodes.
    """
    problems: list[str] = []

    inputs = [name for name, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [name for name, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1:
        problems.append(f"the graph needs exactly one Input node, found {len(inputs)}")
    if len(outputs) != 1:
        problems.append(f"the graph needs exactly one Output node, found {len(outputs)}")

    for name, node in graph.nodes.items():
        if not isinstance(node, ALLOWED_NODE_TYPES):
            allowed = ", ".join(cls.__name__ for cls in ALLOWED_NODE_TYPES)
            problems.append(f"node {name!r} has type {type(node).__name__}; allowed types are {allowed}")
            continue
        problems.extend(_neuron_problems(name, node))
        problems.extend(_weight_problems(name, node))

    try:
        read_metadata(graph)
    except ValueError as error:
        problems.append(str(error))
    return problems


def _neuron_problems(name: str, node: nir.NIRNode) -> list[str]:
    fields = NEURON_FIELDS.get(type(node))
    if fields is None:
        return []
    problems = []
    layer_shape = tuple(int(size) for size in node.output_type["output"])
    for field in fields:
        value = getattr(node, field, None)
        if not isinstance(value, np.ndarray):
            problems.append(f"node {name!r}: {field} is {type(value).__name__}, expected a per-neuron array")
            continue
        if value.dtype != np.float32:
            problems.append(f"node {name!r}: {field} has dtype {value.dtype}, expected float32")
        if value.shape != layer_shape:
            problems.append(f"node {name!r}: {field} has shape {value.shape}, expected the layer shape {layer_shape}")
        if not np.all(np.isfinite(value)):
            problems.append(f"node {name!r}: {field} contains non-finite values")
        elif field in TIME_CONSTANTS and np.any(value <= 0):
            problems.append(f"node {name!r}: {field} must be positive (seconds), got min {float(value.min()):g}")
    return problems


def _weight_problems(name: str, node: nir.NIRNode) -> list[str]:
    problems = []
    for field in _WEIGHT_FIELDS.get(type(node), ()):
        value = getattr(node, field, None)
        if not isinstance(value, np.ndarray) or value.dtype != np.float32:
            dtype = getattr(value, "dtype", type(value).__name__)
            problems.append(f"node {name!r}: {field} has type {dtype}, expected a float32 array")
        elif not np.all(np.isfinite(value)):
            problems.append(f"node {name!r}: {field} contains non-finite values")
    return problems


def validate_graph(graph: nir.NIRGraph) -> None:
    """Raise :class:`ExportError` listing every contract violation of ``graph`` (see :func:`contract_violations`)."""
    problems = contract_violations(graph)
    if problems:
        raise ExportError("the NIR graph breaks the ecs-train file contract: " + "; ".join(problems))
