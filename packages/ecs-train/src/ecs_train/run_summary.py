"""The main job's summary: what ``summary.json`` contains and the table printed at the end of a run.

``summary.json`` (format ``ecs-run-summary``, version 1) holds:

* ``accuracy``: ``float``, ``quantized`` (before pruning), ``pruned`` (the
  quantized accuracy after pruning, or null) and ``deployed`` (the ecs-deploy
  simulation), all fractions of the whole test set;
* ``sparsity``: fraction of zero weights in the exported network;
* ``comparison``: ecs-deploy's comparison with the training side's output
  states (``output_mismatches``, ``max_abs_error`` and ``mse`` in state LSBs,
  ``exact``);
* ``utilization``: per core, the layer and each resource's use and capacity;
* ``stages``: per stage, in run order, ``status`` (ok, skipped, failed),
  ``wall_s`` (seconds) and ``detail``; ``total_wall_s`` sums the whole run;
* ``files``: the outputs, relative to the output folder.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

SUMMARY_FILE = "summary.json"
SUMMARY_FORMAT = "ecs-run-summary"
SUMMARY_VERSION = 1

# Resource names of the placement report and the hardware fields that give their per-core capacity.
CAPACITY_FIELDS = {
    "neurons": "num_neurons_core",
    "synapses": "num_synapses_core",
    "routes": "num_routes",
    "unique_weights": "num_weights_core",
}


def percent(value: float | None) -> str:
    """Format a fraction as a percentage, or "-" when it was not measured."""
    return "-" if value is None else f"{100 * value:.2f}%"


def core_utilization(placement: dict[str, Any], hardware: dict[str, int]) -> list[dict[str, Any]]:
    """Return per-core use and capacity of every resource from an ecs-deploy placement report (``check --json``)."""
    cores = []
    for core in placement.get("cores", []):
        entry: dict[str, Any] = {"core": core["core"], "layer": core["layer"]}
        for resource, capacity_field in CAPACITY_FIELDS.items():
            entry[resource] = {"used": int(core[resource]), "capacity": int(hardware[capacity_field])}
        cores.append(entry)
    return cores


def _usage_percent(usage: dict[str, int]) -> str:
    used, capacity = usage["used"], usage["capacity"]
    return f"{100 * used / capacity:.0f}%" if capacity else str(used)


def summary_table(summary: dict[str, Any]) -> Table:
    """Return the rich table printed at the end of a run: accuracies, sparsity, comparison, cores and stage times."""
    table = Table(title=f"ECS run summary: {summary.get('config', '')}", show_header=True, title_justify="left")
    table.add_column("item")
    table.add_column("value", justify="right")

    accuracy = summary.get("accuracy", {})
    samples = summary.get("test_samples")
    table.add_row("float accuracy", percent(accuracy.get("float")))
    table.add_row("quantized accuracy", percent(accuracy.get("quantized")))
    if accuracy.get("pruned") is not None:
        table.add_row("quantized accuracy after pruning", percent(accuracy.get("pruned")))
    table.add_row("deployed accuracy (ecs-deploy)", percent(accuracy.get("deployed")))
    table.add_row("test samples", "-" if samples is None else str(samples))
    sparsity = summary.get("sparsity")
    table.add_row("weight sparsity", percent(sparsity))

    comparison = summary.get("comparison")
    if comparison is None:
        table.add_row("output mismatches", "not compared")
    else:
        values = comparison["num_samples"] * comparison["num_timesteps"] * comparison["num_outputs"]
        style = "green" if comparison.get("exact") else "bold red"
        table.add_row(
            "output mismatches",
            f"[{style}]{comparison['output_mismatches']} of {values}[/] "
            f"(max abs error {comparison['max_abs_error']} LSB, MSE {comparison['mse']:.3g})",
        )

    table.add_section()
    for core in summary.get("utilization", []):
        cells = ", ".join(
            f"{resource.replace('unique_', '')} {_usage_percent(core[resource])}" for resource in CAPACITY_FIELDS
        )
        table.add_row(f"core {core['core']} ({core['layer']}), use of capacity", cells)

    table.add_section()
    for name, stage in summary.get("stages", {}).items():
        status = stage["status"]
        label = f"{stage['wall_s']:.1f} s" if status == "ok" else f"{status} ({stage['wall_s']:.1f} s)"
        if status == "failed":
            label = f"[bold red]{label}[/]"
        table.add_row(f"stage {name}", label)
    total = summary.get("total_wall_s")
    if total is not None:
        table.add_row("total wall time", f"{total:.1f} s")
    return table
