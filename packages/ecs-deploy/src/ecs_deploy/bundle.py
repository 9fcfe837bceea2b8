"""Deployment bundles: one checksummed folder or .tar.gz archive holding everything the lab loads onto the FPGA."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import h5py

from ecs_deploy.__about__ import __version__
from ecs_deploy.atomic import make_output_folder
from ecs_deploy.errors import (
    BundleError,
    BundleExistsError,
    BundleFormatError,
    BundleVerificationError,
    MemFileError,
    OutputFolderError,
)
from ecs_deploy.memfiles import find_mem_file_sets, verify_mem_files

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "ecs-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
CHECKSUMS_NAME = "SHA256SUMS"
README_NAME = "README.txt"
RESERVED_NAMES = frozenset({MANIFEST_NAME, CHECKSUMS_NAME, README_NAME})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")

# Name of the marker file that another writer puts in every memory-file folder.
MEMORY_FILES_MANIFEST = "manifest.json"
TEST_VECTOR_SUFFIXES = frozenset({".npz", ".npy"})

_CHUNK_BYTES = 1 << 20

# An error message names at most this many files and counts the rest.
_MAX_NAMES_IN_MESSAGE = 10


@dataclass(frozen=True)
class BundleFile:
    """One file of a bundle: its POSIX path relative to the bundle root, size in bytes and SHA-256 hex digest."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BundleVerification:
    """Result of a successful :func:`verify_bundle`: the bundle checked and the files it contains."""

    path: Path
    files: tuple[BundleFile, ...]
    manifest: dict[str, Any] = field(repr=False)

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of the listed files, in bytes."""
        return sum(entry.size for entry in self.files)


def create_bundle(
    source_dirs_or_files: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    nir_path: str | os.PathLike[str] | None = None,
    archive: bool = False,
    force: bool = False,
) -> Path:
    """Pack memory files, test vectors and a NIR file into one checksummed bundle and return its path.

    Each source folder is copied under its own name. Source files and the NIR
    file go to the bundle root. Symbolic links to files are copied as files.
    The bundle gets a MANIFEST.json (every file with size and sha256, the
    format version, creation time and producer version), a SHA256SUMS in
    coreutils format and a README.txt for the lab.

    With ``archive=True`` the bundle is written as a gzip-compressed tar file
    whose single top-level folder is the archive name without its suffix;
    ``out`` must then end in ``.tar.gz`` or ``.tgz``.

    The bundle is built in a temporary folder next to ``out`` and renamed into
    place at the end, so a failure leaves no partial bundle and, with
    ``force``, leaves an existing bundle untouched.

    Raises:
        BundleExistsError: ``out`` exists and ``force`` is false.
        BundleError: a source is missing, two sources share a name, a name is
            reserved or cannot be written to SHA256SUMS, or ``out`` overlaps
            a source.
    """
    out_path = Path(out)
    sources = [Path(source) for source in source_dirs_or_files]
    nir_file = Path(nir_path) if nir_path is not None else None

    if archive and not out_path.name.endswith(ARCHIVE_SUFFIXES):
        raise BundleError(f"archive output {str(out_path)!r} must end in .tar.gz or .tgz; rename it or drop --archive")
    if not sources and nir_file is None:
        raise BundleError("nothing to bundle: give at least one source folder or file, or a NIR file")
    if (out_path.exists() or out_path.is_symlink()) and not force:
        raise BundleExistsError(
            f"bundle output {str(out_path)!r} already exists; pass force=True (--force) to replace it"
        )

    entries = _plan_entries(sources, nir_file)
    _check_no_overlap(entries, out_path)
    _check_mem_file_sets(entries)

    make_output_folder(out_path.parent)
    try:
        work_dir = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".partial", dir=out_path.parent))
    except OSError as error:
        raise OutputFolderError(
            f"cannot write to output folder {str(out_path.parent)!r} ({error.strerror}); choose a writable folder"
        ) from error
    try:
        bundle_name = _archive_stem(out_path.name) if archive else out_path.name
        bundle_dir = work_dir / bundle_name
        bundle_dir.mkdir()

        files = _copy_entries(entries, bundle_dir)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        files.append(_write_text(bundle_dir / README_NAME, _readme_text(bundle_name, created, entries, files)))
        manifest = _manifest(created, entries, files)
        manifest_entry = _write_text(bundle_dir / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
        _write_text(bundle_dir / CHECKSUMS_NAME, format_checksums([*files, manifest_entry]))

        if archive:
            built = work_dir / "bundle.tar.gz"
            _write_archive(bundle_dir, built)
        else:
            built = bundle_dir
        _install(built, out_path, force)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    total = sum(entry.size for entry in files)
    logger.info("Wrote bundle %s: %d files, %d bytes", out_path, len(files) + 2, total)
    return out_path


def verify_bundle(path: str | os.PathLike[str]) -> BundleVerification:
    """Re-hash every file of a bundle folder or archive and check it against MANIFEST.json and SHA256SUMS.

    Raises:
        BundleFormatError: MANIFEST.json or SHA256SUMS is missing, malformed or
            of a newer format version.
        BundleVerificationError: files are missing, extra or changed; the
            message and the attributes name them.
    """
    with open_bundle(path) as bundle_dir:
        return verify_bundle_folder(bundle_dir, display_path=Path(path))


@contextlib.contextmanager
def open_bundle(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield the folder of a bundle, extracting an archive into a temporary folder first.

    Only the bundle's layout is checked here, not its checksums.
    """
    bundle_path = Path(path)
    if bundle_path.is_dir():
        yield bundle_path
        return
    if not bundle_path.exists():
        raise BundleError(f"bundle {str(bundle_path)!r} not found; create it with `ecs-deploy bundle`")
    if not bundle_path.name.endswith(ARCHIVE_SUFFIXES):
        raise BundleError(f"bundle {str(bundle_path)!r} is neither a folder nor a .tar.gz/.tgz archive")

    with tempfile.TemporaryDirectory(prefix="ecs-bundle-") as scratch:
        yield _extract_archive(bundle_path, Path(scratch))


def format_checksums(files: Iterable[BundleFile]) -> str:
    """Return SHA256SUMS text in the format ``sha256sum -c`` reads: digest, two spaces, path."""
    return "".join(f"{entry.sha256}  {entry.path}\n" for entry in sorted(files, key=lambda entry: entry.path))


def parse_checksums(text: str, source: str = CHECKSUMS_NAME) -> dict[str, str]:
    """Parse SHA256SUMS text into a mapping from path to hex digest.

    Raises:
        BundleFormatError: a line is not ``<64 hex digits><space><space or *><path>``.
    """
    checksums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        digest, separator, path = line[:64], line[64:66], line[66:]
        valid_digest = len(digest) == 64 and all(char in "0123456789abcdef" for char in digest.lower())
        if not valid_digest or separator not in ("  ", " *") or not path:
            raise BundleFormatError(f"{source} line {number} is not '<sha256>  <path>': {line!r}; re-create the bundle")
        checksums[path] = digest.lower()
    return checksums


def hash_file(path: Path, on_chunk: Callable[[int], None] | None = None) -> BundleFile:
    """Return the size and SHA-256 digest of a file, with its name as the path."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return BundleFile(path=path.name, size=size, sha256=digest.hexdigest())


# --- planning ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One top-level item of the bundle: where it comes from, its name in the bundle and what it contains."""

    source: Path
    name: str
    role: str


def _plan_entries(sources: list[Path], nir_file: Path | None) -> list[_Entry]:
    entries: list[_Entry] = []

    for source in sources:
        if not source.exists():
            raise BundleError(f"bundle source {str(source)!r} not found; check the path")
        if not (source.is_dir() or source.is_file()):
            raise BundleError(f"bundle source {str(source)!r} is neither a regular file nor a folder")
        entries.append(_Entry(source=source, name=source.resolve().name, role=_guess_role(source)))

    if nir_file is not None:
        if not nir_file.is_file():
            raise BundleError(f"NIR file {str(nir_file)!r} not found; check the --nir path")
        _check_nir_file(nir_file)
        entries.append(_Entry(source=nir_file, name=nir_file.name, role="nir"))

    seen: dict[str, Path] = {}
    for entry in entries:
        if not entry.name:
            raise BundleError(f"bundle source {str(entry.source)!r} has no name to use in the bundle")
        if entry.name in RESERVED_NAMES:
            raise BundleError(
                f"bundle source {str(entry.source)!r} is named {entry.name!r}, which the bundle reserves for "
                f"itself; rename it"
            )
        if entry.name in seen:
            raise BundleError(
                f"bundle sources {str(seen[entry.name])!r} and {str(entry.source)!r} would both be stored as "
                f"{entry.name!r}; rename one of them"
            )
        seen[entry.name] = entry.source
    return entries


def _check_nir_file(path: Path) -> None:
    """Reject a file that is not HDF5 or lacks the ``node/nodes`` group that nir.write puts in every NIR file."""
    try:
        with h5py.File(path, "r") as handle:
            is_graph = "node" in handle and "nodes" in handle["node"]
    except (OSError, KeyError, RuntimeError):
        raise BundleError(
            f"NIR file {str(path)!r} is not a readable HDF5 file; give the .nir file written by nir.write or ecs-train"
        ) from None
    if not is_graph:
        raise BundleError(
            f"NIR file {str(path)!r} is an HDF5 file but not a NIR graph (it has no 'node/nodes' group); "
            f"give the .nir file written by nir.write or ecs-train"
        )


def _guess_role(source: Path) -> str:
    """Return a label for the README: memory_files, test_vectors or other."""
    if source.is_dir():
        if (source / MEMORY_FILES_MANIFEST).is_file():
            return "memory_files"
        if any(path.suffix in TEST_VECTOR_SUFFIXES for path in source.rglob("*")):
            return "test_vectors"
        return "other"
    return "test_vectors" if source.suffix in TEST_VECTOR_SUFFIXES else "other"


def _check_mem_file_sets(entries: list[_Entry]) -> None:
    """Reject a source folder whose memory files no longer match their manifest.json, before anything is copied."""
    for entry in entries:
        if not entry.source.is_dir():
            continue
        for directory in find_mem_file_sets(entry.source):
            try:
                verify_mem_files(directory)
            except MemFileError as error:
                raise BundleError(f"memory files not bundled: {error}") from None


def _check_no_overlap(entries: list[_Entry], out_path: Path) -> None:
    """Reject an output inside a source folder, which would copy itself, or a source inside the output.

    With force, a source inside the output would be deleted along with the old bundle.
    """
    target = out_path.resolve()
    for entry in entries:
        source = entry.source.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise BundleError(
                f"bundle output {str(out_path)!r} overlaps source {str(entry.source)!r}; "
                f"write the bundle outside the source folders"
            )


# --- writing ----------------------------------------------------------------------------------------


def _copy_entries(entries: list[_Entry], bundle_dir: Path) -> list[BundleFile]:
    files: list[BundleFile] = []
    for entry in entries:
        if entry.source.is_dir():
            for source_file, relative in _walk_files(entry.source):
                files.append(_copy_file(source_file, bundle_dir, f"{entry.name}/{relative}"))
        else:
            files.append(_copy_file(entry.source, bundle_dir, entry.name))
    return files


def _walk_files(root: Path) -> Iterator[tuple[Path, str]]:
    """Yield every regular file under ``root`` with its POSIX path relative to ``root``, sorted."""
    for directory, dir_names, file_names in os.walk(root):
        dir_names.sort()
        for name in dir_names:
            if (Path(directory) / name).is_symlink():
                raise BundleError(
                    f"bundle source contains a symbolic link to a folder, {str(Path(directory) / name)!r}; "
                    f"replace it with a copy of the folder"
                )
        for name in sorted(file_names):
            path = Path(directory) / name
            if not path.is_file():
                raise BundleError(f"bundle source {str(path)!r} is not a regular file (a broken link, pipe or socket)")
            yield path, path.relative_to(root).as_posix()


def _copy_file(source: Path, bundle_dir: Path, relative: str) -> BundleFile:
    """Copy one file into the bundle, hashing the bytes as they are written."""
    _check_portable_name(relative, source)

    target = bundle_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(_CHUNK_BYTES):
            writer.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    os.chmod(target, 0o644)
    return BundleFile(path=relative, size=size, sha256=digest.hexdigest())


def _check_portable_name(relative: str, source: Path) -> None:
    # GNU sha256sum writes such names in an escaped form with a leading backslash, which the plain
    # "<digest>  <path>" lines written and parsed here cannot represent, so they are rejected.
    if any(char in relative for char in "\\\n\r"):
        raise BundleError(
            f"file name {str(source)!r} contains a backslash or line break, which SHA256SUMS cannot list "
            f"portably; rename the file"
        )
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(f"file name {str(source)!r} is not valid UTF-8; rename the file") from None


def _write_text(path: Path, text: str) -> BundleFile:
    data = text.encode("utf-8")
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return BundleFile(path=path.name, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def _manifest(created: str, entries: list[_Entry], files: list[BundleFile]) -> dict[str, Any]:
    nir_names = [entry.name for entry in entries if entry.role == "nir"]
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "created": created,
        "producer": {"name": "ecs-deploy", "version": __version__},
        "nir": nir_names[0] if nir_names else None,
        "contents": [{"name": entry.name, "role": entry.role} for entry in entries],
        "files": [
            {"path": entry.path, "size": entry.size, "sha256": entry.sha256}
            for entry in sorted(files, key=lambda entry: entry.path)
        ],
    }


_ROLE_DESCRIPTIONS = {
    "nir": "the network as a NIR graph (HDF5 file)",
    "memory_files": "memory files: one $readmemh hex set per core plus manifest.json",
    "test_vectors": "test vectors: per-sample input events and expected outputs (.npz/.npy)",
    "other": "other files given to the bundle",
}


def _readme_text(bundle_name: str, created: str, entries: list[_Entry], files: list[BundleFile]) -> str:
    lines = [
        f"ECS deployment bundle {bundle_name}",
        f"Written {created} by ecs-deploy {__version__}, bundle format {BUNDLE_FORMAT} version "
        f"{BUNDLE_FORMAT_VERSION}.",
        "",
        "Contents",
        "--------",
    ]
    for entry in entries:
        count = sum(1 for item in files if item.path == entry.name or item.path.startswith(entry.name + "/"))
        suffix = "/" if entry.source.is_dir() else ""
        lines.append(f"  {entry.name}{suffix}  ({count} file{'s' if count != 1 else ''})")
        lines.append(f"      {_ROLE_DESCRIPTIONS[entry.role]}")
    lines += [
        f"  {README_NAME}     this file",
        f"  {MANIFEST_NAME}  every file above with its size in bytes and SHA-256 digest, the format",
        "                 version, the creation time (UTC) and the ecs-deploy version that wrote it",
        f"  {CHECKSUMS_NAME}     SHA-256 digests of every file except itself, in coreutils format",
        "",
        "Verifying the bundle",
        "--------------------",
        "From inside this folder run",
        "",
        f"    sha256sum -c {CHECKSUMS_NAME}",
        "",
        f"Every line must end in OK. On macOS use `shasum -a 256 -c {CHECKSUMS_NAME}`. With ecs-deploy",
        "installed, `ecs-deploy verify-bundle FOLDER` also reports files that are missing from or",
        f"not listed in {MANIFEST_NAME}. A file that fails the check was changed or damaged in transit:",
        "copy the bundle again, and do not load it onto the accelerator.",
        "",
    ]
    return "\n".join(lines)


def _write_archive(bundle_dir: Path, archive_path: Path) -> None:
    """Write ``bundle_dir`` as a .tar.gz whose single top-level folder has the bundle's name."""
    mtime = int(time.time())

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = mtime
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with tarfile.open(archive_path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        tar.add(bundle_dir, arcname=bundle_dir.name, filter=normalize)


def _install(built: Path, out_path: Path, force: bool) -> None:
    """Rename the finished bundle onto ``out_path``, moving an existing output aside first and removing it last."""
    if not (out_path.exists() or out_path.is_symlink()):
        try:
            os.rename(built, out_path)
        except OSError as error:
            raise BundleExistsError(
                f"bundle output {str(out_path)!r} appeared while the bundle was written ({error.strerror}); "
                f"pass --force to replace it"
            ) from None
        return
    if not force:
        raise BundleExistsError(
            f"bundle output {str(out_path)!r} already exists; pass force=True (--force) to replace it"
        )

    if built.is_file() and out_path.is_file() and not out_path.is_symlink():
        os.replace(built, out_path)
        return
    # rename(2) cannot replace a non-empty folder, so the old output is moved aside for a moment.
    aside = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".old", dir=out_path.parent))
    old = aside / "old"
    os.rename(out_path, old)
    try:
        os.rename(built, out_path)
    except OSError:
        os.rename(old, out_path)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


# --- reading ----------------------------------------------------------------------------------------


def _archive_stem(name: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _extract_archive(archive_path: Path, scratch: Path) -> Path:
    """Extract a bundle archive into ``scratch`` and return its top-level folder.

    Only regular files and folders with relative paths inside one top-level
    folder are accepted, so a crafted archive cannot write outside ``scratch``.
    """
    try:
        with tarfile.open(archive_path, "r:*") as tar:
            members = tar.getmembers()
            tops = set()
            for member in members:
                parts = PurePosixPath(member.name).parts
                if not parts or member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                    raise BundleFormatError(
                        f"bundle archive {str(archive_path)!r} contains {member.name!r}, which is not a plain "
                        f"file or folder inside the bundle; re-create the archive with `ecs-deploy bundle --archive`"
                    )
                tops.add(parts[0])
            if len(tops) != 1:
                raise BundleFormatError(
                    f"bundle archive {str(archive_path)!r} must contain exactly one top-level folder, found "
                    f"{sorted(tops)}; re-create it with `ecs-deploy bundle --archive`"
                )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(scratch, members=members, filter="data")
            else:  # Python before 3.10.12 and 3.11.4 has no extraction filters, so the checks above stand in.
                tar.extractall(scratch, members=members)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise BundleFormatError(
            f"bundle archive {str(archive_path)!r} cannot be read ({error}); copy or re-create it"
        ) from None

    top = scratch / tops.pop()
    if not top.is_dir():
        raise BundleFormatError(f"bundle archive {str(archive_path)!r} has no top-level folder; re-create it")
    return top


def verify_bundle_folder(bundle_dir: Path, display_path: Path | None = None) -> BundleVerification:
    """Verify an unpacked bundle folder like :func:`verify_bundle`, naming it ``display_path`` in messages."""
    display_path = bundle_dir if display_path is None else display_path
    manifest = _read_manifest(bundle_dir, display_path)
    listed = _manifest_files(manifest, display_path)

    present = {relative for _, relative in _walk_present(bundle_dir)}
    unlisted_ok = {MANIFEST_NAME, CHECKSUMS_NAME}
    missing = sorted(set(listed) - present)
    if CHECKSUMS_NAME not in present:
        missing.append(CHECKSUMS_NAME)
    extra = sorted(present - set(listed) - unlisted_ok)

    mismatched = []
    for relative, expected in sorted(listed.items()):
        if relative in missing:
            continue
        path = bundle_dir / relative
        if path.is_symlink() or not path.is_file():
            mismatched.append(relative)
            continue
        actual = hash_file(path)
        if actual.size != expected.size or actual.sha256 != expected.sha256:
            mismatched.append(relative)

    disagreeing = []
    if CHECKSUMS_NAME in present:
        disagreeing = _compare_checksums_file(bundle_dir, listed, display_path)
        if disagreeing:
            mismatched.append(CHECKSUMS_NAME)

    if missing or extra or mismatched:
        problems = _describe_problems(missing, extra, mismatched)
        if disagreeing:
            problems += f"; {CHECKSUMS_NAME} disagrees with {MANIFEST_NAME} on {_name_list(disagreeing)}"
        raise BundleVerificationError(
            f"bundle {str(display_path)!r} failed verification: {problems}. "
            f"Copy the bundle again from its source, or re-create it with `ecs-deploy bundle --force`",
            missing=missing,
            extra=extra,
            mismatched=mismatched,
        )
    _verify_inner_mem_files(bundle_dir, display_path)
    logger.info("Verified bundle %s: %d files", display_path, len(listed))
    return BundleVerification(path=display_path, files=tuple(listed[key] for key in sorted(listed)), manifest=manifest)


def _verify_inner_mem_files(bundle_dir: Path, display_path: Path) -> None:
    """Check each memory-file set in the bundle against its own manifest.json, which MANIFEST.json cannot vouch for."""
    for directory in find_mem_file_sets(bundle_dir):
        relative = directory.relative_to(bundle_dir).as_posix()
        try:
            verify_mem_files(directory)
        except MemFileError as error:
            raise BundleVerificationError(
                f"bundle {str(display_path)!r} failed verification: memory files in {relative!r} do not match "
                f"their manifest.json ({error}). Re-create the memory files and the bundle",
                mismatched=[relative],
            ) from None


def _walk_present(bundle_dir: Path) -> Iterator[tuple[Path, str]]:
    """Yield every entry of the bundle except real folders, so that links and pipes also count as extra files."""
    for directory, dir_names, file_names in os.walk(bundle_dir):
        for name in [*file_names, *(name for name in dir_names if (Path(directory) / name).is_symlink())]:
            path = Path(directory) / name
            yield path, path.relative_to(bundle_dir).as_posix()


def _read_manifest(bundle_dir: Path, display_path: Path) -> dict[str, Any]:
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleFormatError(
            f"bundle {str(display_path)!r} has no {MANIFEST_NAME}; it is not an ECS bundle or is incomplete"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleFormatError(
            f"{MANIFEST_NAME} of bundle {str(display_path)!r} is not valid JSON ({error}); re-create the bundle"
        ) from None

    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleFormatError(
            f"{MANIFEST_NAME} of bundle {str(display_path)!r} does not declare format {BUNDLE_FORMAT!r}"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1 or version > BUNDLE_FORMAT_VERSION:
        raise BundleFormatError(
            f"bundle {str(display_path)!r} has format version {version!r}, but ecs-deploy {__version__} reads "
            f"versions 1 to {BUNDLE_FORMAT_VERSION}; upgrade ecs-deploy"
        )
    return manifest


def _manifest_files(manifest: dict[str, Any], display_path: Path) -> dict[str, BundleFile]:
    files: dict[str, BundleFile] = {}
    for item in manifest.get("files", None) or []:
        try:
            entry = BundleFile(path=str(item["path"]), size=int(item["size"]), sha256=str(item["sha256"]).lower())
        except (KeyError, TypeError, ValueError):
            raise BundleFormatError(
                f"{MANIFEST_NAME} of bundle {str(display_path)!r} has an invalid file entry {item!r}; "
                f"re-create the bundle"
            ) from None
        parts = PurePosixPath(entry.path).parts
        if entry.path.startswith("/") or ".." in parts or not parts:
            raise BundleFormatError(
                f"{MANIFEST_NAME} of bundle {str(display_path)!r} lists {entry.path!r}, a path outside the bundle"
            )
        files[entry.path] = entry
    return files


def _compare_checksums_file(bundle_dir: Path, listed: dict[str, BundleFile], display_path: Path) -> list[str]:
    """Return the paths whose SHA256SUMS digest differs from MANIFEST.json's (or, for MANIFEST.json, from its hash)."""
    checksums = parse_checksums(
        (bundle_dir / CHECKSUMS_NAME).read_text(encoding="utf-8"), source=f"{CHECKSUMS_NAME} of {str(display_path)!r}"
    )
    expected = {path: entry.sha256 for path, entry in listed.items()}
    expected[MANIFEST_NAME] = hash_file(bundle_dir / MANIFEST_NAME).sha256

    return [path for path in sorted(set(expected) | set(checksums)) if checksums.get(path) != expected.get(path)]


def _describe_problems(missing: Sequence[str], extra: Sequence[str], mismatched: Sequence[str]) -> str:
    parts = []
    for label, names in (("missing", missing), ("not listed in MANIFEST.json", extra), ("changed", mismatched)):
        if names:
            parts.append(f"{len(names)} {'file' if len(names) == 1 else 'files'} {label} ({_name_list(names)})")
    return "; ".join(parts)


def _name_list(names: Sequence[str]) -> str:
    listed_names = ", ".join(names[:_MAX_NAMES_IN_MESSAGE])
    if len(names) > _MAX_NAMES_IN_MESSAGE:
        listed_names += f" and {len(names) - _MAX_NAMES_IN_MESSAGE} more"
    return listed_names
