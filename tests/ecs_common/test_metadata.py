"""Tests of ecs_common.metadata: the ``ecs`` JSON entry and its round trip through NIR files."""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecs_common.errors import MetadataError
from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_common.metadata import (
    METADATA_KEY,
    SCHEMA_VERSION,
    ECSMetadata,
    Provenance,
    decode,
    encode,
    has_metadata,
    read_metadata,
)


def small_graph(metadata: dict[str, str] | None = None) -> nir.NIRGraph:
    """Build Input -> Affine -> LIF -> Output with three neurons and per-neuron parameters."""
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2])}),
        "fc": nir.Affine(weight=np.array([[0.5, -0.25], [0.125, 1.0], [0.0, -1.0]]), bias=np.zeros(3)),
        "lif": nir.LIF(
            tau=np.full(3, 0.02),
            r=np.ones(3),
            v_leak=np.zeros(3),
            v_threshold=np.ones(3),
            v_reset=np.zeros(3),
        ),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata or {})


def sample_metadata() -> ECSMetadata:
    """Return metadata with every field set away from its default."""
    return ECSMetadata(
        hardware_cfg=HardwareConfig(num_cores=2, num_neurons_core=300, num_weights_core=64),
        quant_cfg=QuantConfig(
            mode="ptq",
            weight_format=FixedPointFormat(wl=6, fl=4),
            state_format=FixedPointFormat(wl=14, fl=4),
            decay_format=FixedPointFormat(wl=10, fl=9),
        ),
        dt=1e-3,
        reset_mode="subtract",
        readout="max",
        provenance=Provenance(
            dataset="digits",
            checkpoint_sha256="ab" * 32,
            float_test_acc=0.9375,
            quant_test_acc=0.1 + 0.2,
            sparsity=0.5,
            producer="ecs-train 0.1.0",
            epochs=3,
        ),
    )


def test_metadata_round_trips_through_nir_file(tmp_path: Path) -> None:
    metadata = sample_metadata()
    path = tmp_path / "net.nir"

    nir.write(path, small_graph(encode(metadata)))
    graph = nir.read(path)
    restored = read_metadata(graph)

    assert restored == metadata
    assert restored.to_json() == metadata.to_json()
    assert restored.provenance.quant_test_acc == 0.1 + 0.2
    assert restored.provenance.model_extra == {"epochs": 3}


def test_file_without_metadata_raises(tmp_path: Path) -> None:
    path = tmp_path / "foreign.nir"
    nir.write(path, small_graph())
    graph = nir.read(path)

    assert not has_metadata(graph.metadata)
    with pytest.raises(MetadataError, match="the NIR graph has no 'ecs' metadata .*give the hardware and quantization"):
        read_metadata(graph)


@given(
    dt=st.floats(min_value=1e-9, max_value=10.0, allow_nan=False, exclude_min=False),
    accuracy=st.none() | st.floats(min_value=0.0, max_value=1.0),
    dataset=st.none() | st.text(max_size=20),
    num_cores=st.integers(min_value=1, max_value=2**31),
    reset_mode=st.sampled_from(["to_reset", "subtract"]),
)
def test_metadata_json_round_trip_is_exact(
    dt: float, accuracy: float | None, dataset: str | None, num_cores: int, reset_mode: str
) -> None:
    metadata = ECSMetadata(
        dt=dt,
        hardware_cfg=HardwareConfig(num_cores=num_cores),
        reset_mode=reset_mode,  # type: ignore[arg-type]
        provenance=Provenance(dataset=dataset, float_test_acc=accuracy),
    )

    restored = decode(encode(metadata))

    assert restored == metadata
    assert restored.dt == dt


def test_encode_stores_one_json_string() -> None:
    encoded = encode(ECSMetadata(dt=1e-3))

    assert list(encoded) == [METADATA_KEY]
    assert isinstance(encoded[METADATA_KEY], str)
    assert json.loads(encoded[METADATA_KEY])["schema_version"] == SCHEMA_VERSION


def test_decode_accepts_bytes() -> None:
    text = ECSMetadata(dt=2e-3).to_json()

    assert decode({METADATA_KEY: text.encode("utf-8")}).dt == 2e-3


@pytest.mark.parametrize("graph_metadata", [{}, None, {"other": "{}"}, "not a dict"])
def test_decode_missing_key_raises(graph_metadata: object) -> None:
    with pytest.raises(MetadataError, match="has no 'ecs' metadata"):
        decode(graph_metadata)


def test_read_metadata_of_object_without_metadata() -> None:
    with pytest.raises(MetadataError, match="has no 'ecs' metadata"):
        read_metadata(object())


def test_decode_invalid_json_raises() -> None:
    with pytest.raises(MetadataError, match="the 'ecs' metadata is not valid JSON: Expecting"):
        decode({METADATA_KEY: '{"schema_version": 1, "dt": '})


def test_decode_non_object_raises() -> None:
    with pytest.raises(MetadataError, match="must be a JSON object, got list"):
        decode({METADATA_KEY: "[1, 2]"})


def test_decode_newer_schema_version_raises() -> None:
    text = json.dumps({"schema_version": SCHEMA_VERSION + 1, "dt": 1e-3})

    with pytest.raises(
        MetadataError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than version {SCHEMA_VERSION} .*upgrade"
    ):
        decode({METADATA_KEY: text})


@pytest.mark.parametrize("version", [None, "1", 1.0, True, 0, -1])
def test_decode_invalid_schema_version_raises(version: object) -> None:
    fields = {"dt": 1e-3} if version is None else {"schema_version": version, "dt": 1e-3}

    with pytest.raises(MetadataError, match="needs a positive integer schema_version, got"):
        decode({METADATA_KEY: json.dumps(fields)})


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"dt": -1.0}, "dt"),
        ({}, "dt"),
        ({"dt": 1e-3, "reset_mode": "zero"}, "reset_mode"),
        ({"dt": 1e-3, "hardware_cfg": {"num_cores": 0}}, "num_cores"),
        ({"dt": 1e-3, "quant_cfg": {"state_format": {"wl": 16, "fl": 5}}}, "same fractional length"),
        ({"dt": 1e-3, "provenance": {"float_test_acc": 1.5}}, "float_test_acc"),
        ({"dt": 1e-3, "extra_field": 1}, "extra_field"),
    ],
)
def test_decode_invalid_field_raises(fields: dict[str, object], name: str) -> None:
    text = json.dumps({"schema_version": SCHEMA_VERSION, **fields})

    with pytest.raises(MetadataError, match=f"(?s)invalid 'ecs' metadata: .*{name}"):
        decode({METADATA_KEY: text})


@pytest.mark.parametrize("dt", [float("inf"), float("nan"), 0.0])
def test_metadata_rejects_unusable_dt(dt: float) -> None:
    with pytest.raises(ValueError, match="dt"):
        ECSMetadata(dt=dt)


def test_metadata_item_access() -> None:
    metadata = sample_metadata()

    assert metadata["dt"] == 1e-3
    assert metadata["hardware_cfg"] == metadata.hardware_cfg.model_dump()
    assert metadata["quant_cfg"]["weight_format"] == {"wl": 6, "fl": 4}
    with pytest.raises(KeyError, match="unknown metadata field 'hardware'; expected one of schema_version"):
        metadata["hardware"]
