"""Neuron models of the accelerator: integer parameters and the reference time step.

The NIR neuron equations, integrated with forward Euler at timestep ``dt``, are

* LIF / LI: ``v <- v + k * (v_leak - v + r * x)`` with ``k = dt / tau_mem``
* IF: ``v <- v + dt * r * x``
* CubaLIF: the current jumps first, ``I <- I + k_syn * w_in * x``, the
  membrane integrates the jumped current, ``v <- v + k_mem * (v_leak - v + r * I)``,
  then the current decays, ``I <- I - k_syn * I``, with ``k_syn = dt / tau_syn``
  (the order of norse 1.1.0's ``lif_feed_forward_step``)

where ``x`` is the weighted sum of arriving spikes. The accelerator adds
weights without multiplying, so the input scaling ``r * k`` is folded into
the state units ("state" input scaling): the hardware state is
``u = v / s`` with ``s = r * k`` (LIF, LI), ``s = r * dt`` (IF) or
``s = r * w_in * k_mem * k_syn`` (CubaLIF, whose current is likewise held as
``i = I / (w_in * k_syn)``). Threshold, reset and leak potentials are divided
by ``s`` once, and the trained weights are added as they are, which keeps the
full weight precision. Per timestep and neuron the integer arithmetic is

``u <- sat(u - ((u - u_leak) * K >> fl_k) + x)``

(for CubaLIF, ``i <- sat(i + x)``, ``u <- sat(u - ((u - u_leak) * K_mem >> fl_k) + i)``,
``i <- i - (i * K_syn >> fl_k)``)

with ``K`` the decay factor ``k`` in the decay format ``Q(wl_k, fl_k)``,
``>>`` an arithmetic shift (floor) and ``sat`` saturation to the state format.
A neuron fires when ``u > u_threshold`` (strict), then resets to ``u_reset``
or, in ``"subtract"`` reset mode, subtracts the threshold. LI neurons never
fire: their states are the network output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ecs_common.errors import QuantizationError
from ecs_common.fixed_point import count_saturated, quantize, saturate
from ecs_common.formats import FixedPointFormat, QuantConfig

NeuronKind = Literal["lif", "li", "if", "cubalif"]
ResetMode = Literal["to_reset", "subtract"]

NEURON_KINDS: tuple[str, ...] = ("lif", "li", "if", "cubalif")
RESET_MODES: tuple[str, ...] = ("to_reset", "subtract")

# Timesteps each neuron kind adds between its input and its output. A CubaLIF
# membrane integrates the current that jumped in the same step, so it adds one too.
LAYER_LATENCY = {"lif": 1, "li": 1, "if": 1, "cubalif": 1}

# Timesteps the core pipeline adds once, on top of the layer latencies.
PIPELINE_LATENCY = 1


def network_latency(kinds: list[str]) -> int:
    """Return the timesteps between an input event and the output it causes.

    A network of L LIF/LI/IF layers answers input of step ``t`` at step
    ``t + L + 1``: one step per neuron layer plus one for the core pipeline.
    """
    return sum(LAYER_LATENCY[kind] for kind in kinds) + PIPELINE_LATENCY


@dataclass(frozen=True)
class NeuronParameters:
    """Float parameters of one neuron layer in NIR units, one value per neuron.

    Time constants are in seconds; potentials in the units of the trained model.
    Arrays are flat (one entry per neuron). Unused fields are ``None``.
    """

    kind: NeuronKind
    r: np.ndarray
    v_leak: np.ndarray
    tau_mem: np.ndarray | None = None
    tau_syn: np.ndarray | None = None
    w_in: np.ndarray | None = None
    v_threshold: np.ndarray | None = None
    v_reset: np.ndarray | None = None

    @property
    def size(self) -> int:
        """Number of neurons in the layer."""
        return int(np.asarray(self.r).size)


@dataclass(frozen=True)
class IntegerNeuronParameters:
    """Integer parameters of one neuron layer as the accelerator stores them.

    Potentials are state-format words in state units (``u = v / state_scale``);
    decay factors are decay-format words. ``state_scale`` is the float factor
    that turns state units back into NIR units.
    """

    kind: NeuronKind
    k_mem: np.ndarray
    v_leak: np.ndarray
    v_threshold: np.ndarray
    v_reset: np.ndarray
    state_scale: np.ndarray
    state_format: FixedPointFormat
    decay_format: FixedPointFormat
    reset_mode: ResetMode = "to_reset"
    k_syn: np.ndarray | None = None

    @property
    def size(self) -> int:
        """Number of neurons in the layer."""
        return int(self.k_mem.size)

    @property
    def fires(self) -> bool:
        """Whether the layer emits spikes (every kind but LI)."""
        return self.kind != "li"


@dataclass
class NeuronState:
    """Integer state of a batch of neurons: membrane ``v`` and, for CubaLIF, current ``i``."""

    v: np.ndarray
    i: np.ndarray | None = field(default=None)


def _flat(values: np.ndarray | None, name: str, size: int, default: float | None = None) -> np.ndarray:
    if values is None:
        if default is None:
            raise ValueError(f"neuron parameter {name!r} is missing")
        return np.full(size, default, dtype=np.float64)
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 1 and size != 1:
        array = np.full(size, float(array[0]))
    if array.size != size:
        raise ValueError(f"neuron parameter {name!r} has {array.size} values, expected {size} (one per neuron)")
    return array


def decay_factors(tau: np.ndarray, dt: float, fmt: FixedPointFormat, what: str) -> np.ndarray:
    """Quantize the decay factors ``dt / tau`` to ``fmt``, rejecting unusable ones.

    Raises :class:`QuantizationError` when ``tau`` is not positive, when
    ``dt / tau`` exceeds 1 (forward Euler would overshoot) or when a factor
    rounds to zero in ``fmt``.
    """
    tau = np.asarray(tau, dtype=np.float64)
    if np.any(tau <= 0) or not np.all(np.isfinite(tau)):
        raise QuantizationError(f"{what}: time constants must be positive and finite, got min {tau.min():g} s")
    factors = dt / tau
    if np.any(factors > 1.0):
        raise QuantizationError(
            f"{what}: dt / tau = {factors.max():g} exceeds 1 (tau {tau.min():g} s shorter than dt {dt:g} s); "
            "use a smaller dt or a longer time constant"
        )
    words = quantize(factors, fmt)
    zero = (words == 0) & (factors != 0)
    if np.any(zero):
        raise QuantizationError(
            f"{what}: decay factor dt / tau = {factors[zero].min():g} rounds to zero in {fmt} "
            f"(one LSB is {fmt.lsb:g}); add fractional bits to the decay format or use a shorter time constant"
        )
    return words


def state_scale(params: NeuronParameters, dt: float) -> np.ndarray:
    """Return the factor ``s`` with ``v = s * u`` that folds the input scaling into the state."""
    size = params.size
    r = _flat(params.r, "r", size)
    if params.kind in ("lif", "li"):
        return r * dt / _flat(params.tau_mem, "tau_mem", size)
    if params.kind == "if":
        return r * dt
    k_mem = dt / _flat(params.tau_mem, "tau_mem", size)
    k_syn = dt / _flat(params.tau_syn, "tau_syn", size)
    return r * _flat(params.w_in, "w_in", size, 1.0) * k_mem * k_syn


def _state_words(values: np.ndarray, scale: np.ndarray, fmt: FixedPointFormat, what: str) -> np.ndarray:
    if np.any(scale == 0):
        raise QuantizationError(f"{what}: the input scaling r * dt / tau is zero, so no input can reach the membrane")
    scaled = values / scale
    saturated = count_saturated(scaled, fmt)
    if saturated:
        raise QuantizationError(
            f"{what}: {saturated} value(s) up to {np.max(np.abs(scaled)):g} in state units exceed the state format "
            f"{fmt} (range {fmt.min_value:g} to {fmt.max_value:g}); widen the state word or lower the threshold"
        )
    return quantize(scaled, fmt)


def integer_parameters(
    params: NeuronParameters,
    dt: float,
    quant: QuantConfig,
    reset_mode: ResetMode = "to_reset",
    name: str = "layer",
) -> IntegerNeuronParameters:
    """Turn float NIR neuron parameters into the accelerator's integer parameters.

    ``dt`` is the timestep in seconds. ``name`` labels the layer in errors.
    Raises :class:`QuantizationError` for a decay factor that rounds to zero or
    a potential that does not fit the state format.
    """
    if params.kind not in NEURON_KINDS:
        raise ValueError(f"unknown neuron kind {params.kind!r}; expected one of {', '.join(NEURON_KINDS)}")
    if reset_mode not in RESET_MODES:
        raise ValueError(f"unknown reset mode {reset_mode!r}; expected one of {', '.join(RESET_MODES)}")
    if not dt > 0:
        raise ValueError(f"timestep dt must be positive, got {dt}")

    size = params.size
    state_fmt = quant.state_format
    decay_fmt = quant.decay_format

    # Check the time constants before state_scale divides by them.
    if params.kind == "if":
        k_mem = np.zeros(size, dtype=np.int64)
    else:
        k_mem = decay_factors(_flat(params.tau_mem, "tau_mem", size), dt, decay_fmt, f"{name}: tau_mem")
    k_syn = None
    if params.kind == "cubalif":
        k_syn = decay_factors(_flat(params.tau_syn, "tau_syn", size), dt, decay_fmt, f"{name}: tau_syn")

    scale = state_scale(params, dt)

    v_leak = _state_words(_flat(params.v_leak, "v_leak", size, 0.0), scale, state_fmt, f"{name}: v_leak")
    if params.kind == "li":
        v_threshold = np.full(size, state_fmt.max_int, dtype=np.int64)
        v_reset = np.zeros(size, dtype=np.int64)
    else:
        v_threshold = _state_words(
            _flat(params.v_threshold, "v_threshold", size), scale, state_fmt, f"{name}: v_threshold"
        )
        v_reset = _state_words(_flat(params.v_reset, "v_reset", size, 0.0), scale, state_fmt, f"{name}: v_reset")

    return IntegerNeuronParameters(
        kind=params.kind,
        k_mem=k_mem,
        k_syn=k_syn,
        v_leak=v_leak,
        v_threshold=v_threshold,
        v_reset=v_reset,
        state_scale=scale,
        state_format=state_fmt,
        decay_format=decay_fmt,
        reset_mode=reset_mode,
    )


def initial_state(params: IntegerNeuronParameters, batch_shape: tuple[int, ...] = ()) -> NeuronState:
    """Return the all-zero integer state for a batch of ``batch_shape`` samples."""
    shape = (*batch_shape, params.size)
    current = np.zeros(shape, dtype=np.int64) if params.kind == "cubalif" else None
    return NeuronState(v=np.zeros(shape, dtype=np.int64), i=current)


def integer_step(params: IntegerNeuronParameters, state: NeuronState, x: np.ndarray) -> tuple[NeuronState, np.ndarray]:
    """Advance a layer by one timestep in integer arithmetic.

    ``x`` holds the summed weight words (plus bias words) that arrive at each
    neuron this step, shaped like ``state.v``. Returns the new state and the
    spikes as a boolean array (all ``False`` for LI layers).
    """
    fmt = params.state_format
    fl_k = params.decay_format.fl
    x = np.asarray(x, dtype=np.int64)
    v = state.v

    leak = np.right_shift((v - params.v_leak) * params.k_mem, fl_k)
    if params.kind == "cubalif":
        assert state.i is not None and params.k_syn is not None
        jumped = saturate(state.i + x, fmt)
        v = saturate(v - leak + jumped, fmt)
        current = jumped - np.right_shift(jumped * params.k_syn, fl_k)
    else:
        v = saturate(v - leak + x, fmt)
        current = None

    if not params.fires:
        return NeuronState(v=v, i=current), np.zeros(v.shape, dtype=bool)

    spikes = v > params.v_threshold
    if params.reset_mode == "subtract":
        v = np.where(spikes, v - params.v_threshold, v)
    else:
        v = np.where(spikes, params.v_reset, v)
    return NeuronState(v=v, i=current), spikes


def float_step(
    params: NeuronParameters,
    dt: float,
    v: np.ndarray,
    current: np.ndarray | None,
    x: np.ndarray,
    reset_mode: ResetMode = "to_reset",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Advance a layer by one forward-Euler timestep in float64, in NIR units.

    ``x`` is the weighted input of this step. Returns ``(v, current, spikes)``.
    This is the reference that exported NIR files are checked against.
    """
    size = params.size
    r = _flat(params.r, "r", size)
    v_leak = _flat(params.v_leak, "v_leak", size, 0.0)

    if params.kind in ("lif", "li"):
        k = dt / _flat(params.tau_mem, "tau_mem", size)
        v = v + k * (v_leak - v + r * x)
    elif params.kind == "if":
        v = v + dt * r * x
    else:
        assert current is not None
        k_mem = dt / _flat(params.tau_mem, "tau_mem", size)
        k_syn = dt / _flat(params.tau_syn, "tau_syn", size)
        w_in = _flat(params.w_in, "w_in", size, 1.0)
        current = current + k_syn * w_in * x
        v = v + k_mem * (v_leak - v + r * current)
        current = current - k_syn * current

    if params.kind == "li":
        return v, current, np.zeros(v.shape, dtype=bool)

    threshold = _flat(params.v_threshold, "v_threshold", size)
    spikes = v > threshold
    if reset_mode == "subtract":
        v = np.where(spikes, v - threshold, v)
    else:
        v = np.where(spikes, _flat(params.v_reset, "v_reset", size, 0.0), v)
    return v, current, spikes
