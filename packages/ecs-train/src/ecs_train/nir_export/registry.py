"""Registry of converters, each turning one torch module type into NIR nodes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import nir
import torch

from ecs_common.formats import FixedPointFormat


@dataclass(frozen=True)
class LayerContext:
    """Facts about the layer being converted, passed to its converter.

    Shapes are per sample, without the batch dimension.
    """

    path: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dt: float  # timestep in seconds
    # Format whose LSB every ``quantized_weight()`` value must be a multiple of, or None when quantization is off.
    weight_format: FixedPointFormat | None = None

    @property
    def module_label(self) -> str:
        """The layer's path as error messages quote it."""
        return f"layer {self.path!r}"


@dataclass
class ConvertedLayer:
    """NIR nodes that stand for one torch layer.

    ``chain`` lists ``(name, node)`` pairs in signal order: the first node
    receives the layer input and the last one produces the layer output. A
    name of ``""`` means the node takes the layer's own path as its name;
    other names are appended to the path (``"fc.recurrent"``). An empty chain
    is a pass-through layer (Dropout, Identity).

    ``side_nodes`` and ``side_edges`` add nodes outside the chain, such as the
    weights of a recurrent edge, using the same relative names.

    ``output_scale`` is the factor by which the exported output must be
    multiplied to equal the torch output (``1 / kernel area`` for average
    pooling exported as sum pooling). ``reset_mode`` is set by firing neuron
    layers.
    """

    chain: list[tuple[str, nir.NIRNode]]
    side_nodes: list[tuple[str, nir.NIRNode]] = field(default_factory=list)
    side_edges: list[tuple[str, str]] = field(default_factory=list)
    output_scale: float = 1.0
    reset_mode: str | None = None


Converter = Callable[[torch.nn.Module, LayerContext], ConvertedLayer]

_CONVERTERS: dict[type, Converter] = {}


def register_converter(module_type: type) -> Callable[[Converter], Converter]:
    """Register the decorated function as the NIR converter of ``module_type`` and its subclasses.

    The function receives the module and a :class:`LayerContext` and returns a
    :class:`ConvertedLayer`. A later registration for the same type replaces
    the earlier one, and the most specific registered class in the module's MRO wins.
    """
    if not isinstance(module_type, type):
        raise TypeError(f"register_converter expects a class, got {module_type!r}")

    def decorate(converter: Converter) -> Converter:
        _CONVERTERS[module_type] = converter
        return converter

    return decorate


def find_converter(module: torch.nn.Module) -> Converter | None:
    """Return the converter registered for the module's class or its nearest base class, if any."""
    for cls in type(module).__mro__:
        converter = _CONVERTERS.get(cls)
        if converter is not None:
            return converter
    return None


def qualified_name(cls: type) -> str:
    """Return ``module.ClassName`` for error messages."""
    return f"{cls.__module__}.{cls.__qualname__}"


def supported_module_types() -> list[str]:
    """List the module types that have a converter, as qualified class names, sorted."""
    names = [qualified_name(cls) for cls in _CONVERTERS]
    names.append("any module with neuron_parameters() (the QuantizedNeuron protocol)")
    return sorted(names)
