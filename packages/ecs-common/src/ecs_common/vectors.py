"""Test-vector files that pass between ecs-train and ecs-deploy: input samples and expected integer outputs.

Both files are plain ``.npz`` archives (numpy only, no pickled objects):

* samples, ``samples.npz``: ``x`` uint8 ``[N, T, *input_shape]`` of 0/1
  events and, optionally, ``y`` int64 ``[N]`` labels.
* expected outputs, ``expected.npz``: what the training side's quantized
  forward pass computes for those samples, with no hardware delay (the state
  at step ``t`` is the response to the input of step ``t``):

  - ``output_states`` int64 ``[N, T, outputs]``: membrane words of the LI
    output layer in the state format, after the update of each step;
  - ``predictions`` int64 ``[N]``: class predicted with the readout;
  - ``latency`` int64: accelerator steps between an input step and the
    output state that responds to it (``ecs_common.neuron.network_latency``);
  - ``output_layer`` str and ``state_format`` str (``"Q(16,6)"``);
  - ``spike_counts_<layer>`` int64 ``[N, neurons]``: spikes of each firing
    layer (and of the input, layer ``input``) summed over the ``T`` steps;
  - optionally ``spikes_<layer>`` uint8 ``[N, T, neurons]``: full rasters.

One archive may hold both sets of keys (the golden vectors in ``tests/golden``
do). docs/test-vectors.md describes the format for readers outside Python.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecs_common.errors import VectorFileError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SAMPLES_FILE = "samples.npz"
EXPECTED_FILE = "expected.npz"

# Layer name under which the input events' counts are stored.
INPUT_LAYER = "input"

SPIKE_COUNTS_PREFIX = "spike_counts_"
SPIKES_PREFIX = "spikes_"


@dataclass
class Samples:
    """Input samples: ``x`` uint8 ``[N, T, *input_shape]`` of 0/1 and labels ``y`` int64 ``[N]`` or ``None``."""

    x: np.ndarray
    y: np.ndarray | None = None

    @property
    def num_samples(self) -> int:
        """Number of samples ``N``."""
        return int(self.x.shape[0])


@dataclass
class ExpectedOutputs:
    """The training side's integer outputs for a set of samples, without hardware delay.

    ``output_states`` is int64 ``[N, T, outputs]`` (state-format words),
    ``spike_counts`` maps layer names to int64 ``[N, neurons]`` counts over the
    ``T`` input steps, and ``spikes`` (optional) maps layer names to uint8
    rasters ``[N, T, neurons]``. ``latency`` is in accelerator steps.
    """

    output_states: np.ndarray
    predictions: np.ndarray
    latency: int
    output_layer: str
    state_format: str
    spike_counts: dict[str, np.ndarray] = field(default_factory=dict)
    spikes: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        """Number of samples ``N``."""
        return int(self.output_states.shape[0])

    @property
    def num_timesteps(self) -> int:
        """Input steps ``T`` covered by the expected states."""
        return int(self.output_states.shape[1])

    def check(self, source: str = "expected outputs") -> None:
        """Raise :class:`VectorFileError` unless shapes and dtypes follow the format."""
        states = self.output_states
        if states.ndim != 3 or not np.issubdtype(states.dtype, np.integer):
            raise VectorFileError(
                f"{source}: output_states must be integer words [N, T, outputs], got {states.dtype} {states.shape}"
            )
        count = states.shape[0]
        if self.predictions.shape != (count,):
            raise VectorFileError(
                f"{source}: predictions have shape {self.predictions.shape}, expected ({count},) for {count} samples"
            )
        if self.latency < 0:
            raise VectorFileError(f"{source}: latency {self.latency} is negative; it counts accelerator steps")
        for name, counts in self.spike_counts.items():
            if counts.ndim != 2 or counts.shape[0] != count:
                raise VectorFileError(
                    f"{source}: spike counts of layer {name!r} have shape {counts.shape}, expected [{count}, neurons]"
                )
        for name, raster in self.spikes.items():
            if raster.ndim != 3 or raster.shape[:2] != states.shape[:2]:
                raise VectorFileError(
                    f"{source}: spikes of layer {name!r} have shape {raster.shape}, expected "
                    f"[{count}, {states.shape[1]}, neurons]"
                )


def export_key(dataset: str | os.PathLike[str]) -> str:
    """Return the folder name of a dataset's test vectors.

    A plain name such as ``"digits"`` is its own key; a config path such as
    ``config/digits_feed_forward.yaml`` uses the file's stem. ecs-train's
    ``training_export`` and ecs-deploy's ``deployment_export`` both use this
    rule, so that they find the same folder from the same argument.
    """
    text = os.fspath(dataset)
    if not text.strip():
        raise VectorFileError("the dataset name is empty; give a name such as 'digits' or a config path")
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path.stem
    return text


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray], force: bool) -> Path:
    """Write ``arrays`` to ``path`` through a temporary file in the same folder, then rename it into place."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists already; pass force=True (--force) to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file readable by its owner only; give it the permissions of a plain new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with os.fdopen(descriptor, "wb") as handle:
            np.savez_compressed(handle, **dict(arrays))  # type: ignore[arg-type]
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.debug("wrote %s (%s)", path, ", ".join(arrays))
    return path


def sample_arrays(x: Any, y: Any = None) -> dict[str, np.ndarray]:
    """Return the ``x`` and ``y`` arrays of a samples file, checking that ``x`` holds only 0 and 1."""
    inputs = np.asarray(x)
    if inputs.ndim < 3:
        raise VectorFileError(f"samples must be [N, T, *input_shape], got shape {inputs.shape}")
    if inputs.size and not np.all((inputs == 0) | (inputs == 1)):
        raise VectorFileError("samples must hold 0/1 events (one per input neuron and step at most)")
    arrays: dict[str, np.ndarray] = {"x": inputs.astype(np.uint8)}
    if y is not None:
        labels = np.asarray(y).astype(np.int64).ravel()
        if labels.size != inputs.shape[0]:
            raise VectorFileError(f"{inputs.shape[0]} samples but {labels.size} labels; they must match one to one")
        arrays["y"] = labels
    return arrays


def expected_arrays(expected: ExpectedOutputs) -> dict[str, np.ndarray]:
    """Return the arrays of an expected-outputs file, checking the format first."""
    expected.check()
    arrays: dict[str, np.ndarray] = {
        "format_version": np.int64(FORMAT_VERSION),
        "output_states": np.asarray(expected.output_states, dtype=np.int64),
        "predictions": np.asarray(expected.predictions, dtype=np.int64),
        "latency": np.int64(expected.latency),
        "output_layer": np.str_(expected.output_layer),
        "state_format": np.str_(expected.state_format),
    }
    for name, counts in expected.spike_counts.items():
        arrays[SPIKE_COUNTS_PREFIX + name] = np.asarray(counts, dtype=np.int64)
    for name, raster in expected.spikes.items():
        arrays[SPIKES_PREFIX + name] = np.asarray(raster, dtype=np.uint8)
    return arrays


def save_samples(path: str | os.PathLike[str], x: Any, y: Any = None, force: bool = False) -> Path:
    """Write a samples file atomically. Raises ``FileExistsError`` when it exists and ``force`` is false."""
    return _write_npz(Path(path), sample_arrays(x, y), force)


def save_expected(path: str | os.PathLike[str], expected: ExpectedOutputs, force: bool = False) -> Path:
    """Write an expected-outputs file atomically. Raises ``FileExistsError`` when it exists and ``force`` is false."""
    return _write_npz(Path(path), expected_arrays(expected), force)


def save_vectors(path: str | os.PathLike[str], x: Any, y: Any, expected: ExpectedOutputs, force: bool = False) -> Path:
    """Write samples and expected outputs into one archive atomically (the golden-vector layout)."""
    return _write_npz(Path(path), {**sample_arrays(x, y), **expected_arrays(expected)}, force)


def _open(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise VectorFileError(f"test-vector file {path} not found; write it with ecs-train first")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise VectorFileError(f"cannot read test-vector file {path}: {error}") from error


def load_samples(path: str | os.PathLike[str]) -> Samples:
    """Read a samples file (or a combined archive). Raises :class:`VectorFileError` when ``x`` is missing."""
    arrays = _open(path)
    if "x" not in arrays:
        raise VectorFileError(f"{path} has no 'x' array of samples; it contains {sorted(arrays)}")
    checked = sample_arrays(arrays["x"], arrays.get("y"))
    return Samples(x=checked["x"], y=checked.get("y"))


def load_expected(path: str | os.PathLike[str]) -> ExpectedOutputs:
    """Read an expected-outputs file (or a combined archive) and check its format."""
    arrays = _open(path)
    missing = [name for name in ("output_states", "predictions", "latency") if name not in arrays]
    if missing:
        raise VectorFileError(
            f"{path} is missing {', '.join(missing)}, so it is not an expected-outputs file of ecs-train"
        )
    version = int(arrays.get("format_version", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise VectorFileError(
            f"{path} has test-vector format version {version}, newer than version {FORMAT_VERSION} that this "
            "ecs-common reads; upgrade ecs-common"
        )
    expected = ExpectedOutputs(
        output_states=arrays["output_states"].astype(np.int64),
        predictions=arrays["predictions"].astype(np.int64),
        latency=int(arrays["latency"]),
        output_layer=str(arrays.get("output_layer", "")),
        state_format=str(arrays.get("state_format", "")),
        spike_counts={
            name[len(SPIKE_COUNTS_PREFIX) :]: value.astype(np.int64)
            for name, value in arrays.items()
            if name.startswith(SPIKE_COUNTS_PREFIX)
        },
        spikes={
            name[len(SPIKES_PREFIX) :]: value.astype(np.uint8)
            for name, value in arrays.items()
            if name.startswith(SPIKES_PREFIX)
        },
    )
    expected.check(str(path))
    return expected
