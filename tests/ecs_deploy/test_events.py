"""Input events, sample files, the single-sample API and predictions."""

from __future__ import annotations

import numpy as np
import pytest
from deploy_testing import conv_net, dense_net, random_inputs

from ecs_common.fixed_point import FixedPointValue
from ecs_deploy.errors import InputError
from ecs_deploy.events import EVENT_DTYPE, as_events, events_to_dense, generate_input_events, load_samples
from ecs_deploy.network import Network


def test_generate_input_events_from_image_frames():
    dense = np.zeros((3, 2, 2, 2, 2), dtype=np.uint8)  # [T, B, C, H, W]
    dense[0, 1, 1, 0, 1] = 1
    dense[2, 0, 0, 1, 1] = 1
    events = generate_input_events(dense, (2, 2, 2))
    assert events.dtype == EVENT_DTYPE
    assert events.tolist() == [(2, 0, 3), (0, 1, 5)]


def test_events_round_trip_to_dense():
    rng = np.random.default_rng(0)
    dense = (rng.random((5, 3, 7)) < 0.3).astype(np.uint8)
    events = generate_input_events(dense)
    np.testing.assert_array_equal(events_to_dense(events, 5, 3, 7), dense)


def test_non_binary_input_is_rejected():
    with pytest.raises(InputError, match="must hold 0/1 spikes .* found 2"):
        generate_input_events(np.full((2, 1, 3), 2))
    with pytest.raises(InputError, match="must hold 0/1 spikes"):
        events_to_dense([(0, 0, 1), (0, 0, 1)], 1, 1, 2)


def test_event_rows_in_both_layouts():
    assert as_events([(1, 4), (2, 5)]).tolist() == [(1, 0, 4), (2, 0, 5)]
    assert as_events(np.array([[1, 2, 3]])).tolist() == [(1, 2, 3)]
    with pytest.raises(InputError, match="non-negative"):
        as_events([(-1, 0)])


def test_simulate_events_equals_batch():
    rng = np.random.default_rng(3)
    network = Network(conv_net(rng))
    inputs = random_inputs(rng, 3, 6, (2, 8, 8), 0.3)
    batch = network.simulate_batch(inputs)
    events = network.generate_input_events(inputs.transpose(1, 0, 2, 3, 4))
    for sample in range(3):
        states = network.simulate(events, num_timesteps=batch.num_timesteps, sample=sample)
        assert len(states) == batch.num_timesteps
        assert all(isinstance(value, FixedPointValue) for value in states[-1])
        words = np.array([[value.word for value in step] for step in states])
        np.testing.assert_array_equal(words, batch.output_states[:, sample])
        assert network.predict(states) == network.predict(batch)[sample]


def test_simulate_needs_a_sample_for_several():
    network = Network(dense_net(np.random.default_rng(0)))
    with pytest.raises(InputError, match="hold 2 samples .* pass sample=i"):
        network.simulate([(0, 0, 1), (0, 1, 2)])


def test_simulate_default_length_answers_every_input_step():
    network = Network(dense_net(np.random.default_rng(0)))
    states = network.simulate([(0, 3), (4, 1)])
    assert len(states) == 5 + network.latency
    assert states[0][0].to_float() == 0.0


@pytest.mark.parametrize("readout", ["last", "max", "mean"])
def test_predict_uses_latency_aligned_steps(readout):
    network = Network(dense_net(np.random.default_rng(0), sizes=(4, 3)))
    latency = network.latency
    states = np.zeros((latency + 3, 1, 3), dtype=np.int64)
    states[:latency, 0, 2] = 1000  # before the latency: ignored by every readout
    states[latency:, 0, 0] = [5, 0, 4]  # last 4, max 5, mean 3
    states[latency:, 0, 1] = [0, 7, 3]  # last 3, max 7, mean 3.33
    expected = {"last": 0, "max": 1, "mean": 1}[readout]
    assert network.predict(states, readout).tolist() == [expected]
    assert network.predict(states[:, 0, :], readout) == expected


def test_predict_rejects_too_short_states():
    network = Network(dense_net(np.random.default_rng(0), sizes=(4, 3)))
    with pytest.raises(InputError, match="simulate at least 3 steps"):
        network.predict(np.zeros((2, 1, 3)))
    with pytest.raises(InputError, match="unknown readout 'median'"):
        network.predict(np.zeros((5, 1, 3)), "median")


def test_wrong_input_shape_is_rejected():
    network = Network(dense_net(np.random.default_rng(0)))
    with pytest.raises(InputError, match=r"input shape \(24,\) or \(24,\), got \(23,\)"):
        network.simulate_batch(np.zeros((2, 5, 23)))


def test_load_samples_npz_and_npy(tmp_path, samples_file):
    path, x, y = samples_file
    loaded_x, loaded_y = load_samples(path)
    np.testing.assert_array_equal(loaded_x, x)
    np.testing.assert_array_equal(loaded_y, y)
    np.save(tmp_path / "x.npy", x)
    only_x, no_labels = load_samples(tmp_path / "x.npy")
    assert no_labels is None
    assert only_x.shape == x.shape


def test_load_samples_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_samples(tmp_path / "absent.npz")
    np.savez(tmp_path / "odd.npz", foo=np.zeros(3))
    with pytest.raises(InputError, match=r"has arrays \['foo'\] but no inputs; name them 'x'"):
        load_samples(tmp_path / "odd.npz")
    np.savez(tmp_path / "count.npz", x=np.zeros((3, 2, 2)), y=np.zeros(2))
    with pytest.raises(InputError, match="3 input samples but 2 labels"):
        load_samples(tmp_path / "count.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK broken")
    with pytest.raises(InputError, match="broken.npz. is not a valid .npy/.npz sample file"):
        load_samples(tmp_path / "broken.npz")


def test_evaluate_reports_accuracy_in_batches(samples_file):
    _, x, y = samples_file
    network = Network(dense_net(np.random.default_rng(0)))
    calls = []
    evaluation = network.evaluate(x, y, batch_size=16, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(16, 40), (32, 40), (40, 40)]
    whole = network.predict(network.simulate_batch(x))
    np.testing.assert_array_equal(evaluation.predictions, whole)
    assert evaluation.accuracy == pytest.approx(np.mean(whole == y))
    assert evaluation.output_states.shape == (40, 12 + network.latency, 5)
