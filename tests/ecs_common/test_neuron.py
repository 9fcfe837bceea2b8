"""Tests of ecs_common.neuron: integer parameters and the integer and float time steps.

Expected values are computed by hand in the default formats: state Q(16,6)
(words -32768 to 32767) and decay Q(12,11) (2048 words per unit).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecs_common.errors import QuantizationError
from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_common.neuron import (
    IntegerNeuronParameters,
    NeuronParameters,
    NeuronState,
    ResetMode,
    float_step,
    initial_state,
    integer_parameters,
    integer_step,
    network_latency,
)

STATE = FixedPointFormat(wl=16, fl=6)
DECAY = FixedPointFormat(wl=12, fl=11)
HALF = 1024  # 0.5 in the decay format


def layer(
    kind: str = "lif",
    *,
    k_mem: int = 0,
    k_syn: int | None = None,
    v_leak: int = 0,
    v_threshold: int = STATE.max_int,
    v_reset: int = 0,
    reset_mode: ResetMode = "to_reset",
) -> IntegerNeuronParameters:
    """Build a one-neuron integer layer from words given directly."""
    return IntegerNeuronParameters(
        kind=kind,  # type: ignore[arg-type]
        k_mem=np.array([k_mem]),
        k_syn=None if k_syn is None else np.array([k_syn]),
        v_leak=np.array([v_leak]),
        v_threshold=np.array([v_threshold]),
        v_reset=np.array([v_reset]),
        state_scale=np.ones(1),
        state_format=STATE,
        decay_format=DECAY,
        reset_mode=reset_mode,
    )


def step(params: IntegerNeuronParameters, v: int, x: int, i: int | None = None) -> tuple[int, int | None, bool]:
    """Run one integer step of a one-neuron layer and return ``(v, i, spike)`` as Python values."""
    state = NeuronState(v=np.array([v]), i=None if i is None else np.array([i]))

    new_state, spikes = integer_step(params, state, np.array([x]))

    current = None if new_state.i is None else int(new_state.i[0])
    return int(new_state.v[0]), current, bool(spikes[0])


# v <- v - ((v - v_leak) * k >> 11) + x, with k = 1024 (one half).
@pytest.mark.parametrize(
    ("v", "v_leak", "expected"),
    [
        (3, 0, 2),  # 3 * 1024 >> 11 = floor(1.5) = 1
        (-3, 0, -1),  # -3 * 1024 >> 11 = floor(-1.5) = -2
        (1, 0, 1),  # floor(0.5) = 0: a positive state of one LSB never decays
        (-1, 0, 0),  # floor(-0.5) = -1: a negative one reaches zero
        (-5, 0, -2),  # floor(-2.5) = -3
        (0, 10, 5),  # (0 - 10) * 1024 >> 11 = -5
        (7, 10, 9),  # (7 - 10) * 1024 >> 11 = floor(-1.5) = -2
    ],
)
def test_lif_decay_floors(v: int, v_leak: int, expected: int) -> None:
    params = layer(k_mem=HALF, v_leak=v_leak)

    new_v, _, spike = step(params, v, 0)

    assert new_v == expected
    assert not spike


def test_lif_decay_with_small_factor() -> None:
    # k = 102 (0.0498): 100 * 102 >> 11 = floor(4.98) = 4 and -100 * 102 >> 11 = floor(-4.98) = -5.
    params = layer(k_mem=102)

    assert step(params, 100, 0)[0] == 96
    assert step(params, -100, 0)[0] == -95


@pytest.mark.parametrize(
    ("v", "x", "expected"),
    [
        (32760, 100, 32767),
        (32767, 1, 32767),
        (-32760, -100, -32768),
        (-32768, -1, -32768),
        (0, 10**9, 32767),
        (0, -(10**9), -32768),
    ],
)
def test_integer_step_saturates_both_ends(v: int, x: int, expected: int) -> None:
    params = layer("li")

    assert step(params, v, x)[0] == expected


def test_cubalif_current_saturates() -> None:
    params = layer("cubalif", k_syn=HALF)

    _, current, _ = step(params, 0, 10**6, i=0)

    # The jumped current saturates at 32767, then decays by half (floor).
    assert current == 32767 - (32767 * HALF >> 11)


def test_threshold_tie_does_not_fire() -> None:
    params = layer("if", v_threshold=100, v_reset=-5)

    v, _, spike = step(params, 0, 100)
    assert v == 100
    assert not spike

    v, _, spike = step(params, v, 1)
    assert spike
    assert v == -5


def test_subtract_reset_keeps_excess() -> None:
    params = layer("if", v_threshold=100, v_reset=-5, reset_mode="subtract")

    v, _, spike = step(params, 0, 130)

    assert spike
    assert v == 30


def test_reset_to_v_reset_discards_excess() -> None:
    params = layer("if", v_threshold=100, v_reset=-5, reset_mode="to_reset")

    v, _, spike = step(params, 0, 130)

    assert spike
    assert v == -5


def first_spike_step(params: IntegerNeuronParameters, x: int, steps: int) -> int | None:
    """Return the 1-based step at which a one-neuron layer driven by constant ``x`` first fires."""
    state = initial_state(params)
    for t in range(1, steps + 1):
        state, spikes = integer_step(params, state, np.array([x]))
        if spikes[0]:
            return t
    return None


@given(threshold=st.integers(min_value=1, max_value=2000), data=st.data())
def test_if_first_spike_at_predicted_step(threshold: int, data: st.DataObject) -> None:
    x = data.draw(st.integers(min_value=1, max_value=threshold), label="x")
    params = layer("if", v_threshold=threshold)

    # After n steps v = n * x, and the neuron fires at the first n with n * x > threshold.
    expected = threshold // x + 1

    assert first_spike_step(params, x, expected + 1) == expected


def test_if_from_float_parameters_fires_at_step_11() -> None:
    # r * dt = 1, so state units are NIR units: threshold 1.0 is 64 words, weight 0.1 is round(6.4) = 6 words.
    params = NeuronParameters(kind="if", r=np.array([1000.0]), v_leak=np.zeros(1), v_threshold=np.ones(1))
    integer = integer_parameters(params, dt=1e-3, quant=QuantConfig())
    weight = int(QuantConfig().weight_format.quantize(0.1))

    assert integer.v_threshold.tolist() == [64]
    assert weight == 6
    assert first_spike_step(integer, weight, 20) == 11


def test_li_never_fires() -> None:
    params = layer("li", k_mem=HALF)
    state = initial_state(params, batch_shape=(2,))

    for _ in range(50):
        state, spikes = integer_step(params, state, np.array([[10**6], [-(10**6)]]))
        assert not spikes.any()

    assert not params.fires
    assert state.v[:, 0].tolist() == [32767, -32768]


def test_cubalif_membrane_sees_jumped_current() -> None:
    params = layer("cubalif", k_mem=HALF, k_syn=HALF)
    state = initial_state(params)
    trace = []

    for x in [100, 0, 0, 0]:
        state, _ = integer_step(params, state, np.array([x]))
        assert state.i is not None
        trace.append((int(state.v[0]), int(state.i[0])))

    # Step 1: i jumps to 100, v = 0 + 100, then i = 100 - 50.
    # Step 2: i = 50, v = 100 - 50 + 50, then i = 50 - 25.
    # Step 3: i = 25, v = 100 - 50 + 25, then i = 25 - floor(12.5) = 13.
    # Step 4: i = 13, v = 75 - floor(37.5) + 13, then i = 13 - floor(6.5) = 7.
    assert trace == [(100, 50), (100, 25), (75, 13), (51, 7)]


def test_integer_step_broadcasts_over_batch() -> None:
    params = layer("lif", k_mem=HALF, v_threshold=50)
    state = NeuronState(v=np.array([[10], [40], [-10]]))

    # 40 - 20 + 31 = 51 exceeds the threshold 50 and resets to 0.
    new_state, spikes = integer_step(params, state, np.array([[0], [31], [0]]))

    assert new_state.v[:, 0].tolist() == [5, 0, -5]
    assert spikes[:, 0].tolist() == [False, True, False]


def lif(tau_mem: float, v_threshold: float = 1.0, **overrides: np.ndarray) -> NeuronParameters:
    """Build a one-neuron LIF layer in NIR units."""
    fields: dict[str, np.ndarray] = {
        "r": np.ones(1),
        "v_leak": np.zeros(1),
        "tau_mem": np.array([tau_mem]),
        "v_threshold": np.array([v_threshold]),
        "v_reset": np.zeros(1),
    }
    fields.update(overrides)
    return NeuronParameters(kind="lif", **fields)


def test_integer_parameters_of_lif_by_hand() -> None:
    # dt / tau = 0.08: k = round(0.08 * 2048) = round(163.84) = 164. The state
    # scale r * dt / tau is 0.08, so threshold 1.0 is 12.5 state units = 800
    # words, reset 0.2 is 2.5 units = 160 words and leak -0.04 is -0.5 units = -32 words.
    params = lif(0.0125, v_reset=np.array([0.2]), v_leak=np.array([-0.04]))

    integer = integer_parameters(params, dt=1e-3, quant=QuantConfig(), reset_mode="subtract")

    assert integer.k_mem.tolist() == [164]
    assert integer.v_threshold.tolist() == [800]
    assert integer.v_reset.tolist() == [160]
    assert integer.v_leak.tolist() == [-32]
    assert integer.state_scale == pytest.approx([0.08])
    assert integer.reset_mode == "subtract"
    assert integer.k_syn is None


def test_integer_parameters_of_li_and_cubalif() -> None:
    li = NeuronParameters(kind="li", r=np.ones(2), v_leak=np.zeros(2), tau_mem=np.full(2, 0.01))
    cuba = NeuronParameters(
        kind="cubalif",
        r=np.ones(1),
        v_leak=np.zeros(1),
        tau_mem=np.array([0.002]),
        tau_syn=np.array([0.004]),
        w_in=np.array([2.0]),
        v_threshold=np.array([0.25]),
    )

    li_words = integer_parameters(li, dt=1e-3, quant=QuantConfig())
    cuba_words = integer_parameters(cuba, dt=1e-3, quant=QuantConfig())

    assert li_words.v_threshold.tolist() == [32767, 32767]
    assert li_words.k_mem.tolist() == [205, 205]  # round(0.1 * 2048) = round(204.8)

    # s = r * w_in * k_mem * k_syn = 2 * 0.5 * 0.25 = 0.25, so threshold 0.25 is one state unit.
    assert cuba_words.k_mem.tolist() == [1024]
    assert cuba_words.k_syn is not None
    assert cuba_words.k_syn.tolist() == [512]
    assert cuba_words.v_threshold.tolist() == [64]


def test_integer_parameters_broadcast_scalars() -> None:
    params = NeuronParameters(
        kind="lif", r=np.ones(3), v_leak=np.zeros(1), tau_mem=np.array([0.0125]), v_threshold=np.array([1.0])
    )

    integer = integer_parameters(params, dt=1e-3, quant=QuantConfig())

    assert integer.size == 3
    assert integer.k_mem.tolist() == [164, 164, 164]


def test_decay_rounding_to_zero_is_rejected() -> None:
    # dt / tau = 1e-4 is below half an LSB of Q(12,11) (2.44e-4).
    with pytest.raises(QuantizationError, match=r"fc1: tau_mem: decay factor dt / tau = 0.0001 rounds to zero"):
        integer_parameters(lif(10.0), dt=1e-3, quant=QuantConfig(), name="fc1")


def test_synaptic_decay_rounding_to_zero_is_rejected() -> None:
    params = NeuronParameters(
        kind="cubalif",
        r=np.ones(1),
        v_leak=np.zeros(1),
        tau_mem=np.array([0.01]),
        tau_syn=np.array([100.0]),
        v_threshold=np.ones(1),
    )

    with pytest.raises(QuantizationError, match="tau_syn: decay factor .* rounds to zero"):
        integer_parameters(params, dt=1e-3, quant=QuantConfig())


def test_dt_over_tau_above_one_is_rejected() -> None:
    with pytest.raises(QuantizationError, match=r"dt / tau = 2 exceeds 1 \(tau 0.0005 s shorter than dt 0.001 s\)"):
        integer_parameters(lif(5e-4), dt=1e-3, quant=QuantConfig())


@pytest.mark.parametrize("tau", [0.0, -0.01, np.inf, np.nan])
def test_invalid_time_constant_is_rejected(tau: float) -> None:
    with pytest.raises(QuantizationError, match="time constants must be positive and finite"):
        integer_parameters(lif(tau), dt=1e-3, quant=QuantConfig())


def test_threshold_beyond_state_range_is_rejected() -> None:
    # dt / tau = 0.1, so threshold 100 is 1000 state units, beyond Q(16,6)'s 511.98.
    with pytest.raises(QuantizationError, match=r"fc2: v_threshold: 1 value\(s\) up to 1000 in state units exceed"):
        integer_parameters(lif(0.01, v_threshold=100.0), dt=1e-3, quant=QuantConfig(), name="fc2")


def test_reset_beyond_state_range_is_rejected() -> None:
    with pytest.raises(QuantizationError, match=r"v_reset: .* exceed the state format Q\(16,6\)"):
        integer_parameters(lif(0.01, v_reset=np.array([-60.0])), dt=1e-3, quant=QuantConfig())


def test_zero_input_scaling_is_rejected() -> None:
    with pytest.raises(QuantizationError, match="input scaling r \\* dt / tau is zero"):
        integer_parameters(lif(0.01, r=np.zeros(1)), dt=1e-3, quant=QuantConfig())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dt": 0.0}, "timestep dt must be positive, got 0.0"),
        ({"dt": 1e-3, "reset_mode": "zero"}, "unknown reset mode 'zero'; expected one of to_reset, subtract"),
    ],
)
def test_integer_parameters_rejects_invalid_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        integer_parameters(lif(0.01), quant=QuantConfig(), **kwargs)  # type: ignore[arg-type]


def test_integer_parameters_rejects_unknown_kind() -> None:
    params = NeuronParameters(kind="izhikevich", r=np.ones(1), v_leak=np.zeros(1))  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="unknown neuron kind 'izhikevich'; expected one of lif, li, if, cubalif"):
        integer_parameters(params, dt=1e-3, quant=QuantConfig())


def test_integer_parameters_rejects_missing_or_misshaped_fields() -> None:
    missing = NeuronParameters(kind="lif", r=np.ones(2), v_leak=np.zeros(2), tau_mem=np.full(2, 0.01))
    misshaped = lif(0.01, v_threshold=1.0, v_reset=np.zeros(3))

    with pytest.raises(ValueError, match="neuron parameter 'v_threshold' is missing"):
        integer_parameters(missing, dt=1e-3, quant=QuantConfig())
    with pytest.raises(ValueError, match=r"neuron parameter 'v_reset' has 3 values, expected 1 \(one per neuron\)"):
        integer_parameters(misshaped, dt=1e-3, quant=QuantConfig())


def test_float_step_lif_by_hand() -> None:
    # k = 0.1: v = 1 + 0.1 * (0.5 - 1 + 2 * 3) = 1.55, above the threshold 1.5.
    params = lif(0.01, v_threshold=1.5, r=np.array([2.0]), v_leak=np.array([0.5]), v_reset=np.array([0.2]))

    v_to_reset, _, spikes = float_step(params, 1e-3, np.array([1.0]), None, np.array([3.0]))
    v_subtract, _, _ = float_step(params, 1e-3, np.array([1.0]), None, np.array([3.0]), reset_mode="subtract")
    v_quiet, _, quiet = float_step(params, 1e-3, np.array([1.0]), None, np.array([0.0]))

    assert spikes.tolist() == [True]
    assert v_to_reset == pytest.approx([0.2])
    assert v_subtract == pytest.approx([0.05])
    assert quiet.tolist() == [False]
    assert v_quiet == pytest.approx([0.95])  # 1 + 0.1 * (0.5 - 1)


def test_float_step_threshold_tie_does_not_fire() -> None:
    params = lif(0.5, v_threshold=0.5)

    v, _, spikes = float_step(params, 0.25, np.array([0.0]), None, np.array([1.0]))

    assert v.tolist() == [0.5]  # 0 + 0.5 * (0 - 0 + 1), exact in binary
    assert spikes.tolist() == [False]


def test_float_step_if_and_li_by_hand() -> None:
    if_params = NeuronParameters(kind="if", r=np.array([4.0]), v_leak=np.zeros(1), v_threshold=np.array([10.0]))
    li_params = NeuronParameters(kind="li", r=np.ones(1), v_leak=np.zeros(1), tau_mem=np.array([0.002]))

    v_if, _, if_spikes = float_step(if_params, 1e-3, np.array([0.5]), None, np.array([25.0]))
    v_li, _, li_spikes = float_step(li_params, 1e-3, np.array([0.0]), None, np.array([1e6]))

    assert v_if == pytest.approx([0.6])  # 0.5 + 1e-3 * 4 * 25
    assert if_spikes.tolist() == [False]
    assert v_li == pytest.approx([5e5])  # 0 + 0.5 * (0 - 0 + 1e6)
    assert li_spikes.tolist() == [False]


def test_float_step_cubalif_by_hand() -> None:
    params = NeuronParameters(
        kind="cubalif",
        r=np.array([2.0]),
        v_leak=np.zeros(1),
        tau_mem=np.array([0.004]),
        tau_syn=np.array([0.002]),
        w_in=np.array([3.0]),
        v_threshold=np.array([100.0]),
    )

    v, current, _ = float_step(params, 1e-3, np.array([1.0]), np.array([0.5]), np.array([2.0]))

    jumped = 0.5 + 0.5 * 3.0 * 2.0  # the current jumps before the membrane update
    assert v == pytest.approx([1.0 + 0.25 * (0.0 - 1.0 + 2.0 * jumped)])
    assert current == pytest.approx([jumped - 0.5 * jumped])


@given(weights=st.lists(st.integers(min_value=-64, max_value=64), min_size=1, max_size=30))
def test_if_integer_step_matches_float_step(weights: list[int]) -> None:
    # With r * dt = 1 and inputs on the weight grid both steps are exact, so
    # the integer state times the LSB must equal the float state.
    params = NeuronParameters(kind="if", r=np.array([1000.0]), v_leak=np.zeros(1), v_threshold=np.array([2.0]))
    integer = integer_parameters(params, dt=1e-3, quant=QuantConfig(), reset_mode="subtract")
    state = initial_state(integer)
    v_float = np.zeros(1)

    for word in weights:
        state, spikes = integer_step(integer, state, np.array([word]))
        v_float, _, float_spikes = float_step(
            params, 1e-3, v_float, None, np.array([word * STATE.lsb]), reset_mode="subtract"
        )

        assert spikes.tolist() == float_spikes.tolist()
        assert float(state.v[0]) * STATE.lsb == float(v_float[0])


@pytest.mark.parametrize(
    ("kinds", "latency"),
    [(["lif", "li"], 3), (["li"], 2), (["lif", "lif", "li"], 4), (["cubalif", "li"], 3), (["if", "li"], 3)],
)
def test_network_latency(kinds: list[str], latency: int) -> None:
    assert network_latency(kinds) == latency
