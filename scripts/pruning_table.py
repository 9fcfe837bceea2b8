r"""Measure quantized accuracy after pruning a checkpoint to several sparsities, with and without fine-tuning.

For each sparsity the script loads the checkpoint again, prunes it with
global magnitude pruning, fine-tunes it with the masks kept (as
``ecs-train prune`` does) and measures the quantized accuracy on the test and
validation splits. Sparsity 0 fine-tunes without pruning, the control for
the pruned rows. It prints a Markdown table and writes the numbers as JSON,
rewritten after every row, so an error keeps the rows measured before it.
Exit codes: 0 on success, 2 on invalid input or a failed row.

    python scripts/pruning_table.py config/nmnist_feed_forward.yaml \
        --checkpoint outputs/nmnist_feed_forward/checkpoints/final.ckpt \
        --data-dir ../shared/data/nmnist_small --out pruning-nmnist.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_SPARSITIES = "0,0.3,0.5,0.7,0.8,0.9"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="experiment config (YAML)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="unpruned checkpoint to start from")
    parser.add_argument("--data-dir", type=Path, help="folder with the dataset's recordings")
    parser.add_argument("--sparsities", default=DEFAULT_SPARSITIES, help="comma-separated fractions of weights")
    parser.add_argument("--fine-tune-epochs", type=int, default=10, help="fine-tuning epochs per pruning step")
    parser.add_argument("--iterations", type=int, default=1, help="pruning steps up to each sparsity")
    parser.add_argument("--learning-rate", type=float, help="fine-tuning learning rate (default: from the config)")
    parser.add_argument("--schedule", choices=("constant", "cosine"), help="fine-tuning schedule (default: config)")
    parser.add_argument("--limit-batches", type=int, help="batches per epoch and per evaluation, for quick runs")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return parser.parse_args(argv)


def fail(message: str) -> NoReturn:
    """Print an invalid-input message and exit with code 2, as argparse does for its own errors."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_sparsities(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        fail(f"invalid --sparsities {text!r}; give comma-separated fractions such as 0,0.3,0.5")
    invalid = [value for value in values if not 0.0 <= value < 1.0]
    if invalid:
        fail(f"invalid --sparsities {text!r}; every value must lie in [0, 1)")
    return values


def check_arguments(arguments: argparse.Namespace) -> None:
    """Exit with a message naming the option when a number is out of range or --out cannot be written."""
    if arguments.iterations < 1:
        fail(f"invalid --iterations {arguments.iterations}; use 1 or more pruning steps")
    if arguments.fine_tune_epochs < 0:
        fail(f"invalid --fine-tune-epochs {arguments.fine_tune_epochs}; use 0 or more epochs")
    if arguments.limit_batches is not None and arguments.limit_batches < 1:
        fail(f"invalid --limit-batches {arguments.limit_batches}; use 1 or more batches")
    rate = arguments.learning_rate
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        fail(f"invalid --learning-rate {rate}; give a positive finite rate, such as 0.002")
    if arguments.out.is_dir():
        fail(f"--out {arguments.out} is a folder; give a JSON file name, such as {arguments.out / 'table.json'}")
    if arguments.out.exists() and not arguments.force:
        fail(f"{arguments.out} exists already; pass --force to overwrite it")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def change(value: float | None, base: float) -> str:
    return "-" if value is None else f"{100 * (value - base):+.1f}"


def markdown_table(result: dict[str, Any]) -> str:
    base = result["unpruned"]
    lines = [
        "| sparsity | synapses | test, no fine-tuning | test, fine-tuned | change | val, fine-tuned | change |",
        "|---|---|---|---|---|---|---|",
        f"| unpruned | {base['synapses']} | {percent(base['test'])} | - | - | {percent(base['val'])} | - |",
    ]
    for row in result["rows"]:
        label = f"{100 * row['sparsity']:.0f}%" if row["sparsity"] > 0 else "0% (fine-tuning only)"
        lines.append(
            f"| {label} | {row['synapses']} | {percent(row['test_without_fine_tuning'])} | {percent(row['test'])} | "
            f"{change(row['test'], base['test'])} | {percent(row['val'])} | {change(row['val'], base['val'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    sparsities = parse_sparsities(arguments.sparsities)
    check_arguments(arguments)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    # Imported after the argument checks, because torch and Lightning take seconds to load.
    from ecs_common.errors import ECSError

    try:
        return measure(arguments, sparsities)
    except (ECSError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def measure(arguments: argparse.Namespace, sparsities: list[float]) -> int:
    """Measure the unpruned network and one row per sparsity, writing the JSON after each row."""
    from ecs_train.config import load_yaml
    from ecs_train.constraints import accelerator_config_of, constraint_report
    from ecs_train.data import build_data_module
    from ecs_train.pruning import default_fine_tune_learning_rate, load_pruned_model, prune_model, quantized_accuracy
    from ecs_train.utils import atomic_write, set_random_seed

    config = load_yaml(arguments.config)
    if arguments.data_dir is not None:
        config.data_cfg.data_dir = arguments.data_dir
    schedule = arguments.schedule or config.pruning_cfg.schedule
    learning_rate = (
        default_fine_tune_learning_rate(config) if arguments.learning_rate is None else arguments.learning_rate
    )
    accelerator = accelerator_config_of(config)
    seed = config.trainer_cfg.seed
    data_module = build_data_module(config.data_cfg, batch_size=config.trainer_cfg.batch_size, seed=seed)

    model, _ = load_pruned_model(config, arguments.checkpoint)
    report = constraint_report(model, accelerator, allow_saturation=True)
    limit = arguments.limit_batches
    unpruned = {
        "test": quantized_accuracy(model, data_module, "test", limit),
        "val": quantized_accuracy(model, data_module, "val", limit),
        "synapses": report.num_synapses,
    }
    print(f"unpruned: test {percent(unpruned['test'])}%, val {percent(unpruned['val'])}%", file=sys.stderr)

    result: dict[str, Any] = {
        "config": str(arguments.config),
        "checkpoint": str(arguments.checkpoint),
        "fine_tune_epochs": arguments.fine_tune_epochs,
        "iterations": arguments.iterations,
        "learning_rate": learning_rate,
        "schedule": schedule,
        # Batches per epoch and per evaluation; null means whole splits.
        "limit_batches": limit,
        "complete": False,
        "unpruned": unpruned,
        "rows": [],
    }
    for sparsity in sparsities:
        set_random_seed(seed)
        model, _ = load_pruned_model(config, arguments.checkpoint)
        start = time.perf_counter()
        pruned = prune_model(
            model,
            data_module,
            accelerator,
            sparsity=sparsity,
            fine_tune_epochs=arguments.fine_tune_epochs,
            iterations=arguments.iterations,
            learning_rate=learning_rate,
            schedule=schedule,
            limit_batches=limit,
            measure_without_fine_tuning=True,
            allow_saturation=True,
        )
        record = pruned.record
        row = {
            "sparsity": sparsity,
            "reached_sparsity": record.sparsity,
            "synapses": pruned.report.num_synapses,
            "fits": pruned.report.fits,
            "test_without_fine_tuning": record.accuracy_without_fine_tuning,
            "test": record.accuracy_after,
            "val": quantized_accuracy(model, data_module, "val", limit),
            "kept_epochs": [step.kept_epoch for step in record.steps],
            "seconds": round(time.perf_counter() - start, 1),
        }
        result["rows"].append(row)
        print(
            f"sparsity {100 * sparsity:.0f}%: test {percent(row['test'])}% "
            f"(without fine-tuning {percent(row['test_without_fine_tuning'])}%), val {percent(row['val'])}%, "
            f"{row['seconds']} s",
            file=sys.stderr,
        )
        with atomic_write(arguments.out) as stream:
            json.dump(result, stream, indent=1)

    result["complete"] = True
    with atomic_write(arguments.out) as stream:
        json.dump(result, stream, indent=1)
    print(markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
