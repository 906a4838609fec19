"""Tests of StABlE's learning step (``stablejax.train.learn``): the QM term, the estimator's
forward energies, stable-frame masks and frame reuse, on the LJ fluid of ``tests/lj_fluid.py``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lj_fluid import (
    N_ATOMS,
    N_REPLICAS,
    SIGMA_TRUE,
    base_cfg,
    epoch,
    force_unstable,
    lj_energy,
    sig,
    tree_equal,
)

from stablejax.train import TrainState, make_stable
from stablejax.train.losses import Batch, LossScales


@pytest.mark.parametrize("stable_only", [False, True])
def test_stable_frames_only_masks_frames(lj, stable_only):
    """Learning from all finite frames (default) vs only frames before each replica's first
    instability; frames where the criterion stops firing after a violation stay excluded."""
    cfg = base_cfg(estimator={"stable_frames_only": stable_only})
    s1, r0 = epoch(TrainState.create(lj.problem, sig(2.7), cfg), cfg)
    s2, r1 = epoch(s1, cfg)
    assert r1["phase"] == "learning"
    # Re-simulate the learning epoch (same start, same parameters) to count frames.
    _, traj = lj.problem.simulator.run(s1.params, s2.epoch_start, cfg.steps_per_epoch)
    fired = np.asarray(traj.unstable)
    before_first = np.cumsum(fired, axis=1) == 0
    n_all = N_REPLICAS * 5
    assert np.asarray(traj.valid).all()
    # This epoch has frames after a violation where the criterion no longer fires: a per-frame
    # mask would keep them.
    assert (~fired).sum() > before_first.sum()
    expected = before_first.sum() if stable_only else n_all
    assert r1["n_frames_used"] == expected


def test_qm_term_pulls_sigma_to_labels(lj):
    """qm_weight > 0 with LJ-labelled frames (true sigma): with no observable frame selected
    the step follows the energy/force loss, upward from 3.0 and downward from 3.8."""
    R = jnp.asarray(lj.problem.initial_positions[:8])
    e, g = jax.vmap(jax.value_and_grad(lj_energy, argnums=1), in_axes=(None, 0))(
        sig(SIGMA_TRUE), R)
    batches = jax.tree.map(lambda x: x.reshape((2, 4) + x.shape[1:]),
                           Batch(R, e, -g, jnp.ones(8, jnp.float32)))
    scales = LossScales(float(jnp.std(e)), float(jnp.sqrt(jnp.mean(g**2))))
    problem = lj.problem._replace(qm_batches=batches, qm_scales=scales)
    cfg = base_cfg(optimizer={"qm_weight": 1.0, "learning_rate": 0.05})
    with pytest.raises(ValueError, match="qm_weight"):
        make_stable(lj.problem, cfg)
    fns = make_stable(problem, cfg)
    frames = jnp.zeros((4, N_ATOMS, 3)) + R[:1]
    none = jnp.zeros(4, bool)
    for s0, sign in [(3.0, 1), (3.8, -1)]:
        state = fns.init(sig(s0))
        new, _, info = fns.learn_step(state.params, state.opt_state, state.data, frames, none,
                                      jax.random.PRNGKey(0))
        assert int(info["n_frames_used"]) == 0 and float(info["qm_loss"]) > 0
        assert sign * (float(new["sigma"]) - s0) > 0
        assert math.isclose(abs(float(new["sigma"]) - s0), 0.05, rel_tol=1e-4)  # clipped


def test_learn_step_without_forward_energies_is_the_same_step(lj):
    R = jnp.asarray(lj.problem.initial_positions[:6])
    frames = R + 0.05 * jax.random.normal(jax.random.PRNGKey(3), R.shape)
    mask = jnp.ones(6, bool)
    outs = []
    for flag in (True, False):
        fns = make_stable(lj.problem, base_cfg(estimator={"forward_energies": flag},
                                               optimizer={"learning_rate": 0.05}))
        state = fns.init(sig(3.0))
        new, _, info = fns.learn_step(state.params, state.opt_state, state.data, frames, mask,
                                      jax.random.PRNGKey(0))
        outs.append((new, info))
    (a, ia), (b, ib) = outs
    assert int(ia["n_frames_used"]) == int(ib["n_frames_used"]) == 6
    np.testing.assert_allclose(float(a["sigma"]), float(b["sigma"]), rtol=1e-6)
    np.testing.assert_allclose(float(ia["grad_norm"]), float(ib["grad_norm"]), rtol=1e-5)
    assert float(ia["grad_norm"]) > 0


def test_learning_epoch_reuses_frames_while_ess_is_high(lj):
    """max_steps_per_epoch=3: after the step on the fresh frames, two more steps reuse
    them with importance weights (tiny steps keep the ESS near 1). The clipped one-parameter
    step moves sigma by exactly lr each time, in the estimator's direction (sigma 2.8 is below
    the true 3.4). With an ESS threshold of 1.0 no reuse is possible (any parameter change
    lowers the ESS) and the epoch is bitwise the single-step epoch."""
    lr = 1e-3
    single = base_cfg(optimizer={"learning_rate": lr})
    s0 = TrainState.create(lj.problem, sig(2.8), single)
    s1, _ = epoch(s0, single)
    forced = force_unstable(s1, 8)

    s_one, r_one = epoch(forced, single)
    assert r_one["phase"] == "learning" and r_one["learning_steps"] == 1
    assert r_one["reuse_ess_fraction"] is None

    reuse = base_cfg(optimizer={"learning_rate": lr},
                     estimator={"max_steps_per_epoch": 3, "reuse_min_ess_fraction": 0.5})
    s_three, r_three = epoch(forced, reuse)
    assert r_three["learning_steps"] == 3
    assert 0.5 <= r_three["reuse_ess_fraction"] <= 1.0
    assert "obs_loss_last_step" in r_three
    d_one = float(s_one.params["sigma"]) - 2.8
    d_three = float(s_three.params["sigma"]) - 2.8
    np.testing.assert_allclose(d_one, lr, rtol=1e-3)
    np.testing.assert_allclose(d_three, 3 * lr, rtol=1e-3)

    strict = base_cfg(optimizer={"learning_rate": lr},
                      estimator={"max_steps_per_epoch": 3, "reuse_min_ess_fraction": 1.0})
    s_strict, r_strict = epoch(forced, strict)
    assert r_strict["learning_steps"] == 1 and r_strict["reuse_ess_fraction"] < 1.0
    assert tree_equal(s_strict.params, s_one.params)


def test_reuse_config_is_validated():
    with pytest.raises(ValueError, match="max_steps_per_epoch"):
        base_cfg(estimator={"max_steps_per_epoch": 0})
    with pytest.raises(ValueError, match="reuse_min_ess_fraction"):
        base_cfg(estimator={"reuse_min_ess_fraction": 0.0})

