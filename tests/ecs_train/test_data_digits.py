"""Tests of the digits dataset: saccade simulation, splits, loaders and the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecs_train.data import DataConfig, build_data_module
from ecs_train.data.digits import DigitsSource, simulate_saccades


@pytest.fixture(scope="module")
def digits_module(tmp_path_factory):
    cfg = DataConfig(name="digits", cache_dir=tmp_path_factory.mktemp("cache"), num_timesteps=12)
    module = build_data_module(cfg, batch_size=16, seed=3)
    module.setup()
    return module


def test_digits_attributes(digits_module):
    assert digits_module.dataset_name == "digits"
    assert digits_module.input_shape == (2, 16, 16)
    assert digits_module.num_classes == 10
    assert digits_module.num_timesteps == 12
    assert digits_module.time_bin_s == pytest.approx(0.3 / 12)


def test_digits_batch_shape_and_values(digits_module):
    for loader in (digits_module.train_dataloader(), digits_module.val_dataloader(), digits_module.test_dataloader()):
        x, y = next(iter(loader))

        assert x.shape == (16, 12, 2, 16, 16)
        assert x.dtype == torch.float32
        assert set(x.unique().tolist()) <= {0.0, 1.0}
        assert y.shape == (16,)
        assert y.dtype == torch.int64
        assert int(y.min()) >= 0
        assert int(y.max()) < 10


def test_digits_split_sizes_and_disjoint(digits_module):
    train, val, test = (digits_module.split(name) for name in ("train", "val", "test"))

    assert (len(train), len(val), len(test)) == (1258, 180, 359)
    assert len(set(train.ids) | set(val.ids) | set(test.ids)) == 1797
    for split in (train, val, test):
        assert np.bincount(split.labels, minlength=10).min() > 0.05 * len(split)


def test_digits_events_in_every_bin(digits_module):
    frames = digits_module.split("test").frames(50)

    assert frames.dtype == np.uint8
    assert frames.max() == 1
    assert (frames.sum(axis=(2, 3, 4)) > 0).all(), "every time bin of every sample has events"
    assert frames[:, :, 0].sum() > 0, "OFF events"
    assert frames[:, :, 1].sum() > 0, "ON events"


def test_digits_test_arrays(digits_module):
    x, y = digits_module.test_arrays(5)
    test = digits_module.split("test")

    assert x.shape == (5, 12, 2, 16, 16)
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, test.labels[:5])
    np.testing.assert_array_equal(x, test.frames(5).astype(np.float32))

    batch_x, batch_y = next(iter(digits_module.test_dataloader()))
    np.testing.assert_array_equal(batch_x[:5].numpy(), x)
    np.testing.assert_array_equal(batch_y[:5].numpy(), y)


def test_digits_test_arrays_rejects_too_many(digits_module):
    with pytest.raises(ValueError, match="num_samples=360 is invalid: the digits test split has 359 samples"):
        digits_module.test_arrays(360)


def test_digits_unknown_split(digits_module):
    with pytest.raises(ValueError, match="unknown split 'validation'. Choose one of train, val, test"):
        digits_module.split("validation")


def test_digits_deterministic_across_caches(tmp_path, digits_module):
    cfg = DataConfig(name="digits", cache_dir=tmp_path, num_timesteps=12)
    again = build_data_module(cfg, batch_size=16, seed=3)

    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(again.split(name).bits, digits_module.split(name).bits)
        np.testing.assert_array_equal(again.split(name).ids, digits_module.split(name).ids)


def test_digits_seed_sets_shuffle_only(digits_module):
    cfg = digits_module.cfg
    same = build_data_module(cfg, batch_size=16, seed=3)
    other = build_data_module(cfg, batch_size=16, seed=4)

    _, first = next(iter(digits_module.train_dataloader()))
    _, repeated = next(iter(same.train_dataloader()))
    _, different = next(iter(other.train_dataloader()))

    assert torch.equal(first, repeated)
    assert not torch.equal(first, different)
    np.testing.assert_array_equal(other.split("test").ids, digits_module.split("test").ids)


def test_digits_cache_reused(digits_module, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("convert must not run when the cache exists")

    monkeypatch.setattr(DigitsSource, "convert", fail)
    again = build_data_module(digits_module.cfg, batch_size=16)

    np.testing.assert_array_equal(again.split("train").bits, digits_module.split("train").bits)


def test_digits_max_samples(tmp_path):
    cfg = DataConfig(name="digits", cache_dir=tmp_path, num_timesteps=6, image_size=12, max_samples=30)
    module = build_data_module(cfg, batch_size=8)

    assert [len(module.split(name)) for name in ("train", "val", "test")] == [30, 30, 30]
    x, _ = next(iter(module.train_dataloader()))
    assert x.shape == (8, 6, 2, 12, 12)


def test_digits_augment_shifts_training_only(tmp_path):
    cfg = DataConfig(name="digits", cache_dir=tmp_path, num_timesteps=6, max_samples=40, augment=True, max_shift=2)
    module = build_data_module(cfg, batch_size=40, seed=1)
    plain = module.split("train").frames(40)

    x, _ = next(iter(module.train_dataloader()))
    val_x, _ = next(iter(module.val_dataloader()))
    order = next(
        iter(
            torch.utils.data.DataLoader(
                range(40), batch_size=40, shuffle=True, generator=torch.Generator().manual_seed(1)
            )
        )
    )

    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert not np.array_equal(x.numpy(), plain[order.numpy()].astype(np.float32))
    np.testing.assert_array_equal(val_x.numpy(), module.split("val").frames(40).astype(np.float32))

    again, _ = next(iter(build_data_module(cfg, batch_size=40, seed=1).train_dataloader()))
    assert torch.equal(x, again)


def test_simulate_saccades_blank_scan_is_silent():
    scans = np.zeros((2, 8, 8), dtype=np.float32)
    scans[1, 2:6, 2:6] = 16.0
    thresholds = np.full((2, 16, 16), 0.25, dtype=np.float32)

    frames = simulate_saccades(scans, thresholds, image_size=16, num_timesteps=9)

    assert frames.shape == (2, 9, 2, 16, 16)
    assert frames[0].sum() == 0
    assert frames[1].sum() > 0
