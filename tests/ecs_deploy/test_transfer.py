"""Tests of bundle transfer over SSH against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nir
import numpy as np
import pytest
from deploy_testing import dense_net
from typer.testing import CliRunner

from ecs_deploy.bundle import create_bundle
from ecs_deploy.transfer import (
    AuthenticationError,
    HostKeyError,
    HostUnreachableError,
    RemoteChecksumError,
    RemoteDestinationError,
    TransferError,
    _Target,
    transfer_files,
    verify_remote,
)

pytestmark = pytest.mark.sshd

SSHD = Path("/usr/sbin/sshd")
SSHD_START_SECONDS = 15


@dataclass(frozen=True)
class SSHServer:
    """A throwaway sshd on 127.0.0.1 and the client files that reach it."""

    port: int
    known_hosts: Path
    identity: Path
    host_public_key: str
    log: Path
    user: str = "root"
    host: str = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on at the moment of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def generate_key(path: Path) -> str:
    """Write an ed25519 key pair without passphrase and return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return Path(f"{path}.pub").read_text().strip()


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SSHD_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with code {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(
        f"sshd did not accept connections on port {port} within {SSHD_START_SECONDS} s:\n{log.read_text()}"
    )


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """Start sshd on a free port of 127.0.0.1 with a throwaway host key that accepts one throwaway client key."""
    missing = [tool for tool in ("ssh", "ssh-keygen") if shutil.which(tool) is None]
    if not SSHD.exists():
        missing.append(str(SSHD))
    if missing:
        pytest.skip(f"OpenSSH is not installed ({', '.join(missing)} missing); apt-get install openssh-server")
    if os.geteuid() != 0:
        pytest.skip("sshd must run as root to log in and to create its privilege separation folder /run/sshd")

    # sshd refuses to start without its privilege separation folder, which only the systemd unit creates.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    root = tmp_path_factory.mktemp("sshd")
    host_key = root / "host_ed25519"
    client_key = root / "client_ed25519"
    host_public_key = generate_key(host_key)
    (root / "authorized_keys").write_text(generate_key(client_key) + "\n")

    log = root / "sshd.log"
    for _attempt in range(3):
        port = free_port()
        config = root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {port}",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {root / 'authorized_keys'}",
                    f"PidFile {root / 'sshd.pid'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        with log.open("ab") as log_stream:
            process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=log_stream)
        try:
            wait_for_port(port, process, log)
            break
        except RuntimeError:
            process.terminate()
            process.wait(timeout=10)
            if _attempt == 2:
                raise
    key_type, key_data = host_public_key.split()[:2]
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_data}\n")

    try:
        yield SSHServer(
            port=port,
            known_hosts=known_hosts,
            identity=client_key,
            host_public_key=f"{key_type} {key_data}",
            log=log,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """Return a small bundle folder: memory files, two test-vector samples and a NIR file."""
    memfiles = tmp_path / "src" / "memfiles"
    memfiles.mkdir(parents=True)
    (memfiles / "manifest.json").write_text('{"format_version": 1}\n')
    (memfiles / "core_000_synapses.hex").write_text("".join(f"{value:04x}\n" for value in range(300)))

    vectors = tmp_path / "src" / "test_vectors"
    vectors.mkdir()
    rng = np.random.default_rng(0)
    for sample in range(2):
        np.savez(
            vectors / f"sample_{sample:03d}.npz", events=rng.integers(0, 2, (20, 64)), expected=rng.normal(size=10)
        )

    nir_file = tmp_path / "src" / "network.nir"
    nir.write(nir_file, dense_net(rng))
    return create_bundle([memfiles, vectors], tmp_path / "bundle", nir_path=nir_file)


def connection(sshd: SSHServer, **overrides: Any) -> dict[str, Any]:
    """Return the keyword arguments that reach ``sshd``, with ``overrides`` applied."""
    arguments: dict[str, Any] = {
        "host": sshd.host,
        "user": sshd.user,
        "port": sshd.port,
        "identity_file": sshd.identity,
        "known_hosts_file": sshd.known_hosts,
        "timeout": 10,
    }
    arguments.update(overrides)
    return arguments


def bundle_files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


# --- successful transfers --------------------------------------------------------------------------------


def test_transfer_copies_and_verifies(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "far" / "net1"
    updates: list[tuple[int, int, str]] = []

    report = transfer_files(bundle, dest=str(dest), progress=lambda *update: updates.append(update), **connection(sshd))

    assert bundle_files(dest) == bundle_files(bundle)
    assert report.verification.ok
    assert set(report.verification.checked) == set(bundle_files(bundle)) - {"SHA256SUMS"}
    assert report.verification.mismatched == ()
    assert report.verification.missing == ()
    assert sorted(report.files_sent) == sorted(bundle_files(bundle))
    assert report.bytes_sent == sum(len(data) for data in bundle_files(bundle).values())
    assert report.seconds > 0
    assert report.dest == str(dest)
    assert updates[-1][0] == report.bytes_sent
    assert updates[-1][1] == report.bytes_sent
    assert not list(dest.parent.glob("*.partial.*"))

    far_side = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dest, capture_output=True, text=True)
    assert far_side.returncode == 0, far_side.stdout + far_side.stderr


def test_keyscan_known_hosts_accepted(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    # The setup steps in docs/transfer.md: ssh-keyscan into a file, then compare fingerprints with ssh-keygen -lf.
    scanned = subprocess.run(
        ["ssh-keyscan", "-p", str(sshd.port), "-t", "ed25519", "127.0.0.1"], capture_output=True, text=True, timeout=30
    )
    known_hosts = tmp_path / "scanned_known_hosts"
    known_hosts.write_text(scanned.stdout)
    listed = subprocess.run(["ssh-keygen", "-lf", str(known_hosts)], capture_output=True, text=True, check=True)
    expected = subprocess.run(
        ["ssh-keygen", "-lf", f"{sshd.identity.parent / 'host_ed25519'}.pub"],
        capture_output=True,
        text=True,
        check=True,
    )

    report = transfer_files(bundle, dest=str(tmp_path / "far"), **connection(sshd, known_hosts_file=known_hosts))

    assert scanned.stdout.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    assert listed.stdout.split()[1] == expected.stdout.split()[1]
    assert report.verification.ok


def test_transfer_of_archive_bundle(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    archive = create_bundle([bundle / "memfiles"], tmp_path / "lab.tar.gz", archive=True)
    dest = tmp_path / "far" / "from_archive"

    report = transfer_files(archive, dest=str(dest), **connection(sshd))

    assert report.verification.ok
    assert (dest / "memfiles" / "core_000_synapses.hex").read_bytes() == (
        bundle / "memfiles" / "core_000_synapses.hex"
    ).read_bytes()
    assert (dest / "MANIFEST.json").is_file()


def test_existing_destination_needs_force(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "far" / "net1"
    transfer_files(bundle, dest=str(dest), **connection(sshd))
    (dest / "stale.txt").write_text("left over from an older bundle")

    with pytest.raises(RemoteDestinationError, match=r"exists and is not empty.*--force"):
        transfer_files(bundle, dest=str(dest), **connection(sshd))
    assert (dest / "stale.txt").exists()

    report = transfer_files(bundle, dest=str(dest), force=True, **connection(sshd))
    assert report.verification.ok
    assert not (dest / "stale.txt").exists()
    assert not [path.name for path in dest.parent.iterdir() if path.name != "net1"]


def test_empty_destination_is_filled(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "far" / "empty"
    dest.mkdir(parents=True)

    report = transfer_files(bundle, dest=str(dest), **connection(sshd))

    assert report.verification.ok
    assert bundle_files(dest) == bundle_files(bundle)


# --- connection failures ---------------------------------------------------------------------------------


def test_unknown_host_key_rejected(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    dest = tmp_path / "far" / "net1"

    with pytest.raises(HostKeyError, match=rf"not in {empty_known_hosts}") as raised:
        transfer_files(bundle, dest=str(dest), **connection(sshd, known_hosts_file=empty_known_hosts))

    assert raised.value.changed is False
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty_known_hosts}" in str(raised.value)
    assert "fingerprint" in str(raised.value)
    assert not dest.exists()


def test_changed_host_key_rejected(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    other_key = generate_key(tmp_path / "impostor_ed25519")
    key_type, key_data = other_key.split()[:2]
    stale_known_hosts = tmp_path / "known_hosts"
    stale_known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {key_type} {key_data}\n")

    with pytest.raises(HostKeyError, match="CHANGED") as raised:
        transfer_files(bundle, dest=str(tmp_path / "far"), **connection(sshd, known_hosts_file=stale_known_hosts))

    assert raised.value.changed is True
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in str(raised.value)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client ssh is not installed")
def test_closed_port_refused_quickly(bundle: Path, tmp_path: Path) -> None:
    # No sshd needed: nothing listens on a port that was free a moment ago.
    port = free_port()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    started = time.monotonic()

    with pytest.raises(HostUnreachableError, match=rf"127\.0\.0\.1 port {port} refused") as raised:
        transfer_files(
            bundle, host="127.0.0.1", user="root", dest=str(tmp_path / "far"), port=port, known_hosts_file=known_hosts
        )

    assert raised.value.reason == "refused"
    assert time.monotonic() - started < 10


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client ssh is not installed")
def test_silent_server_times_out(bundle: Path, tmp_path: Path) -> None:
    # A socket that accepts TCP connections but never sends the SSH banner simulates a hung host.
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()

        with pytest.raises(HostUnreachableError, match=rf"port {port} timed out after 2 s") as raised:
            transfer_files(
                bundle,
                host="127.0.0.1",
                user="root",
                dest=str(tmp_path / "far"),
                port=port,
                known_hosts_file=known_hosts,
                timeout=2,
            )

    assert raised.value.reason == "timed out"
    assert time.monotonic() - started < 20


def test_unauthorized_key_rejected(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger_ed25519"
    generate_key(stranger)

    with pytest.raises(AuthenticationError, match=r"authentication as 'root'.*failed.*authorized_keys"):
        transfer_files(bundle, dest=str(tmp_path / "far"), **connection(sshd, identity_file=stranger))


def test_unprotected_private_key_rejected(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    loose_key = tmp_path / "loose_ed25519"
    shutil.copy(sshd.identity, loose_key)
    loose_key.chmod(0o644)

    with pytest.raises(AuthenticationError, match=rf"chmod 600 {loose_key}"):
        transfer_files(bundle, dest=str(tmp_path / "far"), **connection(sshd, identity_file=loose_key))


def test_unwritable_destination_reported(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")

    with pytest.raises(RemoteDestinationError, match=r"cannot be created or is not writable"):
        transfer_files(bundle, dest=str(blocker / "net1"), **connection(sshd))


# --- far-side verification -------------------------------------------------------------------------------


def test_tampered_file_named(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "far" / "net1"
    transfer_files(bundle, dest=str(dest), **connection(sshd))
    with (dest / "memfiles" / "core_000_synapses.hex").open("a") as stream:
        stream.write("dead\n")

    with pytest.raises(RemoteChecksumError, match=r"changed: memfiles/core_000_synapses\.hex") as raised:
        verify_remote(bundle, dest=str(dest), **connection(sshd))

    verification = raised.value.verification
    assert verification.ok is False
    assert verification.mismatched == ("memfiles/core_000_synapses.hex",)
    assert verification.missing == ()
    assert "network.nir" in verification.checked


def test_deleted_file_named(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "far" / "net1"
    transfer_files(bundle, dest=str(dest), **connection(sshd))
    (dest / "test_vectors" / "sample_001.npz").unlink()

    with pytest.raises(RemoteChecksumError, match=r"missing: test_vectors/sample_001\.npz") as raised:
        verify_remote(bundle, dest=str(dest), **connection(sshd))

    assert raised.value.verification.missing == ("test_vectors/sample_001.npz",)


def test_edited_checksums_detected(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    dest = tmp_path / "far" / "net1"
    transfer_files(bundle, dest=str(dest), **connection(sshd))

    # Tamper with a file and rewrite its SHA256SUMS line to match, so `sha256sum -c` alone passes.
    (dest / "network.nir").write_bytes(b"not the trained network")
    rewritten = subprocess.run(
        ["sha256sum", "network.nir"], cwd=dest, check=True, capture_output=True, text=True
    ).stdout.split()[0]
    lines = (dest / "SHA256SUMS").read_text().splitlines()
    (dest / "SHA256SUMS").write_text(
        "".join((f"{rewritten}  network.nir" if line.endswith("  network.nir") else line) + "\n" for line in lines)
    )

    with pytest.raises(RemoteChecksumError, match=r"changed: SHA256SUMS") as raised:
        verify_remote(bundle, dest=str(dest), **connection(sshd))

    assert "SHA256SUMS" in raised.value.verification.mismatched


def test_home_folder_rejected(sshd: SSHServer, bundle: Path) -> None:
    home = pwd.getpwnam(sshd.user).pw_dir

    with pytest.raises(RemoteDestinationError, match="is the home folder"):
        transfer_files(bundle, dest=home, **connection(sshd))
    with pytest.raises(RemoteDestinationError, match="is the home folder"):
        verify_remote(bundle, dest=home + "/", **connection(sshd))


def test_verify_missing_destination(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(RemoteDestinationError, match=r"not found; transfer the bundle first"):
        verify_remote(bundle, dest=str(tmp_path / "never_sent"), **connection(sshd))


# --- arguments and ssh options (no server needed) --------------------------------------------------------


def test_ssh_options_verify_host_keys(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    target = _Target("fpga-lab", "lab", 2222, tmp_path / "key", known_hosts, 30)

    command = target.ssh_command("true")

    assert "StrictHostKeyChecking=yes" in command
    assert "BatchMode=yes" in command
    assert "ConnectTimeout=30" in command
    assert f"UserKnownHostsFile={known_hosts}" in command
    assert not [option for option in command if "/dev/null" in option]
    assert command[-3:] == ["--", "fpga-lab", "true"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"host": "-oProxyCommand=x"}, r"invalid host"),
        ({"user": "lab user"}, r"invalid user"),
        ({"port": 0}, r"invalid SSH port 0"),
        ({"dest": "/"}, r"invalid destination '/'"),
        ({"dest": "~"}, r"invalid destination '~'"),
        ({"dest": "a/.."}, r"invalid destination 'a/\.\.'"),
        ({"dest": "~/."}, r"invalid destination '~/\.'"),
        ({"dest": "~/"}, r"invalid destination '~/'"),
        ({"dest": "-rf"}, r"must not start with '-'"),
        ({"known_hosts_file": "/nonexistent/known_hosts"}, r"known-hosts file '/nonexistent/known_hosts' not found"),
        ({"identity_file": "/nonexistent/key"}, r"SSH private key '/nonexistent/key' not found"),
    ],
)
def test_invalid_arguments_rejected(bundle: Path, overrides: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"host": "127.0.0.1", "user": "root", "dest": "bundles/net1", "port": 22}
    arguments.update(overrides)

    with pytest.raises(TransferError, match=message):
        transfer_files(bundle, **arguments)


# --- command line ----------------------------------------------------------------------------------------


def test_cli_transfer_reports_success(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    from ecs_deploy.cli import app

    dest = tmp_path / "far" / "cli"
    arguments = ["transfer", str(bundle), "--host", sshd.host, "--user", sshd.user, "--dest", str(dest)]
    arguments += ["--port", str(sshd.port), "--identity", str(sshd.identity), "--known-hosts", str(sshd.known_hosts)]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    assert (dest / "SHA256SUMS").is_file()


def test_cli_transfer_unknown_host_key(sshd: SSHServer, bundle: Path, tmp_path: Path) -> None:
    from ecs_deploy.cli import app

    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    arguments = ["transfer", str(bundle), "--host", sshd.host, "--user", sshd.user, "--dest", str(tmp_path / "x")]
    arguments += ["--port", str(sshd.port), "--identity", str(sshd.identity), "--known-hosts", str(empty_known_hosts)]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "ssh-keyscan" in result.output
    assert result.output.count("error:") == 1
