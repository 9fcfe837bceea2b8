"""The numba and numpy neuron kernels agree with each other and with ecs_common.neuron.integer_step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecs_common.formats import FixedPointFormat
from ecs_common.neuron import IntegerNeuronParameters, initial_state, integer_step
from ecs_deploy.kernels import HAVE_NUMBA, LayerArrays, resolve_backend, run_layer, word_dtype

needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")


def random_params(rng: np.random.Generator, kind: str, size: int, reset_mode: str, state_wl: int, decay_wl: int):
    """Integer parameters anywhere in their formats' ranges, the extremes included."""
    state = FixedPointFormat(wl=state_wl, fl=min(6, state_wl - 1))
    decay = FixedPointFormat(wl=decay_wl, fl=decay_wl - 1)

    def state_words():
        values = rng.integers(state.min_int, state.max_int + 1, size=size)
        values[rng.random(size) < 0.2] = state.min_int
        values[rng.random(size) < 0.2] = state.max_int
        return values.astype(np.int64)

    k_mem = np.zeros(size, dtype=np.int64) if kind == "if" else rng.integers(1, decay.max_int + 1, size=size)
    threshold = np.full(size, state.max_int) if kind == "li" else np.abs(state_words())
    return IntegerNeuronParameters(
        kind=kind,
        k_mem=k_mem.astype(np.int64),
        k_syn=rng.integers(1, decay.max_int + 1, size=size).astype(np.int64) if kind == "cubalif" else None,
        v_leak=state_words() // 4,
        v_threshold=threshold,
        v_reset=state_words() // 2,
        state_scale=np.ones(size),
        state_format=state,
        decay_format=decay,
        reset_mode=reset_mode,
    )


def reference_loop(params, bias, x, n_steps, recurrent=None):
    batch, steps, size = x.shape
    state = initial_state(params, (batch,))
    previous = np.zeros((batch, size), dtype=np.int64)
    spikes, states = [], []
    for t in range(n_steps):
        drive = np.broadcast_to(bias, (batch, size)).astype(np.int64)
        if t < steps:
            drive = drive + x[:, t]
        if recurrent is not None:
            drive = drive + previous @ recurrent
        state, fired = integer_step(params, state, drive)
        previous = fired.astype(np.int64)
        spikes.append(fired)
        states.append(state.v.copy())
    return np.stack(spikes, axis=1), np.stack(states, axis=1)


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["lif", "li", "if", "cubalif"]),
    reset_mode=st.sampled_from(["to_reset", "subtract"]),
    state_wl=st.integers(8, 24),
    decay_wl=st.integers(4, 16),
    size=st.integers(1, 9),
    steps=st.integers(1, 10),
    extra_steps=st.integers(0, 3),
    recurrent=st.booleans(),
)
def test_kernels_match_integer_step(seed, kind, reset_mode, state_wl, decay_wl, size, steps, extra_steps, recurrent):
    rng = np.random.default_rng(seed)
    params = random_params(rng, kind, size, reset_mode, state_wl, decay_wl)
    bias = rng.integers(-300, 300, size=size).astype(np.int64)
    limit = 1 << (state_wl + 1)
    x = rng.integers(-limit, limit, size=(3, steps, size)).astype(np.int64)
    matrix = rng.integers(-200, 200, size=(size, size)).astype(np.int64) if recurrent else None
    n_steps = steps + extra_steps

    expected_spikes, expected_states = reference_loop(params, bias, x, n_steps, matrix)
    arrays = LayerArrays.from_params(params, bias)
    backends = ["numpy"] + (["numba"] if HAVE_NUMBA else [])
    for backend in backends:
        for dtype in (np.float64, np.int64):
            spikes, states, counts = run_layer(
                x.astype(dtype), n_steps, arrays, recurrent=matrix, record_states=True, backend=backend
            )
            np.testing.assert_array_equal(spikes != 0, expected_spikes, err_msg=f"{backend} {dtype}")
            np.testing.assert_array_equal(states, expected_states, err_msg=f"{backend} {dtype}")
            np.testing.assert_array_equal(counts, expected_spikes.sum(axis=1), err_msg=f"{backend} {dtype}")


@needs_numba
@settings(max_examples=30)
@given(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["lif", "if", "cubalif"]),
    sources=st.integers(1, 20),
    density=st.floats(0.0, 1.0),
)
def test_event_driven_input_equals_matrix_product(seed, kind, sources, density):
    rng = np.random.default_rng(seed)
    size = 7
    params = random_params(rng, kind, size, "subtract", 16, 12)
    arrays = LayerArrays.from_params(params, rng.integers(-50, 50, size=size))
    spikes_in = (rng.random((4, 9, sources)) < density).astype(np.uint8)
    weights = rng.integers(-128, 128, size=(sources, size))
    x = (spikes_in.reshape(-1, sources).astype(np.int64) @ weights).reshape(4, 9, size)

    dense = run_layer(x.astype(np.float32), 11, arrays, record_states=True, backend="numba")
    for source in (spikes_in, spikes_in.astype(bool), spikes_in.astype(np.float32)):
        for backend in ("numba", "numpy"):
            event = run_layer(None, 11, arrays, source=source, weights=weights, record_states=True, backend=backend)
            for got, expected in zip(event, dense, strict=True):
                np.testing.assert_array_equal(got, expected)


def test_run_layer_rejects_both_input_forms():
    params = random_params(np.random.default_rng(0), "lif", 3, "to_reset", 16, 12)
    arrays = LayerArrays.from_params(params, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="either the weighted input x or the source spikes"):
        run_layer(np.zeros((1, 2, 3)), 2, arrays, source=np.zeros((1, 2, 3)), weights=np.zeros((3, 3)))


def test_zero_steps_return_empty_arrays():
    params = random_params(np.random.default_rng(0), "lif", 3, "to_reset", 16, 12)
    arrays = LayerArrays.from_params(params, np.zeros(3, dtype=np.int64))
    spikes, states, counts = run_layer(np.zeros((2, 4, 3)), 0, arrays, record_states=True)
    assert spikes.shape == (2, 0, 3)
    assert states.shape == (2, 0, 3)
    assert not counts.any()


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown backend 'gpu'; expected one of auto, numba, numpy"):
        resolve_backend("gpu")


@pytest.mark.parametrize(
    ("state_wl", "decay_wl", "decay_fl", "word"),
    [(16, 12, 11, np.int32), (24, 12, 11, np.int64), (16, 32, 31, np.int64), (8, 20, 19, np.int32)],
)
def test_word_width_covers_every_intermediate_value(state_wl, decay_wl, decay_fl, word):
    state = FixedPointFormat(wl=state_wl, fl=6)
    decay = FixedPointFormat(wl=decay_wl, fl=decay_fl)
    size = 4
    params = IntegerNeuronParameters(
        kind="cubalif",
        k_mem=np.full(size, decay.max_int, dtype=np.int64),
        k_syn=np.full(size, decay.max_int, dtype=np.int64),
        v_leak=np.full(size, state.min_int, dtype=np.int64),
        v_threshold=np.full(size, state.max_int, dtype=np.int64),
        v_reset=np.zeros(size, dtype=np.int64),
        state_scale=np.ones(size),
        state_format=state,
        decay_format=decay,
        reset_mode="subtract",
    )
    arrays = LayerArrays.from_params(params, np.full(size, 100, dtype=np.int64))
    assert word_dtype(arrays.word_bound(input_bound=1000)) is word


@needs_numba
@pytest.mark.parametrize("state_wl", [16, 24])
def test_extreme_words_match_integer_step(state_wl):
    # The largest decay factors and leak potentials drive every product to its bound in either word width.
    rng = np.random.default_rng(state_wl)
    for kind, reset_mode in (("lif", "subtract"), ("cubalif", "to_reset"), ("li", "to_reset")):
        params = random_params(rng, kind, 6, reset_mode, state_wl, 12)
        params = IntegerNeuronParameters(
            **{**params.__dict__, "k_mem": np.full(6, params.decay_format.max_int, dtype=np.int64)}
        )
        bias = np.full(6, -(2 ** (state_wl - 2)), dtype=np.int64)
        limit = 1 << (state_wl + 1)
        x = rng.choice([-limit, limit - 1, 0], size=(2, 12, 6)).astype(np.int64)
        expected_spikes, expected_states = reference_loop(params, bias, x, 14)
        spikes, states, counts = run_layer(
            x, 14, LayerArrays.from_params(params, bias), record_states=True, backend="numba"
        )
        np.testing.assert_array_equal(spikes != 0, expected_spikes, err_msg=kind)
        np.testing.assert_array_equal(states, expected_states, err_msg=kind)
        np.testing.assert_array_equal(counts, expected_spikes.sum(axis=1), err_msg=kind)
