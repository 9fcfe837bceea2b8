"""Render the benchmark results under benchmarks/results/ as Markdown tables on standard output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def load(name: str, quick: bool) -> dict[str, Any] | None:
    """Return the parsed result of benchmark ``name``, or ``None`` when it has not run."""
    path = (RESULTS_DIR / "quick" if quick else RESULTS_DIR) / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def table(header: list[str], rows: list[list[str]]) -> str:
    """Format a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def load_text(values: list[float] | None) -> str:
    """Format a 1/5/15 minute load average triple."""
    return "/".join(f"{value:.2f}" for value in values) if values else "-"


def deploy_table(result: dict[str, Any], key: str = "best_s") -> str:
    """Format the deploy simulation results: best times, throughput and ecs-deploy's speedups.

    ``key`` selects the time: ``"best_s"`` (wall) or ``"best_cpu_s"`` (process CPU time).
    """
    rows = []
    for network in result["networks"]:
        for batch, entry in network["batches"].items():
            timings = entry["timings"]
            ecs = timings["ecs-deploy"][key]
            batch_size = int(batch)
            steps = result["timesteps"]
            rows.append(
                [
                    network["network"],
                    batch,
                    f"{ecs * 1e3:.2f}",
                    f"{batch_size / ecs:,.0f}",
                    f"{batch_size * steps / ecs:,.0f}",
                    f"{timings['ecs-deploy-numpy'][key] * 1e3:.2f}",
                    f"{timings['xylosim'][key] * 1e3:.2f}",
                    f"{timings['norse'][key] * 1e3:.2f}",
                    f"{timings['dense_roofline'][key] * 1e3:.2f}",
                    f"{timings['xylosim'][key] / ecs:.1f}x",
                    f"{timings['norse'][key] / ecs:.2f}x",
                    f"{ecs / timings['dense_roofline'][key]:.2f}x",
                    load_text(entry["load_average_before"]),
                ]
            )
    header = [
        "network",
        "batch",
        "ecs-deploy ms",
        "samples/s",
        "timesteps/s",
        "ecs-deploy numpy ms",
        "XyloSim ms",
        "norse ms",
        "dense roofline ms",
        "speedup vs XyloSim",
        "speedup vs norse",
        "ecs-deploy / roofline",
        "load avg",
    ]
    return table(header, rows)


def scaling_table(result: dict[str, Any], key: str = "best_s", fit_key: str = "fit") -> str:
    """Format the scaling series: the points, the linear fit and R^2.

    ``key`` and ``fit_key`` select wall time (``"best_s"``, ``"fit"``) or
    process CPU time (``"best_cpu_s"``, ``"fit_cpu"``).
    """
    rows = []
    for name, series in result["series"].items():
        points = ", ".join(f"{point[name]}: {point[key] * 1e3:.1f}" for point in series["points"])
        fit = series[fit_key]
        fixed = ", ".join(f"{field} {value}" for field, value in series["fixed"].items())
        rows.append(
            [
                name,
                fixed,
                points,
                f"{fit['slope_s_per_unit'] * 1e3:.4f}",
                f"{fit['intercept_s'] * 1e3:.2f}",
                f"{fit['r_squared']:.4f}",
                load_text(series["load_average_before"]),
            ]
        )
    header = ["doubled", "fixed", "value: ms", "slope ms/unit", "intercept ms", "R^2", "load avg"]
    return table(header, rows)


def footprint_table(result: dict[str, Any]) -> str:
    """Format the installed size and import times of each fresh environment."""
    rows = []
    for name, env in result["environments"].items():
        for label, timing in env["imports"].items():
            if timing["ok"]:
                wall = f"{timing['wall_s'] * 1e3:.0f}"
                traced = f"{timing['importtime_cumulative_s'] * 1e3:.0f}"
                heavy = ", ".join(timing["heavy_modules_loaded"]) or "none"
            else:
                wall, traced, heavy = "fails", "-", timing["error"]
            rows.append(
                [
                    name,
                    f"{env['added_bytes'] / 1e6:.0f}",
                    f"{env['added_files']:,}",
                    f"`import {label}`",
                    wall,
                    traced,
                    heavy,
                ]
            )
    header = ["venv", "installed MB", "files", "import", "wall ms", "-X importtime ms", "heavy modules / error"]
    return table(header, rows)


def training_table(result: dict[str, Any]) -> str:
    """Format the training throughput of each loop."""
    rows = []
    for name, entry in result["loops"].items():
        rows.append(
            [
                name,
                f"{entry['samples_per_s']:.1f}",
                f"{entry['samples_per_epoch'] / entry['epoch_cpu_s']:.1f}",
                f"{entry['epoch_s']:.2f}",
                f"{entry['epoch_cpu_s']:.2f}",
                ", ".join(f"{value:.2f}" for value in entry["epochs_s"]),
                load_text(entry.get("load_average_before")),
            ]
        )
    header = ["loop", "samples/s (wall)", "samples per CPU s", "best epoch s", "its CPU s", "epochs s", "load avg"]
    return table(header, rows)


def main_job_table(result: dict[str, Any]) -> str:
    """Format the wall time of each main-job stage and the share that is not training."""
    rows = [
        [
            stage["name"],
            stage.get("status") or "-",
            f"{stage['wall_s']:.2f}",
            f"{stage['share']:.1%}",
            "yes" if stage["training"] else "no",
        ]
        for stage in result["stages"]
    ]
    rows.append(["not training", "", f"{result['non_training_s']:.2f}", f"{result['non_training_share']:.1%}", ""])
    # Start-up and imports run outside every stage; they are not training either.
    training_s = result["stages_wall_s"] - result["non_training_s"]
    process_s = result["process_wall_s"]
    outside_s = result["outside_stages_s"]
    rows.append(["outside the stages (start-up, imports)", "", f"{outside_s:.2f}", "", ""])
    rows.append(["process wall time", "", f"{process_s:.2f}", "", ""])
    rows.append(
        [
            "not training, start-up included",
            "",
            f"{process_s - training_s:.2f}",
            f"{1 - training_s / process_s:.1%}",
            "",
        ]
    )
    return table(["stage", "status", "wall s", "share", "training"], rows)


RENDERERS = {
    "deploy_sim": ("Deploy simulation, wall time, default threads", deploy_table),
    "deploy_sim_threads1": (
        "Deploy simulation, process CPU time, one thread each",
        lambda result: deploy_table(result, "best_cpu_s"),
    ),
    "scaling": ("Scaling, wall time, default threads", scaling_table),
    "scaling_threads1": (
        "Scaling, process CPU time, one thread",
        lambda result: scaling_table(result, "best_cpu_s", "fit_cpu"),
    ),
    "footprint": ("Footprint", footprint_table),
    "training": ("Training throughput, default threads", training_table),
    "training_threads1": ("Training throughput, one thread", training_table),
    "main_job": ("Main job, default threads", main_job_table),
    "main_job_threads1": ("Main job, one thread", main_job_table),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="render the results of --quick runs")
    args = parser.parse_args()

    for name, (title, render) in RENDERERS.items():
        result = load(name, args.quick)
        print(f"\n## {title}\n")
        if result is None:
            print(f"(no results/{name}.json yet)")
            continue
        if result.get("skipped"):
            print(f"skipped: {result['skipped']}")
            continue
        machine = result["machine"]
        print(f"{machine['date_utc']}, load average at the end {load_text(machine['load_average'])}\n")
        try:
            print(render(result))
        except KeyError as error:
            print(f"(cannot render {name}.json: field {error} is missing; rerun that benchmark)")


if __name__ == "__main__":
    main()
