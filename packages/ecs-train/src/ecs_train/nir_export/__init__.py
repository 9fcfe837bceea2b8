"""NIR export of trained networks with the ECS hardware metadata, one converter per module type.

Public entry points: :func:`export_nir` writes a file, :func:`to_nir_graph`
builds the graph only, :func:`read_metadata` returns a file's
:class:`ecs_common.metadata.ECSMetadata`, :func:`simulate_float` runs a graph
in float64 with ``ecs_common.neuron.float_step`` and
:func:`register_converter` adds a module type.
"""

from ecs_train.nir_export import layers as _layers  # noqa: F401  (registers the layer converters)
from ecs_train.nir_export import neurons as _neurons  # noqa: F401  (registers the neuron converters)
from ecs_train.nir_export.builder import list_layers
from ecs_train.nir_export.errors import ExportError, NIRFileExistsError, UnsupportedModuleError
from ecs_train.nir_export.export import export_nir, read_metadata, to_nir_graph, write_graph
from ecs_train.nir_export.registry import ConvertedLayer, LayerContext, register_converter, supported_module_types
from ecs_train.nir_export.simulate import simulate_float
from ecs_train.nir_export.validate import contract_violations, validate_graph

__all__ = [
    "ConvertedLayer",
    "ExportError",
    "LayerContext",
    "NIRFileExistsError",
    "UnsupportedModuleError",
    "contract_violations",
    "export_nir",
    "list_layers",
    "read_metadata",
    "register_converter",
    "simulate_float",
    "supported_module_types",
    "to_nir_graph",
    "validate_graph",
    "write_graph",
]
