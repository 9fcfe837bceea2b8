"""Time the end-to-end main job (``ecs-train run``) per stage and report the share that is not training."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO_ROOT, load_average, write_result

CONFIG_FILE = REPO_ROOT / "config" / "digits_feed_forward.yaml"

# The summary file that ``ecs-train run`` writes into its output folder.
SUMMARY_FILE = "summary.json"

# Stage names (or words of them) that mark a stage as training when the summary gives it no training flag.
TRAINING_WORDS = ("train", "training", "fit", "qat")

# Thread-count variables read by OpenMP, OpenBLAS and numba when a process starts.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS")


def stages_from_summary(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Read stage timings from a main-job summary.

    Accepted layouts: ``ecs-train run``'s ``{"stages": {name: {"wall_s", "status"}}}``,
    a list ``{"stages": [{"name", "wall_s", "training"?}, ...]}``, or a mapping
    from stage name to seconds under ``"stage_times_s"``. A stage without a
    ``training`` flag counts as training when a word of its name is "train",
    "training", "fit" or "qat".
    """
    stages = summary.get("stages")
    if isinstance(stages, dict):
        raw = [
            (str(name), float(stage["wall_s"]), stage.get("training"), stage.get("status"))
            for name, stage in stages.items()
        ]
    elif isinstance(stages, list):
        raw = [
            (str(stage["name"]), float(stage["wall_s"]), stage.get("training"), stage.get("status")) for stage in stages
        ]
    elif isinstance(summary.get("stage_times_s"), dict):
        raw = [(str(name), float(seconds), None, None) for name, seconds in summary["stage_times_s"].items()]
    else:
        raise ValueError(f"main-job summary has no 'stages' and no 'stage_times_s' entry; found keys {sorted(summary)}")

    result = []
    for name, seconds, training, status in raw:
        if training is None:
            words = re.split(r"[^a-z]+", name.lower())
            training = any(word in TRAINING_WORDS for word in words)
        result.append({"name": name, "wall_s": seconds, "training": bool(training), "status": status})
    return result


def default_command(output: Path, quick: bool) -> list[str]:
    """Return the ``ecs-train run`` command on the digits config, writing to ``output``."""
    executable = shutil.which("ecs-train") or str(Path(sys.executable).parent / "ecs-train")
    command = [executable, "run", str(CONFIG_FILE), "--output", str(output), "--force"]
    if quick:
        command += ["--epochs", "1", "--qat-epochs", "1", "--limit-batches", "5"]
    return command


def run_main_job(command: list[str], threads: int | None) -> float:
    """Run the main job from the repository root and return its wall time in seconds."""
    environment = dict(os.environ)
    if threads is not None:
        environment.update({name: str(threads) for name in THREAD_ENV_VARS})
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO_ROOT, env=environment)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"main job failed with exit code {completed.returncode}: {shlex.join(command)}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--command",
        help="shell command that runs the main job instead of `ecs-train run` on the digits config; "
        "give --summary with it",
    )
    parser.add_argument("--summary", type=Path, help="JSON stage summary to read (written by the main job)")
    parser.add_argument("--quick", action="store_true", help="1 float and 1 QAT epoch of 5 batches, for a smoke run")
    parser.add_argument("--threads", type=int, help="set the OpenMP, OpenBLAS and numba thread counts of the job")
    args = parser.parse_args()

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="ecs-bench-main-job-") as tmp:
        if args.command is not None:
            command = shlex.split(args.command)
            summary_path = args.summary
        else:
            output = Path(tmp) / "run"
            command = default_command(output, args.quick)
            summary_path = args.summary or output / SUMMARY_FILE
        total_s = run_main_job(command, args.threads)
        if summary_path is None:
            raise SystemExit("--command needs --summary: the JSON file in which the job records its stage timings")
        summary = json.loads(Path(summary_path).read_text())

    stages = stages_from_summary(summary)
    staged_s = sum(stage["wall_s"] for stage in stages)
    for stage in stages:
        stage["share"] = stage["wall_s"] / staged_s if staged_s else 0.0
    non_training_s = sum(stage["wall_s"] for stage in stages if not stage["training"])
    write_result(
        "main_job" + (f"_threads{args.threads}" if args.threads else ""),
        {
            "command": shlex.join(command),
            "threads": args.threads,
            "process_wall_s": total_s,
            "summary_total_wall_s": summary.get("total_wall_s"),
            "stages": stages,
            "stages_wall_s": staged_s,
            # Interpreter start, imports and writing the summary, outside every stage.
            "outside_stages_s": total_s - staged_s,
            "non_training_s": non_training_s,
            "non_training_share": non_training_s / staged_s if staged_s else None,
            "accuracy": summary.get("accuracy"),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
