"""``ecs-train export``: write a trained checkpoint as a NIR file with the ECS hardware metadata."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ecs_common.errors import ECSError
from ecs_train.cli import app
from ecs_train.commands.messages import print_error

# Exit code for invalid input of any kind (config, checkpoint, network, output path).
EXIT_INVALID_INPUT = 2


@app.command("export")
def export_command(
    config: Annotated[Path, typer.Argument(help="YAML experiment config the checkpoint was trained with.")],
    checkpoint: Annotated[
        Path,
        typer.Option("--checkpoint", help="Checkpoint file, or a folder holding final.ckpt or last.ckpt."),
    ],
    out: Annotated[Path, typer.Option("--out", help="NIR file to write (HDF5).")] = Path("network.nir"),
    force: Annotated[bool, typer.Option("--force", help="Replace the NIR file if it exists.")] = False,
) -> None:
    """Export a trained network to NIR with its hardware and quantization configs, dt, reset mode and provenance."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    # Imported here so that `ecs-train --help` does not load torch and Lightning.
    from ecs_train.nir_export.checkpoint import export_checkpoint
    from ecs_train.nir_export.export import read_metadata

    try:
        graph = export_checkpoint(config, checkpoint, out, overwrite=force)
    except (ECSError, OSError, ValueError) as error:
        print_error(error)
        raise typer.Exit(EXIT_INVALID_INPUT) from None

    metadata = read_metadata(graph)
    typer.echo(
        f"wrote {out}: {len(graph.nodes)} nodes, dt {metadata.dt:g} s, reset {metadata.reset_mode}, "
        f"weight sparsity {metadata.provenance.sparsity:.3f}"
    )
