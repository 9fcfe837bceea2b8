"""``ecs-train check``: whether a config's network, or a trained checkpoint, fits the accelerator."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from ecs_common.errors import ECSError, ResourceError
from ecs_train.cli import app
from ecs_train.commands.messages import print_error

# Exit codes: the network does not fit, or the input is invalid.
EXIT_DOES_NOT_FIT = 1
EXIT_INVALID_INPUT = 2


@app.command("check")
def check_command(
    config: Annotated[Path, typer.Argument(help="YAML experiment config: network, hardware and quantization.")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Check this trained checkpoint's weights; without it every synapse counts as present.",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Folder with the dataset's recordings; overrides data_cfg.data_dir."),
    ] = None,
    allow_saturation: Annotated[
        bool,
        typer.Option(
            "--allow-saturation",
            help="Report saturating weights instead of failing; a quantized checkpoint reports them anyway.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")] = False,
) -> None:
    """Check the hardware constraints: exit 0 if the network fits, 1 with the reason if not, 2 on invalid input."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    # Imported here so that `ecs-train --help` does not load torch and Lightning.
    from rich.console import Console

    from ecs_train.config import load_yaml
    from ecs_train.constraints import accelerator_config_of, constraint_report
    from ecs_train.training import load_model

    try:
        experiment = load_yaml(config)
        if data_dir is not None:
            experiment.data_cfg.data_dir = data_dir
        subject = experiment if checkpoint is None else load_model(experiment, checkpoint)
        accelerator = accelerator_config_of(experiment)
        report = constraint_report(subject, accelerator, allow_saturation=True if allow_saturation else None)
    except ResourceError as error:
        print_error(error)
        if as_json:
            typer.echo(json.dumps(_resource_error_dict(error), indent=2))
        raise typer.Exit(EXIT_DOES_NOT_FIT) from None
    except (ECSError, OSError, ValueError) as error:
        print_error(error)
        raise typer.Exit(EXIT_INVALID_INPUT) from None

    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        Console(width=120).print(report)
    if not report.fits:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


def _resource_error_dict(error: ResourceError) -> dict[str, Any]:
    # The --json output when no placement exists: the error's facts in place of a report.
    facts = {name: getattr(error, name, None) for name in ("layer", "core", "resource", "limit", "demand")}
    return {"fits": False, "error": {"type": type(error).__name__, "message": str(error), **facts}}
