"""Hardware constraint checks of a spiking network: placement onto cores, pruning needs and degenerate weights.

The placement itself is :mod:`ecs_common.placement`, the one definition that
ecs-deploy's mapper uses too. This module turns a trained model, or an
experiment config before training, into that placement's input and reports the
result per layer, per resource and per core.

Weights come from one of two sources:

* a model (:class:`ecs_train.training.SpikingClassifier` or
  :class:`ecs_train.models.SpikingNetwork`): its weights quantized to the
  weight format exactly as the accelerator stores them. Every nonzero weight
  word is a synapse; weights that are pruned or round to zero are not.
* a config only (before training): the network the config builds with every
  synapse present, a dense upper bound. Its weight words cycle through every
  nonzero word of the weight format, so each core's weight table is as full
  as a trained network could make it.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from torch import nn

from ecs_common.errors import ConfigError, ECSError, QuantizationError, ResourceError
from ecs_common.fixed_point import count_saturated, quantize
from ecs_common.formats import FixedPointFormat
from ecs_common.hardware import HardwareConfig
from ecs_common.hardware_config import AcceleratorConfig, from_metadata
from ecs_common.neuron import integer_parameters
from ecs_common.placement import Connection, LayerSpec, PlacementReport, SparseWeights, placement_report
from ecs_train.config import ExperimentConfig
from ecs_train.models import SpikingNetwork, SumPool2d, build_model
from ecs_train.quantization import QuantizedNeuron, is_neuron, neuron_kind, neuron_parameters

logger = logging.getLogger(__name__)

INPUT_LAYER = "input"

# Input impulses pushed through a conv chain at once when its synapse matrix is derived.
IMPULSE_CHUNK = 256


class NeuronCapacityError(ResourceError):
    """The neurons alone need more cores than the accelerator has, so no pruning can make the network fit."""


class WeightSaturationError(QuantizationError):
    """Weights lie outside the range of the weight format and would be clipped on the accelerator."""


class EmptyLayerError(ECSError, ValueError):
    """Every incoming weight of a layer is zero (for example all pruned), so the layer receives no input."""


# Network structure.


@dataclass(frozen=True)
class NeuronStage:
    """A neuron layer and the stateless modules (Flatten, Linear, Conv2d, SumPool2d) that feed it.

    ``name`` is the layer's module path (``layers.2``), the name the NIR export
    gives the neuron node. ``chain`` lists ``(path, module)`` from the source
    layer's output to this layer's input.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    source: str
    source_shape: tuple[int, ...]
    chain: tuple[tuple[str, nn.Module], ...]
    neuron: nn.Module

    @property
    def size(self) -> int:
        """Number of neurons in the layer."""
        return math.prod(self.shape)

    def weight_modules(self) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
        """Return the Linear and Conv2d modules of the chain, whose weights are the layer's synapses."""
        return [(path, module) for path, module in self.chain if isinstance(module, (nn.Linear, nn.Conv2d))]


def neuron_stages(network: SpikingNetwork) -> list[NeuronStage]:
    """Split a network into its neuron layers, each with the modules between it and its source layer."""
    stages: list[NeuronStage] = []
    source, source_shape = INPUT_LAYER, tuple(network.input_shape)
    chain: list[tuple[str, nn.Module]] = []

    for index, layer in enumerate(network.layers):
        path = f"layers.{index}"
        if not is_neuron(layer):
            chain.append((path, layer))
            continue
        shape = tuple(network.layer_shapes[index])
        stages.append(NeuronStage(path, neuron_kind(layer), shape, source, source_shape, tuple(chain), layer))
        source, source_shape, chain = path, shape, []

    if chain:
        paths = ", ".join(path for path, _ in chain)
        raise ConfigError(f"layers {paths} follow the last neuron layer; a network must end with its LI output layer")
    return stages


def effective_weight(module: nn.Linear | nn.Conv2d) -> torch.Tensor:
    """Return the weight a layer computes with, pruning mask applied, detached.

    ``torch.nn.utils.prune`` recomputes ``module.weight`` only on a forward
    pass, so with a mask present this reads ``weight_orig * weight_mask``.
    """
    original = getattr(module, "weight_orig", None)
    mask = getattr(module, "weight_mask", None)
    if original is not None and mask is not None:
        return (original * mask).detach()
    return module.weight.detach()


def _nonzero_words(fmt: FixedPointFormat) -> np.ndarray:
    """Return every nonzero word of ``fmt``, most negative first."""
    return np.concatenate([np.arange(fmt.min_int, 0), np.arange(1, fmt.max_int + 1)]).astype(np.int64)


def dense_pattern_words(shape: tuple[int, ...], fmt: FixedPointFormat) -> np.ndarray:
    """Return weight words of ``shape`` that are all nonzero and cycle through every nonzero word of ``fmt``."""
    words = _nonzero_words(fmt)
    count = math.prod(shape)
    return words[np.arange(count) % words.size].reshape(shape)


# Synapse matrices.


def _is_linear_chain(chain: tuple[tuple[str, nn.Module], ...]) -> bool:
    modules = [module for _, module in chain]
    return (
        len(modules) in (1, 2)
        and isinstance(modules[-1], nn.Linear)
        and all(isinstance(module, nn.Flatten) for module in modules[:-1])
    )


def _apply_chain(
    x: torch.Tensor, chain: tuple[tuple[str, nn.Module], ...], words: dict[str, np.ndarray]
) -> torch.Tensor:
    """Push float64 input through the chain with the weights replaced by their integer words."""
    for path, module in chain:
        if isinstance(module, nn.Linear):
            x = F.linear(x, torch.as_tensor(words[path], dtype=torch.float64))
        elif isinstance(module, nn.Conv2d):
            weight = torch.as_tensor(words[path], dtype=torch.float64)
            x = F.conv2d(x, weight, None, module.stride, module.padding, module.dilation, module.groups)
        elif isinstance(module, (nn.Flatten, SumPool2d)):
            x = module(x)
        else:
            raise ConfigError(
                f"layer {path!r} ({type(module).__name__}) is not supported by the constraint check; "
                "supported between neuron layers: Flatten, Linear, Conv2d and SumPool2d"
            )
    return x


def synapse_matrix(stage: NeuronStage, words: dict[str, np.ndarray]) -> SparseWeights:
    """Return the synapses from ``stage.source`` to ``stage`` as integer words, shaped ``(targets, sources)``.

    ``words`` maps the path of every Linear and Conv2d of the chain to its
    weight words. A Flatten-Linear chain uses the words directly; any other
    chain is measured by pushing one input impulse per source neuron through
    it, so convolution, padding and sum pooling give the synapses the
    accelerator stores. Zero words are no synapses.
    """
    num_sources = math.prod(stage.source_shape)
    shape = (stage.size, num_sources)
    if _is_linear_chain(stage.chain):
        path = stage.chain[-1][0]
        target, source = np.nonzero(words[path])
        return SparseWeights(target, source, words[path][target, source], shape)

    targets, sources, values = [], [], []
    for start in range(0, num_sources, IMPULSE_CHUNK):
        stop = min(start + IMPULSE_CHUNK, num_sources)
        impulses = torch.zeros((stop - start, num_sources), dtype=torch.float64)
        impulses[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        with torch.no_grad():
            response = _apply_chain(impulses.reshape(stop - start, *stage.source_shape), stage.chain, words)
        response_array = response.reshape(stop - start, stage.size).numpy()
        source, target = np.nonzero(response_array)
        targets.append(target)
        sources.append(source + start)
        values.append(np.rint(response_array[source, target]).astype(np.int64))
    return SparseWeights(np.concatenate(targets), np.concatenate(sources), np.concatenate(values), shape)


def layer_specs(stages: list[NeuronStage], input_size: int, words: dict[str, np.ndarray]) -> list[LayerSpec]:
    """Return the placement input: the input relays, then every neuron layer with its synapses."""
    specs = [LayerSpec(INPUT_LAYER, input_size)]
    for stage in stages:
        specs.append(LayerSpec(stage.name, stage.size, (Connection(stage.source, synapse_matrix(stage, words)),)))
    return specs


# Weight words and degenerate cases.


@dataclass(frozen=True)
class WeightStats:
    """Quantization outcome of one weight tensor: how many weights, how many are zero words, how many saturate."""

    path: str
    num_weights: int
    num_zero_words: int
    num_saturated: int
    max_abs: float


def _model_words(
    stages: list[NeuronStage], fmt: FixedPointFormat
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[WeightStats]]:
    """Quantize every weight of the network; return words, float weights and per-tensor statistics.

    Raises :class:`EmptyLayerError` when every weight of a layer is zero and
    :class:`ecs_common.errors.QuantizationError` when nonzero weights all
    round to zero.
    """
    words: dict[str, np.ndarray] = {}
    floats: dict[str, np.ndarray] = {}
    stats: list[WeightStats] = []
    for stage in stages:
        for path, module in stage.weight_modules():
            values = effective_weight(module).cpu().to(torch.float64).numpy()
            if not np.any(values):
                raise EmptyLayerError(
                    f"every one of the {values.size} weights of {path!r} (input of layer {stage.name!r}) is zero, "
                    "so the layer receives no input; prune to a lower sparsity, or train the layer again"
                )
            layer_words = quantize(values, fmt)
            if not np.any(layer_words):
                raise QuantizationError(
                    f"the weights of {path!r} (input of layer {stage.name!r}) all round to zero in {fmt}: the "
                    f"largest magnitude {np.max(np.abs(values)):.3g} is below half an LSB ({fmt.lsb / 2:.3g}); "
                    "use more fractional bits in the weight format or train with quantization (mode qat)"
                )
            words[path] = layer_words
            floats[path] = values
            stats.append(
                WeightStats(
                    path=path,
                    num_weights=int(values.size),
                    num_zero_words=int(np.count_nonzero(layer_words == 0)),
                    num_saturated=count_saturated(values, fmt),
                    max_abs=float(np.max(np.abs(values))),
                )
            )
    return words, floats, stats


def _dense_words(stages: list[NeuronStage], fmt: FixedPointFormat) -> dict[str, np.ndarray]:
    return {
        path: dense_pattern_words(tuple(module.weight.shape), fmt)
        for stage in stages
        for path, module in stage.weight_modules()
    }


def _check_saturation(stats: list[WeightStats], fmt: FixedPointFormat) -> None:
    saturated = [item for item in stats if item.num_saturated]
    if not saturated:
        return
    listing = "; ".join(
        f"{item.path}: {item.num_saturated} of {item.num_weights} (largest magnitude {item.max_abs:.3g})"
        for item in saturated
    )
    total = sum(item.num_saturated for item in saturated)
    raise WeightSaturationError(
        f"{total} weight(s) saturate in the weight format {fmt} (range {fmt.min_value:g} to {fmt.max_value:g}): "
        f"{listing}. Use a weight format with more integer bits, add weight decay, or train with quantization "
        "(mode qat) so that the network learns the clipping; pass allow_saturation=True (--allow-saturation) to "
        "accept it"
    )


def _check_neuron_parameters(
    stages: list[NeuronStage], network: SpikingNetwork, accelerator: AcceleratorConfig
) -> None:
    """Raise :class:`QuantizationError` for a decay factor that rounds to zero or a potential out of range."""
    for stage in stages:
        if isinstance(stage.neuron, QuantizedNeuron):
            continue  # its integer parameters were checked when it was built
        params = neuron_parameters(stage.neuron, stage.size, network.dt)
        integer_parameters(params, network.dt, accelerator.quant, network.reset_mode, stage.name)


# The report.


@dataclass(frozen=True)
class LayerConstraint:
    """Resources of one layer: its neurons, synapses, routes and distinct weights, and the cores it occupies."""

    name: str
    kind: str
    neurons: int
    synapses: int
    possible_synapses: int
    routes: int
    unique_weights: int
    max_fan_in: int
    cores: tuple[int, ...]
    saturated_weights: int = 0

    @property
    def sparsity(self) -> float:
        """Fraction of the possible synapses that are absent (pruned or zero words); 0 for input relays."""
        if not self.possible_synapses:
            return 0.0
        return 1.0 - self.synapses / self.possible_synapses


@dataclass
class ConstraintReport:
    """Mapping of a network onto the accelerator per layer, per resource and per core, and the pruning it needs.

    ``placement`` is the full :class:`ecs_common.placement.PlacementReport`.
    ``synapses_to_prune`` is the placement's lower bound: at least this many
    synapses must go before the synapses can fit the cores left after the
    input relays. ``synapses_to_prune_by_magnitude`` is how many synapses
    global magnitude pruning of these weights actually has to remove for the
    network to fit (``None`` when it fits already, when the search was not
    run, or when no magnitude pruning can make it fit).
    """

    hardware: HardwareConfig
    weight_format: FixedPointFormat
    dense: bool
    layers: list[LayerConstraint]
    placement: PlacementReport
    synapses_to_prune_by_magnitude: int | None = None
    saturated_weights: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        """Whether the network fits the accelerator as it is."""
        return self.placement.fits

    @property
    def num_synapses(self) -> int:
        """Synapses of the whole network."""
        return sum(layer.synapses for layer in self.layers)

    @property
    def possible_synapses(self) -> int:
        """Synapses of the network with every weight present."""
        return sum(layer.possible_synapses for layer in self.layers)

    @property
    def fan_in_out_pruning_necessary(self) -> bool:
        """Whether a single neuron needs more synapses, routes or weights than a whole core holds."""
        return self.placement.fan_in_out_pruning_necessary

    @property
    def global_pruning_necessary(self) -> bool:
        """Whether the network does not fit and removing synapses anywhere could make it fit.

        True when the synapses exceed the capacity of the cores left after the
        input relays, and also when they are within it but layers split over
        too many cores because of their fan-in.
        """
        if self.placement.global_pruning_necessary:
            return True
        return not self.fits and not self.fan_in_out_pruning_necessary

    @property
    def synapses_to_prune(self) -> int:
        """Lower bound on the synapses that must go (see the class docstring)."""
        return self.placement.synapses_to_prune

    @property
    def message(self) -> str:
        """Why the network does not fit and what would make it fit, or an empty string when it fits."""
        return self.placement.message

    def cores_of(self, layer: str) -> list[tuple[int, int, int]]:
        """Return ``(core, first neuron, neurons)`` for every core that contains part of ``layer``."""
        return [(core.core, core.first_neuron, core.neurons) for core in self.placement.cores if core.layer == layer]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON-compatible values."""
        return {
            "fits": self.fits,
            "dense": self.dense,
            "weight_format": str(self.weight_format),
            "num_synapses": self.num_synapses,
            "possible_synapses": self.possible_synapses,
            "fan_in_out_pruning_necessary": self.fan_in_out_pruning_necessary,
            "global_pruning_necessary": self.global_pruning_necessary,
            "synapses_to_prune": self.synapses_to_prune,
            "synapses_to_prune_by_magnitude": self.synapses_to_prune_by_magnitude,
            "saturated_weights": self.saturated_weights,
            "layers": [
                {**vars(layer), "cores": list(layer.cores), "sparsity": layer.sparsity} for layer in self.layers
            ],
            "placement": self.placement.to_dict(),
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """Return one paragraph: whether the network fits, and what pruning it needs."""
        hardware = self.hardware
        lines = [
            f"{'dense upper bound (every synapse present)' if self.dense else 'trained weights'}: "
            f"{self.num_synapses} synapses on {self.placement.cores_needed} of {hardware.num_cores} cores"
        ]
        if self.fits:
            lines.append("the network fits the accelerator")
        else:
            lines.append(self.message)
        if self.fan_in_out_pruning_necessary:
            lines.append("fan-in/fan-out pruning necessary: a single neuron exceeds a core's budget")
        if self.global_pruning_necessary and self.synapses_to_prune > 0:
            lines.append(f"global pruning necessary: at least {self.synapses_to_prune} synapses must go")
        elif self.global_pruning_necessary:
            lines.append(
                "global pruning necessary: the synapses fit the cores in total, but the layers split over more "
                "cores than there are; fewer synapses per layer need fewer cores"
            )
        if self.synapses_to_prune_by_magnitude is not None:
            remaining = self.num_synapses - self.synapses_to_prune_by_magnitude
            lines.append(
                f"global magnitude pruning must remove {self.synapses_to_prune_by_magnitude} synapses "
                f"(keeping {remaining}, sparsity {1 - remaining / max(self.possible_synapses, 1):.1%}) to fit"
            )
        lines.extend(self.notes)
        return "\n".join(lines)

    def _layer_table(self) -> Table:
        table = Table(title="Layers")
        for column in ("layer", "kind", "neurons", "synapses", "sparsity", "max fan-in", "routes", "unique weights"):
            table.add_column(column, justify="left" if column in ("layer", "kind") else "right")
        table.add_column("cores (first neuron + count)")
        for layer in self.layers:
            split = ", ".join(f"{core}: {first}+{count}" for core, first, count in self.cores_of(layer.name))
            table.add_row(
                layer.name,
                layer.kind,
                str(layer.neurons),
                str(layer.synapses),
                f"{layer.sparsity:.1%}" if layer.possible_synapses else "-",
                str(layer.max_fan_in),
                str(layer.routes),
                str(layer.unique_weights),
                split,
            )
        return table

    def _resource_table(self) -> Table:
        table = Table(title="Resources (demand of the whole network against the device)")
        for column in ("resource", "demand", "capacity", "fits"):
            table.add_column(column, justify="left" if column == "resource" else "right")
        for resource in self.placement.resources:
            table.add_row(
                resource.resource, str(resource.demand), str(resource.capacity), "yes" if resource.fits else "NO"
            )
        return table

    def _core_table(self) -> Table:
        hardware = self.hardware
        limits = {
            "neurons": hardware.num_neurons_core,
            "synapses": hardware.num_synapses_core,
            "routes": hardware.num_routes,
            "unique_weights": hardware.num_weights_core,
        }
        table = Table(title="Cores (usage / limit per core)")
        table.add_column("core", justify="right")
        table.add_column("layer")
        table.add_column("neuron range", justify="right")
        for resource in ("neurons", "synapses", "routes", "unique_weights"):
            table.add_column(resource.replace("_", " "), justify="right")
        for core in self.placement.cores:
            beyond = core.core >= hardware.num_cores
            cells = [f"{core.usage(resource)}/{limit}" for resource, limit in limits.items()]
            neurons = f"{core.first_neuron}..{core.first_neuron + core.neurons - 1}"
            table.add_row(f"{core.core}{' (missing)' if beyond else ''}", core.layer, neurons, *cells)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self._layer_table()
        yield self._resource_table()
        yield self._core_table()
        yield self.summary()

    def render(self, width: int = 120) -> str:
        """Return the tables and the summary as plain text."""
        buffer = io.StringIO()
        Console(file=buffer, width=width, color_system=None, highlight=False).print(self)
        return buffer.getvalue()

    def __str__(self) -> str:
        return self.render()


def _layer_constraints(
    stages: list[NeuronStage],
    input_size: int,
    placement: PlacementReport,
    possible: dict[str, int],
    saturated: dict[str, int],
) -> list[LayerConstraint]:
    usage = {layer.name: layer for layer in placement.layers}
    kinds = {INPUT_LAYER: "input"}
    kinds.update({stage.name: stage.kind for stage in stages})
    result = []
    for name, kind in kinds.items():
        layer = usage[name]
        result.append(
            LayerConstraint(
                name=name,
                kind=kind,
                neurons=layer.neurons,
                synapses=layer.synapses,
                possible_synapses=possible.get(name, 0),
                routes=layer.routes,
                unique_weights=layer.unique_weights,
                max_fan_in=layer.max_fan_in,
                cores=layer.cores,
                saturated_weights=saturated.get(name, 0),
            )
        )
    return result


def _neuron_capacity_error(specs: list[LayerSpec], hardware: HardwareConfig) -> NeuronCapacityError | None:
    """Return the error for a network whose neurons alone need more cores than there are, else None."""
    per_core = hardware.num_neurons_core
    cores = {spec.name: math.ceil(spec.size / per_core) for spec in specs}
    needed = sum(cores.values())
    if needed <= hardware.num_cores:
        return None

    largest = max(specs, key=lambda spec: spec.size)
    listing = ", ".join(f"{name}: {count}" for name, count in cores.items())
    remedies = [f"set num_cores to at least {needed} (synapses may need more)"]
    if len(specs) <= hardware.num_cores:
        slots = _neuron_slots_to_fit(specs, hardware.num_cores)
        remedies.append(f"raise num_neurons_core to at least {slots}")
    remedies.append(f"make layer {largest.name!r} smaller (for input relays: a smaller input, e.g. downsampled)")

    if largest.size > per_core:
        resource, limit, demand = "neurons", per_core, largest.size
        head = (
            f"layer {largest.name!r} has {largest.size} neurons, more than the {per_core} neuron slots of a core "
            f"(num_neurons_core), so it is split over {cores[largest.name]} cores"
        )
    else:
        resource, limit, demand = "cores", hardware.num_cores, needed
        head = f"layers never share a core, so the {len(specs)} layers need {needed} cores"
    message = (
        f"network does not fit: {head}; the neurons alone need {needed} cores ({listing}) but the accelerator "
        f"has {hardware.num_cores} (num_cores), and pruning cannot help because pruning removes synapses, not "
        f"neurons. To make it fit: {'; or '.join(remedies)}"
    )
    return NeuronCapacityError(
        message, layer=largest.name, core=hardware.num_cores, resource=resource, limit=limit, demand=demand
    )


def _neuron_slots_to_fit(specs: list[LayerSpec], num_cores: int) -> int:
    """Return the fewest neuron slots per core with which the layers' neurons fit ``num_cores`` cores.

    Layers never share a core, so the caller ensures there are at least as many cores as layers.
    """
    low, high = 1, max(spec.size for spec in specs)  # high always fits: one core per layer
    while low < high:
        middle = (low + high) // 2
        if sum(math.ceil(spec.size / middle) for spec in specs) <= num_cores:
            high = middle
        else:
            low = middle + 1
    return low


def _resolve(model_or_config: Any, accelerator_config: Any) -> tuple[SpikingNetwork, AcceleratorConfig, bool]:
    """Return the network, the accelerator config and whether the weights are the dense upper bound."""
    config: ExperimentConfig | None
    if isinstance(model_or_config, ExperimentConfig):
        config = model_or_config
        network = build_network_from_config(config)
        dense = True
    else:
        network = getattr(model_or_config, "network", model_or_config)
        config = getattr(model_or_config, "config", None)
        dense = False
        if not isinstance(network, SpikingNetwork):
            raise TypeError(
                f"expected an ExperimentConfig, a SpikingClassifier or a SpikingNetwork, got "
                f"{type(model_or_config).__name__}"
            )

    if accelerator_config is None:
        if config is None:
            raise ConfigError(
                "a SpikingNetwork carries no hardware config; pass accelerator_config "
                "(ecs_common.hardware_config.from_metadata(hardware_cfg, quant_cfg))"
            )
        accelerator_config = accelerator_config_of(config)
    elif not isinstance(accelerator_config, AcceleratorConfig):
        accelerator_config = from_metadata(accelerator_config)
    return network, accelerator_config, dense


def accelerator_config_of(config: ExperimentConfig) -> AcceleratorConfig:
    """Return the accelerator config of an experiment: its hardware config with its quantization formats."""
    return from_metadata(config.hardware_cfg, config.model_cfg.quant_cfg)


def build_network_from_config(config: ExperimentConfig) -> SpikingNetwork:
    """Build the untrained network of ``config``; the input shape and classes come from its dataset.

    Only the dataset reader is constructed, because it defines the input
    shape. No recordings are read or converted.
    """
    from ecs_train.data import build_data_module

    data_module = build_data_module(config.data_cfg, batch_size=1, seed=config.trainer_cfg.seed)
    return build_model(config.model_cfg.network_cfg, data_module.input_shape, data_module.num_classes)


def constraint_report(
    model_or_config: Any,
    accelerator_config: Any = None,
    *,
    allow_saturation: bool | None = None,
    search_pruning: bool = True,
) -> ConstraintReport:
    """Check a network against the accelerator and return the per-layer, per-resource and per-core report.

    ``model_or_config`` is an :class:`ExperimentConfig` (the untrained network
    with every synapse present), a ``SpikingClassifier`` or a
    ``SpikingNetwork`` (its current weights, quantized, pruning masks
    applied). ``accelerator_config`` is an :class:`AcceleratorConfig`; None
    takes it from the config (``hardware_cfg`` and ``model_cfg.quant_cfg``).
    With ``search_pruning`` and a network that does not fit, the report also
    gives the number of synapses that global magnitude pruning must remove.

    Raises :class:`NeuronCapacityError` when the neurons alone need more
    cores than the accelerator has; :class:`EmptyLayerError` when every
    weight of a layer is zero; :class:`ecs_common.errors.QuantizationError`
    when a layer's weights all round to zero or a decay factor rounds to zero;
    :class:`WeightSaturationError` when weights saturate (see below). A
    network that does not fit otherwise is no error: the report says why and
    what pruning it needs.

    Saturated weights: ``allow_saturation`` True lists them in the report,
    False raises. None (the default) raises for a float network, whose
    weights would be clipped only when quantized after training, and lists
    them for a quantized network. A quantized network computes with the
    clipped words already, so its measured accuracy includes the clipping.
    """
    network, accelerator, dense = _resolve(model_or_config, accelerator_config)
    hardware = accelerator.hardware
    fmt = accelerator.weight_quant_scheme
    stages = neuron_stages(network)
    input_size = math.prod(network.input_shape)

    _check_neuron_parameters(stages, network, accelerator)
    notes: list[str] = []
    if dense:
        words = _dense_words(stages, fmt)
        floats = {path: np.abs(value).astype(np.float64) for path, value in words.items()}
        stats: list[WeightStats] = []
    else:
        words, floats, stats = _model_words(stages, fmt)
        if allow_saturation is False or (allow_saturation is None and not network.quantized):
            _check_saturation(stats, fmt)
        for item in stats:
            if item.num_saturated:
                notes.append(f"{item.num_saturated} of {item.num_weights} weights of {item.path} saturate in {fmt}")

    specs = layer_specs(stages, input_size, words)
    capacity_error = _neuron_capacity_error(specs, hardware)
    if capacity_error is not None:
        raise capacity_error
    _check_empty_layers(specs)
    placement = placement_report(specs, hardware)

    dense_words = _dense_words(stages, fmt)
    possible = {spec.name: _count(spec) for spec in layer_specs(stages, input_size, dense_words)}
    saturated_by_layer = _saturated_by_layer(stages, stats)
    layers = _layer_constraints(stages, input_size, placement, possible, saturated_by_layer)
    report = ConstraintReport(
        hardware=hardware,
        weight_format=fmt,
        dense=dense,
        layers=layers,
        placement=placement,
        saturated_weights=sum(item.num_saturated for item in stats),
        notes=notes,
    )

    if search_pruning and not placement.fits:
        present = {path: value != 0 for path, value in words.items()}
        search = magnitude_pruning_to_fit(stages, input_size, hardware, words, floats, present)
        report.synapses_to_prune_by_magnitude = search.removed if search.fits else None
        if not search.fits:
            report.notes.append(f"global magnitude pruning cannot make the network fit: {search.reason}")
    logger.debug("constraint report: fits %s, %d synapses", report.fits, report.num_synapses)
    return report


def _count(spec: LayerSpec) -> int:
    # layer_specs builds every connection from synapse_matrix, so its weights are SparseWeights.
    return sum(
        int(np.count_nonzero(np.asarray(cast(SparseWeights, connection.weights).value))) for connection in spec.incoming
    )


def _check_empty_layers(specs: list[LayerSpec]) -> None:
    for spec in specs:
        if spec.incoming and _count(spec) == 0:
            raise EmptyLayerError(
                f"layer {spec.name!r} has no synapses left (every incoming weight is zero after quantization and "
                "pruning), so it never receives input; prune to a lower sparsity or train the layer again"
            )


def _saturated_by_layer(stages: list[NeuronStage], stats: list[WeightStats]) -> dict[str, int]:
    owner = {path: stage.name for stage in stages for path, _ in stage.weight_modules()}
    result: dict[str, int] = {}
    for item in stats:
        result[owner[item.path]] = result.get(owner[item.path], 0) + item.num_saturated
    return result


# Magnitude pruning search.


@dataclass(frozen=True)
class PruningSearch:
    """Outcome of :func:`magnitude_pruning_to_fit`.

    ``removed`` is the number of present weights that global magnitude pruning
    removes, smallest magnitudes first, in the smallest configuration that
    fits. ``masks`` marks, per weight tensor, the weights that stay.
    ``placements`` counts the placements tried.
    """

    fits: bool
    removed: int
    masks: dict[str, np.ndarray]
    placements: int
    reason: str = ""


def magnitude_pruning_to_fit(
    stages: list[NeuronStage],
    input_size: int,
    hardware: HardwareConfig,
    words: dict[str, np.ndarray],
    magnitudes: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    fits: Callable[[list[LayerSpec]], bool] | None = None,
) -> PruningSearch:
    """Find the fewest weights to remove, smallest ``magnitudes`` first over all tensors, for the network to fit.

    ``words`` are the weight words per tensor path. ``present`` marks the
    weights that count as synapses. A present weight whose word is zero gets
    a one-LSB stand-in, so that a weight that rounds to zero now but may grow
    during fine-tuning is budgeted.

    Bisection over the number removed, each candidate checked with
    :func:`ecs_common.placement.placement_report`. Bisection assumes that
    removing more synapses never makes the network need more cores. Lower
    fan-ins shorten no run of neurons, but routes and distinct weights per
    core can in rare cases rise, so callers check the final placement again
    (``ecs_train.pruning.prune_model`` does). No layer is ever emptied: when
    even that does not fit, ``fits`` is False and ``reason`` says why.
    """
    paths = list(words)
    present_flat = [np.asarray(present[path], dtype=bool).ravel() for path in paths]
    stand_in = {path: np.where((words[path] == 0) & present[path], 1, words[path]) for path in paths}

    # Global order of the present weights, smallest magnitude first, as (tensor index, flat index).
    owner = np.concatenate([np.full(int(mask.sum()), index) for index, mask in enumerate(present_flat)])
    flat_index = np.concatenate([np.flatnonzero(mask) for mask in present_flat])
    values = np.concatenate(
        [np.abs(magnitudes[path]).ravel()[mask] for path, mask in zip(paths, present_flat, strict=True)]
    )
    order = np.argsort(values, kind="stable")
    owner, flat_index = owner[order], flat_index[order]

    # Removing more than `limit` weights would empty some tensor: its largest weight sits at position `limit`.
    limit = min(int(np.flatnonzero(owner == index).max()) for index in range(len(paths)) if np.any(owner == index))
    check = fits or (lambda specs: placement_report(specs, hardware).fits)
    tried = 0

    def candidate(removed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        masks = {path: mask.reshape(words[path].shape).copy() for path, mask in zip(paths, present_flat, strict=True)}
        for index, path in enumerate(paths):
            chosen = flat_index[:removed][owner[:removed] == index]
            masks[path].reshape(-1)[chosen] = False
        return masks, {path: np.where(masks[path], stand_in[path], 0) for path in paths}

    def fits_after(removed: int) -> bool:
        nonlocal tried
        tried += 1
        _, candidate_words = candidate(removed)
        return check(layer_specs(stages, input_size, candidate_words))

    if fits_after(0):
        masks, _ = candidate(0)
        return PruningSearch(True, 0, masks, tried)
    if not fits_after(limit):
        masks, _ = candidate(limit)
        return PruningSearch(
            False,
            limit,
            masks,
            tried,
            reason=f"even with {limit} of {len(order)} weights removed (one more would leave a layer without "
            "synapses) the network does not fit; use more cores or smaller layers",
        )

    low, high = 0, limit  # fits_after(low) is False, fits_after(high) is True
    while high - low > 1:
        middle = (low + high) // 2
        if fits_after(middle):
            high = middle
        else:
            low = middle
    masks, _ = candidate(high)
    return PruningSearch(True, high, masks, tried)


# The feed-forward interface of the tutorial.


class ConstraintCheck(NamedTuple):
    """Result of :func:`check_constraints`; unpacks like the tuple of its six fields, in this order."""

    fan_in_out_pruning_necessary: bool
    global_pruning_necessary: bool
    num_weights_hidden: int
    input_dim: int
    hidden_features: tuple[int, ...]
    output_dim: int


def check_constraints(
    config: ExperimentConfig,
    accelerator_config: Any = None,
    model: Any = None,
    *,
    allow_saturation: bool | None = None,
) -> ConstraintCheck:
    """Check a feed-forward network against the accelerator.

    Returns ``(fan_in_out_pruning_necessary, global_pruning_necessary,
    num_weights_hidden, input_dim, hidden_features, output_dim)``:

    * ``fan_in_out_pruning_necessary``: a single neuron needs more synapses,
      routes or weight-table entries than one core has, so its own fan-in or
      fan-out must be pruned;
    * ``global_pruning_necessary``: the network does not fit, and removing
      synapses anywhere could make it fit (see :func:`constraint_report` for
      how many must go);
    * ``num_weights_hidden``: synapses into the hidden layers (all layers but
      the output layer);
    * ``input_dim``: input neurons, e.g. 578 for N-MNIST at ``[2, 17, 17]``;
    * ``hidden_features``: neurons of each hidden layer, a tuple such as ``(128,)``;
    * ``output_dim``: output neurons (classes).

    Without ``model`` the weights are those of the untrained network with
    every synapse present (a dense upper bound), so the result depends on the
    config alone. With ``model`` (a trained ``SpikingClassifier`` or
    ``SpikingNetwork``) its quantized, possibly pruned weights count instead.
    ``accelerator_config`` defaults to the config's hardware and quantization
    formats. Raises :class:`NeuronCapacityError` when the neurons alone need
    more cores than there are, and the errors of :func:`constraint_report`.
    """
    if config.model_cfg.network_cfg.architecture != "feed_forward":
        raise ConfigError(
            f"check_constraints handles feed-forward networks, got architecture "
            f"{config.model_cfg.network_cfg.architecture!r}; use constraint_report for other networks"
        )
    if accelerator_config is None:
        accelerator_config = accelerator_config_of(config)
    report = constraint_report(
        config if model is None else model, accelerator_config, allow_saturation=allow_saturation, search_pruning=False
    )

    hidden = report.layers[1:-1]
    check = ConstraintCheck(
        fan_in_out_pruning_necessary=report.fan_in_out_pruning_necessary,
        global_pruning_necessary=report.global_pruning_necessary,
        num_weights_hidden=sum(layer.synapses for layer in hidden),
        input_dim=report.layers[0].neurons,
        hidden_features=tuple(layer.neurons for layer in hidden),
        output_dim=report.layers[-1].neurons,
    )
    if not report.fits:
        logger.warning("%s", report.message)
    return check


def iter_weight_modules(network: SpikingNetwork) -> Iterator[tuple[str, nn.Linear | nn.Conv2d]]:
    """Yield ``(path, module)`` of every Linear and Conv2d of the network: the prunable weights."""
    for stage in neuron_stages(network):
        yield from stage.weight_modules()
