"""Bundle transfer to the FPGA host with the system OpenSSH client, and checksum verification on the far side."""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, cast

from ecs_deploy.bundle import CHECKSUMS_NAME, hash_file, open_bundle, parse_checksums, verify_bundle_folder
from ecs_deploy.errors import (
    AuthenticationError,
    HostKeyError,
    HostUnreachableError,
    RemoteChecksumError,
    RemoteCommandError,
    RemoteDestinationError,
    TransferError,
)

logger = logging.getLogger(__name__)

# Called after each chunk with the payload bytes sent so far, the total and the file being sent.
ProgressCallback = Callable[[int, int, str], None]

# Exit codes of the remote scripts below. ssh itself exits with 255 when it fails.
_SSH_FAILED = 255
_EXIT_CANNOT_CREATE = 41
_EXIT_EXISTS = 42
_EXIT_EXTRACT_FAILED = 43
_EXIT_RENAME_FAILED = 44
_EXIT_UNSAFE_DEST = 45
_EXIT_DEST_NOT_FOUND = 50
_EXIT_NO_CHECKSUMS = 51
_EXIT_NO_SHA256SUM = 52
_EXIT_COMMAND_NOT_FOUND = 127

# Destinations that --force must never replace. Paths with "." or ".." parts are rejected as well, and the
# remote scripts reject the user's home folder.
_UNSAFE_DESTINATIONS = frozenset({"", "/", "~"})


@dataclass(frozen=True)
class RemoteVerification:
    """Outcome of ``sha256sum -c SHA256SUMS`` in the destination folder on the FPGA host.

    ``checked`` lists the files that matched; ``mismatched`` and ``missing``
    the files that did not, by bundle-relative path. ``output`` is the raw
    standard output of the remote command.
    """

    ok: bool
    checked: tuple[str, ...]
    mismatched: tuple[str, ...]
    missing: tuple[str, ...]
    seconds: float
    output: str


@dataclass(frozen=True)
class TransferReport:
    """Result of :func:`transfer_files`.

    ``bytes_sent`` counts file contents, not the tar headers around them.
    ``seconds`` is the wall-clock time of the copy alone, because the
    verification records its own time.
    """

    host: str
    user: str
    port: int
    dest: str
    files_sent: tuple[str, ...]
    bytes_sent: int
    seconds: float
    verification: RemoteVerification


@dataclass(frozen=True)
class _Target:
    """An SSH destination and the client options that reach it."""

    host: str
    user: str
    port: int
    identity_file: Path | None
    known_hosts_file: Path | None
    timeout: float

    @property
    def known_hosts_name(self) -> str:
        """Host name as OpenSSH writes it in known_hosts: ``[host]:port`` for ports other than 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def known_hosts_display(self) -> str:
        return str(self.known_hosts_file) if self.known_hosts_file is not None else "~/.ssh/known_hosts"

    def ssh_command(self, remote_command: str) -> list[str]:
        """Return the argument list that runs ``remote_command`` on the host without ever prompting."""
        ssh = shutil.which("ssh")
        if ssh is None:
            raise TransferError(
                "OpenSSH client `ssh` not found on PATH; install it (Debian and Ubuntu: apt-get install openssh-client)"
            )

        seconds = max(1, round(self.timeout))
        command = [
            ssh,
            "-T",
            "-e",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"ConnectTimeout={seconds}",
            "-o",
            f"ServerAliveInterval={max(1, seconds // 3)}",
            "-o",
            "ServerAliveCountMax=3",
            "-p",
            str(self.port),
            "-l",
            self.user,
        ]
        if self.identity_file is not None:
            command += ["-i", str(self.identity_file), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts_file is not None:
            command += ["-o", f"UserKnownHostsFile={self.known_hosts_file}"]
        return [*command, "--", self.host, remote_command]


def transfer_files(
    bundle: str | os.PathLike[str],
    host: str,
    user: str,
    dest: str,
    port: int = 22,
    identity_file: str | os.PathLike[str] | None = None,
    known_hosts_file: str | os.PathLike[str] | None = None,
    timeout: float = 30,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> TransferReport:
    """Copy a bundle into the folder ``dest`` on ``host`` over SSH, then check its checksums there.

    The bundle is a folder, or a .tar.gz archive that is unpacked locally
    first. It is verified locally and streamed as tar over one ``ssh``
    connection into a temporary folder next to ``dest``, which is then renamed
    to ``dest``. A second connection runs ``sha256sum -c SHA256SUMS`` there.
    Host keys are checked strictly against ``known_hosts_file`` (default
    ``~/.ssh/known_hosts``), and ssh never prompts.

    ``dest`` is a path on the host, relative to the user's home folder unless
    absolute, and a leading ``~/`` is expanded there. An existing non-empty
    ``dest`` is replaced only with ``force``.

    ``timeout`` (seconds) bounds the TCP connect and SSH handshake; once
    connected, a host that stops answering keepalives for about as long ends
    the transfer. The far side needs a POSIX shell, tar and sha256sum
    (GNU coreutils or busybox).

    Raises:
        BundleError: the local bundle is missing or fails verification.
        HostUnreachableError, HostKeyError, AuthenticationError: ssh could not connect.
        RemoteDestinationError: ``dest`` cannot be created, or exists and ``force`` is false.
        RemoteCommandError: tar, sha256sum or mv is missing or failed on the host.
        RemoteChecksumError: files on the host differ from SHA256SUMS.
    """
    target = _make_target(host, user, port, identity_file, known_hosts_file, timeout)
    remote_dest = _check_dest(dest)

    with open_bundle(bundle) as bundle_dir:
        local = verify_bundle_folder(bundle_dir, display_path=Path(bundle))
        files = [CHECKSUMS_NAME, "MANIFEST.json", *(entry.path for entry in local.files)]
        total = sum((bundle_dir / relative).stat().st_size for relative in files)

        logger.info(
            "Sending bundle %s (%d files, %d bytes) to %s@%s:%s port %d",
            bundle,
            len(files),
            total,
            user,
            host,
            remote_dest,
            port,
        )
        started = time.monotonic()
        _upload(bundle_dir, files, total, target, remote_dest, force, progress)
        seconds = time.monotonic() - started
        logger.info("Sent %d bytes to %s in %.2f s", total, host, seconds)

        verification = _verify(bundle_dir, target, remote_dest)

    return TransferReport(
        host=host,
        user=user,
        port=port,
        dest=remote_dest,
        files_sent=tuple(files),
        bytes_sent=total,
        seconds=seconds,
        verification=verification,
    )


def verify_remote(
    bundle: str | os.PathLike[str],
    host: str,
    user: str,
    dest: str,
    port: int = 22,
    identity_file: str | os.PathLike[str] | None = None,
    known_hosts_file: str | os.PathLike[str] | None = None,
    timeout: float = 30,
) -> RemoteVerification:
    """Run ``sha256sum -c SHA256SUMS`` in ``dest`` on ``host`` and compare the result with the local bundle.

    The remote SHA256SUMS must itself equal the local one, so a file cannot
    pass because its line there was edited.

    Raises:
        RemoteChecksumError: a file on the host is changed or missing; the message names it.
        RemoteDestinationError: ``dest`` or its SHA256SUMS was not found.
        HostUnreachableError, HostKeyError, AuthenticationError, RemoteCommandError: as in :func:`transfer_files`.
    """
    target = _make_target(host, user, port, identity_file, known_hosts_file, timeout)
    remote_dest = _check_dest(dest)
    with open_bundle(bundle) as bundle_dir:
        return _verify(bundle_dir, target, remote_dest)


# --- argument checks -------------------------------------------------------------------------------------


def _make_target(
    host: str,
    user: str,
    port: int,
    identity_file: str | os.PathLike[str] | None,
    known_hosts_file: str | os.PathLike[str] | None,
    timeout: float,
) -> _Target:
    for label, value in (("host", host), ("user", user)):
        if not value or value.startswith("-") or any(char.isspace() or ord(char) < 32 for char in value):
            raise TransferError(
                f"invalid {label} {value!r}: it must be non-empty, must not start with '-' and must not "
                f"contain spaces or control characters"
            )
    if not 1 <= port <= 65535:
        raise TransferError(f"invalid SSH port {port}: it must be between 1 and 65535")
    if timeout <= 0:
        raise TransferError(f"invalid timeout {timeout} s: it must be positive")

    identity = Path(identity_file).expanduser() if identity_file is not None else None
    if identity is not None and not identity.is_file():
        raise TransferError(f"SSH private key {str(identity)!r} not found; check the --identity path")
    known_hosts = Path(known_hosts_file).expanduser() if known_hosts_file is not None else None
    if known_hosts is not None and not known_hosts.is_file():
        raise TransferError(
            f"known-hosts file {str(known_hosts)!r} not found; create it with ssh-keyscan (see docs/transfer.md)"
        )
    return _Target(host, user, port, identity, known_hosts, timeout)


def _check_dest(dest: str) -> str:
    """Return ``dest`` without trailing slashes, rejecting paths that are unsafe to replace or to quote."""
    if any(char in dest for char in "\n\r\0"):
        raise TransferError(f"invalid destination {dest!r}: it contains a line break or NUL")
    stripped = dest.rstrip("/") or "/"
    if stripped.startswith("-"):
        raise TransferError(f"invalid destination {dest!r}: it must not start with '-'; prefix it with ./")
    if stripped in _UNSAFE_DESTINATIONS or any(part in (".", "..") for part in stripped.split("/")):
        raise TransferError(
            f"invalid destination {dest!r}: give a folder of its own for the bundle, such as ~/bundles/net1"
        )
    return stripped


# --- upload ----------------------------------------------------------------------------------------------

# Both scripts run under `sh -c SCRIPT ecs-transfer DEST [FORCE]`, so $1 is the destination.
_EXPAND_DEST = r"""
dest=$1
case $dest in "~/"*) dest=$HOME/${dest#"~/"};; esac
case $dest in "$HOME"|"$HOME/") exit 45;; esac
"""

_UPLOAD_SCRIPT = (
    _EXPAND_DEST
    + r"""
force=$2
if [ -e "$dest" ] && [ "$force" != 1 ]; then
  if [ ! -d "$dest" ] || [ -n "$(ls -A "$dest")" ]; then
    echo "$dest exists and is not empty" >&2
    exit 42
  fi
fi
case $dest in */*) parent=${dest%/*}; [ -n "$parent" ] || parent=/;; *) parent=.;; esac
mkdir -p "$parent" || exit 41
tmp=$dest.partial.$$
mkdir "$tmp" || exit 41
if ! tar -xf - -C "$tmp"; then rm -rf "$tmp"; exit 43; fi
if [ -e "$dest" ]; then
  old=$dest.old.$$
  if ! mv "$dest" "$old"; then rm -rf "$tmp"; exit 44; fi
  if ! mv "$tmp" "$dest"; then mv "$old" "$dest"; rm -rf "$tmp"; exit 44; fi
  rm -rf "$old"
else
  if ! mv "$tmp" "$dest"; then rm -rf "$tmp"; exit 44; fi
fi
"""
)


def _upload(
    bundle_dir: Path,
    files: Sequence[str],
    total: int,
    target: _Target,
    dest: str,
    force: bool,
    progress: ProgressCallback | None,
) -> None:
    remote = f"sh -c {shlex.quote(_UPLOAD_SCRIPT)} ecs-transfer {shlex.quote(dest)} {1 if force else 0}"
    command = target.ssh_command(remote)
    logger.debug("Running %s", shlex.join(command[:-1]))

    with tempfile.TemporaryFile() as stderr_file:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr_file)
        stdin = cast(IO[bytes], process.stdin)
        pipe_closed = False
        try:
            _write_tar(stdin, bundle_dir, files, total, progress)
        except BrokenPipeError:
            pipe_closed = True
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pipe_closed = True
            returncode = process.wait()
        stderr_file.seek(0)
        stderr = stderr_file.read().decode("utf-8", errors="replace")

    if returncode != 0:
        raise _upload_error(returncode, stderr, target, dest)
    if pipe_closed:
        raise RemoteCommandError(
            f"the transfer to {target.host} stopped: the far side closed the connection before all data "
            f"arrived ({_last_line(stderr) or 'no message'}); run the transfer again"
        )


def _write_tar(
    stream: IO[bytes], bundle_dir: Path, files: Sequence[str], total: int, progress: ProgressCallback | None
) -> None:
    """Write ``files`` as an uncompressed tar stream, reporting each chunk to ``progress``."""
    sent = 0
    mtime = int(time.time())
    folders_written: set[str] = set()

    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for relative in files:
            for folder in reversed(PurePosixPath(relative).parents[:-1]):
                if str(folder) not in folders_written:
                    info = tarfile.TarInfo(str(folder))
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
                    tar.addfile(info)
                    folders_written.add(str(folder))

            path = bundle_dir / relative
            info = tarfile.TarInfo(relative)
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, mtime

            def report(chunk: int, relative: str = relative) -> None:
                nonlocal sent
                sent += chunk
                if progress is not None:
                    progress(sent, total, relative)

            with path.open("rb") as reader:
                tar.addfile(info, _ProgressReader(reader, report))


class _ProgressReader:
    """A read-only file wrapper that reports the size of every chunk read."""

    def __init__(self, reader: IO[bytes], on_chunk: Callable[[int], None]) -> None:
        self._reader = reader
        self._on_chunk = on_chunk

    def read(self, size: int = -1) -> bytes:
        chunk = self._reader.read(size)
        self._on_chunk(len(chunk))
        return chunk


def _upload_error(returncode: int, stderr: str, target: _Target, dest: str) -> TransferError:
    where = f"{target.user}@{target.host}:{dest}"
    detail = _last_line(stderr) or "no message"
    if returncode == _SSH_FAILED:
        return _ssh_error(stderr, target)
    if returncode == _EXIT_EXISTS:
        return RemoteDestinationError(
            f"destination {where} exists and is not empty; choose another --dest, or pass --force to replace it"
        )
    if returncode == _EXIT_CANNOT_CREATE:
        return RemoteDestinationError(
            f"destination {where} cannot be created or is not writable ({detail}); choose a --dest that "
            f"{target.user} may write to, or fix its permissions on the host"
        )
    if returncode == _EXIT_UNSAFE_DEST:
        return RemoteDestinationError(
            f"destination {where} is the home folder; give a folder of its own for the bundle"
        )
    if returncode == _EXIT_EXTRACT_FAILED:
        return RemoteCommandError(
            f"unpacking the bundle into {where} failed ({detail}); check free space on the host (df -h) and run again"
        )
    if returncode == _EXIT_RENAME_FAILED:
        return RemoteCommandError(f"renaming the uploaded bundle to {where} failed ({detail}); check its permissions")
    if returncode == _EXIT_COMMAND_NOT_FOUND:
        return RemoteCommandError(
            f"a command the transfer needs is missing on {target.host} ({detail}); install tar there"
        )
    return RemoteCommandError(f"the upload to {where} failed with exit code {returncode} ({detail})")


# --- far-side verification -------------------------------------------------------------------------------

_VERIFY_SCRIPT = (
    _EXPAND_DEST
    + r"""
LC_ALL=C
export LC_ALL
cd "$dest" 2>/dev/null || exit 50
[ -f SHA256SUMS ] || exit 51
command -v sha256sum >/dev/null 2>&1 || exit 52
sha256sum SHA256SUMS || exit 52
echo "--- sha256sum -c"
sha256sum -c SHA256SUMS
"""
)

_CHECK_LINE = re.compile(r"^(?P<path>.+): (?P<status>OK|FAILED open or read|FAILED)$")


def _verify(bundle_dir: Path, target: _Target, dest: str) -> RemoteVerification:
    local_sums_text = (bundle_dir / CHECKSUMS_NAME).read_text(encoding="utf-8")
    expected = parse_checksums(local_sums_text)
    local_sums_digest = hash_file(bundle_dir / CHECKSUMS_NAME).sha256

    remote = f"sh -c {shlex.quote(_VERIFY_SCRIPT)} ecs-transfer {shlex.quote(dest)}"
    started = time.monotonic()
    result = subprocess.run(target.ssh_command(remote), stdin=subprocess.DEVNULL, capture_output=True, check=False)
    seconds = time.monotonic() - started
    stdout = result.stdout.decode("utf-8", errors="replace")
    stderr = result.stderr.decode("utf-8", errors="replace")

    where = f"{target.user}@{target.host}:{dest}"
    if result.returncode == _SSH_FAILED:
        raise _ssh_error(stderr, target)
    if result.returncode == _EXIT_DEST_NOT_FOUND:
        raise RemoteDestinationError(f"destination {where} not found; transfer the bundle first")
    if result.returncode == _EXIT_NO_CHECKSUMS:
        raise RemoteDestinationError(f"{where} has no {CHECKSUMS_NAME}; transfer the bundle again")
    if result.returncode == _EXIT_NO_SHA256SUM:
        raise RemoteCommandError(
            f"sha256sum is missing or failed on {target.host} ({_last_line(stderr) or 'no message'}); "
            f"install coreutils or busybox there"
        )
    if result.returncode == _EXIT_UNSAFE_DEST:
        raise RemoteDestinationError(f"destination {where} is the home folder; give the bundle's own folder")
    if result.returncode not in (0, 1) or "--- sha256sum -c" not in stdout:
        raise RemoteCommandError(
            f"checking checksums in {where} failed with exit code {result.returncode} "
            f"({_last_line(stderr) or 'no message'})"
        )

    verification = _parse_check_output(stdout, expected, local_sums_digest, seconds)
    if not verification.ok:
        raise RemoteChecksumError(_describe_mismatch(verification, where), verification=verification)
    logger.info("Verified %d files in %s", len(verification.checked), where)
    return verification


def _parse_check_output(
    stdout: str, expected: dict[str, str], local_sums_digest: str, seconds: float
) -> RemoteVerification:
    digest_part, _, check_part = stdout.partition("--- sha256sum -c\n")
    remote_sums_digest = digest_part.split(maxsplit=1)[0] if digest_part.strip() else ""

    statuses: dict[str, str] = {}
    for line in check_part.splitlines():
        match = _CHECK_LINE.match(line)
        if match:
            statuses[match["path"]] = match["status"]

    checked = tuple(path for path in expected if statuses.get(path) == "OK")
    mismatched = [path for path in expected if statuses.get(path) == "FAILED"]
    missing = [path for path in expected if statuses.get(path) == "FAILED open or read"]
    # A path the remote SHA256SUMS no longer lists was not checked at all.
    unchecked = [path for path in expected if path not in statuses]
    if remote_sums_digest != local_sums_digest:
        mismatched.insert(0, CHECKSUMS_NAME)

    ok = not mismatched and not missing and not unchecked
    return RemoteVerification(
        ok=ok,
        checked=checked,
        mismatched=tuple(mismatched + unchecked),
        missing=tuple(missing),
        seconds=seconds,
        output=stdout,
    )


def _describe_mismatch(verification: RemoteVerification, where: str) -> str:
    parts = []
    if verification.mismatched:
        parts.append(f"changed: {', '.join(verification.mismatched)}")
    if verification.missing:
        parts.append(f"missing: {', '.join(verification.missing)}")
    return (
        f"checksum verification in {where} failed ({'; '.join(parts)}); the copy on the host is damaged, "
        f"so transfer the bundle again with --force and do not load it"
    )


# --- ssh failures ----------------------------------------------------------------------------------------


def _ssh_error(stderr: str, target: _Target) -> TransferError:
    """Turn the standard error of a failed ssh (exit code 255) into one named error with a next step."""
    logger.debug("ssh failed: %s", stderr.strip())
    lowered = stderr.lower()
    endpoint = f"{target.host} port {target.port}"
    keyscan = f"ssh-keyscan{'' if target.port == 22 else f' -p {target.port}'} {target.host}"

    if "remote host identification has changed" in lowered or "has changed and you have requested strict" in lowered:
        return HostKeyError(
            f"host key of {target.known_hosts_name} has CHANGED since it was stored in {target.known_hosts_display}: "
            f"the host was reinstalled, or someone is intercepting the connection. Confirm the new fingerprint on the "
            f"host's console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then remove the old entry with "
            f"`ssh-keygen -R '{target.known_hosts_name}' -f {target.known_hosts_display}` and add the new one "
            f"with `{keyscan} >> {target.known_hosts_display}`",
            changed=True,
        )
    if "host key verification failed" in lowered:
        return HostKeyError(
            f"host key of {target.known_hosts_name} is not in {target.known_hosts_display}, so ssh rejected the "
            f"host (strict host key checking). Add it with `{keyscan} >> {target.known_hosts_display}`, then check "
            f"that `ssh-keygen -lf {target.known_hosts_display}` shows the fingerprint that "
            f"`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints on the host's console",
            changed=False,
        )
    if "connection refused" in lowered:
        return HostUnreachableError(
            f"connection to {endpoint} refused: no SSH server listens there; check --host, --port and that "
            f"sshd runs on the host",
            reason="refused",
        )
    if "timed out" in lowered:
        return HostUnreachableError(
            f"connection to {endpoint} timed out after {target.timeout:g} s; check that the host is powered on "
            f"and reachable from this machine (network, VPN, firewall)",
            reason="timed out",
        )
    if "no route to host" in lowered or "network is unreachable" in lowered:
        return HostUnreachableError(
            f"host {target.host} is unreachable ({_last_line(stderr)}); check the network connection and --host",
            reason="unreachable",
        )
    if "could not resolve hostname" in lowered or "name or service not known" in lowered:
        return HostUnreachableError(
            f"host name {target.host!r} could not be resolved; check its spelling or use the IP address",
            reason="unresolved",
        )
    if "unprotected private key file" in lowered:
        return AuthenticationError(
            f"ssh ignored private key {target.identity_file} because other users can read it; "
            f"run `chmod 600 {target.identity_file}`"
        )
    if "permission denied" in lowered:
        key = str(target.identity_file) if target.identity_file is not None else "your default SSH key"
        return AuthenticationError(
            f"authentication as {target.user!r} on {endpoint} failed ({_last_line(stderr)}); add the public "
            f"half of {key} to ~{target.user}/.ssh/authorized_keys on the host, or pass the right --identity"
        )
    if "connection closed" in lowered or "connection reset" in lowered or "kex_exchange_identification" in lowered:
        return HostUnreachableError(
            f"{endpoint} closed the connection before SSH login ({_last_line(stderr)}); check that the port "
            f"belongs to an SSH server that accepts this client",
            reason="closed",
        )
    return TransferError(f"ssh to {endpoint} failed: {_last_line(stderr) or 'no message'}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
