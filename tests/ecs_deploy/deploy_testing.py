"""Builders of NIR test networks (with the nir API, no torch) and a delay-free reference forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from ecs_common import metadata as ecs_metadata
from ecs_common.fixed_point import quantize
from ecs_common.formats import QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_common.neuron import NeuronParameters, initial_state, integer_parameters, integer_step

DT = 1e-3
LSB = 1 / 64  # weight LSB of the default Q(8,6)


def words(rng: np.random.Generator, shape: tuple[int, ...], low: int = -40, high: int = 60) -> np.ndarray:
    """Return float weights that are exact multiples of the weight LSB, as ecs-train exports them."""
    return rng.integers(low, high, size=shape).astype(np.float64) * LSB


def neuron_node(kind: str, shape: tuple[int, ...], rng: np.random.Generator, threshold: float = 1.0) -> nir.NIRNode:
    """Return a NIR neuron node with per-neuron parameter arrays; time constants in seconds."""
    ones = np.ones(shape)
    # r = 4 keeps thresholds at a few dozen weight words, so that small test networks spike.
    r = 4.0 * ones
    tau = rng.uniform(2e-3, 2e-2, size=shape)
    v_leak = np.round(rng.uniform(-0.1, 0.1, size=shape), 3)
    v_threshold = threshold * rng.uniform(0.5, 1.5, size=shape)
    v_reset = rng.uniform(-0.2, 0.0, size=shape)
    if kind == "lif":
        return nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=v_threshold, v_reset=v_reset)
    if kind == "li":
        return nir.LI(tau=tau, r=r, v_leak=v_leak)
    if kind == "if":
        return nir.IF(r=ones * 200.0, v_threshold=v_threshold, v_reset=v_reset)
    if kind == "cubalif":
        return nir.CubaLIF(
            tau_mem=tau,
            tau_syn=rng.uniform(2e-3, 1e-2, size=shape),
            r=r,
            v_leak=v_leak,
            v_threshold=v_threshold * 0.3,
            v_reset=v_reset,
            w_in=ones,
        )
    raise ValueError(kind)


def metadata(
    dt: float = DT,
    reset_mode: str = "to_reset",
    hardware: HardwareConfig | None = None,
    quant: QuantConfig | None = None,
    readout: str = "last",
) -> dict[str, str]:
    """Return graph metadata with the ``ecs`` key."""
    meta = ecs_metadata.ECSMetadata(
        dt=dt,
        reset_mode=reset_mode,
        readout=readout,
        hardware_cfg=hardware or HardwareConfig(),
        quant_cfg=quant or QuantConfig(),
    )
    return ecs_metadata.encode(meta)


def chain_graph(
    nodes: list[tuple[str, nir.NIRNode]], input_shape: tuple[int, ...], meta: dict | None, type_check: bool = True
) -> nir.NIRGraph:
    """Return a sequential graph input -> nodes... -> output."""
    last = nodes[-1][1]
    out_shape = np.asarray(last.output_type["output"])
    named = {"input": nir.Input(np.array(input_shape))}
    named.update(dict(nodes))
    named["output"] = nir.Output(out_shape)
    names = list(named)
    edges = [(names[i], names[i + 1]) for i in range(len(names) - 1)]
    return nir.NIRGraph(nodes=named, edges=edges, metadata=meta or {}, type_check=type_check)


def dense_net(
    rng: np.random.Generator,
    sizes: tuple[int, ...] = (24, 16, 5),
    hidden_kind: str = "lif",
    output_kind: str = "li",
    reset_mode: str = "to_reset",
    bias: bool = True,
    **meta_kwargs,
) -> nir.NIRGraph:
    """Return a fully connected network: input, hidden neuron layers of ``hidden_kind``, output of ``output_kind``."""
    nodes = []
    for index in range(1, len(sizes)):
        shape = (sizes[index], sizes[index - 1])
        if bias and index == 1:
            nodes.append((f"fc{index}", nir.Affine(words(rng, shape), words(rng, (sizes[index],), -10, 10))))
        else:
            nodes.append((f"fc{index}", nir.Linear(words(rng, shape))))
        kind = output_kind if index == len(sizes) - 1 else hidden_kind
        nodes.append((f"{kind}{index}", neuron_node(kind, (sizes[index],), rng)))
    return chain_graph(nodes, (sizes[0],), metadata(reset_mode=reset_mode, **meta_kwargs))


def conv_net(rng: np.random.Generator, kind: str = "lif", reset_mode: str = "to_reset") -> nir.NIRGraph:
    """Return input [2, 8, 8] -> Conv2d(4, 3x3, pad 1) -> neurons -> SumPool2d(2) -> Flatten -> Affine -> LI."""
    conv = nir.Conv2d(
        input_shape=(8, 8),
        weight=words(rng, (4, 2, 3, 3), -30, 60),
        stride=1,
        padding=1,
        dilation=1,
        groups=1,
        bias=words(rng, (4,), -5, 10),
    )
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    flatten = nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1)
    fc = nir.Affine(words(rng, (6, 64), -30, 40), words(rng, (6,), -5, 5))
    nodes = [
        ("conv", conv),
        ("neurons", neuron_node(kind, (4, 8, 8), rng, threshold=0.6)),
        ("pool", pool),
        ("flatten", flatten),
        ("fc", fc),
        ("out", neuron_node("li", (6,), rng)),
    ]
    return chain_graph(nodes, (2, 8, 8), metadata(reset_mode=reset_mode))


# Delay-free reference, straight from the NIR nodes.


def _conv2d(x: np.ndarray, node: nir.Conv2d, weight: np.ndarray) -> np.ndarray:
    """Direct 2-d convolution (cross-correlation, as torch) of int64 ``x`` ``[B, C, H, W]``."""
    stride = np.broadcast_to(np.asarray(node.stride).ravel(), 2)
    padding = np.broadcast_to(np.asarray(node.padding).ravel(), 2)
    dilation = np.broadcast_to(np.asarray(node.dilation).ravel(), 2)
    batch, _, height, width = x.shape
    out_c, _, kh, kw = weight.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[0]), (padding[1], padding[1])))
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((batch, out_c, out_h, out_w), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = padded[
                :,
                :,
                ky * dilation[0] : ky * dilation[0] + stride[0] * (out_h - 1) + 1 : stride[0],
                kx * dilation[1] : kx * dilation[1] + stride[1] * (out_w - 1) + 1 : stride[1],
            ]
            out += np.einsum("bchw,oc->bohw", patch, weight[:, :, ky, kx])
    return out


def _sumpool(x: np.ndarray, node: nir.SumPool2d) -> np.ndarray:
    k = np.broadcast_to(np.asarray(node.kernel_size).ravel(), 2)
    s = np.broadcast_to(np.asarray(node.stride).ravel(), 2)
    batch, channels, height, width = x.shape
    out_h, out_w = (height - k[0]) // s[0] + 1, (width - k[1]) // s[1] + 1
    out = np.zeros((batch, channels, out_h, out_w), dtype=np.int64)
    for ky in range(k[0]):
        for kx in range(k[1]):
            out += x[:, :, ky : ky + s[0] * (out_h - 1) + 1 : s[0], kx : kx + s[1] * (out_w - 1) + 1 : s[1]]
    return out


def _integer_neurons(name: str, node: nir.NIRNode, quant: QuantConfig, dt: float, reset_mode: str):
    def flat(value):
        return None if value is None else np.asarray(value, dtype=np.float64).ravel()

    if isinstance(node, nir.LIF):
        params = NeuronParameters(
            "lif",
            flat(node.r),
            flat(node.v_leak),
            flat(node.tau),
            None,
            None,
            flat(node.v_threshold),
            flat(node.v_reset),
        )
    elif isinstance(node, nir.LI):
        params = NeuronParameters("li", flat(node.r), flat(node.v_leak), flat(node.tau))
    elif isinstance(node, nir.IF):
        params = NeuronParameters(
            "if", flat(node.r), np.zeros(np.size(node.r)), None, None, None, flat(node.v_threshold), flat(node.v_reset)
        )
    else:
        params = NeuronParameters(
            "cubalif",
            flat(node.r),
            flat(node.v_leak),
            flat(node.tau_mem),
            flat(node.tau_syn),
            flat(node.w_in),
            flat(node.v_threshold),
            flat(node.v_reset),
        )
    return integer_parameters(params, dt, quant, reset_mode, name=name)


@dataclass
class Reference:
    """Delay-free output states ``[T, B, N_out]`` and spikes per neuron node ``[T, B, N]``."""

    states: np.ndarray
    spikes: dict[str, np.ndarray]


def reference_forward(
    graph: nir.NIRGraph,
    inputs: np.ndarray,
    quant: QuantConfig | None = None,
    dt: float = DT,
    reset_mode: str = "to_reset",
) -> Reference:
    """Run a sequential NIR graph on binary ``inputs`` ``[B, T, *input_shape]`` without delays.

    Every layer consumes its source's spikes of the same step, x = spikes @ W^T + bias words,
    and advances with ``ecs_common.neuron.integer_step``, as ecs-train's quantized forward does.
    """
    quant = quant or QuantConfig()
    fmt = quant.weight_format
    order = ["input"]
    successor = dict(graph.edges)
    while order[-1] in successor:
        order.append(successor[order[-1]])
    nodes = [(name, graph.nodes[name]) for name in order[1:-1]]
    params = {
        name: _integer_neurons(name, node, quant, dt, reset_mode)
        for name, node in nodes
        if isinstance(node, (nir.LIF, nir.LI, nir.IF, nir.CubaLIF))
    }
    batch, steps = inputs.shape[:2]
    states = {name: initial_state(p, (batch,)) for name, p in params.items()}
    spikes = {name: [] for name in params}
    outputs = []
    one = int(quantize(1.0, fmt))
    for t in range(steps):
        value = inputs[:, t].astype(np.int64)
        weighted = False
        for name, node in nodes:
            if isinstance(node, nir.Affine):
                value = value.reshape(batch, -1) @ quantize(node.weight, fmt).T + quantize(node.bias, fmt)
                weighted = True
            elif isinstance(node, nir.Linear):
                value = value.reshape(batch, -1) @ quantize(node.weight, fmt).T
                weighted = True
            elif isinstance(node, nir.Conv2d):
                value = _conv2d(value, node, quantize(node.weight, fmt))
                value = value + quantize(node.bias, fmt)[None, :, None, None]
                weighted = True
            elif isinstance(node, nir.SumPool2d):
                value = _sumpool(value, node)
            elif isinstance(node, nir.Flatten):
                value = value.reshape(batch, -1)
            else:
                shape = value.shape
                drive = value.reshape(batch, -1) * (1 if weighted else one)
                states[name], fired = integer_step(params[name], states[name], drive)
                spikes[name].append(fired)
                value = fired.astype(np.int64).reshape(shape)
                weighted = False
                last = name
        outputs.append(states[last].v.copy())
    return Reference(np.stack(outputs), {name: np.stack(values) for name, values in spikes.items()})


def random_inputs(rng: np.random.Generator, batch: int, steps: int, shape: tuple[int, ...], density: float):
    """Return binary inputs ``[B, T, *shape]`` (``uint8``)."""
    return (rng.random((batch, steps, *shape)) < density).astype(np.uint8)
