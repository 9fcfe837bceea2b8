"""Import of NIR graphs into an integer network: read, check, collapse linear chains, quantize.

Populations are the Input node and the neuron nodes (LIF, LI, CubaLIF, IF).
Between two populations lies a chain of linear nodes (Affine, Linear,
Conv2d, SumPool2d, Flatten), which collapses into one integer synapse matrix.
At most one node of a chain carries trained weights (Affine, Linear or
Conv2d); SumPool2d sums with weight 1 and Flatten only renumbers nothing
(neurons are numbered in C order either way). A chain without a weighted node
carries weight 1.0, the word ``2**fl`` of the weight format.

Trained weights and biases are quantized to the weight format once, and the
structural nodes are applied to the integer words, so the collapsed matrix
contains exact integer sums. Bias words are added to the target neurons' input
at every step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import h5py
import nir
import numpy as np

from ecs_common.errors import QuantizationError
from ecs_common.fixed_point import count_saturated, quantize, quantize_nonzero
from ecs_common.formats import FixedPointFormat
from ecs_common.neuron import NeuronKind, NeuronParameters, ResetMode, integer_parameters
from ecs_deploy.config import DeployConfig, resolve_config
from ecs_deploy.errors import GraphError, NIRFileError, ShapeMismatchError, UnsupportedNodeError
from ecs_deploy.model import RELAY, IntegerConnection, IntegerLayer, IntegerNetwork, SynapseMatrix

logger = logging.getLogger(__name__)

NEURON_NODES: dict[type, str] = {nir.LIF: "lif", nir.LI: "li", nir.IF: "if", nir.CubaLIF: "cubalif"}
LINEAR_NODES: tuple[type, ...] = (nir.Affine, nir.Linear, nir.Conv2d, nir.SumPool2d, nir.Flatten)
WEIGHTED_NODES: tuple[type, ...] = (nir.Affine, nir.Linear, nir.Conv2d)
SUPPORTED_NODES: tuple[str, ...] = (
    "Input",
    "Output",
    "Affine",
    "Linear",
    "LIF",
    "LI",
    "CubaLIF",
    "IF",
    "Conv2d",
    "SumPool2d",
    "Flatten",
)


def read_nir(path: str | Path) -> nir.NIRGraph:
    """Read a NIR file with nir's type checking, turning every failure into a :class:`NIRFileError`.

    A missing file, a file that is not HDF5, a truncated or corrupt file, an
    unknown node type and a shape mismatch between the ends of an edge each
    get a message naming the file and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise NIRFileError(f"NIR file {str(path)!r} not found; check the path")
    if path.is_dir():
        raise NIRFileError(f"{str(path)!r} is a directory, not a NIR file")

    try:
        with h5py.File(path, "r") as handle:
            if "node" not in handle or "nodes" not in handle["node"]:
                raise NIRFileError(f"{str(path)!r} is an HDF5 file but not a NIR graph (it has no 'node/nodes' group)")
            node_types = _stored_node_types(handle["node"]["nodes"])
    except NIRFileError:
        raise
    except (OSError, KeyError, RuntimeError) as error:
        raise NIRFileError(
            f"cannot open {str(path)!r} as HDF5 ({error}); the file is truncated, corrupt or not a NIR file: "
            "write it again with nir.write"
        ) from error
    for name, node_type in node_types.items():
        if node_type not in SUPPORTED_NODES:
            raise UnsupportedNodeError(
                f"node {name!r} in {str(path)!r} has type {node_type}, which the accelerator does not support; "
                f"supported node types: {', '.join(SUPPORTED_NODES)}"
            )

    try:
        graph = nir.read(path, type_check=True)
    except (OSError, KeyError, RuntimeError) as error:
        raise NIRFileError(
            f"cannot read NIR graph from {str(path)!r}: {error!r}; the file is truncated or corrupt, write it again"
        ) from error
    except (ValueError, AssertionError, TypeError) as error:
        text = str(error)
        if "type mismatch" in text or "shape" in text:
            raise ShapeMismatchError(
                f"NIR graph in {str(path)!r} has an edge whose shapes disagree: {text}; "
                "fix the exporting model so that each node's output shape equals the next node's input shape"
            ) from error
        raise NIRFileError(
            f"cannot read NIR graph from {str(path)!r}: {text or type(error).__name__}; the file is corrupt or was "
            "written by an incompatible NIR version: write it again"
        ) from error
    if not isinstance(graph, nir.NIRGraph):
        raise NIRFileError(
            f"{str(path)!r} contains a single {type(graph).__name__} node, not a NIR graph; export the whole network"
        )
    return graph


def _stored_node_types(nodes: h5py.Group) -> dict[str, str]:
    """Return the type name of every node stored in a NIR file's ``node/nodes`` group."""
    types = {}
    for name, group in nodes.items():
        if not isinstance(group, h5py.Group) or "type" not in group:
            raise NIRFileError(f"node {name!r} of the NIR file has no 'type' entry; the file is corrupt")
        value = group["type"][()]
        types[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return types


@dataclass
class _Chain:
    """A linear map being collapsed: integer words from source neurons to the current node's outputs.

    ``matrix`` is ``None`` for the identity. ``bias`` is ``None`` or words per output.
    """

    matrix: SynapseMatrix | None
    bias: np.ndarray | None
    shape: tuple[int, ...]
    source_size: int
    weighted: str | None = None


def _sparse_product(left: SynapseMatrix, right: SynapseMatrix) -> SynapseMatrix:
    """Return ``left @ right`` for matrices in coordinate format (exact int64)."""
    if left.shape[1] != right.shape[0]:
        raise ShapeMismatchError(f"cannot compose maps of shapes {left.shape} and {right.shape}")
    order = np.argsort(right.target, kind="stable")
    r_rows, r_cols, r_vals = right.target[order], right.source[order], right.weight[order]
    starts = np.searchsorted(r_rows, left.source, side="left")
    counts = np.searchsorted(r_rows, left.source, side="right") - starts
    left_index = np.repeat(np.arange(left.nnz), counts)
    offsets = np.arange(left_index.size) - np.repeat(np.cumsum(counts) - counts, counts)
    right_index = starts[left_index] + offsets
    return SynapseMatrix.from_coordinates(
        left.target[left_index],
        r_cols[right_index],
        left.weight[left_index] * r_vals[right_index],
        (left.shape[0], right.shape[1]),
    )


def _apply(chain: _Chain, op: SynapseMatrix, out_shape: tuple[int, ...], op_bias: np.ndarray | None) -> _Chain:
    """Compose ``op`` after the chain and return the new chain."""
    matrix = op if chain.matrix is None else _sparse_product(op, chain.matrix)
    bias = None
    if chain.bias is not None:
        bias = np.zeros(op.shape[0], dtype=np.int64)
        np.add.at(bias, op.target, op.weight * chain.bias[op.source])
    if op_bias is not None:
        bias = op_bias if bias is None else bias + op_bias
    return _Chain(matrix, bias, out_shape, chain.source_size, chain.weighted)


def _pair(value: Any, name: str, node: str) -> tuple[int, int]:
    array = np.asarray(value).astype(np.int64).ravel()
    if array.size == 1:
        return int(array[0]), int(array[0])
    if array.size != 2:
        raise GraphError(f"node {node!r}: {name} must be one or two integers, got {value!r}")
    return int(array[0]), int(array[1])


def _image_shape(chain: _Chain, node: str, kind: str) -> tuple[int, int, int]:
    if len(chain.shape) != 3:
        raise ShapeMismatchError(
            f"{kind} node {node!r} needs a (channels, height, width) input, got shape {chain.shape}; "
            "remove the Flatten before it or export the input with its image shape"
        )
    channels, height, width = chain.shape
    return channels, height, width


def _output_length(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _conv_matrix(node: nir.Conv2d, name: str, words: np.ndarray, in_shape: tuple[int, int, int]) -> tuple:
    """Return the explicit synapse matrix of a 2-d convolution and its output shape."""
    channels_in, height, width = in_shape
    channels_out, group_in, kernel_h, kernel_w = words.shape
    groups = int(np.asarray(node.groups).ravel()[0])
    if group_in * groups != channels_in:
        raise ShapeMismatchError(
            f"Conv2d node {name!r}: weight expects {group_in * groups} input channels ({group_in} per group, "
            f"{groups} groups) but its input has {channels_in}"
        )
    stride = _pair(node.stride, "stride", name)
    dilation = _pair(node.dilation, "dilation", name)
    if isinstance(node.padding, str):
        if node.padding == "valid":
            padding = (0, 0)
        elif node.padding == "same":
            if stride != (1, 1):
                raise GraphError(f"Conv2d node {name!r}: padding 'same' needs stride 1, got {stride}")
            padding = (dilation[0] * (kernel_h - 1) // 2, dilation[1] * (kernel_w - 1) // 2)
        else:
            raise GraphError(
                f"Conv2d node {name!r}: unknown padding {node.padding!r}; expected 'same', 'valid' or integers"
            )
    else:
        padding = _pair(node.padding, "padding", name)
    out_h = _output_length(height, kernel_h, stride[0], padding[0], dilation[0])
    out_w = _output_length(width, kernel_w, stride[1], padding[1], dilation[1])
    if isinstance(node.padding, str) and node.padding == "same":
        out_h, out_w = height, width
    if out_h <= 0 or out_w <= 0:
        raise ShapeMismatchError(f"Conv2d node {name!r}: input {in_shape} is smaller than the kernel")

    co, ci, ky, kx, oy, ox = np.meshgrid(
        np.arange(channels_out),
        np.arange(group_in),
        np.arange(kernel_h),
        np.arange(kernel_w),
        np.arange(out_h),
        np.arange(out_w),
        indexing="ij",
        sparse=True,
    )
    channel = (co // (channels_out // groups)) * group_in + ci
    iy = oy * stride[0] - padding[0] + ky * dilation[0]
    ix = ox * stride[1] - padding[1] + kx * dilation[1]
    shape = np.broadcast_shapes(channel.shape, iy.shape, ix.shape)
    weight = np.broadcast_to(words[co, ci, ky, kx], shape)
    valid = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width) & (weight != 0)
    target = np.broadcast_to((co * out_h + oy) * out_w + ox, shape)[valid]
    source = np.broadcast_to((channel * height + iy) * width + ix, shape)[valid]
    matrix = SynapseMatrix.from_coordinates(
        target, source, weight[valid], (channels_out * out_h * out_w, channels_in * height * width)
    )
    return matrix, (channels_out, out_h, out_w)


def _pool_matrix(node: nir.SumPool2d, name: str, in_shape: tuple[int, int, int]) -> tuple:
    """Return the 0/1 matrix of a 2-d sum pooling and its output shape."""
    channels, height, width = in_shape
    kernel = _pair(node.kernel_size, "kernel_size", name)
    stride = _pair(node.stride, "stride", name)
    padding = _pair(node.padding, "padding", name)
    out_h = _output_length(height, kernel[0], stride[0], padding[0], 1)
    out_w = _output_length(width, kernel[1], stride[1], padding[1], 1)
    if out_h <= 0 or out_w <= 0:
        raise ShapeMismatchError(f"SumPool2d node {name!r}: input {in_shape} is smaller than the kernel {kernel}")
    c, ky, kx, oy, ox = np.meshgrid(
        np.arange(channels),
        np.arange(kernel[0]),
        np.arange(kernel[1]),
        np.arange(out_h),
        np.arange(out_w),
        indexing="ij",
        sparse=True,
    )
    iy = oy * stride[0] - padding[0] + ky
    ix = ox * stride[1] - padding[1] + kx
    shape = np.broadcast_shapes(c.shape, iy.shape, ix.shape)
    valid = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
    valid = np.broadcast_to(valid, shape)
    target = np.broadcast_to((c * out_h + oy) * out_w + ox, shape)[valid]
    source = np.broadcast_to((c * height + iy) * width + ix, shape)[valid]
    matrix = SynapseMatrix.from_coordinates(
        target, source, np.ones(target.size, dtype=np.int64), (channels * out_h * out_w, channels * height * width)
    )
    return matrix, (channels, out_h, out_w)


class _Importer:
    """Walks a NIR graph once and builds the :class:`IntegerNetwork`."""

    def __init__(self, graph: nir.NIRGraph, config: DeployConfig, source: str) -> None:
        self.graph = graph
        self.config = config
        self.source = source
        self.weight_format: FixedPointFormat = config.quant.weight_format
        self.successors: dict[str, list[str]] = {name: [] for name in graph.nodes}
        for start, end in graph.edges:
            if start not in graph.nodes or end not in graph.nodes:
                missing = start if start not in graph.nodes else end
                raise GraphError(f"edge ({start!r}, {end!r}) names node {missing!r}, which the graph does not have")
            self.successors[start].append(end)
        self.saturated: dict[str, int] = {}

    # Node checks.

    def check_nodes(self) -> tuple[str, str]:
        """Reject unsupported nodes and return the names of the Input and Output nodes."""
        inputs, outputs = [], []
        for name, node in self.graph.nodes.items():
            if isinstance(node, nir.Input):
                inputs.append(name)
            elif isinstance(node, nir.Output):
                outputs.append(name)
            elif type(node) not in NEURON_NODES and not isinstance(node, LINEAR_NODES):
                raise UnsupportedNodeError(
                    f"node {name!r} of {self.source} has type {type(node).__name__}, which the accelerator does not "
                    f"support; supported node types: {', '.join(SUPPORTED_NODES)}"
                )
        if len(inputs) != 1 or len(outputs) != 1:
            raise GraphError(
                f"{self.source} must have exactly one Input and one Output node, got inputs {inputs} "
                f"and outputs {outputs}"
            )
        return inputs[0], outputs[0]

    # Populations.

    @staticmethod
    def _population_shape(node: Any) -> tuple[int, ...]:
        if isinstance(node, nir.Input):
            shape = node.input_type["input"]
        elif isinstance(node, nir.LI):
            shape = np.shape(node.v_leak)
        else:
            shape = np.shape(node.v_threshold)
        return tuple(int(n) for n in np.asarray(shape).ravel()) or (1,)

    def neuron_layer(self, name: str, node: Any, bias: np.ndarray | None) -> IntegerLayer:
        """Turn a NIR neuron node into an integer layer with ``ecs_common.neuron.integer_parameters``."""
        kind = cast(NeuronKind, NEURON_NODES[type(node)])
        shape = self._population_shape(node)

        def flat(value: Any) -> np.ndarray:
            return np.asarray(value, dtype=np.float64).ravel()

        def optional(value: Any) -> np.ndarray | None:
            return None if value is None else flat(value)

        if kind in ("lif", "li"):
            params = NeuronParameters(
                kind=kind,
                r=flat(node.r),
                v_leak=flat(node.v_leak),
                tau_mem=flat(node.tau),
                v_threshold=optional(getattr(node, "v_threshold", None)),
                v_reset=optional(getattr(node, "v_reset", None)),
            )
        elif kind == "if":
            params = NeuronParameters(
                kind=kind,
                r=flat(node.r),
                v_leak=np.zeros(int(np.prod(shape))),
                v_threshold=flat(node.v_threshold),
                v_reset=flat(node.v_reset),
            )
        else:
            params = NeuronParameters(
                kind=kind,
                r=flat(node.r),
                v_leak=flat(node.v_leak),
                tau_mem=flat(node.tau_mem),
                tau_syn=flat(node.tau_syn),
                w_in=flat(node.w_in),
                v_threshold=flat(node.v_threshold),
                v_reset=flat(node.v_reset),
            )
        try:
            reset_mode = cast(ResetMode, self.config.reset_mode)
            integer = integer_parameters(params, self.config.dt, self.config.quant, reset_mode, name=name)
        except ValueError as error:
            if isinstance(error, QuantizationError):
                raise
            raise GraphError(f"neuron node {name!r} ({type(node).__name__}): {error}") from error

        size = int(np.prod(shape))
        words = np.zeros(size, dtype=np.int64) if bias is None else bias
        state = self.config.quant.state_format
        if words.size and (words.min() < state.min_int or words.max() > state.max_int):
            raise QuantizationError(
                f"neuron node {name!r}: bias words up to {int(np.abs(words).max())} exceed the state format "
                f"{state}; reduce the bias or widen the state word"
            )
        return IntegerLayer(name=name, kind=kind, shape=shape, params=integer, bias=words)

    # Chains.

    def _quantize_weights(self, values: np.ndarray, what: str) -> np.ndarray:
        words = quantize_nonzero(values, self.weight_format, what)
        saturated = count_saturated(values, self.weight_format)
        if saturated:
            self.saturated[what] = saturated
            logger.warning(
                "%s: %d value(s) saturated to the weight format %s (range %g to %g)",
                what,
                saturated,
                self.weight_format,
                self.weight_format.min_value,
                self.weight_format.max_value,
            )
        return words

    def step(self, chain: _Chain, name: str, node: Any) -> _Chain:
        """Apply one linear node to a chain."""
        if isinstance(node, WEIGHTED_NODES) and chain.weighted is not None:
            raise GraphError(
                f"the chain through {chain.weighted!r} and {name!r} has two weighted nodes between neuron "
                "layers; the accelerator applies one weight matrix per connection, so put a neuron layer "
                "between them or merge the two layers before export"
            )
        size = int(np.prod(chain.shape))

        if isinstance(node, nir.Flatten):
            out_type = node.output_type.get("output") if node.output_type else None
            shape = (size,) if out_type is None else tuple(int(n) for n in np.asarray(out_type).ravel())
            if int(np.prod(shape)) != size:
                raise ShapeMismatchError(
                    f"Flatten node {name!r} outputs shape {shape} but receives {chain.shape} ({size} values)"
                )
            return _Chain(chain.matrix, chain.bias, shape, chain.source_size, chain.weighted)

        if isinstance(node, nir.SumPool2d):
            matrix, shape = _pool_matrix(node, name, _image_shape(chain, name, "SumPool2d"))
            return _apply(chain, matrix, shape, None)

        weight = np.asarray(node.weight, dtype=np.float64)
        if isinstance(node, nir.Conv2d):
            in_shape = _image_shape(chain, name, "Conv2d")
            words = self._quantize_weights(weight, f"weight of Conv2d node {name!r}")
            matrix, shape = _conv_matrix(node, name, words, in_shape)
            bias_words = self._bias(node.bias, f"bias of Conv2d node {name!r}", weight.shape[0])
            if bias_words is not None:
                bias_words = np.repeat(bias_words, shape[1] * shape[2])
        else:
            if weight.ndim != 2:
                raise GraphError(f"{type(node).__name__} node {name!r} has a {weight.ndim}-d weight; expected 2-d")
            if weight.shape[1] != size:
                raise ShapeMismatchError(
                    f"{type(node).__name__} node {name!r} expects {weight.shape[1]} inputs but receives {size} "
                    f"(shape {chain.shape}); fix the layer sizes of the exported model"
                )
            words = self._quantize_weights(weight, f"weight of {type(node).__name__} node {name!r}")
            matrix = SynapseMatrix.from_dense(words)
            shape = (weight.shape[0],)
            bias_words = None
            if isinstance(node, nir.Affine):
                bias_words = self._bias(node.bias, f"bias of Affine node {name!r}", weight.shape[0])
        result = _apply(chain, matrix, shape, bias_words)
        result.weighted = name
        return result

    def _bias(self, bias: Any, what: str, channels: int) -> np.ndarray | None:
        if bias is None:
            return None
        values = np.asarray(bias, dtype=np.float64).ravel()
        if values.size == 1 and channels != 1:
            values = np.full(channels, float(values[0]))
        if values.size != channels:
            raise ShapeMismatchError(f"{what} has {values.size} values, expected {channels}")
        if not np.any(values):
            return None
        return self._quantize_weights(values, what)

    def finish(self, chain: _Chain, end: str) -> tuple[SynapseMatrix, np.ndarray | None]:
        """Return the chain's integer matrix, giving weight 1.0 to a chain without weighted node."""
        if chain.weighted is not None:
            assert chain.matrix is not None
            return chain.matrix, chain.bias
        one = int(quantize(1.0, self.weight_format))
        if count_saturated(1.0, self.weight_format):
            logger.warning(
                "connection into %r has no weighted node; its weight 1.0 saturates to %d in %s",
                end,
                one,
                self.weight_format,
            )
        if chain.matrix is None:
            index = np.arange(chain.source_size)
            matrix = SynapseMatrix(
                index, index, np.full(chain.source_size, one, dtype=np.int64), (chain.source_size,) * 2
            )
        else:
            matrix = SynapseMatrix(
                chain.matrix.target, chain.matrix.source, chain.matrix.weight * one, chain.matrix.shape
            )
        return matrix, None

    def walk(self, population: str, shape: tuple[int, ...]) -> list[tuple[str, _Chain]]:
        """Follow every path from a population through linear nodes; return (end node, chain) pairs."""
        size = int(np.prod(shape))
        results = []
        stack: list[tuple[str, _Chain, tuple[str, ...]]] = [
            (successor, _Chain(None, None, shape, size), (population,)) for successor in self.successors[population]
        ]
        while stack:
            name, chain, path = stack.pop()
            node = self.graph.nodes[name]
            if isinstance(node, nir.Output) or type(node) in NEURON_NODES:
                results.append((name, chain))
                continue
            if isinstance(node, nir.Input):
                raise GraphError(f"edge ({path[-1]!r}, {name!r}) leads into the Input node")
            if name in path:
                raise GraphError(f"linear nodes {' -> '.join(path)} -> {name} form a cycle without a neuron layer")
            chain = self.step(chain, name, node)
            if not self.successors[name]:
                raise GraphError(f"node {name!r} leads nowhere: connect it to a neuron layer or the Output node")
            for successor in self.successors[name]:
                stack.append((successor, chain, (*path, name)))
        return results


def _sort_layers(names: list[str], edges: list[tuple[str, str]], input_name: str) -> list[str]:
    """Order populations so that every source precedes its targets (recurrent edges excluded)."""
    remaining = {name: {s for s, t in edges if t == name and s != name} for name in names}
    order = []
    ready = [input_name]
    while ready:
        name = ready.pop(0)
        order.append(name)
        for other in names:
            if name in remaining[other]:
                remaining[other].discard(name)
                if not remaining[other] and other not in order and other not in ready:
                    ready.append(other)
    unplaced = [name for name in names if name not in order]
    if unplaced:
        raise GraphError(
            f"neuron layers {unplaced} are unreachable from the Input node or sit in a feedback loop across "
            "several layers; only recurrent connections of a layer onto itself are supported"
        )
    return order


def import_graph(
    graph: nir.NIRGraph,
    hardware: Any = None,
    quant: Any = None,
    *,
    dt: float | None = None,
    reset_mode: str | None = None,
    readout: str | None = None,
    source: str = "the NIR graph",
) -> IntegerNetwork:
    """Build the integer network of a NIR graph.

    Settings come from the graph's ``ecs`` metadata; explicitly given ones win
    (see :func:`ecs_deploy.config.resolve_config`). Raises
    :class:`UnsupportedNodeError`, :class:`ShapeMismatchError`,
    :class:`GraphError`, :class:`MissingConfigError` or
    :class:`QuantizationError` naming the node and the fix.
    """
    if not isinstance(graph, nir.NIRGraph):
        raise GraphError(f"expected a nir.NIRGraph, got {type(graph).__name__}")
    config = resolve_config(
        graph.metadata, hardware, quant, dt=dt, reset_mode=reset_mode, readout=readout, source=source
    )
    importer = _Importer(graph, config, source)
    input_name, output_name = importer.check_nodes()

    populations = [input_name] + [name for name, node in graph.nodes.items() if type(node) in NEURON_NODES]
    shapes = {name: importer._population_shape(graph.nodes[name]) for name in populations}

    # Collapse every chain between two populations; sum parallel chains between the same pair.
    chains: dict[tuple[str, str], tuple[SynapseMatrix, np.ndarray | None]] = {}
    output_sources = []
    for population in populations:
        for end, chain in importer.walk(population, shapes[population]):
            if isinstance(graph.nodes[end], nir.Output):
                if chain.matrix is not None or chain.weighted is not None:
                    raise GraphError(
                        f"the Output node is fed through weighted or pooling nodes from {population!r}; the "
                        "network output must be the states of a neuron layer (end the model with an LI layer)"
                    )
                output_sources.append(population)
                continue
            end_size = int(np.prod(shapes[end]))
            chain_size = int(np.prod(chain.shape))
            if chain_size != end_size:
                raise ShapeMismatchError(
                    f"edge into neuron node {end!r}: the chain from {population!r} delivers {chain_size} values "
                    f"(shape {chain.shape}) but {end!r} has {end_size} neurons (shape {shapes[end]})"
                )
            matrix, bias = importer.finish(chain, end)
            if (population, end) in chains:
                old_matrix, old_bias = chains[(population, end)]
                matrix = SynapseMatrix.from_coordinates(
                    np.concatenate([old_matrix.target, matrix.target]),
                    np.concatenate([old_matrix.source, matrix.source]),
                    np.concatenate([old_matrix.weight, matrix.weight]),
                    matrix.shape,
                )
                if bias is None:
                    bias = old_bias
                elif old_bias is not None:
                    bias = bias + old_bias
            chains[(population, end)] = (matrix, bias)

    if len(output_sources) != 1:
        raise GraphError(f"the Output node must be fed by exactly one neuron layer, got {output_sources}")
    if output_sources[0] == input_name:
        raise GraphError("the Output node is fed by the Input node directly; the network has no neuron layer")

    order = _sort_layers(populations, list(chains), input_name)
    layers = [IntegerLayer(name=input_name, kind=RELAY, shape=shapes[input_name])]
    for name in order[1:]:
        biases = [bias for (source, target), (_, bias) in chains.items() if target == name and bias is not None]
        bias = np.sum(biases, axis=0).astype(np.int64) if biases else None
        layers.append(importer.neuron_layer(name, graph.nodes[name], bias))
    connections = [
        IntegerConnection(source, target, matrix)
        for (source, target), (matrix, _) in sorted(chains.items(), key=lambda item: order.index(item[0][1]))
    ]

    metadata = config.metadata
    return IntegerNetwork(
        input_shape=shapes[input_name],
        layers=layers,
        connections=connections,
        output_layer=output_sources[0],
        hardware=config.hardware,
        quant=config.quant,
        dt=config.dt,
        reset_mode=config.reset_mode,
        readout=config.readout,
        assumptions=dict(config.assumptions),
        saturated_weights=dict(importer.saturated),
        provenance=metadata.provenance.model_dump() if metadata is not None else {},
    )


def load_nir(
    path: str | Path,
    hardware: Any = None,
    quant: Any = None,
    *,
    dt: float | None = None,
    reset_mode: str | None = None,
    readout: str | None = None,
) -> IntegerNetwork:
    """Read a NIR file and build its integer network (see :func:`read_nir` and :func:`import_graph`)."""
    graph = read_nir(path)
    return import_graph(
        graph, hardware, quant, dt=dt, reset_mode=reset_mode, readout=readout, source=f"NIR file {str(path)!r}"
    )
