"""``ecs-deploy memfiles`` and ``ecs-deploy verify-memfiles``: write the accelerator's memory files and check a copy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecs_deploy.cli import app
from ecs_deploy.commands._shared import (
    DtOption,
    HardwareOption,
    NetworkArgument,
    QuantOption,
    ReadoutOption,
    ResetOption,
    cli_errors,
    load_network,
)
from ecs_deploy.memfiles import verify_mem_files


@app.command("memfiles")
def memfiles_command(
    network_path: NetworkArgument,
    out: Annotated[Path, typer.Option("--out", help="Directory for the memory files and manifest.json.")],
    hardware: HardwareOption = None,
    quant: QuantOption = None,
    dt: DtOption = None,
    reset_mode: ResetOption = None,
    readout: ReadoutOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a memory-file set already in --out.")] = False,
) -> None:
    """Write one $readmemh file set per core plus manifest.json, and print the utilization table.

    Exits with 1 when the network does not fit the accelerator, 2 on invalid input.
    """
    with cli_errors():
        network = load_network(network_path, hardware, quant, dt, reset_mode, readout)
        manifest = network.generate_mem_files(out, print_util=True, force=force)
        typer.echo(f"wrote memory files for {network.placement.num_cores_used} cores; manifest: {manifest}")


@app.command("verify-memfiles")
def verify_memfiles_command(
    directory: Annotated[
        Path, typer.Argument(help="Folder with manifest.json and the memory files it lists.", show_default=False)
    ],
) -> None:
    """Re-hash every memory file listed in manifest.json and check its sha256 and word count.

    Exits with 2 when the manifest is missing or invalid, or a file is missing or changed.
    """
    with cli_errors():
        count = verify_mem_files(directory)
    typer.echo(f"Memory files in {directory} verified: {count} files match manifest.json.")
