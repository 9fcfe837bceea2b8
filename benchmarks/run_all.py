"""Run every benchmark script in its own interpreter, then print the Markdown tables of their results."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCHMARK_DIR = Path(__file__).resolve().parent

# Scripts that take --threads.
THREADED = ("deploy_sim", "scaling", "training", "main_job")

# Run order: the short, import-light ones first, training last.
BENCHMARKS = {
    "deploy_sim": "bench_deploy_sim.py",
    "scaling": "bench_scaling.py",
    "footprint": "bench_footprint.py",
    "training": "bench_training.py",
    "main_job": "bench_main_job.py",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="pass --quick to each script: small sizes, few repeats")
    parser.add_argument("--keep-going", action="store_true", help="run the remaining scripts after one fails")
    parser.add_argument(
        "--threads", type=int, help="pass --threads to the scripts that take it (one thread: load-robust CPU times)"
    )
    args = parser.parse_args()

    names = args.names or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; expected any of {', '.join(BENCHMARKS)}")
    blas_env = {name: os.environ.get(name) for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"OpenBLAS environment: {blas_env}; load average {os.getloadavg()}")

    failed = []
    for name in names:
        command = [sys.executable, str(BENCHMARK_DIR / BENCHMARKS[name])]
        if args.quick:
            command.append("--quick")
        if args.threads is not None and name in THREADED:
            command += ["--threads", str(args.threads)]
        print(f"\n== {name}: {' '.join(command)}", flush=True)
        start = time.perf_counter()
        returncode = subprocess.run(command, cwd=BENCHMARK_DIR.parent).returncode
        print(f"== {name}: exit {returncode} after {time.perf_counter() - start:.1f} s", flush=True)
        if returncode != 0:
            failed.append(name)
            if not args.keep_going:
                break

    report = [sys.executable, str(BENCHMARK_DIR / "report.py")] + (["--quick"] if args.quick else [])
    subprocess.run(report, cwd=BENCHMARK_DIR.parent)
    if failed:
        print(f"failed benchmarks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
