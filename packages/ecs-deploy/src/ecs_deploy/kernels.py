"""Neuron-update loops over time: numba kernels for one layer or a whole network, and a numpy twin.

The per-layer kernels run ``ecs_common.neuron.integer_step``'s arithmetic
for one layer over all timesteps of a batch, given the layer's weighted
input per step or the source spikes with their weights. The whole-network
kernel (``network_serial``, ``network_parallel``) runs every layer of a
sample per step on the arrays of :class:`ecs_deploy.fused.FusedNetwork`.
All are tested to agree bit for bit with each other and with
``integer_step``. The numba kernels compute in 32-bit words when
:meth:`LayerArrays.word_bound` shows that no intermediate value needs more,
which doubles the SIMD width, and in 64 bits otherwise.

Every numba function that calls the helpers below lives in this file:
numba's on-disk cache recompiles a function only when its own source file
changes, so a caller in another module would keep running an old helper.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecs_common.neuron import IntegerNeuronParameters

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "numba", "numpy")

# Rows of the per-neuron table that the numba kernels read (LayerArrays.neuron_table).
NEURON_FIELDS: tuple[str, ...] = ("k_mem", "k_syn", "v_leak", "v_threshold", "v_reset", "bias")
K_MEM, K_SYN, V_LEAK, V_THRESHOLD, V_RESET, BIAS = range(len(NEURON_FIELDS))

# Columns of a layer's settings row (LayerArrays.settings).
LAYER_SETTINGS: tuple[str, ...] = ("decay_fl", "state_min", "state_max", "cubalif", "fires", "subtract")
DECAY_FL, STATE_MIN, STATE_MAX, CUBALIF, FIRES, SUBTRACT = range(len(LAYER_SETTINGS))

# Columns of the whole-network layer table (ecs_deploy.fused.FusedNetwork): a layer's
# settings row, then these.
LAYER_COLUMNS: tuple[str, ...] = (
    *LAYER_SETTINGS,
    "start",
    "size",
    "first_step",
    "connection_start",
    "connection_stop",
    "recurrent_offset",
    "listed",
)
START, SIZE, FIRST_STEP, CONNECTION_START, CONNECTION_STOP, RECURRENT_OFFSET, LISTED = range(
    len(LAYER_SETTINGS), len(LAYER_COLUMNS)
)

# Columns of the connection table. A source of -1 is the input relay layer.
CONNECTION_COLUMNS: tuple[str, ...] = ("source", "weight_offset", "source_size", "dense")
SOURCE, WEIGHT_OFFSET, SOURCE_SIZE, DENSE = range(len(CONNECTION_COLUMNS))
INPUT_SOURCE = -1

# Largest magnitude that the 32-bit kernels accept for an intermediate value.
INT32_LIMIT = 2**31 - 1

try:
    import numba
    from numba.core import types as numba_types
    from numba.extending import intrinsic, overload

    HAVE_NUMBA = True
except ImportError:  # numba is an optional dependency (the "fast" extra)
    numba = None  # type: ignore[assignment]
    HAVE_NUMBA = False


def max_abs(values: np.ndarray) -> int:
    """Return the largest magnitude in ``values`` as a Python int, 0 for an empty array."""
    return int(np.abs(values).max()) if values.size else 0


@dataclass(frozen=True)
class LayerArrays:
    """Integer parameters of one layer, flat ``int64`` arrays, as the kernels read them."""

    k_mem: np.ndarray
    k_syn: np.ndarray
    v_leak: np.ndarray
    v_threshold: np.ndarray
    v_reset: np.ndarray
    bias: np.ndarray
    decay_fl: int
    state_min: int
    state_max: int
    cubalif: bool
    fires: bool
    subtract: bool

    @classmethod
    def from_params(cls, params: IntegerNeuronParameters, bias: np.ndarray) -> LayerArrays:
        """Collect the arrays of one layer from its integer parameters and bias words."""
        size = params.size
        k_syn = params.k_syn if params.k_syn is not None else np.zeros(size, dtype=np.int64)
        return cls(
            k_mem=np.ascontiguousarray(params.k_mem, dtype=np.int64),
            k_syn=np.ascontiguousarray(k_syn, dtype=np.int64),
            v_leak=np.ascontiguousarray(params.v_leak, dtype=np.int64),
            v_threshold=np.ascontiguousarray(params.v_threshold, dtype=np.int64),
            v_reset=np.ascontiguousarray(params.v_reset, dtype=np.int64),
            bias=np.ascontiguousarray(bias, dtype=np.int64),
            decay_fl=int(params.decay_format.fl),
            state_min=int(params.state_format.min_int),
            state_max=int(params.state_format.max_int),
            cubalif=params.kind == "cubalif",
            fires=params.fires,
            subtract=params.reset_mode == "subtract",
        )

    def neuron_table(self, word: type) -> np.ndarray:
        """Return the per-neuron arrays stacked in :data:`NEURON_FIELDS` order, ``[6, N]`` in dtype ``word``."""
        rows = [self.k_mem, self.k_syn, self.v_leak, self.v_threshold, self.v_reset, self.bias]
        return np.ascontiguousarray(np.stack(rows), dtype=word)

    def settings(self) -> np.ndarray:
        """Return the scalar settings in :data:`LAYER_SETTINGS` order (``int64``)."""
        values = [self.decay_fl, self.state_min, self.state_max, self.cubalif, self.fires, self.subtract]
        return np.array(values, dtype=np.int64)

    def word_bound(self, input_bound: int) -> int:
        """Return a bound on every intermediate value of the neuron update, for any input up to ``input_bound``.

        ``input_bound`` bounds the magnitude of one step's summed input to a
        neuron, bias and recurrent input included.
        """
        state = max(-self.state_min, self.state_max)
        membrane = max(state, max_abs(self.v_reset)) + (max_abs(self.v_threshold) if self.subtract else 0)
        leak = (membrane + max_abs(self.v_leak)) * max_abs(self.k_mem)
        # The last entry keeps the shift by decay_fl below the word width.
        bounds = [membrane, leak, membrane + leak + max(input_bound, state), 2**self.decay_fl]
        if self.cubalif:
            # The current is a saturated jump minus its decay; the jump adds the input to it.
            decay = state * max_abs(self.k_syn)
            bounds += [decay, state + decay + input_bound]
        return max(bounds)


def word_dtype(bound: int) -> type:
    """Return ``np.int32`` when every value stays within ``bound`` and that fits 32 bits, else ``np.int64``."""
    return np.int32 if bound <= INT32_LIMIT else np.int64


def fan_in_bound(weights: np.ndarray) -> int:
    """Return the largest sum of ``|w|`` over one target's column of a ``[N_source, N]`` matrix."""
    if not weights.size:
        return 0
    return int(np.abs(weights).sum(axis=0, dtype=np.float64).max())


def use_serial(batch: int) -> bool:
    """Return whether a batch runs faster in the serial kernel than in numba's parallel loop.

    A parallel region costs a thread hand-off even for one sample, which is
    all loss on one thread or with fewer samples than threads.
    """
    threads = numba.get_num_threads()
    return threads == 1 or batch < threads


def resolve_backend(backend: str) -> str:
    """Return ``"numba"`` or ``"numpy"`` for a requested backend, checking that it is available."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "numba" if HAVE_NUMBA else "numpy"
    if backend == "numba" and not HAVE_NUMBA:
        raise ValueError("backend 'numba' requested but numba is not installed; install ecs-deploy[fast]")
    return backend


def _run_numpy(
    x: np.ndarray,
    n_steps: int,
    p: LayerArrays,
    recurrent: np.ndarray | None,
    spikes: np.ndarray,
    states: np.ndarray | None,
    counts: np.ndarray,
) -> None:
    batch, _, size = spikes.shape
    v = np.zeros((batch, size), dtype=np.int64)
    current = np.zeros((batch, size), dtype=np.int64)
    previous = np.zeros((batch, size), dtype=bool)
    steps_with_input = min(x.shape[1], n_steps)
    for t in range(n_steps):
        drive = np.broadcast_to(p.bias, (batch, size)).copy()
        if t < steps_with_input:
            drive += x[:, t, :].astype(np.int64)
        if recurrent is not None and t > 0:
            drive += previous.astype(np.int64) @ recurrent

        leak = np.right_shift((v - p.v_leak) * p.k_mem, p.decay_fl)
        if p.cubalif:
            # The current jumps by the input, the membrane integrates it, then the current decays.
            jumped = np.clip(current + drive, p.state_min, p.state_max)
            v = np.clip(v - leak + jumped, p.state_min, p.state_max)
            current = jumped - np.right_shift(jumped * p.k_syn, p.decay_fl)
        else:
            v = np.clip(v - leak + drive, p.state_min, p.state_max)

        if p.fires:
            fired = v > p.v_threshold
            if p.subtract:
                v = np.where(fired, v - p.v_threshold, v)
            else:
                v = np.where(fired, p.v_reset, v)
            spikes[:, t, :] = fired
            counts += fired
            previous = fired
        if states is not None:
            states[:, t, :] = v


if HAVE_NUMBA:

    def as_word(value, like):  # pragma: no cover - replaced by the overload inside compiled code
        """Cast ``value`` to the element type of array ``like`` (numba only)."""
        raise NotImplementedError("as_word runs only inside numba-compiled code")

    @overload(as_word, inline="always")
    def _as_word(value, like):  # pragma: no cover - compiled
        word = like.dtype

        def cast(value, like):
            return word(value)

        return cast

    def _shift_right(typingctx, value, shift):  # pragma: no cover - compiled
        if not isinstance(value, numba_types.Integer) or not isinstance(shift, numba_types.Integer):
            return None

        def codegen(context, builder, signature, args):
            number, amount = args
            amount = context.cast(builder, amount, signature.args[1], signature.args[0])
            return builder.ashr(number, amount)

        return value(value, shift), codegen

    # Shift the integer ``value`` right arithmetically by ``shift`` bits, in
    # ``value``'s own width: numba widens ``value >> shift`` to 64 bits, which
    # turns a 32-bit vector loop into 64-bit lanes. ``shift`` must be below
    # the width. Typed ``Any`` because mypy reads the typing function's
    # signature, not the call's ``shift_right(value, shift)``.
    shift_right: Any = intrinsic(_shift_right)

    @numba.njit(cache=True, nogil=True)
    def update_neurons(v, current, drive, fired, tally, table, start, size, settings):  # pragma: no cover - compiled
        """Advance neurons ``start .. start + size - 1`` by one step, in place.

        ``v``, ``current``, ``fired``, ``tally`` and the per-neuron table
        ``table`` (:data:`NEURON_FIELDS`) are indexed by neuron, ``drive``
        from 0: ``drive[n]`` contains the summed input of neuron
        ``start + n``, bias included, and is refilled with the bias for the
        next step. ``settings`` is the layer's settings row
        (:data:`LAYER_SETTINGS`). ``fired`` (``uint8``) becomes 1 where a
        neuron fired, else 0, and ``tally`` counts the spikes; layers that do
        not fire leave both as they are.

        numba computes integers in 64 bits, so every result is cast back to
        the word type at once (``as_word``, ``shift_right``), which lets LLVM
        keep 32-bit words in 32-bit SIMD lanes. Each combination of flags
        gets its own loop, so that no loop branches.
        """
        # Slices indexed from 0 let LLVM see consecutive accesses: an index
        # ``start + n`` could be negative to numba, which then wraps it around
        # per access and the loops stop vectorizing.
        stop = start + size
        v = v[start:stop]
        current = current[start:stop]
        fired = fired[start:stop]
        tally = tally[start:stop]
        k_mem = table[K_MEM, start:stop]
        k_syn = table[K_SYN, start:stop]
        v_leak = table[V_LEAK, start:stop]
        v_threshold = table[V_THRESHOLD, start:stop]
        v_reset = table[V_RESET, start:stop]
        bias = table[BIAS, start:stop]
        decay_fl = settings[DECAY_FL]
        low = as_word(settings[STATE_MIN], v)
        high = as_word(settings[STATE_MAX], v)

        if settings[CUBALIF]:
            # The current jumps by the input, the membrane integrates it, then the current decays.
            for n in range(size):
                jumped = min(max(as_word(current[n] + drive[n], v), low), high)
                drive[n] = jumped
                decay = shift_right(as_word(jumped * k_syn[n], v), decay_fl)
                current[n] = as_word(jumped - decay, v)

        if not settings[FIRES]:
            for n in range(size):
                leak = shift_right(as_word(as_word(v[n] - v_leak[n], v) * k_mem[n], v), decay_fl)
                v[n] = min(max(as_word(v[n] - leak + drive[n], v), low), high)
                drive[n] = bias[n]
        elif settings[SUBTRACT]:
            for n in range(size):
                leak = shift_right(as_word(as_word(v[n] - v_leak[n], v) * k_mem[n], v), decay_fl)
                value = min(max(as_word(v[n] - leak + drive[n], v), low), high)
                drive[n] = bias[n]
                spike = value > v_threshold[n]
                v[n] = as_word(value - v_threshold[n], v) if spike else value
                fired[n] = spike
                tally[n] += spike
        else:
            for n in range(size):
                leak = shift_right(as_word(as_word(v[n] - v_leak[n], v) * k_mem[n], v), decay_fl)
                value = min(max(as_word(v[n] - leak + drive[n], v), low), high)
                drive[n] = bias[n]
                spike = value > v_threshold[n]
                v[n] = v_reset[n] if spike else value
                fired[n] = spike
                tally[n] += spike

    @numba.njit(cache=True, nogil=True)
    def compact_spikes(fired, size, spiking, start):  # pragma: no cover - compiled
        """Write the indices ``n < size`` with ``fired[n] != 0`` to ``spiking[start:]``; return their number.

        The loop has no branch that could mispredict: it writes every index
        and advances only past those that fired.
        """
        spiking = spiking[start:]
        active = 0
        for n in range(size):
            spiking[active] = n
            active += fired[n] != 0
        return active

    @numba.njit(cache=True, nogil=True)
    def add_rows(drive, weights, offset, size, spiking, start, active):  # pragma: no cover - compiled
        """Add the weight rows of the ``active`` sources listed in ``spiking[start:]`` to ``drive[:size]``.

        ``weights`` is a flat row-major ``[N_source, size]`` matrix from ``offset`` on.
        """
        for a in range(active):
            row = offset + spiking[start + a] * size
            weight = weights[row : row + size]
            for n in range(size):
                drive[n] = as_word(drive[n] + weight[n], drive)

    @numba.njit(cache=True, nogil=True)
    def add_dense(drive, weights, offset, size, flags, num_sources):  # pragma: no cover - compiled
        """Add ``sum_j flags[j] * W[n, j]`` to ``drive[n]`` for ``n < size``, from 0/1 source ``flags``.

        ``weights`` contains the transposed matrix ``W``, row-major
        ``[size, num_sources]``, from ``offset`` on. Each target is one dot
        product over all sources, which beats adding a row per spike when
        the target layer is narrow: no spike list is needed, and the loop
        over sources runs in SIMD lanes. With ``int16`` weights, ``uint8``
        flags and 32-bit words, LLVM turns the loop into ``vpmaddwd``
        multiply-adds, twice as many per instruction as with 32-bit weights.
        """
        for n in range(size):
            row = offset + n * num_sources
            weight = weights[row : row + num_sources]
            total = as_word(0, drive)
            for j in range(num_sources):
                total = as_word(total + as_word(flags[j] * weight[j], drive), drive)
            drive[n] = as_word(drive[n] + total, drive)

    @numba.njit(cache=True, nogil=True)
    def _layer_sample(  # pragma: no cover - compiled; covered through run_layer
        b, spikes, states, counts, x, source, weights, recurrent, table, settings, n_steps, event_driven
    ):
        """Run one layer for sample ``b``.

        The input of a step is either precomputed (``x[b, t, n]``) or, when
        ``event_driven``, summed here from the rows of the flat ``weights``
        (sources by targets) whose source spiked (``source[b, t, j] != 0``).
        An empty ``recurrent`` means no recurrent connection, and an empty
        ``states`` means no recorded states.
        """
        size = spikes.shape[2]
        bias = table[BIAS]
        word = bias.dtype
        if event_driven:
            steps_with_input = min(source.shape[1], n_steps)
            num_sources = source.shape[2]
        else:
            steps_with_input = min(x.shape[1], n_steps)
            num_sources = 0
        has_recurrent = recurrent.size > 0
        record_states = states.size > 0
        fires = settings[FIRES]

        v = np.zeros(size, dtype=word)
        current = np.zeros(size, dtype=word)
        drive = bias.copy()
        fired = np.zeros(size, dtype=np.uint8)
        tally = np.zeros(size, dtype=word)
        sources = np.zeros(max(num_sources, 1), dtype=np.int64)
        previous = np.zeros(size, dtype=np.int64)
        previous_active = 0
        for t in range(n_steps):
            if t < steps_with_input:
                if event_driven:
                    active = compact_spikes(source[b, t], num_sources, sources, 0)
                    add_rows(drive, weights, 0, size, sources, 0, active)
                else:
                    for n in range(size):
                        drive[n] = as_word(drive[n] + as_word(x[b, t, n], drive), drive)
            if has_recurrent:
                add_rows(drive, recurrent, 0, size, previous, 0, previous_active)

            update_neurons(v, current, drive, fired, tally, table, 0, size, settings)

            if fires:
                previous_active = compact_spikes(fired, size, previous, 0)
                for a in range(previous_active):
                    spikes[b, t, previous[a]] = 1.0
            if record_states:
                for n in range(size):
                    states[b, t, n] = v[n]

        for n in range(size):
            counts[b, n] = tally[n]

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _layer_parallel(spikes, *args):  # pragma: no cover - compiled; covered through run_layer
        """Run :func:`_layer_sample` for every sample, the samples spread over numba's threads."""
        for b in numba.prange(spikes.shape[0]):
            _layer_sample(b, spikes, *args)

    @numba.njit(cache=True, nogil=True)
    def _layer_serial(spikes, *args):  # pragma: no cover - compiled; covered through run_layer
        """Run :func:`_layer_sample` for every sample on the calling thread."""
        for b in range(spikes.shape[0]):
            _layer_sample(b, spikes, *args)

    @numba.njit(cache=True, nogil=True)
    def _network_sample(  # pragma: no cover - compiled; covered through ecs_deploy.fused.FusedNetwork.run
        b,
        frames,
        relay_steps,
        num_timesteps,
        relay_listed,
        word_like,
        neuron_table,
        layer_table,
        connections,
        weights,
        dense_weights,
        output_index,
        output_states,
        counts,
        raster,
    ):
        """Run every layer of sample ``b`` over all its steps (see :meth:`ecs_deploy.fused.FusedNetwork.run`).

        Per step, the input relays' spikes come first. Then each layer in
        network order adds the input from its sources' spikes of this step
        and the recurrent rows of its own spikes of the previous step to its
        bias. It then updates its neurons and lists its new spikes where a
        consumer reads the list. ``output_states`` is sample-major here,
        ``[B, T_sim, N_out]``, and ``counts`` has the relays' columns first.
        """
        word = word_like.dtype
        num_layers = layer_table.shape[0]
        num_inputs = frames.shape[2]
        total = neuron_table.shape[1]
        record_spikes = raster.size > 0
        bias = neuron_table[BIAS]

        # Steps each layer runs: from its delay D_l to the end of the run.
        n_steps = np.zeros(num_layers, dtype=np.int64)
        for layer in range(num_layers):
            n_steps[layer] = max(num_timesteps - layer_table[layer, FIRST_STEP], 0)

        v = np.zeros(total, dtype=word)
        current = np.zeros(total, dtype=word)
        fired = np.zeros(total, dtype=np.uint8)
        tally = np.zeros(total, dtype=word)
        # Each layer's input of the coming step, filled with the bias for a start.
        drive = bias.astype(word)
        # Each listed layer's spikes of its latest step, as neuron indices from the layer's start on.
        spiking = np.zeros(total, dtype=np.int64)
        active = np.zeros(num_layers, dtype=np.int64)
        inputs = np.zeros(max(num_inputs, 1), dtype=np.int64)
        relay_tally = np.zeros(num_inputs, dtype=word)

        # The relays may run one step longer than every neuron layer, and their counts include that step.
        for t in range(max(relay_steps, n_steps.max())):
            has_input = t < relay_steps
            frame = frames[b, min(t, frames.shape[1] - 1)]
            input_active = 0
            if has_input:
                for j in range(num_inputs):
                    relay_tally[j] = as_word(relay_tally[j] + frame[j], relay_tally)
                if relay_listed:
                    input_active = compact_spikes(frame, num_inputs, inputs, 0)

            for layer in range(num_layers):
                if t >= n_steps[layer]:
                    continue
                settings = layer_table[layer]
                start = settings[START]
                size = settings[SIZE]

                layer_drive = drive[start : start + size]
                for connection in range(settings[CONNECTION_START], settings[CONNECTION_STOP]):
                    source = connections[connection, SOURCE]
                    offset = connections[connection, WEIGHT_OFFSET]
                    source_size = connections[connection, SOURCE_SIZE]
                    dense = connections[connection, DENSE]
                    if source == INPUT_SOURCE:
                        if not has_input:
                            continue
                        if dense:
                            add_dense(layer_drive, dense_weights, offset, size, frame, source_size)
                        else:
                            add_rows(layer_drive, weights, offset, size, inputs, 0, input_active)
                    else:
                        source_start = layer_table[source, START]
                        if dense:
                            flags = fired[source_start : source_start + source_size]
                            add_dense(layer_drive, dense_weights, offset, size, flags, source_size)
                        else:
                            add_rows(layer_drive, weights, offset, size, spiking, source_start, active[source])
                if settings[RECURRENT_OFFSET] >= 0:
                    # The list still contains this layer's spikes of the previous step.
                    add_rows(layer_drive, weights, settings[RECURRENT_OFFSET], size, spiking, start, active[layer])

                update_neurons(v, current, layer_drive, fired, tally, neuron_table, start, size, settings)

                if settings[LISTED]:
                    active[layer] = compact_spikes(fired[start : start + size], size, spiking, start)
                if record_spikes:
                    step = settings[FIRST_STEP] + t
                    for n in range(size):
                        raster[step, b, start + n] = fired[start + n] != 0
                if layer == output_index:
                    step = settings[FIRST_STEP] + t
                    for n in range(size):
                        output_states[b, step, n] = v[start + n]

        for j in range(num_inputs):
            counts[b, j] = relay_tally[j]
        for n in range(total):
            counts[b, num_inputs + n] = tally[n]

    @numba.njit(parallel=True, cache=True, nogil=True)
    def network_parallel(
        frames, *args
    ):  # pragma: no cover - compiled; covered through ecs_deploy.fused.FusedNetwork.run
        """Run :func:`_network_sample` for every sample, the samples spread over numba's threads."""
        for b in numba.prange(frames.shape[0]):
            _network_sample(b, frames, *args)

    @numba.njit(cache=True, nogil=True)
    def network_serial(frames, *args):  # pragma: no cover - compiled; covered through ecs_deploy.fused.FusedNetwork.run
        """Run :func:`_network_sample` for every sample on the calling thread."""
        for b in range(frames.shape[0]):
            _network_sample(b, frames, *args)


_EMPTY_FRAMES = np.zeros((1, 1, 1), dtype=np.float32)
_EMPTY_SOURCE = np.zeros((1, 1, 1), dtype=np.uint8)


def _run_numba(
    x: np.ndarray | None,
    source: np.ndarray | None,
    weights: np.ndarray | None,
    n_steps: int,
    p: LayerArrays,
    recurrent: np.ndarray | None,
    spikes: np.ndarray,
    states: np.ndarray | None,
    counts: np.ndarray,
    input_bound: int,
) -> None:
    # The recurrent input adds to the feed-forward input of the same step.
    if recurrent is not None:
        input_bound += fan_in_bound(recurrent)
    word = word_dtype(p.word_bound(input_bound + max_abs(p.bias)))
    empty_words: np.ndarray = np.zeros(0, dtype=word)
    kernel = _layer_serial if use_serial(spikes.shape[0]) else _layer_parallel
    event_driven = source is not None
    kernel(
        spikes,
        np.zeros((0, 0, 0), dtype=np.int64) if states is None else states,
        counts,
        _EMPTY_FRAMES if x is None else x,
        source if event_driven else _EMPTY_SOURCE,
        np.ascontiguousarray(weights, dtype=word).ravel() if event_driven else empty_words,
        empty_words if recurrent is None else np.ascontiguousarray(recurrent, dtype=word).ravel(),
        p.neuron_table(word),
        p.settings(),
        n_steps,
        event_driven,
    )


def run_layer(
    x: np.ndarray | None,
    n_steps: int,
    params: LayerArrays,
    *,
    source: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    recurrent: np.ndarray | None = None,
    record_states: bool = False,
    backend: str = "auto",
    input_bound: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Run one layer over ``n_steps`` timesteps for a batch, starting from the all-zero state.

    The input comes in one of two forms. Either ``x`` contains the weighted
    input per sample, step and neuron, ``[B, T_x, N]``, with integer values in
    any numeric dtype. Or ``source`` contains the source layer's 0/1 spikes
    ``[B, T_x, N_source]`` and ``weights`` the integer matrix
    ``[N_source, N]``, and the kernel adds the weight rows of the sources that
    spiked (event-driven, numba only), which is faster for sparse activity.
    Steps at and beyond ``T_x`` get no input apart from the bias.
    ``recurrent`` is the ``[N, N]`` integer matrix (rows are the sources)
    that carries the layer's spikes of the previous step back to it.
    ``input_bound`` bounds ``|x|`` (without bias and recurrent input), so
    that the numba kernel picks its word width without a pass over ``x``.
    Left out, it is computed from ``x`` or ``weights``. A bound that ``x``
    exceeds makes the 32-bit kernel wrap around silently.

    Returns the spikes (``float32`` 0/1, ``[B, n_steps, N]``), the membrane
    states after each step (``int64``, same shape, only with
    ``record_states``) and the spike count per sample and neuron
    (``int64``, ``[B, N]``).
    """
    if (x is None) == (source is None):
        raise ValueError("give either the weighted input x or the source spikes with their weights")
    if source is not None and weights is None:
        raise ValueError("event-driven input needs the weights [N_source, N] with the source spikes")
    batch = (x if x is not None else source).shape[0]  # type: ignore[union-attr]
    size = params.bias.size
    spikes = np.zeros((batch, max(n_steps, 0), size), dtype=np.float32)
    states = np.zeros((batch, max(n_steps, 0), size), dtype=np.int64) if record_states else None
    counts = np.zeros((batch, size), dtype=np.int64)
    if n_steps <= 0:
        return spikes, states, counts
    if recurrent is not None:
        recurrent = np.ascontiguousarray(recurrent, dtype=np.int64)

    if resolve_backend(backend) == "numba":
        if source is not None:
            source = np.ascontiguousarray(source)
            if source.dtype == bool:
                source = source.view(np.uint8)
            weights = np.asarray(weights)
            if input_bound is None:
                input_bound = fan_in_bound(weights)
        else:
            x = np.ascontiguousarray(x)
            if input_bound is None:
                input_bound = int(np.ceil(np.abs(x).max())) if x.size else 0
        _run_numba(x, source, weights, n_steps, params, recurrent, spikes, states, counts, input_bound)
        return spikes, states, counts

    if source is not None:
        # numpy has no event-driven loop: sum the input with one integer matrix product instead.
        assert weights is not None
        flat = source.reshape(-1, source.shape[2]).astype(np.int64)
        x = (flat @ np.asarray(weights, dtype=np.int64)).reshape(source.shape[0], source.shape[1], size)
    assert x is not None
    _run_numpy(x, n_steps, params, recurrent, spikes, states, counts)
    return spikes, states, counts
