"""Command-line interface of ecs-deploy; each subcommand lives in ``ecs_deploy.commands``."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="ecs-deploy",
    help="Simulate NIR networks bit-accurately and generate the ECS accelerator's memory files.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Each module below registers its subcommands on ``app`` when imported.
from ecs_deploy.commands import (  # noqa: E402
    bundle,  # noqa: F401
    check,  # noqa: F401
    memfiles,  # noqa: F401
    report,  # noqa: F401
    simulate,  # noqa: F401
    transfer,  # noqa: F401
)


def main() -> None:
    """Run the ``ecs-deploy`` command line."""
    app()
