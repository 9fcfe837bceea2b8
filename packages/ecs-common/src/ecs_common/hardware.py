"""Description of the reference accelerator: a grid of identical cores."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ecs_common.errors import ConfigError


class HardwareConfig(BaseModel):
    """Resources of the accelerator. Every count is per core except ``num_cores``.

    * ``num_neurons_core``: neuron slots; input neurons (event relays) use slots too.
    * ``num_synapses_core``: synapse memory entries, one per nonzero weight whose
      target neuron sits on the core.
    * ``num_routes``: routing table entries, one per pair of a source neuron on
      the core and a destination core it sends to.
    * ``num_weights_core``: entries of the core's weight table. Synapses store an
      index into it, so a core holds at most this many distinct weight values.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    num_cores: int = Field(4, gt=0, description="cores on the device")
    num_neurons_core: int = Field(1024, gt=0, description="neuron slots per core")
    num_synapses_core: int = Field(65536, gt=0, description="synapse memory entries per core")
    num_routes: int = Field(4096, gt=0, description="routing table entries per core")
    num_weights_core: int = Field(256, gt=0, description="weight table entries per core")

    # Attribute and item access both work, so tutorial code such as
    # hardware_cfg["num_neurons_core"] = 512 behaves like a dict of YAML values.
    def __getitem__(self, key: str) -> int:
        if key not in type(self).model_fields:
            raise KeyError(f"unknown hardware field {key!r}; expected one of {', '.join(type(self).model_fields)}")
        return int(getattr(self, key))

    def __setitem__(self, key: str, value: int) -> None:
        if key not in type(self).model_fields:
            raise KeyError(f"unknown hardware field {key!r}; expected one of {', '.join(type(self).model_fields)}")
        setattr(self, key, value)

    def keys(self) -> list[str]:
        """Field names, as a dict would list them."""
        return list(type(self).model_fields)


def hardware_config_from(value: Any) -> HardwareConfig:
    """Validate a :class:`HardwareConfig` from a model or a plain dict (as read from YAML).

    Raises :class:`ConfigError` naming each invalid field, its value and the rule it breaks.
    """
    if isinstance(value, HardwareConfig):
        return value
    try:
        return HardwareConfig.model_validate(dict(value))
    except Exception as error:
        raise ConfigError(f"invalid hardware config: {_describe(error)}") from error


def _describe(error: Exception) -> str:
    errors = getattr(error, "errors", None)
    if errors is None:
        return str(error)
    parts = []
    for item in errors():
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        parts.append(f"{location}={item.get('input')!r}: {item['msg']}")
    return "; ".join(parts)
