"""Bit-accurate simulators of an integer network: a vectorized batch simulator and a step-by-step one.

Both produce the accelerator's timing (see :mod:`ecs_deploy.model`): layer
``l`` at step ``s`` has the delay-free reference state of step ``s - D_l``.

:class:`BatchSimulator` exploits that: it runs without delays and shifts the
result by ``D_l`` at the end. With numba it runs the whole network per
sample in one kernel (:mod:`ecs_deploy.fused`), which adds the weight rows of
the neurons that spiked and never writes a spike raster unless asked to.
Otherwise it runs each layer over all timesteps and the whole batch at once
(:mod:`ecs_deploy.kernels`). There the weighted input of a layer is one
matrix product of the source's spike matrix ``[B * T, N_source]`` with the
integer weight matrix. It runs in float32 where every sum is exact (below
``2**24``), else in float64 or int64. For sparse activity the numba kernel
instead adds the weight rows of the sources that spiked.

:func:`run_steps` is the plain reference: it advances every layer one step at
a time through delay lines with ``ecs_common.neuron.integer_step``, as the
cores do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ecs_common.formats import FixedPointFormat
from ecs_common.neuron import initial_state, integer_step
from ecs_deploy.fused import FusedNetwork
from ecs_deploy.kernels import LayerArrays, resolve_backend, run_layer
from ecs_deploy.model import IntegerNetwork

logger = logging.getLogger(__name__)

# Largest integer up to which every integer is exact in float32 and float64.
FLOAT32_EXACT = 2**24
FLOAT64_EXACT = 2**53

# Source spike density (spikes per source neuron and step) below which the numba
# backend's per-layer path adds weight rows per spike instead of running a dense
# matrix product.
# NOTE: a rough crossover estimate (vectorized adds per spike versus BLAS
# multiply-adds per source), not a measured optimum.
EVENT_DENSITY_MAX = 0.1

# Methods of summing the weighted input:
# - "fused": the whole network per sample in one kernel (numba only);
# - "layers": per layer, weight rows per spike below EVENT_DENSITY_MAX when numba
#   is installed, else a matrix product;
# - "gemm": per layer, a matrix product;
# - "event": per layer, weight rows per spike (numba only);
# - "auto": "fused" with numba, else "gemm".
SYNAPSE_MODES: tuple[str, ...] = ("auto", "fused", "layers", "gemm", "event")


@dataclass
class BatchResult:
    """Output of :meth:`BatchSimulator.run`.

    ``output_states`` contains the output layer's membrane words per step,
    ``[T_sim, B, N_out]`` (``int64``, state format). ``spike_counts`` maps
    every layer, the input relays included, to its spikes per sample and
    neuron over the run (``[B, N]``). ``spikes`` contains, only when requested,
    the full rasters per layer, ``bool [T_sim, B, N]``. ``latency`` is the
    number of steps between an input event and the output state it causes.
    """

    output_states: np.ndarray
    spike_counts: dict[str, np.ndarray]
    spikes: dict[str, np.ndarray] | None
    latency: int
    state_format: FixedPointFormat
    output_layer: str

    @property
    def num_timesteps(self) -> int:
        """Number of simulated steps ``T_sim``."""
        return int(self.output_states.shape[0])

    def output_values(self) -> np.ndarray:
        """Return the output states as real values in state units (``float64``, words times the LSB)."""
        return self.output_states * self.state_format.lsb


def _exactness_dtype(bound: int) -> type:
    """Return the cheapest matrix-product dtype whose sums stay exact below ``bound``."""
    if bound < FLOAT32_EXACT:
        return np.float32
    if bound < FLOAT64_EXACT:
        return np.float64
    return np.int64


class BatchSimulator:
    """Vectorized simulator of an integer network, prepared once and run on many batches.

    ``backend`` selects the neuron-update kernel: ``"numba"``, ``"numpy"``
    or ``"auto"`` (numba when installed). ``synapse_mode`` selects how the
    weighted input is summed (see :data:`SYNAPSE_MODES`); the fused mode
    needs numba (and raises without it), and the event-driven mode needs
    numba and applies to layers with one feed-forward source. Dense weight matrices are built once
    per network; a convolution layer's matrix is as large as its targets
    times its sources.

    NOTE: ``"auto"`` picks the fused kernel whenever numba is installed. On
    ``benchmarks/bench_deploy_sim.py``'s networks it was the fastest mode at
    input densities from 5 % to 50 %, but on a 256-512-512 network at 50 %
    input density the per-layer ``"layers"`` mode took 0.82x its time
    (one thread), so dense activity in wide layers may favor ``"layers"``.
    """

    def __init__(self, network: IntegerNetwork, backend: str = "auto", synapse_mode: str = "auto") -> None:
        if synapse_mode not in SYNAPSE_MODES:
            raise ValueError(f"unknown synapse_mode {synapse_mode!r}; expected one of {', '.join(SYNAPSE_MODES)}")
        self.network = network
        self.backend = resolve_backend(backend)
        if synapse_mode == "auto":
            synapse_mode = "fused" if self.backend == "numba" else "gemm"
        if synapse_mode == "fused" and self.backend != "numba":
            raise ValueError("synapse_mode 'fused' needs the numba backend; install ecs-deploy[fast]")
        self.synapse_mode = synapse_mode
        self._fused: FusedNetwork | None = None
        self._event_weights: dict[str, np.ndarray] = {}
        self.delays = network.layer_delays()
        self.latency = self.delays[network.output_layer]
        self.arrays: dict[str, LayerArrays] = {}
        self.feedforward: dict[str, list[tuple[str, np.ndarray]]] = {}
        self.recurrent: dict[str, np.ndarray | None] = {}
        self.dtypes: dict[str, type] = {}
        self.input_bounds: dict[str, int] = {}

        for layer in network.neuron_layers:
            assert layer.params is not None and layer.bias is not None
            self.arrays[layer.name] = LayerArrays.from_params(layer.params, layer.bias)
            incoming = network.incoming(layer.name)

            # Bound on |input| of one step: sum of |w| over each target's fan-in, all sources at once.
            bound = np.zeros(layer.size, dtype=np.float64)
            for connection in incoming:
                if not connection.recurrent and connection.weights.nnz:
                    weights = connection.weights
                    bound += np.bincount(weights.target, weights=np.abs(weights.weight), minlength=layer.size)
            self.input_bounds[layer.name] = int(bound.max()) if bound.size else 0
            dtype = _exactness_dtype(self.input_bounds[layer.name])
            self.dtypes[layer.name] = dtype
            if dtype is not np.float32:
                logger.info(
                    "layer %r: input sums may reach %d, so its matrix products run in %s",
                    layer.name,
                    int(bound.max()),
                    np.dtype(dtype).name,
                )

            # Only the per-layer path reads these matrices; the fused kernel keeps its own.
            if self.synapse_mode == "fused":
                continue
            self.feedforward[layer.name] = [
                (c.source, np.ascontiguousarray(c.weights.to_dense(dtype).T)) for c in incoming if not c.recurrent
            ]
            recurrent = [c for c in incoming if c.recurrent]
            self.recurrent[layer.name] = recurrent[0].weights.to_dense(np.int64).T.copy() if recurrent else None

    @property
    def fused(self) -> FusedNetwork:
        """The network flattened for the fused kernel, built on first use."""
        if self._fused is None:
            self._fused = FusedNetwork.from_network(self.network)
        return self._fused

    def _use_events(self, name: str, density: float) -> bool:
        """Return whether layer ``name`` sums its input per spike rather than by a matrix product."""
        if self.backend != "numba" or len(self.feedforward[name]) != 1 or self.synapse_mode == "gemm":
            return False
        return self.synapse_mode == "event" or density < EVENT_DENSITY_MAX

    def _integer_weights(self, name: str) -> np.ndarray:
        """Return the ``[N_source, N]`` integer matrix of layer ``name``'s one feed-forward source."""
        if name not in self._event_weights:
            connection = next(c for c in self.network.incoming(name) if not c.recurrent)
            largest = int(np.abs(connection.weights.weight).max()) if connection.weights.nnz else 0
            dtype = np.int32 if largest < 2**31 else np.int64
            self._event_weights[name] = np.ascontiguousarray(connection.weights.to_dense(dtype).T)
        return self._event_weights[name]

    def _layer_input(self, name: str, spikes: dict[str, np.ndarray], n_steps: int) -> np.ndarray:
        """Return the weighted input ``[B, T_x, N]`` of layer ``name``, with ``T_x >= n_steps`` where available."""
        dtype = self.dtypes[name]
        products = []
        for source, weights in self.feedforward[name]:
            source_spikes = spikes[source]
            batch, steps, width = source_spikes.shape
            if source_spikes.dtype != dtype:
                source_spikes = source_spikes.astype(dtype)
            product = source_spikes.reshape(batch * steps, width) @ weights
            products.append(product.reshape(batch, steps, weights.shape[1]))
        if len(products) == 1:
            return products[0]

        # Several sources: add them up over the steps that any of them covers.
        length = min(max(product.shape[1] for product in products), n_steps)
        total = np.zeros((products[0].shape[0], length, products[0].shape[2]), dtype=dtype)
        for product in products:
            covered = min(product.shape[1], length)
            total[:, :covered] += product[:, :covered]
        return total

    def run(self, inputs: np.ndarray, num_timesteps: int, *, record_spikes: bool = False) -> BatchResult:
        """Simulate ``num_timesteps`` accelerator steps for a batch of binary inputs ``[B, T, N_in]``.

        ``inputs`` must hold 0/1 values (the caller checks). ``uint8`` input
        avoids a conversion in the fused mode, ``float32`` input in the others.
        """
        network = self.network
        if self.synapse_mode == "fused":
            output_states, counts, rasters = self.fused.run(inputs, num_timesteps, record_spikes)
            return BatchResult(
                output_states=output_states,
                spike_counts=counts,
                spikes=rasters,
                latency=self.latency,
                state_format=network.quant.state_format,
                output_layer=network.output_layer,
            )

        batch, input_steps, _ = inputs.shape
        relay = network.input_layer.name

        # The relays forward input step t at step t + 1; later steps see no input.
        relay_steps = max(min(input_steps, num_timesteps - self.delays[relay]), 0)
        spikes: dict[str, np.ndarray] = {relay: inputs[:, :relay_steps] if relay_steps < input_steps else inputs}
        # Narrow accumulators are exact here (counts stay below the number of steps) and faster.
        narrow = np.int32 if inputs.dtype.kind in "biu" else np.float32
        counts = {relay: spikes[relay].sum(axis=1, dtype=narrow).astype(np.int64)}
        states = None

        for layer in network.neuron_layers:
            n_steps = max(num_timesteps - self.delays[layer.name], 0)
            is_output = layer.name == network.output_layer
            source_name = self.feedforward[layer.name][0][0]
            source_spikes = spikes[source_name]
            density = counts[source_name].sum() / max(source_spikes.size, 1)
            if self._use_events(layer.name, density):
                inputs_of_layer = {"x": None, "source": source_spikes, "weights": self._integer_weights(layer.name)}
            else:
                inputs_of_layer = {"x": self._layer_input(layer.name, spikes, n_steps)}
            layer_spikes, layer_states, layer_counts = run_layer(
                n_steps=n_steps,
                params=self.arrays[layer.name],
                recurrent=self.recurrent[layer.name],
                record_states=is_output,
                backend=self.backend,
                input_bound=self.input_bounds[layer.name],
                **inputs_of_layer,
            )
            spikes[layer.name] = layer_spikes
            counts[layer.name] = layer_counts
            if is_output:
                states = layer_states

        assert states is not None
        output = network.layer(network.output_layer)
        output_states = np.zeros((num_timesteps, batch, output.size), dtype=np.int64)
        start = self.delays[output.name]
        output_states[start : start + states.shape[1]] = states.transpose(1, 0, 2)

        rasters = None
        if record_spikes:
            rasters = {}
            for name, layer_spikes in spikes.items():
                raster = np.zeros((num_timesteps, batch, layer_spikes.shape[2]), dtype=bool)
                start = self.delays[name]
                steps = min(layer_spikes.shape[1], num_timesteps - start)
                if steps > 0:
                    raster[start : start + steps] = layer_spikes[:, :steps].transpose(1, 0, 2) != 0
                rasters[name] = raster

        return BatchResult(
            output_states=output_states,
            spike_counts=counts,
            spikes=rasters,
            latency=self.latency,
            state_format=network.quant.state_format,
            output_layer=network.output_layer,
        )


def run_steps(
    network: IntegerNetwork, inputs: np.ndarray, num_timesteps: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Advance the network one accelerator step at a time, the way the cores do.

    ``inputs`` contains binary input frames ``[T, B, N_in]``. Every spike waits
    in a delay line for its connection's delay; a layer updates from step
    ``D_l`` on. Returns the output states ``[T_sim, B, N_out]`` (``int64``) and
    every layer's spikes (``bool [T_sim, B, N]``).
    """
    input_steps, batch, _ = inputs.shape
    delays = network.layer_delays()
    relay = network.input_layer.name
    history = {layer.name: np.zeros((num_timesteps, batch, layer.size), dtype=bool) for layer in network.layers}
    states = {layer.name: initial_state(layer.params, (batch,)) for layer in network.neuron_layers if layer.params}
    weights = {id(connection): connection.weights.to_dense(np.int64).T.copy() for connection in network.connections}
    output = network.layer(network.output_layer)
    output_states = np.zeros((num_timesteps, batch, output.size), dtype=np.int64)

    for step in range(num_timesteps):
        source_step = step - delays[relay]
        if 0 <= source_step < input_steps:
            history[relay][step] = inputs[source_step] != 0

        for layer in network.neuron_layers:
            if step < delays[layer.name]:
                continue
            assert layer.params is not None and layer.bias is not None
            drive = np.broadcast_to(layer.bias, (batch, layer.size)).astype(np.int64)
            for connection in network.incoming(layer.name):
                sent = step - network.connection_delay(connection)
                if sent >= 0:
                    drive = drive + history[connection.source][sent].astype(np.int64) @ weights[id(connection)]
            states[layer.name], fired = integer_step(layer.params, states[layer.name], drive)
            history[layer.name][step] = fired
            if layer.name == output.name:
                output_states[step] = states[layer.name].v

    return output_states, history


__all__ = ["BatchResult", "BatchSimulator", "run_steps", "resolve_backend"]
