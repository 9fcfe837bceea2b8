"""``ecs-deploy simulate``: run test samples through the bit-accurate simulator and report predictions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ecs_deploy.atomic import check_new, write_with
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

logger = logging.getLogger(__name__)


@app.command("simulate")
def simulate_command(
    network_path: NetworkArgument,
    samples: Annotated[
        Path,
        typer.Option(
            "--samples",
            help="Test vectors: .npz with x [N, T, *input_shape] (0/1) and optional labels y, or .npy with x only.",
        ),
    ],
    hardware: HardwareOption = None,
    quant: QuantOption = None,
    dt: DtOption = None,
    reset_mode: ResetOption = None,
    readout: ReadoutOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write predictions, labels, output states and spike counts to this .npz file."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --out file.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples simulated per batch.")] = 256,
    num_timesteps: Annotated[
        int | None,
        typer.Option("--num-timesteps", min=1, help="Accelerator steps to simulate (default: input steps + latency)."),
    ] = None,
    show: Annotated[int, typer.Option("--show", min=0, help="Number of per-sample predictions to print.")] = 10,
) -> None:
    """Simulate samples bit-accurately and print predictions (and accuracy when labels are present)."""
    console = Console()
    with cli_errors():
        if out is not None:
            check_new(out, force)
        network = load_network(network_path, hardware, quant, dt, reset_mode, readout)
        inputs, labels = load_samples(samples)

        batches = -(-inputs.shape[0] // batch_size)
        if batches > 1:
            columns = (TextColumn("simulating"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
            with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True), transient=True) as progress:
                task = progress.add_task("simulate", total=inputs.shape[0])
                evaluation = network.evaluate(
                    inputs,
                    labels,
                    batch_size=batch_size,
                    num_timesteps=num_timesteps,
                    progress=lambda done, total: progress.update(task, completed=done),
                )
        else:
            evaluation = network.evaluate(inputs, labels, batch_size=batch_size, num_timesteps=num_timesteps)

        for index in range(min(show, evaluation.predictions.size)):
            label = f" (label {int(labels[index])})" if labels is not None else ""
            console.print(f"sample {index}: predicted {int(evaluation.predictions[index])}{label}")
        count = evaluation.predictions.size
        console.print(f"simulated {count} samples, latency {network.latency} steps, readout {network.readout!r}")
        if evaluation.accuracy is not None:
            correct = int(np.sum(evaluation.predictions == evaluation.labels))
            console.print(f"accuracy: {correct}/{count} = {evaluation.accuracy:.4f}")

        if out is not None:
            arrays = {
                "predictions": evaluation.predictions,
                "output_states": evaluation.output_states,
                "latency": np.int64(evaluation.latency),
                **{f"spike_counts_{name}": value for name, value in evaluation.spike_counts.items()},
            }
            if evaluation.labels is not None:
                arrays["labels"] = evaluation.labels
            write_with(out, lambda handle: np.savez(handle, **arrays), force=force)
            console.print(f"wrote {out}")
