"""Compare ecs-train's fit with quantization-aware training against a plain norse + torch loop on digits."""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

# Imported before limit_threads runs, so that --threads limits torch's thread pool.
import torch  # noqa: F401
from common import limit_threads, load_average, ratio, results_dir, write_result
from pytorch_lightning.callbacks import Callback

# The experiment both loops train: the repository's digits configuration
# ([2, 16, 16] events, 20 steps -> 128 LIF -> 10 LI), on the CPU.
CONFIG_FILE = Path(__file__).resolve().parent.parent / "config" / "digits_feed_forward.yaml"

# ecs-train's fit must stay within this factor of the plain loop's time per epoch.
TARGET_SLOWDOWN = 1.3


class EpochTimer(Callback):
    """Lightning callback that records the wall time of each training epoch without its validation.

    An epoch's training time runs from ``on_train_epoch_start`` to the start of
    the validation that follows it (or to ``on_train_epoch_end`` without one).
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self._start = 0.0
        self._cpu_start = 0.0
        self._end: float | None = None
        self._cpu_end = 0.0
        self._samples = 0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        self._end = None
        self._samples = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._samples += int(batch[1].shape[0])

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking and self._end is None:
            self._end = time.perf_counter()
            self._cpu_end = time.process_time()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._end is None:
            self._end = time.perf_counter()
            self._cpu_end = time.process_time()
        self.epochs.append(
            {
                "epoch": trainer.current_epoch,
                "quantized": bool(pl_module.network.quantized),
                "train_s": self._end - self._start,
                "train_cpu_s": self._cpu_end - self._cpu_start,
                "samples": self._samples,
            }
        )


def experiment_config(output_dir: Path, float_epochs: int, qat_epochs: int, limit_batches: float | int) -> Any:
    """Load the digits configuration with the epoch counts and output folder of this benchmark."""
    from ecs_train.config import load_yaml

    config = load_yaml(CONFIG_FILE)
    trainer = config.trainer_cfg
    trainer.output_path = str(output_dir)
    trainer.num_epochs = float_epochs
    trainer.qat_epochs = qat_epochs
    trainer.accelerator = "cpu"
    trainer.devices = 1
    trainer.limit_batches = limit_batches
    return config


def run_ecs_train(config: Any) -> dict[str, Any]:
    """Run ``trainer.fit`` as ``ecs-train fit`` does and return the per-epoch training times."""
    from ecs_train.training import initialize_experiment

    trainer, model, data_module = initialize_experiment(config)
    timer = EpochTimer()
    trainer.callbacks.append(timer)
    load_before = load_average()
    trainer.fit(model, datamodule=data_module)
    return {"epochs": timer.epochs, "load_average_before": load_before, "data_module": data_module}


def profile_ecs_train(config: Any, path: Path) -> None:
    """Profile a separate, untimed fit (one float and one QAT epoch of 10 batches) with cProfile."""
    from ecs_train.training import initialize_experiment

    config.trainer_cfg.num_epochs = 1
    config.trainer_cfg.qat_epochs = 1
    config.trainer_cfg.limit_batches = 10
    trainer, model, data_module = initialize_experiment(config)
    profiler = cProfile.Profile()
    profiler.enable()
    trainer.fit(model, datamodule=data_module)
    profiler.disable()
    write_profile(profiler, path)


def plain_model(network_cfg: Any, input_size: int, num_classes: int) -> Any:
    """Build the same network in plain norse: Linear + LIFBoxCell, Linear + LIBoxCell, no biases."""
    import torch
    from norse.torch import LIBoxCell, LIBoxParameters, LIFBoxCell, LIFBoxParameters

    cfg = network_cfg
    hidden = cfg.hidden_sizes[0]

    class PlainNetwork(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(input_size, hidden, bias=False)
            self.lif = LIFBoxCell(
                LIFBoxParameters(
                    tau_mem_inv=torch.tensor(1.0 / cfg.tau_mem),
                    v_leak=torch.tensor(cfg.v_leak),
                    v_th=torch.tensor(cfg.v_threshold),
                    v_reset=torch.tensor(cfg.v_reset),
                    method=cfg.surrogate,
                    alpha=torch.tensor(cfg.surrogate_alpha),
                ),
                dt=cfg.dt,
            )
            self.fc2 = torch.nn.Linear(hidden, num_classes, bias=False)
            self.li = LIBoxCell(LIBoxParameters(tau_mem_inv=torch.tensor(1.0 / cfg.tau_mem)), dt=cfg.dt)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # x: [B, T, ...] events; the loop runs the cells step by step, as norse's tutorials do.
            x = x.flatten(2).transpose(0, 1)
            lif_state = None
            li_state = None
            voltage = None
            for step in x:
                spikes, lif_state = self.lif(self.fc1(step), lif_state)
                voltage, li_state = self.li(self.fc2(spikes), li_state)
            return voltage

    return PlainNetwork()


def batches_per_epoch(limit: float | int, total: int) -> int:
    """Return the training batches per epoch for Lightning's ``limit_train_batches`` (a count or a fraction)."""
    if isinstance(limit, int):
        return min(limit, total)
    return max(1, int(limit * total))


def run_plain_loop(config: Any, data_module: Any, epochs: int) -> dict[str, Any]:
    """Train the plain norse network for ``epochs`` on the same training batches; return per-epoch times."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(config.trainer_cfg.seed)
    data_module.setup("fit")
    loader = data_module.train_dataloader()
    input_size = 1
    for size in data_module.input_shape:
        input_size *= int(size)
    model = plain_model(config.model_cfg.network_cfg, input_size, int(data_module.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.trainer_cfg.learning_rate)
    max_batches = batches_per_epoch(config.trainer_cfg.limit_batches, len(loader))

    load_before = load_average()
    results = []
    for epoch in range(epochs):
        start = time.perf_counter()
        cpu_start = time.process_time()
        samples = 0
        for index, (x, y) in enumerate(loader):
            if index >= max_batches:
                break
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x.float()), y)
            loss.backward()
            optimizer.step()
            samples += int(y.shape[0])
        results.append(
            {
                "epoch": epoch,
                "quantized": False,
                "train_s": time.perf_counter() - start,
                "train_cpu_s": time.process_time() - cpu_start,
                "samples": samples,
            }
        )
    return {"epochs": results, "load_average_before": load_before}


def write_profile(profiler: cProfile.Profile, path: Path) -> None:
    """Write the 40 functions with the most cumulative time to ``path``."""
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(40)
    stream.write("\n")
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(25)
    path.write_text(stream.getvalue())
    print(f"wrote {path}")


def summarize(epochs: list[dict[str, Any]], load_before: list[float]) -> dict[str, Any]:
    """Return the best epoch's samples/s and all epoch times, skipping the first (warm-up) epoch when possible."""
    timed = epochs[1:] if len(epochs) > 1 else epochs
    best = min(timed, key=lambda entry: entry["train_s"])
    return {
        "samples_per_s": best["samples"] / best["train_s"],
        "epoch_s": best["train_s"],
        "epoch_cpu_s": min(entry["train_cpu_s"] for entry in timed),
        "samples_per_epoch": best["samples"],
        "epochs_s": [entry["train_s"] for entry in epochs],
        "load_average_before": load_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qat-epochs", type=int, default=4, help="QAT epochs to time (the first is a warm-up)")
    parser.add_argument(
        "--profile", action="store_true", help="after the timed runs, profile a short ecs-train fit with cProfile"
    )
    parser.add_argument("--quick", action="store_true", help="2 QAT epochs of 5 batches, for a smoke run")
    parser.add_argument("--threads", type=int, help="limit torch and BLAS to this many threads")
    args = parser.parse_args()
    threads = limit_threads(args.threads)

    qat_epochs = 2 if args.quick else args.qat_epochs
    limit = 5 if args.quick else 1.0
    with tempfile.TemporaryDirectory(prefix="ecs-bench-train-") as tmp:
        config = experiment_config(Path(tmp), float_epochs=1, qat_epochs=qat_epochs, limit_batches=limit)
        ecs = run_ecs_train(config)
        plain = run_plain_loop(config, ecs.pop("data_module"), epochs=qat_epochs + 1)
        if args.profile:
            suffix = f"_threads{args.threads}" if args.threads else ""
            profile_ecs_train(config, results_dir(args.quick) / f"training_profile{suffix}.txt")

    # The first ecs-train epoch trains in float; the QAT epochs follow it.
    float_epochs = [entry for entry in ecs["epochs"] if not entry["quantized"]]
    qat = [entry for entry in ecs["epochs"] if entry["quantized"]]
    loops = {
        "ecs-train fit, QAT epochs": summarize(qat, ecs["load_average_before"]),
        "ecs-train fit, float epoch": summarize(float_epochs, ecs["load_average_before"]),
        "plain norse + torch loop": summarize(plain["epochs"], plain["load_average_before"]),
    }
    qat_slowdown = ratio(loops["ecs-train fit, QAT epochs"]["epoch_s"], loops["plain norse + torch loop"]["epoch_s"])
    qat_cpu_slowdown = ratio(
        loops["ecs-train fit, QAT epochs"]["epoch_cpu_s"], loops["plain norse + torch loop"]["epoch_cpu_s"]
    )
    write_result(
        "training" + (f"_threads{args.threads}" if args.threads else ""),
        {
            "threads": threads,
            "config": str(CONFIG_FILE.relative_to(CONFIG_FILE.parent.parent)),
            "limit_batches": limit,
            "loops": loops,
            "qat_time_over_plain": qat_slowdown,
            "qat_cpu_time_over_plain": qat_cpu_slowdown,
            "target_time_over_plain": TARGET_SLOWDOWN,
            "meets_target": qat_slowdown <= TARGET_SLOWDOWN,
            "load_average_after": load_average(),
        },
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
