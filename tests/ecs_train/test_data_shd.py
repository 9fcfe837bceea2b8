"""Tests of the SHD reader on small fixture files written in the HDF5 layout of the SHD release."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ecs_train.data import DataConfig, DatasetFormatError, build_data_module
from ecs_train.data.shd import read_labels, read_spikes, spikes_to_frames

CLASS_NAMES = [f"english-{i}" for i in range(10)] + [f"german-{i}" for i in range(10)]


def write_shd_file(path: Path, recordings: list[tuple[np.ndarray, np.ndarray]], labels: list[int]) -> None:
    """Write an SHD file: ragged float16 spike times (seconds), uint16 units, uint16 labels, extra/ metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        times = file.create_dataset("spikes/times", (len(recordings),), dtype=h5py.vlen_dtype(np.float16))
        units = file.create_dataset("spikes/units", (len(recordings),), dtype=h5py.vlen_dtype(np.uint16))
        for index, (spike_times, spike_units) in enumerate(recordings):
            times[index] = np.asarray(spike_times, dtype=np.float16)
            units[index] = np.asarray(spike_units, dtype=np.uint16)
        file.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        file.create_dataset("extra/speaker", data=np.arange(len(labels), dtype=np.uint16) % 3)
        file.create_dataset("extra/keys", data=np.asarray([name.encode() for name in CLASS_NAMES]))
        file.create_dataset("extra/meta_info/gender", data=np.asarray([b"female", b"male", b"male"]))
        file.create_dataset("extra/meta_info/age", data=np.asarray([25, 30, 41], dtype=np.uint16))
        file.create_dataset("extra/meta_info/body_height", data=np.asarray([170, 180, 175], dtype=np.uint16))


def random_recordings(count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    recordings = []
    for _ in range(count):
        num_spikes = int(rng.integers(50, 200))
        recordings.append((np.sort(rng.uniform(0.0, 1.2, num_spikes)), rng.integers(0, 700, num_spikes)))
    return recordings


@pytest.fixture
def shd_folder(tmp_path) -> Path:
    folder = tmp_path / "SHD"
    write_shd_file(folder / "shd_train.h5", random_recordings(40, seed=1), [i % 20 for i in range(40)])
    write_shd_file(folder / "shd_test.h5", random_recordings(20, seed=2), [(7 * i) % 20 for i in range(20)])
    return folder


def test_spikes_to_frames_bins_and_merges_units():
    times = np.array([0.0, 0.05, 0.099, 0.5, 0.999, 1.0, 1.3])
    units = np.array([0, 1, 699, 350, 10, 20, 30])

    frames = spikes_to_frames(times, units, num_channels=70, num_timesteps=10, duration_s=1.0)

    assert frames.shape == (10, 70)
    assert frames.dtype == np.uint8
    assert frames[0, 0] == 1, "units 0 and 1 merge into channel 0, clipped to one event"
    assert frames[0, 69] == 1
    assert frames[5, 35] == 1
    assert frames[9, 1] == 1
    assert frames.sum() == 4, "spikes at or after 1.0 s are dropped"


def test_spikes_to_frames_empty():
    frames = spikes_to_frames(np.zeros(0), np.zeros(0, dtype=np.int64), 700, 5, 1.0)

    assert frames.shape == (5, 700)
    assert frames.sum() == 0


def test_read_fixture(shd_folder):
    recordings = random_recordings(40, seed=1)

    labels = read_labels(shd_folder / "shd_train.h5")
    spikes = read_spikes(shd_folder / "shd_train.h5", np.array([3, 0]))

    np.testing.assert_array_equal(labels, [i % 20 for i in range(40)])
    np.testing.assert_allclose(spikes[0][0], recordings[3][0].astype(np.float16))
    np.testing.assert_array_equal(spikes[0][1], recordings[3][1])
    np.testing.assert_array_equal(spikes[1][1], recordings[0][1])


def test_fixture_readable_by_tonic(shd_folder):
    tonic = pytest.importorskip("tonic")
    # tonic 1.7.0 downloads unless the archive exists beside the extracted file; it checks only existence.
    (shd_folder / "shd_train.h5.zip").write_bytes(b"")

    dataset = tonic.datasets.SHD(save_to=str(shd_folder.parent), train=True)
    events, target = dataset[3]
    times, units = read_spikes(shd_folder / "shd_train.h5", np.array([3]))[0]

    assert len(dataset) == 40
    assert target == 3
    np.testing.assert_array_equal(events["x"], units)
    np.testing.assert_array_equal(events["t"], np.floor(times * 1e6))


def test_shd_module(shd_folder, tmp_path):
    cfg = DataConfig(name="shd", data_dir=shd_folder, cache_dir=tmp_path / "cache", num_timesteps=25)

    module = build_data_module(cfg, batch_size=8, seed=0)
    x, y = next(iter(module.train_dataloader()))

    assert module.input_shape == (700,)
    assert module.num_classes == 20
    assert module.time_bin_s == pytest.approx(0.04)
    assert x.shape == (8, 25, 700)
    assert x.dtype == torch.float32
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert y.dtype == torch.int64
    assert int(y.max()) < 20
    train, val, test = (module.split(name) for name in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (36, 4, 20)
    assert not set(train.ids) & set(val.ids)
    np.testing.assert_array_equal(test.labels, [(7 * i) % 20 for i in range(20)])


def test_shd_module_matches_binning(shd_folder, tmp_path):
    cfg = DataConfig(
        name="shd",
        data_dir=shd_folder.parent,
        cache_dir=tmp_path / "cache",
        num_timesteps=8,
        num_channels=100,
        duration_s=1.2,
    )

    x, _ = build_data_module(cfg, batch_size=4).test_arrays(3)
    times, units = read_spikes(shd_folder / "shd_test.h5", np.array([2]))[0]

    assert x.shape == (3, 8, 100)
    np.testing.assert_array_equal(x[2], spikes_to_frames(times, units, 100, 8, 1.2).astype(np.float32))


def test_shd_default_location_is_cache(shd_folder):
    cfg = DataConfig(name="shd", cache_dir=shd_folder.parent, num_timesteps=4, max_samples=3)

    module = build_data_module(cfg, batch_size=3)

    assert len(module.split("test")) == 3


def test_shd_missing_file(tmp_path):
    cfg = DataConfig(name="shd", data_dir=tmp_path, cache_dir=tmp_path)

    with pytest.raises(FileNotFoundError, match=r"SHD file shd_train\.h5 not found \(looked for .*shd_train\.h5"):
        build_data_module(cfg, batch_size=2).setup()


def test_shd_missing_file_download_off(tmp_path):
    cfg = DataConfig(name="shd", cache_dir=tmp_path, download=False)

    with pytest.raises(FileNotFoundError, match=r"SHD file shd_train\.h5 not found .*download=True"):
        build_data_module(cfg, batch_size=2).setup()


def test_shd_missing_dataset_key(tmp_path):
    path = tmp_path / "shd_train.h5"
    with h5py.File(path, "w") as file:
        file.create_dataset("labels", data=np.zeros(2, dtype=np.uint16))

    with pytest.raises(DatasetFormatError, match=r"has no dataset 'spikes/times'"):
        read_spikes(path, np.array([0]))


def test_shd_label_out_of_range(tmp_path):
    path = tmp_path / "shd_train.h5"
    write_shd_file(path, random_recordings(2, seed=0), [3, 20])

    with pytest.raises(DatasetFormatError, match=r"label 20 is outside the 20 classes 0-19"):
        read_labels(path)


def test_shd_unit_out_of_range(tmp_path):
    path = tmp_path / "shd_train.h5"
    write_shd_file(path, [(np.array([0.1]), np.array([700]))], [0])

    with pytest.raises(DatasetFormatError, match=r"unit 700 is outside 0-699"):
        read_spikes(path, np.array([0]))
