"""``ecs-train run``: the main job from training to a deployed, bit-exact simulation, memory files and report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ecs_common.errors import ConfigError, ECSError
from ecs_train.cli import app
from ecs_train.commands.messages import print_error
from ecs_train.data.errors import DatasetUnavailableError
from ecs_train.errors import CheckpointError

# Exit codes: a stage failed or the deployed outputs differ from the training side's; invalid input.
EXIT_FAILED = 1
EXIT_INVALID_INPUT = 2
# Exit code of a run stopped with Ctrl-C, the shell's 128 + SIGINT.
EXIT_INTERRUPTED = 130


def _limit(value: str | None) -> float | int | None:
    """Parse --limit-batches: a whole number of batches, or a fraction in (0, 1]."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a number; give a batch count such as 5 or a fraction such as 0.1"
        ) from None
    return int(number) if number.is_integer() and number >= 1 else number


@app.command("run")
def run_command(
    config: Annotated[
        Path | None,
        typer.Argument(help="YAML experiment config (default: config/digits_feed_forward.yaml).", show_default=False),
    ] = None,
    config_option: Annotated[
        Path | None, typer.Option("--config", help="The YAML experiment config, as an option instead of CONFIG.")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Folder with the dataset's recordings; overrides data_cfg.data_dir."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Output folder (default: trainer_cfg.output_path of the config)."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Skip training and start from this checkpoint (a .ckpt file or a folder with final.ckpt).",
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Float training epochs; overrides trainer_cfg.num_epochs.")
    ] = None,
    qat_epochs: Annotated[
        int | None,
        typer.Option(
            "--qat-epochs", min=0, help="Quantization-aware epochs after them; overrides trainer_cfg.qat_epochs."
        ),
    ] = None,
    limit_batches: Annotated[
        str | None,
        typer.Option(
            "--limit-batches",
            help="Batches per epoch for training and validation: a count (5) or a fraction (0.1), for quick runs. "
            "The test-set runs always use every test sample.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the output folder of an earlier run.")] = False,
) -> None:
    """Train (or load), quantize, check, prune, export NIR and test vectors, then simulate and deploy with ecs-deploy.

    Exits with 0 when every stage succeeded and ecs-deploy reproduced the training side's outputs bit for
    bit, 1 when a stage failed or the outputs differ, 2 on invalid input.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if config is not None and config_option is not None and config != config_option:
        typer.echo(f"error: two configs given, {config} and --config {config_option}; give one", err=True)
        raise typer.Exit(EXIT_INVALID_INPUT)

    # Imported here so that `ecs-train --help` does not load torch and Lightning.
    from ecs_train.pipeline import Pipeline, PipelineError, RunOptions

    options = RunOptions(
        config=config if config is not None else config_option,
        output=output,
        data_dir=data_dir,
        checkpoint=checkpoint,
        epochs=epochs,
        qat_epochs=qat_epochs,
        limit_batches=_limit(limit_batches),
        force=force,
    )
    pipeline = None
    try:
        pipeline = Pipeline(options)
        result = pipeline.run()
    except KeyboardInterrupt:
        # The staging folder is removed on the way out, so only a run that got past moving it has outputs.
        if pipeline is not None and pipeline.outputs_written:
            typer.echo(f"interrupted; the outputs in {pipeline.output} were kept", err=True)
        else:
            typer.echo("interrupted; no outputs written", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (ConfigError, CheckpointError, DatasetUnavailableError, FileExistsError) as error:
        print_error(error)
        raise typer.Exit(EXIT_INVALID_INPUT) from None
    except (PipelineError, ECSError, OSError, ValueError) as error:
        print_error(error)
        raise typer.Exit(EXIT_FAILED) from None

    if result.failed_stages:
        typer.echo(f"error: stage(s) failed: {', '.join(result.failed_stages)}; see the messages above", err=True)
        raise typer.Exit(EXIT_FAILED)
    if not result.exact:
        typer.echo("error: the deployed outputs differ from the training side's; see the comparison above", err=True)
        raise typer.Exit(EXIT_FAILED)
