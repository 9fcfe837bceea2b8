"""Handwritten-digit scans turned into ON/OFF events by simulated saccades, the way N-MNIST was recorded."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import numpy as np

from ecs_train.data.config import DataConfig
from ecs_train.data.source import Part
from ecs_train.data.splits import SampleList, stratified_mask

logger = logging.getLogger(__name__)

# scikit-learn's digits: 8 x 8 pixel scans with intensities 0-16, bundled with the library.
SCAN_PIXELS = 8
SCAN_MAX_VALUE = 16.0

# Share of the 1,797 scans in the test split. The rest is the training pool.
TEST_FRACTION = 0.2

# N-MNIST moved the sensor along a triangle, (0, 0) -> (3.5, 7) -> (7, 0) -> (0, 0) pixels on its
# 34-pixel sensor, as tonic 1.7.0's N-MNIST stabilization undoes it. The path here keeps that shape,
# scaled to the frame: (0, 0) -> (a/2, a) -> (a, 0) -> (0, 0) with a = 7/34 of the frame width.
SACCADE_AMPLITUDE_RATIO = 7 / 34
NUM_SACCADES = 3

# DVS pixel model: a pixel emits an ON (OFF) event each time its log intensity rises (falls) by the
# contrast threshold since its last event. Thresholds vary from pixel to pixel by a fixed Gaussian
# mismatch, and the displayed image has a background level so that black pixels have a finite log.
CONTRAST_THRESHOLD = 0.25
THRESHOLD_MISMATCH = 0.05
MIN_THRESHOLD = 0.05
BACKGROUND_INTENSITY = 0.1
MISMATCH_SEED = 0

# Minimum simulation steps per saccade. More are used when needed to give every time bin two steps.
MIN_STEPS_PER_SACCADE = 32


@lru_cache(maxsize=1)
def _load_scans() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def _interpolation_matrix(coordinates: np.ndarray, size: int) -> np.ndarray:
    # Linear interpolation weights of `size` source pixels at fractional `coordinates`, zero outside.
    distance = np.abs(coordinates[:, None] - np.arange(size, dtype=np.float32)[None, :])
    return np.maximum(0.0, 1.0 - distance).astype(np.float32)


def _saccade_offsets(num_steps: int, amplitude: float) -> np.ndarray:
    # Offset (x, y) in pixels at the end of each simulation step, moving along the triangle.
    vertices = np.array([[0.0, 0.0], [0.5 * amplitude, amplitude], [amplitude, 0.0], [0.0, 0.0]])
    progress = np.arange(1, num_steps + 1) * NUM_SACCADES / num_steps
    saccade = np.minimum(progress.astype(np.int64), NUM_SACCADES - 1)
    fraction = (progress - saccade)[:, None]
    return vertices[saccade] + fraction * (vertices[saccade + 1] - vertices[saccade])


def simulate_saccades(scans: np.ndarray, thresholds: np.ndarray, image_size: int, num_timesteps: int) -> np.ndarray:
    """Render scans moving along three saccades and return the DVS events binned into frames.

    Args:
        scans: intensities ``[N, 8, 8]`` in 0-16.
        thresholds: contrast threshold of every pixel ``[N, image_size, image_size]``, in log intensity.
        image_size: frame width and height, in pixels.
        num_timesteps: time bins spanning the three saccades.

    Returns:
        uint8 frames ``[N, num_timesteps, 2, image_size, image_size]``. Channel 0 contains OFF events
        and channel 1 ON events, with a 1 where the pixel emitted at least one event in the bin.
    """
    intensity = scans / SCAN_MAX_VALUE
    amplitude = max(1.0, round(image_size * SACCADE_AMPLITUDE_RATIO))
    margin = 1.0
    digit_size = image_size - amplitude - 2 * margin
    steps_per_saccade = max(MIN_STEPS_PER_SACCADE, 2 * -(-num_timesteps // NUM_SACCADES))
    num_steps = NUM_SACCADES * steps_per_saccade
    pixel_centers = np.arange(image_size, dtype=np.float32) + 0.5

    def render(offset_x: float, offset_y: float) -> np.ndarray:
        # Point-sample the bilinearly upscaled scan, placed at margin + offset, at each pixel center.
        scale = SCAN_PIXELS / digit_size
        weights_x = _interpolation_matrix((pixel_centers - margin - offset_x) * scale - 0.5, SCAN_PIXELS)
        weights_y = _interpolation_matrix((pixel_centers - margin - offset_y) * scale - 0.5, SCAN_PIXELS)
        # Two plain matrix products, columns then rows, because they run faster than np.einsum here.
        columns = (intensity.reshape(-1, SCAN_PIXELS) @ weights_x.T).reshape(len(scans), SCAN_PIXELS, image_size)
        rows = weights_y @ columns.transpose(1, 0, 2).reshape(SCAN_PIXELS, -1)
        return rows.reshape(image_size, len(scans), image_size).transpose(1, 0, 2)

    frames = np.zeros((len(scans), num_timesteps, 2, image_size, image_size), dtype=np.uint8)
    reference = np.log(BACKGROUND_INTENSITY + render(0.0, 0.0))

    for step, (offset_x, offset_y) in enumerate(_saccade_offsets(num_steps, amplitude)):
        log_intensity = np.log(BACKGROUND_INTENSITY + render(offset_x, offset_y))
        crossings = np.trunc((log_intensity - reference) / thresholds)
        reference += crossings * thresholds

        # Each step's events go to the bin that contains the step's midpoint.
        time_bin = ((2 * step + 1) * num_timesteps) // (2 * num_steps)
        frames[:, time_bin, 0] |= crossings < 0
        frames[:, time_bin, 1] |= crossings > 0

    return frames


class DigitsSource:
    """scikit-learn's 1,797 digit scans as saccade events ``[T, 2, image_size, image_size]``, fully offline."""

    name = "digits"
    num_classes = 10

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.input_shape: tuple[int, ...] = (2, cfg.image_size, cfg.image_size)

    def sample_lists(self) -> dict[Part, SampleList]:
        """Split the scans into a stratified 80% training pool and 20% test set, fixed by ``split_seed``."""
        _, labels = _load_scans()
        everything = SampleList(ids=np.arange(len(labels), dtype=np.int64), labels=labels)
        test_mask = stratified_mask(labels, TEST_FRACTION, self.cfg.split_seed)
        return {"train": everything.select(~test_mask), "test": everything.select(test_mask)}

    def cache_params(self, part: Part) -> dict[str, Any]:
        """Return the simulation parameters."""
        return {
            "dataset": self.name,
            "part": part,
            "image_size": self.cfg.image_size,
            "num_timesteps": self.cfg.num_timesteps,
            "contrast_threshold": CONTRAST_THRESHOLD,
            "threshold_mismatch": THRESHOLD_MISMATCH,
            "background_intensity": BACKGROUND_INTENSITY,
        }

    def convert(self, part: Part, samples: SampleList) -> np.ndarray:
        """Simulate the saccades of the given scans."""
        scans, _ = _load_scans()
        size = self.cfg.image_size

        # Draw the mismatch for all scans and pick rows, so a scan gets the same thresholds in any subset.
        rng = np.random.default_rng(MISMATCH_SEED)
        mismatch = rng.standard_normal((len(scans), size, size)).astype(np.float32)[samples.ids]
        thresholds = np.maximum(MIN_THRESHOLD, CONTRAST_THRESHOLD * (1.0 + THRESHOLD_MISMATCH * mismatch))

        return simulate_saccades(scans[samples.ids], thresholds, size, self.cfg.num_timesteps)
