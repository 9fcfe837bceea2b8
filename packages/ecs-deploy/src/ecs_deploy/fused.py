"""Whole-network simulation: a network flattened for one numba kernel that runs every layer of a sample per step.

The per-layer path of :class:`ecs_deploy.simulator.BatchSimulator` writes
each layer's spike raster ``[B, T, N]`` and reads it again for the next
layer. The whole-network kernel instead advances all layers of one sample
step by step in delay-free time, where every layer consumes its sources'
spikes of the same step (see :mod:`ecs_deploy.model`). Each layer's spikes
of the current step stay in a list of neuron indices, from which the next
layers add weight rows, and as 0/1 flags, from which a narrow target layer
takes one dot product per target neuron instead. No raster is written
unless the caller asks for one. The kernel (``network_serial`` and
``network_parallel``) lives in :mod:`ecs_deploy.kernels` and calls the same
neuron update as the per-layer kernels, so the results agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecs_deploy.kernels import (
    CONNECTION_COLUMNS,
    HAVE_NUMBA,
    INPUT_SOURCE,
    LAYER_COLUMNS,
    LISTED,
    SIZE,
    START,
    LayerArrays,
    fan_in_bound,
    max_abs,
    use_serial,
    word_dtype,
)
from ecs_deploy.model import IntegerNetwork

if HAVE_NUMBA:
    from ecs_deploy.kernels import network_parallel, network_serial

# Widest target layer that sums a connection's input as one dot product per
# target over the source's spike flags rather than one weight row per spike.
# Below it the dot products (sources x targets / SIMD width operations) cost
# less than listing the source's spikes (about one operation per source).
# NOTE: an estimate from that operation count at 16 int32 SIMD lanes, checked
# only on the 8-neuron output layer of benchmarks/bench_deploy_sim.py's 16-1000-8
# network, where the dot products took 29 ms against 45 ms for the whole run.
DENSE_TARGETS_MAX = 16


def _narrow(values: np.ndarray, word: type) -> np.ndarray:
    """Return ``values`` as ``int16`` when every value fits, else as ``word``.

    Half-width weights and parameters halve the bytes that each step reads;
    the kernels widen them to ``word`` as they compute.
    """
    dtype = np.int16 if max_abs(values) < 2**15 else word
    return np.ascontiguousarray(values, dtype=dtype)


@dataclass(frozen=True)
class FusedNetwork:
    """A network's parameters and weights flattened into the arrays that the fused kernel reads.

    ``neuron_table`` stacks every neuron layer's per-neuron table
    (:data:`ecs_deploy.kernels.NEURON_FIELDS`) along the neuron axis, layer
    after layer. ``layer_table`` has one row per neuron layer
    (:data:`LAYER_COLUMNS`), where ``first_step`` is the layer's delay
    ``D_l`` and ``listed`` is 1 when a consumer reads the layer's spikes as
    an index list. ``connections`` lists the feed-forward connections,
    grouped by target layer (:data:`CONNECTION_COLUMNS`). The weight
    matrices lie row-major one after the other: ``[N_source, N_target]`` in
    ``weights``, or ``[N_target, N_source]`` in ``dense_weights`` for a
    ``dense`` connection. A recurrent matrix sits
    in ``weights`` at the layer's ``recurrent_offset`` (-1 without one).
    ``relay_listed`` is true when a consumer reads the input relays' spikes
    as an index list. All words have the dtype ``word``, except weights and
    parameters that fit ``int16``. ``layer_spans`` lists each neuron layer's
    name with its first and past-the-end neuron.
    """

    word: type
    neuron_table: np.ndarray
    layer_table: np.ndarray
    connections: np.ndarray
    weights: np.ndarray
    dense_weights: np.ndarray
    layer_spans: tuple[tuple[str, int, int], ...]
    relay_name: str
    relay_delay: int
    relay_listed: bool
    output_index: int
    output_size: int

    @classmethod
    def from_network(cls, network: IntegerNetwork) -> FusedNetwork:
        """Flatten ``network``; the word is 32 bits when no layer's arithmetic needs more."""
        delays = network.layer_delays()
        names = [layer.name for layer in network.neuron_layers]
        index = {name: position for position, name in enumerate(names)}
        index[network.input_layer.name] = INPUT_SOURCE

        arrays: list[LayerArrays] = []
        rows: list[list[int]] = []
        connections: list[tuple[int, int, int, bool]] = []
        matrices: list[np.ndarray] = []
        dense_matrices: list[np.ndarray] = []
        listed = {name: False for name in index}
        start = offset = dense_offset = 0
        bound = 0
        for layer in network.neuron_layers:
            assert layer.params is not None and layer.bias is not None
            layer_arrays = LayerArrays.from_params(layer.params, layer.bias)
            arrays.append(layer_arrays)

            # Bound on one step's input: |bias| plus every incoming fan-in, recurrent included.
            input_bound = max_abs(layer_arrays.bias)
            first_connection = len(connections)
            recurrent_offset = -1
            for connection in network.incoming(layer.name):
                matrix = connection.weights.to_dense(np.int64).T
                input_bound += fan_in_bound(matrix)
                dense = not connection.recurrent and layer.size <= DENSE_TARGETS_MAX
                listed[connection.source] = listed[connection.source] or not dense
                if dense:
                    connections.append((index[connection.source], dense_offset, matrix.shape[0], True))
                    dense_matrices.append(matrix.T.ravel())
                    dense_offset += matrix.size
                    continue
                if connection.recurrent:
                    recurrent_offset = offset
                else:
                    connections.append((index[connection.source], offset, matrix.shape[0], False))
                matrices.append(matrix.ravel())
                offset += matrix.size
            bound = max(bound, layer_arrays.word_bound(input_bound))

            settings = [int(value) for value in layer_arrays.settings()]
            rows.append(
                [
                    *settings,
                    start,
                    layer.size,
                    delays[layer.name],
                    first_connection,
                    len(connections),
                    recurrent_offset,
                    0,
                ]
            )
            start += layer.size

        spans = tuple((name, row[START], row[START] + row[SIZE]) for name, row in zip(names, rows, strict=True))
        layer_table = np.array(rows, dtype=np.int64).reshape(len(rows), len(LAYER_COLUMNS))
        layer_table[:, LISTED] = [listed[name] for name in names]
        word = word_dtype(bound)
        weights = np.concatenate(matrices) if matrices else np.zeros(0, dtype=np.int64)
        dense_weights = np.concatenate(dense_matrices) if dense_matrices else np.zeros(0, dtype=np.int64)
        return cls(
            word=word,
            neuron_table=_narrow(np.concatenate([a.neuron_table(np.int64) for a in arrays], axis=1), word),
            layer_table=layer_table,
            connections=np.array(connections, dtype=np.int64).reshape(len(connections), len(CONNECTION_COLUMNS)),
            weights=_narrow(weights, word),
            dense_weights=_narrow(dense_weights, word),
            layer_spans=spans,
            relay_name=network.input_layer.name,
            relay_delay=delays[network.input_layer.name],
            relay_listed=listed[network.input_layer.name],
            output_index=index[network.output_layer],
            output_size=network.layer(network.output_layer).size,
        )

    @property
    def num_neurons(self) -> int:
        """Neurons of all neuron layers together."""
        return int(self.neuron_table.shape[1])

    def run(
        self, frames: np.ndarray, num_timesteps: int, record_spikes: bool
    ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """Simulate ``num_timesteps`` accelerator steps of binary ``frames [B, T, N_in]``.

        Returns the output layer's states ``[T_sim, B, N_out]`` (``int64``),
        the spike counts ``[B, N]`` of every layer (the input relays first)
        and, with ``record_spikes``, every layer's raster
        ``bool [T_sim, B, N]``, each in accelerator time like
        :class:`ecs_deploy.simulator.BatchResult`.
        """
        if frames.dtype == np.uint8:
            frames = np.ascontiguousarray(frames)
        else:
            frames = np.ascontiguousarray(frames != 0).view(np.uint8)
        batch, input_steps, num_inputs = frames.shape
        relay_steps = max(min(input_steps, num_timesteps - self.relay_delay), 0)
        if not input_steps:
            # The kernel takes a frame view at every step, used or not.
            frames = np.zeros((batch, 1, num_inputs), dtype=np.uint8)

        # Sample-major, so that each sample writes one contiguous block.
        sample_states = np.zeros((batch, num_timesteps, self.output_size), dtype=np.int64)
        # The relays' counts first, then every neuron layer's.
        counts = np.zeros((batch, num_inputs + self.num_neurons), dtype=np.int64)
        shape = (num_timesteps, batch, self.num_neurons) if record_spikes else (0, 0, 0)
        raster = np.zeros(shape, dtype=np.bool_)

        kernel = network_serial if use_serial(batch) else network_parallel
        kernel(
            frames,
            relay_steps,
            num_timesteps,
            self.relay_listed,
            np.zeros(0, dtype=self.word),
            self.neuron_table,
            self.layer_table,
            self.connections,
            self.weights,
            self.dense_weights,
            self.output_index,
            sample_states,
            counts,
            raster,
        )

        output_states = np.ascontiguousarray(sample_states.transpose(1, 0, 2))
        spike_counts = {self.relay_name: counts[:, :num_inputs]}
        for name, start, stop in self.layer_spans:
            spike_counts[name] = counts[:, num_inputs + start : num_inputs + stop]
        if not record_spikes:
            return output_states, spike_counts, None

        relay_raster = np.zeros((num_timesteps, batch, num_inputs), dtype=np.bool_)
        relay_raster[self.relay_delay : self.relay_delay + relay_steps] = frames[:, :relay_steps].transpose(1, 0, 2)
        rasters = {self.relay_name: relay_raster}
        for name, start, stop in self.layer_spans:
            rasters[name] = raster[:, :, start:stop]
        return output_states, spike_counts, rasters
