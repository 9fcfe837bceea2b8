"""Memory files of the accelerator: one `$readmemh` set per core plus a JSON manifest, and the reader.

docs/memory-files.md describes the format; :data:`FORMAT_VERSION` is its
version. Every word is written as fixed-width lowercase hex, one word per
line, with signed fields in two's complement. Field layouts come from
:func:`word_layouts`, so writer, reader and documentation share one
definition.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecs_common.formats import QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_common.neuron import IntegerNeuronParameters
from ecs_deploy.__about__ import __version__
from ecs_deploy.atomic import make_output_folder, write_text
from ecs_deploy.errors import MemFileError, MemFileIntegrityError, OutputExistsError
from ecs_deploy.model import RELAY, IntegerConnection, IntegerLayer, IntegerNetwork, SynapseMatrix

if TYPE_CHECKING:
    from ecs_deploy.network import Network

logger = logging.getLogger(__name__)

FORMAT_NAME = "ecs-memfiles"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILE_KINDS: tuple[str, ...] = ("neurons", "synapses", "weights", "routes")

# Neuron kind codes of the neuron word's ``kind`` field.
KIND_CODES: dict[str, int] = {RELAY: 0, "lif": 1, "li": 2, "if": 3, "cubalif": 4}
KIND_BITS = 3
DELAY_BITS = 4


@dataclass(frozen=True)
class Field:
    """One field of a memory word: name, width in bits, and whether it is two's complement."""

    name: str
    bits: int
    signed: bool = False


def _index_bits(count: int) -> int:
    """Bits that address ``count`` entries (at least one)."""
    return max(1, (count - 1).bit_length())


def word_layouts(hardware: HardwareConfig, quant: QuantConfig) -> dict[str, list[Field]]:
    """Return the fields of each file kind's word, most significant field first."""
    state = quant.state_format.wl
    decay = quant.decay_format.wl
    neuron_bits = _index_bits(hardware.num_neurons_core)
    return {
        "neurons": [
            Field("kind", KIND_BITS),
            Field("subtract_reset", 1),
            Field("k_mem", decay, signed=True),
            Field("k_syn", decay, signed=True),
            Field("v_leak", state, signed=True),
            Field("v_threshold", state, signed=True),
            Field("v_reset", state, signed=True),
            Field("bias", state, signed=True),
        ],
        "synapses": [
            Field("target", neuron_bits),
            Field("weight_index", _index_bits(hardware.num_weights_core)),
        ],
        "weights": [Field("weight", quant.weight_format.wl, signed=True)],
        "routes": [
            Field("source", neuron_bits),
            Field("destination_core", _index_bits(hardware.num_cores)),
            Field("delay", DELAY_BITS),
            Field("synapse_base", _index_bits(hardware.num_synapses_core)),
            Field("synapse_count", hardware.num_synapses_core.bit_length()),
        ],
    }


def _width(fields: list[Field]) -> int:
    return sum(field.bits for field in fields)


def pack_words(fields: list[Field], columns: dict[str, np.ndarray]) -> list[str]:
    """Pack integer columns into hex words (most significant field first), one string per entry.

    Raises :class:`MemFileError` for a value that does not fit its field.
    """
    count = len(next(iter(columns.values()))) if columns else 0
    words = [0] * count
    for field in fields:
        values = np.asarray(columns[field.name], dtype=np.int64)
        low, high = (
            (-(1 << (field.bits - 1)), (1 << (field.bits - 1)) - 1) if field.signed else (0, (1 << field.bits) - 1)
        )
        if values.size and (values.min() < low or values.max() > high):
            raise MemFileError(
                f"field {field.name!r} value {int(values.min() if values.min() < low else values.max())} does not "
                f"fit {field.bits} bits ({low}..{high})"
            )
        mask = (1 << field.bits) - 1
        words = [(word << field.bits) | (value & mask) for word, value in zip(words, values.tolist(), strict=True)]
    digits = -(-_width(fields) // 4)
    return [f"{word:0{digits}x}" for word in words]


def unpack_words(fields: list[Field], lines: list[str], what: str) -> dict[str, np.ndarray]:
    """Parse hex words into one ``int64`` column per field, sign-extending signed fields."""
    width = _width(fields)
    columns: dict[str, list[int]] = {field.name: [] for field in fields}
    for number, line in enumerate(lines, start=1):
        try:
            word = int(line, 16)
        except ValueError as error:
            raise MemFileError(f"{what}, line {number}: {line!r} is not a hex word") from error
        if word >> width:
            raise MemFileError(f"{what}, line {number}: word {line!r} is wider than {width} bits")
        shift = width
        for field in fields:
            shift -= field.bits
            value = (word >> shift) & ((1 << field.bits) - 1)
            if field.signed and value >> (field.bits - 1):
                value -= 1 << field.bits
            columns[field.name].append(value)
    return {name: np.asarray(values, dtype=np.int64) for name, values in columns.items()}


def _file_name(core: int, kind: str) -> str:
    return f"core{core:03d}_{kind}.mem"


def _file_text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


# Writing.


def _neuron_columns(layer: IntegerLayer, start: int, stop: int) -> dict[str, np.ndarray]:
    count = stop - start
    if layer.params is None:
        zeros = np.zeros(count, dtype=np.int64)
        return {
            "kind": zeros,
            "subtract_reset": zeros,
            "k_mem": zeros,
            "k_syn": zeros,
            "v_leak": zeros,
            "v_threshold": zeros,
            "v_reset": zeros,
            "bias": zeros,
        }
    params = layer.params
    k_syn = params.k_syn if params.k_syn is not None else np.zeros(layer.size, dtype=np.int64)
    assert layer.bias is not None
    return {
        "kind": np.full(count, KIND_CODES[layer.kind]),
        "subtract_reset": np.full(count, int(params.reset_mode == "subtract")),
        "k_mem": params.k_mem[start:stop],
        "k_syn": k_syn[start:stop],
        "v_leak": params.v_leak[start:stop],
        "v_threshold": params.v_threshold[start:stop],
        "v_reset": params.v_reset[start:stop],
        "bias": layer.bias[start:stop],
    }


def build_images(network: Network) -> tuple[dict[int, dict[str, list[str]]], dict[str, Any]]:
    """Return the hex lines of every core's four files and the manifest's network description.

    Raises :class:`ResourceError` when the network does not fit.
    """
    model = network.model
    placement = network.placement
    layouts = word_layouts(model.hardware, model.quant)
    fmt = model.quant.weight_format
    cores = placement.cores
    core_of = {layer.name: placement.core_of(layer.name) for layer in model.layers}
    slot_of = {layer.name: placement.local_index(layer.name) for layer in model.layers}
    order = {layer.name: index for index, layer in enumerate(model.layers)}

    # Every synapse as (source layer, source neuron, destination core, target slot, weight, delay).
    records = []
    for connection in model.connections:
        steps = model.connection_delay(connection)
        if steps >= 1 << DELAY_BITS:
            raise MemFileError(
                f"connection {connection.source!r} -> {connection.target!r} needs a delay of {steps} steps, "
                f"more than the {DELAY_BITS}-bit route delay field can store"
            )
        for part in connection.weights.split_to_format(fmt):
            records.append(
                (
                    np.full(part.nnz, order[connection.source]),
                    part.source,
                    core_of[connection.target][part.target],
                    slot_of[connection.target][part.target],
                    part.weight,
                    np.full(part.nnz, steps),
                )
            )
    if records:
        synapse_columns = [np.concatenate(column) for column in zip(*records, strict=True)]
    else:
        synapse_columns = [np.zeros(0, dtype=np.int64) for _ in range(6)]
    src_layer, src_neuron, dst_core, dst_slot, weight, delay = synapse_columns

    # Group synapses per destination core into one block per (source layer, source neuron).
    images: dict[int, dict[str, list[str]]] = {}
    route_rows: dict[int, list[tuple[int, int, int, int, int]]] = {core.core: [] for core in cores}
    layer_names = [layer.name for layer in model.layers]
    for core in cores:
        mine = np.flatnonzero(dst_core == core.core)
        keys = np.lexsort((dst_slot[mine], src_neuron[mine], src_layer[mine]))
        mine = mine[keys]
        table = np.unique(weight[mine])
        index = np.searchsorted(table, weight[mine])
        synapse_lines = pack_words(layouts["synapses"], {"target": dst_slot[mine], "weight_index": index})
        weight_lines = pack_words(layouts["weights"], {"weight": table})

        block_key = src_layer[mine] * (1 << 40) + src_neuron[mine]
        starts = np.flatnonzero(np.r_[True, block_key[1:] != block_key[:-1]]) if mine.size else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], mine.size].astype(np.int64) if mine.size else np.zeros(0, np.int64)
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            first = mine[start]
            source_layer = layer_names[int(src_layer[first])]
            source_neuron = int(src_neuron[first])
            source_core = int(core_of[source_layer][source_neuron])
            route_rows[source_core].append(
                (int(slot_of[source_layer][source_neuron]), core.core, int(delay[first]), start, end - start)
            )

        layer = model.layer(core.layer)
        neuron_lines = pack_words(
            layouts["neurons"], _neuron_columns(layer, core.first_neuron, core.first_neuron + core.neurons)
        )
        images[core.core] = {"neurons": neuron_lines, "synapses": synapse_lines, "weights": weight_lines}

    for core in cores:
        rows = sorted(route_rows[core.core])
        columns = {
            name: np.array([row[i] for row in rows], dtype=np.int64)
            for i, name in enumerate(("source", "destination_core", "delay", "synapse_base", "synapse_count"))
        }
        images[core.core]["routes"] = pack_words(layouts["routes"], columns)

    description = {
        "hardware": model.hardware.model_dump(),
        "quant": model.quant.model_dump(mode="json"),
        "dt": model.dt,
        "reset_mode": model.reset_mode,
        "readout": model.readout,
        "input_shape": list(model.input_shape),
        "output_layer": model.output_layer,
        "latency": model.latency,
        "layers": [
            {
                "name": layer.name,
                "kind": layer.kind,
                "shape": list(layer.shape),
                "delay": model.layer_delays()[layer.name],
                "cores": [
                    {"core": index, "first_neuron": cores[index].first_neuron, "neurons": cores[index].neurons}
                    for index in placement.layer_cores[layer.name]
                ],
            }
            for layer in model.layers
        ],
        "word_layouts": {
            kind: {
                "width": _width(fields),
                "hex_digits": -(-_width(fields) // 4),
                "fields": [{"name": f.name, "bits": f.bits, "signed": f.signed} for f in fields],
            }
            for kind, fields in layouts.items()
        },
    }
    return images, description


def _existing_set(out_dir: Path) -> list[Path]:
    """Return the files of a memory-file set already in ``out_dir``."""
    found = sorted(out_dir.glob("core*_*.mem"))
    manifest = out_dir / MANIFEST
    return ([manifest] if manifest.exists() else []) + found


def write_mem_files(network: Network, out_dir: str | Path, force: bool = False) -> Path:
    """Write the memory-file set of ``network`` into ``out_dir`` and return the manifest path.

    Each file is written atomically; the manifest comes last, so a set
    without a manifest is incomplete. Raises :class:`OutputExistsError` when
    ``out_dir`` contains a set already and ``force`` is false. With ``force``
    the old set's files are replaced and stale core files removed.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"output path {str(out_dir)!r} is a file, not a directory; choose a directory")
    existing = _existing_set(out_dir) if out_dir.exists() else []
    if existing and not force:
        raise OutputExistsError(
            f"{str(out_dir)!r} contains memory files already ({existing[0].name}, ...); pass force=True (--force) "
            "to overwrite them or choose another directory"
        )
    images, description = build_images(network)
    make_output_folder(out_dir)

    # Drop the old manifest first: a crash half-way must not leave a manifest over mixed files.
    for path in existing:
        path.unlink()

    files = []
    for core, kinds in sorted(images.items()):
        for kind in FILE_KINDS:
            text = _file_text(kinds[kind])
            name = _file_name(core, kind)
            write_text(out_dir / name, text, force=True)
            files.append(
                {
                    "path": name,
                    "core": core,
                    "kind": kind,
                    "entries": len(kinds[kind]),
                    "sha256": hashlib.sha256(text.encode("ascii")).hexdigest(),
                }
            )

    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "producer": f"ecs-deploy {__version__}",
        "num_cores": len(images),
        **description,
        "files": files,
    }
    path = write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n", force=True)
    logger.info("wrote %d memory files for %d cores to %s", len(files), len(images), out_dir)
    return path


# Reading.


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.exists():
        raise MemFileError(f"{str(directory)!r} has no {MANIFEST}; generate the memory files with ecs-deploy memfiles")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MemFileError(f"cannot read {str(path)!r}: {error}; generate the memory files again") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise MemFileError(f"{str(path)!r} is not an {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise MemFileError(
            f"{str(path)!r} has format version {version!r}; this ecs-deploy reads version {FORMAT_VERSION}"
        )
    return manifest


def _read_files(directory: Path, manifest: dict[str, Any]) -> dict[int, dict[str, list[str]]]:
    """Read every listed file after checking its sha256."""
    images: dict[int, dict[str, list[str]]] = {}
    for entry in manifest["files"]:
        path = directory / entry["path"]
        if Path(entry["path"]).name != entry["path"]:
            raise MemFileError(f"manifest lists {entry['path']!r}; memory files must sit next to the manifest")
        try:
            data = path.read_bytes()
        except FileNotFoundError as error:
            raise MemFileError(f"memory file {str(path)!r} listed in the manifest is missing") from error
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise MemFileIntegrityError(
                f"memory file {str(path)!r} has sha256 {digest}, but the manifest records {entry['sha256']}; "
                "the file was changed or damaged: generate the memory files again"
            )
        lines = data.decode("ascii").splitlines()
        if len(lines) != entry["entries"]:
            raise MemFileError(
                f"memory file {str(path)!r} has {len(lines)} words but the manifest lists {entry['entries']}; "
                "generate the memory files again"
            )
        images.setdefault(int(entry["core"]), {})[entry["kind"]] = lines
    for core, kinds in images.items():
        missing = [kind for kind in FILE_KINDS if kind not in kinds]
        if missing:
            raise MemFileError(f"core {core} lacks its {', '.join(missing)} file(s) in the manifest")
    return images


def verify_mem_files(directory: str | Path) -> int:
    """Check every file listed in a memory-file manifest against its sha256 and word count; return the file count.

    Raises :class:`MemFileIntegrityError` naming the first file whose sha256
    differs, and :class:`MemFileError` for a missing file, a wrong word count
    or a malformed manifest.
    """
    directory = Path(directory)
    manifest = _read_manifest(directory)
    try:
        _read_files(directory, manifest)
    except (KeyError, TypeError, UnicodeDecodeError) as error:
        raise MemFileError(
            f"manifest in {str(directory)!r} has an invalid file entry ({error!r}); generate the memory files again"
        ) from error
    return len(manifest["files"])


def find_mem_file_sets(root: str | Path) -> list[Path]:
    """Return every folder under ``root`` (``root`` included) whose manifest.json declares the memory-file format.

    A manifest.json that is not JSON or has another ``format`` field belongs
    to someone else and is skipped.
    """
    found = []
    for path in sorted(Path(root).rglob(MANIFEST)):
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME:
            found.append(path.parent)
    return found


def _layer_from_words(spec: dict[str, Any], columns: dict[str, np.ndarray], quant: QuantConfig) -> IntegerLayer:
    kind = spec["kind"]
    codes = set(columns["kind"].tolist())
    if codes != {KIND_CODES[kind]}:
        raise MemFileError(
            f"layer {spec['name']!r}: neuron words carry kind codes {codes}, expected {KIND_CODES[kind]}"
        )
    shape = tuple(int(n) for n in spec["shape"])
    if kind == RELAY:
        return IntegerLayer(spec["name"], RELAY, shape)
    modes = set(columns["subtract_reset"].tolist())
    if len(modes) != 1:
        raise MemFileError(f"layer {spec['name']!r} mixes reset modes across its neurons")
    params = IntegerNeuronParameters(
        kind=kind,
        k_mem=columns["k_mem"],
        k_syn=columns["k_syn"] if kind == "cubalif" else None,
        v_leak=columns["v_leak"],
        v_threshold=columns["v_threshold"],
        v_reset=columns["v_reset"],
        # The float factor back to NIR units is not part of the hardware image.
        state_scale=np.full(columns["k_mem"].size, np.nan),
        state_format=quant.state_format,
        decay_format=quant.decay_format,
        reset_mode="subtract" if modes == {1} else "to_reset",
    )
    return IntegerLayer(spec["name"], kind, shape, params=params, bias=columns["bias"])


def load_mem_files(directory: str | Path, backend: str = "auto") -> Network:
    """Load a memory-file set back into a :class:`~ecs_deploy.network.Network` that simulates from it.

    Checks every file's sha256 against the manifest first; a mismatch raises
    :class:`MemFileIntegrityError`, any other inconsistency
    :class:`MemFileError`. The loaded network has no NIR-unit state scale.
    """
    from ecs_deploy.network import Network

    directory = Path(directory)
    manifest = _read_manifest(directory)
    images = _read_files(directory, manifest)
    try:
        hardware = HardwareConfig.model_validate(manifest["hardware"])
        quant = QuantConfig.model_validate(manifest["quant"])
        layer_specs = manifest["layers"]
    except (KeyError, ValueError) as error:
        raise MemFileError(f"manifest in {str(directory)!r} is invalid: {error}") from error
    layouts = word_layouts(hardware, quant)
    for kind, layout in manifest.get("word_layouts", {}).items():
        if layout.get("width") != _width(layouts[kind]):
            raise MemFileError(
                f"manifest gives {kind} words {layout.get('width')} bits, expected {_width(layouts[kind])}"
            )

    columns = {
        core: {kind: unpack_words(layouts[kind], lines, f"core {core} {kind}") for kind, lines in kinds.items()}
        for core, kinds in images.items()
    }

    # Layers: concatenate each layer's neuron words over its cores.
    core_layer: dict[int, tuple[str, int, int]] = {}
    layers = []
    for spec in layer_specs:
        parts = []
        for entry in spec["cores"]:
            core, first, count = int(entry["core"]), int(entry["first_neuron"]), int(entry["neurons"])
            if core not in columns:
                raise MemFileError(f"layer {spec['name']!r} sits on core {core}, which has no files")
            words = columns[core]["neurons"]
            if words["kind"].size != count:
                raise MemFileError(
                    f"core {core} has {words['kind'].size} neuron words but the manifest lists {count}; "
                    "generate the memory files again"
                )
            core_layer[core] = (spec["name"], first, count)
            parts.append(words)
        merged = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        layers.append(_layer_from_words(spec, merged, quant))
    sizes = {layer.name: layer.size for layer in layers}

    # Connections: follow every route to its synapse block on the destination core.
    entries: dict[tuple[str, str], list[np.ndarray]] = {}
    for core, (source_layer, source_first, source_count) in core_layer.items():
        routes = columns[core]["routes"]
        for source, destination, _delay, base, count in zip(
            *(
                routes[name].tolist()
                for name in ("source", "destination_core", "delay", "synapse_base", "synapse_count")
            ),
            strict=True,
        ):
            if destination not in core_layer or source >= source_count:
                raise MemFileError(f"core {core}: route from slot {source} to core {destination} is out of range")
            synapses = columns[destination]["synapses"]
            table = columns[destination]["weights"]["weight"]
            if base + count > synapses["target"].size:
                raise MemFileError(f"core {core}: route to core {destination} reaches past its synapse memory")
            targets = synapses["target"][base : base + count]
            indices = synapses["weight_index"][base : base + count]
            if indices.size and indices.max() >= table.size:
                raise MemFileError(f"core {destination}: synapse weight index beyond its weight table")
            target_layer, target_first, _ = core_layer[destination]
            block = np.stack([targets + target_first, np.full(count, source_first + source), table[indices]])
            entries.setdefault((source_layer, target_layer), []).append(block)

    connections = []
    for (source_layer, target_layer), blocks in entries.items():
        data = np.concatenate(blocks, axis=1)
        shape = (sizes[target_layer], sizes[source_layer])
        connections.append(
            IntegerConnection(
                source_layer, target_layer, SynapseMatrix.from_coordinates(data[0], data[1], data[2], shape)
            )
        )
    position = {layer.name: index for index, layer in enumerate(layers)}
    connections.sort(key=lambda c: (position[c.target], position[c.source]))

    try:
        model = IntegerNetwork(
            input_shape=tuple(int(n) for n in manifest["input_shape"]),
            layers=layers,
            connections=connections,
            output_layer=manifest["output_layer"],
            hardware=hardware,
            quant=quant,
            dt=float(manifest["dt"]),
            reset_mode=manifest["reset_mode"],
            readout=manifest["readout"],
        )
    except (KeyError, ValueError) as error:
        raise MemFileError(f"memory files in {str(directory)!r} do not form a valid network: {error}") from error

    # The routes' delays must match the timing the reloaded network derives.
    expected = {(c.source, c.target): model.connection_delay(c) for c in model.connections}
    for core, (source_layer, _, _) in core_layer.items():
        routes = columns[core]["routes"]
        for destination, delay in zip(routes["destination_core"].tolist(), routes["delay"].tolist(), strict=True):
            needed = expected[(source_layer, core_layer[destination][0])]
            if needed != delay:
                raise MemFileError(
                    f"core {core}: route to core {destination} has delay {delay}, "
                    f"but the network's timing needs {needed}"
                )
    return Network.from_model(model, backend=backend)
