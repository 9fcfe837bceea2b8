"""Export a trained checkpoint to NIR with metadata taken from its experiment config and the checkpoint file."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch

from ecs_common.metadata import ECSMetadata, Provenance, encode
from ecs_train.__about__ import __version__
from ecs_train.checkpoint_config import read_checkpoint
from ecs_train.config import ExperimentConfig, load_yaml
from ecs_train.nir_export.errors import NIRFileExistsError
from ecs_train.nir_export.export import to_nir_graph, write_graph
from ecs_train.training import _resolve_checkpoint, load_model

logger = logging.getLogger(__name__)

# Checkpoint keys read for the provenance, when the training run recorded them (accuracies in [0, 1]).
FLOAT_TEST_ACC_KEY = "ecs_float_test_acc"
QUANT_TEST_ACC_KEY = "ecs_quant_test_acc"

PRODUCER = f"ecs-train {__version__}"

_WEIGHT_NODES = (nir.Affine, nir.Linear, nir.Conv2d)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_sparsity(graph: nir.NIRGraph) -> float:
    """Return the fraction of weight entries that are exactly zero over all Affine, Linear and Conv2d nodes.

    Biases are not counted. A graph without weights has sparsity 0.
    """
    total = 0
    zeros = 0
    for node in graph.nodes.values():
        if isinstance(node, _WEIGHT_NODES):
            weight = np.asarray(node.weight)
            total += weight.size
            zeros += int(np.count_nonzero(weight == 0))
    return zeros / total if total else 0.0


def _recorded_accuracy(checkpoint: dict[str, Any], key: str) -> float | None:
    value = checkpoint.get(key)
    if value is None:
        return None
    accuracy = float(value.item() if isinstance(value, torch.Tensor) else value)
    if not 0.0 <= accuracy <= 1.0:
        logger.warning("checkpoint entry %s = %g is not an accuracy in [0, 1]; leaving it out", key, accuracy)
        return None
    return accuracy


def checkpoint_metadata(config: ExperimentConfig, checkpoint_path: Path) -> ECSMetadata:
    """Build the ECS metadata of a checkpoint, without the pruning sparsity (measured from the exported weights).

    Hardware and quantization configs, ``dt``, reset mode and readout come
    from the experiment config. The provenance records the dataset, the
    checkpoint's SHA-256 and the test accuracies that the checkpoint stores
    under :data:`FLOAT_TEST_ACC_KEY` and :data:`QUANT_TEST_ACC_KEY`, if any.
    """
    # load_model has already read this file once and accepted it as a Lightning checkpoint.
    checkpoint = read_checkpoint(checkpoint_path)
    network_cfg = config.model_cfg.network_cfg
    return ECSMetadata(
        hardware_cfg=config.hardware_cfg,
        quant_cfg=config.model_cfg.quant_cfg,
        dt=network_cfg.dt,
        reset_mode=network_cfg.reset_mode,
        readout=network_cfg.readout,
        provenance=Provenance(
            dataset=config.data_cfg.name,
            checkpoint_sha256=file_sha256(checkpoint_path),
            float_test_acc=_recorded_accuracy(checkpoint, FLOAT_TEST_ACC_KEY),
            quant_test_acc=_recorded_accuracy(checkpoint, QUANT_TEST_ACC_KEY),
            producer=PRODUCER,
        ),
    )


def export_checkpoint(
    config: ExperimentConfig | str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    path: str | os.PathLike[str],
    overwrite: bool = False,
) -> nir.NIRGraph:
    """Load a trained model from ``checkpoint`` (a file, or a folder with final.ckpt or last.ckpt) and export it.

    ``config`` is the experiment config the checkpoint was trained with, or
    the path of its YAML file. The network is exported in the state the
    checkpoint recorded: quantized weights when it was quantized. The
    metadata is that of :func:`checkpoint_metadata` plus the sparsity of the
    exported weights. Returns the graph written to ``path``.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise NIRFileExistsError(f"{target} already exists; pass overwrite=True (--force on the command line)")
    if not isinstance(config, ExperimentConfig):
        config = load_yaml(config)

    classifier = load_model(config, checkpoint)
    network = classifier.network
    checkpoint_path = _resolve_checkpoint(checkpoint)
    metadata = checkpoint_metadata(config, checkpoint_path)

    graph = to_nir_graph(network, metadata, torch.zeros(network.input_shape))
    provenance = metadata.provenance.model_copy(update={"sparsity": weight_sparsity(graph)})
    metadata = metadata.model_copy(update={"provenance": provenance})
    graph.metadata = encode(metadata)

    write_graph(graph, target, overwrite=overwrite)
    logger.info("exported %s (quantized: %s) to %s", checkpoint_path, network.quantized, target)
    return graph
