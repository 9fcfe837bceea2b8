"""Test-set runs of a trained network: accuracy, and the integer output states and spikes the accelerator must match."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ecs_common.errors import ConfigError
from ecs_common.vectors import INPUT_LAYER, ExpectedOutputs
from ecs_train.models import SpikingNetwork

logger = logging.getLogger(__name__)

# Samples per forward pass when no batch size is given.
DEFAULT_BATCH_SIZE = 256


@dataclass
class NetworkRun:
    """Outputs of one network over a set of samples.

    ``scores`` float ``[N, classes]`` and ``predictions`` int64 ``[N]`` come
    from the network's readout. For a quantized network ``output_states``
    contains the LI output layer's state-format words, int64
    ``[N, T, classes]``, and ``spike_counts`` maps the input and every firing
    layer to int64 ``[N, neurons]`` counts over the ``T`` steps. ``spikes``
    contains uint8 rasters ``[N, T, neurons]`` when they were recorded.
    """

    predictions: np.ndarray
    labels: np.ndarray | None
    scores: np.ndarray
    output_states: np.ndarray | None = None
    spike_counts: dict[str, np.ndarray] = field(default_factory=dict)
    spikes: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        """Number of samples run."""
        return int(self.predictions.size)

    @property
    def accuracy(self) -> float | None:
        """Fraction of correct predictions, or ``None`` without labels."""
        if self.labels is None or not self.labels.size:
            return None
        return float(np.mean(self.predictions == self.labels))


def _layer_names(network: SpikingNetwork) -> tuple[list[str], str]:
    """Return the names of the firing layers, input to output, and the name of the LI output layer."""
    names = [name for name, _, _ in network.neuron_layers()]
    return names[:-1], names[-1]


def run_network(
    network: SpikingNetwork,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    record_spikes: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> NetworkRun:
    """Run ``network`` in its current mode (quantized or float) over samples ``x`` ``[N, T, *input_shape]``.

    ``progress(done, total)`` is called after every batch. A quantized network
    also returns its output state words and spike counts (see
    :class:`NetworkRun`); ``record_spikes`` keeps the full rasters too.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size} is invalid; use a positive number of samples")
    firing, output_layer = _layer_names(network)
    quantized = network.quantized
    device = next(network.parameters()).device
    total = int(x.shape[0])

    scores, words = [], []
    counts: dict[str, list[np.ndarray]] = {name: [] for name in [INPUT_LAYER, *firing]}
    rasters: dict[str, list[np.ndarray]] = {name: [] for name in firing}
    network.eval()
    with torch.no_grad():
        for start in range(0, total, batch_size):
            batch = np.asarray(x[start : start + batch_size])
            inputs = torch.as_tensor(batch, dtype=torch.float32, device=device)
            record = network.run(inputs, record_spikes=quantized)
            scores.append(network.scores(record.states).float().cpu().numpy())

            if quantized:
                if record.words is None:
                    raise RuntimeError(f"the quantized network returned no state words for layer {output_layer}")
                words.append(record.words.cpu().numpy().transpose(1, 0, 2).astype(np.int64))
                flat_input = batch.reshape(batch.shape[0], batch.shape[1], -1)
                counts[INPUT_LAYER].append(flat_input.sum(axis=1, dtype=np.int64))
                for name, spikes in zip(firing, record.spikes, strict=True):
                    # [T, B, *shape] -> [B, T, neurons]
                    flat = spikes.cpu().numpy().reshape(spikes.shape[0], spikes.shape[1], -1).transpose(1, 0, 2)
                    counts[name].append(flat.sum(axis=1).astype(np.int64))
                    if record_spikes:
                        rasters[name].append(flat.astype(np.uint8))
            if progress is not None:
                progress(min(start + batch_size, total), total)

    all_scores = np.concatenate(scores) if scores else np.zeros((0, network.num_classes), dtype=np.float32)
    labels = None if y is None else np.asarray(y).astype(np.int64).ravel()
    run = NetworkRun(predictions=all_scores.argmax(axis=1).astype(np.int64), labels=labels, scores=all_scores)
    if quantized and words:
        run.output_states = np.concatenate(words)
        run.spike_counts = {name: np.concatenate(parts) for name, parts in counts.items()}
        if record_spikes:
            run.spikes = {name: np.concatenate(parts) for name, parts in rasters.items()}
    return run


def float_run(
    network: SpikingNetwork,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> NetworkRun:
    """Run the float forward of ``network`` (same weights, norse cells) even when it is quantized."""
    with network.float_forward():
        return run_network(network, x, y, batch_size=batch_size, progress=progress)


def expected_outputs(network: SpikingNetwork, run: NetworkRun) -> ExpectedOutputs:
    """Return the expected outputs that ecs-deploy must reproduce, from a quantized run of ``network``."""
    if run.output_states is None:
        raise ConfigError(
            "the run has no integer output states because the network was not quantized; quantize it first "
            "(ecs_train.quantization.prepare_quantized) and run it again"
        )
    quant_cfg = network.quant_cfg
    _, output_layer = _layer_names(network)
    return ExpectedOutputs(
        output_states=run.output_states,
        predictions=run.predictions,
        latency=network.latency(),
        output_layer=output_layer,
        state_format=str(quant_cfg.state_format) if quant_cfg is not None else "",
        spike_counts=dict(run.spike_counts),
        spikes=dict(run.spikes),
    )
