"""FPGA test vectors from the deploy side: simulate ecs-train's exported samples, write memory and test-bench files.

``deployment_export("digits")`` reads every checkpoint folder that
ecs-train's ``training_export("digits")`` wrote under
``test_vectors/digits/`` (``network.nir``, ``samples.npz``,
``expected.npz``), simulates the samples bit-accurately, compares the output
states with the training side's, and writes into the same folder:

* ``memfiles/``: the accelerator's memory files and ``manifest.json``;
* ``testbench/``: one ``$readmemh`` file per sample with its input events
  and expected output states (:mod:`ecs_deploy.testbench`), and ``index.json``.

It prints, per checkpoint, the maximum absolute error and the MSE between
the training-side and the deploy-side output states.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ecs_common.vectors import EXPECTED_FILE, SAMPLES_FILE, export_key, load_expected, load_samples
from ecs_deploy.compare import Comparison, simulate_and_compare
from ecs_deploy.errors import InputError
from ecs_deploy.network import Network
from ecs_deploy.testbench import write_testbench

logger = logging.getLogger(__name__)

# Root folder of the exported test vectors, one subfolder per dataset key (as ecs-train writes them).
DEFAULT_ROOT = Path("test_vectors")
NIR_FILE = "network.nir"
MEMFILES_DIR = "memfiles"
TESTBENCH_DIR = "testbench"


def checkpoint_folders(root: Path) -> list[Path]:
    """Return the subfolders of ``root`` that hold an exported network, sorted by name."""
    if not root.is_dir():
        raise InputError(f"test-vector folder {root} not found; export it first with ecs-train's training_export")
    folders = sorted(path for path in root.iterdir() if (path / NIR_FILE).is_file())
    if not folders:
        raise InputError(f"{root} contains no checkpoint folder with {NIR_FILE}; export it with ecs-train first")
    return folders


def export_folder(folder: Path, force: bool = False) -> Comparison:
    """Simulate one checkpoint folder, write its memory and test-bench files, and return the comparison."""
    network = Network.from_file(folder / NIR_FILE)
    samples = load_samples(folder / SAMPLES_FILE)
    expected = load_expected(folder / EXPECTED_FILE)
    evaluation, comparison = simulate_and_compare(network, samples.x, expected, samples.y)

    network.generate_mem_files(folder / MEMFILES_DIR, print_util=False, force=force)
    write_testbench(
        folder / TESTBENCH_DIR,
        samples.x,
        evaluation.output_states,
        labels=samples.y,
        predictions=evaluation.predictions,
        description={
            "network": NIR_FILE,
            "latency": network.latency,
            "state_format": str(network.state_format),
            "input_shape": list(network.input_shape),
            "comparison_with_training": comparison.to_dict(),
        },
        force=force,
    )
    return comparison


def deployment_export(
    dataset: str | os.PathLike[str],
    *,
    vectors_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    console: Console | None = None,
) -> dict[str, Comparison]:
    """Simulate every exported checkpoint of ``dataset`` and write its memory and test-bench files.

    ``dataset`` is the name or config path given to ecs-train's
    ``training_export``; the folder is ``test_vectors/<key>`` with the key of
    :func:`ecs_common.vectors.export_key`, unless ``vectors_dir`` names it.
    Prints a table with, per checkpoint, the maximum absolute error and the
    MSE between training-side and deploy-side output states (state LSBs)
    and returns the comparisons by checkpoint name. Files that exist are
    replaced only with ``force``.
    """
    root = Path(vectors_dir) if vectors_dir is not None else DEFAULT_ROOT / export_key(dataset)
    console = console or Console()
    comparisons = {}
    for folder in checkpoint_folders(root):
        comparisons[folder.name] = export_folder(folder, force=force)
        logger.info("%s: %s", folder, comparisons[folder.name].describe().replace("\n", "; "))

    table = Table(title=f"Training side vs. deploy side: {root}")
    for column in ("checkpoint", "samples", "max abs error (LSB)", "MSE (LSB^2)", "mismatches", "bit-exact"):
        table.add_column(column, justify="left" if column == "checkpoint" else "right")
    for name, comparison in comparisons.items():
        table.add_row(
            name,
            str(comparison.num_samples),
            str(comparison.max_abs_error),
            f"{comparison.mse:.6g}",
            str(comparison.output_mismatches),
            "yes" if comparison.exact else "[bold red]no[/]",
        )
    console.print(table)
    return comparisons
