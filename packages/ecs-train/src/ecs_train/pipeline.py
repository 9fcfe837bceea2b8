"""The main job: train, quantize, check and prune a network, export NIR and test vectors, then deploy with ecs-deploy.

Stages, in order (``STAGES``):

1. ``train``: train with Lightning (quantization-aware epochs included), or
   load ``--checkpoint``;
2. ``quantize``: post-training quantization when the network is still
   float, then the float and quantized accuracy on the whole test set;
3. ``constraints``: the hardware constraint report;
4. ``prune``: pruning and fine-tuning, when ``pruning_cfg`` sets a sparsity or ``fit_hardware``;
5. ``export``: the NIR file with ``ecs`` metadata and provenance;
6. ``vectors``: the whole test set and the quantized training-side outputs
   (:mod:`ecs_common.vectors`);
7. ``simulate``: ``ecs-deploy simulate --expected`` in a separate process,
   which compares the deploy-side output states with the training side's;
8. ``memfiles``: ``ecs-deploy memfiles``, with the manifest's checksums verified;
9. ``report``: ``ecs-deploy check --json`` and ``ecs-deploy report`` (table
   and PNGs).

Everything is written into a hidden staging folder beside the output folder
(``.<name>.partial-<pid>``) and moved into place only when the run ends, so
an interrupted run leaves no partial output folder. A failing run removes
its staging folder. After SIGKILL, the next run for the same output folder
does. A stage from ``SOFT_STAGES`` that fails is recorded in the summary and
the run goes on. Any other failing stage ends the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ecs_common.errors import ConfigError, ECSError
from ecs_train.__about__ import __version__
from ecs_train.config import ExperimentConfig, load_yaml, save_yaml
from ecs_train.data.module import check_data_files
from ecs_train.deploy_process import EXIT_DOES_NOT_FIT, EXIT_MISMATCH, leading_json, run_deploy
from ecs_train.errors import OutputExistsError
from ecs_train.export import find_config
from ecs_train.run_summary import SUMMARY_FILE, SUMMARY_FORMAT, SUMMARY_VERSION, core_utilization, summary_table
from ecs_train.utils import atomic_write
from ecs_train.vectors import NetworkRun, expected_outputs, float_run, run_network

logger = logging.getLogger(__name__)

STAGES = ("train", "quantize", "constraints", "prune", "export", "vectors", "simulate", "memfiles", "report")

# Stages whose failure is recorded in the summary without ending the run.
SOFT_STAGES = ("constraints", "simulate", "memfiles", "report")

# Dataset of the default config, config/digits_feed_forward.yaml.
DEFAULT_DATASET = "digits"

# Output layout, relative to the output folder.
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
PRUNED_CHECKPOINT = "pruned.ckpt"
CONSTRAINTS_JSON = "constraints.json"
CONSTRAINTS_TXT = "constraints.txt"
NIR_FILE = "network.nir"
SAMPLES_PATH = "vectors/samples.npz"
EXPECTED_PATH = "vectors/expected.npz"
SIMULATION_JSON = "deploy/simulation.json"
SIMULATION_NPZ = "deploy/simulation.npz"
MEMFILES_DIR = "memfiles"
REPORT_DIR = "report"

# Accuracies in the summary: float and quantized forward, quantized after pruning, ecs-deploy's simulation.
ACCURACY_KEYS = ("float", "quantized", "pruned", "deployed")

# Samples per forward pass in the test-set runs of the training side.
EVAL_BATCH_SIZE = 256


class PipelineError(ECSError, RuntimeError):
    """A stage that the rest of the run depends on failed."""


@dataclass
class RunOptions:
    """Settings of one main-job run; ``None`` keeps the config's value.

    ``epochs`` and ``qat_epochs`` override ``trainer_cfg.num_epochs`` and
    ``trainer_cfg.qat_epochs``; ``limit_batches`` (a fraction or a count of
    batches per epoch) overrides ``trainer_cfg.limit_batches``; ``output``
    defaults to ``trainer_cfg.output_path``. ``deploy_command`` is the
    command that starts ecs-deploy (default: :func:`ecs_train.deploy_process.deploy_command`).
    """

    config: Path | None = None
    output: Path | None = None
    data_dir: Path | None = None
    checkpoint: Path | None = None
    epochs: int | None = None
    qat_epochs: int | None = None
    limit_batches: float | int | None = None
    force: bool = False
    deploy_command: list[str] | None = None


@dataclass
class RunResult:
    """A finished run: the output folder and the summary written to its ``summary.json``."""

    output: Path
    summary: dict[str, Any]

    @property
    def failed_stages(self) -> list[str]:
        """Stages that failed."""
        return [name for name, stage in self.summary["stages"].items() if stage["status"] == "failed"]

    @property
    def exact(self) -> bool:
        """Whether ecs-deploy reproduced the training side's outputs bit for bit."""
        comparison = self.summary.get("comparison")
        return bool(comparison and comparison.get("exact"))

    @property
    def ok(self) -> bool:
        """Whether every stage succeeded and the deployed outputs equal the training side's."""
        return not self.failed_stages and self.exact


@dataclass
class _State:
    """Results that one stage passes on to the later ones."""

    model: Any = None
    data_module: Any = None
    checkpoint_path: Path | None = None
    pruning_record: Any = None
    trained_mode: str = ""
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    float_run: NetworkRun | None = None
    quantized_run: NetworkRun | None = None
    # Test-set accuracies (fractions) under the keys of ACCURACY_KEYS; None where not measured.
    accuracy: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(ACCURACY_KEYS))
    sparsity: float | None = None
    comparison: dict[str, Any] | None = None
    utilization: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def default_config_path() -> Path:
    """Return the default config, ``config/digits_feed_forward.yaml``, from the working folder or the checkout."""
    return find_config(DEFAULT_DATASET)


def prepare_config(path: Path, options: RunOptions) -> ExperimentConfig:
    """Load the config at ``path`` and apply the options' overrides. Raises :class:`ConfigError` when invalid."""
    config = load_yaml(path)
    if options.data_dir is not None:
        config.data_cfg.data_dir = options.data_dir
    if options.epochs is not None:
        config.trainer_cfg.num_epochs = options.epochs
    if options.qat_epochs is not None:
        config.trainer_cfg.qat_epochs = options.qat_epochs
    if options.limit_batches is not None:
        config.trainer_cfg.limit_batches = options.limit_batches
    if not config.model_cfg.quant_cfg.enabled:
        raise ConfigError(
            f"{path}: model_cfg.quant_cfg.enabled is false, but the main job deploys onto the integer accelerator "
            "and compares integer outputs; set it to true (mode ptq or qat)"
        )
    return config


def resolve_output(options: RunOptions, config: ExperimentConfig) -> Path:
    """Return the output folder, raising :class:`OutputExistsError` when it exists and ``force`` is false."""
    output = Path(options.output if options.output is not None else config.trainer_cfg.output_path)
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"output path {output} is a file; choose a folder with --output")
    if output.exists() and not options.force:
        raise OutputExistsError(
            f"output folder {output} exists already (an earlier run?); pass --force to replace it or choose another "
            "folder with --output"
        )
    return output


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove staging folders of ``target`` left by runs whose process no longer exists; return them.

    A run killed with SIGKILL cannot clean up, so the next run does.
    """
    removed = []
    for folder in target.parent.glob(f".{target.name}.partial-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            # A warning, so that the default log level shows which folder went away.
            logger.warning("removed stale partial outputs %s, left by a killed run (process %s)", folder, pid)
            removed.append(folder)
    return removed


@contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """Create a hidden folder beside ``target`` for the run's outputs; remove it if the block fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        logger.info("removing the partial outputs in %s", staging)
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(staging: Path, target: Path, force: bool) -> None:
    """Move ``staging`` onto ``target``; an existing ``target`` is replaced only with ``force``."""
    old = None
    if target.exists():
        if not force:
            raise OutputExistsError(f"output folder {target} appeared during the run; pass --force to replace it")
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def verify_manifest(folder: Path) -> int:
    """Check every file listed in a memory-file manifest against its sha256; return the number of files.

    Raises :class:`PipelineError` naming the first file that is missing or differs.
    """
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PipelineError(f"cannot read the memory-file manifest {manifest_path}: {error}") from error
    files = manifest.get("files", [])
    for entry in files:
        path = folder / entry["path"]
        if not path.is_file():
            raise PipelineError(f"{manifest_path} lists {entry['path']}, which is missing")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != entry["sha256"]:
            raise PipelineError(f"{path} has sha256 {digest}, but {manifest_path} lists {entry['sha256']}")
    return len(files)


class Pipeline:
    """One run of the main job; :meth:`run` executes the stages and returns the :class:`RunResult`."""

    def __init__(self, options: RunOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console()
        self.config_path = options.config if options.config is not None else default_config_path()
        self.config = prepare_config(self.config_path, options)
        check_data_files(self.config.data_cfg)
        self.output = resolve_output(options, self.config)
        self.staging = Path()
        self.state = _State()
        self.stages: dict[str, dict[str, Any]] = {}
        # True once the outputs are moved from the staging folder into the output folder.
        self.outputs_written = False

    # Running the stages.

    def run(self) -> RunResult:
        """Run every stage, move the outputs into the output folder, print the summary and return it."""
        started = time.perf_counter()
        steps: dict[str, Callable[[], str]] = {
            "train": self._train,
            "quantize": self._quantize,
            "constraints": self._constraints,
            "prune": self._prune,
            "export": self._export,
            "vectors": self._vectors,
            "simulate": self._simulate,
            "memfiles": self._memfiles,
            "report": self._report,
        }
        with staging_folder(self.output) as staging:
            self.staging = staging.resolve()
            self._point_outputs_at_staging()
            for name in STAGES:
                self._run_stage(name, steps[name])
            summary = self._summary(time.perf_counter() - started)
            with atomic_write(self.staging / SUMMARY_FILE) as handle:
                handle.write(json.dumps(summary, indent=2) + "\n")
            replace_folder(self.staging, self.output, self.options.force)
            self.outputs_written = True

        self.console.print()
        self.console.print(summary_table(summary))
        self.console.print(f"outputs in {self.output}, summary in {self.output / SUMMARY_FILE}")
        return RunResult(self.output, summary)

    def _point_outputs_at_staging(self) -> None:
        trainer_cfg = self.config.trainer_cfg
        trainer_cfg.output_path = str(self.staging)
        trainer_cfg.checkpoint_path = None

        # config.yaml records the run as configured, with the final output folder.
        recorded = self.config.model_copy(deep=True)
        recorded.trainer_cfg.output_path = str(self.output)
        save_yaml(recorded, self.staging / CONFIG_FILE)
        self.state.files["config"] = CONFIG_FILE

    def _run_stage(self, name: str, step: Callable[[], str]) -> None:
        self.console.rule(f"[bold]Stage {STAGES.index(name) + 1}/{len(STAGES)}: {name}")
        started = time.perf_counter()
        try:
            detail = step()
            status = "skipped" if detail.startswith("skipped") else "ok"
        except (ECSError, OSError, ValueError) as error:
            if name not in SOFT_STAGES:
                raise
            status, detail = "failed", " ".join(str(error).split())
            self.console.print(f"[bold red]stage {name} failed:[/] {detail}", soft_wrap=True)
            logger.error("stage %s failed: %s", name, detail)
        wall = time.perf_counter() - started
        self.stages[name] = {"status": status, "wall_s": round(wall, 3), "detail": detail}
        self.console.print(f"{name}: {detail} ({wall:.1f} s)", soft_wrap=True)

    def _progress(self) -> Progress:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        return Progress(*columns, console=self.console, transient=True)

    def _test_runs(self, label: str) -> tuple[NetworkRun, NetworkRun]:
        """Run the float and the quantized forward over the whole test set."""
        network = self.state.model.network
        x, y = self.state.x, self.state.y
        assert x is not None
        with self._progress() as progress:
            float_task = progress.add_task(f"{label}: float test run", total=len(x))
            floats = float_run(
                network,
                x,
                y,
                batch_size=EVAL_BATCH_SIZE,
                progress=lambda done, total: progress.update(float_task, completed=done),
            )
            quantized_task = progress.add_task(f"{label}: quantized test run", total=len(x))
            quantized = run_network(
                network,
                x,
                y,
                batch_size=EVAL_BATCH_SIZE,
                progress=lambda done, total: progress.update(quantized_task, completed=done),
            )
        return floats, quantized

    # The stages. Each returns a one-line description of what it did.

    def _train(self) -> str:
        from ecs_train.data import build_data_module
        from ecs_train.pruning import load_pruned_model
        from ecs_train.training import FINAL_CHECKPOINT, _resolve_checkpoint, find_callback, initialize_experiment
        from ecs_train.visualization.network_logger import NetworkLogger

        config = self.config
        if self.options.checkpoint is not None:
            path = _resolve_checkpoint(self.options.checkpoint)
            model, record = load_pruned_model(config, path)
            self.state.model, self.state.pruning_record, self.state.checkpoint_path = model, record, path.resolve()
            self.state.data_module = build_data_module(
                config.data_cfg, batch_size=config.trainer_cfg.batch_size, seed=config.trainer_cfg.seed
            )
            self.state.trained_mode = "checkpoint (quantized)" if model.network.quantized else "checkpoint (float)"
            return f"loaded {path} (quantized: {model.network.quantized}, pruned: {record is not None})"

        trainer, model, data_module = initialize_experiment(config)
        trainer.fit(model, datamodule=data_module)
        network_logger = find_callback(trainer, NetworkLogger)
        if network_logger is not None and trainer.is_global_zero and network_logger.records:
            network_logger.save_perf_log()
            network_logger.draw_perf_log()
        model.cpu().eval()

        self.state.model, self.state.data_module = model, data_module
        self.state.checkpoint_path = config.trainer_cfg.checkpoint_dir / FINAL_CHECKPOINT
        self.state.files["checkpoint"] = f"{CHECKPOINT_DIR}/{FINAL_CHECKPOINT}"
        quant_cfg = config.model_cfg.quant_cfg
        qat = quant_cfg.mode == "qat" and config.trainer_cfg.qat_epochs > 0
        self.state.trained_mode = "qat" if qat else "ptq"
        epochs = config.trainer_cfg.num_epochs + (config.trainer_cfg.qat_epochs if qat else 0)
        return f"trained {trainer.current_epoch} of {epochs} epochs ({'QAT' if qat else 'float, then PTQ'})"

    def _quantize(self) -> str:
        from ecs_train.quantization import prepare_quantized

        network = self.state.model.network
        detail = f"quantized by {self.state.trained_mode}"
        if not network.quantized:
            report = prepare_quantized(network, self.config.model_cfg.quant_cfg)
            detail = f"post-training quantization, {report.num_saturated} of {report.num_weights} weights saturated"

        data_module = self.state.data_module
        test_size = len(data_module.split("test"))
        x, y = data_module.test_arrays(test_size)
        self.state.x, self.state.y = x.astype(np.uint8), y
        self.state.float_run, self.state.quantized_run = self._test_runs("quantize")
        self.state.accuracy["float"] = self.state.float_run.accuracy
        self.state.accuracy["quantized"] = self.state.quantized_run.accuracy
        accuracy = self.state.accuracy
        return (
            f"{detail}; test accuracy on {test_size} samples: float {100 * (accuracy['float'] or 0):.2f}%, "
            f"quantized {100 * (accuracy['quantized'] or 0):.2f}%"
        )

    def _constraints(self) -> str:
        from ecs_train.constraints import accelerator_config_of, constraint_report

        report = constraint_report(self.state.model, accelerator_config_of(self.config), allow_saturation=True)
        self.console.print(report)
        with atomic_write(self.staging / CONSTRAINTS_JSON) as handle:
            handle.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        with atomic_write(self.staging / CONSTRAINTS_TXT) as handle:
            handle.write(report.render() + "\n")
        self.state.files["constraints"] = CONSTRAINTS_JSON
        if report.fits:
            return f"fits: {report.num_synapses} synapses on {report.placement.cores_needed} cores"
        return f"does not fit yet: {report.message}"

    def _prune(self) -> str:
        from ecs_train.constraints import accelerator_config_of
        from ecs_train.pruning import prune_model, save_pruned_checkpoint, weight_sparsity
        from ecs_train.utils import set_random_seed

        pruning_cfg = self.config.pruning_cfg
        network = self.state.model.network
        if pruning_cfg.sparsity <= 0 and not pruning_cfg.fit_hardware:
            self.state.sparsity = weight_sparsity(network)
            return "skipped: pruning_cfg sets no pruning (sparsity 0, fit_hardware false)"
        if self.state.pruning_record is not None:
            self.state.sparsity = weight_sparsity(network)
            return f"skipped: the checkpoint is pruned already (sparsity {100 * self.state.sparsity:.1f}%)"

        set_random_seed(self.config.trainer_cfg.seed)
        result = prune_model(
            self.state.model,
            self.state.data_module,
            accelerator_config_of(self.config),
            sparsity=pruning_cfg.sparsity,
            fit_hardware=pruning_cfg.fit_hardware,
            fine_tune_epochs=pruning_cfg.fine_tune_epochs,
            iterations=pruning_cfg.iterations,
            schedule=pruning_cfg.schedule,
            split="test",
        )
        self.state.model.cpu().eval()
        path = self.config.trainer_cfg.checkpoint_dir / PRUNED_CHECKPOINT
        save_pruned_checkpoint(self.state.model, path, result.record)
        self.state.checkpoint_path = path
        self.state.files["pruned_checkpoint"] = f"{CHECKPOINT_DIR}/{PRUNED_CHECKPOINT}"
        self.console.print(result.report)

        self.state.float_run, self.state.quantized_run = self._test_runs("prune")
        self.state.accuracy["pruned"] = self.state.quantized_run.accuracy
        self.state.sparsity = result.record.sparsity
        return (
            f"weight sparsity {100 * result.record.sparsity:.1f}% (target {100 * result.record.target_sparsity:.1f}%), "
            f"quantized test accuracy {100 * (self.state.accuracy['pruned'] or 0):.2f}%"
        )

    def _export(self) -> str:
        from ecs_train.export import write_nir

        assert self.state.float_run is not None and self.state.quantized_run is not None
        assert self.state.checkpoint_path is not None
        self.state.sparsity = write_nir(
            self.state.model.network,
            self.config,
            self.state.checkpoint_path,
            self.staging / NIR_FILE,
            self.state.float_run.accuracy,
            self.state.quantized_run.accuracy,
        )
        self.state.files["nir"] = NIR_FILE
        return f"wrote {NIR_FILE}, weight sparsity {100 * self.state.sparsity:.1f}%"

    def _vectors(self) -> str:
        from ecs_common.vectors import save_expected, save_samples

        assert self.state.quantized_run is not None and self.state.x is not None
        expected = expected_outputs(self.state.model.network, self.state.quantized_run)
        save_samples(self.staging / SAMPLES_PATH, self.state.x, self.state.y)
        save_expected(self.staging / EXPECTED_PATH, expected)
        self.state.files["samples"] = SAMPLES_PATH
        self.state.files["expected"] = EXPECTED_PATH
        shape = "x".join(str(size) for size in expected.output_states.shape)
        return f"wrote {expected.num_samples} samples and expected output states [{shape}], latency {expected.latency}"

    def _deploy(self, arguments: list[str], **options: Any) -> Any:
        return run_deploy(arguments, cwd=self.staging, command=self.options.deploy_command, **options)

    def _simulate(self) -> str:
        arguments = ["simulate", NIR_FILE, "--samples", SAMPLES_PATH, "--expected", EXPECTED_PATH]
        arguments += ["--summary", SIMULATION_JSON, "--out", SIMULATION_NPZ, "--show", "0"]
        result = self._deploy(arguments, allowed=(0, EXIT_MISMATCH))
        simulation = json.loads((self.staging / SIMULATION_JSON).read_text())
        self.state.files["simulation"] = SIMULATION_JSON
        self.state.accuracy["deployed"] = simulation.get("accuracy")
        self.state.comparison = simulation.get("comparison")
        comparison = self.state.comparison or {}
        exact = "bit-exact" if result.returncode == 0 else "DIFFERENT from the training side"
        return (
            f"deployed accuracy {100 * (self.state.accuracy['deployed'] or 0):.2f}%, outputs {exact}: "
            f"{comparison.get('output_mismatches')} mismatches, max abs error {comparison.get('max_abs_error')} LSB, "
            f"MSE {comparison.get('mse')}"
        )

    def _memfiles(self) -> str:
        result = self._deploy(["memfiles", NIR_FILE, "--out", MEMFILES_DIR], capture=True)
        count = verify_manifest(self.staging / MEMFILES_DIR)
        self.state.files["memfiles"] = f"{MEMFILES_DIR}/manifest.json"
        last_line = (result.stdout.strip().splitlines() or [""])[-1]
        return f"{last_line}; {count} files match their manifest checksums"

    def _report(self) -> str:
        check = self._deploy(["check", NIR_FILE, "--json"], capture=True, allowed=(0, EXIT_DOES_NOT_FIT))
        placement = leading_json(check.stdout, "ecs-deploy check --json")
        self.state.utilization = core_utilization(placement, self.config.hardware_cfg.model_dump())
        self._deploy(["report", NIR_FILE, "--out", REPORT_DIR, "--samples", SAMPLES_PATH])
        self.state.files["report"] = REPORT_DIR
        fits = "fits" if placement.get("fits") else "does NOT fit"
        return f"{fits}: {placement.get('cores_needed')} of {placement.get('num_cores')} cores; wrote {REPORT_DIR}/"

    # The summary.

    def _summary(self, total_wall: float) -> dict[str, Any]:
        accuracy = self.state.accuracy
        return {
            "format": SUMMARY_FORMAT,
            "format_version": SUMMARY_VERSION,
            "producer": f"ecs-train {__version__}",
            "config": str(self.config_path),
            "dataset": self.config.data_cfg.name,
            "output": str(self.output),
            "checkpoint": str(self.options.checkpoint) if self.options.checkpoint is not None else None,
            "trained": self.state.trained_mode,
            "test_samples": None if self.state.x is None else int(len(self.state.x)),
            "accuracy": dict(accuracy),
            "sparsity": self.state.sparsity,
            "comparison": self.state.comparison,
            "utilization": self.state.utilization,
            "stages": self.stages,
            "total_wall_s": round(total_wall, 3),
            "files": dict(self.state.files),
            "versions": {"ecs_train": __version__, "torch": torch.__version__},
        }


def run_pipeline(options: RunOptions, console: Console | None = None) -> RunResult:
    """Run the main job with ``options`` and return its result (see :class:`Pipeline`)."""
    return Pipeline(options, console).run()
