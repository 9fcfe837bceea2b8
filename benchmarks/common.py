"""Shared helpers of the benchmark scripts: test networks, inputs, timing, machine facts and result files."""

from __future__ import annotations

import datetime as _datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecs_common.formats import QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_common.metadata import ECSMetadata, Provenance, encode
from ecs_common.neuron import (
    NeuronParameters,
    initial_state,
    integer_parameters,
    integer_step,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Environment variables that select or tune OpenBLAS kernels. Benchmarks record
# them because a forced older core type slows numpy's matrix products.
BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


@dataclass(frozen=True)
class FeedForwardNetwork:
    """A two-layer network: LIF hidden layer, LI output layer, no biases.

    Weights are float64 arrays in NIR layout ``[out, in]`` whose values are
    exact multiples of the weight format's LSB, so quantizing them is lossless
    and every simulator sees the same integer weights.
    """

    name: str
    w_hidden: np.ndarray
    w_out: np.ndarray
    tau_mem: float
    v_threshold: float
    dt: float
    quant: QuantConfig
    reset_mode: str = "to_reset"

    @property
    def n_in(self) -> int:
        """Input neurons."""
        return int(self.w_hidden.shape[1])

    @property
    def n_hidden(self) -> int:
        """Hidden LIF neurons."""
        return int(self.w_hidden.shape[0])

    @property
    def n_out(self) -> int:
        """Output LI neurons."""
        return int(self.w_out.shape[0])

    @property
    def shape_label(self) -> str:
        """Layer sizes as ``in-hidden-out``."""
        return f"{self.n_in}-{self.n_hidden}-{self.n_out}"

    def hidden_parameters(self) -> NeuronParameters:
        """Float NIR parameters of the hidden LIF layer."""
        size = self.n_hidden
        return NeuronParameters(
            kind="lif",
            r=np.ones(size),
            v_leak=np.zeros(size),
            tau_mem=np.full(size, self.tau_mem),
            v_threshold=np.full(size, self.v_threshold),
            v_reset=np.zeros(size),
        )

    def output_parameters(self) -> NeuronParameters:
        """Float NIR parameters of the output LI layer."""
        size = self.n_out
        return NeuronParameters(kind="li", r=np.ones(size), v_leak=np.zeros(size), tau_mem=np.full(size, self.tau_mem))

    def weight_words(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the integer weight words ``(w_hidden, w_out)`` in the weight format, layout ``[out, in]``."""
        fmt = self.quant.weight_format
        return fmt.quantize(self.w_hidden), fmt.quantize(self.w_out)


def make_network(
    n_in: int,
    n_hidden: int,
    n_out: int,
    *,
    seed: int = 0,
    v_threshold: float | None = None,
    tau_mem: float = 0.02,
    dt: float = 0.001,
) -> FeedForwardNetwork:
    """Build a random network whose weights lie on the default weight format's grid.

    ``tau_mem`` and ``dt`` are in seconds; ``v_threshold`` is in NIR units and
    defaults to half the mean input per step at 5 % input density.
    """
    quant = QuantConfig()
    fmt = quant.weight_format
    rng = np.random.default_rng(seed)

    # Hidden weights have a positive mean so that sparse input drives spikes.
    w_hidden = rng.normal(0.4, 0.6, size=(n_hidden, n_in))
    w_out = rng.normal(0.0, 0.5, size=(n_out, n_hidden))
    w_hidden = fmt.dequantize(fmt.quantize(w_hidden))
    w_out = fmt.dequantize(fmt.quantize(w_out))

    if v_threshold is None:
        # With r = 1 the steady-state potential equals the mean input per step,
        # 0.05 * n_in * 0.4 weight units at 5 % input density. Half of it as
        # threshold gives a hidden spike rate of about 7 % on both benchmark
        # shapes (measured with reference_simulation, seeds 0 and 1).
        v_threshold = 0.5 * 0.05 * n_in * 0.4
    # NIR files store float32 parameters. Rounding here gives the reference
    # simulation the same values that a simulator reads back from the graph.
    tau_mem = float(np.float32(tau_mem))
    v_threshold = float(np.float32(v_threshold))

    name = f"{n_in}-{n_hidden}-{n_out}"
    return FeedForwardNetwork(
        name=name, w_hidden=w_hidden, w_out=w_out, tau_mem=tau_mem, v_threshold=v_threshold, dt=dt, quant=quant
    )


def make_inputs(batch: int, timesteps: int, n_in: int, *, density: float = 0.05, seed: int = 1) -> np.ndarray:
    """Return Bernoulli input events of shape ``[batch, timesteps, n_in]`` (uint8, 0 or 1)."""
    rng = np.random.default_rng(seed)
    return (rng.random((batch, timesteps, n_in)) < density).astype(np.uint8)


def hardware_for(network: FeedForwardNetwork) -> HardwareConfig:
    """Return a hardware description large enough to map ``network`` onto one core per 1,024 neurons."""
    neurons = network.n_in + network.n_hidden + network.n_out
    cores = max(4, -(-neurons // 1024) + 2)
    synapses = network.n_in * network.n_hidden + network.n_hidden * network.n_out
    return HardwareConfig(
        num_cores=cores,
        num_neurons_core=1024,
        num_synapses_core=max(65536, synapses),
        num_routes=max(4096, neurons * cores),
        num_weights_core=256,
    )


def to_nir_graph(network: FeedForwardNetwork) -> Any:
    """Build the network as a NIR graph with ECS metadata (Input, Linear, LIF, Linear, LI, Output)."""
    import nir

    hidden = network.n_hidden
    out = network.n_out
    metadata = ECSMetadata(
        hardware_cfg=hardware_for(network),
        quant_cfg=network.quant,
        dt=network.dt,
        reset_mode=network.reset_mode,
        provenance=Provenance(producer="benchmarks/common.py"),
    )
    nodes = {
        "input": nir.Input(input_type=np.array([network.n_in])),
        "fc1": nir.Linear(weight=network.w_hidden.astype(np.float32)),
        "lif1": nir.LIF(
            tau=np.full(hidden, network.tau_mem, dtype=np.float32),
            r=np.ones(hidden, dtype=np.float32),
            v_leak=np.zeros(hidden, dtype=np.float32),
            v_threshold=np.full(hidden, network.v_threshold, dtype=np.float32),
            v_reset=np.zeros(hidden, dtype=np.float32),
        ),
        "fc2": nir.Linear(weight=network.w_out.astype(np.float32)),
        "li2": nir.LI(
            tau=np.full(out, network.tau_mem, dtype=np.float32),
            r=np.ones(out, dtype=np.float32),
            v_leak=np.zeros(out, dtype=np.float32),
        ),
        "output": nir.Output(output_type=np.array([out])),
    }
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "li2"), ("li2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=encode(metadata))


def reference_simulation(network: FeedForwardNetwork, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Simulate ``inputs [batch, T, n_in]`` with ecs-common's reference integer step, without pipeline delay.

    Returns the output states ``[batch, T, n_out]`` (state words) and the hidden
    spikes ``[batch, T, n_hidden]``. Used to check the simulators' results and to
    count spikes, never timed.
    """
    quant = network.quant
    hidden = integer_parameters(network.hidden_parameters(), network.dt, quant, network.reset_mode, "hidden")
    output = integer_parameters(network.output_parameters(), network.dt, quant, network.reset_mode, "output")
    w_hidden, w_out = network.weight_words()

    batch, timesteps, _ = inputs.shape
    hidden_state = initial_state(hidden, (batch,))
    output_state = initial_state(output, (batch,))
    states = np.zeros((batch, timesteps, network.n_out), dtype=np.int64)
    spikes = np.zeros((batch, timesteps, network.n_hidden), dtype=bool)
    for t in range(timesteps):
        hidden_state, hidden_spikes = integer_step(hidden, hidden_state, inputs[:, t].astype(np.int64) @ w_hidden.T)
        output_state, _ = integer_step(output, output_state, hidden_spikes.astype(np.int64) @ w_out.T)
        states[:, t] = output_state.v
        spikes[:, t] = hidden_spikes
    return {"output_states": states, "hidden_spikes": spikes}


class EcsDeployRunner:
    """ecs-deploy's batch simulator on a benchmark network, built from its NIR graph.

    ``run`` makes the call a user makes, ``Network.simulate_batch(inputs)``,
    which simulates ``T + latency`` steps so that every input step is answered.
    """

    def __init__(self, network: FeedForwardNetwork, backend: str = "auto") -> None:
        from ecs_deploy.network import Network

        self.network = network
        self.backend = backend
        self.deploy = Network(to_nir_graph(network), backend=backend)

    def run(self, inputs: np.ndarray) -> Any:
        """Simulate ``inputs [batch, T, n_in]``; return ecs-deploy's ``BatchResult``."""
        return self.deploy.simulate_batch(inputs)

    def output_states(self, inputs: np.ndarray) -> np.ndarray:
        """Return the output states ``[batch, T, n_out]`` aligned to the input steps (pipeline delay removed)."""
        result = self.run(inputs)
        latency = self.deploy.latency
        return result.output_states[latency : latency + inputs.shape[1]].transpose(1, 0, 2)

    def describe(self) -> dict[str, Any]:
        """Return the simulator settings that shape its speed: backend, latency and matrix-product dtypes."""
        from ecs_deploy.kernels import resolve_backend

        simulator = self.deploy._simulator
        dtypes = {name: np.dtype(dtype).name for name, dtype in simulator.dtypes.items()} if simulator else {}
        return {
            "backend": resolve_backend(self.backend),
            "latency_steps": self.deploy.latency,
            "matmul_dtypes": dtypes,
        }


def time_interleaved(
    candidates: dict[str, Callable[[], Any]], *, repeats: int, warmup: int = 1
) -> dict[str, dict[str, Any]]:
    """Time each candidate ``repeats`` times, round-robin, after ``warmup`` untimed calls each.

    Round-robin order spreads load changes from other processes over all
    candidates instead of penalizing whichever ran during a busy spell.
    Returns per candidate the best and median wall time in seconds, all runs,
    and the best process CPU time (all threads of this process together).
    """
    for function in candidates.values():
        for _ in range(warmup):
            function()

    runs: dict[str, list[float]] = {name: [] for name in candidates}
    cpu_runs: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, function in candidates.items():
            cpu_start = time.process_time()
            start = time.perf_counter()
            function()
            runs[name].append(time.perf_counter() - start)
            cpu_runs[name].append(time.process_time() - cpu_start)
    summaries = {}
    for name, values in runs.items():
        summaries[name] = {**summarize_runs(values), "best_cpu_s": float(np.min(cpu_runs[name]))}
    return summaries


def summarize_runs(values: list[float]) -> dict[str, Any]:
    """Return best, median and all wall times (seconds) of repeated runs."""
    return {
        "best_s": float(np.min(values)),
        "median_s": float(np.median(values)),
        "runs_s": [float(value) for value in values],
    }


def limit_threads(threads: int | None) -> dict[str, Any]:
    """Limit BLAS, OpenMP, numba and torch to ``threads`` threads each; ``None`` keeps their defaults.

    Returns the thread counts in effect, for the result file. Call it after
    importing the simulators and before timing them.
    """
    settings: dict[str, Any] = {"requested": threads}
    if threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    for module_name in ("numba", "torch"):
        module = sys.modules.get(module_name)
        if module is None:
            continue
        if threads is not None:
            module.set_num_threads(threads)
        settings[module_name] = int(module.get_num_threads())
    settings["thread_pools"] = {str(info.get("filepath")): info.get("num_threads") for info in blas_info()}
    return settings


def _lscpu_summary() -> dict[str, str]:
    fields = (
        "Architecture",
        "Model name",
        "CPU(s)",
        "Thread(s) per core",
        "Core(s) per socket",
        "L2 cache",
        "L3 cache",
    )
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        return {"error": f"lscpu failed: {error}"}
    summary = {}
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in fields:
            summary[key.strip()] = value.strip()
    flags = next((line for line in output.splitlines() if line.startswith("Flags:")), "")
    summary["avx2"] = str(" avx2 " in f" {flags} ")
    summary["avx512f"] = str(" avx512f " in f" {flags} ")
    return summary


def blas_info() -> list[dict[str, Any]]:
    """Return threadpoolctl's description of the loaded BLAS and OpenMP libraries (kernel, threads, version)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl is not installed"}]
    keys = ("internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer", "filepath")
    return [{key: info.get(key) for key in keys} for info in threadpool_info()]


def machine_info() -> dict[str, Any]:
    """Collect the facts a benchmark result depends on: CPU, load, versions, BLAS kernel and its environment."""
    versions: dict[str, str] = {"python": platform.python_version(), "numpy": np.__version__}
    for module in ("torch", "norse", "nir", "numba", "rockpool", "xylosim"):
        loaded = sys.modules.get(module)
        if loaded is not None:
            versions[module] = str(getattr(loaded, "__version__", "unknown"))
    return {
        "date_utc": _datetime.datetime.now(_datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": _lscpu_summary(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "versions": versions,
        "blas": blas_info(),
        "blas_env": {name: os.environ.get(name) for name in BLAS_ENV_VARS},
        "git": git_revision(),
    }


def git_revision() -> dict[str, Any]:
    """Return the checkout's commit and whether the package sources had uncommitted changes."""
    try:
        options: dict[str, Any] = {"cwd": REPO_ROOT, "capture_output": True, "text": True, "check": True}
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **options).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "packages"], **options).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        return {"error": f"git failed: {error}"}
    return {"commit": commit, "packages_modified": bool(changed.strip())}


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages."""
    return [round(value, 2) for value in os.getloadavg()]


def results_dir(quick: bool = False) -> Path:
    """Return the folder for results: ``benchmarks/results``, or its untracked ``quick`` subfolder for smoke runs."""
    return RESULTS_DIR / "quick" if quick else RESULTS_DIR


def write_result(name: str, payload: dict[str, Any], quick: bool = False) -> Path:
    """Write ``payload`` plus machine facts to ``<results_dir(quick)>/<name>.json`` and return the path."""
    folder = results_dir(quick)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    document = {"benchmark": name, "machine": machine_info(), **payload}
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path}")
    return path


def ratio(slow_seconds: float, fast_seconds: float) -> float:
    """Return how many times faster ``fast_seconds`` is than ``slow_seconds``."""
    return float(slow_seconds / fast_seconds) if fast_seconds > 0 else float("inf")
