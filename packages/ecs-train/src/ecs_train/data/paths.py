"""Location of the real sample recordings that tests and benchmarks read when they are present."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "ECS_DATA_DIR"


def _repository_root() -> Path | None:
    # In a source checkout this file is <repo>/packages/ecs-train/src/ecs_train/data/paths.py. An
    # installed wheel has no such parents, so the walk finds nothing and returns None.
    for parent in Path(__file__).resolve().parents:
        if (parent / "packages" / "ecs-train").is_dir():
            return parent
    return None


def shared_data_dir() -> Path | None:
    """Return the folder of sample recordings (``nmnist_small/``, ``fsdd/``), or None where there is none.

    The environment variable ``ECS_DATA_DIR`` comes first. When it is unset or names a missing
    folder, the ``shared/data`` folder beside the repository root is used if it exists.
    """
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        path = Path(from_env).expanduser()
        if path.is_dir():
            return path
        logger.warning(
            "%s=%s is not a folder, so the sample data is looked up beside the repository", DATA_DIR_ENV, path
        )

    root = _repository_root()
    if root is None:
        return None
    candidate = root.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None
