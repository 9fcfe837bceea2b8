"""Read checkpoint files and check that a checkpoint was trained with the model config it is loaded against."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ecs_train.config import ExperimentConfig
from ecs_train.errors import CheckpointError

logger = logging.getLogger(__name__)

# network_cfg fields that only steer training (surrogate gradient, initialization), so they may differ.
TRAINING_ONLY_NETWORK_FIELDS = frozenset({"surrogate", "surrogate_alpha", "init_gain"})

# quant_cfg fields that decide the quantized network. The mode (ptq or qat) only describes the training.
QUANTIZED_FIELDS = ("enabled", "weight_format", "state_format", "decay_format", "input_scaling")


# First bytes of the files torch.save writes: a zip archive (torch 1.6 and later) or a bare pickle.
CHECKPOINT_SIGNATURES = (b"PK\x03\x04", b"\x80")

WHAT_TO_PASS = "pass a .ckpt file written by 'ecs-train fit', 'ecs-train prune' or 'ecs-train run', or its folder"


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint file into a dict on the CPU.

    Raises :class:`CheckpointError` when the file is not a PyTorch or
    Lightning checkpoint, cannot be read, or contains no state_dict.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {error.strerror}") from error
    if not head.startswith(CHECKPOINT_SIGNATURES):
        raise CheckpointError(
            f"{str(path)!r} is not a PyTorch/Lightning checkpoint (it starts with {head!r}, not a zip archive or "
            f"pickle); {WHAT_TO_PASS}"
        )
    # NOTE: a checkpoint is a pickle, and with weights_only=False loading it can run any code it contains.
    # weights_only=True restricts unpickling to tensors, plain Python values and torch's allowlisted types.
    # The checkpoints of ecs-train (Lightning 2.x and save_pruned_checkpoint) load this way. Still load only
    # trusted files.
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a corrupt or foreign file
        message = " ".join(str(error).split())
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {message}; {WHAT_TO_PASS}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{str(path)!r} is not a Lightning checkpoint (no state_dict); {WHAT_TO_PASS}")
    return checkpoint


def stored_model_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """Return the ``model_cfg`` that the training run saved in the checkpoint's hyperparameters, or None."""
    hyper_parameters = checkpoint.get("hyper_parameters")
    if not isinstance(hyper_parameters, dict):
        return None
    config = hyper_parameters.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        return None
    return config["model_cfg"]


def model_config_differences(config: ExperimentConfig, stored: dict[str, Any], quantized: bool) -> list[str]:
    """List each model_cfg field whose value in ``config`` differs from ``stored``, with both values.

    quant_cfg is compared only for a quantized checkpoint, because the
    weights of a float checkpoint do not depend on it, so a float checkpoint
    may be quantized with any formats.
    """
    current = config.model_cfg.model_dump(mode="json")
    differences = []
    stored_network = stored.get("network_cfg", {})
    for name, value in current["network_cfg"].items():
        if name in TRAINING_ONLY_NETWORK_FIELDS or name not in stored_network:
            continue
        if stored_network[name] != value:
            differences.append(f"model_cfg.network_cfg.{name}: config {value!r}, checkpoint {stored_network[name]!r}")
    if quantized:
        stored_quant = stored.get("quant_cfg", {})
        for name in QUANTIZED_FIELDS:
            if name in stored_quant and stored_quant[name] != current["quant_cfg"][name]:
                differences.append(
                    f"model_cfg.quant_cfg.{name}: config {current['quant_cfg'][name]!r}, "
                    f"checkpoint {stored_quant[name]!r}"
                )
    return differences


def check_model_config(config: ExperimentConfig, checkpoint: dict[str, Any], path: Path, quantized: bool) -> None:
    """Raise :class:`CheckpointError` listing every model_cfg field that differs from the checkpoint's own.

    ``quantized`` is true when the checkpoint contains a quantized network.
    Trainer, data, hardware and pruning settings may differ. A checkpoint
    without a stored config (not written by ecs-train) is not checked, and a
    warning says so.
    """
    stored = stored_model_config(checkpoint)
    if stored is None:
        logger.warning(
            "checkpoint %s stores no training config, so its neuron parameters and formats are not checked", path
        )
        return
    differences = model_config_differences(config, stored, quantized)
    if differences:
        lines = "\n".join(f"  {line}" for line in differences)
        raise CheckpointError(
            f"checkpoint {str(path)!r} was trained with a different model config; {len(differences)} field(s) "
            f"differ:\n{lines}\nuse the config the checkpoint was trained with, for example the config.yaml "
            "that the training run wrote to its output folder"
        )
