"""The ``ecs`` entry of a NIR graph's metadata: one JSON string with a schema version.

HDF5 round-trips a single string exactly, whereas nested dicts come back
with numpy scalars and arrays and cannot hold ``None``. So everything ECS
records about a graph (hardware, formats, timestep, reset mode, provenance)
is stored as JSON under the one key ``ecs``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ecs_common.errors import MetadataError
from ecs_common.formats import QuantConfig
from ecs_common.hardware import HardwareConfig

METADATA_KEY = "ecs"
SCHEMA_VERSION = 1


class Provenance(BaseModel):
    """Where a NIR file came from and how well it performed."""

    model_config = ConfigDict(extra="allow")

    dataset: str | None = None
    checkpoint_sha256: str | None = None
    float_test_acc: float | None = Field(None, ge=0, le=1)
    quant_test_acc: float | None = Field(None, ge=0, le=1)
    sparsity: float | None = Field(None, ge=0, le=1)
    producer: str | None = Field(None, description="tool and version that wrote the file")


class ECSMetadata(BaseModel):
    """Everything ecs-deploy needs besides the graph itself."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    hardware_cfg: HardwareConfig = Field(default_factory=HardwareConfig)
    quant_cfg: QuantConfig = Field(default_factory=QuantConfig)
    # JSON has no infinity: pydantic would write an infinite dt as null, which no reader accepts.
    dt: float = Field(gt=0, allow_inf_nan=False, description="simulation timestep in seconds")
    reset_mode: Literal["to_reset", "subtract"] = "to_reset"
    input_scaling: Literal["state"] = "state"
    readout: Literal["last", "max", "mean"] = Field(
        "last", description="how output states over time become class scores: state at the last step, maximum or mean"
    )
    provenance: Provenance = Field(default_factory=Provenance)

    # Item access for tutorial code: metadata["hardware_cfg"], metadata["quant_cfg"].
    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(f"unknown metadata field {key!r}; expected one of {', '.join(type(self).model_fields)}")
        value = getattr(self, key)
        return value.model_dump() if isinstance(value, BaseModel) else value

    def to_json(self) -> str:
        """Serialize to the JSON string stored under the ``ecs`` key."""
        return self.model_dump_json()


def encode(metadata: ECSMetadata) -> dict[str, str]:
    """Return the graph metadata dict ``{"ecs": json}`` for ``nir.NIRGraph(metadata=...)``."""
    return {METADATA_KEY: metadata.to_json()}


def has_metadata(graph_metadata: Any) -> bool:
    """Whether a graph's metadata dict carries an ``ecs`` entry."""
    return isinstance(graph_metadata, dict) and METADATA_KEY in graph_metadata


def decode(graph_metadata: Any) -> ECSMetadata:
    """Validate and return the ECS metadata stored in a graph's metadata dict.

    Raises :class:`MetadataError` when the ``ecs`` key is missing, the JSON is
    invalid, the schema version is newer than this package reads, or a field
    is invalid.
    """
    if not has_metadata(graph_metadata):
        raise MetadataError(
            f"the NIR graph has no {METADATA_KEY!r} metadata (it was not written by ecs-train); "
            "give the hardware and quantization configs explicitly"
        )
    raw = graph_metadata[METADATA_KEY]
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        data = json.loads(str(raw))
    except json.JSONDecodeError as error:
        raise MetadataError(f"the {METADATA_KEY!r} metadata is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise MetadataError(f"the {METADATA_KEY!r} metadata must be a JSON object, got {type(data).__name__}")

    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise MetadataError(
            f"the {METADATA_KEY!r} metadata needs a positive integer schema_version, got {version!r}; "
            "write the file again with ecs-train"
        )
    if version > SCHEMA_VERSION:
        raise MetadataError(
            f"the {METADATA_KEY!r} metadata has schema version {version}, newer than version {SCHEMA_VERSION} "
            "that this ecs-common reads; upgrade ecs-common"
        )
    try:
        return ECSMetadata.model_validate(data)
    except ValidationError as error:
        raise MetadataError(f"invalid {METADATA_KEY!r} metadata: {error}") from error


def read_metadata(graph: Any) -> ECSMetadata:
    """Decode the ECS metadata of a ``nir.NIRGraph`` (any object with ``.metadata``)."""
    return decode(getattr(graph, "metadata", None))
