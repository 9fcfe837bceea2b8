"""``ecs-train prune``: prune a trained checkpoint to a sparsity or to the hardware, fine-tune it and save it."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated

import typer

from ecs_common.errors import ECSError, ResourceError
from ecs_train.cli import app
from ecs_train.commands.check import EXIT_DOES_NOT_FIT, EXIT_INVALID_INPUT
from ecs_train.commands.messages import print_error

# File name of the pruned checkpoint, beside the input checkpoint, when --out is not given.
DEFAULT_OUTPUT_NAME = "pruned.ckpt"


def _accuracy(value: float | None) -> str:
    return "not measured" if value is None else f"{100 * value:.2f}%"


@app.command("prune")
def prune_command(
    config: Annotated[Path, typer.Argument(help="YAML experiment config the checkpoint was trained with.")],
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="Checkpoint file, or a folder holding final.ckpt or last.ckpt.")
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Folder with the dataset's recordings; overrides data_cfg.data_dir."),
    ] = None,
    sparsity: Annotated[
        float | None,
        typer.Option(
            "--sparsity",
            help="Fraction of all weights to prune, e.g. 0.3; 0 only fine-tunes (default: config).",
        ),
    ] = None,
    fit_hardware: Annotated[
        bool | None,
        typer.Option(
            "--fit-hardware/--no-fit-hardware",
            help="Prune at least as far as the hardware's synapse budgets need (default: config).",
        ),
    ] = None,
    fine_tune_epochs: Annotated[
        int | None,
        typer.Option("--fine-tune-epochs", min=0, help="Training epochs after each pruning step (default: config)."),
    ] = None,
    iterations: Annotated[
        int | None,
        typer.Option("--iterations", min=1, help="Pruning steps up to the target sparsity (default: config)."),
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            "--learning-rate",
            help="Fine-tuning learning rate (default: pruning_cfg.learning_rate, else half of trainer_cfg's).",
        ),
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            "--schedule",
            help="Fine-tuning learning-rate schedule: constant, or cosine decay to 5% of the rate (default: config).",
        ),
    ] = None,
    keep_last_epoch: Annotated[
        bool,
        typer.Option(
            "--keep-last-epoch",
            help="Keep the weights after the last fine-tuning epoch, not those of the best validation epoch.",
        ),
    ] = False,
    limit_batches: Annotated[
        int | None,
        typer.Option("--limit-batches", min=1, help="Batches per epoch and per evaluation, for quick runs."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split the accuracy is measured on: test or val.")] = "test",
    without_fine_tuning: Annotated[
        bool,
        typer.Option(
            "--measure-without-fine-tuning",
            help="Also measure the accuracy right after the first pruning step, before fine-tuning.",
        ),
    ] = False,
    allow_saturation: Annotated[
        bool,
        typer.Option(
            "--allow-saturation",
            help="Report saturating weights instead of failing; a quantized checkpoint reports them anyway.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help=f"Pruned checkpoint to write (default: {DEFAULT_OUTPUT_NAME} beside the input)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the output checkpoint if it exists.")] = False,
) -> None:
    """Prune a checkpoint, fine-tune it with the masks kept, print accuracy and the constraint report, and save it."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    # Imported here so that `ecs-train --help` does not load torch and Lightning.
    from rich.console import Console

    from ecs_train.config import load_yaml
    from ecs_train.constraints import accelerator_config_of
    from ecs_train.data import build_data_module
    from ecs_train.pruning import load_pruned_model, prune_model, save_pruned_checkpoint
    from ecs_train.utils import set_random_seed

    try:
        if sparsity is not None and not 0.0 <= sparsity < 1.0:
            raise ValueError(f"invalid --sparsity {sparsity}; give a fraction of the weights in [0, 1), such as 0.3")
        if learning_rate is not None and not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"invalid --learning-rate {learning_rate}; give a positive finite rate, such as 0.002")
        experiment = load_yaml(config)
        if data_dir is not None:
            experiment.data_cfg.data_dir = data_dir
        pruning_cfg = experiment.pruning_cfg
        target = pruning_cfg.sparsity if sparsity is None else sparsity
        fit = pruning_cfg.fit_hardware if fit_hardware is None else fit_hardware
        # An explicit --sparsity 0 fine-tunes without pruning, the control for a pruned run.
        if target <= 0.0 and not fit and sparsity is None:
            raise ValueError("nothing to prune: give --sparsity (a fraction such as 0.3) or --fit-hardware")
        folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
        target_path = out if out is not None else folder / DEFAULT_OUTPUT_NAME
        if target_path.is_dir():
            example = target_path / DEFAULT_OUTPUT_NAME
            raise ValueError(f"--out {target_path} is a folder; give a checkpoint file name, such as {example}")
        if target_path.exists() and not force:
            raise FileExistsError(f"{target_path} exists already; pass --force to overwrite it or choose --out")

        set_random_seed(experiment.trainer_cfg.seed)
        model, _ = load_pruned_model(experiment, checkpoint, reapply_masks=True)
        data_module = build_data_module(
            experiment.data_cfg, batch_size=experiment.trainer_cfg.batch_size, seed=experiment.trainer_cfg.seed
        )
        result = prune_model(
            model,
            data_module,
            accelerator_config_of(experiment),
            sparsity=target,
            fit_hardware=fit,
            fine_tune_epochs=pruning_cfg.fine_tune_epochs if fine_tune_epochs is None else fine_tune_epochs,
            iterations=pruning_cfg.iterations if iterations is None else iterations,
            learning_rate=learning_rate,
            schedule=pruning_cfg.schedule if schedule is None else schedule,
            select_best=not keep_last_epoch,
            limit_batches=limit_batches,
            split=split,
            measure_without_fine_tuning=without_fine_tuning,
            allow_saturation=True if allow_saturation else None,
        )
        save_pruned_checkpoint(model, target_path, result.record, force=force)
    except ResourceError as error:
        print_error(error)
        raise typer.Exit(EXIT_DOES_NOT_FIT) from None
    except (ECSError, OSError, ValueError) as error:
        print_error(error)
        raise typer.Exit(EXIT_INVALID_INPUT) from None

    record = result.record
    mode = "quantized" if model.quant_cfg.enabled else "float"
    console = Console(width=120)
    console.print(result.report)
    typer.echo(f"accuracy before pruning ({mode}, {split}): {_accuracy(record.accuracy_before)}")
    if without_fine_tuning:
        typer.echo(f"accuracy after pruning, before fine-tuning: {_accuracy(record.accuracy_without_fine_tuning)}")
    typer.echo(
        f"accuracy after pruning and {record.fine_tune_epochs} fine-tuning epoch(s) per step: "
        f"{_accuracy(record.accuracy_after)}"
    )
    typer.echo(f"weight sparsity: {100 * record.sparsity:.2f}% (target {100 * record.target_sparsity:.2f}%)")
    typer.echo(f"wrote {target_path}")
