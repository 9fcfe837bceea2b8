# %% [markdown]
# # Hands-on tutorial: from training to the FPGA
#
# This tutorial takes a small spiking neural network through the whole ECS
# toolchain, on a dataset that needs no download:
#
# 1. load an experiment config and train a feed-forward network with
#    PyTorch Lightning and norse, quantization-aware in its last epoch;
# 2. plot the performance log;
# 3. test the quantized network and look at post-training quantization;
# 4. check the network against the accelerator's limits in three scenarios;
# 5. prune 30% of the weights and compare the pruned with the unpruned
#    checkpoint;
# 6. export the network to NIR and read back the hardware config it carries;
# 7. map it onto cores, simulate one sample bit-accurately and compare the
#    simulation with the training side, state by state;
# 8. write the accelerator's memory files and the utilization table;
# 9. export test vectors for the FPGA;
# 10. bundle everything with checksums and transfer the bundle to the lab
#     host over SSH.
#
# The dataset is `digits`: scikit-learn's 1,797 handwritten 8x8 digit scans,
# turned into ON/OFF events by simulated sensor movements (saccades), the way
# N-MNIST was recorded from MNIST. Every sample is 20 time bins of
# `[2, 16, 16]` binary event frames: 2 polarities, 16x16 pixels.
#
# The network is 512 input neurons, 128 LIF neurons and 10 leaky-integrator
# (LI) output neurons. The class with the largest output membrane state over
# time wins.
#
# **Running it.** `examples/tutorial.py` and `examples/tutorial.ipynb`
# contain the same code; `python examples/make_notebook.py` writes the
# notebook from the script. Run the script from the repository root with the
# project's virtual environment, `python examples/tutorial.py`, or open the
# notebook in Jupyter. With the defaults the whole run took 1.5 to 3 minutes
# on a shared 2-core x86_64 machine without GPU, depending on its load. These
# environment variables change the settings:
#
# | variable | default | meaning |
# |---|---|---|
# | `ECS_TUTORIAL_OUTPUT` | `tutorial_output` | folder for every file the tutorial writes; a rerun replaces them |
# | `ECS_TUTORIAL_EPOCHS` | 3 | float training epochs |
# | `ECS_TUTORIAL_QAT_EPOCHS` | 1 | quantization-aware epochs after them; 0 quantizes after training instead |
# | `ECS_TUTORIAL_LIMIT_BATCHES` | 1.0 | fraction (with a dot, up to 1.0) or number of batches per epoch |
# | `ECS_TUTORIAL_FINE_TUNE_EPOCHS` | 1 | fine-tuning epochs after pruning |
# | `ECS_TUTORIAL_NUM_VECTORS` | 10 | test samples exported as test vectors for the FPGA |
# | `ECS_TUTORIAL_SSH_HOST` | unset | lab host to transfer the bundle to; unset skips the transfer |
#
# Lightning rejects a fraction of batches that leaves no validation batch.
# The validation split has 3 batches of 64 samples, so use a fraction of at
# least 0.34 or a whole number such as 4.
#
# The transfer step also reads `ECS_TUTORIAL_SSH_USER`, `ECS_TUTORIAL_SSH_PORT`,
# `ECS_TUTORIAL_SSH_DEST`, `ECS_TUTORIAL_SSH_IDENTITY` and
# `ECS_TUTORIAL_SSH_KNOWN_HOSTS` (see the last section).

# %%
import copy
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the plots are written as PNG files and shown from there
import matplotlib.pyplot as plt
import nir
import numpy as np
import torch

started = time.perf_counter()


def find_repository_root() -> Path:
    """Return the folder with config/digits_feed_forward.yaml: the working folder or one above it.

    Jupyter starts the notebook in examples/, the script usually runs from the repository root.
    """
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "config" / "digits_feed_forward.yaml").is_file():
            return folder
    raise FileNotFoundError("config/digits_feed_forward.yaml not found; run the tutorial inside the repository")


def show_image(path: Path) -> None:
    """Display a PNG inside Jupyter; print its path elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(Image(filename=str(path)))
    else:
        print(f"plot written to {path}")


def env_int(name: str, default: int) -> int:
    """Read a whole number from an environment variable."""
    return int(os.environ.get(name, default))


def env_batches(name: str, default: float) -> float | int:
    """Read limit_batches: a fraction such as 0.5, or a whole number of batches such as 4."""
    text = os.environ.get(name, str(default))
    return float(text) if "." in text else int(text)


ROOT = find_repository_root()
OUTPUT = Path(os.environ.get("ECS_TUTORIAL_OUTPUT", ROOT / "tutorial_output")).resolve()
EPOCHS = env_int("ECS_TUTORIAL_EPOCHS", 3)
QAT_EPOCHS = env_int("ECS_TUTORIAL_QAT_EPOCHS", 1)
LIMIT_BATCHES = env_batches("ECS_TUTORIAL_LIMIT_BATCHES", 1.0)
FINE_TUNE_EPOCHS = env_int("ECS_TUTORIAL_FINE_TUNE_EPOCHS", 1)
NUM_VECTORS = env_int("ECS_TUTORIAL_NUM_VECTORS", 10)
OUTPUT.mkdir(parents=True, exist_ok=True)
print(f"outputs go to {OUTPUT}")
print(f"{EPOCHS} float epochs, {QAT_EPOCHS} QAT epochs, limit_batches={LIMIT_BATCHES}")

# %% [markdown]
# ## 1. Load the configuration and train
#
# An experiment is described by one YAML file with five sections:
# `model_cfg` (the network and its quantization formats), `trainer_cfg`,
# `data_cfg`, `hardware_cfg` (the accelerator's resources) and `pruning_cfg`.
# `load_yaml` validates it and reports every invalid field at once.
# Fields can be changed in Python before training; every assignment is
# validated too.
#
# The quantization formats are signed fixed-point formats `Q(wl, fl)`: `wl`
# bits in all, `fl` of them fractional. The default `Q(8,6)` weights are
# multiples of 1/64 between -2 and 2 - 1/64.

# %%
from ecs_train.config import load_yaml

config = load_yaml(ROOT / "config" / "digits_feed_forward.yaml")
config.trainer_cfg.num_epochs = EPOCHS
config.trainer_cfg.qat_epochs = QAT_EPOCHS
config.trainer_cfg.output_path = str(OUTPUT / "training")

network_cfg = config.model_cfg.network_cfg
quant_cfg = config.model_cfg.quant_cfg
print(f"network: {network_cfg.architecture}, hidden layers {network_cfg.hidden_sizes} of {network_cfg.neuron_type}")
print(f"tau_mem {network_cfg.tau_mem} s, dt {network_cfg.dt} s, threshold {network_cfg.v_threshold}")
print(f"formats: weights {quant_cfg.weight_format}, state {quant_cfg.state_format}, decay {quant_cfg.decay_format}")
print(f"hardware: {config.hardware_cfg}")

# %% [markdown]
# `initialize_experiment` seeds the random generators and builds the
# Lightning trainer, the model and the data module. The first call converts
# the digit scans into event frames and caches them under
# `~/.cache/ecs-train`, which takes a few seconds.
#
# Training runs `num_epochs` epochs in float arithmetic, then `qat_epochs`
# epochs of quantization-aware training (QAT): the forward pass computes
# exactly what the accelerator computes, in integers, while gradients pass
# straight through the rounding. `limit_batches` (a fraction or a number of
# batches) shortens every epoch for a quick look.

# %%
from ecs_train.training import find_callback, initialize_experiment
from ecs_train.visualization.network_logger import NetworkLogger

trainer, model, data_module = initialize_experiment(config, limit_batches=LIMIT_BATCHES)
print(f"input {data_module.input_shape} x {data_module.num_timesteps} time bins, {data_module.num_classes} classes")
print(model.network)

trainer.fit(model, datamodule=data_module)
model.cpu().eval()
checkpoint_dir = config.trainer_cfg.checkpoint_dir
print(f"checkpoints in {checkpoint_dir}: {sorted(path.name for path in checkpoint_dir.glob('*.ckpt'))}")

# %% [markdown]
# ## 2. Plot the performance log
#
# The `NetworkLogger` callback records loss and accuracy after every epoch.
# `val_acc_quantized` is the validation accuracy of a quantized copy of the
# network: during the float epochs it is what post-training quantization of
# the current weights would give, and during QAT it is the network itself. The
# dashed line marks the first quantized epoch.

# %%
network_logger = find_callback(trainer, NetworkLogger)
network_logger.save_perf_log()
perf_log_png = network_logger.draw_perf_log(OUTPUT / "perf_log.png")
for record in network_logger.records:
    quantized = "QAT  " if record["quantized"] else "float"
    print(
        f"epoch {record['epoch'] + 1} ({quantized}): train acc {record.get('train_acc', float('nan')):.3f}, "
        f"val acc {record.get('val_acc', float('nan')):.3f}, "
        f"val acc quantized {record.get('val_acc_quantized', float('nan')):.3f}"
    )
show_image(perf_log_png)

# %% [markdown]
# ## 3. Quantize and test
#
# After training the network runs the quantized forward. `trainer.test`
# reports two accuracies on the test split (cut by `limit_batches` like every
# other split): `test_acc` with the accelerator's integer arithmetic and
# `test_acc_float` with the same weights in float arithmetic.

# %%
[test_result] = trainer.test(model, datamodule=data_module)
quantized_test_acc = test_result["test_acc"]
print(f"test accuracy: quantized {100 * quantized_test_acc:.2f}%, float {100 * test_result['test_acc_float']:.2f}%")
print(f"chance level: {100 / data_module.num_classes:.0f}%")

# %% [markdown]
# During and after QAT the quantized forward rounds the weights on the fly,
# and the stored float weights are not rounded. `quantize_weights` is the
# post-training quantization (PTQ) step: it rounds every weight to the
# `Q(wl, fl)` grid in place (round half to even, then saturate) and reports
# the weights that saturated. Training ends with it by itself when no QAT
# epochs are configured (`qat_epochs: 0`).
#
# Applied to a copy of the trained model it changes no test result, because
# the quantized forward saw the same words. It does make the stored weights
# exact multiples of the weight LSB, as the NIR file and the accelerator will
# hold them.

# %%
from ecs_train.quantization import quantize_weights

ptq_model = copy.deepcopy(model)
weight_format = quant_cfg.weight_format
ptq_report = quantize_weights(ptq_model.network, weight_format.wl, weight_format.fl)
for layer in ptq_report.layers:
    print(
        f"{layer.name}: {layer.num_weights} weights, {layer.num_saturated} saturated, "
        f"{layer.num_zero} rounded to 0, largest magnitude {layer.max_abs:.3f}"
    )
linear_weights = [
    layer.weight.detach().numpy() for layer in ptq_model.network.layers if isinstance(layer, torch.nn.Linear)
]
on_grid = all(np.all(weights * 2**weight_format.fl % 1 == 0) for weights in linear_weights)
print(f"every weight a multiple of 2**-{weight_format.fl}: {on_grid}")
[ptq_result] = trainer.test(ptq_model, datamodule=data_module, verbose=False)
print(f"test accuracy after quantize_weights: {100 * ptq_result['test_acc']:.2f}%")

# %% [markdown]
# ## 4. Check the hardware constraints
#
# The accelerator is a grid of identical cores, and each core has four
# limits:
#
# * `num_neurons_core` neuron slots; input neurons, which only relay events,
#   take slots too;
# * `num_synapses_core` synapse entries, one per nonzero weight into a neuron
#   on that core;
# * `num_routes` routing entries, one per pair of a source neuron and a
#   destination core;
# * a table of `num_weights_core` distinct weight values.
#
# Layers never share a core, and a layer that does not fit one core is split
# over several.
#
# `check_constraints(config, accelerator_config)` places the network that the
# config builds, with every synapse present, and returns six values:
# whether single neurons need more than a core has
# (`fan_in_out_pruning_necessary`), whether the network needs pruning to fit
# (`global_pruning_necessary`), the synapses into the hidden layers, and the
# sizes of the input, hidden and output layers.
#
# `from_metadata` combines the hardware config with the quantization formats;
# it also accepts the plain dicts that a NIR file's metadata holds (section 6).

# %%
from ecs_common.hardware_config import from_metadata
from ecs_train.constraints import NeuronCapacityError, check_constraints, constraint_report

accelerator_config = from_metadata(config.hardware_cfg, config.model_cfg.quant_cfg)
(
    fan_in_out_pruning_necessary,
    global_pruning_necessary,
    num_weights_hidden,
    input_dim,
    hidden_features,
    output_dim,
) = check_constraints(config, accelerator_config)
print(f"{input_dim} inputs -> {hidden_features} hidden -> {output_dim} outputs, {num_weights_hidden} hidden synapses")
print(f"fan-in/out pruning necessary: {fan_in_out_pruning_necessary}")
print(f"global pruning necessary: {global_pruning_necessary}")

# %% [markdown]
# The default device (4 cores of 1024 neurons, 65,536 synapses and 4,096
# routes each) fits the network with room to spare. `constraint_report`
# shows the placement of the trained network per layer, per resource and per
# core.

# %%
print(constraint_report(model, accelerator_config))

# %% [markdown]
# **Scenario 2: a smaller device.** On a device of 2 cores with 512 neuron
# slots each, the three layers need three cores, because layers never share
# a core. Pruning removes synapses, not neurons, so it cannot help: the check
# raises `NeuronCapacityError`, whose message lists what would make the
# network fit.

# %%
small_config = config.model_copy(deep=True)
small_config.hardware_cfg["num_cores"] = 2
small_config.hardware_cfg["num_neurons_core"] = 512
try:
    check_constraints(small_config, from_metadata(small_config.hardware_cfg, small_config.model_cfg.quant_cfg))
except NeuronCapacityError as error:
    print(f"{type(error).__name__}: {error}")

# %% [markdown]
# **Scenario 3: too few synapses.** With 16,384 synapse entries per core, one
# core fits only 32 hidden neurons with 512 inputs each, so the hidden layer
# needs 4 cores and the network 6 in all. Removing synapses could make it
# fit, so `global_pruning_necessary` is set, and the logged warning gives the
# number of synapses that must go.

# %%
tight_config = config.model_copy(deep=True)
tight_config.hardware_cfg["num_synapses_core"] = 16384
tight_config.hardware_cfg["num_routes"] = 16384
tight_accelerator_config = from_metadata(tight_config.hardware_cfg, tight_config.model_cfg.quant_cfg)
tight_check = check_constraints(tight_config, tight_accelerator_config)
print(f"fan-in/out pruning necessary: {tight_check.fan_in_out_pruning_necessary}")
print(f"global pruning necessary: {tight_check.global_pruning_necessary}")

# %% [markdown]
# ## 5. Prune and compare with the unpruned network
#
# `prune_model` removes the weights with the smallest magnitudes over the
# whole network (global magnitude pruning), fine-tunes with the pruned
# weights held at zero, and measures the quantized test accuracy before and
# after. `save_pruned_checkpoint` writes the result with its masks; pruned
# weights are exact zeros and create no synapses on the accelerator.
#
# `fit_hardware=True` would instead prune just enough to fit the
# accelerator, for example the device of scenario 3. Here we prune a fixed
# 30%.

# %%
from ecs_train.pruning import (
    evaluate,
    load_pruned_model,
    prune_model,
    save_pruned_checkpoint,
    synapse_sparsity,
    weight_sparsity,
)
from ecs_train.training import FINAL_CHECKPOINT

unpruned_checkpoint = checkpoint_dir / FINAL_CHECKPOINT
pruned_checkpoint = checkpoint_dir / "pruned.ckpt"

to_prune, _ = load_pruned_model(config, unpruned_checkpoint)
pruning = prune_model(
    to_prune,
    data_module,
    accelerator_config,
    sparsity=0.3,
    fine_tune_epochs=FINE_TUNE_EPOCHS,
    limit_batches=LIMIT_BATCHES,
)
save_pruned_checkpoint(to_prune, pruned_checkpoint, pruning.record, force=True)
print(f"pruned to weight sparsity {100 * pruning.record.sparsity:.1f}%, saved {pruned_checkpoint}")

# %% [markdown]
# Both checkpoints now lie on disk. The comparison loads each of them back
# and evaluates it the same way. The columns are the accuracy of the
# quantized network on the whole test split, the fraction of zero weights
# and of zero weight words, the synapses the accelerator stores, and whether
# the network fits the tight device of scenario 3.

# %%
checkpoints = {"unpruned": unpruned_checkpoint, "pruned": pruned_checkpoint}
checkpoint_results = {}
for name, path in checkpoints.items():
    loaded, _ = load_pruned_model(config, path)
    tight = check_constraints(tight_config, tight_accelerator_config, model=loaded)
    checkpoint_results[name] = {
        "test_acc": evaluate(loaded, data_module, "test"),
        "weight_sparsity": weight_sparsity(loaded.network),
        "synapse_sparsity": synapse_sparsity(loaded.network, weight_format),
        "synapses": constraint_report(loaded, accelerator_config).num_synapses,
        "fits_scenario_3": not (tight.global_pruning_necessary or tight.fan_in_out_pruning_necessary),
    }

header = ("checkpoint", "test acc", "weight sparsity", "synapse sparsity", "synapses", "fits scenario 3")
print(f"{header[0]:<10} {header[1]:>9} {header[2]:>16} {header[3]:>17} {header[4]:>9} {header[5]:>16}")
for name, result in checkpoint_results.items():
    print(
        f"{name:<10} {100 * result['test_acc']:>8.2f}% {100 * result['weight_sparsity']:>15.1f}% "
        f"{100 * result['synapse_sparsity']:>16.1f}% {result['synapses']:>9} {str(result['fits_scenario_3']):>16}"
    )

# %% [markdown]
# The synapse sparsity can exceed the weight sparsity: weights that were not
# pruned but round to the zero word create no synapse either.
#
# ## 6. Export to NIR
#
# NIR (the Neuromorphic Intermediate Representation) is the file format
# between training and deployment. `export_nir` writes the pruned network
# with standard NIR nodes (Affine, LIF, LI, ...) and one metadata entry,
# `ecs`. That entry carries everything the deploy side needs: the hardware
# config, the quantization formats, the timestep, the reset mode, the readout
# and where the network came from. Quantized networks export weights that are
# exact multiples of the weight LSB.

# %%
from ecs_common.metadata import Provenance
from ecs_train.nir_export import read_metadata
from ecs_train.utils import export_nir

pruned_model, _ = load_pruned_model(config, pruned_checkpoint)
nir_path = OUTPUT / "network.nir"
metadata = {
    "hardware_cfg": config.hardware_cfg,
    "quant_cfg": config.model_cfg.quant_cfg,
    "dt": network_cfg.dt,
    "reset_mode": network_cfg.reset_mode,
    "readout": network_cfg.readout,
    "provenance": Provenance(dataset=config.data_cfg.name, quant_test_acc=checkpoint_results["pruned"]["test_acc"]),
}
sample_x, sample_y = data_module.test_arrays(1)
export_nir(pruned_model.network, metadata, nir_path, torch.as_tensor(sample_x[0, 0]), overwrite=True)

nir_graph = nir.read(nir_path)
print(f"{nir_path}: nodes {list(nir_graph.nodes)}")
nir_metadata = read_metadata(nir_graph)
print("hardware_cfg from the file:", nir_metadata["hardware_cfg"])
print("quant_cfg from the file:", nir_metadata["quant_cfg"])
print(f"dt {nir_metadata['dt']} s, reset mode {nir_metadata['reset_mode']}, readout {nir_metadata['readout']}")

# %% [markdown]
# ## 7. Deploy: map onto cores and simulate one sample bit-accurately
#
# The deploy side, `ecs-deploy`, runs without PyTorch: on a lab machine it
# needs nothing but the NIR file. `Network` imports the graph, converts every
# parameter to the integer words of the accelerator and places the neurons on
# cores. Left out, the accelerator configuration and the quantization options
# come from the file's metadata. Here they are passed explicitly, built from
# the metadata read back above; other values would override the file's.
#
# The simulation takes an event list: one `(timestep, sample, neuron)`
# record per input spike. `generate_input_events` turns dense frames
# `[T, batch, 2, 16, 16]` into such a list.

# %%
from ecs_common.quant_options import options_from_config
from ecs_deploy.network import Network, generate_input_events

deploy_accelerator_config = from_metadata(nir_metadata["hardware_cfg"], nir_metadata["quant_cfg"])
quant_options = options_from_config(nir_metadata["quant_cfg"])
network = Network(nir_graph, deploy_accelerator_config, quant_options)
print(network)
print(f"latency: {network.latency} steps, state format {network.state_format}")

frames = sample_x.transpose(1, 0, 2, 3, 4)  # [1, T, 2, 16, 16] -> [T, 1, 2, 16, 16]
events = generate_input_events(frames, network.input_shape)
num_input_steps = frames.shape[0]
print(f"sample 0 (label {sample_y[0]}): {len(events)} input events over {num_input_steps} steps")

# %% [markdown]
# The accelerator pipelines its work: each neuron layer adds one step and the
# core pipeline one more, so with two neuron layers the output at step
# `t + 3` reflects the input of step `t`. To see the response to every input
# step, the simulation runs `T + latency` steps. `simulate` returns, for every
# step, the output neurons' membrane states as fixed-point values;
# `to_float()` turns a word into its value in the state format.

# %%
num_timesteps = num_input_steps + network.latency
deploy_states = network.simulate(events, num_timesteps)
deploy_values = np.array([[value.to_float() for value in step] for step in deploy_states])
deploy_words = np.array([[int(value) for value in step] for step in deploy_states])
print(f"simulated {len(deploy_states)} steps x {len(deploy_states[0])} output neurons")
print(f"deploy-side prediction: {network.predict(deploy_states)}")

# %% [markdown]
# The training side computes the same integer arithmetic without the
# pipeline delay: its output state at step `t` reflects the input of step
# `t`. Shifting the deploy-side states by the latency aligns the two, and
# they must agree word for word.

# %%
with torch.no_grad():
    record = pruned_model.network.run(torch.as_tensor(sample_x))
training_words = record.words[:, 0].numpy()  # [T, outputs] state-format words
training_values = training_words * network.state_format.lsb
aligned_words = deploy_words[network.latency : network.latency + num_input_steps]
mismatches = int(np.count_nonzero(aligned_words != training_words))
print(f"training-side prediction: {int(pruned_model.network.scores(record.states).argmax())}")
print(f"bit-exact comparison: {mismatches} mismatches in {training_words.size} output states")
print(f"largest difference: {np.abs(deploy_values[network.latency :] - training_values).max()} (state units)")

figure, axis = plt.subplots(figsize=(8, 4))
steps = np.arange(num_timesteps)
for neuron in range(training_values.shape[1]):
    (line,) = axis.plot(steps[network.latency :], training_values[:, neuron], linewidth=2, alpha=0.5)
    axis.plot(steps, deploy_values[:, neuron], "x", color=line.get_color(), markersize=4)
axis.axvline(network.latency, color="grey", linestyle="--", linewidth=1)
axis.set_xlabel("accelerator step")
axis.set_ylabel("output membrane state")
axis.set_title(f"Output neurons, sample of class {sample_y[0]}: training side (lines) vs deploy side (x)")
figure.tight_layout()
states_png = OUTPUT / "deploy_vs_training.png"
figure.savefig(states_png, dpi=100)
plt.close(figure)
show_image(states_png)

# %% [markdown]
# ## 8. Memory files and utilization
#
# `generate_mem_files` writes the accelerator's memory image: per core a
# neuron file, a synapse file, a weight table and a routing table, each in
# `$readmemh` hex format, plus `manifest.json` with the word layouts and a
# sha256 per file. `print_util=True` prints how much of each core's resources
# the network uses. docs/memory-files.md describes the format.

# %%
memfiles_dir = OUTPUT / "memfiles"
manifest_path = network.generate_mem_files(memfiles_dir, print_util=True, force=True)
print(f"wrote {len(list(memfiles_dir.glob('*.mem')))} memory files and {manifest_path}")

# %% [markdown]
# ## 9. Test vectors for the FPGA
#
# The FPGA test bench needs input samples and the outputs the accelerator must
# produce for them. The two sides each write their part:
#
# * `training_export` (ecs-train) writes, per checkpoint, the NIR file, the
#   first test samples (`samples.npz`) and the quantized network's output
#   states and spike counts for them (`expected.npz`);
# * `deployment_export` (ecs-deploy) simulates those samples, compares the
#   simulation with `expected.npz`, and writes the memory files and one
#   test-bench file per sample (`testbench/`) next to them. It prints the
#   largest error and the mean squared error per checkpoint, both in state
#   LSBs.

# %%
from ecs_deploy.export import deployment_export
from ecs_train.export import training_export

vectors_dir = OUTPUT / "test_vectors"
vector_folders = training_export(
    ROOT / "config" / "digits_feed_forward.yaml",
    num_samples=NUM_VECTORS,
    checkpoints=checkpoints,
    output_dir=vectors_dir,
    force=True,
)
comparisons = deployment_export("digits", vectors_dir=vectors_dir, force=True)
for name, comparison in comparisons.items():
    print(f"{name}: bit-exact {comparison.exact}, {comparison.output_mismatches} mismatched output states")

# %% [markdown]
# ## 10. Bundle and transfer to the lab host
#
# `create_bundle` packs the memory files, the test vectors and the NIR file
# of the pruned network into one folder with a `MANIFEST.json`, a
# `SHA256SUMS` file and a README for the lab. `verify_bundle` checks every
# checksum again.

# %%
from ecs_deploy.bundle import create_bundle, verify_bundle

pruned_folder = vector_folders["pruned"]
bundle_path = create_bundle(
    [
        pruned_folder / "memfiles",
        pruned_folder / "testbench",
        pruned_folder / "samples.npz",
        pruned_folder / "expected.npz",
    ],
    OUTPUT / "bundle" / "digits_pruned",
    nir_path=pruned_folder / "network.nir",
    force=True,
)
verification = verify_bundle(bundle_path)
print(f"bundle {bundle_path}: {len(verification.files)} files, {verification.total_bytes} bytes, verified")
print((bundle_path / "SHA256SUMS").read_text().splitlines()[0], "...")

# %% [markdown]
# `transfer_files` copies the bundle to the FPGA host with the system's
# OpenSSH client, then runs `sha256sum -c SHA256SUMS` there. ssh never
# prompts: it needs a key that the host accepts and the host's key in a
# known_hosts file. docs/transfer.md explains the one-time setup of the lab
# host.
#
# The lab host does not exist in this environment, so the cell below only
# shows the call, unless `ECS_TUTORIAL_SSH_HOST` names a host: then it
# transfers the bundle there.

# %%
from ecs_deploy.transfer import transfer_files

ssh_host = os.environ.get("ECS_TUTORIAL_SSH_HOST")
ssh_options = {
    "user": os.environ.get("ECS_TUTORIAL_SSH_USER", "lab"),
    "dest": os.environ.get("ECS_TUTORIAL_SSH_DEST", "bundles/digits_pruned"),
    "port": int(os.environ.get("ECS_TUTORIAL_SSH_PORT", 22)),
    "identity_file": os.environ.get("ECS_TUTORIAL_SSH_IDENTITY"),
    "known_hosts_file": os.environ.get("ECS_TUTORIAL_SSH_KNOWN_HOSTS"),
}
if ssh_host:
    transfer_report = transfer_files(bundle_path, ssh_host, force=True, **ssh_options)
    print(
        f"sent {len(transfer_report.files_sent)} files ({transfer_report.bytes_sent} bytes) to "
        f"{ssh_host}:{transfer_report.dest} in {transfer_report.seconds:.2f} s; "
        f"{len(transfer_report.verification.checked)} files verified on the host"
    )
else:
    arguments = ", ".join(f"{key}={value!r}" for key, value in ssh_options.items())
    print("ECS_TUTORIAL_SSH_HOST is not set, so no transfer. With a lab host the call is:")
    print(f"transfer_files({str(bundle_path)!r}, 'fpga-host', {arguments}, force=True)")

# %% [markdown]
# ## Summary

# %%
print(f"quantized test accuracy after training: {100 * quantized_test_acc:.2f}%")
for name, result in checkpoint_results.items():
    print(
        f"{name}: quantized test accuracy {100 * result['test_acc']:.2f}%, "
        f"weight sparsity {100 * result['weight_sparsity']:.1f}%, {result['synapses']} synapses"
    )
print(f"one-sample simulation: {mismatches} mismatches against the training side")
print(f"outputs in {OUTPUT}")
print(f"total time {time.perf_counter() - started:.0f} s")
