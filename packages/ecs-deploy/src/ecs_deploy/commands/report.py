"""``ecs-deploy report``: utilization table, per-core utilization chart and a spike raster."""

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
from ecs_deploy.events import load_samples
from ecs_deploy.report import write_report


@app.command("report")
def report_command(
    network_path: NetworkArgument,
    out: Annotated[Path, typer.Option("--out", help="Directory for utilization.txt, utilization.png, raster.png.")],
    hardware: HardwareOption = None,
    quant: QuantOption = None,
    dt: DtOption = None,
    reset_mode: ResetOption = None,
    readout: ReadoutOption = None,
    samples: Annotated[
        Path | None,
        typer.Option("--samples", help="Test vectors (.npz/.npy) to draw the raster from; random input without."),
    ] = None,
    sample_index: Annotated[int, typer.Option("--sample-index", min=0, help="Sample shown in the raster.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing report files.")] = False,
) -> None:
    """Print the utilization table and save it with a per-core utilization chart and a spike raster."""
    with cli_errors():
        network = load_network(network_path, hardware, quant, dt, reset_mode, readout)
        inputs = load_samples(samples)[0] if samples is not None else None
        result = write_report(network, out, samples=inputs, sample_index=sample_index, force=force)
        for path in result["paths"].values():
            typer.echo(f"wrote {path}")
