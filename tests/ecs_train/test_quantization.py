"""Tests of post-training quantization and of the quantized forward against ecs_common.neuron.integer_step."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from ecs_common.errors import QuantizationError
from ecs_common.fixed_point import quantize
from ecs_common.formats import FixedPointFormat, QuantConfig
from ecs_common.neuron import NeuronState, initial_state, integer_step
from ecs_train.config import NetworkConfig
from ecs_train.models import build_model, make_hidden_cell, make_output_cell
from ecs_train.quantization import (
    QuantizedLinear,
    QuantizedNeuron,
    float_forward,
    is_quantized,
    quantize_model,
    quantize_weights,
)

torch.set_num_threads(1)

SEEDS = [0, 1, 2]


def _cell(kind: str, **overrides) -> nn.Module:
    cfg = NetworkConfig(neuron_type="lif" if kind == "li" else kind, **overrides)
    return make_output_cell(cfg) if kind == "li" else make_hidden_cell(cfg)


def _run_both(neuron: QuantizedNeuron, inputs: np.ndarray) -> tuple[list, list]:
    """Run the quantized neuron and integer_step on the same words; return (torch, reference) states and spikes."""
    params = neuron.integer_params
    state = initial_state(params, (inputs.shape[1],))
    torch_state = None
    torch_steps, reference_steps = [], []
    for step in range(inputs.shape[0]):
        state, spikes = integer_step(params, state, inputs[step])
        output, torch_state = neuron(torch.as_tensor(inputs[step], dtype=torch.float64), torch_state)
        reference_steps.append((state.v.copy(), None if state.i is None else state.i.copy(), spikes.copy()))
        torch_spikes = np.zeros_like(spikes) if neuron.kind == "li" else output.detach().numpy() > 0
        current = None if torch_state.i is None else torch_state.i.detach().numpy()
        torch_steps.append((torch_state.v.detach().numpy(), current, torch_spikes))
    return torch_steps, reference_steps


def _assert_same_steps(torch_steps: list, reference_steps: list) -> None:
    for step, (mine, reference) in enumerate(zip(torch_steps, reference_steps, strict=True)):
        np.testing.assert_array_equal(mine[0], reference[0], err_msg=f"membrane words differ at step {step}")
        if reference[1] is not None:
            np.testing.assert_array_equal(mine[1], reference[1], err_msg=f"current words differ at step {step}")
        np.testing.assert_array_equal(mine[2], reference[2], err_msg=f"spikes differ at step {step}")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("kind", "reset_mode"),
    [("lif", "to_reset"), ("lif", "subtract"), ("li", "to_reset"), ("if", "to_reset"), ("cubalif", "to_reset")],
)
def test_neuron_step_matches_reference(kind: str, reset_mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # IF's threshold of 500 is 32000 words, just below the top of Q(16,6), so its membrane saturates before firing.
    threshold = 500.0 if kind == "if" else 1.0
    cell = _cell(kind, reset_mode=reset_mode, v_leak=0.05 * seed, v_reset=-0.1 * seed, v_threshold=threshold)
    neuron = QuantizedNeuron(cell, (16,), 0.001, QuantConfig(), reset_mode)

    # Words up to 8000 per step drive LI and IF membranes into saturation (Q(16,6) ends at 32767).
    inputs = rng.integers(-1000, 8000, size=(60, 8, 16))
    torch_steps, reference_steps = _run_both(neuron, inputs)
    _assert_same_steps(torch_steps, reference_steps)

    if kind == "li":
        saturated = any(np.any(step[0] == 32767) for step in reference_steps)
        assert saturated, "the inputs should saturate some LI membranes"
    if kind == "if":
        previous = np.stack([np.zeros_like(inputs[0])] + [step[0] for step in reference_steps[:-1]])
        assert np.any(previous + inputs > 32767), "the inputs should saturate some IF membranes"


def test_neuron_threshold_is_strict() -> None:
    neuron = QuantizedNeuron(_cell("if"), (1,), 0.001, QuantConfig())
    threshold_word = int(neuron.integer_params.v_threshold[0])

    # The first step lands exactly on the threshold: no spike. One more word crosses it.
    inputs = np.array([[[threshold_word]], [[1]]])
    torch_steps, reference_steps = _run_both(neuron, inputs)
    _assert_same_steps(torch_steps, reference_steps)
    assert not torch_steps[0][2].any(), "v == threshold must not fire"
    assert torch_steps[1][2].all(), "v == threshold + 1 must fire"


def test_neuron_wide_formats_match_reference() -> None:
    # 32-bit states with 26 fractional decay bits exceed float64's exact range, so the decay runs in int64.
    quant = QuantConfig(
        weight_format=FixedPointFormat(wl=16, fl=6),
        state_format=FixedPointFormat(wl=32, fl=6),
        decay_format=FixedPointFormat(wl=28, fl=26),
    )
    neuron = QuantizedNeuron(_cell("lif", v_threshold=1000.0), (8,), 0.001, quant)
    assert not neuron.decay_exact_in_float64
    inputs = np.random.default_rng(3).integers(-(2**25), 2**27, size=(40, 4, 8))
    torch_steps, reference_steps = _run_both(neuron, inputs)
    _assert_same_steps(torch_steps, reference_steps)


def _reference_network(model, spikes: np.ndarray, quant: QuantConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run a feed-forward network layer by layer with numpy words and integer_step."""
    layer_input = spikes.reshape(spikes.shape[0], spikes.shape[1], -1).astype(np.int64)
    hidden_spikes = []
    states = None
    layers = list(model.layers)
    for index, layer in enumerate(layers):
        if not isinstance(layer, QuantizedLinear):
            continue
        words = quantize(layer.weight.detach().numpy(), quant.weight_format)
        neuron = layers[index + 1]
        params = neuron.integer_params
        state = initial_state(params, (layer_input.shape[1],))
        outputs, states = [], []
        for step in range(layer_input.shape[0]):
            state, fired = integer_step(params, state, layer_input[step] @ words.T)
            outputs.append(fired.astype(np.int64))
            states.append(state.v.copy())
        layer_input = np.stack(outputs)
        if neuron.kind != "li":
            hidden_spikes.append(layer_input.astype(bool))
    return np.stack(states), hidden_spikes


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["lif", "if", "cubalif"])
def test_network_matches_reference(kind: str, seed: int) -> None:
    torch.manual_seed(seed)
    cfg = NetworkConfig(neuron_type=kind, hidden_sizes=[24, 12], init_gain=3.0)
    model = build_model(cfg, (2, 4, 4), 5)
    quant = QuantConfig()
    quantize_model(model, quant)

    spikes = (torch.rand(3, 30, 2, 4, 4, generator=torch.Generator().manual_seed(seed)) < 0.4).float()
    record = model.run(spikes, record_spikes=True)
    reference_states, reference_spikes = _reference_network(model, spikes.transpose(0, 1).numpy(), quant)

    np.testing.assert_array_equal(record.words.numpy(), reference_states)
    for layer, (mine, reference) in enumerate(zip(record.spikes, reference_spikes, strict=True)):
        np.testing.assert_array_equal(mine.detach().numpy() > 0, reference, err_msg=f"hidden layer {layer} spikes")
    assert any(layer.any() for layer in reference_spikes), "the input should make hidden neurons fire"
    unit = model.layers[-1].unit.numpy()
    np.testing.assert_allclose(record.states.detach().numpy(), reference_states * unit, rtol=1e-12)


def test_network_gradients_match_float_scale() -> None:
    torch.manual_seed(0)
    cfg = NetworkConfig(hidden_sizes=[])
    model = build_model(cfg, (20,), 3)
    spikes = (torch.rand(4, 25, 20) < 0.3).float()

    model(spikes).sum().backward()
    float_gradient = model.layers[0].weight.grad.clone()
    model.zero_grad()
    quantize_model(model, QuantConfig())
    model(spikes).sum().backward()
    quantized_gradient = model.layers[0].weight.grad

    # Straight-through rounding keeps the float model's gradient up to the decay factor's rounding.
    torch.testing.assert_close(quantized_gradient, float_gradient, rtol=1e-2, atol=1e-4)


def test_quantize_model_shares_parameters() -> None:
    model = build_model(NetworkConfig(hidden_sizes=[8]), (6,), 2)
    before = [id(parameter) for parameter in model.parameters()]
    quantize_model(model, QuantConfig())
    assert [id(parameter) for parameter in model.parameters()] == before
    assert is_quantized(model)

    with float_forward(model):
        assert not is_quantized(model)
    assert is_quantized(model)


def test_quantized_weight_is_on_grid() -> None:
    model = build_model(NetworkConfig(hidden_sizes=[8]), (6,), 2)
    with torch.no_grad():
        model.layers[0].weight[0, :3] = 0.0
    quantize_model(model, QuantConfig())
    weight = model.layers[0].quantized_weight().detach()
    lsb = QuantConfig().weight_format.lsb
    assert torch.equal(weight / lsb, torch.round(weight / lsb))
    assert torch.equal(weight[0, :3], torch.zeros(3))


def test_ptq_rounds_half_to_even() -> None:
    layer = nn.Linear(6, 1, bias=False)
    lsb = 2.0**-6
    with torch.no_grad():
        layer.weight[0] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 0.25]) * lsb
    report = quantize_weights(nn.Sequential(layer), 8, 6)
    expected = torch.tensor([0.0, 2.0, 2.0, 0.0, -2.0, 0.0]) * lsb
    assert torch.equal(layer.weight[0].detach(), expected)
    assert report.num_saturated == 0


def test_ptq_reports_saturation(caplog: pytest.LogCaptureFixture) -> None:
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight[0] = torch.tensor([5.0, -5.0, 0.5, 1.984375])
    with caplog.at_level(logging.WARNING, logger="ecs_train.quantization"):
        report = quantize_weights(nn.Sequential(layer), 8, 6)
    assert report.num_saturated == 2
    assert torch.equal(layer.weight[0].detach(), torch.tensor([127 / 64, -2.0, 0.5, 1.984375]))
    assert "2 of 4 weights" in caplog.text


def test_ptq_rejects_all_zero_matrix() -> None:
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(0.4 * 2.0**-6)
    with pytest.raises(QuantizationError, match=r"weight of layer '0' quantizes to all zeros in Q\(8,6\)"):
        quantize_weights(model, 8, 6)


def test_neuron_rejects_threshold_outside_state_format() -> None:
    # v_threshold / (dt / tau) = 100 / 0.1 = 1000 state units, beyond Q(16,6)'s 512.
    with pytest.raises(QuantizationError, match="v_threshold"):
        QuantizedNeuron(_cell("lif", v_threshold=100.0), (4,), 0.001, QuantConfig())


def test_neuron_state_uses_reference_initial_state() -> None:
    neuron = QuantizedNeuron(_cell("cubalif"), (3,), 0.001, QuantConfig())
    state = neuron.initial_state(torch.zeros(2, 3))
    reference: NeuronState = initial_state(neuron.integer_params, (2,))
    np.testing.assert_array_equal(state.v.numpy(), reference.v)
    np.testing.assert_array_equal(state.i.numpy(), reference.i)


def test_quantize_model_keeps_pruning_masks() -> None:
    model = build_model(NetworkConfig(hidden_sizes=[8]), (6,), 2)
    prune.l1_unstructured(model.layers[0], "weight", amount=0.5)
    quantize_model(model, QuantConfig())

    layer = model.layers[0]
    assert isinstance(layer, QuantizedLinear)
    assert hasattr(layer, "weight_mask"), "the pruning mask should survive quantize_model"
    with torch.no_grad():
        layer.weight_orig.fill_(1.0)
    model(torch.ones(1, 3, 6))
    assert torch.count_nonzero(layer.quantized_weight()) == 24, "pruned weights stay exactly zero"


def _stepwise(neuron: QuantizedNeuron, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    state = None
    outputs, words = [], []
    for step in range(x.shape[0]):
        output, state = neuron(x[step], state)
        outputs.append(output)
        words.append(state.v)
    return torch.stack(outputs), torch.stack(words)


SEQUENCE_CASES = [
    ("lif", "to_reset", "super"),
    ("lif", "subtract", "super"),
    ("lif", "to_reset", "tanh"),
    ("lif", "to_reset", "heavi_erfc"),
    ("if", "to_reset", "super"),
    ("cubalif", "to_reset", "super"),
    ("cubalif", "to_reset", "tanh"),
    ("li", "to_reset", "super"),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("kind", "reset_mode", "surrogate"), SEQUENCE_CASES)
def test_run_sequence_matches_steps(kind: str, reset_mode: str, surrogate: str, seed: int) -> None:
    cell = _cell(kind, reset_mode=reset_mode, surrogate=surrogate, surrogate_alpha=10.0, v_leak=0.05 * seed)
    neuron = QuantizedNeuron(cell, (3, 5), 0.001, QuantConfig(), reset_mode)
    generator = torch.Generator().manual_seed(seed)
    # Words up to 6000 per step make LIF neurons fire (threshold 64 words) and drive LI membranes into saturation.
    x = torch.randint(-300, 6000, (40, 4, 3, 5), generator=generator).float().requires_grad_(True)
    weights = torch.randn(40, 4, 3, 5, dtype=torch.float64, generator=generator)

    outputs, words = neuron.run_sequence(x)
    (gradient,) = torch.autograd.grad((outputs * weights).sum(), x)
    reference_outputs, reference_words = _stepwise(neuron, x)
    (reference_gradient,) = torch.autograd.grad((reference_outputs * weights).sum(), x)

    assert torch.equal(outputs, reference_outputs)
    assert torch.equal(words, reference_words)
    assert gradient.dtype == x.dtype
    assert gradient.abs().max() > 0, "the loss should reach the input"
    tolerance = 1e-6 * reference_gradient.abs().max().item()
    torch.testing.assert_close(gradient, reference_gradient, rtol=1e-5, atol=tolerance)
    if kind != "li":
        assert 0 < outputs.sum() < outputs.numel(), "some neurons should fire and some not"
    else:
        assert (words == QuantConfig().state_format.max_int).any(), "the inputs should saturate some LI membranes"


def test_run_sequence_wide_formats() -> None:
    quant = QuantConfig(
        weight_format=FixedPointFormat(wl=16, fl=6),
        state_format=FixedPointFormat(wl=32, fl=6),
        decay_format=FixedPointFormat(wl=28, fl=26),
    )
    neuron = QuantizedNeuron(_cell("cubalif", v_threshold=1000.0, surrogate_alpha=0.01), (8,), 0.001, quant)
    assert not neuron.decay_exact_in_float64
    generator = torch.Generator().manual_seed(4)
    x = torch.randint(-(2**20), 2**22, (30, 4, 8), generator=generator).to(torch.float64).requires_grad_(True)

    outputs, words = neuron.run_sequence(x)
    (gradient,) = torch.autograd.grad(outputs.sum(), x)
    reference_outputs, reference_words = _stepwise(neuron, x)
    (reference_gradient,) = torch.autograd.grad(reference_outputs.sum(), x)

    assert torch.equal(words, reference_words)
    assert torch.equal(outputs, reference_outputs)
    assert outputs.sum() > 0
    torch.testing.assert_close(gradient, reference_gradient, rtol=1e-9, atol=0.0)


def test_run_sequence_without_gradient() -> None:
    neuron = QuantizedNeuron(_cell("lif"), (6,), 0.001, QuantConfig())
    x = torch.randint(0, 200, (10, 2, 6)).float()
    outputs, words = neuron.run_sequence(x)
    assert outputs.grad_fn is None
    assert not outputs.requires_grad

    reference_outputs, reference_words = _stepwise(neuron, x)
    assert torch.equal(outputs, reference_outputs)
    assert torch.equal(words, reference_words)


@pytest.mark.parametrize("kind", ["if", "lif", "cubalif", "li"])
def test_run_sequence_saturation_bounds(kind: str) -> None:
    # Q(4,1) states span words -8 to 7, so small inputs land exactly on both bounds,
    # where torch.clamp passes no gradient.
    quant = QuantConfig(
        weight_format=FixedPointFormat(wl=4, fl=1),
        state_format=FixedPointFormat(wl=4, fl=1),
        decay_format=FixedPointFormat(wl=8, fl=7),
    )
    # dt / tau = 0.5 keeps the LIF threshold of 2 state units (4 words) inside the range.
    cell = _cell(kind, surrogate_alpha=1.0, tau_mem=0.002, tau_syn=0.002)
    neuron = QuantizedNeuron(cell, (6,), 0.001, quant)
    generator = torch.Generator().manual_seed(5)
    x = torch.randint(-9, 10, (12, 8, 6), generator=generator).float().requires_grad_(True)
    weights = torch.randn(12, 8, 6, dtype=torch.float64, generator=generator)

    outputs, words = neuron.run_sequence(x)
    (gradient,) = torch.autograd.grad((outputs * weights).sum(), x)
    reference_outputs, reference_words = _stepwise(neuron, x)
    (reference_gradient,) = torch.autograd.grad((reference_outputs * weights).sum(), x)

    _, _, membrane, _ = neuron.integrate(x)
    assert (membrane == 7).any(), "some membranes should land exactly on the upper bound"
    assert (membrane == -8).any(), "some membranes should land exactly on the lower bound"
    assert torch.equal(words, reference_words)
    torch.testing.assert_close(gradient, reference_gradient, rtol=1e-5, atol=1e-7)
