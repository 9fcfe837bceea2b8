"""Simulating, writing memory files and reports leaves torch, nirtorch and norse unloaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_using_deploy_never_loads_torch(tmp_path):
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        import nir
        import numpy as np
        import ecs_deploy
        from ecs_common import metadata

        for module in pkgutil.walk_packages(ecs_deploy.__path__, "ecs_deploy."):
            importlib.import_module(module.name)
        importlib.import_module("ecs_common.placement")

        from ecs_deploy.network import Network
        from ecs_deploy.memfiles import load_mem_files
        from ecs_deploy.report import write_report

        rng = np.random.default_rng(0)
        graph = nir.NIRGraph(
            nodes={{
                "input": nir.Input(np.array([6])),
                "fc": nir.Linear(rng.integers(-20, 40, (4, 6)) / 64),
                "li": nir.LI(tau=np.full(4, 0.01), r=np.ones(4), v_leak=np.zeros(4)),
                "output": nir.Output(np.array([4])),
            }},
            edges=[("input", "fc"), ("fc", "li"), ("li", "output")],
            metadata=metadata.encode(metadata.ECSMetadata(dt=0.001)),
        )
        network = Network(graph)
        network.simulate_batch((rng.random((2, 5, 6)) < 0.5).astype(np.uint8))
        network.generate_mem_files({str(tmp_path / "mem")!r}, print_util=False)
        load_mem_files({str(tmp_path / "mem")!r})
        write_report(network, {str(tmp_path / "report")!r})
        heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "nirtorch", "norse"))
        print("HEAVY", heavy)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout
