"""Neuron layers to NIR: norse cells and quantized neuron wrappers become LIF, LI, IF or CubaLIF nodes.

Every converter first builds :class:`ecs_common.neuron.NeuronParameters` in
NIR units (time constants in seconds), then one function turns those into a
NIR node whose parameters are float32 arrays of the layer's shape. How each
norse 1.1.0 cell maps onto the forward-Euler NIR equations of
:mod:`ecs_common.neuron` (``k = dt / tau``):

* ``LIFBoxCell``: ``v += dt * tau_mem_inv * (v_leak - v + x)``, so ``LIF`` with
  ``tau = 1 / tau_mem_inv`` and ``r = 1``. Its ``reset_method`` gives the reset
  mode (``reset_value`` or ``reset_subtract``).
* ``LIBoxCell``: ``LI`` with ``tau = 1 / tau_mem_inv`` and ``r = 1``.
* ``IAFCell``: ``v += x`` whatever ``dt`` is, so ``IF`` with ``r = 1 / dt``.
* ``LIFCell``: norse adds the input to the synaptic current ``j = i + x``, feeds
  ``j`` to the membrane in the same step and then decays ``i = (1 - k_syn) * j``.
  The NIR current ``I`` follows ``I += k_syn * (w_in * x - I)``, which equals
  ``k_syn * w_in * j``, so ``w_in = 1 / k_syn = tau_syn / dt`` and ``r = 1`` make
  ``r * I`` equal norse's current. When ``k_syn = 1`` the current is gone after
  every step and the cell is exactly a ``LIFBoxCell``, so it exports as ``LIF``.
* ``LICell`` and ``LIFRecurrentCell`` export only when ``k_syn = 1``, as ``LI``
  and as ``LIF`` with a recurrent ``Linear`` edge. Their converters explain why.

The sequence modules ``LIF``, ``LI``, ``IAF`` and ``LIFRecurrent`` export like their cells.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import nir
import numpy as np
import torch
from norse.torch.functional.reset import reset_subtract, reset_value
from norse.torch.module.iaf import IAF, IAFCell
from norse.torch.module.leaky_integrator import LI, LICell
from norse.torch.module.leaky_integrator_box import LIBoxCell
from norse.torch.module.lif import LIF, LIFCell, LIFRecurrent, LIFRecurrentCell
from norse.torch.module.lif_box import LIFBoxCell

from ecs_common.neuron import NEURON_KINDS, RESET_MODES, NeuronParameters
from ecs_train.nir_export.errors import ExportError, UnsupportedModuleError
from ecs_train.nir_export.registry import ConvertedLayer, LayerContext, qualified_name, register_converter
from ecs_train.nir_export.weights import export_parameter

logger = logging.getLogger(__name__)

# Relative tolerance for "dt * tau_syn_inv equals 1" and for comparing a module's dt with the export dt.
_RELATIVE_TOLERANCE = 1e-6


def per_neuron(value: Any, shape: tuple[int, ...], name: str, context: LayerContext) -> np.ndarray:
    """Broadcast a scalar, per-channel or per-neuron parameter to a float64 array of the layer's shape.

    A flat array with one value per neuron is reshaped to ``shape``.
    """
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu().numpy().astype(np.float64)
    else:
        array = np.asarray(value, dtype=np.float64)

    size = math.prod(shape)
    if array.ndim == 1 and array.size == size and array.shape != shape:
        array = array.reshape(shape)
    try:
        array = np.broadcast_to(array, shape).copy()
    except ValueError:
        raise ExportError(
            f"{context.module_label}: neuron parameter {name!r} has shape {tuple(array.shape)}, which does not "
            f"broadcast to the layer shape {shape}; give one value, one per channel or one per neuron"
        ) from None
    if not np.all(np.isfinite(array)):
        raise ExportError(f"{context.module_label}: neuron parameter {name!r} contains non-finite values")
    return array


def _float32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def neuron_node(params: NeuronParameters, context: LayerContext) -> nir.NIRNode:
    """Build the NIR node for one neuron layer, every parameter a float32 array of the layer's shape.

    Firing layers without ``v_reset`` get a reset potential of 0, so the
    field is always present in the file.
    """
    shape = context.output_shape
    kind = params.kind
    if kind not in NEURON_KINDS:
        raise ExportError(f"{context.module_label}: unknown neuron kind {kind!r}; expected one of {NEURON_KINDS}")

    def array(name: str, value: Any, default: float | None = None) -> np.ndarray:
        if value is None:
            if default is None:
                raise ExportError(f"{context.module_label}: {kind} neuron parameter {name!r} is missing")
            value = default
        return _float32(per_neuron(value, shape, name, context))

    def time_constant(name: str, value: Any) -> np.ndarray:
        tau = array(name, value)
        if np.any(tau <= 0):
            raise ExportError(
                f"{context.module_label}: time constant {name} must be positive, got min {float(tau.min()):g} s"
            )
        return tau

    r = array("r", params.r)
    v_leak = array("v_leak", params.v_leak, 0.0)
    if kind == "li":
        return nir.LI(tau=time_constant("tau_mem", params.tau_mem), r=r, v_leak=v_leak)

    v_threshold = array("v_threshold", params.v_threshold)
    v_reset = array("v_reset", params.v_reset, 0.0)
    if kind == "lif":
        return nir.LIF(
            tau=time_constant("tau_mem", params.tau_mem),
            r=r,
            v_leak=v_leak,
            v_threshold=v_threshold,
            v_reset=v_reset,
        )
    if kind == "if":
        return nir.IF(r=r, v_threshold=v_threshold, v_reset=v_reset)
    return nir.CubaLIF(
        tau_syn=time_constant("tau_syn", params.tau_syn),
        tau_mem=time_constant("tau_mem", params.tau_mem),
        r=r,
        v_leak=v_leak,
        v_threshold=v_threshold,
        v_reset=v_reset,
        w_in=array("w_in", params.w_in, 1.0),
    )


def scale_neuron_input(node: nir.NIRNode, scale: float) -> None:
    """Multiply the input scaling of a neuron node by ``scale`` in place (``r``, or ``w_in`` for CubaLIF)."""
    if isinstance(node, nir.CubaLIF):
        node.w_in = _float32(node.w_in.astype(np.float64) * scale)
    else:
        node.r = _float32(node.r.astype(np.float64) * scale)


def is_neuron_node(node: nir.NIRNode) -> bool:
    """Return whether ``node`` is one of the neuron node types the exporter writes."""
    return isinstance(node, (nir.LIF, nir.LI, nir.IF, nir.CubaLIF))


def _check_dt(module: torch.nn.Module, context: LayerContext) -> None:
    module_dt = getattr(module, "dt", None)
    if module_dt is None:
        return
    module_dt = float(module_dt)
    if not math.isclose(module_dt, context.dt, rel_tol=_RELATIVE_TOLERANCE):
        raise ExportError(
            f"{context.module_label} ({type(module).__name__}) integrates with dt={module_dt:g} s but the export "
            f"uses dt={context.dt:g} s; the exported time constants would describe a different model, so export "
            "with the dt the model was trained with"
        )


def _inverse(value: Any, name: str, context: LayerContext) -> np.ndarray:
    array = per_neuron(value, context.output_shape, name, context)
    if np.any(array <= 0):
        raise ExportError(f"{context.module_label}: {name} must be positive, got min {float(array.min()):g} 1/s")
    return 1.0 / array


def _synapse_decays_fully(p: Any, context: LayerContext) -> bool:
    """Return whether ``dt * tau_syn_inv`` is 1 for every neuron, so that no synaptic current outlives a step."""
    factors = context.dt * per_neuron(p.tau_syn_inv, context.output_shape, "tau_syn_inv", context)
    return bool(np.allclose(factors, 1.0, rtol=_RELATIVE_TOLERANCE, atol=0.0))


def _reset_mode(method: Any, module: torch.nn.Module, context: LayerContext) -> str:
    if method is reset_value:
        return "to_reset"
    if method is reset_subtract:
        return "subtract"
    raise UnsupportedModuleError(
        f"{context.module_label} ({type(module).__name__}) uses reset method {method!r}; only norse's "
        "reset_value and reset_subtract have an accelerator equivalent",
        path=context.path,
        module_type=qualified_name(type(module)),
    )


def _lif_box_parameters(p: Any, context: LayerContext) -> NeuronParameters:
    shape = context.output_shape
    return NeuronParameters(
        kind="lif",
        tau_mem=_inverse(p.tau_mem_inv, "tau_mem_inv", context),
        r=np.ones(shape),
        v_leak=per_neuron(p.v_leak, shape, "v_leak", context),
        v_threshold=per_neuron(p.v_th, shape, "v_th", context),
        v_reset=per_neuron(p.v_reset, shape, "v_reset", context),
    )


def _warn_nonzero_start(module: torch.nn.Module, start: Any, parameter: str, context: LayerContext) -> None:
    # norse starts these cells at a nonzero membrane potential, but NIR simulators and the accelerator start at 0.
    if np.any(per_neuron(start, context.output_shape, parameter, context) != 0):
        logger.warning(
            "%s (%s) starts its membrane at %s, which is not 0; the exported network starts at 0, so its first "
            "steps differ from the torch model",
            context.module_label,
            type(module).__name__,
            parameter,
        )


@register_converter(LIFBoxCell)
def convert_lif_box(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``LIFBoxCell`` to ``LIF``."""
    _check_dt(module, context)
    p: Any = module.p
    _warn_nonzero_start(module, p.v_leak, "v_leak", context)
    node = neuron_node(_lif_box_parameters(p, context), context)
    return ConvertedLayer(chain=[("", node)], reset_mode=_reset_mode(p.reset_method, module, context))


@register_converter(LIBoxCell)
def convert_li_box(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``LIBoxCell`` to ``LI``."""
    _check_dt(module, context)
    p: Any = module.p
    _warn_nonzero_start(module, p.v_leak, "v_leak", context)
    params = NeuronParameters(
        kind="li",
        tau_mem=_inverse(p.tau_mem_inv, "tau_mem_inv", context),
        r=np.ones(context.output_shape),
        v_leak=per_neuron(p.v_leak, context.output_shape, "v_leak", context),
    )
    return ConvertedLayer(chain=[("", neuron_node(params, context))])


@register_converter(IAFCell)
@register_converter(IAF)
def convert_iaf(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``IAFCell``/``IAF`` to ``IF`` with ``r = 1 / dt`` (norse adds the input unscaled)."""
    # IAF ignores its own dt, so only the export dt matters.
    p: Any = module.p
    shape = context.output_shape
    _warn_nonzero_start(module, p.v_reset, "v_reset", context)
    params = NeuronParameters(
        kind="if",
        r=np.full(shape, 1.0 / context.dt),
        v_leak=np.zeros(shape),
        v_threshold=per_neuron(p.v_th, shape, "v_th", context),
        v_reset=per_neuron(p.v_reset, shape, "v_reset", context),
    )
    return ConvertedLayer(chain=[("", neuron_node(params, context))], reset_mode="to_reset")


@register_converter(LIFCell)
@register_converter(LIF)
def convert_lif(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``LIFCell``/``LIF`` to ``CubaLIF`` with ``w_in = tau_syn / dt``, or to ``LIF`` when ``dt * tau_syn_inv = 1``.

    ``ecs_common.neuron.float_step`` follows norse's order (current jump,
    membrane update, current decay), so the exported layer answers in the
    same step as the torch layer.
    """
    _check_dt(module, context)
    p: Any = module.p
    shape = context.output_shape
    _warn_nonzero_start(module, p.v_leak, "v_leak", context)

    if _synapse_decays_fully(p, context):
        logger.info("%s: dt * tau_syn_inv = 1, so the synaptic current lasts one step; exporting as LIF", context.path)
        params = _lif_box_parameters(p, context)
    else:
        tau_syn = _inverse(p.tau_syn_inv, "tau_syn_inv", context)
        params = NeuronParameters(
            kind="cubalif",
            tau_mem=_inverse(p.tau_mem_inv, "tau_mem_inv", context),
            tau_syn=tau_syn,
            w_in=tau_syn / context.dt,
            r=np.ones(shape),
            v_leak=per_neuron(p.v_leak, shape, "v_leak", context),
            v_threshold=per_neuron(p.v_th, shape, "v_th", context),
            v_reset=per_neuron(p.v_reset, shape, "v_reset", context),
        )
    # norse's lif_feed_forward_step always resets to v_reset.
    return ConvertedLayer(chain=[("", neuron_node(params, context))], reset_mode="to_reset")


@register_converter(LICell)
@register_converter(LI)
def convert_li(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``LICell``/``LI`` to ``LI`` when ``dt * tau_syn_inv = 1``, otherwise unsupported.

    With a lasting synaptic current the cell is a current-based leaky
    integrator (NIR ``CubaLI``), which the accelerator does not implement.
    """
    _check_dt(module, context)
    p: Any = module.p
    if not _synapse_decays_fully(p, context):
        raise UnsupportedModuleError(
            f"{context.module_label} ({type(module).__name__}) has a synaptic current (dt * tau_syn_inv != 1), "
            "which makes it a CubaLI neuron that the accelerator does not implement; use LIBoxCell, or set "
            "tau_syn_inv = 1 / dt",
            path=context.path,
            module_type=qualified_name(type(module)),
        )
    _warn_nonzero_start(module, p.v_leak, "v_leak", context)
    params = NeuronParameters(
        kind="li",
        tau_mem=_inverse(p.tau_mem_inv, "tau_mem_inv", context),
        r=np.ones(context.output_shape),
        v_leak=per_neuron(p.v_leak, context.output_shape, "v_leak", context),
    )
    return ConvertedLayer(chain=[("", neuron_node(params, context))])


@register_converter(LIFRecurrentCell)
@register_converter(LIFRecurrent)
def convert_lif_recurrent(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``LIFRecurrentCell``/``LIFRecurrent`` to ``Linear -> LIF`` plus a recurrent ``Linear`` edge.

    Only when ``dt * tau_syn_inv = 1``. With a lasting synaptic current the
    neuron would be a recurrent CubaLIF layer, which this exporter does not
    build. The recurrent edge carries the spikes of the previous step, as
    norse's ``lif_step`` does.
    """
    _check_dt(module, context)
    p: Any = module.p
    if not _synapse_decays_fully(p, context):
        raise UnsupportedModuleError(
            f"{context.module_label} ({type(module).__name__}) has a synaptic current (dt * tau_syn_inv != 1), "
            "and recurrent CubaLIF layers are not supported by the exporter. Set tau_syn_inv = 1 / dt, or build "
            "the recurrence from LIFBoxCell layers",
            path=context.path,
            module_type=qualified_name(type(module)),
        )
    _warn_nonzero_start(module, p.v_leak, "v_leak", context)

    input_weights = export_parameter(module, "input_weights", context)
    recurrent_weights = export_parameter(module, "recurrent_weights", context)
    assert input_weights is not None and recurrent_weights is not None
    if tuple(context.input_shape) != (input_weights.shape[1],):
        raise ExportError(
            f"{context.module_label} ({type(module).__name__}) expects {input_weights.shape[1]} inputs but receives "
            f"shape {context.input_shape}; flatten its input first"
        )

    neuron = neuron_node(_lif_box_parameters(p, context), context)
    return ConvertedLayer(
        chain=[("input", nir.Linear(weight=input_weights)), ("", neuron)],
        side_nodes=[("recurrent", nir.Linear(weight=recurrent_weights))],
        side_edges=[("", "recurrent"), ("recurrent", "")],
        reset_mode="to_reset",
    )


def convert_neuron_wrapper(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """Convert a module with ``neuron_parameters()``, such as ecs-train's ``QuantizedNeuron``.

    The protocol: ``neuron_parameters()`` returns
    :class:`ecs_common.neuron.NeuronParameters` in NIR units, ``reset_mode`` is
    ``"to_reset"`` or ``"subtract"`` and ``dt`` is the timestep in seconds the
    module integrates with.
    """
    wrapper: Any = module
    params = wrapper.neuron_parameters()
    if not isinstance(params, NeuronParameters):
        raise ExportError(
            f"{context.module_label} ({type(module).__name__}): neuron_parameters() returned "
            f"{type(params).__name__}, expected ecs_common.neuron.NeuronParameters"
        )
    _check_dt(module, context)

    reset_mode = None
    if params.kind != "li":
        reset_mode = getattr(module, "reset_mode", "to_reset")
        if reset_mode not in RESET_MODES:
            raise ExportError(
                f"{context.module_label} ({type(module).__name__}) has reset_mode {reset_mode!r}; expected one of "
                f"{', '.join(RESET_MODES)}"
            )
    return ConvertedLayer(chain=[("", neuron_node(params, context))], reset_mode=reset_mode)


def is_neuron_module(module: torch.nn.Module) -> bool:
    """Return whether ``module`` is a neuron layer, whose output has the shape of its input (or its hidden size)."""
    if callable(getattr(module, "neuron_parameters", None)):
        return True
    return isinstance(module, (LIFBoxCell, LIBoxCell, IAFCell, IAF, LIFCell, LIF, LICell, LI)) or is_recurrent_cell(
        module
    )


def is_recurrent_cell(module: torch.nn.Module) -> bool:
    """Return whether ``module`` is a recurrent norse cell, whose output size is its hidden size."""
    return isinstance(module, (LIFRecurrentCell, LIFRecurrent))
