"""Measure how ecs-deploy's batch simulation time grows as samples, timesteps and hidden neurons double."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from common import (
    EcsDeployRunner,
    limit_threads,
    load_average,
    make_inputs,
    make_network,
    time_interleaved,
    write_result,
)

BASE = {"samples": 64, "timesteps": 100, "hidden": 128}
N_IN = 256
N_OUT = 10
DENSITY = 0.05

SERIES = {
    "samples": (32, 64, 128, 256, 512),
    "timesteps": (50, 100, 200, 400, 800),
    "hidden": (128, 256, 512, 1024, 2048),
}
QUICK_SERIES = {
    "samples": (8, 16, 32, 64),
    "timesteps": (25, 50, 100, 200),
    "hidden": (64, 128, 256, 512),
}


def linear_fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Fit ``y = intercept + slope * x`` by least squares and return both with R^2."""
    slope, intercept = np.polyfit(x, y, 1)
    predicted = intercept + slope * x
    residual = float(np.sum((y - predicted) ** 2))
    total = float(np.sum((y - np.mean(y)) ** 2))
    return {
        "slope_s_per_unit": float(slope),
        "intercept_s": float(intercept),
        "r_squared": 1.0 - residual / total if total > 0 else 1.0,
    }


def measure_point(samples: int, timesteps: int, hidden: int, repeats: int) -> dict[str, Any]:
    """Time one batch simulation of ``samples`` x ``timesteps`` on a 256-``hidden``-10 network."""
    network = make_network(N_IN, hidden, N_OUT)
    runner = EcsDeployRunner(network)
    inputs = make_inputs(samples, timesteps, N_IN, density=DENSITY, seed=samples + timesteps)
    timing = time_interleaved({"ecs-deploy": lambda: runner.run(inputs)}, repeats=repeats)["ecs-deploy"]
    return {"samples": samples, "timesteps": timesteps, "hidden": hidden, **timing}


def measure_series(name: str, values: tuple[int, ...], base: dict[str, int], repeats: int) -> dict[str, Any]:
    """Vary one quantity over ``values`` with the others at ``base`` and fit the best times linearly."""
    load_before = load_average()
    points = []
    for value in values:
        setting = {**base, name: value}
        point = measure_point(setting["samples"], setting["timesteps"], setting["hidden"], repeats)
        points.append(point)
        print(f"{name}={value}: {point['best_s'] * 1e3:.2f} ms wall, {point['best_cpu_s'] * 1e3:.2f} ms CPU")
    x = np.array(values, dtype=float)
    wall = np.array([point["best_s"] for point in points])
    cpu = np.array([point["best_cpu_s"] for point in points])
    return {
        "varied": name,
        "fixed": {key: value for key, value in base.items() if key != name},
        "points": points,
        "fit": linear_fit(x, wall),
        # Process CPU time is the load-independent measure when one thread runs.
        "fit_cpu": linear_fit(x, cpu),
        # Doubling the quantity should double the cost minus the fixed part.
        "time_ratio_last_over_first": float(wall[-1] / wall[0]),
        "cpu_time_ratio_last_over_first": float(cpu[-1] / cpu[0]),
        "size_ratio_last_over_first": float(x[-1] / x[0]),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller series and 2 repeats, for a smoke run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per point; the best counts")
    parser.add_argument("--threads", type=int, help="limit numba and BLAS to this many threads")
    args = parser.parse_args()

    import numba  # noqa: F401

    threads = limit_threads(args.threads)

    series = QUICK_SERIES if args.quick else SERIES
    base = {"samples": 16, "timesteps": 50, "hidden": 128} if args.quick else BASE
    repeats = 2 if args.quick else args.repeats
    results = {name: measure_series(name, values, base, repeats) for name, values in series.items()}
    write_result(
        "scaling" + (f"_threads{args.threads}" if args.threads else ""),
        {
            "threads": threads,
            "network": f"{N_IN}-hidden-{N_OUT}",
            "input_density": DENSITY,
            "repeats": repeats,
            "series": results,
        },
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
