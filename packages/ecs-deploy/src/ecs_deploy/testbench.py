"""Test-bench files for the FPGA: per sample, its input events and the output states the accelerator must produce.

Each sample becomes one ``$readmemh`` file of 32-bit words (8 hex digits per
line, ``//`` comments allowed by ``$readmemh``):

* word 0: format version (:data:`FORMAT_VERSION`);
* word 1: ``E``, the number of input events;
* word 2: ``S``, the number of accelerator steps with expected outputs;
* word 3: ``C``, the number of output neurons;
* words ``4 .. 4+E-1``: input events, sorted by step then neuron, each
  ``timestep << 16 | neuron`` (both unsigned 16-bit; ``neuron`` is the flat
  input index in C order over the input shape);
* words ``4+E .. 4+E+S*C-1``: expected output states, step-major
  (word ``4 + E + s*C + c`` is output neuron ``c`` after step ``s``), as
  state-format words sign-extended to 32-bit two's complement.

Step ``s`` counts accelerator steps from the first input step, so the first
``latency`` steps show the all-zero initial state. docs/test-vectors.md
describes the folder that ``ecs_deploy.export.deployment_export`` writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecs_deploy.atomic import write_text
from ecs_deploy.errors import InputError

logger = logging.getLogger(__name__)

FORMAT_NAME = "ecs-testbench"
FORMAT_VERSION = 1
WORD_BITS = 32
HEADER_WORDS = 4
FIELD_BITS = 16
INDEX_FILE = "index.json"


@dataclass
class BenchSample:
    """One decoded test-bench file: events ``[E, 2]`` as (timestep, neuron) and expected states ``[S, C]``."""

    events: np.ndarray
    expected_states: np.ndarray


def _hex(words: np.ndarray) -> list[str]:
    """Format int64 words as 8-digit two's complement hex."""
    masked = np.asarray(words, dtype=np.int64) & ((1 << WORD_BITS) - 1)
    return [f"{int(word):08x}" for word in masked]


def sample_words(frames: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Return the words of one sample's file from binary frames ``[T, *input_shape]`` and states ``[S, C]``."""
    flat = np.asarray(frames).reshape(frames.shape[0], -1)
    timestep, neuron = np.nonzero(flat)
    limit = 1 << FIELD_BITS
    if flat.shape[0] > limit or flat.shape[1] > limit:
        raise InputError(
            f"samples of {flat.shape[0]} steps and {flat.shape[1]} input neurons exceed the test-bench event word, "
            f"which holds steps and neurons below {limit}"
        )
    states = np.asarray(states, dtype=np.int64)
    if states.size and (states.min() < -(1 << (WORD_BITS - 1)) or states.max() >= 1 << (WORD_BITS - 1)):
        raise InputError(f"output states exceed {WORD_BITS}-bit words")
    header = np.array([FORMAT_VERSION, timestep.size, states.shape[0], states.shape[1]], dtype=np.int64)
    events = (timestep.astype(np.int64) << FIELD_BITS) | neuron.astype(np.int64)
    return np.concatenate([header, events, states.ravel()])


def write_sample_file(
    path: Path, frames: np.ndarray, states: np.ndarray, comment: str, force: bool = False
) -> tuple[int, str]:
    """Write one sample's test-bench file atomically; return its event count and sha256."""
    words = sample_words(frames, states)
    text = f"// {comment}\n" + "\n".join(_hex(words)) + "\n"
    write_text(path, text, force=force)
    return int(words[1]), hashlib.sha256(text.encode("ascii")).hexdigest()


def read_sample_file(path: str | Path) -> BenchSample:
    """Decode a test-bench file written by :func:`write_sample_file`."""
    lines = [line.split("//")[0].strip() for line in Path(path).read_text().splitlines()]
    words = np.array([int(line, 16) for line in lines if line], dtype=np.int64)
    if words.size < HEADER_WORDS or words[0] != FORMAT_VERSION:
        raise InputError(f"{path} is not a version-{FORMAT_VERSION} test-bench file")
    count, steps, outputs = (int(value) for value in words[1:HEADER_WORDS])
    events = words[HEADER_WORDS : HEADER_WORDS + count]
    states = words[HEADER_WORDS + count : HEADER_WORDS + count + steps * outputs]
    if states.size != steps * outputs:
        raise InputError(f"{path} contains {states.size} state words, but its header gives {steps * outputs}")
    signed = np.where(states >= 1 << (WORD_BITS - 1), states - (1 << WORD_BITS), states)
    pairs = np.stack([events >> FIELD_BITS, events & ((1 << FIELD_BITS) - 1)], axis=1)
    return BenchSample(events=pairs, expected_states=signed.reshape(steps, outputs))


def write_testbench(
    folder: str | Path,
    inputs: np.ndarray,
    states: np.ndarray,
    *,
    labels: np.ndarray | None,
    predictions: np.ndarray,
    description: dict[str, Any],
    force: bool = False,
) -> Path:
    """Write one file per sample plus ``index.json`` into ``folder``; return the index path.

    ``inputs`` is ``[N, T, *input_shape]`` binary, ``states`` the simulated
    output states ``[N, S, C]``. ``description`` goes into the index as it is
    (latency, state format, comparison with the training side).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(inputs.shape[0]):
        name = f"sample_{index:04d}.hex"
        label = None if labels is None else int(labels[index])
        comment = f"sample {index}, label {label}, predicted {int(predictions[index])}"
        count, digest = write_sample_file(folder / name, inputs[index], states[index], comment, force=force)
        entries.append(
            {"file": name, "label": label, "prediction": int(predictions[index]), "events": count, "sha256": digest}
        )
    index_data = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "word_bits": WORD_BITS,
        "header_words": ["format_version", "num_events", "num_steps", "num_outputs"],
        "event_word": {"timestep": [31, 16], "neuron": [15, 0]},
        **description,
        "samples": entries,
    }
    return write_text(folder / INDEX_FILE, json.dumps(index_data, indent=2) + "\n", force=force)
