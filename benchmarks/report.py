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


def deploy_table(result: dict[str, Any]) -> str:
    """Format the deploy simulation results: best times, throughput and ecs-deploy's speedups."""
    rows = []
    for network in result["networks"]:
        for batch, entry in network["batches"].items():
            timings = entry["timings"]
            ecs = timings["ecs-deploy"]
            speedup = entry["speedup_of_ecs_deploy"]
            rows.append(
                [
                    network["network"],
                    batch,
                    f"{ecs['best_s'] * 1e3:.2f}",
                    f"{ecs['samples_per_s']:,.0f}",
                    f"{ecs['timesteps_per_s']:,.0f}",
                    f"{timings['xylosim']['best_s'] * 1e3:.2f}",
                    f"{timings['norse']['best_s'] * 1e3:.2f}",
                    f"{timings['dense_roofline']['best_s'] * 1e3:.2f}",
                    f"{speedup['xylosim']:.1f}x",
                    f"{speedup['norse']:.2f}x",
                    f"{1 / speedup['dense_roofline']:.2f}x",
                    load_text(entry["load_average_before"]),
                ]
            )
    header = [
        "network",
        "batch",
        "ecs-deploy ms",
        "samples/s",
        "timesteps/s",
        "XyloSim ms",
        "norse ms",
        "dense roofline ms",
        "speedup vs XyloSim",
        "speedup vs norse",
        "ecs-deploy / roofline",
        "load avg",
    ]
    return table(header, rows)


def scaling_table(result: dict[str, Any]) -> str:
    """Format the scaling series: the points, the linear fit and R^2."""
    rows = []
    for name, series in result["series"].items():
        points = ", ".join(f"{point[name]}: {point['best_s'] * 1e3:.1f}" for point in series["points"])
        fit = series["fit"]
        fixed = ", ".join(f"{key} {value}" for key, value in series["fixed"].items())
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
                f"{entry['epoch_s']:.2f}",
                ", ".join(f"{value:.2f}" for value in entry["epochs_s"]),
                load_text(entry.get("load_average_before")),
            ]
        )
    header = ["loop", "samples/s", "best epoch s", "epochs s", "load avg"]
    return table(header, rows)


def main_job_table(result: dict[str, Any]) -> str:
    """Format the wall time of each main-job stage."""
    rows = [
        [stage["name"], f"{stage['wall_s']:.2f}", f"{stage['share']:.1%}", "yes" if stage["training"] else "no"]
        for stage in result["stages"]
    ]
    return table(["stage", "wall s", "share", "training"], rows)


RENDERERS = {
    "deploy_sim": ("Deploy simulation", deploy_table),
    "scaling": ("Scaling", scaling_table),
    "footprint": ("Footprint", footprint_table),
    "training": ("Training throughput", training_table),
    "main_job": ("Main job", main_job_table),
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
        print(render(result))


if __name__ == "__main__":
    main()
