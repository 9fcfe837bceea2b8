"""End-to-end runs of the hands-on tutorial, as a script and as a notebook, with tiny training settings."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nir
import pytest

from ecs_common.metadata import read_metadata

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SCRIPT = EXAMPLES / "tutorial.py"
NOTEBOOK = EXAMPLES / "tutorial.ipynb"

# One float epoch of 4 batches (256 samples) already classifies far above chance.
# A fraction of the training set would not do: Lightning rejects a fraction
# that leaves no validation batch, and the validation split has only 3 batches.
TINY_SETTINGS = {
    "ECS_TUTORIAL_EPOCHS": "1",
    "ECS_TUTORIAL_LIMIT_BATCHES": "4",
    "ECS_TUTORIAL_NUM_VECTORS": "4",
}

# Chance level of the 10 digit classes is 10%.
MIN_ACCURACY_PERCENT = 20.0

RUN_TIMEOUT_S = 600
SSHD = Path("/usr/sbin/sshd")
SSHD_START_SECONDS = 15

# Files the tutorial writes, relative to its output folder.
EXPECTED_FILES = (
    "perf_log.png",
    "training/perf_log.json",
    "training/checkpoints/final.ckpt",
    "training/checkpoints/pruned.ckpt",
    "network.nir",
    "deploy_vs_training.png",
    "memfiles/manifest.json",
    "memfiles/core000_neurons.mem",
    "test_vectors/unpruned/network.nir",
    "test_vectors/unpruned/samples.npz",
    "test_vectors/unpruned/expected.npz",
    "test_vectors/pruned/memfiles/manifest.json",
    "test_vectors/pruned/testbench/index.json",
    "bundle/digits_pruned/SHA256SUMS",
    "bundle/digits_pruned/MANIFEST.json",
    "bundle/digits_pruned/network.nir",
)


def check_outputs(text: str, output: Path) -> None:
    """Assert the key lines of a tutorial run's printed output and the files it wrote."""
    accuracy = re.search(r"test accuracy: quantized ([\d.]+)%", text)
    assert accuracy is not None, "the tutorial printed no quantized test accuracy"
    assert float(accuracy.group(1)) > MIN_ACCURACY_PERCENT

    assert "bit-exact comparison: 0 mismatches in 200 output states" in text
    assert "pruned: bit-exact True, 0 mismatched output states" in text
    assert "unpruned: bit-exact True, 0 mismatched output states" in text
    assert "NeuronCapacityError: network does not fit" in text
    assert re.search(r"pruned to weight sparsity 30\.0%", text) is not None

    missing = [name for name in EXPECTED_FILES if not (output / name).is_file()]
    assert not missing, f"the tutorial did not write {missing}"

    metadata = read_metadata(nir.read(output / "network.nir"))
    assert metadata["hardware_cfg"]["num_cores"] == 4
    assert metadata["quant_cfg"]["weight_format"] == {"wl": 8, "fl": 6}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on at the moment of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def generate_key(path: Path) -> str:
    """Write an ed25519 key pair without passphrase and return the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True)
    return Path(f"{path}.pub").read_text().strip()


def sshd_missing() -> str | None:
    """Return why no throwaway sshd can run here, or None when it can."""
    if not SSHD.exists() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "OpenSSH server or client is not installed"
    if os.geteuid() != 0:
        return "sshd must run as root to log in"
    return None


@pytest.fixture
def lab_host(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Start sshd on 127.0.0.1 with throwaway keys and yield the tutorial's SSH settings for it.

    Yields an empty dict where sshd cannot run, so the tutorial skips the transfer.
    """
    reason = sshd_missing()
    if reason is not None:
        yield {}
        return

    # sshd refuses to start without its privilege separation folder, which only the systemd unit creates.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    root = tmp_path / "sshd"
    root.mkdir()
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    key_type, key_data = generate_key(host_key).split()[:2]
    (root / "authorized_keys").write_text(generate_key(client_key) + "\n")
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "UsePAM no\nStrictModes no\n"
    )
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_data}\n")

    log = root / "sshd.log"
    with log.open("wb") as log_stream:
        process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=log_stream)
    try:
        deadline = time.monotonic() + SSHD_START_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited with code {process.returncode}:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not listen on port {port}:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield {
            "ECS_TUTORIAL_SSH_HOST": "127.0.0.1",
            "ECS_TUTORIAL_SSH_USER": "root",
            "ECS_TUTORIAL_SSH_PORT": str(port),
            "ECS_TUTORIAL_SSH_DEST": str(tmp_path / "lab" / "digits_pruned"),
            "ECS_TUTORIAL_SSH_IDENTITY": str(client_key),
            "ECS_TUTORIAL_SSH_KNOWN_HOSTS": str(known_hosts),
        }
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_notebook_matches_script() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_notebook.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_tutorial_script(tmp_path: Path, lab_host: dict[str, str]) -> None:
    output = tmp_path / "tutorial_output"
    environment = {**os.environ, **TINY_SETTINGS, **lab_host, "ECS_TUTORIAL_OUTPUT": str(output)}
    # One QAT epoch and one fine-tuning epoch run the quantization-aware training and fine-tuning paths.
    environment.update(ECS_TUTORIAL_QAT_EPOCHS="1", ECS_TUTORIAL_FINE_TUNE_EPOCHS="1")

    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, f"tutorial failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    check_outputs(result.stdout, output)

    if lab_host:
        assert re.search(r"sent \d+ files .* \d+ files verified on the host", result.stdout) is not None
        bundle = output / "bundle" / "digits_pruned"
        remote = Path(lab_host["ECS_TUTORIAL_SSH_DEST"])
        local_files = sorted(path.relative_to(bundle) for path in bundle.rglob("*") if path.is_file())
        remote_files = sorted(path.relative_to(remote) for path in remote.rglob("*") if path.is_file())
        assert remote_files == local_files
    else:
        assert "ECS_TUTORIAL_SSH_HOST is not set, so no transfer" in result.stdout


@pytest.mark.slow
def test_tutorial_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    output = tmp_path / "tutorial_output"
    # The kernel inherits these; no QAT and no fine-tuning keep the run short and cover the PTQ path.
    settings = {**TINY_SETTINGS, "ECS_TUTORIAL_QAT_EPOCHS": "0", "ECS_TUTORIAL_FINE_TUNE_EPOCHS": "0"}
    for name, value in {**settings, "ECS_TUTORIAL_OUTPUT": str(output)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ECS_TUTORIAL_SSH_HOST", raising=False)

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=RUN_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()

    streams = [
        output_item.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output_item in cell.outputs
        if output_item.output_type == "stream" and output_item.name == "stdout"
    ]
    check_outputs("".join(streams), output)
    images = [
        output_item
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output_item in cell.outputs
        if "image/png" in output_item.get("data", {})
    ]
    assert len(images) == 2, "the notebook should show the performance log and the deploy-side comparison"
    assert "ECS_TUTORIAL_SSH_HOST is not set, so no transfer" in "".join(streams)
