"""Fixtures of the ecs-deploy tests; the network builders live in deploy_testing.py."""

from __future__ import annotations

import sys
from pathlib import Path

import nir
import numpy as np
import pytest

# pytest runs with --import-mode=importlib, so test modules reach the helper module through sys.path.
sys.path.insert(0, str(Path(__file__).parent))

from deploy_testing import dense_net, random_inputs  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def nir_file(tmp_path, rng):
    """Write a small dense network to a NIR file and return (path, graph)."""
    graph = dense_net(rng)
    path = tmp_path / "network.nir"
    nir.write(path, graph)
    return path, graph


@pytest.fixture
def samples_file(tmp_path, rng):
    """Write 40 samples [N, T, 24] with labels to an .npz file."""
    x = random_inputs(rng, 40, 12, (24,), 0.3)
    y = rng.integers(0, 5, size=40)
    path = tmp_path / "samples.npz"
    np.savez(path, x=x, y=y)
    return path, x, y
