"""Interface that every dataset reader implements for the data module."""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np

from ecs_train.data.splits import SampleList

Part = Literal["train", "test"]


class EventSource(Protocol):
    """Reader of one dataset that turns recordings into binary frames ``[T, *input_shape]``."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int

    def sample_lists(self) -> dict[Part, SampleList]:
        """Return the training pool (validation is carved out of it) and the test samples."""
        ...

    def cache_params(self, part: Part) -> dict[str, Any]:
        """Return every parameter and source identity that the conversion of ``part`` depends on."""
        ...

    def convert(self, part: Part, samples: SampleList) -> np.ndarray:
        """Convert samples of ``part`` into uint8 frames ``[N, T, *input_shape]`` of values 0 and 1."""
        ...
