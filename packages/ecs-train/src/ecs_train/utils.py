"""Small helpers shared by the ecs-train modules: seeding and atomic file writes."""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytorch_lightning as pl
import torch

logger = logging.getLogger(__name__)


def set_random_seed(seed: int) -> None:
    """Seed python's, numpy's and torch's random generators, and Lightning's dataloader workers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    pl.seed_everything(seed, workers=True, verbose=False)


@contextmanager
def atomic_write(path: str | os.PathLike[str], binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing and rename it onto ``path`` on success.

    Readers see either the old file or the complete new one. The file gets
    the permissions that the process umask gives new files.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    mode = "wb" if binary else "w"
    encoding = None if binary else "utf-8"
    try:
        with os.fdopen(descriptor, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


from ecs_train.nir_export import export_nir  # noqa: E402,F401  (re-exported for tutorial code)
