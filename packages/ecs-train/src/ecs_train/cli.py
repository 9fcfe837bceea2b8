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
from ecs_train.commands import fit  # noqa: E402,F401
from ecs_train.commands import export  # noqa: E402,F401
from ecs_train.commands import check  # noqa: E402,F401
from ecs_train.commands import prune  # noqa: E402,F401


def main() -> None:
    """Run the ``ecs-train`` command line."""
    app()
