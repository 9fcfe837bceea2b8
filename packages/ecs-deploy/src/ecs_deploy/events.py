"""Input events and sample files: dense spike frames to event lists and back, and `.npy`/`.npz` loading.

An input event list is a numpy structured array of :data:`EVENT_DTYPE`, one
record per spike, sorted by sample, then timestep, then input neuron:

* ``timestep``: input step of the spike (0-based)
* ``sample``: index of the sample within the batch (0-based)
* ``neuron``: flat index of the input neuron, in C order over the input shape
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ecs_deploy.errors import InputError

logger = logging.getLogger(__name__)

EVENT_FIELDS: tuple[str, ...] = ("timestep", "sample", "neuron")
EVENT_DTYPE = np.dtype([(name, np.int64) for name in EVENT_FIELDS])

# Array names accepted in an .npz sample file, in order of preference.
_INPUT_KEYS = ("x", "inputs", "data", "samples", "spikes")
_LABEL_KEYS = ("y", "labels", "targets", "label")


SAMPLE_FORMAT = (
    "expected an .npz file with x [N, T, *input_shape] (values 0/1) and optional integer labels y [N], "
    "or an .npy file with x only, written by numpy.savez or numpy.save"
)


def check_binary(values: np.ndarray, what: str) -> None:
    """Raise :class:`InputError` unless every value is 0 or 1 (one event per neuron and step at most)."""
    if values.dtype == bool or values.size == 0:
        return
    if values.dtype.kind == "u":
        bad = values.max() > 1
    elif np.issubdtype(values.dtype, np.integer):
        bad = (values.min() < 0) or (values.max() > 1)
    else:
        bad = np.count_nonzero(values) != np.count_nonzero(values == 1)
    if bad:
        offending = values[(values != 0) & (values != 1)].ravel()[0].item()
        raise InputError(
            f"{what} must hold 0/1 spikes (one event per input neuron and step at most), found {offending!r}; "
            "binarize the input (for example x > 0) before simulating"
        )


def _flat_frames(dense: np.ndarray, input_shape: tuple[int, ...], leading: int, what: str) -> np.ndarray:
    """Reshape ``[*leading dims, *input_shape]`` or ``[*leading dims, N]`` to ``[*leading dims, N]``."""
    num_inputs = int(np.prod(input_shape, dtype=np.int64))
    tail = tuple(dense.shape[leading:])
    if tail != tuple(input_shape) and tail != (num_inputs,):
        raise InputError(
            f"{what} has shape {dense.shape}: after the first {leading} dimension(s) it must be the input shape "
            f"{tuple(input_shape)} or ({num_inputs},), got {tail}"
        )
    return dense.reshape(*dense.shape[:leading], num_inputs)


def generate_input_events(dense: Any, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Turn dense spike frames ``[T, B, *input_shape]`` or ``[T, B, N]`` into an event list.

    Without ``input_shape`` the frames must be ``[T, B, N]`` already. Values
    must be 0 or 1. Returns a structured array of :data:`EVENT_DTYPE` sorted
    by sample, timestep and neuron.
    """
    dense = np.asarray(dense)
    if dense.ndim < 3:
        raise InputError(f"dense input must be [T, B, ...] with at least 3 dimensions, got shape {dense.shape}")
    flat = _flat_frames(dense, input_shape or dense.shape[2:], 2, "dense input")
    check_binary(flat, "dense input")
    timestep, sample, neuron = np.nonzero(flat)
    events = np.empty(timestep.size, dtype=EVENT_DTYPE)
    events["timestep"], events["sample"], events["neuron"] = timestep, sample, neuron
    return np.sort(events, order=("sample", "timestep", "neuron"))


def as_events(events: Any) -> np.ndarray:
    """Return an event list from a structured array or from rows of ``(timestep, sample, neuron)``.

    Rows of ``(timestep, neuron)`` are accepted too and belong to sample 0.
    """
    if isinstance(events, np.ndarray) and events.dtype.names is not None:
        missing = [name for name in EVENT_FIELDS if name not in events.dtype.names]
        if missing:
            raise InputError(f"event array lacks field(s) {missing}; expected fields {EVENT_FIELDS}")
        result = np.empty(events.shape[0], dtype=EVENT_DTYPE)
        for name in EVENT_FIELDS:
            result[name] = events[name]
    else:
        rows = np.asarray(events if len(events) else np.zeros((0, 3)), dtype=np.int64)
        if rows.ndim != 2 or rows.shape[1] not in (2, 3):
            raise InputError(
                f"events must be rows of (timestep, sample, neuron) or (timestep, neuron), got shape {rows.shape}"
            )
        result = np.empty(rows.shape[0], dtype=EVENT_DTYPE)
        result["timestep"] = rows[:, 0]
        result["sample"] = rows[:, 1] if rows.shape[1] == 3 else 0
        result["neuron"] = rows[:, -1]
    if result.size and (result["timestep"].min() < 0 or result["sample"].min() < 0 or result["neuron"].min() < 0):
        raise InputError("event timesteps, samples and neuron indices must be non-negative")
    return result


def events_to_dense(events: Any, num_timesteps: int, num_samples: int, num_inputs: int) -> np.ndarray:
    """Return binary frames ``[T, B, N]`` (``uint8``) from an event list; repeated events are rejected."""
    events = as_events(events)
    if events.size:
        for field, limit in (("timestep", num_timesteps), ("sample", num_samples), ("neuron", num_inputs)):
            if events[field].max() >= limit:
                raise InputError(f"event {field} {int(events[field].max())} is out of range; expected below {limit}")
    dense = np.zeros((num_timesteps, num_samples, num_inputs), dtype=np.uint8)
    np.add.at(dense, (events["timestep"], events["sample"], events["neuron"]), 1)
    check_binary(dense, "the event list")
    return dense


def load_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Load test vectors written by ecs-train: inputs ``x`` ``[N, T, *input_shape]`` and labels ``y`` or ``None``.

    A ``.npz`` file contains arrays named ``x`` and ``y`` (also accepted:
    ``inputs``/``labels``, ``data``/``targets``). A ``.npy`` file contains
    only the inputs. Raises :class:`InputError` naming the file and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"sample file {str(path)!r} not found; check the path")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        # numpy's own message for such files suggests allow_pickle=True, which would run code from the file.
        raise InputError(f"sample file {str(path)!r} is not a valid .npy/.npz sample file; {SAMPLE_FORMAT}") from error

    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        names = list(loaded.files)
        input_key = next((key for key in _INPUT_KEYS if key in names), None)
        if input_key is None:
            raise InputError(
                f"sample file {str(path)!r} has arrays {names} but no inputs; name them 'x' (and the labels 'y')"
            )
        label_key = next((key for key in _LABEL_KEYS if key in names), None)
        inputs = loaded[input_key]
        labels = loaded[label_key] if label_key is not None else None
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if labels.size != inputs.shape[0]:
            raise InputError(
                f"sample file {str(path)!r} has {inputs.shape[0]} input samples but {labels.size} labels; "
                "they must match one to one"
            )
    return inputs, labels


def check_samples(
    inputs: np.ndarray,
    labels: np.ndarray | None,
    path: str | Path,
    input_shape: tuple[int, ...],
    num_outputs: int,
) -> None:
    """Check samples loaded from ``path`` against a network before simulating them.

    Raises :class:`InputError` naming the file when it contains no samples,
    when the inputs are not ``[N, T, *input_shape]`` (or ``[N, T, N_in]``), or
    when a label is not an integer in ``[0, num_outputs)``.
    """
    name = str(path)
    input_shape = tuple(int(n) for n in input_shape)
    num_inputs = int(np.prod(input_shape, dtype=np.int64))
    if inputs.ndim < 3 or (tuple(inputs.shape[2:]) != input_shape and tuple(inputs.shape[2:]) != (num_inputs,)):
        raise InputError(
            f"sample file {name!r} has inputs of shape {tuple(inputs.shape)}, but the network expects "
            f"[N, T, *input_shape] with input_shape {input_shape} (or [N, T, {num_inputs}])"
        )
    if inputs.shape[0] == 0:
        raise InputError(f"sample file {name!r} contains 0 samples; {SAMPLE_FORMAT}")
    if labels is None:
        return

    valid = np.zeros(labels.shape, dtype=bool)
    if labels.dtype.kind in "iub":
        valid = (labels >= 0) & (labels < num_outputs)
    elif labels.dtype.kind == "f":
        valid = (labels >= 0) & (labels < num_outputs) & (labels == np.floor(labels))
    bad = np.flatnonzero(~valid)
    if bad.size:
        index = int(bad[0])
        raise InputError(
            f"sample file {name!r} has label {labels[index].item()!r} at sample {index}, but labels must be "
            f"integers from 0 to {num_outputs - 1} for a network with {num_outputs} outputs"
        )
