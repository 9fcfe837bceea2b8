"""Tests of Lightning training, checkpoints, the performance log and the ``ecs-train fit`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from ecs_train.cli import app
from ecs_train.config import ExperimentConfig, load_yaml, parse_config, save_yaml
from ecs_train.errors import CheckpointError
from ecs_train.training import find_callback, initialize_experiment, load_model
from ecs_train.visualization.network_logger import NetworkLogger, load_perf_log

torch.set_num_threads(1)

REPOSITORY = Path(__file__).resolve().parents[2]
DIGITS_CONFIG = REPOSITORY / "config" / "digits_feed_forward.yaml"


def _quick_config(output: Path) -> ExperimentConfig:
    config = load_yaml(DIGITS_CONFIG)
    config.trainer_cfg.output_path = str(output)
    config.trainer_cfg.num_epochs = 3
    config.trainer_cfg.qat_epochs = 1
    config.trainer_cfg.accelerator = "cpu"
    config.trainer_cfg.devices = 1
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    output = tmp_path_factory.mktemp("digits_run")
    config = _quick_config(output)
    trainer, model, data_module = initialize_experiment(config, limit_batches=8)
    trainer.fit(model, datamodule=data_module)
    results = trainer.test(model, data_module, verbose=False)
    return {"config": config, "trainer": trainer, "model": model, "data": data_module, "results": results}


def test_training_beats_chance(trained: dict) -> None:
    metrics = trained["results"][0]
    assert metrics["test_acc"] > 0.6, f"quantized test accuracy {metrics['test_acc']:.3f} is near chance (0.1)"
    assert "test_acc_float" in metrics
    assert trained["model"].network.quantized


def test_training_writes_checkpoints(trained: dict) -> None:
    checkpoint_dir = trained["config"].trainer_cfg.checkpoint_dir
    names = sorted(path.name for path in checkpoint_dir.iterdir())
    assert names == ["best.ckpt", "final.ckpt", "last.ckpt"]
    final = torch.load(checkpoint_dir / "final.ckpt", map_location="cpu", weights_only=False)
    assert final["ecs_quantized"] is True


def test_perf_log_saved_and_drawn(trained: dict) -> None:
    network_logger = find_callback(trained["trainer"], NetworkLogger)
    json_path, csv_path = network_logger.save_perf_log()
    png_path = network_logger.draw_perf_log()

    records = json.loads(json_path.read_text())
    assert [record["epoch"] for record in records] == [0, 1, 2, 3]
    assert [record["quantized"] for record in records] == [False, False, False, True]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_quantized"):
        assert all(record[key] is not None for record in records), f"{key} missing from some epochs"
    assert load_perf_log(csv_path) == records
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_round_trip(trained: dict) -> None:
    model = trained["model"]
    x, _ = trained["data"].test_arrays(16)
    x = torch.as_tensor(x)
    model.eval()
    expected = model.network.run(x)

    restored = load_model(trained["config"], trained["config"].trainer_cfg.checkpoint_dir / "final.ckpt")
    actual = restored.network.run(x)
    assert restored.network.quantized
    assert torch.equal(actual.words, expected.words)
    assert torch.equal(actual.states, expected.states)


def test_checkpoint_folder_resolves_final(trained: dict) -> None:
    restored = load_model(trained["config"], trained["config"].trainer_cfg.checkpoint_dir, quantized=False)
    assert not restored.network.quantized


def test_checkpoint_mismatch_names_layers(trained: dict) -> None:
    config = trained["config"].model_copy(deep=True)
    config.model_cfg.network_cfg.hidden_sizes = [64]
    with pytest.raises(CheckpointError) as caught:
        load_model(config, config.trainer_cfg.checkpoint_dir / "final.ckpt")
    message = str(caught.value)
    assert "network.layers.1.weight has shape [128, 512] in the checkpoint, config builds [64, 512]" in message
    assert "network.layers.3.weight has shape [10, 128] in the checkpoint, config builds [10, 64]" in message


def test_checkpoint_config_mismatch_lists_fields(trained: dict) -> None:
    config = trained["config"].model_copy(deep=True)
    config.model_cfg.network_cfg.tau_mem = 0.05
    config.model_cfg.network_cfg.dt = 0.002
    config.trainer_cfg.batch_size = 7  # trainer settings may differ
    with pytest.raises(CheckpointError) as caught:
        load_model(config, config.trainer_cfg.checkpoint_dir / "final.ckpt")
    message = str(caught.value)
    assert "model_cfg.network_cfg.tau_mem: config 0.05, checkpoint" in message
    assert "model_cfg.network_cfg.dt: config 0.002, checkpoint" in message
    assert "batch_size" not in message
    assert "use the config the checkpoint was trained with" in message


def test_checkpoint_quant_format_mismatch(trained: dict) -> None:
    values = trained["config"].model_dump(mode="json")
    values["model_cfg"]["quant_cfg"]["weight_format"]["wl"] += 2
    config = parse_config(values)
    with pytest.raises(CheckpointError, match="model_cfg.quant_cfg.weight_format"):
        load_model(config, config.trainer_cfg.checkpoint_dir / "final.ckpt")


def test_text_file_checkpoint_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.ckpt"
    path.write_text("# not a checkpoint\n", encoding="utf-8")
    with pytest.raises(CheckpointError) as caught:
        load_model(ExperimentConfig(), path)
    message = str(caught.value)
    assert "is not a PyTorch/Lightning checkpoint" in message
    assert "pass a .ckpt file written by 'ecs-train fit'" in message
    assert "invalid load key" not in message


def test_missing_checkpoint_raises(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model(ExperimentConfig(), tmp_path / "missing.ckpt")


def test_ptq_mode_quantizes_after_fit(tmp_path: Path) -> None:
    config = _quick_config(tmp_path)
    config.model_cfg.quant_cfg.mode = "ptq"
    config.trainer_cfg.num_epochs = 1
    trainer, model, data_module = initialize_experiment(config, limit_batches=3)
    trainer.fit(model, datamodule=data_module)
    assert trainer.current_epoch == 1, "ptq runs no QAT epochs"
    assert model.network.quantized

    lsb = config.model_cfg.quant_cfg.weight_format.lsb
    weight = model.network.layers[1].weight.detach()
    assert torch.equal(weight / lsb, torch.round(weight / lsb)), "post-training quantization rounds weights in place"


def _cli_config(tmp_path: Path, **trainer: object) -> Path:
    config = _quick_config(tmp_path / "run")
    config.trainer_cfg.num_epochs = 1
    config.trainer_cfg.qat_epochs = 0
    config.trainer_cfg.limit_batches = 2
    for key, value in trainer.items():
        setattr(config.trainer_cfg, key, value)
    return save_yaml(config, tmp_path / "quick.yaml")


def test_cli_fit_reports_accuracy(tmp_path: Path) -> None:
    path = _cli_config(tmp_path)
    output = tmp_path / "cli_output"
    runner = CliRunner()

    result = runner.invoke(app, ["fit", str(path), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "float test accuracy:" in result.output
    assert "quantized test accuracy:" in result.output
    assert (output / "perf_log.png").is_file()
    assert (output / "checkpoints" / "final.ckpt").is_file()

    again = runner.invoke(app, ["fit", str(path), "--output", str(output)])
    assert again.exit_code == 1
    assert "already holds checkpoints of an earlier run" in again.output
    assert "--force" in again.output

    forced = runner.invoke(app, ["fit", str(path), "--output", str(output), "--force", "--epochs", "1"])
    assert forced.exit_code == 0, forced.output


def test_cli_fit_missing_data_dir_exits_2(tmp_path: Path) -> None:
    path = _cli_config(tmp_path)
    output = tmp_path / "cli_output"
    earlier = output / "checkpoints" / "final.ckpt"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"earlier run")
    arguments = ["fit", str(path), "--output", str(output), "--data-dir", str(tmp_path / "missing"), "--force"]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 2
    assert f"data_dir {tmp_path / 'missing'} of dataset digits is not a folder" in result.output
    assert "Traceback" not in result.output
    assert earlier.read_bytes() == b"earlier run"


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"trainer_cfg": {"num_epochs": -1, "batch_size": "big"}}), encoding="utf-8")
    result = CliRunner().invoke(app, ["fit", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error: invalid config"), result.output
    assert lines[1].startswith("  trainer_cfg.num_epochs:"), "one indented line per invalid field"
    assert lines[2].startswith("  trainer_cfg.batch_size:"), "one indented line per invalid field"
    assert len(lines) == 3, result.output
    assert "Traceback" not in result.output


def test_seeded_runs_repeat(tmp_path: Path) -> None:
    outputs = []
    for run in range(2):
        config = _quick_config(tmp_path / f"run{run}")
        config.model_cfg.quant_cfg.enabled = False
        config.trainer_cfg.num_epochs = 1
        trainer, model, data_module = initialize_experiment(config, limit_batches=2)
        trainer.fit(model, datamodule=data_module)
        outputs.append(np.concatenate([p.detach().numpy().ravel() for p in model.parameters()]))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_load_without_dataset_uses_recorded_shape(trained: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing_dataset(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("dataset folder not found")

    monkeypatch.setattr("ecs_train.training.build_data_module", missing_dataset)
    restored = load_model(trained["config"], trained["config"].trainer_cfg.checkpoint_dir / "final.ckpt")
    assert restored.network.input_shape == (2, 16, 16)
    assert restored.network.num_classes == 10
