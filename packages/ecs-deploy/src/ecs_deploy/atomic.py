"""Atomic output files: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ecs_deploy.errors import OutputExistsError, OutputFolderError


def check_new(path: str | Path, force: bool) -> Path:
    """Return ``path``, raising :class:`OutputExistsError` when it exists and ``force`` is false."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"output file {str(path)!r} exists already; pass force=True (--force) to overwrite it")
    return path


def make_output_folder(path: str | Path) -> Path:
    """Create the output folder ``path`` and its parents, raising :class:`OutputFolderError` when that fails."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _folder_error(path, error) from error
    return path


def _folder_error(path: Path, error: OSError) -> OutputFolderError:
    reason = error.strerror or type(error).__name__
    return OutputFolderError(f"cannot write to output folder {str(path)!r} ({reason}); choose a writable folder")


@contextlib.contextmanager
def atomic_open(path: str | Path, force: bool = False, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path`` and move it onto ``path`` when the block succeeds.

    A failure inside the block removes the temporary file and leaves any
    existing ``path`` untouched. Raises :class:`OutputExistsError` when
    ``path`` exists and ``force`` is false.
    """
    path = check_new(path, force)
    make_output_folder(path.parent)
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _folder_error(path.parent, error) from error
    try:
        # mkstemp creates the file readable by its owner only; give it the
        # permissions that the process umask gives any new file.
        os.chmod(temporary, 0o666 & ~_current_umask())
        with os.fdopen(descriptor, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_bytes(path: str | Path, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_open(path, force, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, force: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    return write_bytes(path, text.encode("utf-8"), force)


def write_with(path: str | Path, writer: Callable[[IO], None], force: bool = False) -> Path:
    """Call ``writer`` with a binary handle of a temporary file, then move it onto ``path``."""
    with atomic_open(path, force, "wb") as handle:
        writer(handle)
    return Path(path)
