"""Options and error handling shared by the ecs-deploy subcommands that load a NIR network."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from ecs_common.errors import ECSError, ResourceError
from ecs_deploy.network import Network

logger = logging.getLogger(__name__)

# Exit codes: a network that does not fit the accelerator, and invalid input of any kind.
EXIT_DOES_NOT_FIT = 1
EXIT_INVALID_INPUT = 2

NetworkArgument = Annotated[Path, typer.Argument(help="NIR file of the network (.nir, HDF5).", show_default=False)]
HardwareOption = Annotated[
    Path | None,
    typer.Option(
        "--hardware",
        help="YAML file with the hardware config (num_cores, num_neurons_core, ...); "
        "overrides the file's 'ecs' metadata and is required without it.",
    ),
]
QuantOption = Annotated[
    Path | None,
    typer.Option(
        "--quant",
        help="YAML file with the quantization config (weight_format, state_format, decay_format); "
        "overrides the file's 'ecs' metadata and is required without it.",
    ),
]
DtOption = Annotated[
    float | None,
    typer.Option("--dt", help="Simulation timestep in seconds; overrides the metadata (default 0.001 without it)."),
]
ResetOption = Annotated[
    str | None,
    typer.Option("--reset-mode", help="Reset after a spike: to_reset or subtract; overrides the metadata."),
]
ReadoutOption = Annotated[
    str | None,
    typer.Option("--readout", help="Output states to class scores: last, max or mean; overrides the metadata."),
]


def setup_logging() -> None:
    """Send warnings of the ecs packages to stderr unless logging is configured already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")


def one_line(error: BaseException) -> str:
    """Return an error message collapsed onto one line."""
    return " ".join(str(error).split()) or type(error).__name__


# The Python API's messages name both spellings of the option; the command line shows only its own.
_API_FORCE_WORDING = "force=True (--force)"


def cli_message(error: BaseException) -> str:
    """Return an error message on one line, with the Python API's ``force=True (--force)`` shown as ``--force``."""
    return one_line(error).replace(_API_FORCE_WORDING, "--force")


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected failures into a one-line message on stderr and a non-zero exit code.

    A network that does not fit exits with 1, every other invalid input with 2.
    """
    try:
        yield
    except ResourceError as error:
        typer.echo(f"error: {one_line(error)}", err=True)
        raise typer.Exit(EXIT_DOES_NOT_FIT) from None
    except (ECSError, OSError, ValueError, IndexError) as error:
        typer.echo(f"error: {cli_message(error)}", err=True)
        raise typer.Exit(EXIT_INVALID_INPUT) from None


def load_network(
    path: Path,
    hardware: Path | None,
    quant: Path | None,
    dt: float | None,
    reset_mode: str | None,
    readout: str | None,
) -> Network:
    """Load a NIR file with the command line's settings and report assumed values on stderr."""
    setup_logging()
    network = Network.from_file(path, hardware, quant, dt=dt, reset_mode=reset_mode, readout=readout)
    if network.assumptions:
        described = ", ".join(f"{key}={value!r}" for key, value in network.assumptions.items())
        typer.echo(f"note: {path} has no 'ecs' metadata; assumed {described}", err=True)
    return network
