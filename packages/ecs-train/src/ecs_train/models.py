"""Spiking networks built from norse cells: layer construction, the time loop and the readout."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from norse.torch import IAFCell, LIBoxCell, LIFBoxCell, LIFCell
from norse.torch.functional.iaf import IAFFeedForwardState, IAFParameters
from norse.torch.functional.leaky_integrator_box import LIBoxParameters, LIBoxState
from norse.torch.functional.lif import LIFFeedForwardState, LIFParameters
from norse.torch.functional.lif_box import LIFBoxFeedForwardState, LIFBoxParameters
from norse.torch.functional.reset import reset_subtract, reset_value
from torch import nn

from ecs_common.errors import ConfigError
from ecs_common.neuron import ResetMode, network_latency
from ecs_train.quantization import QuantizedNeuron, float_forward, is_neuron, is_quantized, neuron_kind

logger = logging.getLogger(__name__)

READOUTS = ("last", "max", "mean")


class SumPool2d(nn.Module):
    """Sum pooling over non-overlapping ``kernel_size`` windows (NIR SumPool2d).

    Spike counts stay integers, so quantized layers after it sum exactly.
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.stride = int(kernel_size)

    @property
    def window_size(self) -> int:
        """Inputs summed into one output (``kernel_size**2``)."""
        return self.kernel_size * self.kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, divisor_override=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class NetworkRecord(NamedTuple):
    """Everything one run of a network over time produces.

    ``states``: output LI membrane states in NIR units, ``[T, B, classes]``.
    ``spikes``: spikes of each firing layer, ``[T, B, *layer_shape]``, when recorded.
    ``words``: output states as int64 state-format words when the model is quantized, else ``None``.
    """

    states: torch.Tensor
    spikes: list[torch.Tensor]
    words: torch.Tensor | None


def readout(states: torch.Tensor, mode: str) -> torch.Tensor:
    """Turn output states ``[T, B, classes]`` into class scores ``[B, classes]``.

    ``"last"`` takes the state after the last timestep, ``"max"`` the maximum
    over time and ``"mean"`` the mean over time.
    """
    if mode == "last":
        return states[-1]
    if mode == "max":
        return states.max(dim=0).values
    if mode == "mean":
        return states.mean(dim=0)
    raise ConfigError(f"invalid readout {mode!r}; expected one of {', '.join(READOUTS)}")


def _zero_state(cell: nn.Module, x: torch.Tensor) -> Any:
    # Every layer starts at zero, as ecs_common.neuron.initial_state and the
    # accelerator do (norse cells would otherwise start at v_leak).
    zeros = torch.zeros_like(x)
    if isinstance(cell, LIFBoxCell):
        return LIFBoxFeedForwardState(v=zeros)
    if isinstance(cell, LIFCell):
        return LIFFeedForwardState(v=zeros, i=zeros.clone())
    if isinstance(cell, IAFCell):
        return IAFFeedForwardState(v=zeros)
    if isinstance(cell, LIBoxCell):
        return LIBoxState(v=zeros)
    return None


class SpikingNetwork(nn.Module):
    """A feed-forward spiking network run layer by layer over time.

    ``layers`` alternates stateless modules (Flatten, Linear, Conv2d,
    SumPool2d) with neuron layers (norse cells, or :class:`QuantizedNeuron`
    after ``quantize_model``); the last neuron layer is LI. ``layer_shapes``
    holds each layer's output shape without the batch dimension. Input is
    ``[B, T, *input_shape]`` binary events; every layer consumes the spikes
    its source emitted at the same timestep.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        input_shape: Sequence[int],
        num_classes: int,
        dt: float,
        readout: str = "last",
        reset_mode: ResetMode = "to_reset",
    ) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ConfigError(f"invalid readout {readout!r}; expected one of {', '.join(READOUTS)}")
        self.layers = nn.ModuleList(layers)
        self.input_shape = tuple(int(size) for size in input_shape)
        self.num_classes = int(num_classes)
        self.dt = float(dt)
        self.readout_mode = readout
        self.reset_mode = reset_mode
        self.quant_cfg: Any = None
        self.layer_shapes = self._infer_shapes()
        if self.layer_shapes[-1] != (self.num_classes,):
            raise ConfigError(
                f"the last layer has shape {self.layer_shapes[-1]}, expected ({self.num_classes},) for "
                f"{self.num_classes} classes"
            )

    def _infer_shapes(self) -> list[tuple[int, ...]]:
        shapes = []
        h = torch.zeros((1, *self.input_shape))
        with torch.no_grad():
            for layer in self.layers:
                if not is_neuron(layer):
                    h = layer(h)
                shapes.append(tuple(h.shape[1:]))
        return shapes

    @property
    def quantized(self) -> bool:
        """Return whether the network runs the quantized integer forward."""
        return is_quantized(self)

    def neuron_layers(self) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
        """Return ``(name, module, shape)`` of every neuron layer, input to output."""
        return [
            (f"layers.{index}", layer, self.layer_shapes[index])
            for index, layer in enumerate(self.layers)
            if is_neuron(layer)
        ]

    def neuron_kinds(self) -> list[str]:
        """Return the NIR kind of every neuron layer ("lif", "cubalif", "if", "li"), input to output."""
        return [neuron_kind(layer) for _, layer, _ in self.neuron_layers()]

    def latency(self) -> int:
        """Return the timesteps the accelerator needs between an input event and the output it causes."""
        return network_latency(self.neuron_kinds())

    @contextmanager
    def float_forward(self) -> Iterator[SpikingNetwork]:
        """Run the float forward inside the ``with`` block even when the model is quantized."""
        with float_forward(self):
            yield self

    def _check_input(self, x: torch.Tensor) -> None:
        expected = len(self.input_shape) + 2
        if x.dim() != expected or tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not match [batch, time, {', '.join(map(str, self.input_shape))}]"
            )

    def run(self, x: torch.Tensor, record_spikes: bool = False) -> NetworkRecord:
        """Run the network over all timesteps of ``x`` (``[B, T, *input_shape]``)."""
        self._check_input(x)
        h = x.transpose(0, 1)
        steps, batch = h.shape[0], h.shape[1]
        spikes: list[torch.Tensor] = []
        words: torch.Tensor | None = None
        last_index = len(self.layers) - 1

        for index, layer in enumerate(self.layers):
            if not is_neuron(layer):
                # Stateless layers see all timesteps at once, as one large batch.
                flat = layer(h.reshape(steps * batch, *h.shape[2:]))
                h = flat.reshape(steps, batch, *flat.shape[1:])
                continue

            if isinstance(layer, QuantizedNeuron) and layer.quantized:
                h, layer_states = layer.run_sequence(h)
                if index != last_index and record_spikes:
                    spikes.append(h)
                if index == last_index:
                    words = layer_states.to(torch.int64)
                continue

            cell = layer.cell if isinstance(layer, QuantizedNeuron) else layer
            state = _zero_state(cell, h[0])
            outputs = []
            for step in range(steps):
                output, state = layer(h[step], state)
                outputs.append(output)
            h = torch.stack(outputs)
            if index != last_index and record_spikes:
                spikes.append(h)

        return NetworkRecord(states=h, spikes=spikes, words=words)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the output LI states ``[T, B, classes]`` in NIR units for input ``[B, T, *input_shape]``."""
        return self.run(x).states

    def scores(self, states: torch.Tensor) -> torch.Tensor:
        """Return class scores ``[B, classes]`` from output states with the configured readout."""
        return readout(states, self.readout_mode)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, dt={self.dt}, readout={self.readout_mode!r}"


def _tensor(value: float) -> torch.Tensor:
    return torch.as_tensor(float(value))


def make_hidden_cell(network_cfg: Any) -> nn.Module:
    """Build the norse cell of a hidden layer from a network config (NIR terms, seconds)."""
    cfg = network_cfg
    kind = cfg.neuron_type
    if kind == "lif":
        parameters = LIFBoxParameters(
            tau_mem_inv=_tensor(1.0 / cfg.tau_mem),
            v_leak=_tensor(cfg.v_leak),
            v_th=_tensor(cfg.v_threshold),
            v_reset=_tensor(cfg.v_reset),
            method=cfg.surrogate,
            alpha=_tensor(cfg.surrogate_alpha),
            reset_method=reset_subtract if cfg.reset_mode == "subtract" else reset_value,
        )
        return LIFBoxCell(parameters, dt=cfg.dt)

    if cfg.reset_mode != "to_reset":
        raise ConfigError(
            f"reset_mode {cfg.reset_mode!r} is not available for neuron_type {kind!r}, because norse 1.1.0's "
            "LIFCell and IAFCell reset to v_reset; use neuron_type 'lif' or reset_mode 'to_reset'"
        )
    if kind == "cubalif":
        parameters = LIFParameters(
            tau_syn_inv=_tensor(1.0 / cfg.tau_syn),
            tau_mem_inv=_tensor(1.0 / cfg.tau_mem),
            v_leak=_tensor(cfg.v_leak),
            v_th=_tensor(cfg.v_threshold),
            v_reset=_tensor(cfg.v_reset),
            method=cfg.surrogate,
            alpha=_tensor(cfg.surrogate_alpha),
        )
        return LIFCell(parameters, dt=cfg.dt)
    if kind == "if":
        parameters = IAFParameters(
            v_th=_tensor(cfg.v_threshold),
            v_reset=_tensor(cfg.v_reset),
            method=cfg.surrogate,
            alpha=_tensor(cfg.surrogate_alpha),
        )
        return IAFCell(parameters, dt=cfg.dt)
    raise ConfigError(f"invalid neuron_type {kind!r}; expected one of lif, cubalif, if")


def make_output_cell(network_cfg: Any) -> nn.Module:
    """Build the LI output cell (norse ``LIBoxCell``) from a network config."""
    tau = network_cfg.output_tau_mem or network_cfg.tau_mem
    parameters = LIBoxParameters(tau_mem_inv=_tensor(1.0 / tau), v_leak=_tensor(network_cfg.v_leak))
    return LIBoxCell(parameters, dt=network_cfg.dt)


def _linear(in_features: int, out_features: int, init_gain: float) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=False)
    if init_gain != 1.0:
        with torch.no_grad():
            layer.weight.mul_(init_gain)
    return layer


def _conv_layers(network_cfg: Any, input_shape: tuple[int, ...]) -> tuple[list[nn.Module], tuple[int, ...]]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"architecture 'conv' needs input of shape [channels, height, width], got {list(input_shape)}"
        )
    layers: list[nn.Module] = []
    channels, height, width = input_shape
    kernel = network_cfg.kernel_size
    for out_channels in network_cfg.conv_channels:
        conv = nn.Conv2d(channels, out_channels, kernel, padding=kernel // 2, bias=False)
        if network_cfg.init_gain != 1.0:
            with torch.no_grad():
                conv.weight.mul_(network_cfg.init_gain)
        layers += [conv, make_hidden_cell(network_cfg)]
        channels = out_channels
        if network_cfg.pool_size > 1:
            layers.append(SumPool2d(network_cfg.pool_size))
            height //= network_cfg.pool_size
            width //= network_cfg.pool_size
        if height < 1 or width < 1:
            raise ConfigError(
                f"pool_size {network_cfg.pool_size} shrinks the input {list(input_shape)} to nothing after "
                f"{len(network_cfg.conv_channels)} conv layers; use fewer conv layers or a smaller pool_size"
            )
    return layers, (channels, height, width)


def build_model(network_cfg: Any, input_shape: Sequence[int], num_classes: int) -> SpikingNetwork:
    """Build the float network described by ``network_cfg`` (``ecs_train.config.NetworkConfig``).

    ``"feed_forward"``: Flatten, then Linear (no bias) and a hidden neuron layer
    per entry of ``hidden_sizes``, then Linear and an LI output layer.
    ``"conv"``: Conv2d (no bias, same padding), a neuron layer and optional
    SumPool2d per entry of ``conv_channels``, then as ``"feed_forward"``.
    """
    input_shape = tuple(int(size) for size in input_shape)
    layers: list[nn.Module] = []
    shape = input_shape

    if network_cfg.architecture == "conv":
        layers, shape = _conv_layers(network_cfg, input_shape)
    elif network_cfg.architecture != "feed_forward":
        raise ConfigError(f"invalid architecture {network_cfg.architecture!r}; expected 'feed_forward' or 'conv'")

    if len(shape) > 1:
        layers.append(nn.Flatten())
    features = math.prod(shape)
    for size in network_cfg.hidden_sizes:
        layers += [_linear(features, size, network_cfg.init_gain), make_hidden_cell(network_cfg)]
        features = size
    layers += [_linear(features, num_classes, network_cfg.init_gain), make_output_cell(network_cfg)]

    model = SpikingNetwork(
        layers,
        input_shape,
        num_classes,
        dt=network_cfg.dt,
        readout=network_cfg.readout,
        reset_mode=network_cfg.reset_mode,
    )
    logger.debug("built %s network with %d layers: %s", network_cfg.architecture, len(layers), model.layer_shapes)
    return model
