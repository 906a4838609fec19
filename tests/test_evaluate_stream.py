"""The streaming evaluation reducer (stablejax.evaluate.stream)."""

import json
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from stablejax.config import HRConfig, MDConfig
from stablejax.data import load_dataset
from stablejax.evaluate import EvalConfig, evaluate_model, make_stream


def _fake_run(n_rep=3, n_frames=6, seed=0):
    """A trajectory of a stretched triangle [n_rep, n_frames, 3, 3], one replica failing."""
    rng = np.random.default_rng(seed)
    base = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.1, 0.0]])
    R = base + 0.05 * rng.normal(size=(n_rep, n_frames, 3, 3))
    R[1, 4:] *= 50.0  # replica 1 flies apart after its failure at step 40
    step = np.tile(10 * np.arange(1, n_frames + 1), (n_rep, 1))
    valid = np.ones((n_rep, n_frames), bool)
    valid[2, 5] = False
    metric = rng.uniform(0, 0.3, (n_rep, n_frames))
    fus = np.array([-1, 40, -1])
    return R, step, valid, metric, fus


def _chunk(R, step, valid, metric, fus, sl):
    traj = SimpleNamespace(positions=jax.numpy.asarray(R[:, sl]), step=step[:, sl],
                           valid=valid[:, sl], metric=metric[:, sl])
    # first_unstable_step as known after the chunk: failures later than the chunk not yet seen
    last = step[:, sl][:, -1]
    return SimpleNamespace(first_unstable_step=np.where(fus <= last, fus, -1)), traj


def test_chunks_give_the_same_result_as_one_piece():
    R, step, valid, metric, fus = _fake_run()
    bonds = np.array([[0, 1], [0, 2]])
    system = SimpleNamespace(bonds=bonds)  # all the reducer reads of a System
    stream = make_stream(system, R[0], n_replicas=3, dt_fs=0.5, hr=HRConfig(r_max_angstrom=4.0))
    whole = stream.update(stream.init(), *_chunk(R, step, valid, metric, fus, slice(None)), 60)
    acc = stream.init()
    for sl in (slice(0, 2), slice(2, 5), slice(5, 6)):
        acc = stream.update(acc, *_chunk(R, step, valid, metric, fus, sl), 20)
    assert acc.steps_done == whole.steps_done == 60
    for a, b in zip(acc[:-1], whole[:-1]):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_array_equal(acc.n_stable_frames, [6, 3, 5])
    np.testing.assert_array_equal(acc.n_frames, [6, 6, 5])
    m1, m2 = stream.finalize(acc), stream.finalize(whole)
    np.testing.assert_allclose(m1.times_ps, [0.03, 0.02, 0.03])
    np.testing.assert_array_equal(m1.censored, [True, False, True])
    assert m1.n_stable_frames == 14 and np.isfinite(m1.bond_length_distribution_mae)
    for k in ("hr_mae", "hr_mean_abs_error", "bond_length_distribution_mae"):
        assert getattr(m1, k) == pytest.approx(getattr(m2, k), rel=1e-6)


@pytest.fixture(scope="module")
def dirs(ethanol_model_dirs):
    return ethanol_model_dirs


def test_simulate_cli_and_evaluate_model_agree(dirs, tmp_path):
    from stablejax.cli.main import main
    from stablejax.pipeline import load_model_dir

    model_dir, data = dirs
    out = tmp_path / "sim"
    assert main(["simulate", "--model", str(model_dir), "--data", str(data),
                 "--n-replicas", "3", "--time-ps", "0.02", "--dt-fs", "0.5",
                 "--frame-interval-fs", "5", "--frames-per-chunk", "4", "--format", "npz",
                 "--out", str(out)]) == 0
    sim = json.loads((out / "summary.json").read_text())
    _, model, params = load_model_dir(model_dir)
    cfg = EvalConfig(md=MDConfig(integrator="langevin", dt_fs=0.5, frame_interval_fs=5.0,
                                 tolerance_angstrom=0.5), n_replicas=3, time_ps=0.02,
                     n_bootstrap=20)
    ds = load_dataset(data)
    ev, arrays = evaluate_model(model, params, ds, cfg)
    start = np.floor(np.arange(3) * ds.test.n_frames / 3).astype(int)  # distinct: 3 < n_test
    np.testing.assert_array_equal(arrays["start_frame"], start)
    assert ev["resample_unit"] == "replica" and ev["n_start_frames"] == 3
    assert all(m.startswith(("percentile", "BCa", "basic")) and "of the replicas" in m
               for m in ev["ci_method"].values())
    assert sim["simulated_ps"] == pytest.approx(ev["window_ps"])
    assert sim["n_stable_frames"] == ev["n_stable_frames"]
    for k in ("stability_time_ps_median", "stability_time_ps_mean", "hr_mae",
              "hr_mean_abs_error", "bond_length_distribution_mae"):
        assert sim[k] == ev[k], k
