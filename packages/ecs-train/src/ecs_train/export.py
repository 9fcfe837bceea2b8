"""FPGA test vectors from the training side: per checkpoint a NIR file, test samples and the expected outputs.

``training_export("digits")`` reads the checkpoints that ``ecs-train run``
left in the config's output folder (``checkpoints/final.ckpt``, and
``checkpoints/pruned.ckpt`` when the run pruned) and writes, for each, a
folder ``test_vectors/digits/<unpruned|pruned>/`` with ``network.nir``,
``samples.npz`` and ``expected.npz`` (:mod:`ecs_common.vectors`).
ecs-deploy's ``deployment_export("digits")`` reads the same folders.
docs/test-vectors.md describes the files.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecs_common.errors import ConfigError
from ecs_common.metadata import ECSMetadata, Provenance, encode
from ecs_common.vectors import EXPECTED_FILE, SAMPLES_FILE, export_key, save_expected, save_samples
from ecs_train.config import ExperimentConfig, load_yaml
from ecs_train.errors import CheckpointError, OutputExistsError
from ecs_train.vectors import NetworkRun, expected_outputs, float_run, run_network

logger = logging.getLogger(__name__)

# Root folder of the exported test vectors, one subfolder per dataset key.
DEFAULT_ROOT = Path("test_vectors")
NIR_FILE = "network.nir"
CONFIG_DIR = Path("config")

UNPRUNED = "unpruned"
PRUNED = "pruned"


def find_config(dataset: str | os.PathLike[str]) -> Path:
    """Return the experiment config of ``dataset``: a config path, or a name such as ``"digits"``.

    A name resolves to ``config/<name>_feed_forward.yaml`` in the working
    folder, else in the source checkout that contains this file. Raises
    :class:`ConfigError` when no such file exists.
    """
    text = os.fspath(dataset)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        return path

    relative = CONFIG_DIR / f"{text}_feed_forward.yaml"
    if relative.is_file():
        return relative
    for parent in Path(__file__).resolve().parents:
        if (parent / relative).is_file():
            return parent / relative
    raise ConfigError(
        f"no config for dataset {text!r}: {relative} not found in the working folder or the source checkout; "
        "pass the path of a YAML experiment config instead"
    )


def default_checkpoints(config: ExperimentConfig) -> dict[str, Path]:
    """Return the unpruned and, when present, the pruned checkpoint of the config's ``ecs-train run`` output folder."""
    folder = Path(config.trainer_cfg.output_path) / "checkpoints"
    unpruned, pruned = folder / "final.ckpt", folder / "pruned.ckpt"
    if not unpruned.is_file():
        raise CheckpointError(
            f"checkpoint {unpruned} not found; run 'ecs-train run' with this config first, or pass checkpoints="
        )
    found = {UNPRUNED: unpruned}
    if pruned.is_file():
        found[PRUNED] = pruned
    else:
        logger.warning(
            "no pruned checkpoint %s (the run's pruning_cfg set no pruning); exporting only %s", pruned, unpruned
        )
    return found


def write_nir(
    network: Any,
    config: ExperimentConfig,
    checkpoint_path: Path,
    path: Path,
    float_accuracy: float | None,
    quantized_accuracy: float | None,
) -> float:
    """Export ``network`` to ``path`` with the config's ``ecs`` metadata and provenance; return its weight sparsity.

    The provenance records the dataset, the checkpoint's sha256, the two test
    accuracies (fractions) and the fraction of zero weights.
    """
    from ecs_train.nir_export import to_nir_graph, write_graph
    from ecs_train.nir_export.checkpoint import PRODUCER, file_sha256, weight_sparsity

    network_cfg = config.model_cfg.network_cfg
    provenance = Provenance(
        dataset=config.data_cfg.name,
        checkpoint_sha256=file_sha256(checkpoint_path),
        float_test_acc=float_accuracy,
        quant_test_acc=quantized_accuracy,
        producer=PRODUCER,
    )
    metadata = ECSMetadata(
        hardware_cfg=config.hardware_cfg,
        quant_cfg=config.model_cfg.quant_cfg,
        dt=network_cfg.dt,
        reset_mode=network_cfg.reset_mode,
        readout=network_cfg.readout,
        provenance=provenance,
    )
    graph = to_nir_graph(network, metadata, torch.zeros(network.input_shape))
    sparsity = weight_sparsity(graph)
    metadata = metadata.model_copy(update={"provenance": provenance.model_copy(update={"sparsity": sparsity})})
    graph.metadata = encode(metadata)
    write_graph(graph, path)
    return sparsity


def _export_one(
    config: ExperimentConfig, checkpoint: Path, folder: Path, num_samples: int, force: bool
) -> dict[str, Any]:
    """Write ``network.nir``, ``samples.npz`` and ``expected.npz`` of one checkpoint into ``folder``."""
    from ecs_train.data import build_data_module
    from ecs_train.pruning import load_pruned_model
    from ecs_train.quantization import prepare_quantized

    if folder.exists() and not force:
        raise OutputExistsError(f"{folder} exists already; pass force=True to replace it")
    model, _ = load_pruned_model(config, checkpoint)
    network = model.network
    if not network.quantized:
        logger.info("%s contains a float network; applying post-training quantization", checkpoint)
        prepare_quantized(network, config.model_cfg.quant_cfg)

    data_module = build_data_module(config.data_cfg, batch_size=config.trainer_cfg.batch_size)
    test_size = len(data_module.split("test"))
    if not 0 < num_samples <= test_size:
        raise ConfigError(
            f"num_samples={num_samples} is invalid: the test split has {test_size} samples; request 1 to {test_size}"
        )
    test_x, test_y = data_module.test_arrays(test_size)
    floats: NetworkRun = float_run(network, test_x, test_y)
    quantized: NetworkRun = run_network(network, test_x, test_y)
    x, y = test_x[:num_samples].astype(np.uint8), test_y[:num_samples]
    run = run_network(network, x, y, record_spikes=True)

    # Write into a hidden folder first, so that a failure leaves no half-written checkpoint folder.
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        sparsity = write_nir(network, config, checkpoint, staging / NIR_FILE, floats.accuracy, quantized.accuracy)
        save_samples(staging / SAMPLES_FILE, x, y)
        save_expected(staging / EXPECTED_FILE, expected_outputs(network, run))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "folder": folder,
        "float_accuracy": floats.accuracy,
        "quantized_accuracy": quantized.accuracy,
        "sparsity": sparsity,
        "samples": num_samples,
    }


def training_export(
    dataset: str | os.PathLike[str],
    num_samples: int = 10,
    *,
    checkpoints: Mapping[str, str | os.PathLike[str]] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> dict[str, Path]:
    """Export the unpruned and pruned checkpoints of ``dataset`` as NIR files with test samples and expected outputs.

    ``dataset`` is a dataset name (``"digits"``, resolved by :func:`find_config`)
    or the path of an experiment config. ``checkpoints`` maps folder names to
    checkpoint files; by default the ``final.ckpt`` and ``pruned.ckpt`` of the
    config's ``ecs-train run`` output folder (:func:`default_checkpoints`).
    Each checkpoint gets the folder ``<output_dir>/<name>/``, where
    ``output_dir`` defaults to ``test_vectors/<key>`` with the key of
    :func:`ecs_common.vectors.export_key`. The first ``num_samples`` test
    samples are written, with the quantized network's output states and every
    layer's spikes. Returns the folder of every checkpoint.
    """
    config = load_yaml(find_config(dataset))
    root = Path(output_dir) if output_dir is not None else DEFAULT_ROOT / export_key(dataset)
    selected = {name: Path(path) for name, path in checkpoints.items()} if checkpoints else default_checkpoints(config)

    folders = {}
    for name, checkpoint in selected.items():
        result = _export_one(config, checkpoint, root / name, num_samples, force)
        folders[name] = result["folder"]
        logger.info(
            "%s: exported %s to %s (test accuracy float %.4f, quantized %.4f, sparsity %.3f)",
            name,
            checkpoint,
            result["folder"],
            result["float_accuracy"] or 0.0,
            result["quantized_accuracy"] or 0.0,
            result["sparsity"],
        )
        print(
            f"{name}: {checkpoint} -> {result['folder']} ({num_samples} samples, quantized test accuracy "
            f"{100 * (result['quantized_accuracy'] or 0):.2f}%, weight sparsity {100 * result['sparsity']:.1f}%)"
        )
    return folders
