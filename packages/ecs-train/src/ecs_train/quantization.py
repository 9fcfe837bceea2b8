"""Post-training weight quantization and quantized modules that run the accelerator's integer arithmetic."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from norse.torch import IAFCell, LIBoxCell, LIFBoxCell, LIFCell
from norse.torch.functional.reset import reset_subtract
from norse.torch.functional.threshold import threshold
from torch import nn

from ecs_common.errors import ConfigError, QuantizationError
from ecs_common.fixed_point import count_saturated, quantize_nonzero
from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_common.neuron import IntegerNeuronParameters, NeuronParameters, ResetMode, integer_parameters

if TYPE_CHECKING:
    from ecs_train.models import SpikingNetwork

logger = logging.getLogger(__name__)

# float32 represents every integer up to 2**24 exactly, so a float32 matmul of
# integer-valued spikes and weight words is exact while no sum exceeds it.
FLOAT32_EXACT_LIMIT = 2**24

# float64 represents every integer up to 2**53 exactly.
FLOAT64_EXACT_BITS = 53

NORSE_CELL_KINDS: dict[type, str] = {LIFBoxCell: "lif", LIFCell: "cubalif", IAFCell: "if", LIBoxCell: "li"}


def neuron_kind(cell: nn.Module) -> str:
    """Return the NIR neuron kind ("lif", "cubalif", "if" or "li") of a norse cell or quantized neuron."""
    if isinstance(cell, QuantizedNeuron):
        return cell.kind
    for cell_type, kind in NORSE_CELL_KINDS.items():
        if type(cell) is cell_type:
            return kind
    supported = ", ".join(cell_type.__name__ for cell_type in NORSE_CELL_KINDS)
    raise TypeError(f"unsupported neuron module {type(cell).__name__}; expected one of {supported}")


def is_neuron(module: nn.Module) -> bool:
    """Return whether ``module`` is a neuron layer, either a supported norse cell or a :class:`QuantizedNeuron`."""
    return isinstance(module, QuantizedNeuron) or type(module) in NORSE_CELL_KINDS


def _per_neuron(value: Any, size: int) -> np.ndarray:
    array = np.asarray(torch.as_tensor(value).detach().cpu(), dtype=np.float64).ravel()
    if array.size == 1:
        return np.full(size, float(array[0]))
    if array.size != size:
        raise ValueError(f"neuron parameter has {array.size} values, expected 1 or {size} (one per neuron)")
    return array


def neuron_parameters(cell: nn.Module, size: int, dt: float) -> NeuronParameters:
    """Return the NIR parameters that reproduce a norse cell, one value per neuron.

    ``size`` is the number of neurons in the layer and ``dt`` the timestep in
    seconds. The mapping from norse to NIR terms is:

    * ``LIFBoxCell`` is LIF with ``r = 1`` and ``tau_mem = 1 / tau_mem_inv``.
    * ``LIBoxCell`` is LI with ``r = 1``.
    * ``IAFCell`` adds its input unscaled (``v <- v + x``), which is IF with ``r = 1 / dt``.
    * ``LIFCell`` is CubaLIF with ``r = 1`` and ``w_in = tau_syn / dt``, so that
      ``w_in * dt / tau_syn = 1`` and each input adds to the current unscaled,
      as norse's current jump does.
    """
    kind = neuron_kind(cell)
    # The cell's norse parameters, for example LIFBoxParameters. norse ships no type information.
    p: Any = cell.p
    ones = np.ones(size)

    if kind == "if":
        return NeuronParameters(
            kind="if",
            r=ones / dt,
            v_leak=np.zeros(size),
            v_threshold=_per_neuron(p.v_th, size),
            v_reset=_per_neuron(p.v_reset, size),
        )

    tau_mem = 1.0 / _per_neuron(p.tau_mem_inv, size)
    v_leak = _per_neuron(p.v_leak, size)
    if kind == "li":
        return NeuronParameters(kind="li", r=ones, v_leak=v_leak, tau_mem=tau_mem)
    if kind == "lif":
        return NeuronParameters(
            kind="lif",
            r=ones,
            v_leak=v_leak,
            tau_mem=tau_mem,
            v_threshold=_per_neuron(p.v_th, size),
            v_reset=_per_neuron(p.v_reset, size),
        )

    tau_syn = 1.0 / _per_neuron(p.tau_syn_inv, size)
    return NeuronParameters(
        kind="cubalif",
        r=ones,
        v_leak=v_leak,
        tau_mem=tau_mem,
        tau_syn=tau_syn,
        w_in=tau_syn / dt,
        v_threshold=_per_neuron(p.v_th, size),
        v_reset=_per_neuron(p.v_reset, size),
    )


class _StraightThrough(torch.autograd.Function):
    """Return ``exact`` in the forward pass and pass the gradient to ``surrogate`` unchanged."""

    @staticmethod
    def forward(ctx: Any, surrogate: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        return exact.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output, None


def straight_through(surrogate: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Return the values of ``exact`` with the gradient of ``surrogate`` (straight-through estimator)."""
    return _StraightThrough.apply(surrogate, exact.detach())


def weight_words(weight: torch.Tensor, fmt: FixedPointFormat) -> torch.Tensor:
    """Quantize weights to integer words of ``fmt`` with a straight-through gradient.

    Rounds half to even (``torch.round``), then saturates, as
    ``ecs_common.fixed_point.quantize`` does. The result contains integer values
    in the weight's dtype, and its gradient with respect to ``weight`` is ``2**fl``.
    """
    scaled = weight * fmt.scale
    exact = torch.clamp(torch.round(scaled.detach()), fmt.min_int, fmt.max_int)
    return straight_through(scaled, exact)


class _QuantizedWeightMixin:
    """Weight quantization shared by :class:`QuantizedLinear` and :class:`QuantizedConv2d`."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    weight_format: FixedPointFormat
    max_input: float
    quantized: bool

    def _init_quantization(self, weight_format: FixedPointFormat, max_input: float) -> None:
        self.weight_format = weight_format
        self.max_input = float(max_input)
        self.quantized = True

    def weight_words(self) -> torch.Tensor:
        """Return the weight as integer words of the weight format (straight-through gradient)."""
        return weight_words(self.weight, self.weight_format)

    def bias_words(self) -> torch.Tensor | None:
        """Return the bias as integer words of the weight format, or ``None`` without bias."""
        if self.bias is None:
            return None
        return weight_words(self.bias, self.weight_format)

    def quantized_weight(self) -> torch.Tensor:
        """Return the weight the accelerator uses: exact multiples of the weight LSB, pruned entries 0."""
        return self.weight_words() * self.weight_format.lsb

    def quantized_bias(self) -> torch.Tensor | None:
        """Return the bias the accelerator uses (multiples of the weight LSB), or ``None`` without bias."""
        words = self.bias_words()
        return None if words is None else words * self.weight_format.lsb

    def _sum_dtype(self, fan_in: int) -> torch.dtype:
        # Integer sums stay exact in float32 up to 2**24, so wider sums use float64.
        bound = fan_in * self.max_input * (1 << (self.weight_format.wl - 1))
        if self.bias is not None:
            bound += 1 << (self.weight_format.wl - 1)
        return torch.float32 if bound < FLOAT32_EXACT_LIMIT else torch.float64


# torch 2.14's nn.Linear has no class-level annotation of bias, so mypy infers Parameter from the
# assignment in __init__, although bias is None for a layer built with bias=False.
class QuantizedLinear(_QuantizedWeightMixin, nn.Linear):  # type: ignore[misc]
    """Linear layer whose quantized forward returns the integer sum of weight words.

    The input must hold integers (spikes, or spike counts up to ``max_input``)
    so that the sum is exact. With ``quantized`` set to False it behaves as a
    plain ``nn.Linear``.
    """

    @classmethod
    def from_float(cls, linear: nn.Linear, weight_format: FixedPointFormat, max_input: float = 1.0) -> QuantizedLinear:
        """Turn ``linear`` into a quantized layer in place and return it.

        Parameters, buffers and hooks (such as ``torch.nn.utils.prune``
        masks) stay as they are, so optimizer state remains valid.
        """
        linear.__class__ = cls
        quantized = cast(QuantizedLinear, linear)
        quantized._init_quantization(weight_format, max_input)
        return quantized

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return super().forward(input)
        dtype = self._sum_dtype(self.in_features)
        bias = self.bias_words()
        return F.linear(input.to(dtype), self.weight_words().to(dtype), None if bias is None else bias.to(dtype))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_format={self.weight_format}, quantized={self.quantized}"


class QuantizedConv2d(_QuantizedWeightMixin, nn.Conv2d):
    """2-D convolution whose quantized forward returns integer sums of weight words.

    Behaves as :class:`QuantizedLinear` does, for convolutions.
    """

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_format: FixedPointFormat, max_input: float = 1.0) -> QuantizedConv2d:
        """Turn ``conv`` into a quantized layer in place and return it, keeping parameters, buffers and hooks."""
        conv.__class__ = cls
        quantized = cast(QuantizedConv2d, conv)
        quantized._init_quantization(weight_format, max_input)
        return quantized

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.quantized:
            return super().forward(input)
        fan_in = self.weight[0].numel()
        dtype = self._sum_dtype(fan_in)
        bias = self.bias_words()
        # NOTE: on CUDA, cuDNN may run float32 convolutions in TF32, which keeps
        # 11 significant bits of each operand; weight words up to wl = 11 bits
        # and spike counts stay exact, wider words may not.
        return self._conv_forward(
            input.to(dtype), self.weight_words().to(dtype), None if bias is None else bias.to(dtype)
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_format={self.weight_format}, quantized={self.quantized}"


class IntegerState(NamedTuple):
    """State of a quantized neuron layer in state-format words (float64 tensors holding integers)."""

    v: torch.Tensor
    i: torch.Tensor | None = None


class QuantizedNeuron(nn.Module):
    """Neuron layer that runs the integer arithmetic of ``ecs_common.neuron.integer_step``.

    ``cell`` is the norse cell whose float parameters define the NIR
    parameters. ``dt`` is the timestep in seconds and ``shape`` the layer's
    shape without the batch dimension. The integer parameters come from
    ``ecs_common.neuron.integer_parameters``.

    The quantized forward takes the integer sum of arriving weight words. It
    returns spikes (0.0 or 1.0), or for LI layers the membrane state in NIR
    units, and the new :class:`IntegerState` of words. The floor of the decay
    passes gradients straight through. The spike's surrogate gradient is
    evaluated on ``(u - u_threshold) * state_scale * lsb``, the distance to
    threshold in NIR units, so gradients have the scale of the float model.
    With ``quantized`` set to False the module runs ``cell`` unchanged.
    """

    # Non-persistent float64 buffers of the layer's shape, registered by _register.
    k_mem: torch.Tensor
    v_leak: torch.Tensor
    v_threshold: torch.Tensor
    v_reset: torch.Tensor
    unit: torch.Tensor
    k_syn: torch.Tensor
    slope_mem: torch.Tensor
    slope_syn: torch.Tensor

    def __init__(
        self,
        cell: nn.Module,
        shape: tuple[int, ...],
        dt: float,
        quant_cfg: QuantConfig,
        reset_mode: ResetMode = "to_reset",
        name: str = "layer",
    ) -> None:
        super().__init__()
        self.cell = cell
        self.kind = neuron_kind(cell)
        self.shape = tuple(int(size) for size in shape)
        self.dt = float(dt)
        self.reset_mode = reset_mode
        self.quant_cfg = quant_cfg
        self.name = name
        self.quantized = True
        _check_reset_mode(cell, self.kind, reset_mode, name)

        self.integer_params: IntegerNeuronParameters = integer_parameters(
            self.neuron_parameters(), self.dt, quant_cfg, reset_mode, name
        )
        params = self.integer_params
        state_format = quant_cfg.state_format
        self.state_min = float(state_format.min_int)
        self.state_max = float(state_format.max_int)
        self.decay_fl = quant_cfg.decay_format.fl

        # The decay product (u - u_leak) * K is exact in float64 while it stays
        # below 2**53, so wider formats compute it in int64.
        self.decay_exact_in_float64 = state_format.wl + 1 + quant_cfg.decay_format.fl <= FLOAT64_EXACT_BITS

        self._register("k_mem", params.k_mem)
        self._register("v_leak", params.v_leak)
        self._register("v_threshold", params.v_threshold)
        self._register("v_reset", params.v_reset)
        self._register("unit", params.state_scale * state_format.lsb)
        self._register("k_syn", params.k_syn if params.k_syn is not None else np.zeros(params.size))

        # Decay factors K / 2**fl. Scaling by a power of two is exact, so
        # floor((u - u_leak) * (K / 2**fl)) equals the arithmetic shift of integer_step.
        k_syn = params.k_syn if params.k_syn is not None else np.zeros(params.size)
        self._register("slope_mem", params.k_mem * 2.0**-self.decay_fl)
        self._register("slope_syn", k_syn * 2.0**-self.decay_fl)

        self.method = getattr(cell.p, "method", "super")
        self.alpha = getattr(cell.p, "alpha", 100.0)

    def _register(self, name: str, values: np.ndarray) -> None:
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64)).reshape(self.shape)
        self.register_buffer(name, tensor, persistent=False)

    @property
    def size(self) -> int:
        """Number of neurons in the layer."""
        return int(np.prod(self.shape))

    def neuron_parameters(self) -> NeuronParameters:
        """Return the layer's float NIR parameters, flat, one value per neuron."""
        return neuron_parameters(self.cell, self.size, self.dt)

    def initial_state(self, x: torch.Tensor) -> IntegerState:
        """Return the all-zero integer state for the batch of ``x``."""
        zeros = torch.zeros((x.shape[0], *self.shape), dtype=torch.float64, device=x.device)
        return IntegerState(v=zeros, i=zeros.clone() if self.kind == "cubalif" else None)

    def _decay(
        self, value: torch.Tensor, rest: torch.Tensor | float, factor: torch.Tensor, slope: torch.Tensor
    ) -> torch.Tensor:
        # floor((value - rest) * K / 2**fl_k) with a straight-through gradient; slope is K / 2**fl_k.
        surrogate = (value - rest) * slope
        return straight_through(surrogate, self._exact_decay(value.detach(), rest, factor, slope))

    def _saturate(self, value: torch.Tensor) -> torch.Tensor:
        return torch.clamp(value, self.state_min, self.state_max)

    def _exact_decay(
        self, value: torch.Tensor, rest: torch.Tensor | float, factor: torch.Tensor, slope: torch.Tensor
    ) -> torch.Tensor:
        # floor((value - rest) * K / 2**fl_k) without a gradient, where factor is the decay word K
        # and slope is K / 2**fl_k.
        if self.decay_exact_in_float64:
            return torch.floor((value - rest) * slope)
        difference = (value - rest).to(torch.int64)
        return torch.bitwise_right_shift(difference * factor.to(torch.int64), self.decay_fl).to(torch.float64)

    def _in_range(self, value: torch.Tensor) -> torch.Tensor:
        # Where torch.clamp passes the gradient: strictly inside the state format's range, so a
        # value equal to a bound gets none, as torch 2.14's clamp backward does.
        return (value > self.state_min) & (value < self.state_max)

    def _reset(self, u: torch.Tensor) -> torch.Tensor:
        # The membrane after the reset of every neuron whose saturated membrane u crossed the threshold.
        if self.reset_mode == "subtract":
            return u - (u > self.v_threshold) * self.v_threshold
        return torch.where(u > self.v_threshold, self.v_reset, u)

    def integrate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run the integer arithmetic over all timesteps of ``x`` (``[T, B, *shape]``) without gradients.

        Starts from the all-zero state and computes what :meth:`forward`
        computes step by step. Returns four float64 ``[T, B, *shape]``
        tensors: the outputs (spikes, or LI states in NIR units), the membrane
        words after each step, the membrane before saturation, and for
        CubaLIF the jumped current before saturation (``None`` for other
        kinds). The backward pass of :meth:`run_sequence` needs the last two.
        """
        x = x.detach().to(torch.float64)
        v = torch.zeros_like(x[0])
        current = torch.zeros_like(x[0]) if self.kind == "cubalif" else None
        membrane = torch.empty_like(x)
        jumped_all = torch.empty_like(x) if current is not None else None

        for step in range(x.shape[0]):
            leak = self._exact_decay(v, self.v_leak, self.k_mem, self.slope_mem)
            u = membrane[step]
            if current is not None and jumped_all is not None:
                jumped = torch.add(current, x[step], out=jumped_all[step])
                jumped = jumped.clamp(self.state_min, self.state_max)
                torch.sub(v, leak, out=u).add_(jumped)
                current = jumped - self._exact_decay(jumped, 0.0, self.k_syn, self.slope_syn)
            else:
                torch.sub(v, leak, out=u).add_(x[step])
            v = u.clamp(self.state_min, self.state_max)
            if self.kind != "li":
                v = self._reset(v)

        # Outputs and words follow from the membrane before saturation, for all timesteps at once.
        saturated = membrane.clamp(self.state_min, self.state_max)
        if self.kind == "li":
            return saturated * self.unit, saturated, membrane, jumped_all
        spikes = (saturated > self.v_threshold).to(torch.float64)
        return spikes, self._reset(saturated), membrane, jumped_all

    def run_sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the quantized layer over all timesteps of ``x`` (``[T, B, *shape]``) from the zero state.

        Returns the outputs and the membrane words after each step (float64
        ``[T, B, *shape]``), equal to those of :meth:`forward` called step by
        step. The gradients with respect to ``x`` are the same as well, up to
        float32 rounding. The whole sequence is one autograd node, and its
        backward pass applies the same straight-through and surrogate rules
        in reverse time. Autograd therefore records one node per layer, not
        about twenty per timestep.
        """
        if torch.is_grad_enabled() and x.requires_grad:
            outputs, words = _NeuronSequence.apply(x, self)
            return outputs, words
        outputs, words, _, _ = self.integrate(x)
        return outputs, words

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        if not self.quantized:
            return self.cell(x, state)

        x = x.to(torch.float64)
        if state is None:
            state = self.initial_state(x)

        v = state.v
        current = state.i
        leak = self._decay(v, self.v_leak, self.k_mem, self.slope_mem)
        if self.kind == "cubalif":
            # norse 1.1.0's order, as in integer_step: the input jumps into the synaptic current, the membrane
            # integrates that current in the same step, then the current decays.
            jumped = self._saturate(current + x)
            v = self._saturate(v - leak + jumped)
            current = jumped - self._decay(jumped, 0.0, self.k_syn, self.slope_syn)
        else:
            v = self._saturate(v - leak + x)

        if self.kind == "li":
            return v * self.unit, IntegerState(v=v, i=current)

        # Strict threshold: (v - threshold) * unit > 0 exactly when v > threshold.
        spikes = threshold((v - self.v_threshold) * self.unit, self.method, self.alpha)
        if self.reset_mode == "subtract":
            v = v - spikes * self.v_threshold
        else:
            v = (1 - spikes) * v + spikes * self.v_reset
        return spikes, IntegerState(v=v, i=current)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind}, shape={self.shape}, dt={self.dt}, reset_mode={self.reset_mode}, "
            f"state_format={self.quant_cfg.state_format}, decay_format={self.quant_cfg.decay_format}, "
            f"quantized={self.quantized}"
        )


class _NeuronSequence(torch.autograd.Function):
    """Autograd node for all timesteps of a :class:`QuantizedNeuron` (see ``run_sequence``).

    With the straight-through decay, the gradient with respect to the
    integrated membrane ``u`` is linear in the next step's gradient:
    ``g_u[t] = C[t] * g_u[t+1] + D[t]``. ``C`` and ``D`` depend only on values
    saved in the forward pass, so the backward pass computes them for all
    timesteps at once and then runs the recurrence.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, neuron: QuantizedNeuron) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, words, membrane, jumped = neuron.integrate(x)
        ctx.neuron = neuron
        ctx.input_dtype = x.dtype
        ctx.mark_non_differentiable(words)
        ctx.save_for_backward(membrane, *([] if jumped is None else [jumped]))
        return outputs, words

    @staticmethod
    def backward(ctx: Any, grad_outputs: torch.Tensor, grad_words: torch.Tensor) -> tuple[torch.Tensor, None]:
        neuron: QuantizedNeuron = ctx.neuron
        membrane, *rest = ctx.saved_tensors

        # Gradients need no exact integers. float32 represents every membrane word of formats up to 24 bits.
        dtype = torch.float32 if neuron.quant_cfg.state_format.wl <= 24 else torch.float64
        membrane = membrane.to(dtype)
        passes = neuron._in_range(membrane)
        u = membrane.clamp(neuron.state_min, neuron.state_max)
        grad_outputs = grad_outputs.to(dtype)
        unit = neuron.unit.to(dtype)
        keep_mem = (1.0 - neuron.slope_mem).to(dtype)

        # carry is d(membrane word after the step) / du, and direct is d(loss) / du through this step's output.
        if neuron.kind == "li":
            carry = passes * keep_mem
            direct = grad_outputs * unit
        else:
            v_threshold = neuron.v_threshold.to(dtype)
            # The spike's surrogate derivative, from norse's own threshold function, for all timesteps at once.
            distance = ((u - v_threshold) * unit).requires_grad_(True)
            with torch.enable_grad():
                spikes = threshold(distance, neuron.method, neuron.alpha)
                (slope,) = torch.autograd.grad(spikes, distance, torch.ones_like(spikes))
            surrogate = slope * unit
            if neuron.reset_mode == "subtract":
                carry = 1.0 - surrogate * v_threshold
            else:
                carry = (u <= v_threshold) + surrogate * (neuron.v_reset.to(dtype) - u)
            carry = carry * passes * keep_mem
            direct = grad_outputs * surrogate
        direct = direct * passes

        grad_u = direct
        for step in range(u.shape[0] - 2, -1, -1):
            grad_u[step].addcmul_(carry[step], grad_u[step + 1])
        if not rest:
            return grad_u.to(ctx.input_dtype), None

        # CubaLIF: the jumped current feeds the membrane and, decayed, the next step's current.
        jumped = rest[0].to(dtype)
        jump_passes = neuron._in_range(jumped)
        grad_j = grad_u * jump_passes
        keep = jump_passes * (1.0 - neuron.slope_syn).to(dtype)
        for step in range(u.shape[0] - 2, -1, -1):
            grad_j[step].addcmul_(keep[step], grad_j[step + 1])
        return grad_j.to(ctx.input_dtype), None


def _check_reset_mode(cell: nn.Module, kind: str, reset_mode: str, name: str) -> None:
    if kind == "li":
        return
    if reset_mode not in ("to_reset", "subtract"):
        raise ConfigError(f"{name}: invalid reset_mode {reset_mode!r}; expected 'to_reset' or 'subtract'")
    cell_subtracts = getattr(cell.p, "reset_method", None) is reset_subtract
    if cell_subtracts != (reset_mode == "subtract"):
        cell_mode = "subtract" if cell_subtracts else "to_reset"
        raise ConfigError(
            f"{name}: reset_mode {reset_mode!r} differs from the norse cell's reset ({cell_mode}); "
            "build the cell with the same reset mode"
        )


QUANTIZED_MODULES = (QuantizedLinear, QuantizedConv2d, QuantizedNeuron)


def quantize_model(model: SpikingNetwork, quant_cfg: QuantConfig) -> SpikingNetwork:
    """Switch a network to the quantized forward, in place, and return it.

    ``model`` is an ``ecs_train.models.SpikingNetwork`` (any module with
    ``layers``, ``layer_shapes``, ``dt`` and ``reset_mode``). Linear and Conv2d
    layers become :class:`QuantizedLinear` / :class:`QuantizedConv2d` in place,
    keeping their parameters and hooks, and norse cells are wrapped in
    :class:`QuantizedNeuron`. Stored weights are not rounded (see
    :func:`quantize_weights`). Calling it on a quantized model re-enables the
    quantized forward and changes nothing else. Raises
    :class:`QuantizationError` when a neuron parameter does not fit its format.
    """
    max_input = 1.0
    for index, layer in enumerate(list(model.layers)):
        name = f"layers.{index}"
        if isinstance(layer, QUANTIZED_MODULES):
            layer.quantized = True
        elif isinstance(layer, nn.Linear):
            model.layers[index] = QuantizedLinear.from_float(layer, quant_cfg.weight_format, max_input)
        elif isinstance(layer, nn.Conv2d):
            model.layers[index] = QuantizedConv2d.from_float(layer, quant_cfg.weight_format, max_input)
        elif is_neuron(layer):
            model.layers[index] = QuantizedNeuron(
                layer, model.layer_shapes[index], model.dt, quant_cfg, model.reset_mode, name
            )

        # Track the largest integer a layer's input can hold, for exact sums.
        if is_neuron(layer):
            max_input = 1.0
        else:
            max_input *= float(getattr(layer, "window_size", 1))

    device = next(model.parameters()).device
    model.to(device)
    model.quant_cfg = quant_cfg
    return model


def is_quantized(model: nn.Module) -> bool:
    """Return whether the model runs the quantized forward (any quantized module with ``quantized`` set)."""
    return any(isinstance(module, QUANTIZED_MODULES) and module.quantized for module in model.modules())


@contextmanager
def float_forward(model: nn.Module) -> Iterator[nn.Module]:
    """Run a quantized model's float forward inside the ``with`` block (same weights, norse cells)."""
    modules = [module for module in model.modules() if isinstance(module, QUANTIZED_MODULES)]
    previous = [module.quantized for module in modules]
    for module in modules:
        module.quantized = False
    try:
        yield model
    finally:
        for module, was_quantized in zip(modules, previous, strict=True):
            module.quantized = was_quantized


@dataclass(frozen=True)
class LayerWeightReport:
    """Outcome of quantizing one weight tensor."""

    name: str
    num_weights: int
    num_saturated: int
    num_zero: int
    max_abs: float


@dataclass
class WeightQuantizationReport:
    """Outcome of :func:`quantize_weights` for every Linear and Conv2d layer."""

    weight_format: FixedPointFormat
    layers: list[LayerWeightReport] = field(default_factory=list)

    @property
    def num_saturated(self) -> int:
        """Weights whose rounded word lay outside the format and were clipped, over all layers."""
        return sum(layer.num_saturated for layer in self.layers)

    @property
    def num_weights(self) -> int:
        """Weights quantized, over all layers."""
        return sum(layer.num_weights for layer in self.layers)


def quantize_weights(model: nn.Module, wl: int, fl: int) -> WeightQuantizationReport:
    """Round every Linear and Conv2d weight (and bias) of ``model`` to the grid of ``Q(wl, fl)``, in place.

    Rounds half to even and saturates, as ``ecs_common.fixed_point.quantize``
    does, and stores the dequantized values, so weights become exact multiples
    of ``2**-fl``. Returns a report of saturated weights per layer and logs a
    warning for each layer that saturated. Raises :class:`QuantizationError`
    when a whole nonzero weight matrix quantizes to zero.
    """
    fmt = FixedPointFormat(wl=wl, fl=fl)
    report = WeightQuantizationReport(weight_format=fmt)

    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        for parameter_name in ("weight", "bias"):
            parameter = getattr(module, parameter_name, None)
            if parameter is None:
                continue
            label = f"{name}.{parameter_name}" if name else parameter_name
            values = parameter.detach().cpu().to(torch.float64).numpy()
            words = quantize_nonzero(values, fmt, f"{parameter_name} of layer {name!r}")
            saturated = count_saturated(values, fmt)
            layer_report = LayerWeightReport(
                name=label,
                num_weights=int(values.size),
                num_saturated=saturated,
                num_zero=int(np.count_nonzero(words == 0)),
                max_abs=float(np.max(np.abs(values))) if values.size else 0.0,
            )
            report.layers.append(layer_report)
            if saturated:
                logger.warning(
                    "%d of %d weights of %s saturated in %s (largest magnitude %.3g, range %.3g to %.3g)",
                    saturated,
                    values.size,
                    label,
                    fmt,
                    layer_report.max_abs,
                    fmt.min_value,
                    fmt.max_value,
                )
            with torch.no_grad():
                parameter.copy_(torch.as_tensor(words * fmt.lsb, dtype=parameter.dtype, device=parameter.device))

    if not report.layers:
        raise QuantizationError("the model has no Linear or Conv2d layer to quantize")
    return report


def prepare_quantized(model: SpikingNetwork, quant_cfg: QuantConfig) -> WeightQuantizationReport:
    """Apply post-training quantization: round the weights in place, then switch to the quantized forward."""
    fmt = quant_cfg.weight_format
    report = quantize_weights(model, fmt.wl, fmt.fl)
    quantize_model(model, quant_cfg)
    return report
