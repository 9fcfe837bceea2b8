"""Permissions of files written by ecs_deploy.atomic."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ecs_deploy.atomic import write_text


def test_atomic_file_follows_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = write_text(tmp_path / "core000_neurons.mem", "00\n")
    finally:
        os.umask(previous)

    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == "00\n"
