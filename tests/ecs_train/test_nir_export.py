"""The NIR exporter is free of the faults of norse 1.1.0's to_nir and writes files ecs-deploy can trust."""

from __future__ import annotations

import warnings
from pathlib import Path

import nir
import norse.torch as snn
import numpy as np
import pytest
import torch
from norse.torch.functional.reset import reset_subtract
from torch.nn.utils import prune

from ecs_common.errors import MetadataError
from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_common.metadata import ECSMetadata, Provenance
from ecs_common.metadata import read_metadata as common_read_metadata
from ecs_train.models import SumPool2d
from ecs_train.nir_export import (
    ExportError,
    NIRFileExistsError,
    UnsupportedModuleError,
    contract_violations,
    export_nir,
    read_metadata,
    register_converter,
    supported_module_types,
    to_nir_graph,
)
from ecs_train.nir_export.registry import ConvertedLayer

torch.set_num_threads(1)


def _norse_to_nir(network: torch.nn.Module, sample: torch.Tensor, dt: float) -> nir.NIRGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return snn.to_nir(network, sample, dt=dt)


def _lif_box(dt: float = 1e-3, **params) -> snn.LIFBoxCell:
    values = {
        key: value if callable(value) else torch.as_tensor(value, dtype=torch.float32) for key, value in params.items()
    }
    return snn.LIFBoxCell(snn.LIFBoxParameters(**values), dt=dt)


def _small_network(dt: float = 1e-3, **params) -> snn.SequentialState:
    torch.manual_seed(0)
    return snn.SequentialState(
        torch.nn.Linear(4, 7), _lif_box(dt, **params), torch.nn.Linear(7, 3), snn.LIBoxCell(dt=dt)
    )


def _metadata(dt: float = 1e-3) -> ECSMetadata:
    return ECSMetadata(dt=dt)


@pytest.mark.parametrize("dt", [1e-3, 1e-4])
def test_tau_exported_in_seconds(dt: float, tmp_path: Path) -> None:
    network = _small_network(dt, tau_mem_inv=80.0)
    export_nir(network, _metadata(dt), tmp_path / "net.nir", torch.zeros(4))

    tau = nir.read(tmp_path / "net.nir").nodes["1"].tau
    np.testing.assert_array_equal(tau, np.full(7, 0.0125, dtype=np.float32))


@pytest.mark.parametrize("dt", [1e-3, 1e-4])
def test_norse_to_nir_tau_fault_reproduced(dt: float) -> None:
    # The fault this exporter exists to avoid: norse stores dt / tau_mem_inv.
    graph = _norse_to_nir(_small_network(dt, tau_mem_inv=80.0), torch.zeros(1, 4), dt)

    assert float(np.asarray(graph.nodes["1"].tau)) == pytest.approx(dt / 80.0)


def test_negative_v_reset_survives(tmp_path: Path) -> None:
    torch.manual_seed(1)
    network = snn.SequentialState(
        torch.nn.Linear(4, 5),
        _lif_box(v_reset=-0.5),
        torch.nn.Linear(5, 5),
        snn.IAFCell(snn.IAFParameters(v_reset=torch.tensor(-0.25)), dt=1e-3),
        torch.nn.Linear(5, 5),
        snn.LIFCell(snn.LIFParameters(v_reset=torch.tensor(-0.75)), dt=1e-3),
    )
    export_nir(network, _metadata(), tmp_path / "net.nir", torch.zeros(4))

    nodes = nir.read(tmp_path / "net.nir").nodes
    np.testing.assert_array_equal(nodes["1"].v_reset, np.full(5, -0.5, dtype=np.float32))
    np.testing.assert_array_equal(nodes["3"].v_reset, np.full(5, -0.25, dtype=np.float32))
    np.testing.assert_array_equal(nodes["5"].v_reset, np.full(5, -0.75, dtype=np.float32))


def test_norse_to_nir_drops_v_reset() -> None:
    graph = _norse_to_nir(_small_network(v_reset=-0.5), torch.zeros(1, 4), 1e-3)

    assert np.all(np.asarray(graph.nodes["1"].v_reset) == 0)


def test_subtract_reset_recorded(tmp_path: Path) -> None:
    network = _small_network(reset_method=reset_subtract)
    graph = export_nir(network, _metadata(), tmp_path / "net.nir", torch.zeros(4))

    assert read_metadata(tmp_path / "net.nir").reset_mode == "subtract"
    assert read_metadata(graph).reset_mode == "subtract"


def test_value_reset_recorded(tmp_path: Path) -> None:
    export_nir(_small_network(), _metadata(), tmp_path / "net.nir", torch.zeros(4))

    assert read_metadata(tmp_path / "net.nir").reset_mode == "to_reset"


def test_mixed_reset_modes_rejected() -> None:
    network = snn.SequentialState(
        torch.nn.Linear(4, 5),
        _lif_box(reset_method=reset_subtract),
        torch.nn.Linear(5, 5),
        _lif_box(),
    )

    with pytest.raises(ExportError, match="mixes reset modes"):
        to_nir_graph(network, _metadata(), torch.zeros(4))


def test_contradicting_reset_mode_rejected() -> None:
    metadata = ECSMetadata(dt=1e-3, reset_mode="to_reset")

    with pytest.raises(ExportError, match="reset_mode='to_reset'"):
        to_nir_graph(_small_network(reset_method=reset_subtract), metadata, torch.zeros(4))


def conv_pool_network() -> snn.SequentialState:
    torch.manual_seed(2)
    return snn.SequentialState(
        torch.nn.Conv2d(2, 4, 3, padding=1),
        _lif_box(),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(4, 6, 3, stride=1, padding="same", bias=False),
        _lif_box(),
        SumPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 2 * 2, 3),
        snn.LIBoxCell(dt=1e-3),
    )


def test_conv_pool_flatten_reads_back(tmp_path: Path) -> None:
    export_nir(conv_pool_network(), _metadata(), tmp_path / "net.nir", torch.zeros(2, 8, 8))

    graph = nir.read(tmp_path / "net.nir", type_check=True)
    types = [type(graph.nodes[name]).__name__ for name in ["0", "1", "2", "3", "4", "5", "6", "7", "8"]]
    assert types == ["Conv2d", "LIF", "SumPool2d", "Conv2d", "LIF", "SumPool2d", "Flatten", "Affine", "LI"]
    assert tuple(graph.nodes["6"].output_type["output"]) == (24,)
    assert tuple(graph.nodes["output"].output_type["output"]) == (3,)


def test_norse_to_nir_cannot_export_pooling() -> None:
    network = snn.SequentialState(
        torch.nn.Conv2d(2, 4, 3), torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 3)
    )
    graph = _norse_to_nir(network, torch.zeros(1, 2, 8, 8), 1e-3)

    assert graph.nodes["1"] is None
    assert graph.nodes["2"] is None


def test_scalar_parameters_broadcast(tmp_path: Path) -> None:
    export_nir(_small_network(v_th=0.5, v_leak=0.0), _metadata(), tmp_path / "net.nir", torch.zeros(4))

    node = nir.read(tmp_path / "net.nir").nodes["1"]
    for field in ("tau", "r", "v_leak", "v_threshold", "v_reset"):
        assert getattr(node, field).shape == (7,), field
        assert getattr(node, field).dtype == np.float32, field
    np.testing.assert_array_equal(node.v_threshold, np.full(7, 0.5, dtype=np.float32))


def test_conv_parameters_have_layer_shape(tmp_path: Path) -> None:
    export_nir(conv_pool_network(), _metadata(), tmp_path / "net.nir", torch.zeros(2, 8, 8))

    nodes = nir.read(tmp_path / "net.nir").nodes
    assert nodes["1"].tau.shape == (4, 8, 8)
    assert nodes["4"].v_reset.shape == (6, 4, 4)
    assert nodes["8"].tau.shape == (3,)


def test_per_channel_parameters_broadcast(tmp_path: Path) -> None:
    network = snn.SequentialState(
        torch.nn.Conv2d(1, 3, 3),
        _lif_box(v_th=torch.tensor([0.2, 0.4, 0.6]).reshape(3, 1, 1)),
    )
    export_nir(network, _metadata(), tmp_path / "net.nir", torch.zeros(1, 6, 6))

    threshold = nir.read(tmp_path / "net.nir").nodes["1"].v_threshold
    assert threshold.shape == (3, 4, 4)
    np.testing.assert_array_equal(threshold[:, 0, 0], np.array([0.2, 0.4, 0.6], dtype=np.float32))


def test_mismatched_parameter_shape_rejected() -> None:
    network = snn.SequentialState(torch.nn.Linear(4, 7), _lif_box(v_th=torch.ones(5)))

    with pytest.raises(ExportError, match="'v_th' has shape \\(5,\\)"):
        to_nir_graph(network, _metadata(), torch.zeros(4))


def test_norse_to_nir_scalar_parameters_fail_to_write(tmp_path: Path) -> None:
    graph = _norse_to_nir(_small_network(), torch.zeros(1, 4), 1e-3)

    with pytest.raises(TypeError, match="Scalar datasets"):
        nir.write(tmp_path / "norse.nir", graph)


@pytest.mark.parametrize("sample_shape", [(4,), (1, 4), (16, 4)])
def test_batched_sample_has_no_batch_dim(sample_shape: tuple[int, ...], tmp_path: Path) -> None:
    export_nir(_small_network(), _metadata(), tmp_path / "net.nir", torch.zeros(sample_shape))

    shape = nir.read(tmp_path / "net.nir").nodes["input"].output_type["output"]
    assert tuple(shape) == (4,)


@pytest.mark.parametrize("sample_shape", [(2, 8, 8), (5, 2, 8, 8)])
def test_batched_conv_sample_has_no_batch_dim(sample_shape: tuple[int, ...]) -> None:
    graph = to_nir_graph(conv_pool_network(), _metadata(), torch.zeros(sample_shape))

    assert tuple(graph.nodes["input"].output_type["output"]) == (2, 8, 8)


def test_flatten_first_sample_shape() -> None:
    network = snn.SequentialState(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 4), _lif_box())

    graph = to_nir_graph(network, _metadata(), torch.zeros(8, 2, 3, 3))

    assert tuple(graph.nodes["input"].output_type["output"]) == (2, 3, 3)
    assert graph.nodes["0"].start_dim == 0


def test_norse_to_nir_keeps_batch_dim() -> None:
    graph = _norse_to_nir(_small_network(), torch.zeros(16, 4), 1e-3)

    assert tuple(graph.nodes["input"].output_type["output"]) == (16, 4)


def _full_metadata() -> ECSMetadata:
    return ECSMetadata(
        hardware_cfg=HardwareConfig(num_cores=2, num_neurons_core=512, num_weights_core=64),
        quant_cfg=QuantConfig(
            weight_format=FixedPointFormat(wl=6, fl=4),
            state_format=FixedPointFormat(wl=14, fl=4),
            decay_format=FixedPointFormat(wl=10, fl=9),
        ),
        dt=2.5e-4,
        readout="max",
        provenance=Provenance(
            dataset="digits",
            checkpoint_sha256="ab" * 32,
            float_test_acc=0.9375,
            quant_test_acc=0.921875,
            sparsity=0.5,
            producer="ecs-train 0.1.0",
        ),
    )


def test_metadata_survives_write_and_read(tmp_path: Path) -> None:
    metadata = _full_metadata()
    export_nir(_small_network(dt=2.5e-4), metadata, tmp_path / "net.nir", torch.zeros(4))

    assert read_metadata(tmp_path / "net.nir") == metadata
    assert common_read_metadata(nir.read(tmp_path / "net.nir")) == metadata


def test_metadata_item_access(tmp_path: Path) -> None:
    export_nir(_small_network(dt=2.5e-4), _full_metadata(), tmp_path / "net.nir", torch.zeros(4))

    meta = read_metadata(tmp_path / "net.nir")
    assert meta["hardware_cfg"]["num_cores"] == 2
    assert meta["quant_cfg"]["weight_format"] == {"wl": 6, "fl": 4}
    assert meta["dt"] == 2.5e-4


def test_metadata_dict_gets_dt() -> None:
    graph = to_nir_graph(_small_network(), {"readout": "mean"}, torch.zeros(4), dt=1e-3)

    metadata = read_metadata(graph)
    assert metadata.dt == 1e-3
    assert metadata.readout == "mean"


def test_metadata_dict_validated() -> None:
    with pytest.raises(MetadataError, match="readout"):
        to_nir_graph(_small_network(), {"readout": "sometimes"}, torch.zeros(4), dt=1e-3)


def test_missing_dt_rejected() -> None:
    with pytest.raises(ExportError, match="timestep is missing"):
        to_nir_graph(_small_network(), {}, torch.zeros(4))


def test_dt_disagreeing_with_metadata_rejected() -> None:
    with pytest.raises(ExportError, match="differs from the metadata"):
        to_nir_graph(_small_network(), _metadata(1e-3), torch.zeros(4), dt=1e-4)


def test_dt_disagreeing_with_cell_rejected() -> None:
    with pytest.raises(ExportError, match="integrates with dt=0.001 s"):
        to_nir_graph(_small_network(dt=1e-3), _metadata(1e-4), torch.zeros(4))


def test_unsupported_module_lists_supported_types() -> None:
    network = snn.SequentialState(torch.nn.Conv2d(1, 2, 3), _lif_box(), torch.nn.MaxPool2d(2))

    with pytest.raises(UnsupportedModuleError) as raised:
        to_nir_graph(network, _metadata(), torch.zeros(1, 8, 8))

    message = str(raised.value)
    assert "layer '2'" in message
    assert "torch.nn.modules.pooling.MaxPool2d" in message
    assert "torch.nn.modules.linear.Linear" in message
    assert "norse.torch.module.lif_box.LIFBoxCell" in message
    assert raised.value.path == "2"
    assert raised.value.module_type == "torch.nn.modules.pooling.MaxPool2d"


def test_supported_types_listed() -> None:
    supported = supported_module_types()

    for name in ("Conv2d", "AvgPool2d", "Flatten", "LIFBoxCell", "LIBoxCell", "LIFCell", "IAFCell", "LIFRecurrentCell"):
        assert any(entry.endswith(f".{name}") for entry in supported), name


def test_recurrent_cell_with_current_rejected() -> None:
    network = snn.SequentialState(snn.LIFRecurrentCell(4, 5, dt=1e-3))

    with pytest.raises(UnsupportedModuleError, match="synaptic current"):
        to_nir_graph(network, _metadata(), torch.zeros(4))


def test_li_cell_with_current_rejected() -> None:
    network = snn.SequentialState(torch.nn.Linear(4, 3), snn.LICell(dt=1e-3))

    with pytest.raises(UnsupportedModuleError, match="CubaLI"):
        to_nir_graph(network, _metadata(), torch.zeros(4))


def test_avg_pool_without_neuron_after_rejected() -> None:
    network = snn.SequentialState(torch.nn.Conv2d(1, 2, 3), _lif_box(), torch.nn.AvgPool2d(2))

    with pytest.raises(ExportError, match="average pooling layer '2' is not followed by a neuron layer"):
        to_nir_graph(network, _metadata(), torch.zeros(1, 6, 6))


def test_avg_pool_ceil_mode_rejected() -> None:
    network = snn.SequentialState(torch.nn.AvgPool2d(2, ceil_mode=True), _lif_box())

    with pytest.raises(UnsupportedModuleError, match="ceil_mode"):
        to_nir_graph(network, _metadata(), torch.zeros(1, 5, 5))


def test_pruned_weights_export_exact_zeros(tmp_path: Path) -> None:
    network = _small_network()
    linear = network[0]
    prune.l1_unstructured(linear, "weight", amount=0.5)
    with torch.no_grad():
        # Changing weight_orig after pruning leaves linear.weight stale until the next forward pass.
        linear.weight_orig.add_(0.125)
    export_nir(network, _metadata(), tmp_path / "net.nir", torch.zeros(4))

    weight = nir.read(tmp_path / "net.nir").nodes["0"].weight
    mask = linear.weight_mask.numpy()
    expected = (linear.weight_orig * linear.weight_mask).detach().numpy()
    assert np.count_nonzero(weight == 0) == np.count_nonzero(mask == 0)
    assert np.all(weight[mask == 0] == 0)
    assert not np.any(np.signbit(weight[mask == 0]))
    np.testing.assert_array_equal(weight, expected)


def test_pruned_conv_weights_export_exact_zeros(tmp_path: Path) -> None:
    network = conv_pool_network()
    prune.random_unstructured(network[3], "weight", amount=0.7)
    export_nir(network, _metadata(), tmp_path / "net.nir", torch.zeros(2, 8, 8))

    weight = nir.read(tmp_path / "net.nir").nodes["3"].weight
    assert np.count_nonzero(weight == 0) == np.count_nonzero(network[3].weight_mask.numpy() == 0)


class QuantizedLinear(torch.nn.Linear):
    """A Linear layer whose ``quantized_weight()`` rounds to a grid of ``step``."""

    def __init__(self, inputs: int, outputs: int, step: float) -> None:
        super().__init__(inputs, outputs, bias=False)
        self.step = step

    def quantized_weight(self) -> torch.Tensor:
        return torch.round(self.weight / self.step) * self.step


def test_quantized_weight_preferred(tmp_path: Path) -> None:
    torch.manual_seed(3)
    network = snn.SequentialState(QuantizedLinear(4, 7, step=2.0**-6), _lif_box())
    export_nir(network, _metadata(), tmp_path / "net.nir", torch.zeros(4))

    weight = nir.read(tmp_path / "net.nir").nodes["0"].weight
    np.testing.assert_array_equal(weight, network[0].quantized_weight().detach().numpy())
    assert np.all(weight * 64 == np.round(weight * 64))


def test_quantized_weight_off_grid_rejected() -> None:
    torch.manual_seed(4)
    network = snn.SequentialState(QuantizedLinear(4, 7, step=2.0**-8), _lif_box())

    with pytest.raises(ExportError, match="not multiples of the weight LSB"):
        to_nir_graph(network, _metadata(), torch.zeros(4))


def test_pruned_quantized_weight_masked(tmp_path: Path) -> None:
    torch.manual_seed(5)
    network = snn.SequentialState(QuantizedLinear(4, 7, step=2.0**-6), _lif_box())
    prune.l1_unstructured(network[0], "weight", amount=0.4)
    export_nir(network, _metadata(), tmp_path / "net.nir", torch.zeros(4))

    weight = nir.read(tmp_path / "net.nir").nodes["0"].weight
    assert np.all(weight[network[0].weight_mask.numpy() == 0] == 0)


def test_existing_file_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "net.nir"
    path.write_bytes(b"keep me")

    with pytest.raises(NIRFileExistsError, match="overwrite=True"):
        export_nir(_small_network(), _metadata(), path, torch.zeros(4))
    assert path.read_bytes() == b"keep me"


def test_overwrite_replaces_file(tmp_path: Path) -> None:
    path = tmp_path / "net.nir"
    path.write_bytes(b"old")

    export_nir(_small_network(), _metadata(), path, torch.zeros(4), overwrite=True)

    assert isinstance(nir.read(path), nir.NIRGraph)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["net.nir"]


def test_failed_export_writes_nothing(tmp_path: Path) -> None:
    network = snn.SequentialState(torch.nn.Linear(4, 4), torch.nn.ReLU())

    with pytest.raises(UnsupportedModuleError):
        export_nir(network, _metadata(), tmp_path / "net.nir", torch.zeros(4))
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        export_nir(_small_network(), _metadata(), tmp_path / "missing" / "net.nir", torch.zeros(4))


class LayeredModel(torch.nn.Module):
    """A model class that lists its layers in forward order, as ecs-train's models do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 5), _lif_box(), torch.nn.Linear(5, 2), snn.LIBoxCell()])


def test_model_with_layers_attribute() -> None:
    graph = to_nir_graph(LayeredModel(), _metadata(), torch.zeros(4))

    assert list(graph.nodes) == ["input", "layers.0", "layers.1", "layers.2", "layers.3", "output"]


class OpaqueModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(4, 5)
        self.neurons = _lif_box()


def test_opaque_model_rejected() -> None:
    with pytest.raises(ExportError, match="cannot determine the forward order"):
        to_nir_graph(OpaqueModel(), _metadata(), torch.zeros(4))


class Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def test_registered_converter_used() -> None:
    @register_converter(Doubler)
    def convert_doubler(module, context):
        return ConvertedLayer(chain=[("", nir.Linear(weight=2 * np.eye(context.input_shape[0], dtype=np.float32)))])

    network = snn.SequentialState(torch.nn.Linear(4, 3), Doubler(), _lif_box())
    graph = to_nir_graph(network, _metadata(), torch.zeros(4))

    np.testing.assert_array_equal(graph.nodes["1"].weight, 2 * np.eye(3, dtype=np.float32))


def test_contract_flags_float64_and_missing_metadata() -> None:
    ones = np.ones(3)
    neuron = nir.LIF(tau=ones * 0.01, r=ones, v_leak=0 * ones, v_threshold=ones, v_reset=0 * ones)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([3])), "lif": neuron, "output": nir.Output(np.array([3]))},
        edges=[("input", "lif"), ("lif", "output")],
    )

    problems = contract_violations(graph)

    assert "node 'lif': tau has dtype float64, expected float32" in problems
    assert any("no 'ecs' metadata" in problem for problem in problems)


def test_contract_flags_norse_export() -> None:
    network = snn.SequentialState(torch.nn.Conv2d(2, 4, 3), torch.nn.AvgPool2d(2))
    graph = _norse_to_nir(network, torch.zeros(1, 2, 8, 8), 1e-3)

    problems = contract_violations(graph)

    assert any("node '1' has type NoneType" in problem for problem in problems)


def test_utils_reexports_export_nir() -> None:
    from ecs_train.utils import export_nir as reexported

    assert reexported is export_nir
