"""Write the golden test vectors in tests/golden: small quantized networks, their NIR files and expected outputs.

Each case builds a small network with ecs-train, sets its weights to integer
weight words drawn from a seeded numpy generator, quantizes it, runs seeded
random binary input through the quantized forward pass and writes:

* ``tests/golden/<case>.nir``: the network, exported by ecs-train;
* ``tests/golden/<case>.npz``: the input ``x`` ``[N, T, *input_shape]`` and the
  expected outputs of :mod:`ecs_common.vectors`, including every firing
  layer's full spike raster (``spikes_<layer>``).

tests/ecs_deploy/test_golden.py checks that ecs-deploy reproduces these files
without torch, and tests/ecs_train/test_golden.py that ecs-train still
computes them, so a change on either side breaks a test. After an intended
change of the numeric rules, regenerate the files from the repository root:

    python scripts/make_golden.py --force
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecs_common.formats import QuantConfig
from ecs_common.metadata import ECSMetadata, Provenance
from ecs_common.vectors import ExpectedOutputs, save_vectors
from ecs_train.config import NetworkConfig
from ecs_train.models import SpikingNetwork, build_model
from ecs_train.nir_export import to_nir_graph, write_graph
from ecs_train.quantization import quantize_model
from ecs_train.vectors import expected_outputs, run_network

logger = logging.getLogger(__name__)

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "tests" / "golden"

NUM_CLASSES = 10
NUM_SAMPLES = 8
NUM_TIMESTEPS = 15
INPUT_SHAPE = (2, 4, 4)
# Share of input neurons that emit an event at each step.
INPUT_DENSITY = 0.3


@dataclass(frozen=True)
class GoldenCase:
    """One golden network: its ecs-train network config, weight-word range and random seed."""

    name: str
    network: dict[str, Any]
    seed: int
    # Weight words are drawn uniformly from [low, high), a range biased to positive words so that hidden layers spike.
    word_range: tuple[int, int] = (-24, 40)
    quant: dict[str, Any] = field(default_factory=dict)


CASES = (
    GoldenCase(
        "feed_forward",
        {
            "architecture": "feed_forward",
            "hidden_sizes": [12],
            "neuron_type": "lif",
            "tau_mem": 0.005,
            "output_tau_mem": 0.01,
            "v_threshold": 1.0,
            "v_reset": -0.25,
            "v_leak": 0.05,
            "reset_mode": "to_reset",
            "dt": 0.001,
            "readout": "last",
        },
        seed=1,
    ),
    GoldenCase(
        "conv",
        {
            "architecture": "conv",
            "conv_channels": [3],
            "kernel_size": 3,
            "pool_size": 2,
            "hidden_sizes": [],
            "neuron_type": "lif",
            "tau_mem": 0.004,
            "output_tau_mem": 0.008,
            "v_threshold": 0.8,
            "v_reset": 0.0,
            "reset_mode": "subtract",
            "dt": 0.001,
            "readout": "max",
        },
        seed=2,
        word_range=(-16, 56),
    ),
    GoldenCase(
        "cubalif",
        {
            "architecture": "feed_forward",
            "hidden_sizes": [12],
            "neuron_type": "cubalif",
            "tau_mem": 0.005,
            "tau_syn": 0.004,
            "output_tau_mem": 0.01,
            "v_threshold": 1.0,
            "v_reset": 0.0,
            "reset_mode": "to_reset",
            "dt": 0.001,
            "readout": "mean",
        },
        seed=3,
        word_range=(-20, 32),
    ),
)


def case_named(name: str) -> GoldenCase:
    """Return the golden case called ``name``."""
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"no golden case {name!r}; cases: {', '.join(case.name for case in CASES)}")


def quant_config(case: GoldenCase) -> QuantConfig:
    """Return the case's quantization formats (the defaults unless the case sets some)."""
    return QuantConfig(**case.quant)


def build_float_network(case: GoldenCase) -> SpikingNetwork:
    """Build the case's network with ecs-train, with PyTorch's random weights still in place."""
    return build_model(NetworkConfig(**case.network), INPUT_SHAPE, NUM_CLASSES)


def weight_layers(network: SpikingNetwork) -> list[tuple[str, torch.nn.Linear | torch.nn.Conv2d]]:
    """Return ``(name, module)`` of every Linear and Conv2d layer, named like the NIR nodes (``layers.1``)."""
    return [
        (f"layers.{index}", layer)
        for index, layer in enumerate(network.layers)
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d))
    ]


def seeded_weights(case: GoldenCase, network: SpikingNetwork) -> dict[str, np.ndarray]:
    """Draw every weight as an integer word times the weight LSB from the case's seeded generator."""
    rng = np.random.default_rng(case.seed)
    lsb = quant_config(case).weight_format.lsb
    low, high = case.word_range
    return {
        name: rng.integers(low, high, size=tuple(module.weight.shape)).astype(np.float64) * lsb
        for name, module in weight_layers(network)
    }


def seeded_inputs(case: GoldenCase) -> np.ndarray:
    """Draw the case's binary input ``[N, T, *INPUT_SHAPE]`` (uint8) from a generator seeded after the weights."""
    rng = np.random.default_rng(case.seed + 1000)
    return (rng.random((NUM_SAMPLES, NUM_TIMESTEPS, *INPUT_SHAPE)) < INPUT_DENSITY).astype(np.uint8)


def quantized_network(case: GoldenCase, weights: dict[str, np.ndarray]) -> SpikingNetwork:
    """Build the case's network with the given weights (by NIR node name) and switch it to the quantized forward."""
    network = build_float_network(case)
    layers = dict(weight_layers(network))
    if sorted(layers) != sorted(weights):
        raise ValueError(f"weights for layers {sorted(weights)} do not match the network's {sorted(layers)}")
    with torch.no_grad():
        for name, module in layers.items():
            module.weight.copy_(torch.as_tensor(weights[name], dtype=module.weight.dtype))
    quantize_model(network, quant_config(case))
    return network


def expected_for(network: SpikingNetwork, x: np.ndarray) -> ExpectedOutputs:
    """Run the quantized forward pass on ``x`` and return the expected outputs with full spike rasters."""
    return expected_outputs(network, run_network(network, x, record_spikes=True))


def write_case(case: GoldenCase, folder: Path, force: bool) -> ExpectedOutputs:
    """Write ``<case>.nir`` and ``<case>.npz`` into ``folder`` and return the expected outputs."""
    float_network = build_float_network(case)
    network = quantized_network(case, seeded_weights(case, float_network))
    x = seeded_inputs(case)
    expected = expected_for(network, x)

    network_cfg = NetworkConfig(**case.network)
    metadata = ECSMetadata(
        quant_cfg=quant_config(case),
        dt=network_cfg.dt,
        reset_mode=network_cfg.reset_mode,
        readout=network_cfg.readout,
        provenance=Provenance(dataset=f"golden-{case.name}", producer="scripts/make_golden.py"),
    )
    graph = to_nir_graph(network, metadata, torch.zeros(INPUT_SHAPE))
    write_graph(graph, folder / f"{case.name}.nir", overwrite=force)
    save_vectors(folder / f"{case.name}.npz", x, None, expected, force=force)
    return expected


def describe(case: GoldenCase, expected: ExpectedOutputs) -> str:
    """Return one line with the case's latency and spike rates, to check that every layer is active."""
    rates = ", ".join(f"{name} {raster.mean():.2f}" for name, raster in expected.spikes.items())
    states = expected.output_states
    return (
        f"{case.name}: latency {expected.latency}, spikes per neuron and step: {rates}; output states "
        f"{states.min()}..{states.max()}"
    )


def main(argv: list[str] | None = None) -> int:
    """Write every golden case; refuse to overwrite existing files without --force."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=GOLDEN_DIR, help="folder for the golden files")
    parser.add_argument("--force", action="store_true", help="overwrite existing golden files")
    parser.add_argument("--case", action="append", help="write only this case (repeatable)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    arguments.out.mkdir(parents=True, exist_ok=True)
    cases = [case_named(name) for name in arguments.case] if arguments.case else list(CASES)
    for case in cases:
        try:
            expected = write_case(case, arguments.out, arguments.force)
        except FileExistsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(describe(case, expected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
