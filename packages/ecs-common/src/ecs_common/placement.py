"""Placement of a network's neurons onto accelerator cores and the resources each core uses.

The one definition of "does this network fit": ecs-train's constraint checker
and ecs-deploy's mapper both call it, and neither imports torch here.

Packing rule: layers never share a core. Each layer is cut into consecutive
runs of neurons, one run per core. A run ends as soon as the next neuron would
exceed a per-core budget. The budgets are neuron slots, synapses (the fan-in of
the neurons on the core), routes (pairs of a neuron on the core and a
destination core it sends to) and distinct weight words. So a large layer and a
layer with a large fan-in both spread over several cores. A single neuron that
exceeds a budget on its own cannot be split; it makes the network unplaceable.

Layers with no incoming connection are input layers: their neurons are event
relays that take neuron slots and own routes but have no synapses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ecs_common.errors import ResourceError
from ecs_common.hardware import HardwareConfig

RESOURCES: tuple[str, ...] = ("neurons", "synapses", "routes", "unique_weights")

# Maximum passes over the layers before the route counts are taken as final.
# Routes of a layer depend on how its target layers are split. For feed-forward
# networks one pass settles that, and recurrent connections may need more.
_MAX_PASSES = 4


@dataclass(frozen=True)
class SparseWeights:
    """Weights of one connection as index arrays (coordinate format), without scipy.

    Entry ``i`` is a synapse from neuron ``source[i]`` of the source layer to
    neuron ``target[i]`` of the target layer with weight ``value[i]``.
    ``shape`` is ``(target layer size, source layer size)``, the orientation of
    NIR's ``weight[out, in]``. A pair may appear more than once: each entry is
    one synapse. Entries whose value is zero are not synapses.
    """

    target: np.ndarray
    source: np.ndarray
    value: np.ndarray
    shape: tuple[int, int]


WeightMatrix = np.ndarray | SparseWeights


@dataclass(frozen=True)
class Connection:
    """Incoming weights of a layer from one source layer.

    ``weights`` is a dense ``[target size, source size]`` array or a
    :class:`SparseWeights`. Values are integer weight words, although any
    numbers work: only zero versus nonzero and equality between values count.
    """

    source: str
    weights: WeightMatrix


@dataclass(frozen=True)
class LayerSpec:
    """One layer to place: a name, its neuron count and its incoming connections.

    A layer without incoming connections is an input layer of event relays.
    A connection whose source is the layer itself is a recurrent connection.
    """

    name: str
    size: int
    incoming: tuple[Connection, ...] = ()

    @property
    def is_input(self) -> bool:
        """Whether the layer is a layer of input relays (no incoming connection)."""
        return not self.incoming


@dataclass(frozen=True)
class CoreUsage:
    """Resources one core uses: a run of neurons of one layer and their synapses and routes."""

    core: int
    layer: str
    first_neuron: int
    neurons: int
    synapses: int
    routes: int
    unique_weights: int

    def usage(self, resource: str) -> int:
        """Return the demand for ``resource`` (one of :data:`RESOURCES`) on this core."""
        return int(getattr(self, resource))


@dataclass(frozen=True)
class LayerUsage:
    """Totals of one layer over all the cores it occupies."""

    name: str
    neurons: int
    synapses: int
    routes: int
    unique_weights: int
    cores: tuple[int, ...]
    max_fan_in: int


@dataclass(frozen=True)
class ResourceDemand:
    """Demand of the whole network for one resource against the device's capacity."""

    resource: str
    demand: int
    capacity: int

    @property
    def fits(self) -> bool:
        """Whether the demand is within the capacity."""
        return self.demand <= self.capacity


@dataclass(frozen=True)
class NeuronOverflow:
    """A single neuron that needs more of a per-core resource than a whole core has."""

    layer: str
    neuron: int
    core: int
    resource: str
    demand: int
    limit: int


@dataclass
class Placement:
    """Assignment of every neuron to a core, with the resources used per core.

    Cores are numbered from 0 in layer order. ``layer_cores`` maps each layer
    to its cores, and ``core_of`` gives the core of every neuron of a layer.
    """

    hardware: HardwareConfig
    cores: list[CoreUsage]
    layer_cores: dict[str, tuple[int, ...]]
    layer_sizes: dict[str, int]

    @property
    def num_cores_used(self) -> int:
        """Number of cores the network occupies."""
        return len(self.cores)

    def core_of(self, layer: str) -> np.ndarray:
        """Return the core index of each neuron of ``layer`` (``int64``, one entry per neuron)."""
        result = np.empty(self.layer_sizes[layer], dtype=np.int64)
        for core in self.layer_cores[layer]:
            usage = self.cores[core]
            result[usage.first_neuron : usage.first_neuron + usage.neurons] = core
        return result

    def local_index(self, layer: str) -> np.ndarray:
        """Return each neuron's slot on its core (its index among the core's neurons)."""
        result = np.empty(self.layer_sizes[layer], dtype=np.int64)
        for core in self.layer_cores[layer]:
            usage = self.cores[core]
            result[usage.first_neuron : usage.first_neuron + usage.neurons] = np.arange(usage.neurons)
        return result


@dataclass
class PlacementReport:
    """Result of placing a network without raising: usage, demand and what pruning it needs.

    ``cores`` lists every core the placement needs, also those beyond
    ``num_cores`` when the network does not fit. ``synapses_to_prune`` is the
    minimum number of synapses that must go before the synapses can fit the
    cores left after the input layers. Pruning that many is necessary but not
    always sufficient.
    """

    hardware: HardwareConfig
    fits: bool
    cores: list[CoreUsage]
    layers: list[LayerUsage]
    resources: list[ResourceDemand]
    cores_needed: int
    fan_in_out_pruning_necessary: bool
    global_pruning_necessary: bool
    synapses_to_prune: int
    neuron_overflows: list[NeuronOverflow] = field(default_factory=list)
    error: ResourceError | None = None

    @property
    def message(self) -> str:
        """The error message when the network does not fit, else an empty string."""
        return str(self.error) if self.error is not None else ""

    def to_dict(self) -> dict:
        """Return the report as plain JSON-compatible values."""
        return {
            "fits": self.fits,
            "cores_needed": self.cores_needed,
            "num_cores": self.hardware.num_cores,
            "fan_in_out_pruning_necessary": self.fan_in_out_pruning_necessary,
            "global_pruning_necessary": self.global_pruning_necessary,
            "synapses_to_prune": self.synapses_to_prune,
            "cores": [vars(core) for core in self.cores],
            "layers": [{**vars(layer), "cores": list(layer.cores)} for layer in self.layers],
            "resources": [vars(resource) for resource in self.resources],
            "neuron_overflows": [vars(overflow) for overflow in self.neuron_overflows],
            "message": self.message,
        }


@dataclass
class _LayerData:
    """Per-neuron counts of one layer, derived once from its connections."""

    spec: LayerSpec
    fan_in: np.ndarray
    # Distinct nonzero weight values of each neuron, as (neuron, value) pairs sorted by neuron.
    weight_neuron: np.ndarray
    weight_value: np.ndarray
    distinct_total: int
    # Outgoing synapses as (source neuron, target neuron) index arrays, per target layer.
    outgoing: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)


def _nonzero_entries(weights: WeightMatrix, shape: tuple[int, int], what: str) -> tuple[np.ndarray, ...]:
    """Return (target, source, value) arrays of the nonzero entries, after checking the shape."""
    if isinstance(weights, SparseWeights):
        if tuple(int(n) for n in weights.shape) != shape:
            raise ValueError(f"{what}: weights have shape {tuple(weights.shape)}, expected {shape} (target, source)")
        target = np.asarray(weights.target, dtype=np.int64).ravel()
        source = np.asarray(weights.source, dtype=np.int64).ravel()
        value = np.asarray(weights.value).ravel()
        if not target.size == source.size == value.size:
            raise ValueError(
                f"{what}: target, source and value arrays have {target.size}, {source.size} and {value.size} "
                "entries; they must have one entry per synapse each"
            )
        if target.size and (target.min() < 0 or target.max() >= shape[0]):
            raise ValueError(f"{what}: target index out of range 0..{shape[0] - 1}")
        if source.size and (source.min() < 0 or source.max() >= shape[1]):
            raise ValueError(f"{what}: source index out of range 0..{shape[1] - 1}")
        keep = value != 0
        return target[keep], source[keep], value[keep]

    dense = np.asarray(weights)
    if dense.shape != shape:
        raise ValueError(f"{what}: weights have shape {dense.shape}, expected {shape} (target, source)")
    target, source = np.nonzero(dense)
    return target.astype(np.int64), source.astype(np.int64), dense[target, source]


def _distinct_pairs(target: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the distinct (neuron, value) pairs, sorted by neuron."""
    order = np.lexsort((value, target))
    target, value = target[order], value[order]
    keep = np.ones(target.size, dtype=bool)
    keep[1:] = (target[1:] != target[:-1]) | (value[1:] != value[:-1])
    return target[keep], value[keep]


def _layer_data(specs: list[LayerSpec]) -> dict[str, _LayerData]:
    """Validate the layer list and collect fan-in, weight values and outgoing synapses per layer."""
    sizes: dict[str, int] = {}
    for spec in specs:
        if spec.name in sizes:
            raise ValueError(f"layer name {spec.name!r} appears twice; layer names must be unique")
        if int(spec.size) <= 0:
            raise ValueError(f"layer {spec.name!r} has {spec.size} neurons; a layer needs at least one")
        sizes[spec.name] = int(spec.size)

    data: dict[str, _LayerData] = {}
    outgoing: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {name: {} for name in sizes}
    for spec in specs:
        targets, values = [], []
        fan_in = np.zeros(sizes[spec.name], dtype=np.int64)
        for connection in spec.incoming:
            if connection.source not in sizes:
                raise ValueError(
                    f"layer {spec.name!r} has a connection from unknown layer {connection.source!r}; "
                    f"known layers: {', '.join(sizes)}"
                )
            shape = (sizes[spec.name], sizes[connection.source])
            what = f"connection {connection.source!r} -> {spec.name!r}"
            target, source, value = _nonzero_entries(connection.weights, shape, what)
            fan_in += np.bincount(target, minlength=shape[0])
            targets.append(target)
            values.append(value)
            outgoing[connection.source].setdefault(spec.name, []).append((source, target))

        if targets:
            value_all = np.concatenate(values)
            neuron, value = _distinct_pairs(np.concatenate(targets), value_all)
            distinct_total = int(np.unique(value_all).size)
        else:
            neuron, value, distinct_total = np.zeros(0, dtype=np.int64), np.zeros(0), 0
        data[spec.name] = _LayerData(spec, fan_in, neuron, value, distinct_total)

    for name, targets_of in outgoing.items():
        data[name].outgoing = targets_of
    return data


def _route_cost(layer: _LayerData, splits: dict[str, list[tuple[int, int]]]) -> np.ndarray:
    """Return, per neuron of ``layer``, the number of distinct cores its synapses reach."""
    cost = np.zeros(layer.spec.size, dtype=np.int64)
    for target_layer, pairs in layer.outgoing.items():
        bounds = np.array([start for start, _ in splits[target_layer]], dtype=np.int64)
        sources = np.concatenate([source for source, _ in pairs])
        targets = np.concatenate([target for _, target in pairs])
        if sources.size == 0:
            continue
        chunk = np.searchsorted(bounds, targets, side="right") - 1
        keys = np.unique(sources * len(bounds) + chunk)
        cost += np.bincount(keys // len(bounds), minlength=layer.spec.size)
    return cost


def _prefix_end(cumulative: np.ndarray, start: int, budget: int) -> int:
    """Return the largest ``end`` with ``cumulative[end] - cumulative[start] <= budget``."""
    return int(np.searchsorted(cumulative, cumulative[start] + budget, side="right")) - 1


def _split_layer(layer: _LayerData, route_cost: np.ndarray, hardware: HardwareConfig) -> list[tuple[int, int]]:
    """Cut a layer into runs of neurons, one per core, each within every per-core budget.

    A neuron that exceeds a budget on its own still gets a core of its own, so
    that the report can count it. The overflow is reported separately.
    """
    size = layer.spec.size
    cumulative = {
        "neurons": np.arange(size + 1, dtype=np.int64),
        "synapses": np.concatenate([[0], np.cumsum(layer.fan_in)]),
        "routes": np.concatenate([[0], np.cumsum(route_cost)]),
    }
    budgets = {
        "neurons": hardware.num_neurons_core,
        "synapses": hardware.num_synapses_core,
        "routes": hardware.num_routes,
    }
    # Distinct weights only bind when the whole layer has more than a core's table holds.
    weights_bind = layer.distinct_total > hardware.num_weights_core
    if weights_bind:
        bounds = np.searchsorted(layer.weight_neuron, np.arange(size + 1))

    runs = []
    start = 0
    while start < size:
        end = min(_prefix_end(cumulative[name], start, budgets[name]) for name in budgets)
        end = max(end, start + 1)
        if weights_bind:
            seen: set = set()
            for neuron in range(start, end):
                seen.update(layer.weight_value[bounds[neuron] : bounds[neuron + 1]].tolist())
                if len(seen) > hardware.num_weights_core and neuron > start:
                    end = neuron
                    break
        runs.append((start, end))
        start = end
    return runs


def _split_all(data: dict[str, _LayerData], order: list[str], hardware: HardwareConfig) -> dict[str, list]:
    """Split every layer, revisiting route costs until the splits stop changing."""
    no_routes = {name: np.zeros(data[name].spec.size, dtype=np.int64) for name in order}
    splits = {name: _split_layer(data[name], no_routes[name], hardware) for name in order}
    for _ in range(_MAX_PASSES):
        changed = False
        # Targets first: a layer's routes depend on how its target layers are split.
        for name in reversed(order):
            runs = _split_layer(data[name], _route_cost(data[name], splits), hardware)
            if runs != splits[name]:
                splits[name] = runs
                changed = True
        if not changed:
            break
    return splits


def _count_cores(
    data: dict[str, _LayerData], order: list[str], splits: dict[str, list], hardware: HardwareConfig
) -> tuple[list[CoreUsage], dict[str, tuple[int, ...]], list[NeuronOverflow]]:
    """Count the resources of every core and list the neurons that overflow a core alone."""
    cores: list[CoreUsage] = []
    layer_cores: dict[str, tuple[int, ...]] = {}
    overflows: list[NeuronOverflow] = []
    for name in order:
        layer = data[name]
        route_cost = _route_cost(layer, splits)
        if layer.weight_neuron.size:
            bounds = np.searchsorted(layer.weight_neuron, np.arange(layer.spec.size + 1))
        indices = []
        for start, end in splits[name]:
            core = len(cores)
            if layer.weight_neuron.size:
                unique = int(np.unique(layer.weight_value[bounds[start] : bounds[end]]).size)
            else:
                unique = 0
            cores.append(
                CoreUsage(
                    core=core,
                    layer=name,
                    first_neuron=start,
                    neurons=end - start,
                    synapses=int(layer.fan_in[start:end].sum()),
                    routes=int(route_cost[start:end].sum()),
                    unique_weights=unique,
                )
            )
            indices.append(core)
            if end - start == 1:
                overflows.extend(_single_neuron_overflows(cores[-1], hardware))
        layer_cores[name] = tuple(indices)
    return cores, layer_cores, overflows


def _single_neuron_overflows(usage: CoreUsage, hardware: HardwareConfig) -> list[NeuronOverflow]:
    limits = {
        "synapses": hardware.num_synapses_core,
        "routes": hardware.num_routes,
        "unique_weights": hardware.num_weights_core,
    }
    return [
        NeuronOverflow(usage.layer, usage.first_neuron, usage.core, resource, usage.usage(resource), limit)
        for resource, limit in limits.items()
        if usage.usage(resource) > limit
    ]


def _layer_usage(data: dict[str, _LayerData], cores: list[CoreUsage], layer_cores: dict) -> list[LayerUsage]:
    result = []
    for name, indices in layer_cores.items():
        layer = data[name]
        mine = [cores[index] for index in indices]
        result.append(
            LayerUsage(
                name=name,
                neurons=layer.spec.size,
                synapses=sum(core.synapses for core in mine),
                routes=sum(core.routes for core in mine),
                unique_weights=layer.distinct_total,
                cores=tuple(indices),
                max_fan_in=int(layer.fan_in.max()) if layer.fan_in.size else 0,
            )
        )
    return result


def _synapse_capacity(data: dict[str, _LayerData], hardware: HardwareConfig) -> int:
    """Synapses the device can hold: the cores left after the input layers, each full."""
    input_cores = sum(
        math.ceil(layer.spec.size / hardware.num_neurons_core) for layer in data.values() if not layer.spec.incoming
    )
    return max(hardware.num_cores - input_cores, 0) * hardware.num_synapses_core


def _overflow_error(overflow: NeuronOverflow, total: int) -> ResourceError:
    remedies = {
        "synapses": (
            f"prune the fan-in of each neuron of {overflow.layer!r} to at most {overflow.limit} synapses "
            "(fan-in pruning), since a neuron's synapses cannot be split across cores, "
            f"or raise num_synapses_core to at least {overflow.demand}"
        ),
        "routes": (
            f"prune the outgoing connections of {overflow.layer!r} so that each neuron reaches at most "
            f"{overflow.limit} cores, or raise num_routes to at least {overflow.demand}"
        ),
        "unique_weights": (
            f"share weights: quantize the weights of {overflow.layer!r} to at most {overflow.limit} distinct "
            f"values per neuron, prune its fan-in, or raise num_weights_core to at least {overflow.demand}"
        ),
    }
    message = (
        f"network does not fit: neuron {overflow.neuron} of layer {overflow.layer!r} on core {overflow.core} "
        f"needs {overflow.demand} {overflow.resource.replace('_', ' ')}, more than the limit of {overflow.limit} "
        f"per core. To make it fit: {remedies[overflow.resource]}"
    )
    if total > 1:
        message += f" ({total - 1} more problem(s); see placement_report for all of them)"
    return ResourceError(
        message,
        layer=overflow.layer,
        core=overflow.core,
        resource=overflow.resource,
        limit=overflow.limit,
        demand=overflow.demand,
    )


def _cores_error(
    data: dict[str, _LayerData], cores: list[CoreUsage], hardware: HardwareConfig, synapses_to_prune: int
) -> ResourceError:
    needed = len(cores)
    available = hardware.num_cores
    first_missing = cores[available]
    total_synapses = sum(core.synapses for core in cores)

    # Remedy 1: more cores. Remedy 2: pruning, unless the neuron slots alone are too few.
    remedies = [f"set num_cores to at least {needed}"]
    neuron_cores = sum(math.ceil(layer.spec.size / hardware.num_neurons_core) for layer in data.values())
    capacity = _synapse_capacity(data, hardware)
    if neuron_cores > available:
        remedies.append(f"pruning cannot help, because the neurons alone need {neuron_cores} cores")
    elif synapses_to_prune > 0:
        remedies.append(
            f"prune at least {synapses_to_prune} synapses, to at most {capacity} of the {total_synapses} in total"
        )
    else:
        remedies.append(
            "prune the layers that spread over several cores because of their fan-in, "
            f"so that each core holds at most {hardware.num_synapses_core} synapses"
        )

    # Remedy 3: shrink the layer with the most cores by the excess, estimated in proportion.
    per_layer: dict[str, int] = {}
    for core in cores:
        per_layer[core.layer] = per_layer.get(core.layer, 0) + 1
    widest = max(per_layer, key=lambda name: per_layer[name])
    excess = needed - available
    if per_layer[widest] > excess:
        keep = per_layer[widest] - excess
        estimate = data[widest].spec.size * keep // per_layer[widest]
        remedies.append(
            f"shrink layer {widest!r} from {data[widest].spec.size} to about {estimate} neurons "
            f"so that it occupies {keep} core(s) instead of {per_layer[widest]}"
        )

    message = (
        f"network does not fit: it needs {needed} cores but the accelerator has {available}; layer "
        f"{first_missing.layer!r} is the first to reach beyond the last core (needs core {first_missing.core}). "
        f"To make it fit: {'; or '.join(remedies)}"
    )
    return ResourceError(
        message,
        layer=first_missing.layer,
        core=first_missing.core,
        resource="cores",
        limit=available,
        demand=needed,
    )


def placement_report(layers: list[LayerSpec], hardware: HardwareConfig) -> PlacementReport:
    """Place a network and report usage and pruning needs without raising when it does not fit.

    ``layers`` is ordered so that every connection's source comes before its
    target, apart from recurrent and feedback connections. Raises
    ``ValueError`` only for malformed input (unknown source layer, wrong
    weight shape, duplicate names).
    """
    layers = list(layers)
    data = _layer_data(layers)
    order = [spec.name for spec in layers]

    splits = _split_all(data, order, hardware)
    cores, layer_cores, overflows = _count_cores(data, order, splits, hardware)

    capacity_per_core = {
        "neurons": hardware.num_neurons_core,
        "synapses": hardware.num_synapses_core,
        "routes": hardware.num_routes,
        "unique_weights": hardware.num_weights_core,
    }
    resources = [ResourceDemand("cores", len(cores), hardware.num_cores)]
    for resource, per_core in capacity_per_core.items():
        demand = sum(core.usage(resource) for core in cores)
        resources.append(ResourceDemand(resource, demand, per_core * hardware.num_cores))

    total_synapses = sum(core.synapses for core in cores)
    synapses_to_prune = max(total_synapses - _synapse_capacity(data, hardware), 0)
    cores_fit = len(cores) <= hardware.num_cores

    error = None
    if overflows:
        error = _overflow_error(overflows[0], len(overflows) + (0 if cores_fit else 1))
    elif not cores_fit:
        error = _cores_error(data, cores, hardware, synapses_to_prune)

    return PlacementReport(
        hardware=hardware,
        fits=error is None,
        cores=cores,
        layers=_layer_usage(data, cores, layer_cores),
        resources=resources,
        cores_needed=len(cores),
        fan_in_out_pruning_necessary=bool(overflows),
        global_pruning_necessary=synapses_to_prune > 0,
        synapses_to_prune=synapses_to_prune,
        neuron_overflows=overflows,
        error=error,
    )


def place(layers: list[LayerSpec], hardware: HardwareConfig) -> Placement:
    """Assign every neuron to a core, or raise one :class:`ResourceError` naming what does not fit.

    The error names the layer, the core, the resource, the limit and the demand
    and lists what would make the network fit. See :func:`placement_report`
    for the ordering of ``layers``.
    """
    layers = list(layers)
    report = placement_report(layers, hardware)
    if report.error is not None:
        raise report.error
    layer_cores = {layer.name: layer.cores for layer in report.layers}
    return Placement(
        hardware=hardware,
        cores=report.cores,
        layer_cores=layer_cores,
        layer_sizes={spec.name: int(spec.size) for spec in layers},
    )
