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
from ecs_deploy.commands import simulate  # noqa: E402,F401
from ecs_deploy.commands import bundle  # noqa: E402,F401
from ecs_deploy.commands import transfer  # noqa: E402,F401
from ecs_deploy.commands import memfiles  # noqa: E402,F401
from ecs_deploy.commands import report  # noqa: E402,F401
from ecs_deploy.commands import check  # noqa: E402,F401


def main() -> None:
    """Run the ``ecs-deploy`` command line."""
    app()
