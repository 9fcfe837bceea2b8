"""Utilization report: the rich table and the PNG charts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from deploy_testing import dense_net
from rich.console import Console

from ecs_common.hardware import HardwareConfig
from ecs_deploy.errors import OutputExistsError
from ecs_deploy.network import Network
from ecs_deploy.report import plot_raster, plot_utilization, utilization_table, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def rendered(table) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(table)
    return console.file.getvalue()


def test_table_shows_used_capacity_and_percent():
    network = Network(dense_net(np.random.default_rng(0)))
    text = rendered(utilization_table(network.placement_report()))
    assert "Core utilization: 3 of 4 cores, fits" in text
    assert "24 / 1024 (2.3%)" in text
    for column in ("neurons", "synapses", "routes", "unique weights"):
        assert column in text


def test_table_marks_a_network_that_does_not_fit():
    graph = dense_net(np.random.default_rng(0), hardware=HardwareConfig(num_cores=2))
    text = rendered(utilization_table(Network(graph).placement_report()))
    assert "does NOT fit" in text


def test_write_report_writes_pngs_and_text(tmp_path, samples_file):
    _, x, _ = samples_file
    network = Network(dense_net(np.random.default_rng(0)))
    result = write_report(network, tmp_path / "report", samples=x, sample_index=3, console=Console(file=io.StringIO()))
    for name in ("utilization.png", "raster.png"):
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG_SIGNATURE)
    assert "Core utilization" in (tmp_path / "report" / "utilization.txt").read_text()
    assert result["report"].fits
    with pytest.raises(OutputExistsError, match="exists already"):
        write_report(network, tmp_path / "report", console=Console(file=io.StringIO()))


def test_raster_without_samples_uses_random_input(tmp_path):
    network = Network(dense_net(np.random.default_rng(0)))
    write_report(network, tmp_path, console=Console(file=io.StringIO()))
    assert (tmp_path / "raster.png").read_bytes().startswith(PNG_SIGNATURE)


def test_plots_do_not_overwrite_without_force(tmp_path):
    network = Network(dense_net(np.random.default_rng(0)))
    path = plot_utilization(network.placement_report(), tmp_path / "u.png")
    with pytest.raises(OutputExistsError):
        plot_utilization(network.placement_report(), path)
    plot_utilization(network.placement_report(), path, force=True)
    spikes = {"a": np.zeros((5, 1, 3), dtype=bool)}
    plot_raster(spikes, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes().startswith(PNG_SIGNATURE)
