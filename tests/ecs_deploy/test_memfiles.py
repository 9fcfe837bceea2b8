"""Memory files: word packing, the manifest, round trips through the reader, tampering and overwriting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from deploy_testing import conv_net, dense_net, random_inputs
from typer.testing import CliRunner

from ecs_common.errors import ResourceError
from ecs_common.formats import QuantConfig
from ecs_common.hardware import HardwareConfig
from ecs_deploy.bundle import (
    CHECKSUMS_NAME,
    MANIFEST_NAME,
    BundleFile,
    create_bundle,
    format_checksums,
    hash_file,
    verify_bundle,
)
from ecs_deploy.cli import app
from ecs_deploy.errors import (
    BundleError,
    BundleVerificationError,
    MemFileError,
    MemFileIntegrityError,
    OutputExistsError,
)
from ecs_deploy.memfiles import FILE_KINDS, Field, load_mem_files, pack_words, unpack_words, word_layouts
from ecs_deploy.network import Network


def test_pack_words_twos_complement_and_widths():
    fields = [Field("a", 3), Field("b", 8, signed=True), Field("c", 5, signed=True)]
    lines = pack_words(fields, {"a": np.array([5, 0]), "b": np.array([-1, -128]), "c": np.array([-16, 15])})
    # 16 bits -> 4 hex digits: 101 11111111 10000 and 000 10000000 01111.
    assert lines == [f"{0b1011111111110000:04x}", f"{0b0001000000001111:04x}"]
    columns = unpack_words(fields, lines, "test")
    assert columns["a"].tolist() == [5, 0]
    assert columns["b"].tolist() == [-1, -128]
    assert columns["c"].tolist() == [-16, 15]


def test_pack_words_rejects_values_beyond_the_field():
    with pytest.raises(MemFileError, match="field 'b' value 128 does not fit 8 bits"):
        pack_words([Field("b", 8, signed=True)], {"b": np.array([128])})
    with pytest.raises(MemFileError, match="field 'a' value -1 does not fit 3 bits"):
        pack_words([Field("a", 3)], {"a": np.array([-1])})


def test_word_layout_widths_follow_configs():
    layouts = word_layouts(HardwareConfig(), QuantConfig())
    widths = {kind: sum(f.bits for f in fields) for kind, fields in layouts.items()}
    # neurons: 3 + 1 + 2 * 12 + 4 * 16; synapses: 10 + 8; weights: 8; routes: 10 + 2 + 4 + 16 + 17.
    assert widths == {"neurons": 92, "synapses": 18, "weights": 8, "routes": 49}


@pytest.mark.parametrize("builder", ["dense", "conv", "subtract"])
def test_simulation_from_files_equals_nir_on_every_sample(builder, tmp_path):
    rng = np.random.default_rng(8)
    if builder == "conv":
        graph, shape = conv_net(rng), (2, 8, 8)
    else:
        reset = "subtract" if builder == "subtract" else "to_reset"
        graph, shape = dense_net(rng, sizes=(24, 16, 12, 5), hidden_kind="cubalif", reset_mode=reset), (24,)
    network = Network(graph)
    network.generate_mem_files(tmp_path, print_util=False)
    reloaded = load_mem_files(tmp_path)

    inputs = random_inputs(rng, 16, 10, shape, 0.3)
    original = network.simulate_batch(inputs, record_spikes=True)
    loaded = reloaded.simulate_batch(inputs, record_spikes=True)
    np.testing.assert_array_equal(loaded.output_states, original.output_states)
    for name, raster in original.spikes.items():
        np.testing.assert_array_equal(loaded.spikes[name], raster, err_msg=name)
    np.testing.assert_array_equal(reloaded.predict(loaded), network.predict(original))

    for layer in network.model.layers[1:]:
        copy = reloaded.model.layer(layer.name)
        for field in ("k_mem", "v_leak", "v_threshold", "v_reset"):
            np.testing.assert_array_equal(getattr(copy.params, field), getattr(layer.params, field))
        np.testing.assert_array_equal(copy.bias, layer.bias)


def test_multi_core_layers_round_trip(tmp_path):
    """Small cores split every layer over several cores; the files still reproduce the network."""
    rng = np.random.default_rng(9)
    hardware = HardwareConfig(num_cores=16, num_neurons_core=8, num_synapses_core=60, num_routes=64)
    graph = dense_net(rng, sizes=(20, 16, 6), hardware=hardware)
    network = Network(graph)
    report = network.placement_report()
    assert report.fits
    assert all(len(layer.cores) >= 2 for layer in report.layers)

    network.generate_mem_files(tmp_path, print_util=False)
    reloaded = load_mem_files(tmp_path)
    inputs = random_inputs(rng, 8, 12, (20,), 0.4)
    np.testing.assert_array_equal(
        reloaded.simulate_batch(inputs).output_states, network.simulate_batch(inputs).output_states
    )


def test_manifest_lists_files_widths_and_layer_map(tmp_path):
    network = Network(dense_net(np.random.default_rng(1)))
    manifest_path = network.generate_mem_files(tmp_path, print_util=False)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format_version"] == 1
    assert manifest["num_cores"] == 3
    assert {entry["kind"] for entry in manifest["files"]} == set(FILE_KINDS)
    assert len(manifest["files"]) == 3 * len(FILE_KINDS)
    assert manifest["word_layouts"]["weights"]["width"] == 8
    assert [layer["name"] for layer in manifest["layers"]] == network.layer_names
    assert manifest["layers"][1]["cores"] == [{"core": 1, "first_neuron": 0, "neurons": 16}]
    for entry in manifest["files"]:
        lines = (tmp_path / entry["path"]).read_text().splitlines()
        assert len(lines) == entry["entries"]
        digits = manifest["word_layouts"][entry["kind"]]["hex_digits"]
        assert all(len(line) == digits for line in lines)
        assert all(set(line) <= set("0123456789abcdef") for line in lines)


def test_tampered_file_is_rejected(tmp_path):
    network = Network(dense_net(np.random.default_rng(1)))
    network.generate_mem_files(tmp_path, print_util=False)
    path = tmp_path / "core001_weights.mem"
    lines = path.read_text().splitlines()
    lines[0] = f"{(int(lines[0], 16) + 1) % 256:02x}"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MemFileIntegrityError, match="core001_weights.mem' has sha256 .* but the manifest records"):
        load_mem_files(tmp_path)


def test_missing_file_and_manifest_are_reported(tmp_path):
    network = Network(dense_net(np.random.default_rng(1)))
    network.generate_mem_files(tmp_path, print_util=False)
    (tmp_path / "core002_routes.mem").unlink()
    with pytest.raises(MemFileError, match="core002_routes.mem' listed in the manifest is missing"):
        load_mem_files(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(MemFileError, match="has no manifest.json"):
        load_mem_files(tmp_path)


def test_existing_set_is_not_overwritten_without_force(tmp_path):
    network = Network(dense_net(np.random.default_rng(1)))
    network.generate_mem_files(tmp_path, print_util=False)
    before = (tmp_path / "manifest.json").read_text()
    with pytest.raises(OutputExistsError, match="contains memory files already"):
        network.generate_mem_files(tmp_path, print_util=False)
    assert (tmp_path / "manifest.json").read_text() == before

    other = Network(dense_net(np.random.default_rng(2), sizes=(24, 5)))
    other.generate_mem_files(tmp_path, print_util=False, force=True)
    assert not (tmp_path / "core002_neurons.mem").exists()
    assert load_mem_files(tmp_path).layer_names == other.layer_names
    assert not list(tmp_path.glob(".*tmp"))


def test_network_that_does_not_fit_writes_nothing(tmp_path):
    graph = dense_net(np.random.default_rng(1), hardware=HardwareConfig(num_cores=2))
    with pytest.raises(ResourceError, match="needs 3 cores but the accelerator has 2"):
        Network(graph).generate_mem_files(tmp_path / "out", print_util=False)
    assert not (tmp_path / "out").exists()


def test_utilization_table_is_printed(tmp_path, capsys):
    Network(dense_net(np.random.default_rng(1))).generate_mem_files(tmp_path, print_util=True)
    printed = capsys.readouterr().out
    assert "Core utilization: 3 of 4 cores" in printed
    assert "16 / 1024" in printed


def _write_mem_files_cli(nir_file, out):
    network_path, _ = nir_file
    result = CliRunner().invoke(app, ["memfiles", str(network_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _change_first_word(path):
    lines = path.read_text().splitlines()
    lines[0] = "0" * len(lines[0]) if lines[0] != "0" * len(lines[0]) else "1" * len(lines[0])
    path.write_text("\n".join(lines) + "\n")


def _tampered_mem_files(nir_file, tmp_path):
    """Write a memory-file set with the CLI, then change one word of the last core's weights."""
    out = _write_mem_files_cli(nir_file, tmp_path / "memfiles")
    target = sorted(out.glob("core*_weights.mem"))[-1]
    _change_first_word(target)
    return out, target


def test_bundle_rejects_tampered_mem_files(nir_file, tmp_path):
    folder, target = _tampered_mem_files(nir_file, tmp_path)
    with pytest.raises(BundleError, match=rf"memory files not bundled: .*{target.name}.*sha256"):
        create_bundle([folder], tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_bundle_cli_rejects_tampered_mem_files(nir_file, tmp_path):
    folder, target = _tampered_mem_files(nir_file, tmp_path)
    result = CliRunner().invoke(app, ["bundle", str(folder), "--out", str(tmp_path / "bundle")])
    assert result.exit_code == 2, result.output
    assert target.name in result.output
    assert "checksums verified" not in result.output


def test_verify_bundle_checks_inner_mem_files(nir_file, tmp_path):
    folder = _write_mem_files_cli(nir_file, tmp_path / "memfiles")
    bundle = create_bundle([folder], tmp_path / "bundle")
    inner = sorted((bundle / "memfiles").glob("core*_weights.mem"))[-1]
    _change_first_word(inner)

    # Re-seal MANIFEST.json and SHA256SUMS, so that only the inner manifest.json can notice the change.
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    for item in manifest["files"]:
        if item["path"] == f"memfiles/{inner.name}":
            item["sha256"] = hash_file(inner).sha256
            item["size"] = inner.stat().st_size
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    listed = [BundleFile(item["path"], item["size"], item["sha256"]) for item in manifest["files"]]
    (bundle / CHECKSUMS_NAME).write_text(format_checksums([*listed, hash_file(bundle / MANIFEST_NAME)]))

    with pytest.raises(BundleVerificationError, match=rf"memory files in 'memfiles' .*{inner.name}.*sha256"):
        verify_bundle(bundle)


def test_verify_memfiles_cli_accepts_clean_set(nir_file, tmp_path):
    folder = _write_mem_files_cli(nir_file, tmp_path / "clean")
    result = CliRunner().invoke(app, ["verify-memfiles", str(folder)])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output


def test_verify_memfiles_cli_names_changed_file(nir_file, tmp_path):
    folder, target = _tampered_mem_files(nir_file, tmp_path)
    result = CliRunner().invoke(app, ["verify-memfiles", str(folder)])
    assert result.exit_code == 2, result.output
    assert target.name in result.output
    assert "sha256" in result.output
