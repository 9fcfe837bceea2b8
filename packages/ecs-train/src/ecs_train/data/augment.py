"""Random shifts of binned samples in time and space, used to augment training data."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def shift_frames(frames: torch.Tensor, shifts: Sequence[int], dims: Sequence[int]) -> torch.Tensor:
    """Shift a tensor by whole entries along ``dims``, setting vacated entries to 0 (no wrap-around).

    A positive shift moves content to higher indices. A shift as large as the dimension empties the tensor.
    """
    shifted = torch.zeros_like(frames)
    source: list[slice] = [slice(None)] * frames.dim()
    target: list[slice] = [slice(None)] * frames.dim()
    for dim, shift in zip(dims, shifts, strict=True):
        size = frames.shape[dim]
        if abs(shift) >= size:
            return shifted
        if shift >= 0:
            source[dim], target[dim] = slice(0, size - shift), slice(shift, size)
        else:
            source[dim], target[dim] = slice(-shift, size), slice(0, size + shift)
    shifted[tuple(target)] = frames[tuple(source)]
    return shifted


def random_shift(frames: torch.Tensor, max_shift: int, max_time_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift one sample by random whole amounts drawn uniformly from ``[-max, max]``.

    ``frames`` is ``[T, C, H, W]``, shifted in time, height and width with ``max_shift`` in pixels, or
    ``[T, N]``, shifted in time and channel index with ``max_shift`` in channels. ``max_time_shift`` is
    in time bins.
    """
    spatial_dims = (2, 3) if frames.dim() == 4 else (1,)
    limits = [max_time_shift] + [max_shift] * len(spatial_dims)
    shifts = [int(torch.randint(-limit, limit + 1, (1,), generator=generator)) for limit in limits]
    return shift_frames(frames, shifts, (0, *spatial_dims))
