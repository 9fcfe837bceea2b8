"""Configuration of the event datasets: which dataset, where its files are, how samples are binned."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DatasetName = Literal["digits", "nmnist", "shd", "fsdd"]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)

ValidationSplit = Literal["stratified", "last"]

# Time span mapped onto the time bins when `duration_s` is None, in seconds. The simulated digit
# saccades and the N-MNIST saccades last about 0.3 s, and nearly all SHD and FSDD words end within 1 s.
DEFAULT_DURATION_S: dict[str, float] = {"digits": 0.3, "nmnist": 0.3, "shd": 1.0, "fsdd": 1.0}

# Validation hold-out when `validation_fraction` / `validation_split` are None, as a fraction of
# the training recordings. For digits, 0.125 of the 80% training share is 10% of all samples.
# For the 1,000 N-MNIST sample recordings, "last" 0.2 holds out ids 801-1000.
DEFAULT_VALIDATION: dict[str, tuple[float, ValidationSplit]] = {
    "digits": (0.125, "stratified"),
    "nmnist": (0.2, "last"),
    "shd": (0.1, "stratified"),
    "fsdd": (0.1, "stratified"),
}

# Input neurons of SHD: channels of the artificial cochlea used to record it.
SHD_NUM_UNITS = 700

# Width and height of the N-MNIST sensor (ATIS camera crop), in pixels.
NMNIST_SENSOR_PIXELS = 34


class DataConfig(BaseModel):
    """Dataset selection and preprocessing for ``build_data_module``.

    Every sample becomes a binary tensor ``[num_timesteps, *input_shape]``: ``[T, 2, H, W]`` for the
    image datasets (channel 0 OFF events, channel 1 ON events) and ``[T, num_channels]`` for the audio
    datasets. A time bin contains at most one event per input neuron.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: DatasetName = Field(
        "digits",
        description="dataset: 'digits' (scikit-learn digits turned into saccade events, offline), 'nmnist', "
        "'shd' (Spiking Heidelberg Digits) or 'fsdd' (Free Spoken Digit Dataset turned into spikes)",
    )
    data_dir: Path | None = Field(
        None,
        description="folder with the recordings, or None for the dataset default. Digits needs no files, nmnist "
        "and shd use tonic's download folder under cache_dir, and fsdd has no download, so it needs this folder",
    )
    cache_dir: Path = Field(
        Path("~/.cache/ecs-train"),
        validate_default=True,
        description="folder for binned-sample caches and tonic downloads ('~' is expanded)",
    )
    download: bool = Field(
        True,
        description="let tonic download N-MNIST or SHD into cache_dir when data_dir is None and the files are missing",
    )
    num_timesteps: int = Field(20, gt=0, description="time bins per sample")
    duration_s: float | None = Field(
        None,
        gt=0,
        description="time span of a sample mapped onto the time bins, in seconds. Later events are dropped and "
        "shorter recordings end in empty bins. None uses 0.3 s for digits and nmnist, 1.0 s for shd and fsdd",
    )
    image_size: int = Field(16, ge=8, le=128, description="digits: frame width and height, in pixels")
    nmnist_size: int = Field(
        17,
        ge=1,
        le=NMNIST_SENSOR_PIXELS,
        description="nmnist: frame width and height after downsampling the 34 x 34 pixel sensor, in pixels",
    )
    num_channels: int = Field(
        700,
        ge=1,
        description="input channels: cochlea channels for fsdd, or for shd the channels left after merging "
        "adjacent ones of its 700",
    )
    nmnist_train_list: str = Field(
        "train1K.txt", description="nmnist folder reader: label list of the training recordings, in data_dir"
    )
    nmnist_test_list: str = Field(
        "test100.txt", description="nmnist folder reader: label list of the test recordings, in data_dir"
    )
    validation_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="share of the training recordings held out for validation, or None for the dataset default "
        "(digits 0.125, nmnist 0.2, shd 0.1, fsdd 0.1)",
    )
    validation_split: ValidationSplit | None = Field(
        None,
        description="method that chooses the validation recordings. 'stratified' draws the same share of every "
        "class with split_seed, and 'last' takes the last ones in reading order, which for an N-MNIST folder is "
        "the order of its label list. None uses 'last' for nmnist and 'stratified' for the others",
    )
    split_seed: int = Field(0, description="seed of the stratified train/validation/test splits")
    augment: bool = Field(False, description="randomly shift training samples in space (or channel) and time")
    max_shift: int = Field(1, ge=0, description="augmentation: largest shift, in pixels or channels")
    max_time_shift: int = Field(1, ge=0, description="augmentation: largest shift in time, in time bins")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    max_samples: int | None = Field(
        None, gt=0, description="keep at most this many samples per split (the first ones), for quick runs"
    )

    @field_validator("data_dir", "cache_dir")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @model_validator(mode="after")
    def _check_channels(self) -> DataConfig:
        if self.name == "shd" and self.num_channels > SHD_NUM_UNITS:
            raise ValueError(
                f"num_channels={self.num_channels} is invalid for shd: SHD has {SHD_NUM_UNITS} channels, "
                f"so set num_channels to {SHD_NUM_UNITS} or fewer"
            )
        return self

    def resolved_duration_s(self) -> float:
        """Return the time span of a sample in seconds, with the dataset default filled in."""
        return self.duration_s if self.duration_s is not None else DEFAULT_DURATION_S[self.name]

    def resolved_validation(self) -> tuple[float, ValidationSplit]:
        """Return the validation fraction and split method, with the dataset defaults filled in."""
        default_fraction, default_split = DEFAULT_VALIDATION[self.name]
        fraction = self.validation_fraction if self.validation_fraction is not None else default_fraction
        split = self.validation_split if self.validation_split is not None else default_split
        return fraction, split
