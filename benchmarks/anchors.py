"""The tools a user would otherwise pick, set up to run a benchmark network: XyloSim, norse and dense matmuls."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from common import FeedForwardNetwork

from ecs_common.neuron import integer_parameters

# Xylo Audio 2 (SYNS61201) limits, as rockpool 3.1.0's mapper states them
# (rockpool.devices.xylo.syns61201.xylo_mapper.mapper: max_hidden_neurons=1000,
# max_output_neurons=8) and its 16 input channels. xylosim itself enforces none
# of them, so networks beyond them still simulate.
XYLO_MAX_INPUTS = 16
XYLO_MAX_HIDDEN = 1000
XYLO_MAX_OUTPUTS = 8

# Largest int16 state word: an output threshold that a membrane never reaches.
INT16_MAX = 32767


def xylo_fits(network: FeedForwardNetwork) -> dict[str, Any]:
    """Compare the network with the Xylo Audio 2 limits and list the ones it exceeds."""
    exceeded = []
    if network.n_in > XYLO_MAX_INPUTS:
        exceeded.append(f"{network.n_in} inputs > {XYLO_MAX_INPUTS} input channels")
    if network.n_hidden > XYLO_MAX_HIDDEN:
        exceeded.append(f"{network.n_hidden} hidden neurons > {XYLO_MAX_HIDDEN}")
    if network.n_out > XYLO_MAX_OUTPUTS:
        exceeded.append(f"{network.n_out} output neurons > {XYLO_MAX_OUTPUTS}")
    return {"fits_xylo_audio_2": not exceeded, "exceeds": exceeded}


class XyloSimAnchor:
    """The network on xylosim's v2 simulator (the C++ engine behind rockpool's ``syns61201.XyloSim``).

    Mapping of the ECS integer network onto Xylo's formats:

    * Weights: the same int8 words (ECS ``Q(8,6)``), weight shift 0.
    * Thresholds: the ECS threshold word plus one, because Xylo fires on
      ``v >= threshold`` and ECS on ``v > threshold``. Both states count in
      the same units (weight LSBs), so the words carry over.
    * Membrane decay: Xylo decays by a bit shift, ``v -= v >> dash``, so
      ``dt / tau`` becomes ``2**-dash`` with ``dash = round(log2(tau / dt))``
      (20 ms at 1 ms gives dash 4, an effective time constant of 15.5 ms).
    * Synapses: every Xylo neuron has a synaptic current that decays before it
      enters the membrane. ``dash_syn = 1`` halves it each step, so each spike
      still delivers its whole weight, spread over about two steps.
    * Reset: Xylo subtracts the threshold (and may fire several times per step),
      ECS resets to ``v_reset``.
    * Output: Xylo readout neurons are LIF neurons. A threshold of 32767 keeps
      them from firing, and their recorded membrane potentials are the output
      states, as with ECS's LI layer.

    So XyloSim computes a related but not identical network; the benchmark
    compares speed, not outputs. Samples run one after another (xylosim has no
    batch dimension), each after a state reset, as rockpool's ``XyloSim`` does.
    """

    def __init__(self, network: FeedForwardNetwork) -> None:
        from xylosim.v2 import XyloLayer, XyloSynapse

        hidden = integer_parameters(network.hidden_parameters(), network.dt, network.quant, network.reset_mode)
        w_hidden, w_out = network.weight_words()
        dash_mem = int(round(math.log2(network.tau_mem / network.dt)))
        self.dash_mem = dash_mem
        self.threshold = [int(word) + 1 for word in hidden.v_threshold]

        # xylosim keeps raw pointers to the synapse objects, so they must stay
        # referenced for as long as the layer lives (a dropped list segfaults).
        self._synapses_in = [
            [XyloSynapse(int(post), 0, int(w_hidden[post, pre])) for post in np.flatnonzero(w_hidden[:, pre])]
            for pre in range(network.n_in)
        ]
        self._synapses_rec: list[list[Any]] = [[] for _ in range(network.n_hidden)]
        self._synapses_out = [
            [XyloSynapse(int(post), 0, int(w_out[post, pre])) for post in np.flatnonzero(w_out[:, pre])]
            for pre in range(network.n_hidden)
        ]
        self.layer = XyloLayer(
            synapses_in=self._synapses_in,
            synapses_rec=self._synapses_rec,
            synapses_out=self._synapses_out,
            aliases=[[] for _ in range(network.n_hidden)],
            threshold=self.threshold,
            threshold_out=[INT16_MAX] * network.n_out,
            has_bias=False,
            bias=[0] * network.n_hidden,
            bias_out=[0] * network.n_out,
            weight_shift_inp=0,
            weight_shift_rec=0,
            weight_shift_out=0,
            dash_mem=[dash_mem] * network.n_hidden,
            dash_mem_out=[dash_mem] * network.n_out,
            dash_syns=[[1] for _ in range(network.n_hidden)],
            dash_syns_out=[[1] for _ in range(network.n_out)],
            name="benchmark",
        )

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Simulate ``inputs [batch, T, n_in]`` sample by sample; return output states ``[batch, T, n_out]``."""
        outputs = []
        for sample in inputs:
            self.layer.reset_all()
            self.layer.evolve(sample.astype(int).tolist())
            outputs.append(np.array(self.layer.rec_v_mem_out).T)
        return np.stack(outputs)

    def hidden_spike_rate(self, inputs: np.ndarray) -> float:
        """Return the mean hidden spike count per neuron and step over ``inputs``."""
        counts = []
        for sample in inputs:
            self.layer.reset_all()
            self.layer.evolve(sample.astype(int).tolist())
            counts.append(np.array(self.layer.rec_recurrent_spikes).mean())
        return float(np.mean(counts))


class NorseAnchor:
    """The network in norse: ``Linear`` + ``LIFBoxCell``, ``Linear`` + ``LIBoxCell``, float32 on the CPU."""

    def __init__(self, network: FeedForwardNetwork) -> None:
        import torch
        from norse.torch import LIBoxCell, LIBoxParameters, LIFBoxCell, LIFBoxParameters

        self.torch = torch
        self.fc1 = torch.nn.Linear(network.n_in, network.n_hidden, bias=False)
        self.fc2 = torch.nn.Linear(network.n_hidden, network.n_out, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.from_numpy(network.w_hidden.astype(np.float32)))
            self.fc2.weight.copy_(torch.from_numpy(network.w_out.astype(np.float32)))
        tau_mem_inv = torch.tensor(1.0 / network.tau_mem)
        self.lif = LIFBoxCell(
            LIFBoxParameters(
                tau_mem_inv=tau_mem_inv,
                v_leak=torch.tensor(0.0),
                v_th=torch.tensor(network.v_threshold),
                v_reset=torch.tensor(0.0),
            ),
            dt=network.dt,
        )
        self.li = LIBoxCell(LIBoxParameters(tau_mem_inv=tau_mem_inv, v_leak=torch.tensor(0.0)), dt=network.dt)
        for module in (self.fc1, self.fc2, self.lif, self.li):
            module.eval()

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Simulate ``inputs [batch, T, n_in]``; return float32 output states ``[batch, T, n_out]``."""
        torch = self.torch
        with torch.no_grad():
            x = torch.from_numpy(inputs).to(torch.float32).transpose(0, 1)
            lif_state = None
            li_state = None
            outputs = []
            for step in x:
                spikes, lif_state = self.lif(self.fc1(step), lif_state)
                voltage, li_state = self.li(self.fc2(spikes), li_state)
                outputs.append(voltage)
            return torch.stack(outputs, dim=1).numpy()


class DenseRoofline:
    """The bare float32 matrix products of the network per timestep, in numpy: the dense roofline.

    Per step it multiplies ``[B, n_in] x [n_in, n_hidden]`` and
    ``[B, n_hidden] x [n_hidden, n_out]`` into preallocated buffers, and does
    no neuron update at all. Any simulator of the network needs at least this
    work unless it exploits sparsity.
    """

    def __init__(self, network: FeedForwardNetwork) -> None:
        self.w_hidden = np.ascontiguousarray(network.w_hidden.T, dtype=np.float32)
        self.w_out = np.ascontiguousarray(network.w_out.T, dtype=np.float32)

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Multiply every step of ``inputs [batch, T, n_in]``; return the last step's products."""
        batch, timesteps, _ = inputs.shape
        x = np.ascontiguousarray(inputs.transpose(1, 0, 2), dtype=np.float32)
        hidden = np.empty((batch, self.w_hidden.shape[1]), dtype=np.float32)
        output = np.empty((batch, self.w_out.shape[1]), dtype=np.float32)
        for t in range(timesteps):
            np.matmul(x[t], self.w_hidden, out=hidden)
            np.matmul(hidden, self.w_out, out=output)
        return output
