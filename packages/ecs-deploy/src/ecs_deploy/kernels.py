"""Fused neuron-update loops over time for a batch: a numba kernel and a numpy twin that gives identical results.

Both run ``ecs_common.neuron.integer_step``'s arithmetic for one layer over
all timesteps of a batch, given the layer's weighted input per step (already
summed by a matrix product). They are tested to agree bit for bit with each
other and with ``integer_step``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ecs_common.neuron import IntegerNeuronParameters

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "numba", "numpy")

try:
    import numba

    HAVE_NUMBA = True
except ImportError:  # numba is an optional dependency (the "fast" extra)
    numba = None  # type: ignore[assignment]
    HAVE_NUMBA = False


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

    @numba.njit(inline="always")
    def _update(  # pragma: no cover - compiled
        v,
        current,
        drive,
        k_mem,
        k_syn,
        v_leak,
        v_threshold,
        v_reset,
        decay_fl,
        state_min,
        state_max,
        cubalif,
        fires,
        subtract,
    ):
        """Advance one neuron by one step; returns (membrane, current, fired)."""
        leak = ((v - v_leak) * k_mem) >> decay_fl
        if cubalif:
            # The current jumps by the input, the membrane integrates it, then the current decays.
            jumped = min(max(current + drive, state_min), state_max)
            value = v - leak + jumped
            current = jumped - ((jumped * k_syn) >> decay_fl)
        else:
            value = v - leak + drive
        value = min(max(value, state_min), state_max)
        fired = False
        if fires and value > v_threshold:
            fired = True
            if subtract:
                value = value - v_threshold
            else:
                value = v_reset
        return value, current, fired

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _kernel(  # pragma: no cover - compiled; covered through run_layer
        x,
        source,
        weights,
        event_driven,
        n_steps,
        k_mem,
        k_syn,
        v_leak,
        v_threshold,
        v_reset,
        bias,
        decay_fl,
        state_min,
        state_max,
        cubalif,
        fires,
        subtract,
        recurrent,
        has_recurrent,
        spikes,
        states,
        record_states,
        counts,
    ):
        """Run one layer for every sample in parallel.

        The input of a step is either precomputed (``x[b, t, n]``) or, when
        ``event_driven``, summed here from the rows of ``weights`` (sources by
        targets) whose source spiked (``source[b, t, j] != 0``).
        """
        batch = spikes.shape[0]
        size = spikes.shape[2]
        if event_driven:
            steps_with_input = min(source.shape[1], n_steps)
            num_sources = source.shape[2]
        else:
            steps_with_input = min(x.shape[1], n_steps)
            num_sources = 0
        for b in numba.prange(batch):
            v = np.zeros(size, dtype=np.int64)
            current = np.zeros(size, dtype=np.int64)
            drive = np.zeros(size, dtype=np.int64)
            spiking = np.zeros(max(num_sources, 1), dtype=np.int64)
            for t in range(n_steps):
                for n in range(size):
                    drive[n] = bias[n]
                if t < steps_with_input:
                    if event_driven:
                        # Collect the spiking sources without branches, then add their weight rows.
                        active = 0
                        for j in range(num_sources):
                            spiking[active] = j
                            active += source[b, t, j] != 0
                        for a in range(active):
                            row = weights[spiking[a]]
                            for n in range(size):
                                drive[n] += row[n]
                    else:
                        for n in range(size):
                            drive[n] += np.int64(x[b, t, n])
                if has_recurrent and t > 0:
                    for j in range(size):
                        if spikes[b, t - 1, j] != 0:
                            for n in range(size):
                                drive[n] += recurrent[j, n]
                for n in range(size):
                    value, flow, fired = _update(
                        v[n],
                        current[n],
                        drive[n],
                        k_mem[n],
                        k_syn[n],
                        v_leak[n],
                        v_threshold[n],
                        v_reset[n],
                        decay_fl,
                        state_min,
                        state_max,
                        cubalif,
                        fires,
                        subtract,
                    )
                    v[n] = value
                    current[n] = flow
                    if fired:
                        spikes[b, t, n] = 1.0
                        counts[b, n] += 1
                    if record_states:
                        states[b, t, n] = value


_EMPTY_INT = np.zeros((1, 1), dtype=np.int64)
_EMPTY_FRAMES = np.zeros((1, 1, 1), dtype=np.float32)


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
) -> None:
    event_driven = source is not None
    _kernel(
        _EMPTY_FRAMES if x is None else x,
        source if event_driven else np.zeros((1, 1, 1), dtype=np.uint8),
        weights if event_driven else _EMPTY_INT,
        event_driven,
        n_steps,
        p.k_mem,
        p.k_syn,
        p.v_leak,
        p.v_threshold,
        p.v_reset,
        p.bias,
        p.decay_fl,
        p.state_min,
        p.state_max,
        p.cubalif,
        p.fires,
        p.subtract,
        _EMPTY_INT if recurrent is None else recurrent,
        recurrent is not None,
        spikes,
        _EMPTY_INT.reshape(1, 1, 1) if states is None else states,
        states is not None,
        counts,
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
            weights = np.ascontiguousarray(weights, dtype=np.int64)
        else:
            x = np.ascontiguousarray(x)
        _run_numba(x, source, weights, n_steps, params, recurrent, spikes, states, counts)
        return spikes, states, counts

    if source is not None:
        # numpy has no event-driven loop: sum the input with one integer matrix product instead.
        assert weights is not None
        flat = source.reshape(-1, source.shape[2]).astype(np.int64)
        x = (flat @ np.asarray(weights, dtype=np.int64)).reshape(source.shape[0], source.shape[1], size)
    assert x is not None
    _run_numpy(x, n_steps, params, recurrent, spikes, states, counts)
    return spikes, states, counts
