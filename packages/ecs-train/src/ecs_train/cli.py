"""Command-line interface of ecs-train; each subcommand lives in ``ecs_train.commands``."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ecs-train",
    help="Train, quantize, check, prune and export spiking networks for the ECS accelerator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Each module below registers its subcommands on ``app`` when imported.
from ecs_train.commands import (  # noqa: E402
    check,  # noqa: F401
    export,  # noqa: F401
    fit,  # noqa: F401
    prune,  # noqa: F401
    run,  # noqa: F401
)


def main() -> None:
    """Run the ``ecs-train`` command line."""
    app()
