"""On-disk cache of binned samples, stored as packed bits and written atomically."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Raise this when the conversion of any dataset changes, so that old cache files are not reused.
CACHE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class PackedFrames:
    """Binary samples of one split, each flattened and packed 8 values per byte (``np.packbits``)."""

    bits: np.ndarray
    frame_shape: tuple[int, ...]
    labels: np.ndarray
    ids: np.ndarray

    @classmethod
    def from_frames(cls, frames: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> PackedFrames:
        """Pack binary frames ``[N, *frame_shape]`` of values 0 and 1."""
        flat = frames.reshape(len(frames), int(np.prod(frames.shape[1:])))
        return cls(
            bits=np.packbits(flat.astype(bool), axis=1),
            frame_shape=tuple(frames.shape[1:]),
            labels=np.asarray(labels, dtype=np.int64),
            ids=np.asarray(ids, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def frame_size(self) -> int:
        """Values per sample."""
        return int(np.prod(self.frame_shape))

    def frame(self, index: int) -> np.ndarray:
        """Unpack one sample into a uint8 array of ``frame_shape``."""
        return np.unpackbits(self.bits[index], count=self.frame_size).reshape(self.frame_shape)

    def frames(self, count: int) -> np.ndarray:
        """Unpack the first ``count`` samples into a uint8 array ``[count, *frame_shape]``."""
        flat = np.unpackbits(self.bits[:count], axis=1, count=self.frame_size)
        return flat.reshape(count, *self.frame_shape)


def cache_key(params: dict[str, Any]) -> str:
    """Hash every parameter a conversion depends on into a short file-name key."""
    text = json.dumps({"format": CACHE_FORMAT_VERSION, **params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def ids_digest(ids: np.ndarray) -> str:
    """Hash a list of sample ids, so that a cache built for other samples is not reused."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def save_packed(path: Path, packed: PackedFrames) -> None:
    """Write a cache file atomically: into a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as handle:
            np.savez(
                handle,
                bits=packed.bits,
                frame_shape=np.asarray(packed.frame_shape, dtype=np.int64),
                labels=packed.labels,
                ids=packed.ids,
            )
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load_packed(path: Path) -> PackedFrames:
    """Read a cache file written by ``save_packed``."""
    with np.load(path) as archive:
        return PackedFrames(
            bits=archive["bits"],
            frame_shape=tuple(int(size) for size in archive["frame_shape"]),
            labels=archive["labels"],
            ids=archive["ids"],
        )


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    # The conversions multiply matrices of at most a few GFLOP per batch, so BLAS runs on one thread.
    # With OpenBLAS's default threads, encoding 600 FSDD recordings took 18 s instead of 1.7 s on
    # 2 cores that other processes kept busy. threadpoolctl comes with scikit-learn, and without it
    # the BLAS default applies.
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def load_or_convert(path: Path, convert: Callable[[], PackedFrames], description: str) -> PackedFrames:
    """Return the cached samples at ``path``, converting and caching them first when the file is missing.

    A cache file that cannot be read is logged and rebuilt.
    """
    if path.exists():
        try:
            return load_packed(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            logger.warning("cache file %s is unreadable (%s), so %s is converted again", path, error, description)

    start = time.perf_counter()
    with _single_threaded_blas():
        packed = convert()
    elapsed = time.perf_counter() - start
    logger.info("converted %d samples of %s in %.1f s", len(packed), description, elapsed)

    save_packed(path, packed)
    logger.info("cached %s in %s", description, path)
    return packed
