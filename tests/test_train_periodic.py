"""A periodic model with a JAX-MD neighbour list in every stage: simulation, the StABlE learning
step (estimator frames carry the lists the simulator used), the QM term, pre-training and QM
metrics, all through the public API.

System: the LJ fluid of ``tests/test_train.py`` (16 argon-like atoms, reduced density 0.6,
180 K, Nose-Hoover, dt 5 fs, unstable below 0.75 sigma_true = 2.55 A), but the energy is
``stablejax.models.lennard_jones_model(box=...)``: JAX-MD's neighbour-list pair sum, dense
format, with a fixed smooth cutoff (onset 4.0 A, cutoff 5.0 A < L/2) so the list stays exact
while sigma is trained.
"""

from __future__ import annotations

import functools
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stablejax
from stablejax.data.frames import make_frames
from stablejax.models import lennard_jones_model
from stablejax.models.frames import frame_energy_fn, frames_neighbor_idx
from stablejax.observables.distances import distance_distribution, distance_distribution_target
from stablejax.simulate import make_simulator
from stablejax.stability import min_intermolecular_distance_criterion
from stablejax.train import PretrainConfig, PretrainState, Problem, TrainConfig, TrainState
from stablejax.train import evaluate_qm, pretrain
from stablejax.train.losses import LossScales, QMLossConfig, loss_scales, make_batches, stack_batches
from stablejax.units import kT_ev

from lj_fluid import (  # the same fluid, lattice and settings
    BOX,
    DT_FS,
    EPSILON,
    FRAMES_PER_CHUNK,
    HR,
    MASS,
    N_ATOMS,
    N_DUMP,
    N_REPLICAS,
    SIGMA_TRUE,
    TEMPERATURE_K,
    THRESHOLD,
    base_cfg,
    bcc_replicas,
    sig,
)


def lj_model(sigma: float):
    """The LJ model with sigma as its only parameter (epsilon fixed at argon's)."""
    base = lennard_jones_model(box=BOX, sigma=sigma, epsilon=EPSILON, cutoff_angstrom=5.0,
                               onset_angstrom=4.0, neighbor_format="dense")

    def energy_fn(p, R, **kw):
        return base.energy_fn({"sigma": p["sigma"], "epsilon": jnp.float32(EPSILON)}, R, **kw)

    return base._replace(init=lambda key, R, **kw: sig(sigma), energy_fn=energy_fn,
                         per_atom_energy_fn=None)



@pytest.fixture(scope="module")
def fluid():
    warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
    model = lj_model(SIGMA_TRUE)
    assert model.neighbor_fn is not None
    criterion = min_intermolecular_distance_criterion(np.arange(N_ATOMS),
                                                      threshold_angstrom=THRESHOLD, cell=BOX)
    sim = make_simulator(model.energy_fn, masses=np.full(N_ATOMS, MASS), dt_fs=DT_FS,
                         n_dump=N_DUMP, integrator="nose_hoover", temperature_k=TEMPERATURE_K,
                         displacement_fn=model.displacement_fn, shift_fn=model.shift_fn,
                         neighbor_fn=model.neighbor_fn, criterion=criterion,
                         frames_per_chunk=FRAMES_PER_CHUNK)
    state = sim.init(sig(SIGMA_TRUE), bcc_replicas(), jax.random.PRNGKey(42))
    state, traj = sim.run(sig(SIGMA_TRUE), state, 1000)
    assert not np.asarray(state.unstable).any()
    frames = traj.positions[:, 30:]
    target = np.asarray(distance_distribution_target(frames, **HR))
    starts = np.asarray(frames[:, ::10].reshape(-1, N_ATOMS, 3))
    problem = Problem(model=model, simulator=sim,
                      observable_fn=functools.partial(distance_distribution, **HR),
                      target=target, qm_batches=None, qm_scales=LossScales(1.0, 1.0),
                      kT_ev=kT_ev(TEMPERATURE_K), system=None, initial_positions=starts)
    return model, problem, traj


def cfg(**kw) -> TrainConfig:
    """The phase-machine settings of tests/test_train.py (nested overrides)."""
    return base_cfg(**kw)


def test_recorded_neighbor_lists_give_the_simulated_energies(fluid):
    """The trajectory carries each frame's neighbour list; the frame energy through it equals
    the energy with a freshly allocated list (both exact within the cutoff)."""
    model, problem, traj = fluid
    assert traj.neighbor_idx is not None
    assert traj.neighbor_idx.shape[:2] == traj.positions.shape[:2]
    energy = frame_energy_fn(model, problem.initial_positions[0])
    R = traj.positions[0, -1]
    e_recorded = energy(sig(SIGMA_TRUE), R, neighbor_idx=traj.neighbor_idx[0, -1])
    e_fresh = model.energy_fn(sig(SIGMA_TRUE), R, neighbor=model.neighbor_fn.allocate(R))
    np.testing.assert_allclose(float(e_recorded), float(e_fresh), rtol=1e-5)
    with pytest.raises(ValueError, match="neighbor_idx"):
        energy(sig(SIGMA_TRUE), R)


def test_periodic_lj_trained_through_stablejax_train_recovers_sigma(fluid):
    """sigma 2.2 A (true 3.4): every replica collapses, learning epochs move sigma up, the run
    ends stable with sigma within 0.35 A of the truth."""
    _, problem, _ = fluid
    c = cfg()
    records = []
    state = stablejax.train(TrainState.create(problem, sig(2.2), c), c,
                            progress=lambda d, t, i: records.append(i) if "phase" in i else None)
    phases = "".join(r["phase"][0] for r in records)
    assert re.fullmatch(r"sl{2,}s{3}", phases), phases
    learning = [r for r in records if r["phase"] == "learning"]
    assert all(r["finite"] and r["n_frames_used"] == N_REPLICAS * 5 for r in learning)
    s = float(state.params["sigma"])
    assert abs(s - SIGMA_TRUE) < 0.35, s


def test_qm_term_and_pretraining_with_neighbor_lists(fluid, tmp_path):
    """LJ-labelled periodic frames: the QM batches carry neighbour lists; the StABlE QM term
    pulls sigma toward the labels, and pre-training from sigma 3.0 fits sigma to 3.4."""
    model, problem, traj = fluid
    R = np.asarray(traj.positions[:, -10:].reshape(-1, N_ATOMS, 3))  # 80 frames
    energy = frame_energy_fn(model, R[0])
    idx = frames_neighbor_idx(model, R)
    e, g = jax.vmap(jax.value_and_grad(lambda p, r, i: energy(p, r, neighbor_idx=i), argnums=1),
                    in_axes=(None, 0, 0))(sig(SIGMA_TRUE), jnp.asarray(R), jnp.asarray(idx))
    frames = make_frames(R, np.full(N_ATOMS, 18), energies=np.asarray(e, np.float64),
                         forces=-np.asarray(g, np.float64), cell=np.eye(3) * BOX,
                         pbc=np.ones(3, bool))
    loss_cfg = QMLossConfig()
    batches = stack_batches(make_batches(frames, 20, neighbor_idx=idx))
    assert batches.neighbor_idx.shape[:2] == (4, 20)
    qm_problem = problem._replace(qm_batches=batches, qm_scales=loss_scales(frames, loss_cfg))
    c = cfg(optimizer={"qm_weight": 1.0, "qm_loss": loss_cfg, "learning_rate": 0.05})
    fns = stablejax.train.make_stable(qm_problem, c)
    frames_in = {"R": jnp.asarray(R[:4]), "neighbor_idx": jnp.asarray(idx[:4])}
    for s0, sign in [(3.0, 1), (3.8, -1)]:
        state = fns.init(sig(s0))
        new, _, info = fns.learn_step(state.params, state.opt_state, state.data, frames_in,
                                      jnp.zeros(4, bool), jax.random.PRNGKey(0))
        assert int(info["n_frames_used"]) == 0 and float(info["qm_loss"]) > 0
        assert sign * (float(new["sigma"]) - s0) > 0

    before = evaluate_qm(model, sig(3.0), frames[40:])
    pcfg = PretrainConfig(learning_rate=0.02, batch_size=10, max_epochs=40, warmup_steps=0,
                          early_stopping_patience=None, eval_batch_size=20)
    pstate = PretrainState.create(model, jax.random.PRNGKey(0), R[0], pcfg)
    pstate = pstate.replace(params=sig(3.0), ema_params=sig(3.0), best_params=sig(3.0),
                            opt_state=pstate.opt_state)
    pstate = pretrain(pstate, pcfg, frames[:40], frames[40:], run_dir=tmp_path / "pre")
    after = evaluate_qm(model, pstate.best_params, frames[40:])
    assert abs(float(pstate.best_params["sigma"]) - SIGMA_TRUE) < 0.05
    assert after["force_mae_mev_per_angstrom"] < 0.2 * before["force_mae_mev_per_angstrom"]
