"""Global magnitude pruning to a sparsity or to the hardware's synapse budgets, with fine-tuning under the masks.

Pruning is ``torch.nn.utils.prune.global_unstructured`` with
``L1Unstructured`` over the weights of every Linear and Conv2d layer: the
weights with the smallest magnitudes over the whole network are masked,
whichever layer they sit in. During fine-tuning the masks stay in place as
``torch.nn.utils.prune`` reparametrizations (``weight_orig`` and
``weight_mask``), so pruned weights stay exactly zero.

Checkpoints store pruning as permanent: ``weight`` contains exact zeros where
weights were pruned, so the checkpoint has the same keys as an unpruned one
and ``ecs_train.training.load_model`` and the NIR export read it unchanged.
The masks themselves are recorded under the checkpoint key ``ecs_pruning``
(:class:`PruningRecord`) and can be put back with :func:`apply_masks` for
further pruning or fine-tuning. A pruned weight is zero, and a zero weight
word creates no synapse on the accelerator.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.utils import prune

from ecs_common.errors import ConfigError, ResourceError
from ecs_common.fixed_point import quantize
from ecs_common.hardware_config import AcceleratorConfig
from ecs_train.checkpoint_config import read_checkpoint
from ecs_train.config import ExperimentConfig, LearningRateSchedule
from ecs_train.constraints import (
    ConstraintReport,
    EmptyLayerError,
    constraint_report,
    effective_weight,
    iter_weight_modules,
    magnitude_pruning_to_fit,
    neuron_stages,
)
from ecs_train.errors import CheckpointError, OutputExistsError
from ecs_train.models import SpikingNetwork
from ecs_train.quantization import prepare_quantized
from ecs_train.training import (
    FINAL_CHECKPOINT,
    LAST_CHECKPOINT,
    AtomicCheckpointIO,
    SpikingClassifier,
    load_model,
)

logger = logging.getLogger(__name__)

# Checkpoint key of the pruning record, next to Lightning's keys.
PRUNING_KEY = "ecs_pruning"

PRUNING_METHOD = "global_l1_unstructured"

# Fine-tuning learning rate as a fraction of the training's initial rate, used when
# pruning_cfg.learning_rate is not set. On FSDD (10 epochs) half the initial rate kept
# 5 points more test accuracy at 80% sparsity than the QAT rate 0.002 (docs/constraints.md).
FINE_TUNE_LEARNING_RATE_FACTOR = 0.5

# Learning-rate schedules of fine-tuning (those of trainer_cfg.lr_schedule).
FINE_TUNE_SCHEDULES = ("constant", "cosine")

# Extra searches after fine-tuning when the pruned network no longer fits (ties in magnitude, moved weights).
MAX_REFITS = 3


# Masks and sparsity.


def prunable_parameters(network: SpikingNetwork) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
    """Return ``(path, module)`` of every Linear and Conv2d whose ``weight`` is pruned, input to output."""
    return list(iter_weight_modules(network))


def is_pruned(module: nn.Module) -> bool:
    """Return whether ``module.weight`` carries a ``torch.nn.utils.prune`` mask."""
    return prune.is_pruned(module) and hasattr(module, "weight_mask")


def masks_of(network: SpikingNetwork) -> dict[str, torch.Tensor]:
    """Return a boolean keep-mask per prunable weight (``layers.1.weight``), True where the weight is kept.

    A weight without a pruning mask counts as kept where it is nonzero, so
    masks of a permanently pruned network are recovered from its zeros.
    """
    masks = {}
    for path, module in prunable_parameters(network):
        if is_pruned(module):
            # torch.nn.utils.prune registers weight_mask as a buffer, so nn.Module's type hints do not declare it.
            weight_mask = cast(torch.Tensor, module.weight_mask)
            masks[f"{path}.weight"] = weight_mask.detach().cpu().to(torch.bool)
        else:
            masks[f"{path}.weight"] = module.weight.detach().cpu() != 0
    return masks


def weight_sparsity(network: SpikingNetwork) -> float:
    """Return the fraction of prunable weights that are zero (pruned, or exactly zero)."""
    total = 0
    zeros = 0
    for _, module in prunable_parameters(network):
        weight = effective_weight(module)
        total += weight.numel()
        zeros += int((weight == 0).sum())
    return zeros / total if total else 0.0


def synapse_sparsity(network: SpikingNetwork, weight_format: Any) -> float:
    """Return the fraction of prunable weights whose weight word is zero: weights that create no synapse."""
    total = 0
    zeros = 0
    for _, module in prunable_parameters(network):
        words = quantize(effective_weight(module).cpu().to(torch.float64).numpy(), weight_format)
        total += words.size
        zeros += int(np.count_nonzero(words == 0))
    return zeros / total if total else 0.0


def apply_masks(network: SpikingNetwork, masks: dict[str, torch.Tensor]) -> None:
    """Put recorded keep-masks back as ``torch.nn.utils.prune`` masks, for further pruning or fine-tuning.

    Raises :class:`ConfigError` when a mask names no prunable weight or has the wrong shape.
    """
    modules = {f"{path}.weight": module for path, module in prunable_parameters(network)}
    for name, mask in masks.items():
        if name not in modules:
            raise ConfigError(
                f"pruning mask {name!r} matches no prunable weight; the network has {', '.join(modules)}. "
                "Use the config the checkpoint was trained with"
            )
        module = modules[name]
        if tuple(mask.shape) != tuple(module.weight.shape):
            raise ConfigError(
                f"pruning mask {name!r} has shape {list(mask.shape)}, but the weight has {list(module.weight.shape)}"
            )
        mask = mask.to(device=module.weight.device, dtype=module.weight.dtype)
        if is_pruned(module):
            prune.remove(module, "weight")
        prune.custom_from_mask(module, "weight", mask)


def make_permanent(network: SpikingNetwork) -> dict[str, torch.Tensor]:
    """Fold every pruning mask into its weight (pruned weights become exact zeros); return the masks."""
    masks = masks_of(network)
    for _, module in prunable_parameters(network):
        if is_pruned(module):
            prune.remove(module, "weight")
    return masks


def _check_no_empty_layer(network: SpikingNetwork, sparsity: float) -> None:
    for path, module in prunable_parameters(network):
        if not bool((effective_weight(module) != 0).any()):
            raise EmptyLayerError(
                f"pruning to sparsity {100 * sparsity:.6g}% removed every weight of {path!r}, so the layer behind it "
                "would receive no input; prune to a lower sparsity"
            )


def _predict_empty_layer(network: SpikingNetwork, count: int) -> str | None:
    """Return the path of a weight tensor that pruning ``count`` more weights would empty, or None."""
    kept = [(path, effective_weight(module).abs().flatten()) for path, module in prunable_parameters(network)]
    candidates = torch.cat([values[values != 0] for _, values in kept])
    if count >= candidates.numel():
        return kept[0][0]
    threshold = torch.kthvalue(candidates.to(torch.float64), count).values if count > 0 else None
    for path, values in kept:
        nonzero = values[values != 0]
        if threshold is not None and nonzero.numel() and bool(nonzero.max() <= threshold):
            return path
    return None


def prune_to_sparsity(network: SpikingNetwork, sparsity: float) -> float:
    """Mask the smallest-magnitude weights of the whole network until ``sparsity`` of them are zero.

    ``sparsity`` is the cumulative fraction of all prunable weights, in
    [0, 1). Weights that are zero already count towards it, so repeated calls
    with rising sparsities prune iteratively. Returns the sparsity reached.
    Raises :class:`EmptyLayerError`, before changing anything, when the
    sparsity would remove every weight of a layer.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity {sparsity!r} is invalid; use a fraction of the weights in [0, 1)")
    parameters = prunable_parameters(network)
    total = sum(module.weight.numel() for _, module in parameters)
    zeros = round(weight_sparsity(network) * total)
    count = round(sparsity * total) - zeros
    if count <= 0:
        logger.info("sparsity %.1f%% reached already (%.1f%% of weights are zero)", 100 * sparsity, 100 * zeros / total)
        return zeros / total

    emptied = _predict_empty_layer(network, count)
    if emptied is not None:
        raise EmptyLayerError(
            f"pruning to sparsity {100 * sparsity:.6g}% would remove every weight of {emptied!r}, "
            "so the layer behind it would receive no input; prune to a lower sparsity"
        )

    # Zero weights without a mask get one first, so that global_unstructured counts them as pruned.
    for _, module in parameters:
        if not is_pruned(module):
            prune.custom_from_mask(module, "weight", (module.weight.detach() != 0).to(module.weight.dtype))
    prune.global_unstructured(
        [(module, "weight") for _, module in parameters], pruning_method=prune.L1Unstructured, amount=count
    )
    _check_no_empty_layer(network, sparsity)
    reached = weight_sparsity(network)
    logger.info("pruned %d weights: sparsity %.2f%% of %d weights", count, 100 * reached, total)
    return reached


# Fitting the hardware.


def sparsity_to_fit(network: SpikingNetwork, accelerator_config: AcceleratorConfig) -> float:
    """Return the smallest global sparsity at which magnitude pruning makes the network fit the accelerator.

    Bisection over the number of weights removed, smallest magnitudes first,
    each candidate placed with ``ecs_common.placement``. Every weight that is
    not pruned counts as a synapse, even one whose word is zero now, so the
    result still fits after fine-tuning changes the kept weights. Returns the
    current sparsity when the network fits already. Raises
    :class:`ResourceError` when no magnitude pruning makes it fit, and the
    errors of :func:`ecs_train.constraints.constraint_report`.
    """
    report = constraint_report(network, accelerator_config, allow_saturation=True, search_pruning=False)
    current = weight_sparsity(network)
    if report.fits:
        return current

    stages = neuron_stages(network)
    fmt = accelerator_config.weight_quant_scheme
    floats = {
        path: effective_weight(module).cpu().to(torch.float64).numpy() for path, module in prunable_parameters(network)
    }
    words = {path: quantize(value, fmt) for path, value in floats.items()}
    present = {path: value != 0 for path, value in floats.items()}
    input_size = math.prod(network.input_shape)
    search = magnitude_pruning_to_fit(stages, input_size, accelerator_config.hardware, words, floats, present)
    if not search.fits:
        raise ResourceError(f"magnitude pruning cannot make the network fit: {search.reason}")

    total = sum(value.size for value in floats.values())
    kept = sum(int(mask.sum()) for mask in search.masks.values())
    logger.info(
        "fitting the hardware needs %d more weights pruned (%d placements tried): sparsity %.2f%%",
        search.removed,
        search.placements,
        100 * (1 - kept / total),
    )
    return 1.0 - kept / total


# Fine-tuning and evaluation.


def default_fine_tune_learning_rate(config: ExperimentConfig) -> float:
    """Return the fine-tuning learning rate: ``pruning_cfg.learning_rate``, or without it
    ``FINE_TUNE_LEARNING_RATE_FACTOR`` times ``trainer_cfg.learning_rate``."""
    if config.pruning_cfg.learning_rate is not None:
        return config.pruning_cfg.learning_rate
    return config.trainer_cfg.learning_rate * FINE_TUNE_LEARNING_RATE_FACTOR


def fine_tune(
    model: SpikingClassifier,
    data_module: pl.LightningDataModule,
    epochs: int,
    learning_rate: float,
    limit_batches: float | int | None = None,
    schedule: str = "constant",
    select_best: bool = True,
) -> int | None:
    """Train ``model`` for ``epochs`` more epochs from ``learning_rate``, keeping its pruning masks.

    ``schedule`` ``"constant"`` keeps the rate; ``"cosine"`` decays it over
    the epochs to 5% of ``learning_rate``, as training's cosine schedule
    does. With ``select_best`` the model is validated after every epoch and
    ends with the weights of the epoch with the best validation accuracy
    (quantized when quantization is enabled), else with those of the last
    epoch. Returns the epoch kept (1 for the first), or None without
    fine-tuning. The network trains in its current mode: a quantized network
    keeps training quantization-aware. The trainer's devices and strategy
    come from the model's config; no checkpoints or logs are written.
    """
    if epochs <= 0:
        return None
    if schedule not in FINE_TUNE_SCHEDULES:
        raise ConfigError(f"invalid schedule {schedule!r}; expected one of {', '.join(FINE_TUNE_SCHEDULES)}")
    original = model.config
    tuned = original.model_copy(deep=True)
    tuned.trainer_cfg.learning_rate = learning_rate
    # The check above accepts only the values of FINE_TUNE_SCHEDULES.
    tuned.trainer_cfg.lr_schedule = cast(LearningRateSchedule, schedule)
    tuned.trainer_cfg.num_epochs = epochs
    tuned.trainer_cfg.qat_learning_rate = None
    trainer_cfg = tuned.trainer_cfg
    limit = trainer_cfg.limit_batches if limit_batches is None else limit_batches
    best = _BestOnValidation("val_acc_quantized" if tuned.model_cfg.quant_cfg.enabled else "val_acc")
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        strategy=trainer_cfg.strategy,
        num_nodes=trainer_cfg.num_nodes,
        limit_train_batches=limit,
        limit_val_batches=limit if select_best else 0,
        num_sanity_val_steps=0,
        callbacks=[best] if select_best else [],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model.config = tuned
    model.train()
    try:
        trainer.fit(model, datamodule=data_module)
    finally:
        model.config = original
    model.cpu()

    if not select_best or best.state is None:
        return epochs
    model.load_state_dict(best.state)
    logger.info(
        "kept the weights of fine-tuning epoch %d of %d (%s %.4f)", best.epoch, epochs, best.monitor, best.score
    )
    return best.epoch


class _BestOnValidation(pl.Callback):
    """Keep a copy of the weights (pruning masks included) of the epoch with the best validation accuracy."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.score = -math.inf
        self.epoch = 0
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        score = float(value)
        # Strictly better only, so that of equal epochs the earliest, least changed one stays.
        if score > self.score:
            self.score = score
            self.epoch = trainer.current_epoch + 1
            self.state = {key: tensor.detach().cpu().clone() for key, tensor in pl_module.state_dict().items()}


def evaluate(
    model: SpikingClassifier,
    data_module: Any,
    split: str = "test",
    limit_batches: int | None = None,
) -> float:
    """Return the accuracy of ``model`` (in its current mode) on a split: ``"test"`` or ``"val"``."""
    loaders = {"test": data_module.test_dataloader, "val": data_module.val_dataloader}
    if split not in loaders:
        raise ValueError(f"unknown split {split!r}; choose 'test' or 'val'")
    data_module.setup("test")
    device = next(model.parameters()).device
    model.eval()
    correct = 0
    total = 0
    with torch.no_grad():
        for index, (x, y) in enumerate(loaders[split]()):
            if limit_batches is not None and index >= limit_batches:
                break
            scores = model(x.to(device))
            correct += int((scores.argmax(dim=1).cpu() == y).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError(f"the {split} split has no samples to evaluate")
    return correct / total


def quantized_accuracy(
    model: SpikingClassifier, data_module: Any, split: str = "test", limit_batches: int | None = None
) -> float:
    """Return the accuracy of the quantized network: ``model`` itself if quantized, else a quantized copy of it."""
    if model.network.quantized or not model.quant_cfg.enabled:
        return evaluate(model, data_module, split, limit_batches)
    preview = copy.deepcopy(model)
    make_permanent(preview.network)
    prepare_quantized(preview.network, preview.quant_cfg)
    return evaluate(preview, data_module, split, limit_batches)


# The whole procedure.


@dataclass
class PruningStep:
    """One prune-and-fine-tune iteration: the sparsity reached and the accuracy after fine-tuning, if measured."""

    iteration: int
    sparsity: float
    accuracy: float | None
    kept_epoch: int | None = None


@dataclass
class PruningRecord:
    """Pruning settings, masks and accuracies of a checkpoint, stored under its ``ecs_pruning`` key.

    ``masks`` maps each weight (``layers.1.weight``) to a boolean keep-mask.
    Accuracies are fractions of the evaluated split (quantized when the
    model is), ``None`` where not measured.
    """

    method: str
    sparsity: float
    target_sparsity: float
    fit_hardware: bool
    iterations: int
    fine_tune_epochs: int
    learning_rate: float
    accuracy_before: float | None
    accuracy_after: float | None
    accuracy_without_fine_tuning: float | None
    split: str
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: list[PruningStep] = field(default_factory=list)
    schedule: str = "constant"
    select_best: bool = False

    def to_checkpoint(self) -> dict[str, Any]:
        """Return the record as plain values and tensors for ``torch.save``."""
        values = asdict(self)
        values["masks"] = {name: mask.to(torch.bool) for name, mask in self.masks.items()}
        return values

    @classmethod
    def from_checkpoint(cls, values: dict[str, Any]) -> PruningRecord:
        """Rebuild a record written by :meth:`to_checkpoint`."""
        values = dict(values)
        values["steps"] = [PruningStep(**step) for step in values.get("steps", [])]
        return cls(**values)


@dataclass
class PruningResult:
    """Outcome of :func:`prune_model`: the record to store and the constraint report of the pruned network."""

    record: PruningRecord
    report: ConstraintReport


def prune_model(
    model: SpikingClassifier,
    data_module: Any,
    accelerator_config: AcceleratorConfig,
    *,
    sparsity: float = 0.0,
    fit_hardware: bool = False,
    fine_tune_epochs: int = 5,
    iterations: int = 1,
    learning_rate: float | None = None,
    schedule: str = "constant",
    select_best: bool = True,
    limit_batches: float | int | None = None,
    split: str = "test",
    measure_without_fine_tuning: bool = False,
    allow_saturation: bool | None = None,
) -> PruningResult:
    """Prune ``model`` in place to ``sparsity``, or further until it fits the accelerator, and fine-tune it.

    The target is ``sparsity``, raised with ``fit_hardware`` to the smallest
    sparsity at which the network fits (:func:`sparsity_to_fit`). It is
    reached in ``iterations`` equal steps, each followed by
    ``fine_tune_epochs`` epochs at ``learning_rate`` (default: half the
    training's initial rate, see :func:`default_fine_tune_learning_rate`)
    with the masks in place. Afterwards the masks are
    made permanent (pruned weights exact zeros) and recorded. Accuracy is
    measured on ``split`` before and after (quantized, see
    :func:`quantized_accuracy`); ``measure_without_fine_tuning`` also
    measures it right after the first pruning step. ``limit_batches`` limits
    fine-tuning and evaluation batches for quick runs.

    Raises :class:`EmptyLayerError` when a layer would lose every weight,
    :class:`ResourceError` when ``fit_hardware`` cannot be met, and the
    errors of :func:`ecs_train.constraints.constraint_report`.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity {sparsity!r} is invalid; use a fraction of the weights in [0, 1)")
    if iterations < 1:
        raise ConfigError(f"iterations {iterations!r} is invalid; use 1 or more pruning steps")
    if fine_tune_epochs < 0:
        raise ConfigError(f"fine_tune_epochs {fine_tune_epochs!r} is invalid; use 0 or more epochs")
    if schedule not in FINE_TUNE_SCHEDULES:
        raise ConfigError(f"invalid schedule {schedule!r}; expected one of {', '.join(FINE_TUNE_SCHEDULES)}")
    network = model.network
    rate = default_fine_tune_learning_rate(model.config) if learning_rate is None else learning_rate
    eval_limit = int(limit_batches) if isinstance(limit_batches, int) else None

    accuracy_before = quantized_accuracy(model, data_module, split, eval_limit)
    start = weight_sparsity(network)
    target = max(sparsity, start)
    if fit_hardware:
        target = max(target, sparsity_to_fit(network, accelerator_config))
    logger.info("pruning from sparsity %.2f%% to %.2f%% in %d step(s)", 100 * start, 100 * target, iterations)

    steps: list[PruningStep] = []
    without_fine_tuning = None
    for iteration in range(1, iterations + 1):
        reached = prune_to_sparsity(network, start + (target - start) * iteration / iterations)
        if iteration == 1 and measure_without_fine_tuning:
            without_fine_tuning = quantized_accuracy(model, data_module, split, eval_limit)
        kept_epoch = fine_tune(model, data_module, fine_tune_epochs, rate, limit_batches, schedule, select_best)
        accuracy = quantized_accuracy(model, data_module, split, eval_limit) if iterations > 1 else None
        steps.append(PruningStep(iteration, reached, accuracy, kept_epoch))

    if fit_hardware:
        _refit(network, accelerator_config)

    masks = make_permanent(network)
    accuracy_after = quantized_accuracy(model, data_module, split, eval_limit)
    report = constraint_report(model, accelerator_config, allow_saturation=allow_saturation)
    record = PruningRecord(
        method=PRUNING_METHOD,
        sparsity=weight_sparsity(network),
        target_sparsity=target,
        fit_hardware=fit_hardware,
        iterations=iterations,
        fine_tune_epochs=fine_tune_epochs,
        learning_rate=rate,
        accuracy_before=accuracy_before,
        accuracy_after=accuracy_after,
        accuracy_without_fine_tuning=without_fine_tuning,
        split=split,
        masks=masks,
        steps=steps,
        schedule=schedule,
        select_best=select_best,
    )
    return PruningResult(record=record, report=report)


def _refit(network: SpikingNetwork, accelerator_config: AcceleratorConfig) -> None:
    """Prune further, without fine-tuning, when fine-tuning or ties left the network not fitting."""
    for _ in range(MAX_REFITS):
        report = constraint_report(network, accelerator_config, allow_saturation=True, search_pruning=False)
        if report.fits:
            return
        needed = sparsity_to_fit(network, accelerator_config)
        logger.warning("the pruned network does not fit after fine-tuning; pruning on to sparsity %.2f%%", 100 * needed)
        prune_to_sparsity(network, needed)
    report = constraint_report(network, accelerator_config, allow_saturation=True, search_pruning=False)
    if not report.fits:
        raise ResourceError(f"pruning did not make the network fit after {MAX_REFITS} attempts: {report.message}")


# Checkpoints.


def save_pruned_checkpoint(
    model: SpikingClassifier, path: str | os.PathLike[str], record: PruningRecord, force: bool = False
) -> Path:
    """Write a Lightning checkpoint of the pruned model with its pruning record, atomically.

    The pruning must be permanent (:func:`make_permanent`). Raises
    :class:`OutputExistsError` when ``path`` exists and ``force`` is false.
    """
    target = Path(path)
    if target.exists() and not force:
        raise OutputExistsError(f"{target} exists already; pass --force (force=True) to overwrite it")
    if any(is_pruned(module) for _, module in prunable_parameters(model.network)):
        raise ValueError("the model still has pruning reparametrizations; call make_permanent(model.network) first")

    hyper_parameters = copy.deepcopy(dict(model.hparams))
    pruning_cfg = hyper_parameters.get("config", {}).get("pruning_cfg")
    if isinstance(pruning_cfg, dict):
        pruning_cfg.update(
            sparsity=record.target_sparsity,
            fit_hardware=record.fit_hardware,
            fine_tune_epochs=record.fine_tune_epochs,
            iterations=record.iterations,
        )
    checkpoint: dict[str, Any] = {
        "state_dict": model.state_dict(),
        "hyper_parameters": hyper_parameters,
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
        PRUNING_KEY: record.to_checkpoint(),
    }
    model.on_save_checkpoint(checkpoint)
    AtomicCheckpointIO().save_checkpoint(checkpoint, target)
    logger.info("wrote pruned checkpoint %s (sparsity %.2f%%)", target, 100 * record.sparsity)
    return target


def read_pruning_record(path: str | os.PathLike[str]) -> PruningRecord | None:
    """Return the pruning record of a checkpoint file, or None when it was not pruned."""
    checkpoint = read_checkpoint(Path(path))
    values = checkpoint.get(PRUNING_KEY)
    return None if values is None else PruningRecord.from_checkpoint(values)


def load_pruned_model(
    config: ExperimentConfig,
    checkpoint_path: str | os.PathLike[str],
    reapply_masks: bool = False,
    quantized: bool | None = None,
) -> tuple[SpikingClassifier, PruningRecord | None]:
    """Load a checkpoint (pruned or not) and its pruning record.

    Checks that every weight outside its recorded mask is exactly zero. With
    ``reapply_masks`` the masks are put back as ``torch.nn.utils.prune``
    masks, so that fine-tuning keeps pruned weights at zero. Raises
    :class:`CheckpointError` for an unreadable or inconsistent checkpoint.
    """
    model = load_model(config, checkpoint_path, quantized=quantized)
    path = Path(checkpoint_path)
    if path.is_dir():
        path = next(path / name for name in (FINAL_CHECKPOINT, LAST_CHECKPOINT) if (path / name).is_file())
    record = read_pruning_record(path)
    if record is None:
        return model, None

    modules = {f"{name}.weight": module for name, module in prunable_parameters(model.network)}
    for name, mask in record.masks.items():
        if name not in modules:
            raise CheckpointError(
                f"checkpoint {str(path)!r} records a pruning mask for {name!r}, which the model lacks"
            )
        leaked = int(((~mask) & (modules[name].weight.detach().cpu() != 0)).sum())
        if leaked:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: {leaked} weight(s) of {name!r} are nonzero although its pruning mask "
                "marks them pruned; the checkpoint was changed after pruning, so prune it again"
            )
    if reapply_masks:
        apply_masks(model.network, record.masks)
    return model, record
