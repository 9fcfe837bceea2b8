"""Measure ecs-deploy's install footprint and import time against rockpool with xylosim, each in a fresh venv."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO_ROOT, load_average, ratio, write_result

# Each environment: the pip arguments that install it and the import
# statements timed in it. The rockpool Xylo simulator import is recorded
# as it behaves (rockpool 3.1.0 imports samna there, which is never installed).
ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "ecs-deploy": {
        "install": [str(REPO_ROOT / "packages" / "ecs-common"), str(REPO_ROOT / "packages" / "ecs-deploy")],
        "imports": {
            "ecs_deploy": "import ecs_deploy",
            "ecs_deploy.network": "import ecs_deploy.network",
        },
    },
    "ecs-deploy[fast]": {
        "install": [str(REPO_ROOT / "packages" / "ecs-common"), str(REPO_ROOT / "packages" / "ecs-deploy") + "[fast]"],
        "imports": {
            "ecs_deploy.network": "import ecs_deploy.network",
        },
    },
    "rockpool+xylosim": {
        "install": ["rockpool", "xylosim"],
        "imports": {
            "rockpool": "import rockpool",
            "xylosim.v2": "import xylosim.v2",
            "rockpool.devices.xylo.syns61201": "import rockpool.devices.xylo.syns61201",
        },
    },
}


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``command``, raising with its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-4000:]}")
    return result


def directory_size(path: Path) -> tuple[int, int]:
    """Return the bytes and the number of regular files under ``path`` (symbolic links not followed)."""
    total = 0
    files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            file_path = Path(root) / name
            if file_path.is_symlink():
                continue
            total += file_path.stat().st_size
            files += 1
    return total, files


def site_packages(venv: Path) -> Path:
    """Return the venv's site-packages folder."""
    python = venv / "bin" / "python"
    output = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout
    return Path(output.strip())


def create_venv(path: Path) -> Path:
    """Create a venv with pip and return its python."""
    run([sys.executable, "-m", "venv", str(path)])
    return path / "bin" / "python"


def import_time(python: Path, statement: str, repeats: int) -> dict[str, Any]:
    """Time ``statement`` in fresh interpreters: wall time over an empty interpreter, and ``-X importtime``.

    The wall time is the median over ``repeats`` runs of ``python -c statement``
    minus the median of ``python -c pass``, in seconds. The importtime figure
    is the same difference for one ``-X importtime`` trace each. A statement
    that raises is reported with its error.
    """
    probe = subprocess.run([str(python), "-c", statement], capture_output=True, text=True)
    if probe.returncode != 0:
        last_line = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "no output"
        return {"ok": False, "error": last_line}

    def median_wall(code: str) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run([str(python), "-c", code])
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    baseline = median_wall("pass")
    wall = median_wall(statement)

    importtime_s = traced_import_seconds(python, statement) - traced_import_seconds(python, "pass")
    return {
        "ok": True,
        "wall_s": wall - baseline,
        "interpreter_start_s": baseline,
        "importtime_cumulative_s": importtime_s,
        "heavy_modules_loaded": heavy_modules(python, statement),
    }


def traced_import_seconds(python: Path, statement: str) -> float:
    """Return the summed cumulative import time (seconds) of the top-level imports in a ``-X importtime`` trace."""
    traced = run([str(python), "-X", "importtime", "-c", statement])
    cumulative_us = 0
    for line in traced.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue

        # Lines read "import time: self | cumulative | name"; nested imports
        # indent the name by two spaces per level.
        fields = line.partition("import time:")[2].split("|")
        if len(fields) == 3 and not fields[2].startswith("  "):
            cumulative_us += int(fields[1])
    return cumulative_us / 1e6


def heavy_modules(python: Path, statement: str) -> list[str]:
    """List which of torch, scipy, matplotlib, numba and samna ``statement`` imports."""
    code = (
        f"{statement}\nimport sys, json\n"
        "print(json.dumps([m for m in ('torch', 'scipy', 'matplotlib', 'numba', 'samna') if m in sys.modules]))"
    )
    return json.loads(run([str(python), "-c", code]).stdout.strip().splitlines()[-1])


# Sums the sizes of the files each installed distribution lists in its RECORD.
_DISTRIBUTION_SIZES = """
import json
from importlib import metadata
from pathlib import Path

sizes = {}
for dist in metadata.distributions():
    total = 0
    for file in dist.files or []:
        path = Path(str(dist.locate_file(file)))
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    sizes[f"{dist.metadata['Name']}=={dist.version}"] = total
print(json.dumps(sizes))
"""


def distribution_sizes(python: Path) -> dict[str, int]:
    """Return the installed bytes of every distribution in the interpreter ``python``, largest first."""
    sizes = json.loads(run([str(python), "-c", _DISTRIBUTION_SIZES]).stdout)
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


def measure_environment(name: str, spec: dict[str, Any], root: Path, repeats: int) -> dict[str, Any]:
    """Install one environment into a fresh venv under ``root`` and measure its size and import times."""
    venv = root / name.replace("+", "_").replace("[", "_").replace("]", "")
    python = create_venv(venv)
    empty_bytes, empty_files = directory_size(venv)

    start = time.perf_counter()
    run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *spec["install"]])
    install_s = time.perf_counter() - start

    venv_bytes, venv_files = directory_size(venv)
    imports = {label: import_time(python, statement, repeats) for label, statement in spec["imports"].items()}
    return {
        "install_command": "pip install " + " ".join(Path(arg).name if "/" in arg else arg for arg in spec["install"]),
        "install_wall_s": install_s,
        "venv_bytes": venv_bytes,
        "venv_files": venv_files,
        "added_bytes": venv_bytes - empty_bytes,
        "added_files": venv_files - empty_files,
        "site_packages": str(site_packages(venv)),
        "distribution_bytes": distribution_sizes(python),
        "imports": imports,
    }


def torch_stack_size() -> dict[str, int]:
    """Return the installed bytes of torch, norse and the CUDA and triton wheels torch pulls in, in this interpreter.

    The fresh venvs above never install torch, so this reads the development
    venv that runs the benchmark, where norse's float inference anchor lives.
    """
    sizes = distribution_sizes(Path(sys.executable))
    prefixes = ("torch==", "torchvision==", "norse==", "nvidia-", "triton==")
    return {name: size for name, size in sizes.items() if name.lower().startswith(prefixes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10, help="fresh interpreters per import timing")
    parser.add_argument("--quick", action="store_true", help="3 repeats, for a smoke run")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats

    load_before = load_average()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ecs-footprint-") as tmp:
        for name, spec in ENVIRONMENTS.items():
            print(f"installing {name} into a fresh venv")
            results[name] = measure_environment(name, spec, Path(tmp), repeats)

    # The simulator import is what a deploy run pays; before ecs_deploy.network
    # exists, the package import stands in for it.
    ecs = results["ecs-deploy"]
    rock = results["rockpool+xylosim"]
    ecs_import = ecs["imports"]["ecs_deploy.network"]
    if not ecs_import["ok"]:
        ecs_import = ecs["imports"]["ecs_deploy"]
    rock_import = rock["imports"]["rockpool"]
    torch_sizes = torch_stack_size()
    summary = {
        "venv_size_ratio_rockpool_over_ecs": ratio(rock["added_bytes"], ecs["added_bytes"]),
        "import_ratio_rockpool_over_ecs": (
            ratio(rock_import["wall_s"], ecs_import["wall_s"]) if ecs_import["ok"] and rock_import["ok"] else None
        ),
        "torch_stack_bytes": sum(torch_sizes.values()),
    }
    write_result(
        "footprint",
        {
            "repeats": repeats,
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "environments": results,
            "torch_stack_in_dev_venv": torch_sizes,
            "norse_import_in_dev_venv": import_time(Path(sys.executable), "import norse.torch", repeats),
            "summary": summary,
        },
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
