"""The ``ecs-train fit`` command: train a network, test it float and quantized, save checkpoints and plots."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer
from pydantic import ValidationError

from ecs_common.errors import ConfigError, ECSError
from ecs_train.cli import app
from ecs_train.commands.messages import print_error
from ecs_train.data.errors import DatasetUnavailableError

logger = logging.getLogger(__name__)

# Exit status for an invalid config or command line, as for other usage errors.
EXIT_USAGE = 2
EXIT_FAILURE = 1


def _fail(message: str, code: int) -> None:
    print_error(message)
    raise typer.Exit(code)


@app.command()
def fit(
    config: Path = typer.Argument(..., help="experiment config YAML file", show_default=False),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="folder with the dataset's recordings; overrides data_cfg.data_dir"
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="float training epochs; overrides trainer_cfg.num_epochs (QAT epochs follow)"
    ),
    output: Path | None = typer.Option(
        None, "--output", help="folder for checkpoints, logs and plots; overrides trainer_cfg.output_path"
    ),
    force: bool = typer.Option(
        False, "--force", help="overwrite the checkpoints of an earlier run in the output folder"
    ),
) -> None:
    """Train the network of CONFIG, then report float and quantized test accuracy."""
    from ecs_train.config import load_yaml, save_yaml

    try:
        experiment = load_yaml(config)
        if data_dir is not None:
            experiment.data_cfg.data_dir = data_dir
        if epochs is not None:
            experiment.trainer_cfg.num_epochs = epochs
        if output is not None:
            experiment.trainer_cfg.output_path = str(output)
            experiment.trainer_cfg.checkpoint_path = None
    except (ConfigError, ValidationError) as error:
        _fail(str(error), EXIT_USAGE)

    # A missing data folder is reported before Lightning starts and before earlier checkpoints go.
    from ecs_train.data.module import check_data_files

    try:
        check_data_files(experiment.data_cfg)
    except DatasetUnavailableError as error:
        _fail(str(error), EXIT_USAGE)

    checkpoint_dir = experiment.trainer_cfg.checkpoint_dir
    _clear_earlier_checkpoints(checkpoint_dir, force)

    from ecs_train.training import find_callback, initialize_experiment
    from ecs_train.visualization.network_logger import NetworkLogger

    started = time.monotonic()
    try:
        trainer, model, data_module = initialize_experiment(experiment)
        trainer.fit(model, datamodule=data_module)
        results = trainer.test(model, datamodule=data_module, verbose=False)
    except (ConfigError, DatasetUnavailableError) as error:
        _fail(str(error), EXIT_USAGE)
    except (ECSError, FileNotFoundError) as error:
        _fail(str(error), EXIT_FAILURE)
    elapsed = time.monotonic() - started

    if not trainer.is_global_zero:
        return
    output_path = Path(experiment.trainer_cfg.output_path)
    save_yaml(experiment, output_path / "config.yaml")
    network_logger = find_callback(trainer, NetworkLogger)
    plot = None
    if network_logger is not None:
        network_logger.save_perf_log()
        plot = network_logger.draw_perf_log()

    metrics = results[0] if results else {}
    quantized = model.network.quantized
    float_accuracy = metrics.get("test_acc_float", metrics.get("test_acc")) if quantized else metrics.get("test_acc")
    typer.echo(f"float test accuracy:     {_percent(float_accuracy)}")
    if quantized:
        quant_cfg = experiment.model_cfg.quant_cfg
        typer.echo(
            f"quantized test accuracy: {_percent(metrics.get('test_acc'))} ({quant_cfg.mode}, "
            f"weights {quant_cfg.weight_format}, state {quant_cfg.state_format})"
        )
    else:
        typer.echo("quantized test accuracy: not measured, quant_cfg.enabled is false")
    typer.echo(f"epochs: {trainer.current_epoch}, wall time: {elapsed:.0f} s")
    typer.echo(f"checkpoints: {checkpoint_dir}")
    if plot is not None:
        typer.echo(f"performance plot: {plot}")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}%"


def _clear_earlier_checkpoints(checkpoint_dir: Path, force: bool) -> None:
    from ecs_train.training import CHECKPOINT_NAMES

    existing = [checkpoint_dir / name for name in CHECKPOINT_NAMES if (checkpoint_dir / name).exists()]
    if not existing:
        return
    if not force:
        names = ", ".join(path.name for path in existing)
        _fail(
            f"{checkpoint_dir} already holds checkpoints of an earlier run ({names}); "
            "pass --force to overwrite them or choose another --output folder",
            EXIT_FAILURE,
        )
    for path in existing:
        logger.info("removing checkpoint %s of an earlier run (--force)", path)
        path.unlink()
