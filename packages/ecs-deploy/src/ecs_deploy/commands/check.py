"""``ecs-deploy check``: whether a NIR network fits the accelerator, without simulating it."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ecs_deploy.cli import app
from ecs_deploy.commands._shared import (
    EXIT_DOES_NOT_FIT,
    DtOption,
    HardwareOption,
    NetworkArgument,
    QuantOption,
    ReadoutOption,
    ResetOption,
    cli_errors,
    load_network,
    one_line,
)
from ecs_deploy.report import print_utilization


@app.command("check")
def check_command(
    network_path: NetworkArgument,
    hardware: HardwareOption = None,
    quant: QuantOption = None,
    dt: DtOption = None,
    reset_mode: ResetOption = None,
    readout: ReadoutOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the placement report as JSON instead of a table.")
    ] = False,
) -> None:
    """Check the hardware constraints: exit 0 if the network fits, 1 with the reason if not, 2 on invalid input."""
    with cli_errors():
        network = load_network(network_path, hardware, quant, dt, reset_mode, readout)
        report = network.placement_report()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_utilization(report)
    if report.error is not None:
        typer.echo(f"error: {one_line(report.error)}", err=True)
        raise typer.Exit(EXIT_DOES_NOT_FIT)
    typer.echo(f"fits: {report.cores_needed} of {report.hardware.num_cores} cores used")
