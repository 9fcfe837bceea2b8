"""Lightning training of spiking classifiers, with quantization-aware fine-tuning and atomic checkpoints."""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torchmetrics.classification import MulticlassAccuracy

from ecs_common.errors import ConfigError, ECSError, QuantizationError
from ecs_train.checkpoint_config import check_model_config, read_checkpoint
from ecs_train.config import ExperimentConfig, parse_config
from ecs_train.data import build_data_module
from ecs_train.errors import CheckpointError
from ecs_train.models import SpikingNetwork, build_model
from ecs_train.quantization import QUANTIZED_MODULES, quantize_model, quantize_weights
from ecs_train.utils import atomic_write, set_random_seed
from ecs_train.visualization.network_logger import NetworkLogger

logger = logging.getLogger(__name__)

# Checkpoint file names inside trainer_cfg.checkpoint_dir.
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
FINAL_CHECKPOINT = "final.ckpt"
CHECKPOINT_NAMES = (LAST_CHECKPOINT, BEST_CHECKPOINT, FINAL_CHECKPOINT)

# Checkpoint keys that ecs-train adds next to Lightning's own.
QUANTIZED_KEY = "ecs_quantized"

# The cosine schedule decays the learning rate to this fraction of its start.
COSINE_FLOOR = 0.05


class SpikingClassifier(pl.LightningModule):
    """Classify event streams with a spiking network: cross-entropy on the readout, Adam, accuracy metrics.

    ``network`` is the :class:`ecs_train.models.SpikingNetwork`. The metrics
    ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` and ``test_acc``
    come from the network's current mode, quantized or float. With
    quantization enabled, ``val_acc_quantized`` is the validation accuracy
    that the quantized network reaches with the current weights. With the
    network quantized, ``test_acc_float`` is the test accuracy of the float
    forward with the same weights.
    """

    def __init__(self, config: ExperimentConfig | dict[str, Any], input_shape: list[int], num_classes: int) -> None:
        super().__init__()
        if not isinstance(config, ExperimentConfig):
            config = parse_config(config, "from checkpoint hyperparameters")
        self.config = config
        self.save_hyperparameters(
            {"config": config.model_dump(mode="json"), "input_shape": list(input_shape), "num_classes": num_classes}
        )
        self.network: SpikingNetwork = build_model(config.model_cfg.network_cfg, input_shape, num_classes)

        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc_quantized = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc_float = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self._quantized_preview: SpikingNetwork | None = None

    @property
    def quant_cfg(self) -> Any:
        """Quantization config of the experiment."""
        return self.config.model_cfg.quant_cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class scores ``[B, classes]`` for input ``[B, T, *input_shape]``."""
        return self.network.scores(self.network(x))

    def _loss_and_scores(self, network: SpikingNetwork, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Any]:
        scores = network.scores(network(x)).float()
        return F.cross_entropy(scores, y), scores

    def training_step(self, batch: Any, batch_index: int) -> torch.Tensor:
        x, y = batch
        loss, scores = self._loss_and_scores(self.network, x, y)
        self.train_acc(scores, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        # A quantized copy of the float network shows, every epoch, the
        # accuracy that post-training quantization of these weights would give.
        self._quantized_preview = None
        if self.quant_cfg.enabled and not self.network.quantized:
            preview = copy.deepcopy(self.network)
            self._quantized_preview = quantize_model(preview, self.quant_cfg)

    def validation_step(self, batch: Any, batch_index: int) -> None:
        x, y = batch
        loss, scores = self._loss_and_scores(self.network, x, y)
        self.val_acc(scores, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val_acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        if not self.quant_cfg.enabled:
            return
        if self._quantized_preview is not None:
            _, scores = self._loss_and_scores(self._quantized_preview, x, y)
        self.val_acc_quantized(scores, y)
        self.log("val_acc_quantized", self.val_acc_quantized, on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        self._quantized_preview = None

    def test_step(self, batch: Any, batch_index: int) -> None:
        x, y = batch
        _, scores = self._loss_and_scores(self.network, x, y)
        self.test_acc(scores, y)
        self.log("test_acc", self.test_acc, on_step=False, on_epoch=True, prog_bar=True)
        if self.network.quantized:
            with self.network.float_forward():
                _, float_scores = self._loss_and_scores(self.network, x, y)
            self.test_acc_float(float_scores, y)
            self.log("test_acc_float", self.test_acc_float, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> Any:
        trainer_cfg = self.config.trainer_cfg
        optimizer = torch.optim.Adam(
            self.parameters(), lr=trainer_cfg.learning_rate, weight_decay=trainer_cfg.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._learning_rate_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def _learning_rate_factor(self, epoch: int) -> float:
        trainer_cfg = self.config.trainer_cfg
        float_epochs = trainer_cfg.num_epochs
        if epoch >= float_epochs and trainer_cfg.qat_learning_rate is not None:
            return trainer_cfg.qat_learning_rate / trainer_cfg.learning_rate
        if trainer_cfg.lr_schedule == "constant":
            return 1.0
        progress = min(epoch, float_epochs - 1) / max(float_epochs - 1, 1)
        return COSINE_FLOOR + (1.0 - COSINE_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[QUANTIZED_KEY] = self.network.quantized

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs before Lightning loads the state dict. Quantized and float
        # networks have the same state dict keys, so only the forward changes.
        self.set_quantized(bool(checkpoint.get(QUANTIZED_KEY, False)))

    def set_quantized(self, quantized: bool) -> None:
        """Switch the network to the quantized forward (wrapping its layers on first use) or back to float."""
        if quantized:
            quantize_model(self.network, self.quant_cfg)
        else:
            for module in self.network.modules():
                if isinstance(module, QUANTIZED_MODULES):
                    module.quantized = False


class QuantizationSchedule(Callback):
    """Switch the network to the quantized forward at the point the quant config sets.

    Mode ``qat``: after ``num_epochs`` float epochs, the remaining
    ``qat_epochs`` train with the quantized forward. Mode ``ptq`` (or ``qat``
    with no QAT epochs): when fitting ends, the weights are rounded to the
    weight format in place and the network switches to the quantized forward.
    Either way the model that fitting leaves behind is saved as ``final.ckpt``.
    """

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__()
        self.quant_cfg = config.model_cfg.quant_cfg
        self.float_epochs = config.trainer_cfg.num_epochs
        self.checkpoint_dir = config.trainer_cfg.checkpoint_dir

    # Lightning types pl_module as LightningModule. Only build_trainer adds this callback, and its trainers
    # fit a SpikingClassifier.

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.quant_cfg.enabled or self.quant_cfg.mode != "qat":
            return
        model = cast(SpikingClassifier, pl_module)
        if trainer.current_epoch >= self.float_epochs and not model.network.quantized:
            logger.info("epoch %d: switching to quantization-aware training", trainer.current_epoch)
            model.set_quantized(True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = cast(SpikingClassifier, pl_module)
        if self.quant_cfg.enabled and not model.network.quantized:
            fmt = self.quant_cfg.weight_format
            report = quantize_weights(model.network, fmt.wl, fmt.fl)
            model.set_quantized(True)
            logger.info(
                "post-training quantization to %s: %d of %d weights saturated",
                fmt,
                report.num_saturated,
                report.num_weights,
            )
        trainer.save_checkpoint(self.checkpoint_dir / FINAL_CHECKPOINT)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save checkpoints to a temporary file in the target folder, then rename it into place.

    A crash while saving leaves the previous checkpoint intact.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint does not take storage_options")
        with atomic_write(path, binary=True) as handle:
            torch.save(checkpoint, handle)


def build_trainer(config: ExperimentConfig, limit_batches: float | int | None = None) -> pl.Trainer:
    """Build the Lightning trainer described by ``config.trainer_cfg``.

    ``limit_batches`` (a fraction or a count of batches per epoch) overrides
    ``trainer_cfg.limit_batches`` for training, validation and test.
    """
    trainer_cfg = config.trainer_cfg
    quant_cfg = config.model_cfg.quant_cfg
    limit = trainer_cfg.limit_batches if limit_batches is None else limit_batches
    max_epochs = trainer_cfg.num_epochs
    if quant_cfg.enabled and quant_cfg.mode == "qat":
        max_epochs += trainer_cfg.qat_epochs

    monitor = "val_acc_quantized" if quant_cfg.enabled else "val_acc"
    checkpoint = ModelCheckpoint(
        dirpath=trainer_cfg.checkpoint_dir,
        filename=Path(BEST_CHECKPOINT).stem,
        monitor=monitor,
        mode="max",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [
        checkpoint,
        QuantizationSchedule(config),
        NetworkLogger(trainer_cfg.output_path),
    ]
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        strategy=trainer_cfg.strategy,
        num_nodes=trainer_cfg.num_nodes,
        limit_train_batches=limit,
        limit_val_batches=limit,
        limit_test_batches=limit,
        logger=CSVLogger(trainer_cfg.output_path, name="logs"),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=True,
        log_every_n_steps=1,
    )


def initialize_experiment(
    config: ExperimentConfig, limit_batches: float | int | None = None
) -> tuple[pl.Trainer, SpikingClassifier, pl.LightningDataModule]:
    """Seed the random generators and build the trainer, the model and the data module of an experiment.

    ``limit_batches`` overrides ``trainer_cfg.limit_batches``, and
    ``trainer_cfg.num_threads``, when set, sets torch's CPU threads. Then
    ``trainer.fit(model, datamodule=data_module)`` trains and
    ``trainer.test(model, data_module)`` reports ``test_acc``.
    """
    set_random_seed(config.trainer_cfg.seed)
    if config.trainer_cfg.num_threads is not None:
        torch.set_num_threads(config.trainer_cfg.num_threads)
    data_module = build_data_module(
        config.data_cfg, batch_size=config.trainer_cfg.batch_size, seed=config.trainer_cfg.seed
    )
    model = SpikingClassifier(config, list(data_module.input_shape), int(data_module.num_classes))
    trainer = build_trainer(config, limit_batches)
    return trainer, model, data_module


def find_callback(trainer: pl.Trainer, callback_type: type[Callback]) -> Any:
    """Return the trainer's first callback of ``callback_type``, or ``None``."""
    # pytorch_lightning 2.6 assigns Trainer.callbacks in its callback connector and never declares it on Trainer.
    callbacks: list[Callback] = trainer.callbacks  # type: ignore[attr-defined]
    return next((callback for callback in callbacks if isinstance(callback, callback_type)), None)


def _resolve_checkpoint(checkpoint_path: str | os.PathLike[str]) -> Path:
    path = Path(checkpoint_path)
    if path.is_dir():
        for name in (FINAL_CHECKPOINT, LAST_CHECKPOINT):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"checkpoint folder {str(path)!r} contains neither {FINAL_CHECKPOINT} nor {LAST_CHECKPOINT}; "
            "give the path of a .ckpt file"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found; train with 'ecs-train fit' or fix the path")
    return path


def _check_state_dict(model: SpikingClassifier, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    problems = []
    for key, tensor in expected.items():
        if key not in state_dict:
            problems.append(f"{key} is missing from the checkpoint (config builds {list(tensor.shape)})")
        elif tuple(state_dict[key].shape) != tuple(tensor.shape):
            problems.append(
                f"{key} has shape {list(state_dict[key].shape)} in the checkpoint, config builds {list(tensor.shape)}"
            )
    for key in state_dict:
        if key not in expected:
            problems.append(f"{key} (shape {list(state_dict[key].shape)}) is in the checkpoint but not in the config")
    if problems:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match the config: " + "; ".join(problems) + ". Use the config the "
            "checkpoint was trained with (hidden_sizes, architecture, data input shape and classes)"
        )


def _model_shapes(config: ExperimentConfig, checkpoint: dict[str, Any], path: Path) -> tuple[list[int], int]:
    # The config, not the checkpoint, decides the shapes, so that a config
    # that differs from the training run is reported. Without the dataset's
    # files the shapes recorded in the checkpoint stand in.
    try:
        data_module = build_data_module(config.data_cfg, batch_size=1, seed=config.trainer_cfg.seed)
        return list(data_module.input_shape), int(data_module.num_classes)
    except (FileNotFoundError, ECSError) as error:
        hyperparameters = checkpoint.get("hyper_parameters", {})
        if "input_shape" not in hyperparameters or "num_classes" not in hyperparameters:
            raise CheckpointError(
                f"cannot determine the input shape of {str(path)!r}: the data config failed ({error}) and the "
                "checkpoint records no input_shape; set data_cfg.data_dir to the dataset"
            ) from error
        logger.info("data module unavailable (%s); using the input shape recorded in %s", error, path)
        return list(hyperparameters["input_shape"]), int(hyperparameters["num_classes"])


def load_model(
    config: ExperimentConfig,
    checkpoint_path: str | os.PathLike[str],
    quantized: bool | None = None,
) -> SpikingClassifier:
    """Restore a trained model from a checkpoint file (or a checkpoint folder) and the config it was trained with.

    A folder resolves to its ``final.ckpt``, else ``last.ckpt``. ``quantized``
    None keeps the state the checkpoint recorded; True or False switches the
    network's forward. Raises :class:`CheckpointError` when the file is
    missing or unreadable, or when its layer shapes differ from those the
    config builds (the error names every mismatched layer).
    """
    path = _resolve_checkpoint(checkpoint_path)
    checkpoint = read_checkpoint(path)

    input_shape, num_classes = _model_shapes(config, checkpoint, path)

    try:
        model = SpikingClassifier(config, input_shape, num_classes)
    except ConfigError as error:
        raise CheckpointError(f"checkpoint {str(path)!r} does not match the config: {error}") from error
    _check_state_dict(model, checkpoint["state_dict"], path)
    check_model_config(config, checkpoint, path, quantized=bool(checkpoint.get(QUANTIZED_KEY, False)))

    try:
        model.on_load_checkpoint(checkpoint)
    except QuantizationError as error:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be quantized with this config: {error}") from error
    model.load_state_dict(checkpoint["state_dict"])
    if quantized is not None:
        model.set_quantized(quantized)
    model.eval()
    logger.info("loaded %s (quantized: %s)", path, model.network.quantized)
    return model
