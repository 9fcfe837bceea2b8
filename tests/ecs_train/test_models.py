"""Tests of the network builder, the time loop and the readout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from norse.torch import IAFCell, LIBoxCell, LIFBoxCell, LIFCell
from torch import nn

from ecs_common.errors import ConfigError
from ecs_common.formats import QuantConfig
from ecs_common.neuron import float_step
from ecs_train.config import NetworkConfig
from ecs_train.models import SumPool2d, build_model, readout
from ecs_train.quantization import neuron_parameters, quantize_model

torch.set_num_threads(1)


def _spikes(shape: tuple[int, ...], seed: int = 0, rate: float = 0.3) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < rate).float()


def test_feed_forward_layers_and_shapes() -> None:
    model = build_model(NetworkConfig(hidden_sizes=[128]), (2, 16, 16), 10)
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [nn.Flatten, nn.Linear, LIFBoxCell, nn.Linear, LIBoxCell]
    assert model.layer_shapes == [(512,), (128,), (128,), (10,), (10,)]
    assert all(layer.bias is None for layer in model.layers if isinstance(layer, nn.Linear))
    assert model.neuron_kinds() == ["lif", "li"]
    assert model.latency() == 3


@pytest.mark.parametrize(("neuron_type", "cell_type"), [("lif", LIFBoxCell), ("cubalif", LIFCell), ("if", IAFCell)])
def test_neuron_type_selects_norse_cell(neuron_type: str, cell_type: type) -> None:
    model = build_model(NetworkConfig(neuron_type=neuron_type, hidden_sizes=[8, 4]), (6,), 3)
    cells = [layer for _, layer, _ in model.neuron_layers()]
    assert [type(cell) for cell in cells] == [cell_type, cell_type, LIBoxCell]
    assert all(cell.dt == 0.001 for cell in cells)


def test_parameters_converted_from_nir_terms() -> None:
    cfg = NetworkConfig(tau_mem=0.02, tau_syn=0.004, v_threshold=0.8, v_reset=-0.2, dt=0.0005, output_tau_mem=0.05)
    hidden = build_model(cfg.model_copy(update={"neuron_type": "cubalif"}), (4,), 2).layers[1]
    assert float(hidden.p.tau_mem_inv) == pytest.approx(50.0)
    assert float(hidden.p.tau_syn_inv) == pytest.approx(250.0)
    assert float(hidden.p.v_th) == pytest.approx(0.8)
    assert float(hidden.p.v_reset) == pytest.approx(-0.2)
    assert hidden.dt == 0.0005

    output = build_model(cfg, (4,), 2).layers[-1]
    assert float(output.p.tau_mem_inv) == pytest.approx(20.0)


def test_forward_output_shapes() -> None:
    model = build_model(NetworkConfig(hidden_sizes=[16, 8]), (2, 5, 5), 4)
    record = model.run(_spikes((3, 12, 2, 5, 5)), record_spikes=True)
    assert record.states.shape == (12, 3, 4)
    assert [tuple(spikes.shape) for spikes in record.spikes] == [(12, 3, 16), (12, 3, 8)]
    assert record.words is None
    assert model(_spikes((3, 12, 2, 5, 5))).shape == (12, 3, 4)


def test_forward_rejects_wrong_input_shape() -> None:
    model = build_model(NetworkConfig(hidden_sizes=[8]), (2, 5, 5), 4)
    with pytest.raises(ValueError, match=r"input of shape \(3, 2, 5, 5\) does not match \[batch, time, 2, 5, 5\]"):
        model(torch.zeros(3, 2, 5, 5))


@pytest.mark.parametrize("neuron_type", ["lif", "if", "cubalif"])
def test_float_cells_match_nir_reference(neuron_type: str) -> None:
    # One hidden layer against ecs_common.neuron.float_step with the NIR parameters of each cell.
    cfg = NetworkConfig(neuron_type=neuron_type, hidden_sizes=[12], init_gain=4.0)
    torch.manual_seed(1)
    model = build_model(cfg, (10,), 3)
    x = _spikes((2, 25, 10), seed=1)
    record = model.run(x, record_spikes=True)

    weight = model.layers[0].weight.detach().double().numpy()
    params = neuron_parameters(model.layers[1], 12, cfg.dt)
    v = np.zeros((2, 12))
    current = np.zeros((2, 12)) if neuron_type == "cubalif" else None
    inputs = x.transpose(0, 1).double().numpy() @ weight.T
    for step in range(inputs.shape[0]):
        v, current, spikes = float_step(params, cfg.dt, v, current, inputs[step])
        spikes_torch = record.spikes[0][step].detach().numpy() > 0
        np.testing.assert_array_equal(spikes_torch, spikes, err_msg=f"spikes differ at step {step}")
    assert record.spikes[0].sum() > 0, "the input should make hidden neurons fire"


def test_conv_architecture() -> None:
    cfg = NetworkConfig(architecture="conv", conv_channels=[4, 6], kernel_size=3, pool_size=2, hidden_sizes=[10])
    model = build_model(cfg, (2, 8, 8), 3)
    assert [shape for _, _, shape in model.neuron_layers()] == [(4, 8, 8), (6, 4, 4), (10,), (3,)]
    assert sum(isinstance(layer, SumPool2d) for layer in model.layers) == 2
    states = model(_spikes((2, 6, 2, 8, 8)))
    assert states.shape == (6, 2, 3)

    quantize_model(model, QuantConfig())
    record = model.run(_spikes((2, 6, 2, 8, 8)))
    assert record.words is not None
    assert record.words.dtype == torch.int64


def test_conv_rejects_flat_input() -> None:
    with pytest.raises(ConfigError, match="architecture 'conv' needs input of shape"):
        build_model(NetworkConfig(architecture="conv"), (700,), 10)


def test_sum_pool_sums_windows() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    pooled = SumPool2d(2)(x)
    assert torch.equal(pooled, torch.tensor([[[[10.0, 18.0], [42.0, 50.0]]]]))


def test_readout_modes() -> None:
    states = torch.tensor([[[1.0, 5.0]], [[3.0, 2.0]], [[2.0, 2.0]]])
    assert torch.equal(readout(states, "last"), torch.tensor([[2.0, 2.0]]))
    assert torch.equal(readout(states, "max"), torch.tensor([[3.0, 5.0]]))
    assert torch.equal(readout(states, "mean"), torch.tensor([[2.0, 3.0]]))
    with pytest.raises(ConfigError, match="invalid readout 'sum'"):
        readout(states, "sum")


def test_layers_start_from_zero_state() -> None:
    # With a nonzero v_leak, norse cells would start at v_leak, but the network starts at zero like the accelerator.
    cfg = NetworkConfig(hidden_sizes=[], v_leak=0.5)
    model = build_model(cfg, (3,), 2)
    states = model(torch.zeros(1, 1, 3))
    expected = 0.1 * 0.5  # one forward-Euler step from 0 towards v_leak with dt / tau = 0.1
    torch.testing.assert_close(states, torch.full((1, 1, 2), expected))
