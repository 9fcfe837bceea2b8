"""Lightning callback that records loss and accuracy per epoch and plots them."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from ecs_train.utils import atomic_write

logger = logging.getLogger(__name__)

# Metrics copied from the trainer into the log each epoch, when present.
LOGGED_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_quantized")

PERF_LOG_JSON = "perf_log.json"
PERF_LOG_CSV = "perf_log.csv"
PERF_LOG_PNG = "perf_log.png"


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().item()
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class NetworkLogger(Callback):
    """Record train and validation loss and accuracy after every training epoch.

    ``output_path`` is the folder that :meth:`save_perf_log` and
    :meth:`draw_perf_log` write to. Each record contains the epoch, whether the
    network ran quantized, the learning rate and the metrics in
    ``LOGGED_METRICS`` that the LightningModule logged.
    """

    def __init__(self, output_path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.output_path = Path(output_path)
        self.records: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        record: dict[str, Any] = {"epoch": trainer.current_epoch}
        network = getattr(pl_module, "network", None)
        record["quantized"] = bool(getattr(network, "quantized", False))
        if trainer.optimizers:
            record["learning_rate"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        for name in LOGGED_METRICS:
            if name in metrics:
                record[name] = _number(metrics[name])
        self.records.append(record)

    def state_dict(self) -> dict[str, Any]:
        return {"records": list(self.records)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict.get("records", []))

    def save_perf_log(self) -> tuple[Path, Path]:
        """Write the records to ``perf_log.json`` and ``perf_log.csv`` under ``output_path``; return both paths."""
        json_path = self.output_path / PERF_LOG_JSON
        csv_path = self.output_path / PERF_LOG_CSV
        _atomic_write_text(json_path, json.dumps(self.records, indent=2) + "\n")

        columns: list[str] = []
        for record in self.records:
            columns += [key for key in record if key not in columns]
        rows = [",".join(columns)]
        for record in self.records:
            rows.append(",".join("" if record.get(key) is None else str(record[key]) for key in columns))
        _atomic_write_text(csv_path, "\n".join(rows) + "\n")
        logger.info("wrote performance log %s and %s", json_path, csv_path)
        return json_path, csv_path

    def draw_perf_log(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Save a PNG of loss and accuracy over epochs; ``path`` defaults to ``<output_path>/perf_log.png``."""
        target = Path(path) if path is not None else self.output_path / PERF_LOG_PNG
        return draw_perf_log(self.records, target)


def load_perf_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read records written by :meth:`NetworkLogger.save_perf_log` (JSON or CSV)."""
    path = Path(path)
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            return [
                {key: (None if value == "" else _parse_cell(value)) for key, value in row.items()}
                for row in csv.DictReader(handle)
            ]
    return list(json.loads(path.read_text(encoding="utf-8")))


def _parse_cell(value: str) -> Any:
    if value in ("True", "False"):
        return value == "True"
    try:
        return int(value)
    except ValueError:
        return float(value)


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    epochs, values = [], []
    for record in records:
        value = record.get(key)
        if value is not None:
            epochs.append(int(record["epoch"]) + 1)
            values.append(float(value))
    return epochs, values


def draw_perf_log(records: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Plot loss and accuracy per epoch from ``records`` into a PNG at ``path`` and return the path.

    The first epoch that ran quantized is marked with a vertical line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))

    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        epochs, values = _series(records, key)
        if values:
            loss_axis.plot(epochs, values, marker=".", label=label)
    for key, label in (
        ("train_acc", "train"),
        ("val_acc", "validation"),
        ("val_acc_quantized", "validation, quantized"),
    ):
        epochs, values = _series(records, key)
        if values:
            accuracy_axis.plot(epochs, [100 * value for value in values], marker=".", label=label)

    switch = next((int(record["epoch"]) + 1 for record in records if record.get("quantized")), None)
    for axis in (loss_axis, accuracy_axis):
        if switch is not None:
            axis.axvline(switch, color="grey", linestyle="--", linewidth=1, label="quantized from here")
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    loss_axis.set_ylabel("cross-entropy loss")
    accuracy_axis.set_ylabel("accuracy (%)")
    figure.tight_layout()

    try:
        with atomic_write(path, binary=True) as handle:
            figure.savefig(handle, format="png", dpi=100)
    finally:
        plt.close(figure)
    logger.info("wrote performance plot %s", path)
    return path
