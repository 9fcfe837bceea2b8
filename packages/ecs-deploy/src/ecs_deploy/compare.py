"""Comparison of the bit-accurate simulation with the training side's expected integer outputs.

ecs-train writes, for a set of samples, the output states and spike counts
of its quantized forward pass without hardware delay
(:mod:`ecs_common.vectors`). The accelerator responds to input step ``t`` at step
``t + latency``, so the simulation runs ``T + latency`` steps and its output
states from step ``latency`` on are compared with the expected ones. Spike
counts of layer ``l`` are taken over its aligned window ``[D_l, D_l + T)``,
where ``D_l`` is the layer's delay behind the input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ecs_common.vectors import INPUT_LAYER, ExpectedOutputs
from ecs_deploy.errors import InputError
from ecs_deploy.network import Evaluation, Network

logger = logging.getLogger(__name__)


@dataclass
class Comparison:
    """How far the simulated outputs are from the expected ones.

    Errors are in state-format LSBs (integer words): ``max_abs_error`` is the
    largest absolute difference and ``mse`` the mean squared difference over
    all ``num_samples * num_timesteps * num_outputs`` output values.
    ``spike_count_mismatches`` counts, per layer, the (sample, neuron) pairs
    whose spike counts differ; ``missing_layers`` lists expected layers that
    the simulated network lacks.
    """

    num_samples: int
    num_timesteps: int
    num_outputs: int
    latency: int
    expected_latency: int
    output_mismatches: int
    mismatched_samples: int
    max_abs_error: int
    mse: float
    prediction_mismatches: int
    first_mismatch: list[int] | None = None
    spike_count_mismatches: dict[str, int] = field(default_factory=dict)
    missing_layers: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """Whether outputs, predictions, spike counts and latency all equal the expected ones."""
        return (
            self.output_mismatches == 0
            and self.prediction_mismatches == 0
            and not any(self.spike_count_mismatches.values())
            and not self.missing_layers
            and self.latency == self.expected_latency
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as JSON-compatible values, with ``exact`` added."""
        return {**asdict(self), "exact": self.exact}

    def describe(self) -> str:
        """Return one line per finding: output states, predictions, spike counts and latency."""
        values = self.num_samples * self.num_timesteps * self.num_outputs
        lines = [
            f"output states: {self.output_mismatches} of {values} values differ in {self.mismatched_samples} of "
            f"{self.num_samples} samples (max abs error {self.max_abs_error} LSB, MSE {self.mse:.6g} LSB^2)"
        ]
        if self.first_mismatch is not None:
            sample, step, neuron = self.first_mismatch
            lines.append(f"first difference: sample {sample}, step {step}, output neuron {neuron}")
        lines.append(f"predictions: {self.prediction_mismatches} of {self.num_samples} differ")
        for name, count in self.spike_count_mismatches.items():
            lines.append(f"spike counts of {name}: {count} (sample, neuron) pairs differ")
        if self.missing_layers:
            lines.append(f"layers expected but not in the network: {', '.join(self.missing_layers)}")
        if self.latency != self.expected_latency:
            lines.append(f"latency: the network answers after {self.latency} steps, expected {self.expected_latency}")
        return "\n".join(lines)


def compare_states(
    aligned: np.ndarray,
    expected: ExpectedOutputs,
    latency: int,
    predictions: np.ndarray,
) -> Comparison:
    """Compare aligned simulated states ``[N, T, outputs]`` and predictions with the expected ones."""
    reference = expected.output_states
    if aligned.shape != reference.shape:
        raise InputError(
            f"simulated output states have shape {aligned.shape} after alignment, but the expected states have "
            f"{reference.shape} [samples, steps, outputs]; the files do not belong to this network"
        )
    difference = aligned.astype(np.int64) - reference.astype(np.int64)
    wrong = difference != 0
    first = np.argwhere(wrong)
    return Comparison(
        num_samples=int(reference.shape[0]),
        num_timesteps=int(reference.shape[1]),
        num_outputs=int(reference.shape[2]),
        latency=int(latency),
        expected_latency=int(expected.latency),
        output_mismatches=int(wrong.sum()),
        mismatched_samples=int(wrong.reshape(wrong.shape[0], -1).any(axis=1).sum()),
        max_abs_error=int(np.abs(difference).max()) if difference.size else 0,
        mse=float(np.mean(difference.astype(np.float64) ** 2)) if difference.size else 0.0,
        prediction_mismatches=int(np.sum(np.asarray(predictions) != expected.predictions)),
        first_mismatch=[int(index) for index in first[0]] if first.size else None,
    )


def simulate_and_compare(
    network: Network,
    inputs: np.ndarray,
    expected: ExpectedOutputs,
    labels: np.ndarray | None = None,
    *,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Evaluation, Comparison]:
    """Simulate samples ``[N, T, *input_shape]`` for ``T + latency`` steps and compare with ``expected``.

    Returns the evaluation (predictions, full output states ``[N, T + latency,
    outputs]`` and spike counts over the whole run) and the comparison.
    ``progress(done, total)`` is called after every batch.
    """
    inputs = np.asarray(inputs)
    if inputs.ndim < 3:
        raise InputError(f"samples must be [N, T, *input_shape], got shape {inputs.shape}")
    count, steps = int(inputs.shape[0]), int(inputs.shape[1])
    if (count, steps) != expected.output_states.shape[:2]:
        raise InputError(
            f"the samples are {count} x {steps} steps but the expected outputs cover "
            f"{expected.num_samples} x {expected.num_timesteps}; use the files written together by ecs-train"
        )
    if batch_size <= 0:
        raise InputError(f"batch_size must be positive, got {batch_size}")

    model = network.model
    latency = network.latency
    delays = model.layer_delays()
    relay = model.input_layer.name
    names = {name: relay if name == INPUT_LAYER else name for name in expected.spike_counts}
    missing = sorted(name for name, layer in names.items() if layer not in delays)

    predictions: list[np.ndarray] = []
    states: list[np.ndarray] = []
    aligned_counts: dict[str, list[np.ndarray]] = {name: [] for name in names if name not in missing}
    run_counts: dict[str, list[np.ndarray]] = {}
    for start in range(0, count, batch_size):
        result = network.simulate_batch(inputs[start : start + batch_size], steps + latency, record_spikes=True)
        assert result.spikes is not None
        predictions.append(np.asarray(network.predict(result)))
        states.append(result.output_states.transpose(1, 0, 2))
        for name, parts in aligned_counts.items():
            layer = names[name]
            window = result.spikes[layer][delays[layer] : delays[layer] + steps]
            parts.append(window.sum(axis=0, dtype=np.int64))
        for name, value in result.spike_counts.items():
            run_counts.setdefault(name, []).append(value)
        if progress is not None:
            progress(min(start + batch_size, count), count)

    all_states = np.concatenate(states)
    all_predictions = np.concatenate(predictions).astype(np.int64)
    comparison = compare_states(all_states[:, latency : latency + steps], expected, latency, all_predictions)
    comparison.missing_layers = missing
    for name, parts in aligned_counts.items():
        simulated = np.concatenate(parts)
        reference = expected.spike_counts[name]
        if simulated.shape != reference.shape:
            raise InputError(
                f"layer {name!r} has {simulated.shape[1]} neurons in the network but {reference.shape[1]} in the "
                "expected spike counts; the files do not belong to this network"
            )
        comparison.spike_count_mismatches[name] = int(np.sum(simulated != reference))
    if not comparison.exact:
        logger.warning("simulation differs from the expected outputs: %s", comparison.describe().replace("\n", "; "))

    evaluation = Evaluation(
        predictions=all_predictions,
        labels=None if labels is None else np.asarray(labels).astype(np.int64).ravel(),
        output_states=all_states,
        spike_counts={name: np.concatenate(parts) for name, parts in run_counts.items()},
        latency=latency,
    )
    return evaluation, comparison
