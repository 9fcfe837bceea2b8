"""Check that importing every module of ecs_deploy and ecs_common leaves torch, nirtorch and norse unloaded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Packages the deploy side must never load, not even lazily or optionally.
FORBIDDEN = ("torch", "nirtorch", "norse", "ecs_train")

# Runs in a fresh interpreter, because this pytest process may already hold
# torch from other packages' tests. It walks the packages with pkgutil, so a
# module added later is covered without editing this test.
IMPORT_EVERYTHING = textwrap.dedent(
    """
    import importlib
    import json
    import pkgutil
    import sys

    import ecs_common
    import ecs_deploy

    imported = []
    for package in (ecs_common, ecs_deploy):
        imported.append(package.__name__)
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
            imported.append(module.name)

    print(json.dumps({"imported": imported, "loaded": sorted(sys.modules)}))
    """
)


def import_everything() -> dict[str, list[str]]:
    """Import every ecs_common and ecs_deploy module in a subprocess and return what it imported and loaded."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"importing the deploy-side modules failed:\n{result.stderr}"

    report: dict[str, list[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_deploy_side_never_loads_torch() -> None:
    report = import_everything()

    for name in FORBIDDEN:
        loaded = [module for module in report["loaded"] if module == name or module.startswith(name + ".")]
        assert not loaded, f"importing ecs_common and ecs_deploy loaded {name}: {', '.join(loaded[:5])}"


def test_walk_covers_known_modules() -> None:
    imported = import_everything()["imported"]

    for module in ("ecs_common", "ecs_common.neuron", "ecs_common.metadata", "ecs_deploy", "ecs_deploy.cli"):
        assert module in imported, f"{module} was not imported by the package walk"
