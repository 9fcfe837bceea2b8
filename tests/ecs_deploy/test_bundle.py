"""Tests of deployment bundles: layout, checksums, verification, --force and atomic writes."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from datetime import datetime
from pathlib import Path

import nir
import numpy as np
import pytest
from deploy_testing import dense_net
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import ecs_deploy.bundle as bundle_module
from ecs_deploy.__about__ import __version__
from ecs_deploy.bundle import (
    BUNDLE_FORMAT_VERSION,
    BundleError,
    BundleExistsError,
    BundleFormatError,
    BundleVerificationError,
    create_bundle,
    parse_checksums,
    verify_bundle,
)

requires_sha256sum = pytest.mark.skipif(
    shutil.which("sha256sum") is None, reason="coreutils sha256sum is not installed"
)


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    """Return a memory-file folder, a test-vector folder and a NIR file, as another writer would leave them."""
    memfiles = tmp_path / "src" / "memfiles"
    (memfiles / "core_001").mkdir(parents=True)
    (memfiles / "manifest.json").write_text('{"format_version": 1, "files": {}}\n')
    (memfiles / "core_000_weights.hex").write_text("".join(f"{value:02x}\n" for value in range(256)))
    (memfiles / "core_001" / "routes.hex").write_text("0001\n0002\n")

    vectors = tmp_path / "src" / "test_vectors"
    vectors.mkdir()
    rng = np.random.default_rng(1)
    for sample in range(3):
        np.savez(vectors / f"sample_{sample:03d}.npz", events=rng.integers(0, 2, (10, 16)), expected=rng.normal(size=4))

    nir_file = tmp_path / "src" / "network.nir"
    nir.write(nir_file, dense_net(rng))
    return {"memfiles": memfiles, "vectors": vectors, "nir": nir_file}


def make_bundle(sources: dict[str, Path], out: Path, **options: object) -> Path:
    return create_bundle([sources["memfiles"], sources["vectors"]], out, nir_path=sources["nir"], **options)  # type: ignore[arg-type]


def tree(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Return names of temporary files or folders that a bundle write left behind."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


# --- layout ----------------------------------------------------------------------------------------------


def test_bundle_layout(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "lab" / "net1")

    files = tree(out)
    assert files["network.nir"] == sources["nir"].read_bytes()
    assert files["memfiles/core_001/routes.hex"] == b"0001\n0002\n"
    assert files["memfiles/manifest.json"] == (sources["memfiles"] / "manifest.json").read_bytes()
    assert files["test_vectors/sample_002.npz"] == (sources["vectors"] / "sample_002.npz").read_bytes()
    assert {"MANIFEST.json", "SHA256SUMS", "README.txt"} <= set(files)
    assert len(files) == 3 + 3 + 1 + 3


def test_manifest_lists_every_file(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")
    manifest = json.loads((out / "MANIFEST.json").read_text())

    assert manifest["format"] == "ecs-bundle"
    assert manifest["format_version"] == BUNDLE_FORMAT_VERSION
    assert manifest["producer"] == {"name": "ecs-deploy", "version": __version__}
    assert manifest["nir"] == "network.nir"
    assert datetime.fromisoformat(manifest["created"].replace("Z", "+00:00")).tzinfo is not None
    roles = {item["name"]: item["role"] for item in manifest["contents"]}
    assert roles == {"memfiles": "memory_files", "test_vectors": "test_vectors", "network.nir": "nir"}

    listed = {item["path"]: item for item in manifest["files"]}
    assert set(listed) == set(tree(out)) - {"MANIFEST.json", "SHA256SUMS"}
    for path, item in listed.items():
        data = (out / path).read_bytes()
        assert item["size"] == len(data), path
        assert item["sha256"] == hashlib.sha256(data).hexdigest(), path


def test_checksums_cover_manifest(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")

    checksums = parse_checksums((out / "SHA256SUMS").read_text())

    assert set(checksums) == set(tree(out)) - {"SHA256SUMS"}
    assert checksums["MANIFEST.json"] == hashlib.sha256((out / "MANIFEST.json").read_bytes()).hexdigest()


@requires_sha256sum
def test_sha256sum_accepts_bundle(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")

    result = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == len(tree(out)) - 1


def test_readme_explains_verification(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")

    readme = (out / "README.txt").read_text()

    assert "sha256sum -c SHA256SUMS" in readme
    assert "memfiles/  (3 files)" in readme
    assert "test_vectors/  (3 files)" in readme
    assert "network.nir  (1 file)" in readme
    assert __version__ in readme


def test_archive_has_one_top_folder(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1.tar.gz", archive=True)

    with tarfile.open(out) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "unpacked", filter="data")

    assert {name.split("/")[0] for name in names} == {"net1"}
    assert "net1/SHA256SUMS" in names
    assert verify_bundle(tmp_path / "unpacked" / "net1").total_bytes > 0
    assert verify_bundle(out).files == verify_bundle(tmp_path / "unpacked" / "net1").files


def test_archive_suffix_required(sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"must end in \.tar\.gz or \.tgz"):
        make_bundle(sources, tmp_path / "net1.zip", archive=True)


def test_single_files_go_to_root(sources: dict[str, Path], tmp_path: Path) -> None:
    sample = sources["vectors"] / "sample_000.npz"

    out = create_bundle([sample], tmp_path / "one")

    assert set(tree(out)) == {"sample_000.npz", "MANIFEST.json", "SHA256SUMS", "README.txt"}
    assert json.loads((out / "MANIFEST.json").read_text())["nir"] is None


def test_file_symlink_copied_as_file(sources: dict[str, Path], tmp_path: Path) -> None:
    (sources["memfiles"] / "alias.hex").symlink_to(sources["memfiles"] / "core_000_weights.hex")

    out = make_bundle(sources, tmp_path / "net1")

    assert not (out / "memfiles" / "alias.hex").is_symlink()
    assert (out / "memfiles" / "alias.hex").read_bytes() == (sources["memfiles"] / "core_000_weights.hex").read_bytes()


@settings(max_examples=20)
@given(
    contents=st.dictionaries(
        keys=st.lists(st.text("abcXYZ019_-. ", min_size=1, max_size=8), min_size=1, max_size=3).map(
            lambda parts: "/".join("p" + part for part in parts)
        ),
        values=st.binary(max_size=3000),
        min_size=1,
        max_size=6,
    )
)
def test_random_trees_verify(contents: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("random")
    source = root / "data"
    written: dict[str, bytes] = {}
    for relative, data in contents.items():
        path = source / relative
        # One generated path can be a folder of another, so a path that collides with an earlier one is skipped.
        if any(parent.is_file() for parent in path.parents) or path.is_dir():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written[f"data/{relative}"] = data

    out = create_bundle([source], root / "bundle")
    result = verify_bundle(out)

    assert {entry.path for entry in result.files} == set(written) | {"README.txt"}
    for relative, data in written.items():
        assert (out / relative).read_bytes() == data


# --- rejected inputs -------------------------------------------------------------------------------------


def test_missing_source_rejected(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle source '.*nowhere' not found"):
        create_bundle([tmp_path / "nowhere"], tmp_path / "out")


def test_missing_nir_rejected(sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"NIR file '.*absent\.nir' not found"):
        create_bundle([sources["memfiles"]], tmp_path / "out", nir_path=tmp_path / "absent.nir")


def test_empty_source_list_rejected(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="nothing to bundle"):
        create_bundle([], tmp_path / "out")


def test_duplicate_names_rejected(sources: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "memfiles"
    other.mkdir(parents=True)
    (other / "x.hex").write_text("00\n")

    with pytest.raises(BundleError, match=r"would both be stored as 'memfiles'; rename one"):
        create_bundle([sources["memfiles"], other], tmp_path / "out")


def test_reserved_name_rejected(tmp_path: Path) -> None:
    readme = tmp_path / "README.txt"
    readme.write_text("mine")

    with pytest.raises(BundleError, match=r"named 'README\.txt', which the bundle reserves"):
        create_bundle([readme], tmp_path / "out")


def test_output_inside_source_rejected(sources: dict[str, Path]) -> None:
    with pytest.raises(BundleError, match="overlaps source"):
        create_bundle([sources["memfiles"]], sources["memfiles"] / "bundle")


def test_source_inside_output_rejected(sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="overlaps source"):
        create_bundle([sources["memfiles"]], tmp_path / "src", force=True)

    assert (sources["memfiles"] / "manifest.json").is_file()


@pytest.mark.parametrize("name", ["back\\slash.hex", "line\nbreak.hex"])
def test_unlistable_names_rejected(tmp_path: Path, name: str) -> None:
    source = tmp_path / "data"
    source.mkdir()
    (source / name).write_text("00\n")

    with pytest.raises(BundleError, match="backslash or line break"):
        create_bundle([source], tmp_path / "out")

    assert not (tmp_path / "out").exists()


def test_folder_symlink_rejected(sources: dict[str, Path], tmp_path: Path) -> None:
    (sources["memfiles"] / "linked").symlink_to(sources["vectors"], target_is_directory=True)

    with pytest.raises(BundleError, match="symbolic link to a folder"):
        make_bundle(sources, tmp_path / "net1")


# --- verification ----------------------------------------------------------------------------------------


def test_changed_file_named(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")
    target = out / "memfiles" / "core_000_weights.hex"
    data = bytearray(target.read_bytes())
    data[0] ^= 0x01
    target.write_bytes(bytes(data))

    with pytest.raises(BundleVerificationError, match=r"1 file changed \(memfiles/core_000_weights\.hex\)") as raised:
        verify_bundle(out)

    assert raised.value.mismatched == ("memfiles/core_000_weights.hex",)
    assert raised.value.missing == ()
    assert raised.value.extra == ()


def test_missing_and_extra_named(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")
    (out / "network.nir").unlink()
    (out / "test_vectors" / "stray.npz").write_bytes(b"stray")

    with pytest.raises(BundleVerificationError) as raised:
        verify_bundle(out)

    assert raised.value.missing == ("network.nir",)
    assert raised.value.extra == ("test_vectors/stray.npz",)
    assert raised.value.mismatched == ()
    assert "1 file missing (network.nir)" in str(raised.value)
    assert "1 file not listed in MANIFEST.json (test_vectors/stray.npz)" in str(raised.value)


def test_edited_checksum_line_detected(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")
    sums = out / "SHA256SUMS"
    lines = sums.read_text().splitlines()
    edited = ["0" * 64 + "  network.nir" if line.endswith("  network.nir") else line for line in lines]
    sums.write_text("\n".join(edited) + "\n")

    with pytest.raises(BundleVerificationError, match=r"SHA256SUMS disagrees with MANIFEST\.json on network\.nir"):
        verify_bundle(out)


def test_missing_checksums_file_named(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")
    (out / "SHA256SUMS").unlink()

    with pytest.raises(BundleVerificationError) as raised:
        verify_bundle(out)

    assert raised.value.missing == ("SHA256SUMS",)


def test_missing_manifest_rejected(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")
    (out / "MANIFEST.json").unlink()

    with pytest.raises(BundleFormatError, match="has no MANIFEST.json"):
        verify_bundle(out)


def test_newer_format_rejected(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")
    manifest = json.loads((out / "MANIFEST.json").read_text())
    manifest["format_version"] = BUNDLE_FORMAT_VERSION + 1
    (out / "MANIFEST.json").write_text(json.dumps(manifest))

    with pytest.raises(BundleFormatError, match=rf"format version {BUNDLE_FORMAT_VERSION + 1}.*upgrade ecs-deploy"):
        verify_bundle(out)


def test_invalid_manifest_json_rejected(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")
    (out / "MANIFEST.json").write_text("{not json")

    with pytest.raises(BundleFormatError, match="is not valid JSON"):
        verify_bundle(out)


def test_missing_bundle_rejected(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle '.*absent' not found"):
        verify_bundle(tmp_path / "absent")


def test_archive_escaping_paths_rejected(tmp_path: Path) -> None:
    crafted = tmp_path / "evil.tar.gz"
    with tarfile.open(crafted, "w:gz") as tar:
        info = tarfile.TarInfo("net1/../../outside.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))

    with pytest.raises(BundleFormatError, match="not a plain file or folder inside the bundle"):
        verify_bundle(crafted)

    assert not (tmp_path.parent / "outside.txt").exists()


def test_checksum_parser_formats() -> None:
    digest = "ab" * 32

    assert parse_checksums(f"{digest}  a b.txt\n{digest.upper()} *bin/x\n") == {"a b.txt": digest, "bin/x": digest}
    with pytest.raises(BundleFormatError, match="line 1 is not"):
        parse_checksums("deadbeef  short\n")


# --- force and atomic writes -----------------------------------------------------------------------------


def test_existing_output_needs_force(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")
    before = tree(out)

    with pytest.raises(BundleExistsError, match="already exists; pass force=True"):
        create_bundle([sources["vectors"]], out)

    assert tree(out) == before


def test_force_replaces_bundle(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1")

    create_bundle([sources["vectors"]], out, force=True)

    assert not (out / "memfiles").exists()
    assert not (out / "network.nir").exists()
    assert verify_bundle(out).total_bytes > 0
    assert leftovers(tmp_path) == []


def test_force_replaces_archive(sources: dict[str, Path], tmp_path: Path) -> None:
    out = make_bundle(sources, tmp_path / "net1.tgz", archive=True)
    with pytest.raises(BundleExistsError):
        create_bundle([sources["vectors"]], out, archive=True)

    create_bundle([sources["vectors"]], out, archive=True, force=True)

    assert "network.nir" not in {entry.path for entry in verify_bundle(out).files}
    assert leftovers(tmp_path) == []


def test_failure_leaves_no_partial_bundle(
    sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_copy = bundle_module._copy_file
    calls = 0

    def copy_then_fail(*args: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(28, "No space left on device")
        return real_copy(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(bundle_module, "_copy_file", copy_then_fail)
    out_parent = tmp_path / "lab"

    with pytest.raises(OSError, match="No space left"):
        make_bundle(sources, out_parent / "net1")

    assert calls == 3
    assert not (out_parent / "net1").exists()
    assert leftovers(out_parent) == []


def test_failure_keeps_old_bundle(sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = make_bundle(sources, tmp_path / "net1")
    before = tree(out)

    def fail(*args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(bundle_module, "_write_text", fail)
    with pytest.raises(OSError, match="Input/output error"):
        create_bundle([sources["vectors"]], out, force=True)

    assert tree(out) == before
    assert leftovers(tmp_path) == []


def test_archive_failure_leaves_nothing(
    sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(bundle_dir: Path, archive_path: Path) -> None:
        archive_path.write_bytes(b"half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_module, "_write_archive", fail)
    with pytest.raises(OSError):
        make_bundle(sources, tmp_path / "net1.tar.gz", archive=True)

    assert not (tmp_path / "net1.tar.gz").exists()
    assert leftovers(tmp_path) == []


# --- command line ----------------------------------------------------------------------------------------


def test_cli_bundle_and_verify(sources: dict[str, Path], tmp_path: Path) -> None:
    from ecs_deploy.cli import app

    out = tmp_path / "net1"
    runner = CliRunner()
    arguments = ["bundle", str(sources["memfiles"]), str(sources["vectors"]), "--nir", str(sources["nir"])]

    created = runner.invoke(app, [*arguments, "--out", str(out)])
    again = runner.invoke(app, [*arguments, "--out", str(out)])
    forced = runner.invoke(app, [*arguments, "--out", str(out), "--force"])
    verified = runner.invoke(app, ["verify-bundle", str(out)])

    assert created.exit_code == 0, created.output
    assert "checksums verified" in created.output
    assert again.exit_code == 2
    assert again.output.strip().startswith("error: bundle output")
    assert "--force" in again.output
    assert "Traceback" not in again.output
    assert forced.exit_code == 0, forced.output
    assert verified.exit_code == 0, verified.output


def test_cli_verify_reports_damage(sources: dict[str, Path], tmp_path: Path) -> None:
    from ecs_deploy.cli import app

    out = make_bundle(sources, tmp_path / "net1")
    (out / "network.nir").write_bytes(b"damaged")

    result = CliRunner().invoke(app, ["verify-bundle", str(out)])

    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "changed (network.nir)" in result.output


def test_non_nir_file_rejected(sources: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "text.nir"
    text.write_text("not a network\n")
    with pytest.raises(BundleError, match=r"text\.nir' is not a readable HDF5 file"):
        create_bundle([sources["vectors"]], tmp_path / "out", nir_path=text)
    assert not (tmp_path / "out").exists()


def test_hdf5_without_nir_graph_rejected(sources: dict[str, Path], tmp_path: Path) -> None:
    import h5py

    from ecs_deploy.cli import app

    other = tmp_path / "other.nir"
    with h5py.File(other, "w") as handle:
        handle["data"] = np.zeros(3)
    result = CliRunner().invoke(
        app, ["bundle", str(sources["vectors"]), "--nir", str(other), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2, result.output
    assert "is an HDF5 file but not a NIR graph" in result.output
