"""training_export: NIR files, test samples and expected outputs of a run's unpruned and pruned checkpoints."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nir
import numpy as np
import pytest
import yaml

from ecs_common.errors import ConfigError
from ecs_common.metadata import read_metadata
from ecs_common.vectors import load_expected, load_samples
from ecs_train.config import load_yaml
from ecs_train.constraints import accelerator_config_of
from ecs_train.errors import CheckpointError, OutputExistsError
from ecs_train.export import find_config, training_export
from ecs_train.pruning import prune_model, save_pruned_checkpoint
from ecs_train.training import initialize_experiment

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """Train the digits network for one epoch on two batches, then prune a copy to 50%; return the config path."""
    folder = tmp_path_factory.mktemp("export")
    config = yaml.safe_load((ROOT / "config" / "digits_feed_forward.yaml").read_text())
    config["trainer_cfg"].update(num_epochs=1, qat_epochs=0, limit_batches=2, output_path=str(folder / "run"))
    config["data_cfg"]["cache_dir"] = str(folder / "cache")
    path = folder / "digits_tiny.yaml"
    path.write_text(yaml.safe_dump(config))

    experiment = load_yaml(path)
    trainer, model, data_module = initialize_experiment(experiment)
    trainer.fit(model, datamodule=data_module)
    model.cpu()
    result = prune_model(
        model, data_module, accelerator_config_of(experiment), sparsity=0.5, fine_tune_epochs=0, limit_batches=1
    )
    save_pruned_checkpoint(model, folder / "run" / "checkpoints" / "pruned.ckpt", result.record)
    return path


@pytest.mark.slow
def test_training_export_both_checkpoints(trained_run, tmp_path):
    folders = training_export(trained_run, num_samples=4, output_dir=tmp_path / "vectors")

    assert sorted(folders) == ["pruned", "unpruned"]
    checkpoints = trained_run.parent / "run" / "checkpoints"
    for name, checkpoint in (("unpruned", "final.ckpt"), ("pruned", "pruned.ckpt")):
        folder = folders[name]
        samples = load_samples(folder / "samples.npz")
        expected = load_expected(folder / "expected.npz")
        assert samples.x.shape == (4, 20, 2, 16, 16)
        assert expected.output_states.shape == (4, 20, 10)
        assert sorted(expected.spikes) == ["layers.2"]
        np.testing.assert_array_equal(expected.spike_counts["layers.2"], expected.spikes["layers.2"].sum(axis=1))

        provenance = read_metadata(nir.read(folder / "network.nir")).provenance
        digest = hashlib.sha256((checkpoints / checkpoint).read_bytes()).hexdigest()
        assert provenance.checkpoint_sha256 == digest
        assert provenance.dataset == "digits"
    pruned = read_metadata(nir.read(folders["pruned"] / "network.nir")).provenance
    assert pruned.sparsity == pytest.approx(0.5, abs=0.01)

    with pytest.raises(OutputExistsError, match="force"):
        training_export(trained_run, num_samples=4, output_dir=tmp_path / "vectors")


@pytest.mark.slow
def test_training_export_rejects_too_many_samples(trained_run, tmp_path):
    with pytest.raises(ConfigError, match="num_samples=100000"):
        training_export(trained_run, num_samples=100000, output_dir=tmp_path / "vectors")


def test_training_export_needs_a_run(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "digits_feed_forward.yaml").read_text())
    config["trainer_cfg"]["output_path"] = str(tmp_path / "never_run")
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(config))

    with pytest.raises(CheckpointError, match="ecs-train run"):
        training_export(path, output_dir=tmp_path / "vectors")


def test_find_config_by_name_and_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert find_config("digits").resolve() == (ROOT / "config" / "digits_feed_forward.yaml").resolve()
    with pytest.raises(ConfigError, match="no config for dataset 'nosuch'"):
        find_config("nosuch")
    with pytest.raises(ConfigError, match="not found"):
        find_config("missing.yaml")
