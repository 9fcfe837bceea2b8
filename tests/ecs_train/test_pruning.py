"""Tests of global magnitude pruning, fitting the hardware, fine-tuning under masks and pruned checkpoints."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from ecs_common.errors import ConfigError
from ecs_train.config import ExperimentConfig, load_yaml
from ecs_train.constraints import EmptyLayerError, accelerator_config_of, check_constraints, constraint_report
from ecs_train.data import build_data_module
from ecs_train.errors import OutputExistsError
from ecs_train.models import build_model
from ecs_train.pruning import (
    PRUNING_KEY,
    PruningRecord,
    fine_tune,
    is_pruned,
    load_pruned_model,
    make_permanent,
    masks_of,
    prunable_parameters,
    prune_model,
    prune_to_sparsity,
    save_pruned_checkpoint,
    weight_sparsity,
)
from ecs_train.training import initialize_experiment, load_model

torch.set_num_threads(1)

REPOSITORY = Path(__file__).resolve().parents[2]
DIGITS_CONFIG = REPOSITORY / "config" / "digits_feed_forward.yaml"

# Batches per epoch and per evaluation in these tests, to keep them short on a CPU.
LIMIT_BATCHES = 2


def digits_config(root: Path) -> ExperimentConfig:
    """Return the digits config cut down for tests: one float and one QAT epoch on a few batches."""
    config = load_yaml(DIGITS_CONFIG)
    config.trainer_cfg.output_path = str(root / "run")
    config.trainer_cfg.num_epochs = 1
    config.trainer_cfg.qat_epochs = 1
    config.trainer_cfg.limit_batches = 3
    config.trainer_cfg.accelerator = "cpu"
    config.trainer_cfg.devices = 1
    config.data_cfg.cache_dir = root / "cache"
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, Path]:
    """Train a digits network for a few batches and return its config and final (quantized) checkpoint."""
    root = tmp_path_factory.mktemp("digits")
    config = digits_config(root)
    trainer, model, data_module = initialize_experiment(config)
    trainer.fit(model, datamodule=data_module)
    checkpoint = config.trainer_cfg.checkpoint_dir / "final.ckpt"
    assert checkpoint.is_file()
    return config, checkpoint


def random_network(seed: int = 0):
    torch.manual_seed(seed)
    config = load_yaml(DIGITS_CONFIG)
    return build_model(config.model_cfg.network_cfg, (2, 16, 16), 10)


def all_weights(network) -> torch.Tensor:
    return torch.cat([module.weight.detach().flatten() for _, module in prunable_parameters(network)])


def all_masks(network) -> torch.Tensor:
    return torch.cat([mask.flatten() for mask in masks_of(network).values()])


# Pruning to a sparsity.


def test_prune_reaches_exact_sparsity() -> None:
    network = random_network()
    total = all_weights(network).numel()
    original = all_weights(network).clone()

    reached = prune_to_sparsity(network, 0.3)

    assert reached == pytest.approx(round(0.3 * total) / total)
    assert all(is_pruned(module) for _, module in prunable_parameters(network))
    kept = all_masks(network)
    assert original[~kept].abs().max() <= original[kept].abs().min()


def test_prune_is_global_across_layers() -> None:
    network = random_network()
    with torch.no_grad():
        output = network.layers[3].weight
        output.add_(torch.sign(output))  # every output weight is now larger than any hidden weight

    prune_to_sparsity(network, 0.5)

    masks = masks_of(network)
    assert bool(masks["layers.3.weight"].all())
    assert float(masks["layers.1.weight"].float().mean()) < 0.5


def test_iterative_pruning_keeps_earlier_masks() -> None:
    network = random_network()
    prune_to_sparsity(network, 0.2)
    first = all_masks(network).clone()

    reached = prune_to_sparsity(network, 0.5)

    second = all_masks(network)
    assert reached == pytest.approx(0.5, abs=1e-4)
    assert not bool((second & ~first).any()), "a weight pruned in step one came back in step two"


def test_lower_sparsity_prunes_nothing_more() -> None:
    network = random_network()
    prune_to_sparsity(network, 0.4)
    before = all_masks(network).clone()

    reached = prune_to_sparsity(network, 0.1)

    assert reached == pytest.approx(0.4, abs=1e-4)
    assert torch.equal(all_masks(network), before)


def test_prune_emptying_layer_raises_before_changes() -> None:
    network = random_network()
    with torch.no_grad():
        network.layers[3].weight.mul_(1e-6)

    with pytest.raises(EmptyLayerError, match=r"pruning to sparsity 50% would remove every weight of 'layers.3'"):
        prune_to_sparsity(network, 0.5)
    assert not any(is_pruned(module) for _, module in prunable_parameters(network))


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_invalid_sparsity_raises(sparsity: float) -> None:
    with pytest.raises(ConfigError, match=r"sparsity .* is invalid; use a fraction of the weights in \[0, 1\)"):
        prune_to_sparsity(random_network(), sparsity)


def test_make_permanent_leaves_exact_zeros() -> None:
    network = random_network()
    prune_to_sparsity(network, 0.6)
    masks = masks_of(network)

    returned = make_permanent(network)

    for name, mask in masks.items():
        assert torch.equal(returned[name], mask)
    assert not any(is_pruned(module) for _, module in prunable_parameters(network))
    weights = all_weights(network)
    assert bool((weights[~all_masks(network)] == 0).all())
    assert weight_sparsity(network) == pytest.approx(0.6, abs=1e-4)


# Fine-tuning and checkpoints.


def test_fine_tuning_keeps_pruned_weights_zero(trained: tuple[ExperimentConfig, Path]) -> None:
    config, checkpoint = trained
    model = load_model(config, checkpoint)
    data_module = build_data_module(config.data_cfg, batch_size=config.trainer_cfg.batch_size)
    prune_to_sparsity(model.network, 0.5)
    masks = {name: mask.clone() for name, mask in masks_of(model.network).items()}
    kept_before = model.network.layers[1].weight_orig.detach().clone()

    fine_tune(model, data_module, epochs=1, learning_rate=1e-2, limit_batches=LIMIT_BATCHES)

    for (_, module), mask in zip(prunable_parameters(model.network), masks.values(), strict=True):
        weight = module.weight_orig.detach() * module.weight_mask
        assert bool((weight[~mask] == 0).all())
        assert torch.equal(module.weight_mask.to(torch.bool), mask)
    assert not torch.equal(model.network.layers[1].weight_orig.detach(), kept_before), "fine-tuning changed nothing"


def test_fine_tuning_keeps_best_validation_epoch(trained: tuple[ExperimentConfig, Path]) -> None:
    config, checkpoint = trained
    model = load_model(config, checkpoint)
    data_module = build_data_module(config.data_cfg, batch_size=config.trainer_cfg.batch_size)
    prune_to_sparsity(model.network, 0.5)

    kept = fine_tune(model, data_module, epochs=2, learning_rate=1e-2, limit_batches=LIMIT_BATCHES)
    last = fine_tune(model, data_module, epochs=2, learning_rate=1e-2, limit_batches=LIMIT_BATCHES, select_best=False)

    assert kept in (1, 2)
    assert last == 2
    assert fine_tune(model, data_module, epochs=0, learning_rate=1e-2) is None
    assert weight_sparsity(model.network) == pytest.approx(0.5, abs=1e-4)


def test_masks_survive_checkpoint_save_and_load(trained: tuple[ExperimentConfig, Path], tmp_path: Path) -> None:
    config, checkpoint = trained
    model = load_model(config, checkpoint)
    data_module = build_data_module(config.data_cfg, batch_size=config.trainer_cfg.batch_size)
    result = prune_model(
        model,
        data_module,
        accelerator_config_of(config),
        sparsity=0.3,
        fine_tune_epochs=1,
        limit_batches=LIMIT_BATCHES,
        allow_saturation=True,
    )
    path = save_pruned_checkpoint(model, tmp_path / "pruned.ckpt", result.record)

    stored = torch.load(path, map_location="cpu", weights_only=False)
    plain = load_model(config, path)
    restored, record = load_pruned_model(config, path, reapply_masks=True)

    assert not any(key.endswith(("weight_orig", "weight_mask")) for key in stored["state_dict"])
    assert PRUNING_KEY in stored
    assert record is not None
    assert record.sparsity == pytest.approx(0.3, abs=1e-4)
    assert record.accuracy_before is not None
    assert record.accuracy_after is not None
    for name, mask in result.record.masks.items():
        assert torch.equal(record.masks[name], mask)
        weight = dict(plain.network.named_parameters())[name].detach()
        assert bool((weight[~mask] == 0).all()), f"{name}: a pruned weight is not exactly zero"
    assert all(is_pruned(module) for _, module in prunable_parameters(restored.network))
    assert torch.equal(all_masks(restored.network), torch.cat([m.flatten() for m in result.record.masks.values()]))
    assert restored.network.quantized == model.network.quantized


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparsity": 1.0}, r"sparsity 1.0 is invalid"),
        ({"sparsity": 0.3, "iterations": 0}, r"iterations 0 is invalid"),
        ({"sparsity": 0.3, "fine_tune_epochs": -1}, r"fine_tune_epochs -1 is invalid"),
        ({"sparsity": 0.3, "schedule": "linear"}, r"invalid schedule 'linear'; expected one of constant, cosine"),
    ],
)
def test_prune_model_rejects_invalid_settings(
    trained: tuple[ExperimentConfig, Path], options: dict, message: str
) -> None:
    config, checkpoint = trained
    model = load_model(config, checkpoint)

    with pytest.raises(ConfigError, match=message):
        prune_model(model, None, accelerator_config_of(config), **options)
    assert not any(is_pruned(module) for _, module in prunable_parameters(model.network))


def test_saving_over_checkpoint_needs_force(trained: tuple[ExperimentConfig, Path], tmp_path: Path) -> None:
    config, checkpoint = trained
    model, _ = load_pruned_model(config, checkpoint)
    prune_to_sparsity(model.network, 0.2)
    record = PruningRecord(
        method="global_l1_unstructured",
        sparsity=0.2,
        target_sparsity=0.2,
        fit_hardware=False,
        iterations=1,
        fine_tune_epochs=0,
        learning_rate=0.0,
        accuracy_before=None,
        accuracy_after=None,
        accuracy_without_fine_tuning=None,
        split="test",
        masks=make_permanent(model.network),
    )
    path = save_pruned_checkpoint(model, tmp_path / "pruned.ckpt", record)

    with pytest.raises(OutputExistsError, match="exists already; pass --force"):
        save_pruned_checkpoint(model, path, record)
    save_pruned_checkpoint(model, path, record, force=True)


def test_exported_pruned_weights_are_exact_zeros(trained: tuple[ExperimentConfig, Path], tmp_path: Path) -> None:
    from ecs_train.nir_export import export_nir

    config, checkpoint = trained
    model = load_model(config, checkpoint)
    prune_to_sparsity(model.network, 0.7)
    masks = masks_of(model.network)
    metadata = {"quant_cfg": config.model_cfg.quant_cfg, "dt": config.model_cfg.network_cfg.dt}
    path = tmp_path / "pruned.nir"

    export_nir(model.network, metadata, path, torch.zeros(model.network.input_shape))
    graph = nir.read(path)

    for name, mask in masks.items():
        weight = np.asarray(graph.nodes[name.removesuffix(".weight")].weight)
        assert weight.shape == tuple(mask.shape)
        assert np.all(weight[~mask.numpy()] == 0.0), f"{name}: pruned weights are not exact zeros in the NIR file"


# Fitting the hardware.


def test_fit_hardware_makes_network_pass_check(trained: tuple[ExperimentConfig, Path], tmp_path: Path) -> None:
    config, checkpoint = trained
    config = copy.deepcopy(config)
    config.hardware_cfg.num_synapses_core = 16384
    accelerator = accelerator_config_of(config)
    model = load_model(config, checkpoint)
    data_module = build_data_module(config.data_cfg, batch_size=config.trainer_cfg.batch_size)
    before = check_constraints(config, accelerator, model=model, allow_saturation=True)
    assert before.global_pruning_necessary

    result = prune_model(
        model,
        data_module,
        accelerator,
        fit_hardware=True,
        fine_tune_epochs=1,
        iterations=2,
        limit_batches=LIMIT_BATCHES,
        allow_saturation=True,
    )
    after = check_constraints(config, accelerator, model=model, allow_saturation=True)

    assert after[:2] == (False, False)
    assert result.report.fits
    assert constraint_report(model, accelerator, allow_saturation=True).fits
    assert 0.0 < result.record.sparsity < 0.9
    assert [step.iteration for step in result.record.steps] == [1, 2]
    assert result.record.steps[0].sparsity < result.record.steps[1].sparsity
    assert after.num_weights_hidden < before.num_weights_hidden


def test_fit_hardware_on_fitting_network_prunes_nothing(trained: tuple[ExperimentConfig, Path]) -> None:
    from ecs_train.pruning import sparsity_to_fit

    config, checkpoint = trained
    model = load_model(config, checkpoint)

    assert sparsity_to_fit(model.network, accelerator_config_of(config)) == pytest.approx(
        weight_sparsity(model.network)
    )


# The prune command.


def test_prune_command_writes_checkpoint(trained: tuple[ExperimentConfig, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ecs_train.cli import app
    from ecs_train.config import save_yaml

    config, checkpoint = trained
    config_path = save_yaml(config, tmp_path / "config.yaml")
    out = tmp_path / "pruned.ckpt"
    arguments = ["prune", str(config_path), "--checkpoint", str(checkpoint), "--sparsity", "0.4"]
    arguments += ["--fine-tune-epochs", "1", "--limit-batches", str(LIMIT_BATCHES), "--out", str(out)]

    result = CliRunner().invoke(app, arguments)
    again = CliRunner().invoke(app, arguments)

    assert result.exit_code == 0, result.output
    assert "accuracy before pruning (quantized, test):" in result.output
    assert "weight sparsity: 40.00%" in result.output
    assert "the network fits the accelerator" in result.output
    assert out.is_file()
    _, record = load_pruned_model(config, out)
    assert record is not None
    assert record.sparsity == pytest.approx(0.4, abs=1e-4)
    assert again.exit_code == 2
    assert "exists already; pass --force" in again.output


def test_prune_command_needs_a_target(trained: tuple[ExperimentConfig, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ecs_train.cli import app
    from ecs_train.config import save_yaml

    config, checkpoint = trained
    config_path = save_yaml(config, tmp_path / "config.yaml")

    result = CliRunner().invoke(app, ["prune", str(config_path), "--checkpoint", str(checkpoint)])

    assert result.exit_code == 2
    assert "nothing to prune: give --sparsity" in result.output


def test_prune_reads_fine_tuning_config(trained: tuple[ExperimentConfig, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ecs_train.cli import app
    from ecs_train.config import save_yaml

    config, checkpoint = trained
    config = copy.deepcopy(config)
    config.pruning_cfg.learning_rate = 0.0042
    config.pruning_cfg.schedule = "cosine"
    config_path = save_yaml(config, tmp_path / "config.yaml")
    arguments = ["prune", str(config_path), "--checkpoint", str(checkpoint), "--sparsity", "0.2"]
    arguments += ["--fine-tune-epochs", "1", "--limit-batches", str(LIMIT_BATCHES)]
    from_config = tmp_path / "from-config.ckpt"
    from_options = tmp_path / "from-options.ckpt"

    result = CliRunner().invoke(app, [*arguments, "--out", str(from_config)])
    options = ["--schedule", "constant", "--learning-rate", "0.003", "--out", str(from_options)]
    overridden = CliRunner().invoke(app, [*arguments, *options])

    assert result.exit_code == 0, result.output
    assert overridden.exit_code == 0, overridden.output
    _, record = load_pruned_model(config, from_config)
    assert record is not None
    assert record.schedule == "cosine"
    assert record.learning_rate == pytest.approx(0.0042)
    _, record = load_pruned_model(config, from_options)
    assert record is not None
    assert record.schedule == "constant"
    assert record.learning_rate == pytest.approx(0.003)


def test_pruning_config_sets_fine_tuning(trained: tuple[ExperimentConfig, Path]) -> None:
    from ecs_train.pruning import default_fine_tune_learning_rate

    config, _ = trained
    config = copy.deepcopy(config)
    assert default_fine_tune_learning_rate(config) == pytest.approx(0.5 * config.trainer_cfg.learning_rate)

    config.pruning_cfg.learning_rate = 0.0042
    assert default_fine_tune_learning_rate(config) == pytest.approx(0.0042)

    with pytest.raises(ValueError, match="schedule"):
        ExperimentConfig.model_validate({"pruning_cfg": {"schedule": "linear"}})
    with pytest.raises(ValueError, match="finite number"):
        ExperimentConfig.model_validate({"pruning_cfg": {"learning_rate": float("inf")}})


# The accuracy-against-sparsity script, scripts/pruning_table.py.


def load_pruning_table_script():
    path = REPOSITORY / "scripts" / "pruning_table.py"
    spec = importlib.util.spec_from_file_location("pruning_table", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pruning_table_measures_each_sparsity(
    trained: tuple[ExperimentConfig, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ecs_train.config import save_yaml

    config, checkpoint = trained
    config_path = save_yaml(config, tmp_path / "config.yaml")
    out = tmp_path / "table.json"
    arguments = [str(config_path), "--checkpoint", str(checkpoint), "--sparsities", "0,0.5"]
    arguments += ["--fine-tune-epochs", "1", "--limit-batches", str(LIMIT_BATCHES), "--schedule", "cosine"]

    assert load_pruning_table_script().main([*arguments, "--out", str(out)]) == 0

    result = json.loads(out.read_text())
    assert result["complete"]
    assert result["limit_batches"] == LIMIT_BATCHES
    assert result["schedule"] == "cosine"
    assert [row["sparsity"] for row in result["rows"]] == [0.0, 0.5]
    assert result["rows"][1]["reached_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert result["rows"][1]["synapses"] < result["rows"][0]["synapses"]
    for row in result["rows"]:
        assert 0.0 <= row["test"] <= 1.0
        assert 0.0 <= row["val"] <= 1.0
    table = capsys.readouterr().out
    assert "| 50% |" in table
    assert "| 0% (fine-tuning only) |" in table


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--sparsities", "0.3,1.5"], "every value must lie in [0, 1)"),
        (["--sparsities", "0.3;0.5"], "give comma-separated fractions"),
        (["--sparsities", "0.3,,0.5"], "give comma-separated fractions"),
        (["--iterations", "0"], "invalid --iterations 0"),
        (["--fine-tune-epochs", "-1"], "invalid --fine-tune-epochs -1"),
        (["--limit-batches", "0"], "invalid --limit-batches 0"),
        (["--learning-rate", "0"], "invalid --learning-rate 0.0"),
        (["--learning-rate", "nan"], "invalid --learning-rate nan"),
    ],
)
def test_pruning_table_rejects_invalid_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    arguments = ["config.yaml", "--checkpoint", "x.ckpt", "--out", str(tmp_path / "table.json"), *options]

    with pytest.raises(SystemExit) as exit_info:
        load_pruning_table_script().main(arguments)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "table.json").exists()


def test_pruning_table_rejects_unusable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = load_pruning_table_script()
    existing = tmp_path / "table.json"
    existing.write_text("{}")

    with pytest.raises(SystemExit) as exists:
        script.main(["config.yaml", "--checkpoint", "x.ckpt", "--out", str(existing)])
    exists_message = capsys.readouterr().err
    with pytest.raises(SystemExit) as folder:
        script.main(["config.yaml", "--checkpoint", "x.ckpt", "--out", str(tmp_path), "--force"])
    folder_message = capsys.readouterr().err

    assert exists.value.code == 2
    assert "exists already; pass --force" in exists_message
    assert folder.value.code == 2
    assert "is a folder; give a JSON file name" in folder_message


def test_pruning_table_reports_missing_checkpoint(
    trained: tuple[ExperimentConfig, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ecs_train.config import save_yaml

    config, _ = trained
    config_path = save_yaml(config, tmp_path / "config.yaml")
    arguments = [str(config_path), "--checkpoint", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "t.json")]

    assert load_pruning_table_script().main(arguments) == 2
    assert "missing.ckpt" in capsys.readouterr().err
