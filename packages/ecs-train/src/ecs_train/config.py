"""Experiment configuration: network, quantization, trainer, data, hardware and pruning, read from YAML."""

from __future__ import annotations

import logging
import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from ecs_common.errors import ConfigError
from ecs_common.formats import QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_train.data import DataConfig
from ecs_train.utils import atomic_write

logger = logging.getLogger(__name__)

# Maximum number of validation errors listed in one ConfigError message. Further errors are only counted.
MAX_LISTED_ERRORS = 50

# Learning-rate schedules of training (trainer_cfg.lr_schedule) and of fine-tuning after pruning.
LearningRateSchedule = Literal["constant", "cosine"]


class ConfigSection(BaseModel):
    """Base of every config section: unknown keys are errors, and assignments are validated.

    Fields read and write as attributes (``cfg.trainer_cfg.num_epochs = 5``)
    or as items (``cfg.trainer_cfg["num_epochs"] = 5``). An invalid
    assignment raises :class:`ConfigError`.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            raise ConfigError(format_validation_error(error, f"{type(self).__name__}.{name} = {value!r}")) from None

    def __getitem__(self, key: str) -> Any:
        self._check_key(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_key(key)
        setattr(self, key, value)

    def keys(self) -> list[str]:
        """Field names, as a dict would list them."""
        return list(type(self).model_fields)

    def _check_key(self, key: str) -> None:
        if key not in type(self).model_fields:
            raise KeyError(f"unknown {type(self).__name__} field {key!r}; expected one of {', '.join(self.keys())}")


class NetworkConfig(ConfigSection):
    """Architecture and neuron parameters in NIR terms (time constants and ``dt`` in seconds)."""

    architecture: Literal["feed_forward", "conv"] = Field(
        "feed_forward", description="feed_forward: Flatten and Linear layers; conv: Conv2d layers first"
    )
    hidden_sizes: list[PositiveInt] = Field(
        default_factory=lambda: [128], description="neurons per hidden fully connected layer, input to output"
    )
    conv_channels: list[PositiveInt] = Field(
        default_factory=lambda: [8, 16], description="output channels per Conv2d layer (architecture conv only)"
    )
    kernel_size: int = Field(3, ge=1, description="Conv2d kernel size in pixels; padding keeps the image size")
    pool_size: int = Field(2, ge=1, description="SumPool2d window after each Conv2d layer in pixels; 1 for none")
    neuron_type: Literal["lif", "cubalif", "if"] = Field("lif", description="hidden neuron model; the output is LI")
    tau_mem: float = Field(0.01, gt=0, description="membrane time constant in seconds")
    tau_syn: float = Field(0.005, gt=0, description="synaptic time constant in seconds (cubalif only)")
    output_tau_mem: float | None = Field(
        None, gt=0, description="membrane time constant of the LI output layer in seconds; None uses tau_mem"
    )
    v_threshold: float = Field(1.0, description="firing threshold; a neuron fires when v > v_threshold")
    v_reset: float = Field(0.0, description="potential after a spike in reset_mode to_reset")
    v_leak: float = Field(0.0, description="potential the membrane decays to")
    reset_mode: Literal["to_reset", "subtract"] = Field(
        "to_reset", description="to_reset sets v to v_reset after a spike; subtract subtracts v_threshold"
    )
    dt: float = Field(0.001, gt=0, description="simulation timestep in seconds")
    readout: Literal["last", "max", "mean"] = Field(
        "last", description="class scores from the output states: last timestep, maximum or mean over time"
    )
    surrogate: Literal["super", "triangle", "tanh", "circ", "heavi_erfc"] = Field(
        "super", description="surrogate gradient of the spike (norse threshold method)"
    )
    surrogate_alpha: float = Field(100.0, gt=0, description="sharpness of the surrogate gradient")
    init_gain: float = Field(1.0, gt=0, description="factor on PyTorch's default weight initialization")

    @model_validator(mode="after")
    def _check_neuron(self) -> NetworkConfig:
        if self.neuron_type != "if" and self.v_reset >= self.v_threshold:
            raise ValueError(
                f"v_reset {self.v_reset} must be below v_threshold {self.v_threshold}, or a neuron fires at every step"
            )
        constants = {"tau_mem": self.tau_mem, "output_tau_mem": self.output_tau_mem or self.tau_mem}
        if self.neuron_type == "cubalif":
            constants["tau_syn"] = self.tau_syn
        for name, tau in constants.items():
            if self.dt > tau:
                raise ValueError(
                    f"dt {self.dt} s exceeds {name} {tau} s, so forward Euler would overshoot; "
                    "use a smaller dt or a longer time constant"
                )
        if self.reset_mode == "subtract" and self.neuron_type != "lif":
            raise ValueError(
                f"reset_mode 'subtract' needs neuron_type 'lif', got {self.neuron_type!r}: norse 1.1.0's LIFCell and "
                "IAFCell always reset to v_reset"
            )
        if self.architecture == "conv" and not self.conv_channels:
            raise ValueError("architecture 'conv' needs at least one entry in conv_channels")
        return self


class ModelConfig(ConfigSection):
    """The network and how it is quantized."""

    network_cfg: NetworkConfig = Field(default_factory=NetworkConfig)
    quant_cfg: QuantConfig = Field(default_factory=QuantConfig)


def _check_positive_count_or_fraction(value: Any, what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a fraction in (0, 1] or a whole number of batches, got {value!r}")
    if value <= 0 or (isinstance(value, float) and value > 1.0 and not value.is_integer()):
        raise ValueError(f"{what} must be a fraction in (0, 1] or a whole number of batches, got {value!r}")
    if isinstance(value, float) and value > 1.0:
        return int(value)
    return value


class TrainerConfig(ConfigSection):
    """Training run: epochs, optimizer, devices and where results go."""

    output_path: str = Field("outputs/run", description="folder for logs, performance plots and checkpoints")
    checkpoint_path: str | None = Field(None, description="folder for checkpoints; None uses <output_path>/checkpoints")
    num_epochs: int = Field(20, ge=1, description="epochs of float training")
    qat_epochs: int = Field(
        5, ge=0, description="epochs of quantization-aware fine-tuning after num_epochs (quant_cfg.mode qat)"
    )
    batch_size: int = Field(64, ge=1, description="samples per batch on each device")
    learning_rate: float = Field(2e-3, gt=0, allow_inf_nan=False, description="Adam learning rate")
    qat_learning_rate: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="learning rate of the QAT epochs; None continues the float schedule's last rate",
    )
    lr_schedule: LearningRateSchedule = Field(
        "cosine", description="constant, or cosine decay over num_epochs to 5% of learning_rate"
    )
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay (L2 penalty)")
    accelerator: str = Field("auto", description="Lightning accelerator: auto, cpu, gpu, ...")
    devices: Any = Field("auto", description="Lightning devices: auto, a count or a list of device indices")
    strategy: str = Field("auto", description="Lightning strategy, for example ddp")
    num_nodes: int = Field(1, ge=1, description="machines taking part in training")
    seed: int = Field(0, ge=0, description="random seed of python, numpy and torch")
    num_threads: int | None = Field(
        None, ge=1, description="CPU threads for torch's intra-op parallelism; None keeps torch's default"
    )
    limit_batches: float | int = Field(
        1.0, description="fraction (0, 1] or number of batches per epoch used for training, validation and test"
    )

    @field_validator("devices", mode="before")
    @classmethod
    def _check_devices(cls, value: Any) -> Any:
        if value == "auto" or value == -1:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, list) and value and all(isinstance(item, int) and item >= 0 for item in value):
            return value
        raise ValueError(f"devices must be 'auto', a positive count or a list of device indices, got {value!r}")

    @field_validator("limit_batches", mode="before")
    @classmethod
    def _check_limit_batches(cls, value: Any) -> Any:
        return _check_positive_count_or_fraction(value, "limit_batches")

    @property
    def checkpoint_dir(self) -> Path:
        """Folder that checkpoints go to."""
        return Path(self.checkpoint_path) if self.checkpoint_path else Path(self.output_path) / "checkpoints"


class PruningConfig(ConfigSection):
    """Magnitude pruning towards a sparsity target and the hardware limits."""

    sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of weights set to zero, 0 for no pruning")
    fit_hardware: bool = Field(False, description="prune further until the network fits the hardware config")
    fine_tune_epochs: int = Field(5, ge=0, description="training epochs after each pruning iteration")
    iterations: int = Field(1, ge=1, description="pruning steps to reach the target sparsity")
    learning_rate: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="fine-tuning learning rate, null for half of trainer_cfg.learning_rate",
    )
    schedule: LearningRateSchedule = Field(
        "constant", description="fine-tuning learning-rate schedule: constant, or cosine decay to 5% of the rate"
    )


class ExperimentConfig(ConfigSection):
    """Everything an ``ecs-train fit`` run needs."""

    model_cfg: ModelConfig = Field(default_factory=ModelConfig)
    trainer_cfg: TrainerConfig = Field(default_factory=TrainerConfig)
    data_cfg: DataConfig = Field(default_factory=DataConfig)
    hardware_cfg: HardwareConfig = Field(default_factory=HardwareConfig)
    pruning_cfg: PruningConfig = Field(default_factory=PruningConfig)


def _field_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        model = _field_model(argument)
        if model is not None:
            return model
    return None


def _allowed_fields(root: type[BaseModel], location: tuple[Any, ...]) -> list[str]:
    # Walk the models along location (without its last entry) to the model that rejected the key.
    model: type[BaseModel] | None = root
    for part in location[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        model = _field_model(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else []


def format_validation_error(error: ValidationError, source: str, root: type[BaseModel] | None = None) -> str:
    """Describe every error of a pydantic ``ValidationError`` on its own line.

    Each line gives the dotted path of the field, the value found and what
    was expected. ``source`` names the file or assignment at fault.
    """
    items = error.errors()
    lines = [f"invalid config {source}: {len(items)} error{'s' if len(items) != 1 else ''}"]
    for item in items[:MAX_LISTED_ERRORS]:
        location = tuple(item["loc"])
        path = ".".join(str(part) for part in location) or "(top level)"
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if item["type"] == "extra_forbidden":
            allowed = _allowed_fields(root, location) if root is not None else []
            expected = f"; expected one of {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {path}: unknown field{expected}")
        elif item["type"] == "missing":
            lines.append(f"  {path}: required field is missing")
        else:
            lines.append(f"  {path}: {message} (got {item.get('input')!r})")
    if len(items) > MAX_LISTED_ERRORS:
        lines.append(f"  ... and {len(items) - MAX_LISTED_ERRORS} more")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> ExperimentConfig:
    """Validate a dict (as read from YAML) into an :class:`ExperimentConfig`.

    Raises one :class:`ConfigError` that lists every invalid field.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping of sections, got {data!r}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source, ExperimentConfig)) from None


def _describe_yaml_error(path: Path, error: yaml.YAMLError) -> str:
    # PyYAML marks count lines and columns from 0, editors and compilers from 1.
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "context", None)
    if mark is None or problem is None:
        return f"config file {str(path)!r} is not valid YAML: {' '.join(str(error).split())}"
    return f"{path}:{mark.line + 1}:{mark.column + 1}: {problem} (the config file is not valid YAML)"


def load_yaml(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read and validate an experiment config from a YAML file.

    Raises :class:`ConfigError` when the file is missing, empty, not valid
    YAML, or has invalid fields (all of them listed, with dotted paths).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found; give the path of a YAML experiment config") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(_describe_yaml_error(path, error)) from None
    if data is None:
        # A blank file, or one of comments only, would otherwise train on the defaults without a word.
        raise ConfigError(
            f"config file {str(path)!r} is empty; give a YAML experiment config with sections such as model_cfg "
            "and data_cfg, for example config/digits_feed_forward.yaml"
        )
    return parse_config(data, repr(str(path)))


def save_yaml(config: ExperimentConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``config`` to a YAML file atomically (temporary file, then rename) and return its path."""
    path = Path(path)
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    with atomic_write(path) as handle:
        handle.write(text)
    logger.debug("wrote config %s", path)
    return path
