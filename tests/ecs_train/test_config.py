"""Tests of the experiment config: YAML loading, validation errors, assignment and saving."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ecs_common.errors import ConfigError
from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_train.cli import app
from ecs_train.config import ExperimentConfig, load_yaml, parse_config, save_yaml

REPOSITORY = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPOSITORY / "config"
SHIPPED_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda path: path.name)
def test_shipped_configs_load(path: Path) -> None:
    config = load_yaml(path)
    assert config.model_cfg.network_cfg.hidden_sizes == [128]
    assert config.model_cfg.quant_cfg.enabled


def test_shipped_configs_exist() -> None:
    names = {path.name for path in SHIPPED_CONFIGS}
    for name in ("digits", "nmnist", "shd", "fsdd"):
        assert f"{name}_feed_forward.yaml" in names


def test_empty_mapping_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "defaults.yaml"
    path.write_text("{}\n", encoding="utf-8")
    config = load_yaml(path)
    assert config.model_cfg.network_cfg.architecture == "feed_forward"
    assert config.model_cfg.network_cfg.hidden_sizes == [128]
    assert config.data_cfg.name == "digits"


def test_invalid_file_lists_every_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "model_cfg": {
                "network_cfg": {"tau_mem": -0.01, "neuron_type": "izhikevich", "hidden_sizes": [64, 0], "bogus": 1},
                "quant_cfg": {"weight_format": "Q(8,9)"},
            },
            "trainer_cfg": {"num_epochs": "many", "learning_rate": 0, "devices": -3},
            "hardware_cfg": {"num_cores": 0},
            "pruning_cfg": {"sparsity": 1.5},
            "data_cfg": {"name": "mnist"},
            "extra_section": {},
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    message = str(caught.value)

    expected_lines = [
        "model_cfg.network_cfg.tau_mem: Input should be greater than 0 (got -0.01)",
        "model_cfg.network_cfg.neuron_type: Input should be 'lif', 'cubalif' or 'if' (got 'izhikevich')",
        "model_cfg.network_cfg.hidden_sizes.1: Input should be greater than 0 (got 0)",
        "model_cfg.network_cfg.bogus: unknown field; expected one of architecture, hidden_sizes",
        "model_cfg.quant_cfg.weight_format: ",
        "trainer_cfg.num_epochs: Input should be a valid integer",
        "trainer_cfg.learning_rate: Input should be greater than 0 (got 0)",
        "trainer_cfg.devices: devices must be 'auto', a positive count or a list of device indices, got -3",
        "hardware_cfg.num_cores: Input should be greater than 0 (got 0)",
        "pruning_cfg.sparsity: Input should be less than 1 (got 1.5)",
        "data_cfg.name: ",
        "extra_section: unknown field; expected one of model_cfg, trainer_cfg, data_cfg, hardware_cfg, pruning_cfg",
    ]
    for line in expected_lines:
        assert line in message, f"missing {line!r} in:\n{message}"
    assert "12 errors" in message
    assert str(path) in message


def test_cross_field_error_names_fields() -> None:
    with pytest.raises(ConfigError, match=r"model_cfg\.network_cfg: v_reset 2\.0 must be below v_threshold 1\.0"):
        parse_config({"model_cfg": {"network_cfg": {"v_reset": 2.0}}})
    with pytest.raises(ConfigError, match=r"dt 0\.02 s exceeds tau_mem 0\.01 s"):
        parse_config({"model_cfg": {"network_cfg": {"dt": 0.02}}})
    with pytest.raises(ConfigError, match=r"reset_mode 'subtract' needs neuron_type 'lif'"):
        parse_config({"model_cfg": {"network_cfg": {"reset_mode": "subtract", "neuron_type": "if"}}})


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config file '.*empty\.yaml' is empty; "):
        load_yaml(path)


def test_cli_run_empty_config_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("empty.yaml").write_text("\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", "empty.yaml"])
    assert result.exit_code == 2
    assert "config file 'empty.yaml' is empty; " in result.output


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_invalid_yaml_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model_cfg: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(path)


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model_cfg:\n  network_cfg:\n    tau_mem: 0.01\n   dt: 0.001\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:4:")
    assert "\n" not in message


def test_cli_lists_config_errors_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model_cfg:\n  network_cfg:\n    tau_mem: -1\n    dt: 0\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("error: invalid config ")
    assert lines[0].endswith("2 errors")
    assert lines[1].startswith("  model_cfg.network_cfg.tau_mem: ")
    assert lines[2].startswith("  model_cfg.network_cfg.dt: ")
    assert "Traceback" not in result.output


def test_top_level_list_rejected() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config([1, 2])


def test_assignment_is_validated() -> None:
    config = ExperimentConfig()
    config.trainer_cfg.num_epochs = 5
    assert config.trainer_cfg.num_epochs == 5
    config.hardware_cfg["num_neurons_core"] = 512
    assert config.hardware_cfg.num_neurons_core == 512
    config.model_cfg.network_cfg["hidden_sizes"] = [32, 16]
    assert config.model_cfg.network_cfg.hidden_sizes == [32, 16]

    with pytest.raises(ConfigError, match=r"(?s)TrainerConfig\.num_epochs = 0: 1 error.*greater than or equal to 1"):
        config.trainer_cfg.num_epochs = 0
    assert config.trainer_cfg.num_epochs == 5
    with pytest.raises(KeyError, match="unknown TrainerConfig field 'epochs'"):
        config.trainer_cfg["epochs"] = 3


def test_quant_formats_parse_from_strings() -> None:
    config = parse_config({"model_cfg": {"quant_cfg": {"weight_format": "Q(6,4)", "state_format": "Q16.4"}}})
    assert config.model_cfg.quant_cfg.weight_format == FixedPointFormat(wl=6, fl=4)
    assert config.model_cfg.quant_cfg.state_format == FixedPointFormat(wl=16, fl=4)


def test_checkpoint_dir_defaults_under_output() -> None:
    config = parse_config({"trainer_cfg": {"output_path": "runs/a"}})
    assert config.trainer_cfg.checkpoint_dir == Path("runs/a/checkpoints")
    config.trainer_cfg.checkpoint_path = "elsewhere"
    assert config.trainer_cfg.checkpoint_dir == Path("elsewhere")


def test_limit_batches_accepts_fraction_and_count() -> None:
    assert parse_config({"trainer_cfg": {"limit_batches": 0.25}}).trainer_cfg.limit_batches == 0.25
    assert parse_config({"trainer_cfg": {"limit_batches": 3}}).trainer_cfg.limit_batches == 3
    with pytest.raises(ConfigError, match="limit_batches must be a fraction"):
        parse_config({"trainer_cfg": {"limit_batches": 0}})


def test_save_yaml_round_trip(tmp_path: Path) -> None:
    config = load_yaml(CONFIG_DIR / "digits_feed_forward.yaml")
    config.trainer_cfg.num_epochs = 7
    config.model_cfg.quant_cfg = QuantConfig(weight_format="Q(6,4)", state_format="Q(16,4)", mode="ptq")
    path = save_yaml(config, tmp_path / "nested" / "saved.yaml")

    reloaded = load_yaml(path)
    assert reloaded == config
    assert not list(path.parent.glob(".*.tmp")), "no temporary file should remain"
