"""Weight, pooling and shape layers to NIR: Linear, Conv2d, pooling, Flatten and pass-through layers.

Average pooling is exported as ``SumPool2d``. Its ``1 / kernel area`` factor
is not folded into the next layer's weights, because quantized weights must
stay exact multiples of the weight LSB. The graph builder carries the factor
forward instead. It multiplies every bias on the way by the pooling divisor
(the kernel area unless ``divisor_override`` is set) and folds the factor
into the input scaling (``r``, or ``w_in`` for CubaLIF) of the next neuron
layer. ecs-common's "state" input scaling then absorbs it
into the neuron's state units. An average pooling layer that no neuron layer
follows is rejected.
"""

from __future__ import annotations

import math

import nir
import numpy as np
import torch

from ecs_train.models import SumPool2d
from ecs_train.nir_export.errors import ExportError, UnsupportedModuleError
from ecs_train.nir_export.registry import ConvertedLayer, LayerContext, qualified_name, register_converter
from ecs_train.nir_export.weights import export_parameter


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def _unsupported(module: torch.nn.Module, context: LayerContext, reason: str) -> UnsupportedModuleError:
    return UnsupportedModuleError(
        f"{context.module_label} ({type(module).__name__}): {reason}",
        path=context.path,
        module_type=qualified_name(type(module)),
    )


@register_converter(torch.nn.Linear)
def convert_linear(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``Linear`` to ``Affine``, or to NIR ``Linear`` when it has no bias."""
    weight = export_parameter(module, "weight", context)
    bias = export_parameter(module, "bias", context)
    assert weight is not None
    if tuple(context.input_shape) != (weight.shape[1],):
        raise ExportError(
            f"{context.module_label} (Linear) receives input of shape {context.input_shape}, but NIR's Affine and "
            f"Linear nodes take a vector of {weight.shape[1]} values; add a Flatten layer before it"
        )
    node = nir.Linear(weight=weight) if bias is None else nir.Affine(weight=weight, bias=bias)
    return ConvertedLayer(chain=[("", node)])


def _conv_padding(module: torch.nn.Conv2d, context: LayerContext) -> tuple[int, int]:
    padding = module.padding
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        # torch pads "same" asymmetrically when dilation * (kernel - 1) is odd, but NIR padding is symmetric.
        pads = []
        for kernel, dilation in zip(module.kernel_size, module.dilation, strict=True):
            total = dilation * (kernel - 1)
            if total % 2:
                raise _unsupported(
                    module,
                    context,
                    f"padding='same' with kernel {module.kernel_size} and dilation {module.dilation} pads "
                    "asymmetrically, which NIR cannot express; use an odd kernel or explicit padding",
                )
            pads.append(total // 2)
        return (pads[0], pads[1])
    assert not isinstance(padding, str), padding
    return _pair(padding)


@register_converter(torch.nn.Conv2d)
def convert_conv2d(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``Conv2d`` to NIR ``Conv2d`` with its spatial ``input_shape`` (a zero bias when it has none)."""
    assert isinstance(module, torch.nn.Conv2d)
    if module.padding_mode != "zeros":
        raise _unsupported(
            module, context, f"padding_mode={module.padding_mode!r} is not supported; NIR pads with zeros"
        )
    if len(context.input_shape) != 3:
        raise ExportError(
            f"{context.module_label} (Conv2d) receives input of shape {context.input_shape}; expected "
            "(channels, height, width)"
        )

    weight = export_parameter(module, "weight", context)
    bias = export_parameter(module, "bias", context)
    assert weight is not None
    if bias is None:
        bias = np.zeros(weight.shape[0], dtype=np.float32)

    node = nir.Conv2d(
        input_shape=(int(context.input_shape[1]), int(context.input_shape[2])),
        weight=weight,
        stride=_pair(module.stride),
        padding=_conv_padding(module, context),
        dilation=_pair(module.dilation),
        groups=int(module.groups),
        bias=bias,
    )
    return ConvertedLayer(chain=[("", node)])


def _sum_pool_node(
    kernel_size: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int], context: LayerContext
) -> nir.SumPool2d:
    node = nir.SumPool2d(
        kernel_size=np.array(kernel_size, dtype=np.int64),
        stride=np.array(stride, dtype=np.int64),
        padding=np.array(padding, dtype=np.int64),
    )
    # nir leaves pooling types undefined, so the traced shapes are set here to type-check the graph as built.
    node.input_type = {"input": np.array(context.input_shape)}
    node.output_type = {"output": np.array(context.output_shape)}
    return node


def _check_pool_input(module: torch.nn.Module, context: LayerContext) -> None:
    if len(context.input_shape) != 3:
        raise ExportError(
            f"{context.module_label} ({type(module).__name__}) receives input of shape {context.input_shape}; "
            "expected (channels, height, width)"
        )


@register_converter(torch.nn.AvgPool2d)
def convert_avg_pool2d(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``AvgPool2d`` to ``SumPool2d`` with an output scale of ``1 / divisor`` for the builder to fold."""
    assert isinstance(module, torch.nn.AvgPool2d)
    _check_pool_input(module, context)
    if module.ceil_mode:
        raise _unsupported(module, context, "ceil_mode=True is not supported; NIR pooling rounds output sizes down")

    kernel_size = _pair(module.kernel_size)
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    padding = _pair(module.padding)
    if any(padding) and not module.count_include_pad and module.divisor_override is None:
        raise _unsupported(
            module,
            context,
            "count_include_pad=False with padding divides border windows by fewer elements, which one sum pooling "
            "scale cannot express; use count_include_pad=True or no padding",
        )

    divisor = module.divisor_override if module.divisor_override is not None else math.prod(kernel_size)
    node = _sum_pool_node(kernel_size, stride, padding, context)
    return ConvertedLayer(chain=[("", node)], output_scale=1.0 / float(divisor))


@register_converter(torch.nn.LPPool2d)
def convert_lp_pool2d(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``LPPool2d`` with ``norm_type=1`` (a sum over each window) to ``SumPool2d``."""
    assert isinstance(module, torch.nn.LPPool2d)
    _check_pool_input(module, context)
    if float(module.norm_type) != 1.0:
        raise _unsupported(module, context, f"norm_type={module.norm_type} is not a sum; only norm_type=1 exports")
    if module.ceil_mode:
        raise _unsupported(module, context, "ceil_mode=True is not supported; NIR pooling rounds output sizes down")
    kernel_size = _pair(module.kernel_size)
    stride = _pair(module.stride if module.stride is not None else module.kernel_size)
    return ConvertedLayer(chain=[("", _sum_pool_node(kernel_size, stride, (0, 0), context))])


@register_converter(SumPool2d)
def convert_sum_pool2d(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``ecs_train.models.SumPool2d`` to NIR ``SumPool2d``."""
    assert isinstance(module, SumPool2d)
    _check_pool_input(module, context)
    padding = _pair(getattr(module, "padding", 0))
    node = _sum_pool_node(_pair(module.kernel_size), _pair(module.stride), padding, context)
    return ConvertedLayer(chain=[("", node)])


@register_converter(torch.nn.Flatten)
def convert_flatten(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``Flatten`` to NIR ``Flatten``, with dimensions counted without the batch dimension."""
    assert isinstance(module, torch.nn.Flatten)
    rank = len(context.input_shape) + 1  # torch counts the batch dimension
    start = module.start_dim % rank
    end = module.end_dim % rank
    if start == 0:
        raise _unsupported(
            module, context, f"start_dim={module.start_dim} flattens the batch dimension; use start_dim=1"
        )

    node = nir.Flatten(input_type={"input": np.array(context.input_shape)}, start_dim=start - 1, end_dim=end - 1)
    produced = tuple(int(size) for size in node.output_type["output"])
    if produced != tuple(context.output_shape):
        raise ExportError(
            f"{context.module_label} (Flatten): NIR computes output shape {produced} but torch produced "
            f"{tuple(context.output_shape)}"
        )
    return ConvertedLayer(chain=[("", node)])


@register_converter(torch.nn.Identity)
@register_converter(torch.nn.Dropout)
def convert_pass_through(module: torch.nn.Module, context: LayerContext) -> ConvertedLayer:
    """``Identity`` and ``Dropout`` (an identity at inference) export as no node at all."""
    if tuple(context.input_shape) != tuple(context.output_shape):
        raise ExportError(
            f"{context.module_label} ({type(module).__name__}) changes the shape from {context.input_shape} to "
            f"{context.output_shape}"
        )
    return ConvertedLayer(chain=[])
