"""Time the end-to-end main job per stage and report the share of wall time that is not training."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import REPO_ROOT, load_average, write_result

# Words that mark a stage as training when the summary gives it no training flag.
TRAINING_WORDS = ("train", "fit", "qat")


def stages_from_summary(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Read stage timings from a main-job summary.

    Accepted layouts: ``{"stages": [{"name", "wall_s", "training"?}, ...]}`` or
    a mapping under ``"stage_times_s"`` (also ``"timings"``) from stage name to
    seconds. A stage without a ``training`` flag counts as training when its
    name contains "train", "fit" or "qat".
    """
    if isinstance(summary.get("stages"), list):
        raw = [(str(stage["name"]), float(stage["wall_s"]), stage.get("training")) for stage in summary["stages"]]
    else:
        mapping = summary.get("stage_times_s") or summary.get("timings")
        if not isinstance(mapping, dict):
            raise ValueError(
                f"main-job summary has no 'stages' list and no 'stage_times_s' mapping; found keys {sorted(summary)}"
            )
        raw = [(str(name), float(seconds), None) for name, seconds in mapping.items()]

    stages = []
    for name, seconds, training in raw:
        if training is None:
            training = any(word in name.lower() for word in TRAINING_WORDS)
        stages.append({"name": name, "wall_s": seconds, "training": bool(training)})
    return stages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--command", help="shell command that runs the main job (run from the repository root)")
    parser.add_argument("--summary", type=Path, help="JSON file in which the main job records its stage timings")
    parser.add_argument("--quick", action="store_true", help="accepted for run_all.py; the main job has no quick mode")
    args = parser.parse_args()

    if args.command is None and args.summary is None:
        # NOTE: no main-job command exists yet; run_all.py records the skip so
        # that the other benchmarks still run.
        print("no main job given (--command/--summary); skipping", file=sys.stderr)
        write_result("main_job", {"skipped": "no main job command given"}, quick=args.quick)
        return 0

    load_before = load_average()
    total_s = None
    if args.command is not None:
        start = time.perf_counter()
        completed = subprocess.run(shlex.split(args.command), cwd=REPO_ROOT)
        total_s = time.perf_counter() - start
        if completed.returncode != 0:
            print(f"main job failed with exit code {completed.returncode}: {args.command}", file=sys.stderr)
            return completed.returncode

    stages: list[dict[str, Any]] = []
    if args.summary is not None:
        stages = stages_from_summary(json.loads(args.summary.read_text()))
    elif total_s is not None:
        stages = [{"name": "main job (no stage summary)", "wall_s": total_s, "training": False}]

    staged_s = sum(stage["wall_s"] for stage in stages)
    for stage in stages:
        stage["share"] = stage["wall_s"] / staged_s if staged_s else 0.0
    non_training_s = sum(stage["wall_s"] for stage in stages if not stage["training"])
    write_result(
        "main_job",
        {
            "command": args.command,
            "summary_file": str(args.summary) if args.summary else None,
            "total_wall_s": total_s,
            "stages": stages,
            "non_training_s": non_training_s,
            "non_training_share": non_training_s / staged_s if staged_s else None,
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        quick=args.quick,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
