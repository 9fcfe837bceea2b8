"""Walk a sequential network layer by layer and assemble the NIR nodes and edges that describe it.

nirtorch's tracer (``nirtorch.torch_to_nir``, torch.fx) cannot trace norse's
``SequentialState``, whose forward assigns into a Python list of states, so
the builder walks the layers in forward order instead. Supported containers:
``torch.nn.Sequential`` (norse's ``SequentialState`` included),
``torch.nn.ModuleList``, a plain list or tuple of modules, and any model
object with a ``layers`` attribute that lists its layers in forward order.
norse's ``Lift`` is unwrapped to the module it lifts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np
import torch
from norse.torch.module.lift import Lift

from ecs_common.formats import FixedPointFormat
from ecs_train.models import SumPool2d
from ecs_train.nir_export.errors import ExportError, UnsupportedModuleError
from ecs_train.nir_export.neurons import (
    convert_neuron_wrapper,
    is_neuron_module,
    is_neuron_node,
    is_recurrent_cell,
    scale_neuron_input,
)
from ecs_train.nir_export.registry import (
    ConvertedLayer,
    Converter,
    LayerContext,
    find_converter,
    qualified_name,
    supported_module_types,
)

logger = logging.getLogger(__name__)

INPUT_NODE = "input"
OUTPUT_NODE = "output"

_POOLING_TYPES = (torch.nn.AvgPool2d, torch.nn.LPPool2d, SumPool2d)


@dataclass
class BuiltGraph:
    """Nodes and edges of an exported network, before they become a ``nir.NIRGraph``."""

    nodes: dict[str, nir.NIRNode]
    edges: list[tuple[str, str]]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    # Reset mode of every firing neuron layer, by layer path.
    reset_modes: dict[str, str] = field(default_factory=dict)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _converter_for(module: torch.nn.Module) -> Converter | None:
    if callable(getattr(module, "neuron_parameters", None)):
        return convert_neuron_wrapper
    return find_converter(module)


def list_layers(network: Any) -> list[tuple[str, torch.nn.Module]]:
    """Return ``(path, module)`` for every layer of ``network`` in forward order.

    Raises :class:`ExportError` for a container whose forward order cannot be
    known, and :class:`UnsupportedModuleError` for a leaf module without a
    converter.
    """
    layers: list[tuple[str, torch.nn.Module]] = []
    if isinstance(network, (list, tuple)):
        for index, module in enumerate(network):
            _collect(module, str(index), layers)
    else:
        _collect(network, "", layers)
    if not layers:
        raise ExportError(f"the network {type(network).__name__} has no layers to export")
    return layers


def _collect(module: Any, path: str, layers: list[tuple[str, torch.nn.Module]]) -> None:
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"layer {path!r} is a {type(module).__name__}, not a torch.nn.Module")

    if isinstance(module, Lift):
        _collect(module.lifted_module, path, layers)
        return

    if _converter_for(module) is not None:
        layers.append((path or type(module).__name__.lower(), module))
        return

    if isinstance(module, (torch.nn.Sequential, torch.nn.ModuleList)):
        for name, child in module.named_children():
            _collect(child, _join(path, name), layers)
        return

    ordered = getattr(module, "layers", None)
    if isinstance(ordered, (torch.nn.Sequential, torch.nn.ModuleList, list, tuple)) and len(ordered) > 0:
        for index, child in enumerate(ordered):
            _collect(child, _join(path, f"layers.{index}"), layers)
        return

    if not any(True for _ in module.children()):
        raise _no_converter(module, path or type(module).__name__.lower())

    raise ExportError(
        f"cannot determine the forward order of the layers inside {path or 'the network'!r} "
        f"({qualified_name(type(module))}); pass a torch.nn.Sequential or norse SequentialState, give the model "
        "a 'layers' attribute that lists its layers in forward order, or register a converter for the type"
    )


def _no_converter(module: torch.nn.Module, path: str) -> UnsupportedModuleError:
    module_type = qualified_name(type(module))
    return UnsupportedModuleError(
        f"layer {path!r} ({module_type}) has no NIR converter. Supported types: "
        f"{', '.join(supported_module_types())}. Replace the layer or register a converter with "
        "ecs_train.nir_export.register_converter",
        path=path,
        module_type=module_type,
    )


def _attribute(module: torch.nn.Module, name: str) -> Any:
    return getattr(module, name)


def _feature_rank(layers: list[tuple[str, torch.nn.Module]], sample_shape: tuple[int, ...]) -> int:
    """Count the trailing dimensions of ``sample_shape`` that form one sample (the leading ones are batch or time)."""
    flattened = False
    for path, module in layers:
        if isinstance(module, torch.nn.Conv2d):
            if len(sample_shape) < 3 or sample_shape[-3] != module.in_channels:
                raise ExportError(
                    f"sample_data has shape {sample_shape}, but the first layer {path!r} is a Conv2d with "
                    f"{module.in_channels} input channels; pass one sample shaped (channels, height, width), "
                    "with or without a batch dimension"
                )
            return 3
        if isinstance(module, _POOLING_TYPES):
            return 3
        if isinstance(module, torch.nn.Linear) or is_recurrent_cell(module):
            features = (
                module.in_features if isinstance(module, torch.nn.Linear) else int(_attribute(module, "input_size"))
            )
            if not flattened:
                if not sample_shape or sample_shape[-1] != features:
                    raise ExportError(
                        f"sample_data has shape {sample_shape}, but the first layer {path!r} takes {features} "
                        "input features; pass one sample, with or without a batch dimension"
                    )
                return 1
            for rank in range(1, len(sample_shape) + 1):
                if math.prod(sample_shape[-rank:]) == features:
                    return rank
            raise ExportError(
                f"sample_data has shape {sample_shape}, but no trailing dimensions of it hold the {features} "
                f"input features that layer {path!r} expects after flattening"
            )
        if isinstance(module, torch.nn.Flatten):
            flattened = True
    # No layer fixes the sample's rank (the network starts with neurons), so the sample is taken as unbatched.
    return len(sample_shape)


def _reference_parameter(network: Any) -> torch.Tensor | None:
    modules = network if isinstance(network, (list, tuple)) else [network]
    for module in modules:
        if isinstance(module, torch.nn.Module):
            for parameter in module.parameters():
                return parameter
    return None


def _trace_output_shape(
    module: torch.nn.Module, path: str, input_shape: tuple[int, ...], reference: torch.Tensor | None
) -> tuple[int, ...]:
    """Compute a layer's per-sample output shape without updating any state the module keeps."""
    if is_neuron_module(module):
        if is_recurrent_cell(module):
            return (int(_attribute(module, "hidden_size")),)
        return input_shape

    dtype = reference.dtype if reference is not None else torch.float32
    device = reference.device if reference is not None else torch.device("cpu")
    x = torch.zeros((1, *input_shape), dtype=dtype, device=device)
    try:
        with torch.no_grad():
            # Weight layers are traced through the functional op, so a quantizer's observers see no data.
            if isinstance(module, torch.nn.Linear):
                out = torch.nn.functional.linear(x, module.weight)
            elif isinstance(module, torch.nn.Conv2d):
                out = torch.nn.functional.conv2d(
                    x, module.weight, None, module.stride, module.padding, module.dilation, module.groups
                )
            else:
                out = module(x)
    except (RuntimeError, ValueError, TypeError) as error:
        raise ExportError(
            f"layer {path!r} ({type(module).__name__}) failed on an input of shape {input_shape} "
            f"(one sample, without batch): {error}"
        ) from error
    if isinstance(out, (tuple, list)):
        out = out[0]
    return tuple(int(size) for size in out.shape[1:])


def build_graph(
    network: Any,
    sample_data: Any,
    dt: float,
    weight_format: FixedPointFormat | None = None,
) -> BuiltGraph:
    """Convert every layer of ``network`` and chain the resulting nodes from Input to Output.

    ``sample_data`` is one sample, with or without leading batch (or time)
    dimensions, and only its shape is used. ``dt`` is the timestep in seconds.
    ``weight_format``, when given, is the format that ``quantized_weight()``
    results are checked against.
    """
    layers = list_layers(network)
    for path, module in layers:
        if _converter_for(module) is None:
            raise _no_converter(module, path)

    sample_shape = tuple(int(size) for size in getattr(sample_data, "shape", ()))
    rank = _feature_rank(layers, sample_shape)
    input_shape = sample_shape[len(sample_shape) - rank :]
    if len(input_shape) < len(sample_shape):
        logger.info(
            "sample_data has shape %s; exporting input shape %s without the leading batch/time dimensions",
            sample_shape,
            input_shape,
        )

    nodes: dict[str, nir.NIRNode] = {INPUT_NODE: nir.Input(input_type=np.array(input_shape))}
    edges: list[tuple[str, str]] = []
    reset_modes: dict[str, str] = {}
    reference = _reference_parameter(network)

    previous = INPUT_NODE
    shape = input_shape
    pending_scale = 1.0
    scale_source = ""
    for path, module in layers:
        output_shape = _trace_output_shape(module, path, shape, reference)
        context = LayerContext(
            path=path, input_shape=shape, output_shape=output_shape, dt=dt, weight_format=weight_format
        )
        converter = _converter_for(module)
        assert converter is not None
        converted = converter(module, context)

        if pending_scale != 1.0:
            pending_scale = _fold_scale(converted, pending_scale, scale_source, context)
        if converted.output_scale != 1.0:
            pending_scale *= converted.output_scale
            scale_source = path
        if converted.reset_mode is not None:
            reset_modes[path] = converted.reset_mode

        previous = _add_layer(nodes, edges, previous, path, converted)
        shape = output_shape

    if pending_scale != 1.0:
        raise ExportError(
            f"average pooling layer {scale_source!r} is not followed by a neuron layer, so its 1/area scale has "
            "nowhere to go (weights keep their trained values); add a neuron layer after it or use SumPool2d"
        )

    nodes[OUTPUT_NODE] = nir.Output(output_type=np.array(shape))
    edges.append((previous, OUTPUT_NODE))
    return BuiltGraph(nodes=nodes, edges=edges, input_shape=input_shape, output_shape=shape, reset_modes=reset_modes)


def _fold_scale(converted: ConvertedLayer, scale: float, source: str, context: LayerContext) -> float:
    """Fold a pending average-pooling scale into a layer and return the scale still left to fold.

    The torch signal equals ``scale`` times the exported one. A bias on the
    way is divided by ``scale``. A neuron node absorbs the scale into its
    input scaling, which leaves nothing to fold after it.
    """
    if converted.side_nodes:
        raise ExportError(
            f"{context.module_label}: the 1/area scale of average pooling layer {source!r} would reach a "
            "recurrent layer, where it cannot be folded without scaling the recurrent weights too; use SumPool2d "
            "or put a feed-forward neuron layer after the pooling"
        )
    for _, node in converted.chain:
        if is_neuron_node(node):
            scale_neuron_input(node, scale)
            return 1.0
        bias = getattr(node, "bias", None)
        if isinstance(bias, np.ndarray):
            node.bias = (bias.astype(np.float64) / scale).astype(np.float32)
    return scale


def _add_layer(
    nodes: dict[str, nir.NIRNode],
    edges: list[tuple[str, str]],
    previous: str,
    path: str,
    converted: ConvertedLayer,
) -> str:
    """Add a converted layer after node ``previous`` and return the name of the layer's output node."""
    base = f"layer_{path}" if path in (INPUT_NODE, OUTPUT_NODE) else path

    def full_name(relative: str) -> str:
        return base if relative == "" else f"{base}.{relative}"

    for relative, node in [*converted.chain, *converted.side_nodes]:
        name = full_name(relative)
        if name in nodes:
            raise ExportError(f"layer {path!r} produces NIR node name {name!r} twice")
        nodes[name] = node

    for relative, _ in converted.chain:
        edges.append((previous, full_name(relative)))
        previous = full_name(relative)
    for source, target in converted.side_edges:
        edges.append((full_name(source), full_name(target)))
    return previous
