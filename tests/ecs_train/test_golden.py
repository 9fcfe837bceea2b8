"""ecs-train still computes the committed golden vectors that ecs-deploy is tested against.

The networks are rebuilt with ecs-train from the weights stored in the
committed NIR files and run on the committed input. Their output states and
spike rasters must equal the committed ones. scripts/make_golden.py wrote the
files; its seeded weights must still give the committed NIR weights.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nir
import numpy as np
import pytest

from ecs_common.metadata import read_metadata
from ecs_common.vectors import load_expected, load_samples

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN_DIR = ROOT / "tests" / "golden"
SCRIPT = ROOT / "scripts" / "make_golden.py"


def load_script():
    """Import scripts/make_golden.py, which is not part of a package."""
    spec = importlib.util.spec_from_file_location("make_golden", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_golden", module)
    spec.loader.exec_module(module)
    return module


make_golden = load_script()
CASES = [case.name for case in make_golden.CASES]


def committed_weights(case: str) -> dict[str, np.ndarray]:
    """Return the weights of every Linear, Affine and Conv2d node of the committed NIR file."""
    graph = nir.read(GOLDEN_DIR / f"{case}.nir")
    return {
        name: np.asarray(node.weight, dtype=np.float64)
        for name, node in graph.nodes.items()
        if isinstance(node, (nir.Linear, nir.Affine, nir.Conv2d))
    }


@pytest.mark.parametrize("case", CASES)
def test_golden_outputs_recomputed(case):
    spec = make_golden.case_named(case)
    network = make_golden.quantized_network(spec, committed_weights(case))
    x = load_samples(GOLDEN_DIR / f"{case}.npz").x
    committed = load_expected(GOLDEN_DIR / f"{case}.npz")

    recomputed = make_golden.expected_for(network, x)

    assert recomputed.latency == committed.latency
    np.testing.assert_array_equal(recomputed.output_states, committed.output_states)
    np.testing.assert_array_equal(recomputed.predictions, committed.predictions)
    assert sorted(recomputed.spikes) == sorted(committed.spikes)
    for name, raster in committed.spikes.items():
        np.testing.assert_array_equal(recomputed.spikes[name], raster, err_msg=f"spikes of layer {name}")
    for name, counts in committed.spike_counts.items():
        np.testing.assert_array_equal(recomputed.spike_counts[name], counts, err_msg=f"spike counts of {name}")


@pytest.mark.parametrize("case", CASES)
def test_golden_layers_all_active(case):
    committed = load_expected(GOLDEN_DIR / f"{case}.npz")

    for name, raster in committed.spikes.items():
        rate = raster.mean()
        assert 0.02 < rate < 0.8, f"layer {name} spikes at rate {rate:.3f}, too sparse or too dense to test much"
    assert np.ptp(committed.output_states) > 0


@pytest.mark.parametrize("case", CASES)
def test_golden_script_reproduces_weights(case):
    spec = make_golden.case_named(case)
    seeded = make_golden.seeded_weights(spec, make_golden.build_float_network(spec))
    committed = committed_weights(case)

    assert sorted(seeded) == sorted(committed)
    for name, weight in committed.items():
        np.testing.assert_array_equal(seeded[name].reshape(weight.shape), weight, err_msg=f"weights of {name}")
    np.testing.assert_array_equal(make_golden.seeded_inputs(spec), load_samples(GOLDEN_DIR / f"{case}.npz").x)


@pytest.mark.parametrize("case", CASES)
def test_golden_metadata_matches_case(case):
    spec = make_golden.case_named(case)
    metadata = read_metadata(nir.read(GOLDEN_DIR / f"{case}.nir"))

    assert metadata.dt == spec.network["dt"]
    assert metadata.reset_mode == spec.network["reset_mode"]
    assert metadata.readout == spec.network["readout"]
    assert metadata.quant_cfg == make_golden.quant_config(spec)
