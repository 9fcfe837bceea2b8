"""Sample lists and the train/validation/test splits drawn from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecs_train.data.config import ValidationSplit


@dataclass(frozen=True)
class SampleList:
    """Dataset-specific sample ids and class labels of one split's recordings, in reading order."""

    ids: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.shape != self.labels.shape or self.ids.ndim != 1:
            raise ValueError(f"ids {self.ids.shape} and labels {self.labels.shape} must be 1-D arrays of one length")

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, index: np.ndarray) -> SampleList:
        """Return the samples at ``index`` (integer positions or a boolean mask), keeping their order."""
        return SampleList(ids=self.ids[index], labels=self.labels[index])

    def head(self, count: int | None) -> SampleList:
        """Return the first ``count`` samples, or all of them when ``count`` is None."""
        if count is None or count >= len(self):
            return self
        return self.select(np.arange(count))


def stratified_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Mark ``round(fraction * len(labels))`` random samples, shared among the classes by their sizes.

    Every class gets ``floor(fraction * n_c)`` samples, and the samples still missing go to the
    classes with the largest remainders. The draw depends only on ``seed``.
    """
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    quotas = fraction * sizes
    counts = np.floor(quotas).astype(np.int64)
    missing = int(round(fraction * len(labels))) - int(counts.sum())
    if missing > 0:
        counts[np.argsort(-(quotas - counts), kind="stable")[:missing]] += 1

    mask = np.zeros(len(labels), dtype=bool)
    for label, count in zip(classes, counts, strict=True):
        members = np.flatnonzero(labels == label)
        mask[rng.permutation(members)[:count]] = True
    return mask


def hold_out(pool: SampleList, fraction: float, method: ValidationSplit, seed: int) -> tuple[SampleList, SampleList]:
    """Split a training pool into training and validation samples, both in the pool's order.

    ``"stratified"`` draws ``fraction`` of every class with ``seed``, and ``"last"`` takes the last
    ``round(fraction * len(pool))`` samples.
    """
    if method == "stratified":
        mask = stratified_mask(pool.labels, fraction, seed)
    elif method == "last":
        count = int(round(fraction * len(pool)))
        mask = np.zeros(len(pool), dtype=bool)
        mask[len(pool) - count :] = True
    else:
        raise ValueError(f"unknown validation split {method!r}: use 'stratified' or 'last'")

    return pool.select(~mask), pool.select(mask)
