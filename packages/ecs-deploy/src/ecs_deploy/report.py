"""Utilization report: a rich table per core, a bar chart of per-core usage and a spike raster (PNG)."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ecs_common.placement import RESOURCES, PlacementReport
from ecs_deploy.atomic import check_new, make_output_folder, write_text, write_with

if TYPE_CHECKING:
    from ecs_deploy.network import Network

logger = logging.getLogger(__name__)

_CAPACITY_FIELDS = {
    "neurons": "num_neurons_core",
    "synapses": "num_synapses_core",
    "routes": "num_routes",
    "unique_weights": "num_weights_core",
}


def capacity(report: PlacementReport, resource: str) -> int:
    """Return the per-core capacity of ``resource`` (one of ``RESOURCES``)."""
    return int(getattr(report.hardware, _CAPACITY_FIELDS[resource]))


def _cell(used: int, limit: int) -> str:
    percent = 100.0 * used / limit if limit else 0.0
    text = f"{used} / {limit} ({percent:.1f}%)"
    return f"[bold red]{text}[/]" if used > limit else text


def utilization_table(report: PlacementReport) -> Table:
    """Return a rich table: per core, each resource used / capacity and percent."""
    fits = "fits" if report.fits else "does NOT fit"
    table = Table(
        title=f"Core utilization: {report.cores_needed} of {report.hardware.num_cores} cores, {fits}",
        show_lines=False,
    )
    table.add_column("core", justify="right")
    table.add_column("layer")
    for resource in RESOURCES:
        table.add_column(resource.replace("_", " "), justify="right")
    for core in report.cores:
        missing = core.core >= report.hardware.num_cores
        label = f"[bold red]{core.core}[/]" if missing else str(core.core)
        table.add_row(label, core.layer, *(_cell(core.usage(r), capacity(report, r)) for r in RESOURCES))
    return table


def print_utilization(report: PlacementReport, console: Console | None = None) -> None:
    """Print the utilization table and, when the network does not fit, the reason."""
    console = console or Console()
    console.print(utilization_table(report))
    if report.error is not None:
        console.print(f"[bold red]{report.error}[/]", soft_wrap=True)


def plot_utilization(report: PlacementReport, path: str | Path, force: bool = False) -> Path:
    """Save a PNG with one bar chart per resource: percent of capacity used on each core."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_new(path, force)
    cores = [core.core for core in report.cores]
    figure, axes = plt.subplots(len(RESOURCES), 1, figsize=(max(6.0, 0.4 * len(cores) + 2), 2.2 * len(RESOURCES)))
    for axis, resource in zip(np.atleast_1d(axes), RESOURCES, strict=True):
        limit = capacity(report, resource)
        percent = [100.0 * core.usage(resource) / limit for core in report.cores]
        colors = ["tab:red" if value > 100 else "tab:blue" for value in percent]
        axis.bar(cores, percent, color=colors)
        axis.axhline(100.0, color="black", linewidth=0.8, linestyle="--")
        axis.set_ylabel(f"{resource.replace('_', ' ')}\n% of {limit}")
        axis.set_xticks(cores)
    np.atleast_1d(axes)[-1].set_xlabel("core")
    figure.suptitle(f"Per-core utilization ({report.cores_needed} of {report.hardware.num_cores} cores)")
    figure.tight_layout()
    try:
        write_with(path, lambda handle: figure.savefig(handle, format="png", dpi=100), force=force)
    finally:
        plt.close(figure)
    return Path(path)


def plot_raster(
    spikes: dict[str, np.ndarray], path: str | Path, *, sample: int = 0, title: str = "", force: bool = False
) -> Path:
    """Save a PNG spike raster of one sample: one panel per layer, timestep against neuron.

    ``spikes`` maps layer names to ``bool [T_sim, B, N]`` rasters, as
    :meth:`Network.simulate_batch` returns them with ``record_spikes=True``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_new(path, force)
    names = list(spikes)
    figure, axes = plt.subplots(len(names), 1, figsize=(8, 1.8 * len(names) + 1), sharex=True, squeeze=False)
    for axis, name in zip(axes[:, 0], names, strict=True):
        raster = spikes[name][:, sample, :]
        steps, neurons = np.nonzero(raster)
        axis.scatter(steps, neurons, s=2, marker="|", color="black")
        axis.set_ylabel(f"{name}\nneuron")
        axis.set_ylim(-0.5, raster.shape[1] - 0.5)
        axis.set_xlim(-0.5, raster.shape[0] - 0.5)
        axis.set_title(f"{name}: {steps.size} spikes", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("accelerator timestep")
    figure.suptitle(title or f"Spike raster, sample {sample}")
    figure.tight_layout()
    try:
        write_with(path, lambda handle: figure.savefig(handle, format="png", dpi=100), force=force)
    finally:
        plt.close(figure)
    return Path(path)


def write_report(
    network: Network,
    out_dir: str | Path,
    *,
    samples: np.ndarray | None = None,
    sample_index: int = 0,
    seed: int = 0,
    density: float = 0.05,
    force: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Print the utilization table and write ``utilization.png``, ``raster.png`` and ``utilization.txt``.

    The raster shows sample ``sample_index`` of ``samples`` (``[N, T, *input_shape]``);
    without samples it shows seeded random input of the given ``density``
    (spikes per input neuron and step), and its title states that. Returns the
    paths written and the placement report.
    """
    out_dir = Path(out_dir)
    report = network.placement_report()
    paths = {name: out_dir / name for name in ("utilization.txt", "utilization.png", "raster.png")}
    for path in paths.values():
        check_new(path, force)

    print_utilization(report, console)
    recorder = Console(record=True, width=160, file=io.StringIO())
    print_utilization(report, recorder)
    make_output_folder(out_dir)
    write_text(paths["utilization.txt"], recorder.export_text(), force=force)
    plot_utilization(report, paths["utilization.png"], force=force)

    if samples is not None:
        if not 0 <= sample_index < samples.shape[0]:
            raise IndexError(f"sample index {sample_index} out of range; the file has {samples.shape[0]} samples")
        frames = samples[sample_index : sample_index + 1]
        title = f"Spike raster, sample {sample_index}"
    else:
        steps = 100
        rng = np.random.default_rng(seed)
        frames = (rng.random((1, steps, network.num_inputs)) < density).astype(np.uint8)
        title = f"Spike raster, random input (density {density:g}, seed {seed})"
    result = network.simulate_batch(frames, record_spikes=True)
    assert result.spikes is not None
    # LI layers never fire, so their panels would stay empty.
    firing = {name: raster for name, raster in result.spikes.items() if network.model.layer(name).fires}
    plot_raster(firing, paths["raster.png"], sample=0, title=title, force=force)
    return {"paths": paths, "report": report}
