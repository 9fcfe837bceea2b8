"""Build a NIR graph with ECS metadata from a trained network and write it to disk atomically."""

from __future__ import annotations

import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any

import nir
from pydantic import ValidationError

from ecs_common.errors import MetadataError
from ecs_common.metadata import ECSMetadata, encode
from ecs_common.metadata import read_metadata as decode_graph_metadata
from ecs_train.nir_export.builder import build_graph
from ecs_train.nir_export.errors import ExportError, NIRFileExistsError
from ecs_train.nir_export.validate import validate_graph

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _metadata_input(metadata: ECSMetadata | dict[str, Any] | None, dt: float | None) -> ECSMetadata:
    """Validate ``metadata`` and reconcile its ``dt`` with the ``dt`` argument (both in seconds)."""
    if metadata is None:
        metadata = {}
    if isinstance(metadata, ECSMetadata):
        if dt is not None and not math.isclose(float(dt), metadata.dt, rel_tol=1e-12):
            raise ExportError(
                f"dt={dt} s differs from the metadata's dt={metadata.dt} s; pass only the timestep the model "
                "was trained with"
            )
        return metadata
    if not isinstance(metadata, dict):
        raise ExportError(f"metadata must be an ECSMetadata or a dict, got {type(metadata).__name__}")

    values = dict(metadata)
    if "dt" in values and values["dt"] is not None:
        if dt is not None and not math.isclose(float(dt), float(values["dt"]), rel_tol=1e-12):
            raise ExportError(
                f"dt={dt} s differs from the metadata's dt={values['dt']} s; pass only the timestep the model "
                "was trained with"
            )
    elif dt is None:
        raise ExportError("the timestep is missing: pass dt (in seconds) or put 'dt' in the metadata")
    else:
        values["dt"] = float(dt)
    try:
        return ECSMetadata.model_validate(values)
    except ValidationError as error:
        raise MetadataError(f"invalid ECS metadata: {error}") from error


def _with_reset_mode(metadata: ECSMetadata, reset_modes: dict[str, str]) -> ECSMetadata:
    """Record the network's reset mode in the metadata, rejecting mixed modes or a contradicting entry."""
    modes = sorted(set(reset_modes.values()))
    if len(modes) > 1:
        listing = ", ".join(f"{path!r}: {mode}" for path, mode in reset_modes.items())
        raise ExportError(
            f"the network mixes reset modes ({listing}), but the accelerator applies one reset mode to every "
            "layer; train all firing layers with the same reset"
        )
    if not modes:
        return metadata

    mode = modes[0]
    if mode == metadata.reset_mode:
        return metadata
    if "reset_mode" in metadata.model_fields_set:
        raise ExportError(
            f"the metadata sets reset_mode={metadata.reset_mode!r} but the network's neurons reset with "
            f"{mode!r}; drop reset_mode from the metadata or set it to {mode!r}"
        )
    return metadata.model_copy(update={"reset_mode": mode})


def to_nir_graph(
    network: Any,
    metadata: ECSMetadata | dict[str, Any] | None,
    sample_data: Any,
    dt: float | None = None,
    broadcast_params: bool = False,
) -> nir.NIRGraph:
    """Build the NIR graph of ``network`` with the ``ecs`` metadata, without writing a file.

    ``network`` is an ``nn.Sequential`` (norse ``SequentialState`` included),
    a list of layers, or a model with a ``layers`` attribute in forward order.
    ``metadata`` is an :class:`ECSMetadata` or a dict validated into one.
    ``sample_data`` is one input sample, with or without a batch dimension; only
    its shape is used, and the Input node never has a batch dimension. ``dt``
    is the timestep in seconds. It may be omitted when the metadata contains
    it, and must equal it otherwise. The reset mode is read from the network's
    neurons and recorded in the metadata. ``broadcast_params`` is accepted for
    compatibility and has no effect: neuron parameters are always per-neuron arrays.

    Raises :class:`~ecs_train.nir_export.errors.UnsupportedModuleError` for a
    layer without a converter and :class:`~ecs_train.nir_export.errors.ExportError`
    for anything else that would make the file wrong.
    """
    del broadcast_params  # parameters are always per neuron
    resolved = _metadata_input(metadata, dt)
    weight_format = resolved.quant_cfg.weight_format if resolved.quant_cfg.enabled else None

    built = build_graph(network, sample_data, resolved.dt, weight_format=weight_format)
    resolved = _with_reset_mode(resolved, built.reset_modes)

    try:
        graph = nir.NIRGraph(nodes=built.nodes, edges=built.edges, metadata=encode(resolved), type_check=True)
    except (ValueError, AssertionError) as error:
        raise ExportError(f"the exported graph fails NIR's type check: {error}") from error
    validate_graph(graph)
    return graph


def write_graph(graph: nir.NIRGraph, path: PathLike, overwrite: bool = False) -> Path:
    """Write ``graph`` to ``path`` atomically and verify that it reads back.

    The file is written to a temporary file in the same folder, read back
    with ``nir.read`` (type checking on), checked against the file contract
    and the metadata, then moved into place with ``os.replace``. An existing
    file is replaced only when ``overwrite`` is true.
    """
    target = Path(path)
    if target.is_dir():
        raise ExportError(f"{target} is a folder; give the path of the NIR file to write")
    if target.exists() and not overwrite:
        raise NIRFileExistsError(f"{target} already exists; pass overwrite=True (--force on the command line)")
    folder = target.parent
    if not folder.is_dir():
        raise ExportError(f"folder {folder} for the NIR file does not exist; create it first")

    expected = decode_graph_metadata(graph)
    temporary = folder / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        try:
            nir.write(temporary, graph)
        except (TypeError, ValueError) as error:
            raise ExportError(f"nir.write failed on the exported graph: {error}") from error
        try:
            written = nir.read(temporary)
        except (ValueError, KeyError, OSError, AssertionError) as error:
            raise ExportError(f"the written NIR file does not read back with type checking: {error}") from error
        validate_graph(written)
        if decode_graph_metadata(written) != expected:
            raise ExportError("the ECS metadata read back from the written file differs from the metadata written")
        if target.exists() and not overwrite:
            raise NIRFileExistsError(f"{target} appeared while exporting; pass overwrite=True to replace it")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)

    logger.info("wrote NIR file %s (%d nodes)", target, len(graph.nodes))
    return target


def export_nir(
    network: Any,
    metadata: ECSMetadata | dict[str, Any] | None,
    path: PathLike,
    sample_data: Any,
    dt: float | None = None,
    broadcast_params: bool = False,
    overwrite: bool = False,
) -> nir.NIRGraph:
    """Export ``network`` with its ECS metadata to the NIR file ``path`` and return the graph.

    Arguments are those of :func:`to_nir_graph`, plus ``path`` and
    ``overwrite`` (replace an existing file). ``dt`` is in seconds. Raises
    :class:`~ecs_train.nir_export.errors.NIRFileExistsError` when the file
    exists and ``overwrite`` is false; no file is written on any error.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise NIRFileExistsError(f"{target} already exists; pass overwrite=True (--force on the command line)")
    graph = to_nir_graph(network, metadata, sample_data, dt=dt, broadcast_params=broadcast_params)
    write_graph(graph, target, overwrite=overwrite)
    return graph


def read_metadata(path_or_graph: PathLike | nir.NIRGraph) -> ECSMetadata:
    """Return the ECS metadata of a NIR file or graph.

    ``meta["hardware_cfg"]`` and ``meta["quant_cfg"]`` give the configs as
    dicts; ``meta.hardware_cfg`` and ``meta.quant_cfg`` as models. Raises
    :class:`ecs_common.errors.MetadataError` when the graph has no valid
    ``ecs`` entry (a file from another framework).
    """
    if isinstance(path_or_graph, (str, os.PathLike)):
        path = Path(path_or_graph)
        if not path.is_file():
            raise FileNotFoundError(f"NIR file {path} not found")
        graph = nir.read(path)
    else:
        graph = path_or_graph
    return decode_graph_metadata(graph)
