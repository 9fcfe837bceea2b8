"""Tests of DataConfig validation and of locating the sample data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ecs_train.data import DATASET_NAMES, DataConfig, shared_data_dir
from ecs_train.data import paths as data_paths


def test_config_defaults():
    cfg = DataConfig()

    assert cfg.name == "digits"
    assert cfg.data_dir is None
    assert cfg.cache_dir == Path("~/.cache/ecs-train").expanduser()
    assert cfg.image_size == 16
    assert cfg.nmnist_size == 17
    assert cfg.num_channels == 700
    assert cfg.num_workers == 0
    assert cfg.max_samples is None
    assert cfg.augment is False


def test_config_unknown_name_lists_allowed():
    with pytest.raises(ValidationError, match="'digits', 'nmnist', 'shd' or 'fsdd'"):
        DataConfig(name="mnist")

    assert DATASET_NAMES == ("digits", "nmnist", "shd", "fsdd")


def test_config_rejects_unknown_field():
    with pytest.raises(ValidationError, match="num_timestep"):
        DataConfig(num_timestep=10)


def test_config_validates_assignment():
    cfg = DataConfig()

    with pytest.raises(ValidationError, match="num_timesteps"):
        cfg.num_timesteps = 0
    with pytest.raises(ValidationError, match="validation_fraction"):
        cfg.validation_fraction = 1.0


def test_config_shd_channel_limit():
    with pytest.raises(ValidationError, match="num_channels=701 is invalid for shd"):
        DataConfig(name="shd", num_channels=701)

    assert DataConfig(name="fsdd", num_channels=701).num_channels == 701


def test_config_expands_user_paths():
    cfg = DataConfig(data_dir="~/recordings", cache_dir="~/cache")

    assert cfg.data_dir == Path("~/recordings").expanduser()
    assert cfg.cache_dir == Path("~/cache").expanduser()


@pytest.mark.parametrize(
    ("name", "duration_s", "validation"),
    [
        ("digits", 0.3, (0.125, "stratified")),
        ("nmnist", 0.3, (0.2, "last")),
        ("shd", 1.0, (0.1, "stratified")),
        ("fsdd", 1.0, (0.1, "stratified")),
    ],
)
def test_config_dataset_defaults(name, duration_s, validation):
    cfg = DataConfig(name=name)

    assert cfg.resolved_duration_s() == duration_s
    assert cfg.resolved_validation() == validation


def test_config_overrides_defaults():
    cfg = DataConfig(name="nmnist", duration_s=0.25, validation_fraction=0.1, validation_split="stratified")

    assert cfg.resolved_duration_s() == 0.25
    assert cfg.resolved_validation() == (0.1, "stratified")


def test_shared_data_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ECS_DATA_DIR", str(tmp_path))

    assert shared_data_dir() == tmp_path


def test_shared_data_dir_missing_env_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("ECS_DATA_DIR", str(tmp_path / "missing"))
    checkout = tmp_path / "checkout"
    (checkout / "packages" / "ecs-train").mkdir(parents=True)
    monkeypatch.setattr(data_paths, "_repository_root", lambda: checkout)

    assert shared_data_dir() is None

    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert shared_data_dir() == tmp_path / "shared" / "data"


def test_shared_data_dir_outside_checkout(monkeypatch):
    monkeypatch.delenv("ECS_DATA_DIR", raising=False)
    monkeypatch.setattr(data_paths, "_repository_root", lambda: None)

    assert shared_data_dir() is None


def test_repository_root_is_checkout():
    root = data_paths._repository_root()

    assert root is not None
    assert (root / "packages" / "ecs-train" / "pyproject.toml").is_file()
