"""``ecs-deploy simulate``: run test samples through the bit-accurate simulator and report predictions."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ecs_common.vectors import load_expected
from ecs_deploy.atomic import check_new, write_text, write_with
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
from ecs_deploy.compare import Comparison, simulate_and_compare
from ecs_deploy.errors import InputError
from ecs_deploy.events import check_samples, load_samples
from ecs_deploy.network import Evaluation, Network

logger = logging.getLogger(__name__)

# Exit code when the simulation differs from the --expected outputs.
EXIT_MISMATCH = 3


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
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing --out and --summary files.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples simulated per batch.")] = 256,
    num_timesteps: Annotated[
        int | None,
        typer.Option("--num-timesteps", min=1, help="Accelerator steps to simulate (default: input steps + latency)."),
    ] = None,
    show: Annotated[int, typer.Option("--show", min=0, help="Number of per-sample predictions to print.")] = 10,
    expected: Annotated[
        Path | None,
        typer.Option(
            "--expected",
            help="Expected outputs from ecs-train (.npz with output_states [N, T, outputs] and spike counts) to "
            "compare with, after latency alignment; exits with 3 when anything differs.",
        ),
    ] = None,
    summary: Annotated[
        Path | None,
        typer.Option(
            "--summary", help="Write accuracy, predictions and the comparison with --expected to this JSON file."
        ),
    ] = None,
) -> None:
    """Simulate samples bit-accurately and print predictions (and accuracy when labels are present).

    Exits with 1 when the network does not fit the accelerator, 2 on invalid input, and 3 when the simulated
    outputs differ from --expected.
    """
    console = Console()
    comparison = None
    with cli_errors():
        for path in (out, summary):
            if path is not None:
                check_new(path, force)
        network = load_network(network_path, hardware, quant, dt, reset_mode, readout)
        inputs, labels = load_samples(samples)
        check_samples(inputs, labels, samples, network.input_shape, network.num_outputs)
        reference = load_expected(expected) if expected is not None else None
        if reference is not None and num_timesteps is not None:
            raise InputError("--num-timesteps cannot be combined with --expected, which simulates T + latency steps")

        batches = -(-inputs.shape[0] // batch_size)
        with contextlib.ExitStack() as stack:
            report_progress: Callable[[int, int], None] | None = None
            if batches > 1:
                columns = (TextColumn("simulating"), BarColumn(), TextColumn("{task.completed}/{task.total}"))
                progress = stack.enter_context(
                    Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True), transient=True)
                )
                task = progress.add_task("simulate", total=inputs.shape[0])

                def advance(done: int, total: int) -> None:
                    progress.update(task, completed=done)

                report_progress = advance

            if reference is not None:
                evaluation, comparison = simulate_and_compare(
                    network, inputs, reference, labels, batch_size=batch_size, progress=report_progress
                )
            else:
                evaluation = network.evaluate(
                    inputs, labels, batch_size=batch_size, num_timesteps=num_timesteps, progress=report_progress
                )

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

        if comparison is not None:
            console.print(f"compared with {expected}:", soft_wrap=True)
            console.print(comparison.describe(), soft_wrap=True)
        if summary is not None:
            write_text(summary, json.dumps(_summary(network, samples, evaluation, comparison), indent=2) + "\n", force)
            console.print(f"wrote {summary}")

    if comparison is not None and not comparison.exact:
        typer.echo("error: the simulated outputs differ from the expected outputs", err=True)
        raise typer.Exit(EXIT_MISMATCH)


def _summary(network: Network, samples: Path, evaluation: Evaluation, comparison: Comparison | None) -> dict[str, Any]:
    """Return the JSON summary of a simulation run: accuracy, predictions, spike totals and the comparison."""
    correct = None if evaluation.labels is None else int(np.sum(evaluation.predictions == evaluation.labels))
    return {
        "samples": str(samples),
        "num_samples": int(evaluation.predictions.size),
        "num_timesteps": int(evaluation.output_states.shape[1]) if evaluation.output_states.ndim == 3 else 0,
        "latency": int(evaluation.latency),
        "readout": network.readout,
        "accuracy": evaluation.accuracy,
        "correct": correct,
        "predictions": evaluation.predictions.tolist(),
        "spike_totals": {name: int(value.sum()) for name, value in evaluation.spike_counts.items()},
        "comparison": None if comparison is None else comparison.to_dict(),
    }
