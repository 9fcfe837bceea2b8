"""Tests of the shared data machinery: splits, the packed-bit cache, shifts and the data module's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecs_common.errors import ConfigError
from ecs_train.data import DataConfig, build_data_module
from ecs_train.data.augment import random_shift, shift_frames
from ecs_train.data.cache import PackedFrames, cache_key, load_or_convert, load_packed, save_packed
from ecs_train.data.splits import SampleList, hold_out, stratified_mask


def make_samples(labels: list[int]) -> SampleList:
    return SampleList(ids=np.arange(100, 100 + len(labels)), labels=np.asarray(labels))


def test_stratified_mask_shares_classes():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])

    mask = stratified_mask(labels, 0.2, seed=0)

    assert mask.sum() == 20
    np.testing.assert_array_equal(np.bincount(labels[mask]), [2, 4, 6, 8])
    np.testing.assert_array_equal(mask, stratified_mask(labels, 0.2, seed=0))
    assert not np.array_equal(mask, stratified_mask(labels, 0.2, seed=1))


def test_stratified_mask_small_classes_keep_total():
    labels = np.repeat(np.arange(20), 2)

    mask = stratified_mask(labels, 0.1, seed=0)

    assert mask.sum() == 4
    assert np.bincount(labels[mask]).max() == 1


def test_hold_out_stratified_keeps_order():
    pool = make_samples([i % 5 for i in range(50)])

    train, val = hold_out(pool, 0.2, "stratified", seed=3)

    assert (len(train), len(val)) == (40, 10)
    assert np.all(np.diff(train.ids) > 0)
    assert np.all(np.diff(val.ids) > 0)
    assert not set(train.ids) & set(val.ids)
    np.testing.assert_array_equal(np.bincount(val.labels), [2, 2, 2, 2, 2])


def test_hold_out_last():
    pool = make_samples([0, 1] * 5)

    train, val = hold_out(pool, 0.2, "last", seed=0)

    np.testing.assert_array_equal(train.ids, np.arange(100, 108))
    np.testing.assert_array_equal(val.ids, [108, 109])


def test_hold_out_unknown_method():
    with pytest.raises(ValueError, match="unknown validation split 'random'"):
        hold_out(make_samples([0, 1]), 0.5, "random", seed=0)  # type: ignore[arg-type]


def test_sample_list_head():
    samples = make_samples([3, 1, 4, 1, 5])

    np.testing.assert_array_equal(samples.head(2).labels, [3, 1])
    assert samples.head(None) is samples
    assert samples.head(9) is samples


def test_sample_list_shape_mismatch():
    with pytest.raises(ValueError, match=r"ids \(2,\) and labels \(3,\) must be 1-D arrays of one length"):
        SampleList(ids=np.arange(2), labels=np.arange(3))


def test_packed_frames_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = (rng.random((5, 3, 2, 5, 7)) < 0.3).astype(np.uint8)
    packed = PackedFrames.from_frames(frames, labels=np.arange(5), ids=np.arange(10, 15))

    save_packed(tmp_path / "split.npz", packed)
    loaded = load_packed(tmp_path / "split.npz")

    assert loaded.frame_shape == (3, 2, 5, 7)
    np.testing.assert_array_equal(loaded.frames(5), frames)
    np.testing.assert_array_equal(loaded.frame(3), frames[3])
    np.testing.assert_array_equal(loaded.labels, np.arange(5))
    np.testing.assert_array_equal(loaded.ids, np.arange(10, 15))
    assert [path.name for path in tmp_path.iterdir()] == ["split.npz"], "no temporary file is left behind"


def test_packed_frames_empty():
    packed = PackedFrames.from_frames(np.zeros((0, 4, 3), dtype=np.uint8), np.zeros(0), np.zeros(0))

    assert len(packed) == 0
    assert packed.frames(0).shape == (0, 4, 3)


def test_load_or_convert_rebuilds_corrupt_cache(tmp_path):
    path = tmp_path / "split.npz"
    path.write_bytes(b"not a zip archive")
    packed = PackedFrames.from_frames(np.ones((2, 3), dtype=np.uint8), np.array([1, 2]), np.array([0, 1]))

    loaded = load_or_convert(path, lambda: packed, "fixture")
    again = load_or_convert(path, lambda: pytest.fail("the rebuilt cache must be read back"), "fixture")

    np.testing.assert_array_equal(loaded.bits, packed.bits)
    np.testing.assert_array_equal(again.frames(2), np.ones((2, 3)))


def test_save_packed_failure_leaves_no_file(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    packed = PackedFrames.from_frames(np.ones((1, 8), dtype=np.uint8), np.array([0]), np.array([0]))

    with pytest.raises(OSError, match="disk full"):
        save_packed(tmp_path / "split.npz", packed)
    assert list(tmp_path.iterdir()) == []


def test_cache_key_depends_on_every_parameter():
    base = {"dataset": "digits", "num_timesteps": 10}

    assert cache_key(base) == cache_key(dict(reversed(list(base.items()))))
    assert cache_key(base) != cache_key({**base, "num_timesteps": 11})


def test_shift_frames_zero_fill():
    frames = torch.arange(1, 13, dtype=torch.float32).reshape(3, 4)

    shifted = shift_frames(frames, shifts=(1, -2), dims=(0, 1))

    expected = torch.tensor([[0, 0, 0, 0], [3, 4, 0, 0], [7, 8, 0, 0]], dtype=torch.float32)
    assert torch.equal(shifted, expected)
    assert torch.equal(shift_frames(frames, (3,), (0,)), torch.zeros(3, 4))


def test_random_shift_bounds_and_determinism():
    frames = torch.zeros(5, 2, 9, 9)
    frames[2, :, 4, 4] = 1.0

    for seed in range(20):
        shifted = random_shift(frames, max_shift=2, max_time_shift=1, generator=torch.Generator().manual_seed(seed))
        t, _, y, x = (int(index) for index in shifted.nonzero()[0])

        assert shifted.sum() == 2
        assert abs(t - 2) <= 1
        assert abs(y - 4) <= 2
        assert abs(x - 4) <= 2
        again = random_shift(frames, max_shift=2, max_time_shift=1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(shifted, again)


def test_random_shift_audio_layout():
    frames = torch.zeros(4, 10)
    frames[1, 5] = 1.0

    shifted = random_shift(frames, max_shift=0, max_time_shift=0, generator=torch.Generator())

    assert torch.equal(shifted, frames)


def test_build_rejects_batch_size(tmp_path):
    with pytest.raises(ConfigError, match="batch_size=0 is invalid"):
        build_data_module(DataConfig(cache_dir=tmp_path), batch_size=0)


def test_build_rejects_unknown_name_bypassing_validation(tmp_path):
    cfg = DataConfig.model_construct(name="cifar", cache_dir=tmp_path)

    with pytest.raises(ConfigError, match="unknown dataset 'cifar'. Choose one of digits, nmnist, shd, fsdd"):
        build_data_module(cfg, batch_size=4)


def test_loader_workers_reproducible(tmp_path):
    cfg = DataConfig(cache_dir=tmp_path, num_timesteps=4, image_size=8, max_samples=16, augment=True, num_workers=2)
    first = [x for x, _ in build_data_module(cfg, batch_size=4, seed=5).train_dataloader()]
    second = [x for x, _ in build_data_module(cfg, batch_size=4, seed=5).train_dataloader()]

    assert len(first) == 4
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
