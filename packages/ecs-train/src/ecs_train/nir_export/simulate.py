"""Float64 simulation of a NIR graph, with the neuron step of ``ecs_common.neuron.float_step``.

Timing follows the training side: at step ``t`` every node consumes what its
source nodes produced at the same step ``t``, except along recurrent edges
(those that close a cycle), which carry the source's output of step ``t - 1``.
Every state starts at zero.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nir
import numpy as np

from ecs_common.metadata import has_metadata, read_metadata
from ecs_common.neuron import RESET_MODES, NeuronParameters, ResetMode, float_step
from ecs_train.nir_export.errors import ExportError

_NEURON_KINDS: dict[type, str] = {nir.LIF: "lif", nir.LI: "li", nir.IF: "if", nir.CubaLIF: "cubalif"}


def _shape(node: nir.NIRNode, key: str) -> tuple[int, ...]:
    types = node.output_type if key == "output" else node.input_type
    return tuple(int(size) for size in types[key])


def _schedule(graph: nir.NIRGraph) -> tuple[list[str], set[tuple[str, str]]]:
    """Return the nodes in execution order and the set of recurrent (cycle-closing) edges."""
    successors: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for source, target in graph.edges:
        successors[source].append(target)

    back_edges: set[tuple[str, str]] = set()
    finished: list[str] = []
    state: dict[str, str] = {}
    for root in (name for name, node in graph.nodes.items() if isinstance(node, nir.Input)):
        # Iterative depth-first search. An edge into a node still on the stack closes a cycle.
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = "open"
        while stack:
            name, index = stack.pop()
            if index < len(successors[name]):
                stack.append((name, index + 1))
                child = successors[name][index]
                if state.get(child) == "open":
                    back_edges.add((name, child))
                elif child not in state:
                    state[child] = "open"
                    stack.append((child, 0))
            else:
                state[name] = "done"
                finished.append(name)

    unreachable = sorted(set(graph.nodes) - set(state))
    if unreachable:
        raise ExportError(f"nodes {unreachable} cannot be reached from the graph's Input node")
    return finished[::-1], back_edges


def _windows(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(i, j, patch)`` for every kernel offset, with ``patch`` shaped ``(batch, channels, out_h, out_w)``."""
    height, width = x.shape[-2:]
    out_h = (height - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (width - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            top, left = i * dilation[0], j * dilation[1]
            rows = slice(top, top + stride[0] * (out_h - 1) + 1, stride[0])
            columns = slice(left, left + stride[1] * (out_w - 1) + 1, stride[1])
            yield i, j, x[..., rows, columns]


def _pair(value: Any) -> tuple[int, int]:
    array = np.broadcast_to(np.asarray(value, dtype=np.int64).ravel(), (2,))
    return int(array[0]), int(array[1])


def _pad(x: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))


def conv2d(x: np.ndarray, node: nir.Conv2d) -> np.ndarray:
    """Apply a NIR ``Conv2d`` to a batch ``(batch, channels, height, width)``."""
    if isinstance(node.padding, str):
        raise ExportError(f"Conv2d padding {node.padding!r} is not supported by the simulator; use integer padding")
    weight = np.asarray(node.weight, dtype=np.float64)
    out_channels, group_channels = weight.shape[:2]
    groups = int(node.groups)
    per_group = out_channels // groups
    padded = _pad(x, _pair(node.padding))

    outputs: list[np.ndarray] = []
    for group in range(groups):
        inputs = padded[:, group * group_channels : (group + 1) * group_channels]
        kernels = weight[group * per_group : (group + 1) * per_group]
        windows = _windows(inputs, _pair(weight.shape[2:]), _pair(node.stride), _pair(node.dilation))
        terms = [np.einsum("bchw,oc->bohw", patch, kernels[:, :, i, j]) for i, j, patch in windows]
        outputs.append(np.sum(terms, axis=0))
    bias = np.asarray(node.bias, dtype=np.float64)
    return np.concatenate(outputs, axis=1) + bias[None, :, None, None]


def sum_pool2d(x: np.ndarray, node: nir.SumPool2d) -> np.ndarray:
    """Apply a NIR ``SumPool2d`` (zero padded) to a batch ``(batch, channels, height, width)``."""
    padded = _pad(x, _pair(node.padding))
    windows = [patch for _, _, patch in _windows(padded, _pair(node.kernel_size), _pair(node.stride), (1, 1))]
    return np.sum(windows, axis=0)


def neuron_parameters(node: nir.NIRNode) -> NeuronParameters:
    """Return a NIR neuron node's parameters as flat :class:`NeuronParameters` (one value per neuron)."""
    kind = _NEURON_KINDS[type(node)]

    def flat(name: str) -> Any:
        value = getattr(node, name, None)
        return None if value is None else np.asarray(value, dtype=np.float64).ravel()

    r = flat("r")
    return NeuronParameters(
        kind=kind,  # type: ignore[arg-type]
        r=r,
        v_leak=flat("v_leak") if kind != "if" else np.zeros(r.size),
        tau_mem=flat("tau") if kind in ("lif", "li") else flat("tau_mem"),
        tau_syn=flat("tau_syn"),
        w_in=flat("w_in"),
        v_threshold=flat("v_threshold"),
        v_reset=flat("v_reset"),
    )


def simulate_float(
    graph: nir.NIRGraph | str | os.PathLike[str],
    inputs: Any,
    dt: float | None = None,
    reset_mode: str | None = None,
) -> np.ndarray:
    """Run a NIR graph (or file) on ``inputs`` and return the Output node's value at every step.

    ``inputs`` is ``[T, *input_shape]`` or, batched, ``[T, batch, *input_shape]``;
    the result is ``[T, *output_shape]`` or ``[T, batch, *output_shape]`` in
    float64. Neuron layers output spikes as 0.0/1.0, except LI layers, whose
    output is the membrane potential. ``dt`` (seconds) and ``reset_mode``
    default to the graph's ``ecs`` metadata. Supported nodes: Input, Output,
    Affine, Linear, Conv2d, SumPool2d, Flatten, LIF, LI, IF and CubaLIF.
    """
    if isinstance(graph, (str, os.PathLike)):
        graph = nir.read(Path(graph))
    metadata = read_metadata(graph) if has_metadata(graph.metadata) else None
    if dt is None:
        if metadata is None:
            raise ExportError("the graph has no ECS metadata, so pass dt (seconds) to simulate it")
        dt = metadata.dt
    if reset_mode is None:
        reset_mode = metadata.reset_mode if metadata is not None else "to_reset"
    if reset_mode not in RESET_MODES:
        raise ExportError(f"unknown reset mode {reset_mode!r}; expected one of {', '.join(RESET_MODES)}")
    mode: ResetMode = "subtract" if reset_mode == "subtract" else "to_reset"

    input_names = [name for name, node in graph.nodes.items() if isinstance(node, nir.Input)]
    output_names = [name for name, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(input_names) != 1 or len(output_names) != 1:
        raise ExportError(
            f"the simulator needs one Input and one Output node, found {len(input_names)} and {len(output_names)}"
        )
    input_shape = _shape(graph.nodes[input_names[0]], "output")

    data = np.asarray(inputs, dtype=np.float64)
    batched = data.ndim == len(input_shape) + 2
    if data.ndim == len(input_shape) + 1:
        data = data[:, None]
    if data.ndim != len(input_shape) + 2 or tuple(data.shape[2:]) != input_shape:
        raise ExportError(
            f"inputs have shape {data.shape}; expected [T, {', '.join(map(str, input_shape))}] or "
            f"[T, batch, {', '.join(map(str, input_shape))}]"
        )
    steps, batch = data.shape[:2]

    order, back_edges = _schedule(graph)
    sources: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for source, target in graph.edges:
        sources[target].append(source)

    params = {name: neuron_parameters(node) for name, node in graph.nodes.items() if type(node) in _NEURON_KINDS}
    voltages = {name: np.zeros((batch, p.size)) for name, p in params.items()}
    currents = {name: np.zeros((batch, p.size)) if p.kind == "cubalif" else None for name, p in params.items()}
    previous = {name: np.zeros((batch, *_shape(node, "output"))) for name, node in graph.nodes.items()}

    results = []
    for step in range(steps):
        outputs: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.nodes[name]
            if isinstance(node, nir.Input):
                outputs[name] = data[step]
                continue
            arriving = [previous[s] if (s, name) in back_edges else outputs[s] for s in sources[name]]
            x = np.sum(arriving, axis=0)
            if name in params:
                shape = _shape(node, "output")
                v, current, spikes = float_step(
                    params[name], dt, voltages[name], currents[name], np.reshape(x, (batch, -1)), mode
                )
                voltages[name], currents[name] = v, current
                value = v if isinstance(node, nir.LI) else spikes.astype(np.float64)
                outputs[name] = value.reshape((batch, *shape))
            else:
                outputs[name] = _apply(node, x, batch)
        results.append(outputs[output_names[0]])
        previous = outputs

    stacked = np.stack(results)
    return stacked if batched else stacked[:, 0]


def _apply(node: nir.NIRNode, x: np.ndarray, batch: int) -> np.ndarray:
    if isinstance(node, nir.Output):
        return x
    if isinstance(node, nir.Affine):
        return x @ np.asarray(node.weight, dtype=np.float64).T + np.asarray(node.bias, dtype=np.float64)
    if isinstance(node, nir.Linear):
        return x @ np.asarray(node.weight, dtype=np.float64).T
    if isinstance(node, nir.Conv2d):
        return conv2d(x, node)
    if isinstance(node, nir.SumPool2d):
        return sum_pool2d(x, node)
    if isinstance(node, nir.Flatten):
        return np.reshape(x, (batch, *_shape(node, "output")))
    raise ExportError(f"the simulator does not support NIR node type {type(node).__name__}")
