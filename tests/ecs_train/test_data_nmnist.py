"""Tests of the N-MNIST reader: decoding, label lists, binning, and data modules on real and synthetic folders."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from ecs_train.cli import app
from ecs_train.data import DataConfig, DatasetFormatError, DatasetUnavailableError, build_data_module, shared_data_dir
from ecs_train.data.module import check_data_files
from ecs_train.data.nmnist import NMNISTSource, decode_events, events_to_frames, read_label_list, read_recording


def encode_events(x, y, t, p) -> bytes:
    """Encode events in the N-MNIST binary format, 5 bytes each."""
    x, y, t, p = (np.asarray(values, dtype=np.int64) for values in (x, y, t, p))
    raw = np.stack([x, y, (p << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF], axis=1)
    return raw.astype(np.uint8).tobytes()


def write_folder(folder: Path, train_labels: list[int], test_labels: list[int], seed: int = 0) -> None:
    """Write random recordings with ids 1..n (train) and 1001.. (test), and their label lists."""
    rng = np.random.default_rng(seed)
    lists = {"train1K.txt": (1, train_labels), "test100.txt": (1001, test_labels)}
    for list_name, (first_id, labels) in lists.items():
        lines = ["#sample #class"]
        for offset, label in enumerate(labels):
            sample_id = first_id + offset
            count = 300
            t = np.sort(rng.integers(0, 300_000, count))
            events = encode_events(rng.integers(0, 34, count), rng.integers(0, 34, count), t, rng.integers(0, 2, count))
            (folder / f"{sample_id}.bs2").write_bytes(events)
            lines.append(f"{sample_id}\t{label}")
        (folder / list_name).write_text("\n".join(lines) + "\n")


def test_decode_known_bytes():
    raw = bytes([3, 33, 0x80 | 0x01, 0x02, 0x03, 0, 5, 0x7F, 0xFF, 0xFF, 17, 0, 0x00, 0x00, 0x0A])

    events = decode_events(raw)

    np.testing.assert_array_equal(events["x"], [3, 0, 17])
    np.testing.assert_array_equal(events["y"], [33, 5, 0])
    np.testing.assert_array_equal(events["p"], [1, 0, 0])
    np.testing.assert_array_equal(events["t"], [0x010203, 0x7FFFFF, 10])


@given(
    st.lists(
        st.tuples(st.integers(0, 33), st.integers(0, 33), st.integers(0, (1 << 23) - 1), st.integers(0, 1)),
        max_size=50,
    )
)
def test_decode_inverts_encode(events):
    x = [event[0] for event in events]
    y = [event[1] for event in events]
    t = [event[2] for event in events]
    p = [event[3] for event in events]

    decoded = decode_events(encode_events(x, y, t, p))

    assert decoded["x"].tolist() == x
    assert decoded["y"].tolist() == y
    assert decoded["t"].tolist() == t
    assert decoded["p"].tolist() == p


def test_read_recording_round_trip(tmp_path):
    path = tmp_path / "7.bs2"
    path.write_bytes(encode_events([1, 2, 30], [4, 5, 33], [100, 2_000, 8_000_000], [0, 1, 1]))

    events = read_recording(path)

    np.testing.assert_array_equal(events["x"], [1, 2, 30])
    np.testing.assert_array_equal(events["y"], [4, 5, 33])
    np.testing.assert_array_equal(events["t"], [100, 2_000, 8_000_000])
    np.testing.assert_array_equal(events["p"], [0, 1, 1])


def test_read_recording_truncated(tmp_path):
    path = tmp_path / "8.bs2"
    path.write_bytes(encode_events([1, 2], [3, 4], [5, 6], [0, 1])[:-2])

    with pytest.raises(DatasetFormatError, match=r"8\.bs2 is truncated: 8 bytes is not a multiple of 5"):
        read_recording(path)


def test_decode_pixel_outside_sensor():
    with pytest.raises(DatasetFormatError, match=r"pixel \(34, 0\) outside the 34 x 34 sensor"):
        decode_events(encode_events([34], [0], [0], [1]), source="bad.bs2")


def test_read_label_list(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("#sample #class\n1\t5\n2 0\n\n10\t9\n")

    samples = read_label_list(path)

    np.testing.assert_array_equal(samples.ids, [1, 2, 10])
    np.testing.assert_array_equal(samples.labels, [5, 0, 9])


def test_read_label_list_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"label list .*missing\.txt not found"):
        read_label_list(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#h\n1 5\n2\n", r"line 3: expected '<id> <label>'"),
        ("1 five\n", r"line 1: expected '<id> <label>'"),
        ("1 12\n", r"line 1: label 12 is not a digit"),
        ("# only a header\n", r"lists no recordings"),
    ],
)
def test_read_label_list_invalid(tmp_path, text, message):
    path = tmp_path / "list.txt"
    path.write_text(text)

    with pytest.raises(DatasetFormatError, match=message):
        read_label_list(path)


def test_events_to_frames_bins_and_downsamples():
    events = decode_events(
        encode_events(
            x=[0, 1, 33, 33, 10, 20],
            y=[0, 1, 33, 32, 10, 0],
            t=[0, 99_999, 100_000, 150_000, 299_999, 300_000],
            p=[1, 1, 0, 0, 1, 1],
        )
    )

    frames = events_to_frames(events, size=17, num_timesteps=3, duration_us=300_000)

    assert frames.shape == (3, 2, 17, 17)
    assert frames.dtype == np.uint8
    assert frames[0, 1, 0, 0] == 1, "two events in one pixel and bin are clipped to 1"
    assert frames[1, 0, 16, 16] == 1
    assert frames[2, 1, 5, 5] == 1
    assert frames.sum() == 3, "the event at 300 ms lies outside the 0.3 s duration"


def test_events_to_frames_empty():
    frames = events_to_frames(decode_events(b""), size=17, num_timesteps=4, duration_us=300_000)

    assert frames.shape == (4, 2, 17, 17)
    assert frames.sum() == 0


def test_nmnist_synthetic_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    train_labels = [i % 10 for i in range(20)]
    write_folder(data, train_labels, test_labels=[3, 1, 4, 1, 5])
    cfg = DataConfig(name="nmnist", data_dir=data, cache_dir=tmp_path / "cache", num_timesteps=5)

    module = build_data_module(cfg, batch_size=4)
    x, y = next(iter(module.train_dataloader()))

    assert module.input_shape == (2, 17, 17)
    assert module.num_classes == 10
    assert x.shape == (4, 5, 2, 17, 17)
    assert x.dtype == torch.float32
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert y.dtype == torch.int64
    np.testing.assert_array_equal(module.split("train").ids, np.arange(1, 17))
    np.testing.assert_array_equal(module.split("val").ids, np.arange(17, 21))
    np.testing.assert_array_equal(module.split("test").ids, np.arange(1001, 1006))
    np.testing.assert_array_equal(module.test_arrays(5)[1], [3, 1, 4, 1, 5])


def test_nmnist_synthetic_matches_reader(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_folder(data, [0, 1, 2, 3, 4], test_labels=[7, 8])
    cfg = DataConfig(name="nmnist", data_dir=data, cache_dir=tmp_path / "cache", num_timesteps=6, nmnist_size=34)

    x, y = build_data_module(cfg, batch_size=2).test_arrays(2)
    expected = events_to_frames(read_recording(data / "1002.bs2"), size=34, num_timesteps=6, duration_us=300_000)

    assert x.shape == (2, 6, 2, 34, 34)
    np.testing.assert_array_equal(x[1], expected.astype(np.float32))
    np.testing.assert_array_equal(y, [7, 8])


def test_nmnist_missing_folder(tmp_path):
    cfg = DataConfig(name="nmnist", data_dir=tmp_path / "absent", cache_dir=tmp_path)

    with pytest.raises(FileNotFoundError, match=r"N-MNIST folder .*absent not found"):
        build_data_module(cfg, batch_size=2)


def test_nmnist_missing_label_list(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_folder(data, [0, 1], test_labels=[2])
    (data / "test100.txt").unlink()
    cfg = DataConfig(name="nmnist", data_dir=data, cache_dir=tmp_path / "cache")

    with pytest.raises(FileNotFoundError, match=r"label list .*test100\.txt not found"):
        build_data_module(cfg, batch_size=2).setup()


def test_nmnist_missing_recording(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_folder(data, [0, 1], test_labels=[2])
    (data / "1001.bs2").unlink()
    cfg = DataConfig(name="nmnist", data_dir=data, cache_dir=tmp_path / "cache")

    with pytest.raises(FileNotFoundError, match=r"recording .*1001\.bs2 not found, but its label list names id 1001"):
        build_data_module(cfg, batch_size=2).setup()


def test_nmnist_tonic_download_off(tmp_path):
    cfg = DataConfig(name="nmnist", cache_dir=tmp_path, download=False)

    with pytest.raises(FileNotFoundError, match=r"N-MNIST not found in .*NMNIST and download is off"):
        build_data_module(cfg, batch_size=2).setup()


def _sample_folder() -> Path:
    root = shared_data_dir()
    folder = root / "nmnist_small" if root is not None else None
    if folder is None or not folder.is_dir():
        pytest.skip(f"N-MNIST sample folder not found at {folder or 'ECS_DATA_DIR or shared/data'}")
    return folder


@pytest.mark.real_data
def test_nmnist_real_folder(tmp_path):
    folder = _sample_folder()
    cfg = DataConfig(name="nmnist", data_dir=folder, cache_dir=tmp_path, num_timesteps=10, max_samples=12)

    module = build_data_module(cfg, batch_size=6)
    x, y = next(iter(module.test_dataloader()))

    assert x.shape == (6, 10, 2, 17, 17)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert (x.sum(dim=(2, 3, 4)) > 0).all(), "every bin of a real saccade recording has events"
    np.testing.assert_array_equal(y.numpy(), [7, 2, 1, 0, 4, 1])
    np.testing.assert_array_equal(module.split("val").ids, np.arange(801, 813))
    np.testing.assert_array_equal(module.split("train").ids, np.arange(1, 13))
    np.testing.assert_array_equal(module.split("train").labels[:3], [5, 0, 4])


def write_tonic_layout(root: Path, per_class: int, seed: int = 0) -> None:
    """Write tonic's NMNIST download layout: NMNIST/{Train,Test}/<label>/<n>.bin beside the zip archives."""
    rng = np.random.default_rng(seed)
    location = root / "NMNIST"
    for folder, archive in (("Train", "train.zip"), ("Test", "test.zip")):
        for label in range(10):
            class_folder = location / folder / str(label)
            class_folder.mkdir(parents=True)
            for index in range(per_class):
                t = np.sort(rng.integers(0, 300_000, 100))
                events = encode_events(rng.integers(0, 34, 100), rng.integers(0, 34, 100), t, rng.integers(0, 2, 100))
                (class_folder / f"{index:05d}.bin").write_bytes(events)
        (location / archive).write_bytes(b"")


@pytest.fixture
def tonic_layout(tmp_path, monkeypatch) -> Path:
    tonic = pytest.importorskip("tonic")
    # tonic 1.7.0 downloads unless it finds at least 10,000 .bin files; a few suffice for these tests.
    monkeypatch.setattr(tonic.datasets.NMNIST, "_check_exists", lambda self: True)
    root = tmp_path / "tonic"
    write_tonic_layout(root, per_class=3)
    return root


def test_nmnist_tonic_layout_in_cache(tonic_layout):
    cfg = DataConfig(name="nmnist", cache_dir=tonic_layout, download=False, num_timesteps=4)

    module = build_data_module(cfg, batch_size=5)
    x, y = module.test_arrays(12)
    train, val = module.split("train"), module.split("val")

    assert x.shape == (12, 4, 2, 17, 17)
    assert set(np.unique(x).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(y, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    assert (len(train), len(val)) == (24, 6)
    assert sorted(val.labels.tolist()) == [4, 5, 6, 7, 8, 9]


def test_nmnist_tonic_layout_matches_reader(tonic_layout):
    cfg = DataConfig(name="nmnist", data_dir=tonic_layout / "NMNIST", cache_dir=tonic_layout / "cache", num_timesteps=6)

    x, y = build_data_module(cfg, batch_size=2).test_arrays(2)
    expected = events_to_frames(read_recording(tonic_layout / "NMNIST" / "Test" / "1" / "00000.bin"), 17, 6, 300_000)

    np.testing.assert_array_equal(y, [0, 1])
    np.testing.assert_array_equal(x[1], expected.astype(np.float32))


def test_check_data_files_missing_folder(tmp_path: Path) -> None:
    cfg = DataConfig(name="nmnist", data_dir=tmp_path / "does-not-exist", cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetUnavailableError, match="is not a folder; pass --data-dir FOLDER"):
        check_data_files(cfg)


def test_check_data_files_missing_label_list(tmp_path: Path) -> None:
    cfg = DataConfig(name="nmnist", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetUnavailableError, match="label list .* not found"):
        check_data_files(cfg)


def test_check_data_files_accepts_folder(tmp_path: Path) -> None:
    write_folder(tmp_path, [0, 1], [1])
    check_data_files(DataConfig(name="nmnist", data_dir=tmp_path, cache_dir=tmp_path / "cache"))


def test_tonic_download_failure_names_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tonic

    def offline(*args: object, **kwargs: object) -> None:
        raise URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(
        tonic.datasets,
        "NMNIST",
        type(
            "OfflineNMNIST",
            (),
            {
                "__new__": offline,
                "train_url": "https://example.invalid/train",
                "test_url": "https://example.invalid/test",
            },
        ),
    )
    cfg = DataConfig(name="nmnist", data_dir=None, download=True, cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetUnavailableError) as caught:
        NMNISTSource(cfg).sample_lists()
    message = str(caught.value)
    assert "failed to download N-MNIST from https://example.invalid/train" in message
    assert "pass --data-dir FOLDER with the recordings" in message


def test_cli_run_missing_data_dir_exits_2(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "config" / "nmnist_feed_forward.yaml"
    missing = tmp_path / "does-not-exist"
    result = CliRunner().invoke(
        app, ["run", str(config), "--data-dir", str(missing), "--output", str(tmp_path / "run")]
    )
    assert result.exit_code == 2
    assert f"data_dir {missing} of dataset nmnist is not a folder" in result.output
    assert "Stage 1/9" not in result.output
