"""Integer network that the accelerator runs: relay and neuron layers joined by integer synapse matrices.

Timing: input events of step ``t`` leave the input relays at step ``t + 1``
(the core pipeline), and each neuron layer adds its ``LAYER_LATENCY`` on top
of its latest source. So layer ``l`` runs ``D_l`` steps behind the input,
where ``D_input = 1`` and ``D_l = max(D_source) + LAYER_LATENCY[kind]``; for a
chain of layers the output's ``D`` is ``ecs_common.neuron.network_latency``.
A connection from layer ``s`` to layer ``l`` therefore delivers spikes
``D_l - D_s`` steps after they were emitted, and a recurrent connection (a
layer onto itself) one step after. A layer starts updating at step ``D_l``,
when its first input can arrive, and keeps its all-zero initial state before.
With these rules the state of layer ``l`` at step ``s`` equals the delay-free
reference (ecs-train's quantized forward) at step ``s - D_l``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_common.neuron import LAYER_LATENCY, PIPELINE_LATENCY, IntegerNeuronParameters
from ecs_common.placement import Connection, LayerSpec, SparseWeights
from ecs_deploy.errors import GraphError

logger = logging.getLogger(__name__)

RELAY = "relay"
LAYER_KINDS: tuple[str, ...] = (RELAY, "lif", "li", "if", "cubalif")


@dataclass(frozen=True)
class SynapseMatrix:
    """Integer weights of one connection in coordinate format, ``shape = (targets, sources)``.

    :meth:`from_coordinates` and :meth:`from_dense` merge repeated
    ``(target, source)`` pairs and drop zero weights. Weights are exact integer sums in weight-format LSBs and
    may exceed the weight word range where pooling adds several weights up;
    :meth:`split_to_format` turns such entries into several synapses.
    """

    target: np.ndarray
    source: np.ndarray
    weight: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def from_coordinates(
        cls, target: np.ndarray, source: np.ndarray, weight: np.ndarray, shape: tuple[int, int]
    ) -> SynapseMatrix:
        """Build a matrix from entries that may repeat a pair (their weights add up) or be zero."""
        target = np.asarray(target, dtype=np.int64).ravel()
        source = np.asarray(source, dtype=np.int64).ravel()
        weight = np.asarray(weight, dtype=np.int64).ravel()
        shape = (int(shape[0]), int(shape[1]))
        if target.size:
            key = target * shape[1] + source
            order = np.argsort(key, kind="stable")
            key, weight = key[order], weight[order]
            first = np.ones(key.size, dtype=bool)
            first[1:] = key[1:] != key[:-1]
            starts = np.flatnonzero(first)
            weight = np.add.reduceat(weight, starts)
            key = key[starts]
            keep = weight != 0
            key, weight = key[keep], weight[keep]
            target, source = key // shape[1], key % shape[1]
        return cls(target=target, source=source, weight=weight, shape=shape)

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> SynapseMatrix:
        """Build a matrix from a dense integer array shaped ``(targets, sources)``."""
        dense = np.asarray(dense)
        target, source = np.nonzero(dense)
        return cls.from_coordinates(target, source, dense[target, source], dense.shape)

    @property
    def nnz(self) -> int:
        """Number of nonzero weights."""
        return int(self.weight.size)

    def to_dense(self, dtype: Any = np.int64) -> np.ndarray:
        """Return the dense ``(targets, sources)`` array."""
        dense = np.zeros(self.shape, dtype=dtype)
        dense[self.target, self.source] = self.weight
        return dense

    def max_input(self) -> int:
        """Return the largest ``sum |w|`` over the fan-in of one target: a bound on one step's input."""
        if not self.nnz:
            return 0
        return int(np.bincount(self.target, weights=np.abs(self.weight), minlength=self.shape[0]).max())

    def split_to_format(self, fmt: FixedPointFormat) -> list[SynapseMatrix]:
        """Split into matrices whose weights all fit ``fmt``, summing to this matrix.

        An entry beyond the word range becomes several synapses: full-scale
        words plus the remainder. Most matrices fit already and come back as
        the one part.
        """
        magnitude = np.where(self.weight > 0, fmt.max_int, -fmt.min_int)
        pieces = -(-np.abs(self.weight) // magnitude)
        if not self.nnz or pieces.max() == 1:
            return [self]
        parts = []
        remaining = self.weight.copy()
        for index in range(int(pieces.max())):
            active = pieces > index
            value = np.where(
                pieces[active] > index + 1, np.sign(remaining[active]) * magnitude[active], remaining[active]
            )
            remaining[active] -= value
            parts.append(SynapseMatrix(self.target[active], self.source[active], value, self.shape))
        return parts


@dataclass
class IntegerLayer:
    """One population: input relays, or neurons with integer parameters and bias words.

    ``shape`` is the population's shape in the NIR graph (for example
    ``(C, H, W)``); neurons are numbered in C order. ``bias`` contains the
    state-format words added to every neuron's input at every step.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    params: IntegerNeuronParameters | None = None
    bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise GraphError(f"layer {self.name!r} has unknown kind {self.kind!r}; expected one of {LAYER_KINDS}")
        if self.kind != RELAY and self.params is None:
            raise GraphError(f"neuron layer {self.name!r} has no integer parameters")
        if self.bias is None:
            self.bias = np.zeros(self.size, dtype=np.int64)

    @property
    def size(self) -> int:
        """Number of neurons (or relays)."""
        # math.prod, not np.prod: the simulators read the size on every call, and np.prod costs microseconds.
        return math.prod(int(extent) for extent in self.shape)

    @property
    def fires(self) -> bool:
        """Whether the layer emits spikes (relays and every neuron kind except LI)."""
        return self.kind != "li"


@dataclass
class IntegerConnection:
    """Synapses from every neuron of ``source`` to neurons of ``target`` (weights in weight LSBs)."""

    source: str
    target: str
    weights: SynapseMatrix

    @property
    def recurrent(self) -> bool:
        """Whether the connection feeds a layer's spikes back into the same layer."""
        return self.source == self.target


@dataclass
class IntegerNetwork:
    """Everything the accelerator needs to run a network, in integer words.

    ``layers`` starts with the one input relay layer and lists every layer
    after all of its sources. ``assumptions`` maps each setting that the NIR
    file did not carry to the value used in its place, and
    ``saturated_weights`` counts the weights and biases per node that
    saturated to the weight format.
    """

    input_shape: tuple[int, ...]
    layers: list[IntegerLayer]
    connections: list[IntegerConnection]
    output_layer: str
    hardware: HardwareConfig
    quant: QuantConfig
    dt: float
    reset_mode: str = "to_reset"
    readout: str = "last"
    assumptions: dict[str, Any] = field(default_factory=dict)
    saturated_weights: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the structure: one input layer first, sources before targets, matching shapes."""
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise GraphError(f"layer names must be unique, got {names}")
        if not self.layers or self.layers[0].kind != RELAY:
            raise GraphError("the first layer must be the input relay layer")
        relays = [layer.name for layer in self.layers if layer.kind == RELAY]
        if len(relays) != 1:
            raise GraphError(f"the network needs exactly one input layer, got {len(relays)}: {relays}")
        if self.layers[0].size != int(np.prod(self.input_shape, dtype=np.int64)):
            raise GraphError(f"input layer has {self.layers[0].size} relays but input shape {self.input_shape}")
        if self.output_layer not in names:
            raise GraphError(f"output layer {self.output_layer!r} is not one of the layers {names}")

        position = {name: index for index, name in enumerate(names)}
        sizes = {layer.name: layer.size for layer in self.layers}
        for connection in self.connections:
            for end in (connection.source, connection.target):
                if end not in position:
                    raise GraphError(
                        f"connection {connection.source!r} -> {connection.target!r}: unknown layer {end!r}"
                    )
            if self.layer(connection.target).kind == RELAY:
                raise GraphError(f"connection {connection.source!r} -> {connection.target!r}: relays take no synapses")
            if position[connection.source] > position[connection.target]:
                raise GraphError(
                    f"connection {connection.source!r} -> {connection.target!r} feeds back to an earlier layer; "
                    "only recurrent connections of a layer onto itself are supported"
                )
            expected = (sizes[connection.target], sizes[connection.source])
            if connection.weights.shape != expected:
                raise GraphError(
                    f"connection {connection.source!r} -> {connection.target!r} has weights of shape "
                    f"{connection.weights.shape}, expected {expected} (targets, sources)"
                )
        for layer in self.layers[1:]:
            if not any(c.target == layer.name and not c.recurrent for c in self.connections):
                raise GraphError(f"neuron layer {layer.name!r} has no incoming connection")

    def layer(self, name: str) -> IntegerLayer:
        """Return the layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers: {[layer.name for layer in self.layers]}")

    def incoming(self, name: str) -> list[IntegerConnection]:
        """Return the connections into layer ``name``, recurrent ones included."""
        return [connection for connection in self.connections if connection.target == name]

    @property
    def input_layer(self) -> IntegerLayer:
        """The input relay layer."""
        return self.layers[0]

    @property
    def neuron_layers(self) -> list[IntegerLayer]:
        """Every layer but the input relays, in order."""
        return self.layers[1:]

    def layer_delays(self) -> dict[str, int]:
        """Return ``D_l`` per layer: the steps between an input event and layer ``l`` using it."""
        delays = {self.layers[0].name: PIPELINE_LATENCY}
        for layer in self.neuron_layers:
            sources = [delays[c.source] for c in self.incoming(layer.name) if not c.recurrent]
            delays[layer.name] = max(sources) + LAYER_LATENCY[layer.kind]
        return delays

    def connection_delay(self, connection: IntegerConnection) -> int:
        """Return the steps between a source spike and its arrival through ``connection``."""
        if connection.recurrent:
            return 1
        delays = self.layer_delays()
        return delays[connection.target] - delays[connection.source]

    @property
    def latency(self) -> int:
        """Steps between an input event and the output state it causes."""
        return self.layer_delays()[self.output_layer]

    def layer_specs(self) -> list[LayerSpec]:
        """Return the placement input: every layer with the synapses it stores, one per weight word."""
        fmt = self.quant.weight_format
        specs = []
        for layer in self.layers:
            incoming = []
            for connection in self.incoming(layer.name):
                for part in connection.weights.split_to_format(fmt):
                    weights = SparseWeights(part.target, part.source, part.weight, part.shape)
                    incoming.append(Connection(connection.source, weights))
            specs.append(LayerSpec(layer.name, layer.size, tuple(incoming)))
        return specs
