"""``ecs-deploy transfer``: copy a bundle to the FPGA host over SSH and verify its checksums there."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ecs_common.errors import ECSError
from ecs_deploy.cli import app
from ecs_deploy.commands._shared import EXIT_INVALID_INPUT, one_line
from ecs_deploy.errors import (
    AuthenticationError,
    HostKeyError,
    HostUnreachableError,
    RemoteChecksumError,
    RemoteDestinationError,
)
from ecs_deploy.transfer import transfer_files

logger = logging.getLogger(__name__)

# Exit codes by failure, so that lab scripts can react without parsing messages. Invalid arguments, a missing or
# damaged local bundle and any other failure exit with 2, as in the other ecs-deploy commands.
EXIT_CODES: dict[type[Exception], int] = {
    HostUnreachableError: 3,
    HostKeyError: 4,
    AuthenticationError: 5,
    RemoteDestinationError: 6,
    RemoteChecksumError: 7,
}


@app.command("transfer")
def transfer_command(
    bundle: Annotated[
        Path,
        typer.Argument(
            help="Bundle folder or .tar.gz/.tgz archive written by `ecs-deploy bundle`.", show_default=False
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Host name or IP address of the FPGA host.", show_default=False)],
    user: Annotated[str, typer.Option("--user", help="User to log in as on the FPGA host.", show_default=False)],
    dest: Annotated[
        str,
        typer.Option(
            "--dest",
            help="Folder on the host that receives the bundle's files; relative paths start in the user's home.",
            show_default=False,
        ),
    ],
    port: Annotated[int, typer.Option("--port", help="SSH port of the host.")] = 22,
    identity: Annotated[
        Path | None,
        typer.Option("--identity", help="Private key to log in with (default: ssh's own keys and agent)."),
    ] = None,
    known_hosts: Annotated[
        Path | None,
        typer.Option(
            "--known-hosts", help="known_hosts file that contains the host's public key (default: ~/.ssh/known_hosts)."
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Seconds to wait for the connection, and for a silent host once connected."),
    ] = 30,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace --dest on the host if it exists and is not empty."),
    ] = False,
) -> None:
    """Copy a bundle to the FPGA host over SSH with strict host key checking, then run sha256sum -c there.

    Exits with 2 on invalid arguments, a missing or damaged local bundle and other failures, 3 when the host is
    unreachable, 4 when its host key is unknown or changed, 5 when authentication fails, 6 when --dest cannot be
    used, and 7 when the checksums on the host do not match.
    """
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    try:
        # The bar is drawn only on a terminal, so logs and CI output get just the final summary line.
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
            task = progress.add_task(f"Sending to {host}", total=None)

            def show(sent: int, total: int, path: str) -> None:
                description = "sha256sum -c on the host" if sent >= total else path
                progress.update(task, completed=sent, total=total, description=description)

            report = transfer_files(
                bundle,
                host=host,
                user=user,
                dest=dest,
                port=port,
                identity_file=identity,
                known_hosts_file=known_hosts,
                timeout=timeout,
                force=force,
                progress=show,
            )
    except (ECSError, OSError) as error:
        typer.echo(f"error: {one_line(error)}", err=True)
        raise typer.Exit(_exit_code(error)) from None

    verification = report.verification
    typer.echo(
        f"Sent {len(report.files_sent)} files ({report.bytes_sent} bytes) to {user}@{host}:{report.dest} "
        f"in {report.seconds:.1f} s; sha256sum -c on the host verified all {len(verification.checked)} files "
        f"listed in SHA256SUMS in {verification.seconds:.1f} s."
    )


def _exit_code(error: Exception) -> int:
    for error_type, code in EXIT_CODES.items():
        if isinstance(error, error_type):
            return code
    return EXIT_INVALID_INPUT
