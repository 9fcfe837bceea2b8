"""Compare ecs-deploy's batch simulation with XyloSim, norse float32 inference and the dense float32 roofline."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from anchors import DenseRoofline, NorseAnchor, XyloSimAnchor, xylo_fits
from common import (
    EcsDeployRunner,
    limit_threads,
    load_average,
    make_inputs,
    make_network,
    ratio,
    reference_simulation,
    time_interleaved,
    write_result,
)

SHAPES = ((256, 128, 10), (16, 1000, 8))
BATCHES = (1, 256)
TIMESTEPS = 100
DENSITY = 0.05

# Targets the deploy simulation (default backend) is held to, as anchor time
# over ecs-deploy time. The numpy backend is timed for users without numba.
TARGETS = {"xylosim": 20.0, "norse": 1.0, "dense_roofline": 1 / 1.5}


def check_outputs(runners: dict[str, Any], network: Any, inputs: np.ndarray) -> dict[str, Any]:
    """Check both ecs-deploy backends against ecs-common's reference step; report spike rates and argmax agreement."""
    reference = reference_simulation(network, inputs)
    ecs_states = runners["ecs-deploy"].output_states(inputs)
    norse_states = runners["norse"].run(inputs)
    xylo = runners["xylosim"]

    numpy_states = runners["ecs-deploy-numpy"].output_states(inputs)
    ecs_matches = bool(np.array_equal(ecs_states, reference["output_states"]))
    numpy_matches = bool(np.array_equal(numpy_states, reference["output_states"]))
    last_reference = reference["output_states"][:, -1]
    return {
        "ecs_deploy_equals_reference": ecs_matches,
        "ecs_deploy_numpy_equals_reference": numpy_matches,
        "hidden_spike_rate_ecs": float(reference["hidden_spikes"].mean()),
        "hidden_spike_rate_xylosim": xylo.hidden_spike_rate(inputs),
        "argmax_agreement_norse_vs_ecs": float(
            np.mean(np.argmax(norse_states[:, -1], axis=1) == np.argmax(last_reference, axis=1))
        ),
    }


def bench_shape(shape: tuple[int, int, int], batches: tuple[int, ...], repeats: dict[int, int]) -> dict[str, Any]:
    """Benchmark every simulator on one network shape at each batch size."""
    network = make_network(*shape)
    runners: dict[str, Any] = {
        "ecs-deploy": EcsDeployRunner(network),
        "ecs-deploy-numpy": EcsDeployRunner(network, backend="numpy"),
        "xylosim": XyloSimAnchor(network),
        "norse": NorseAnchor(network),
        "dense_roofline": DenseRoofline(network),
    }
    result: dict[str, Any] = {
        "network": network.shape_label,
        "v_threshold": network.v_threshold,
        "tau_mem_s": network.tau_mem,
        "dt_s": network.dt,
        "xylo": {**xylo_fits(network), "dash_mem": runners["xylosim"].dash_mem},
        "checks": check_outputs(runners, network, make_inputs(16, TIMESTEPS, network.n_in, density=DENSITY, seed=7)),
        "batches": {},
    }
    result["ecs_deploy"] = runners["ecs-deploy"].describe()

    for batch in batches:
        inputs = make_inputs(batch, TIMESTEPS, network.n_in, density=DENSITY, seed=batch)
        load_before = load_average()
        timings = time_interleaved(
            {name: (lambda runner=runner, inputs=inputs: runner.run(inputs)) for name, runner in runners.items()},
            repeats=repeats[batch],
        )
        for timing in timings.values():
            timing["samples_per_s"] = batch / timing["best_s"]
            timing["timesteps_per_s"] = batch * TIMESTEPS / timing["best_s"]
        ecs_best = timings["ecs-deploy"]["best_s"]
        ratios = {name: ratio(timings[name]["best_s"], ecs_best) for name in runners if name != "ecs-deploy"}
        result["batches"][str(batch)] = {
            "timings": timings,
            "speedup_of_ecs_deploy": ratios,
            "meets_target": {name: ratios[name] >= target for name, target in TARGETS.items()},
            "load_average_before": load_before,
            "load_average_after": load_average(),
        }
        print(
            f"{network.shape_label} batch {batch}: "
            + ", ".join(f"{name} {timing['best_s'] * 1e3:.2f} ms" for name, timing in timings.items())
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="batch 1 and 16, few repeats, for a smoke run")
    parser.add_argument(
        "--threads",
        type=int,
        help="limit every simulator to this many threads; the result goes to deploy_sim_threads<N>.json",
    )
    args = parser.parse_args()

    # Load the multithreaded runtimes before limiting their thread pools.
    import numba  # noqa: F401
    import torch  # noqa: F401

    threads = limit_threads(args.threads)

    batches = (1, 16) if args.quick else BATCHES
    repeats = {1: 5, 16: 2} if args.quick else {1: 30, 256: 5}
    results = [bench_shape(shape, batches, repeats) for shape in SHAPES]
    write_result(
        "deploy_sim" + (f"_threads{args.threads}" if args.threads else ""),
        {
            "threads": threads,
            "timesteps": TIMESTEPS,
            "input_density": DENSITY,
            "targets_speedup": TARGETS,
            "networks": results,
        },
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
