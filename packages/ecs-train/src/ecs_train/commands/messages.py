"""Error messages of the ecs-train commands, as printed on stderr."""

from __future__ import annotations

import typer


def format_error(error: BaseException | str) -> str:
    """Format an error message as a header line followed by each further line indented by two spaces.

    A config error that lists several wrong fields thus prints one field per
    line. Blank lines are dropped. An exception without a message is named
    by its type.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else "unknown error"
    return "\n".join([lines[0], *(f"  {line}" for line in lines[1:])])


def print_error(error: BaseException | str) -> None:
    """Print ``error: <message>`` on stderr, formatted by :func:`format_error`."""
    typer.echo(f"error: {format_error(error)}", err=True)
