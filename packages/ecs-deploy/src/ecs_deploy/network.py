"""The deployable network: import from NIR, placement, simulation, prediction and memory files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir
import numpy as np

from ecs_common.fixed_point import FixedPointValue
from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_common.placement import Placement, PlacementReport, placement_report
from ecs_deploy.config import READOUTS
from ecs_deploy.errors import InputError
from ecs_deploy.events import as_events, check_binary, events_to_dense, generate_input_events
from ecs_deploy.model import IntegerNetwork
from ecs_deploy.nir_import import import_graph, load_nir
from ecs_deploy.simulator import BatchResult, BatchSimulator, run_steps

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Predictions over a set of samples and, with labels, the accuracy.

    ``output_states`` is ``[N, T_sim, N_out]`` (``int64``); ``spike_counts``
    maps each layer to ``[N, neurons]`` spike counts.
    """

    predictions: np.ndarray
    labels: np.ndarray | None
    output_states: np.ndarray
    spike_counts: dict[str, np.ndarray]
    latency: int

    @property
    def accuracy(self) -> float | None:
        """Fraction of correct predictions, or ``None`` without labels."""
        if self.labels is None or not self.labels.size:
            return None
        return float(np.mean(self.predictions == self.labels))


class Network:
    """A NIR network mapped onto the accelerator, simulated bit-accurately in integer arithmetic.

    ``nir_graph`` is a ``nir.NIRGraph`` (or a path to a NIR file).
    ``accelerator_config`` (``ecs_common.hardware_config.from_metadata``) and
    ``quant_options`` (``ecs_common.quant_options.options_from_config``) may be
    left out when the graph carries ``ecs`` metadata; given, they override it.
    ``dt`` (seconds), ``reset_mode`` and ``readout`` override the metadata
    likewise. ``backend`` picks the batch kernel: ``"auto"``, ``"numba"`` or
    ``"numpy"``.
    """

    def __init__(
        self,
        nir_graph: nir.NIRGraph | str | Path,
        accelerator_config: Any = None,
        quant_options: Any = None,
        *,
        dt: float | None = None,
        reset_mode: str | None = None,
        readout: str | None = None,
        backend: str = "auto",
    ) -> None:
        if isinstance(nir_graph, (str, Path)):
            model = load_nir(
                nir_graph, accelerator_config, quant_options, dt=dt, reset_mode=reset_mode, readout=readout
            )
        else:
            model = import_graph(
                nir_graph, accelerator_config, quant_options, dt=dt, reset_mode=reset_mode, readout=readout
            )
        self._init_from_model(model, backend)

    def _init_from_model(self, model: IntegerNetwork, backend: str) -> None:
        self.model = model
        self.backend = backend
        self._simulator: BatchSimulator | None = None
        self._report: PlacementReport | None = None

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        hardware: Any = None,
        quant: Any = None,
        *,
        dt: float | None = None,
        reset_mode: str | None = None,
        readout: str | None = None,
        backend: str = "auto",
    ) -> Network:
        """Read a NIR file; ``hardware`` and ``quant`` are models, dicts or YAML paths (needed without metadata)."""
        return cls(path, hardware, quant, dt=dt, reset_mode=reset_mode, readout=readout, backend=backend)

    @classmethod
    def from_model(cls, model: IntegerNetwork, backend: str = "auto") -> Network:
        """Wrap an already built integer network (as the memory-file reader does)."""
        network = cls.__new__(cls)
        network._init_from_model(model, backend)
        return network

    # Description.

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input frame, without time and batch dimensions."""
        return self.model.input_shape

    @property
    def num_inputs(self) -> int:
        """Number of input neurons (relays)."""
        return self.model.input_layer.size

    @property
    def num_outputs(self) -> int:
        """Number of output neurons."""
        return self.model.layer(self.model.output_layer).size

    @property
    def latency(self) -> int:
        """Steps between an input event and the output state it causes (``network_latency`` for a chain)."""
        return self.model.latency

    @property
    def layer_names(self) -> list[str]:
        """Layer names in order, the input relays first."""
        return [layer.name for layer in self.model.layers]

    @property
    def hardware(self) -> HardwareConfig:
        """Hardware resources the network is mapped onto."""
        return self.model.hardware

    @property
    def quant(self) -> QuantConfig:
        """Fixed-point formats the network computes in."""
        return self.model.quant

    @property
    def state_format(self) -> FixedPointFormat:
        """Format of the membrane states the simulators return."""
        return self.model.quant.state_format

    @property
    def readout(self) -> str:
        """How output states become class scores: ``"last"``, ``"max"`` or ``"mean"``."""
        return self.model.readout

    @property
    def assumptions(self) -> dict[str, Any]:
        """Settings the NIR file did not carry, with the values used in their place."""
        return dict(self.model.assumptions)

    # Placement.

    def placement_report(self) -> PlacementReport:
        """Return the placement report: usage per core and layer, and pruning needs.

        A network that does not fit gets a report with ``fits`` false and the
        :class:`ResourceError` in ``error``, which is not raised.
        """
        if self._report is None:
            self._report = placement_report(self.model.layer_specs(), self.model.hardware)
        return self._report

    @property
    def placement(self) -> Placement:
        """Neuron-to-core assignment; raises :class:`ResourceError` when the network does not fit."""
        report = self.placement_report()
        if report.error is not None:
            raise report.error
        return Placement(
            hardware=self.model.hardware,
            cores=report.cores,
            layer_cores={layer.name: layer.cores for layer in report.layers},
            layer_sizes={layer.name: layer.size for layer in self.model.layers},
        )

    # Input preparation.

    def _batch_frames(self, inputs: Any, time_major: bool) -> np.ndarray:
        """Return binary input as a contiguous ``[B, T, N_in]`` array (``uint8``, ``int8``, bool or ``float32``)."""
        array = np.asarray(inputs)
        if array.ndim < 3:
            layout = "[T, B, ...]" if time_major else "[B, T, ...]"
            raise InputError(f"inputs must be {layout} with the input shape {self.input_shape} last, got {array.shape}")
        tail = tuple(array.shape[2:])
        if tail != tuple(self.input_shape) and tail != (self.num_inputs,):
            raise InputError(
                f"inputs have shape {array.shape}: after the batch and time dimensions they must have the input "
                f"shape {self.input_shape} or ({self.num_inputs},), got {tail}"
            )
        check_binary(array, "inputs")
        flat = array.reshape(array.shape[0], array.shape[1], self.num_inputs)
        if time_major:
            flat = flat.transpose(1, 0, 2)
        # Compact 0/1 dtypes stay as they are (the event-driven kernel reads them);
        # everything else becomes float32, the dtype of the matrix products.
        if flat.dtype in (np.uint8, np.int8, np.bool_, np.float32):
            return np.ascontiguousarray(flat)
        return np.ascontiguousarray(flat, dtype=np.float32)

    def generate_input_events(self, dense: Any) -> np.ndarray:
        """Turn dense frames ``[T, B, *input_shape]`` or ``[T, B, N]`` into an event list.

        See :mod:`ecs_deploy.events` for the event fields and their order.
        """
        return generate_input_events(dense, self.input_shape)

    # Simulation.

    def _events_to_frames(self, input_events: Any, sample: int | None) -> np.ndarray:
        events = as_events(input_events)
        samples = np.unique(events["sample"])
        if sample is None:
            if samples.size > 1:
                raise InputError(
                    f"the events hold {samples.size} samples ({samples.min()}..{samples.max()}); pass sample=i "
                    "to simulate one of them, or use simulate_batch for all"
                )
            sample = int(samples[0]) if samples.size else 0
        events = events[events["sample"] == sample]
        events["sample"] = 0
        steps = int(events["timestep"].max()) + 1 if events.size else 0
        return events_to_dense(events, steps, 1, self.num_inputs)

    def simulate_steps(self, frames: Any, num_timesteps: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Simulate step by step through delay lines, the reference the batch simulator is tested against.

        ``frames`` is ``[T, B, N_in]`` binary. Returns the output states
        ``[T_sim, B, N_out]`` and every layer's spikes ``bool [T_sim, B, N]``.
        """
        frames = np.asarray(frames)
        check_binary(frames, "frames")
        if num_timesteps is None:
            num_timesteps = frames.shape[0] + self.latency
        return run_steps(self.model, frames.reshape(frames.shape[0], frames.shape[1], -1), int(num_timesteps))

    def simulate(
        self, input_events: Any, num_timesteps: int | None = None, sample: int | None = None
    ) -> list[list[FixedPointValue]]:
        """Simulate one sample step by step and return the output neurons' states per timestep.

        ``input_events`` is an event list (:data:`ecs_deploy.events.EVENT_DTYPE`,
        or rows ``(timestep, sample, neuron)`` / ``(timestep, neuron)``). With
        several samples in it, ``sample`` picks one. ``num_timesteps``
        defaults to the last input step + 1 + :attr:`latency`, so every input
        step gets its output: the output at step ``t + latency`` reflects the
        input of step ``t``. Returns a list over timesteps of lists of
        :class:`FixedPointValue` in the state format (``to_float()`` gives
        state units).
        """
        frames = self._events_to_frames(input_events, sample)
        if num_timesteps is None:
            num_timesteps = frames.shape[0] + self.latency
        states, _ = run_steps(self.model, frames, int(num_timesteps))
        fmt = self.state_format
        return [[FixedPointValue(int(word), fmt) for word in step[0]] for step in states]

    def simulate_batch(
        self,
        inputs: Any,
        num_timesteps: int | None = None,
        *,
        time_major: bool = False,
        record_spikes: bool = False,
    ) -> BatchResult:
        """Simulate a batch of binary inputs at once, vectorized.

        ``inputs`` is ``[B, T, *input_shape]`` (or ``[B, T, N_in]``), or
        ``[T, B, ...]`` with ``time_major=True``, holding 0/1 in any numeric or
        bool dtype. ``num_timesteps`` defaults to ``T + latency``. Returns a
        :class:`BatchResult`: output states ``[T_sim, B, N_out]`` (``int64``),
        spike counts per layer, and the rasters with ``record_spikes``.
        """
        frames = self._batch_frames(inputs, time_major)
        if self._simulator is None:
            self._simulator = BatchSimulator(self.model, self.backend)
        if num_timesteps is None:
            num_timesteps = frames.shape[1] + self._simulator.latency
        if num_timesteps < 0:
            raise InputError(f"num_timesteps must be non-negative, got {num_timesteps}")
        return self._simulator.run(frames, int(num_timesteps), record_spikes=record_spikes)

    # Prediction.

    def predict(self, states: Any, readout: str | None = None) -> np.ndarray | int:
        """Return the predicted class per sample from output states over time.

        ``states`` is a :class:`BatchResult`, an array ``[T_sim, B, N_out]``
        or ``[T_sim, N_out]``, or the list that :meth:`simulate` returns.
        Only the steps from :attr:`latency` on, which reflect input, count:
        ``"last"`` takes the last step, ``"max"`` the maximum and ``"mean"``
        the mean over them. ``readout`` defaults to the metadata's. Returns an
        ``int64`` array ``[B]``, or an ``int`` for a single sample.
        """
        readout = readout or self.readout
        if readout not in READOUTS:
            raise InputError(f"unknown readout {readout!r}; expected one of {', '.join(READOUTS)}")
        single = False
        if isinstance(states, BatchResult):
            words = states.output_states
        elif isinstance(states, list):
            words = np.array([[int(value) for value in step] for step in states], dtype=np.int64)[:, None, :]
            single = True
        else:
            words = np.asarray(states)
            if words.ndim == 2:
                words, single = words[:, None, :], True
        if words.ndim != 3 or words.shape[-1] != self.num_outputs:
            raise InputError(f"states must be [T_sim, B, {self.num_outputs}], got shape {words.shape}")
        aligned = words[self.latency :]
        if not aligned.shape[0]:
            raise InputError(
                f"states cover {words.shape[0]} steps, but outputs reflect input only from step {self.latency} on; "
                f"simulate at least {self.latency + 1} steps"
            )
        if readout == "last":
            scores = aligned[-1]
        elif readout == "max":
            scores = aligned.max(axis=0)
        else:
            scores = aligned.mean(axis=0)
        predictions = np.argmax(scores, axis=-1).astype(np.int64)
        return int(predictions[0]) if single else predictions

    def evaluate(
        self,
        inputs: np.ndarray,
        labels: np.ndarray | None = None,
        *,
        batch_size: int = 256,
        num_timesteps: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Evaluation:
        """Simulate samples ``[N, T, *input_shape]`` in batches and predict; ``progress(done, total)`` reports."""
        inputs = np.asarray(inputs)
        if inputs.ndim < 3:
            raise InputError(f"samples must be [N, T, *input_shape], got shape {inputs.shape}")
        if batch_size <= 0:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        total = inputs.shape[0]
        predictions: list[np.ndarray] = []
        states: list[np.ndarray] = []
        counts: dict[str, list[np.ndarray]] = {}
        for start in range(0, total, batch_size):
            result = self.simulate_batch(inputs[start : start + batch_size], num_timesteps)
            predictions.append(np.asarray(self.predict(result)))
            states.append(result.output_states.transpose(1, 0, 2))
            for name, value in result.spike_counts.items():
                counts.setdefault(name, []).append(value)
            if progress is not None:
                progress(min(start + batch_size, total), total)
        if labels is not None:
            labels = np.asarray(labels).astype(np.int64).ravel()
        return Evaluation(
            predictions=np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64),
            labels=labels,
            output_states=np.concatenate(states) if states else np.zeros((0, 0, self.num_outputs), dtype=np.int64),
            spike_counts={name: np.concatenate(value) for name, value in counts.items()},
            latency=self.latency,
        )

    # Memory files.

    def generate_mem_files(self, out_dir: str | Path, print_util: bool = True, force: bool = False) -> Path:
        """Write one memory-file set per core plus ``manifest.json`` into ``out_dir``; return the manifest path.

        Raises :class:`ResourceError` when the network does not fit and
        :class:`OutputExistsError` when ``out_dir`` contains a set already and
        ``force`` is false. With ``print_util`` the utilization table is printed.
        """
        from ecs_deploy.memfiles import write_mem_files

        manifest = write_mem_files(self, out_dir, force=force)
        if print_util:
            from ecs_deploy.report import print_utilization

            print_utilization(self.placement_report())
        return manifest

    def __repr__(self) -> str:
        layers = ", ".join(f"{layer.name}:{layer.kind}[{layer.size}]" for layer in self.model.layers)
        return f"Network({layers}; latency {self.latency})"
