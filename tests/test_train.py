"""Tests of the StABlE training loop and phase machine (``stablejax.train.stable``,
``stablejax.train.phases``; docs/method.md §4) on the LJ fluid of ``tests/lj_fluid.py``."""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lj_fluid import (
    DT_FS,
    N_REPLICAS,
    SIGMA_TRUE,
    THRESHOLD,
    base_cfg,
    epoch,
    force_unstable,
    run_epochs,
    sig,
    tree_equal,
)

from stablejax.train import Phase, TrainState
from stablejax.train.stable_config import PhaseConfig
from stablejax.train import train as train_fn
from stablejax.train.stable import stop_reason

# --------------------------------------------------------------------------- the whole loop


def test_lj_fluid_collapses_then_learns_true_sigma(lj):
    """sigma 2.2 A (true 3.4): every replica overlaps, learning epochs move sigma up, and once
    the fraction reaches 0 the simulation phase stays stable and training stops early."""
    # Preconditions of the physics: the true sigma never violates the 2.55 A criterion.
    assert not lj.reference_unstable.any()
    assert lj.reference_min_distance > THRESHOLD + 0.15
    cfg = base_cfg()
    records = []
    state = TrainState.create(lj.problem, sig(2.2), cfg)
    state = train_fn(state, cfg, progress=lambda d, t, info: records.append(info)
                     if "phase" in info else None)
    phases = "".join(r["phase"][0] for r in records)
    assert re.fullmatch(r"sl{2,}s{3}", phases), phases
    assert records[0]["unstable_fraction"] >= cfg.phases.max_frac_unstable
    learning = [r for r in records if r["phase"] == "learning"]
    assert learning[0]["unstable_fraction_before"] >= cfg.phases.max_frac_unstable
    # Learning epoch t's plateau rule and exit test read epoch t-1's fraction (the reference's
    # order), not the fraction of its own simulation.
    for prev, r in zip(records, records[1:]):
        if r["phase"] == "learning":
            assert r["plateau_observed_fraction"] == prev["unstable_fraction"]
    assert learning[-1]["plateau_observed_fraction"] <= cfg.phases.min_frac_unstable
    assert all(r["learning_rate"] == pytest.approx(cfg.optimizer.learning_rate) for r in learning)
    assert all(r["finite"] and r["n_frames_used"] == N_REPLICAS * 5 for r in learning)
    # The last learning epoch ends the phase (the fraction it reads <= min_frac 0) ->
    # end_of_cycle 1.
    assert learning[-1]["end_of_cycle"] == 1
    assert all("end_of_cycle" not in r for r in learning[:-1])
    # The final simulation phase: below the threshold (here: no instability at all), and the
    # run stops on stable_epochs, long before n_epochs.
    final = records[-cfg.stable_epochs:]
    assert all(r["unstable_fraction"] < cfg.phases.max_frac_unstable for r in final)
    assert [r["stable_streak"] for r in final] == [1, 2, 3]
    assert stop_reason(state, cfg).startswith("stable")
    assert int(state.epoch) == len(records) < cfg.n_epochs
    assert int(state.phase) == Phase.SIMULATION and int(state.cycle) == 1
    assert float(state.learning_rate) == 0.0
    # sigma moved toward the truth: from 1.2 A below to within 0.35 A (one step is 0.3 A).
    s = float(state.params["sigma"])
    assert abs(s - SIGMA_TRUE) < 0.35, s
    # The h(r) of the stable frames is now close to the target: its loss is far below the
    # estimator's loss at the start of learning (sigma 2.2).
    assert final[-1]["hr_loss_stable_frames"] < 0.3 * learning[0]["obs_loss"]
    # Independent check: fresh replicas of the trained model (new key) stay stable for 1 ps.
    sim = lj.problem.simulator
    R = jnp.asarray(lj.problem.initial_positions[:N_REPLICAS])
    rs = sim.init(state.params, R, jax.random.PRNGKey(7))
    rs, _ = sim.run(state.params, rs, 200)
    assert float(jnp.mean(rs.unstable)) < cfg.phases.max_frac_unstable


# --------------------------------------------------------------------- checkpoint and resume


def test_resume_from_run_dir_continues_identically(lj, tmp_path):
    """6 epochs in one go == 3 epochs, then a fresh state resumed from the run directory (the
    split falls inside the learning phase: epochs s l l | l l s)."""
    cfg6 = base_cfg(n_epochs=6, stable_epochs=None)
    cfg3 = dataclasses.replace(cfg6, n_epochs=3)
    full = train_fn(TrainState.create(lj.problem, sig(2.2), cfg6), cfg6, run_dir=tmp_path / "a")

    train_fn(TrainState.create(lj.problem, sig(2.2), cfg3), cfg3, run_dir=tmp_path / "b")
    # A process killed after logging epoch 3 but before checkpointing it leaves a stray line;
    # the resumed run must drop it and log epoch 3 again.
    with open(tmp_path / "b" / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 3, "phase": "stray"}) + "\n")
    done = []
    resumed = train_fn(TrainState.create(lj.problem, sig(2.2), cfg6), cfg6,
                       run_dir=tmp_path / "b",
                       progress=lambda d, t, info: done.append(d) if "phase" in info else None)
    assert done == [4, 5, 6]  # it resumed after epoch 3, it did not start over

    a, b = full.checkpoint_arrays(), resumed.checkpoint_arrays()
    assert int(a["epoch"]) == 6 and int(a["cycle"]) == 1
    for name in a:
        assert tree_equal(a[name], b[name]), name

    def records(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        out = [json.loads(x) for x in lines if x.strip()]
        for r in out:
            r.pop("seconds")
        return out

    ra, rb = records("a"), records("b")
    assert [r["epoch"] for r in ra] == list(range(6))
    assert "".join(r["phase"][0] for r in ra) == "slllll"  # exit read at epoch 5 (lag)
    assert ra == rb
    assert (tmp_path / "a" / "end_of_cycle" / "1").is_dir()
    assert (tmp_path / "b" / "end_of_cycle" / "1").is_dir()


# ------------------------------------------------------------------ phase machine, unit checks


def test_unstable_fraction_is_exact(lj):
    """7 of 10 unstable is 0.7 exactly (a float32 mean gives 0.69999999 < 0.7, which would
    miss max_frac_unstable=0.7)."""
    state = TrainState.create(lj.problem, sig(SIGMA_TRUE), base_cfg())
    state = state.replace(last_unstable=jnp.asarray([True] * 7 + [False] * 3))
    assert state.unstable_fraction == 0.7


def test_enters_learning_at_threshold_from_crossing_epoch_start(lj):
    """Learning starts when last epoch's fraction >= max_frac_unstable (equality included) and
    re-simulates from that epoch's start states; below the threshold it keeps simulating."""
    # sigma 2.7: 7/8 and 6/8 unstable, no learning
    cfg_sim = base_cfg(phases={"max_frac_unstable": 1.0})
    s1, r = run_epochs(TrainState.create(lj.problem, sig(2.7), cfg_sim), cfg_sim, 2)
    assert [x["phase"] for x in r] == ["simulation"] * 2
    assert r[1]["n_reset"] > 0  # so epoch 1's start differs from the initial state
    s1 = force_unstable(s1, 4)  # 4/8 = 0.5 unstable in epoch 1

    below, rb = epoch(s1, base_cfg(phases={"max_frac_unstable": 0.625}))
    assert rb["phase"] == "simulation" and int(below.phase) == Phase.SIMULATION
    assert rb["n_reset"] == 4 and rb["learning_rate"] == 0.0
    assert tree_equal(below.params, s1.params)

    cfg = base_cfg(phases={"max_frac_unstable": 0.5})
    entered, re_ = epoch(s1, cfg)
    assert re_["phase"] == "learning" and re_["unstable_fraction_before"] == 0.5
    assert re_["learning_rate"] == pytest.approx(cfg.optimizer.learning_rate)
    assert tree_equal(entered.learn_start, s1.epoch_start)  # epoch 1's start, not epoch 0's
    assert not tree_equal(entered.learn_start.md.position, s1.ring.md.position[0])
    assert tree_equal(entered.epoch_start, s1.epoch_start)
    assert float(entered.params["sigma"]) > 2.7  # one clipped SGD step, toward the truth
    assert re_["n_reset"] == 0 and int(entered.ring_count) == int(s1.ring_count)


def test_unstable_count_builds_up_within_a_simulation_phase(lj):
    """With fresh-velocity resets a failed replica need not fail again; it stays counted in the
    simulation phase, so the fraction that triggers learning builds up (docs/method.md §4,
    simulation phase, step 3)."""
    cfg = base_cfg(phases={"max_frac_unstable": 1.0})
    s, _ = run_epochs(TrainState.create(lj.problem, sig(SIGMA_TRUE), cfg), cfg, 1)
    first = np.zeros(8, bool)
    first[:3] = True
    s = s.replace(last_unstable=jnp.asarray(first), phase_unstable=jnp.asarray(first))
    s2, rec = epoch(s, cfg)  # true sigma: nobody fails this epoch
    assert rec["unstable_fraction"] == 0.0
    assert rec["unstable_fraction_phase"] == 3 / 8
    assert np.array_equal(np.asarray(s2.phase_unstable), first)
    # With the threshold at 3/8 the next epoch learns although the last epoch had no failure.
    s3, rec3 = epoch(s2, base_cfg(phases={"max_frac_unstable": 0.375}))
    assert rec3["phase"] == "learning" and rec3["unstable_fraction_phase_before"] == 0.375


def test_learning_restarts_every_epoch_from_learn_start(lj):
    # small steps: stays unstable, stays learning
    cfg = base_cfg(optimizer={"learning_rate": 0.01})
    s, r = run_epochs(TrainState.create(lj.problem, sig(2.7), cfg), cfg, 1)
    assert r[0]["unstable_fraction"] >= cfg.phases.max_frac_unstable
    learn_start, sigma = None, 2.7
    for k in range(3):
        s, rec = epoch(s, cfg)
        assert rec["phase"] == "learning" and int(s.phase) == Phase.LEARNING
        learn_start = s.learn_start if learn_start is None else learn_start
        assert tree_equal(s.learn_start, learn_start)
        assert tree_equal(s.epoch_start, learn_start)  # every epoch: the same start states
        new_sigma = float(s.params["sigma"])
        assert new_sigma > sigma  # one SGD step per learning epoch
        sigma = new_sigma
    assert int(s.ring_count) == 1  # learning epochs never enter the reset-checkpoint ring


def test_leaves_learning_after_max_lr_reductions(lj):
    """sigma 2.2 with a tiny learning rate stays fully unstable: with patience 0 the plateau
    reduces the rate at the 2nd and 3rd learning epochs; 2 reductions end the phase. The next
    simulation epoch restarts from the learning start states, and ceil(0.25 * 8) = 2 stable
    replicas jump to an older checkpoint with fresh velocities."""
    cfg = base_cfg(optimizer={"learning_rate": 1e-4, "plateau_patience": 0},
                   phases={"max_lr_reductions": 2, "reset_probability": 0.25,
                           "fresh_velocities_on_reset": True})
    s, r = run_epochs(TrainState.create(lj.problem, sig(2.2), cfg), cfg, 4)
    assert [x["phase"] for x in r] == ["simulation", "learning", "learning", "learning"]
    assert all(x["unstable_fraction"] == 1.0 for x in r)
    np.testing.assert_allclose([x["learning_rate"] for x in r[1:]], [1e-4, 1e-4, 2e-5],
                               rtol=1e-6)
    assert "end_of_cycle" not in r[2] and r[3]["end_of_cycle"] == 1
    assert int(s.plateau.n_reductions) == 2
    assert int(s.phase) == Phase.SIMULATION and int(s.cycle) == 1
    assert float(s.learning_rate) == 0.0 and s.unstable_fraction == 0.0
    learn_start = s.learn_start
    assert tree_equal(s.replicas, learn_start)

    s5, r5 = epoch(s, cfg)
    assert r5["phase"] == "simulation" and r5["n_reset"] == 0 and r5["n_jumped"] == 2
    start = s5.epoch_start
    # Older checkpoint = epoch 0's start = the learning start: same positions, but the two
    # jumped replicas got fresh momenta.
    np.testing.assert_array_equal(start.md.position, learn_start.md.position)
    changed = np.any(np.asarray(start.md.momentum != learn_start.md.momentum), axis=(1, 2))
    assert changed.sum() == 2
    assert tree_equal(s5.params, s.params)


@pytest.mark.parametrize("min_frac, leaves", [(0.125, True), (0.0, False)])
def test_leaves_learning_when_fraction_at_most_min(lj, min_frac, leaves):
    """sigma 2.8: 1/8 unstable. Forced into learning (epoch 0 marked 8/8 unstable), learning
    epoch t reads epoch t-1's fraction, as the reference: the first learning epoch reads the
    forced 8/8 and stays; it re-simulates epoch 0 exactly (same start, same parameters), so
    1/8 again, which the second learning epoch reads: it leaves iff 1/8 <= min_frac_unstable,
    after taking its step."""
    cfg = base_cfg(phases={"min_frac_unstable": min_frac}, optimizer={"learning_rate": 1e-4})
    s0 = TrainState.create(lj.problem, sig(2.8), cfg)
    s1, r0 = epoch(s0, cfg)
    assert r0["unstable_fraction"] == 0.125 and r0["stable_streak"] == 0  # cycle 0: no streak
    s2, r1 = epoch(force_unstable(s1, 8), cfg)
    assert r1["phase"] == "learning" and r1["unstable_fraction"] == 0.125
    assert r1["plateau_observed_fraction"] == 1.0 and "end_of_cycle" not in r1
    # The same replicas failed as in epoch 0: an exact replay of epoch 0.
    np.testing.assert_array_equal(s2.last_unstable, s1.last_unstable)
    s3, r2 = epoch(s2, cfg)
    assert r2["phase"] == "learning" and r2["plateau_observed_fraction"] == 0.125
    assert float(s3.params["sigma"]) != float(s2.params["sigma"])  # the step is still taken
    if leaves:
        assert r2["end_of_cycle"] == 1
        assert int(s3.phase) == Phase.SIMULATION and int(s3.cycle) == 1
        assert int(s3.plateau.n_reductions) == 0
        s4, r3 = epoch(s3, cfg)
        assert r3["phase"] == "simulation" and r3["stable_streak"] == 1
        assert not np.asarray(s3.last_unstable).any()
    else:
        assert "end_of_cycle" not in r2 and int(s3.phase) == Phase.LEARNING


@pytest.mark.parametrize("fresh", [True, False])
def test_simulation_phase_resets_unstable_replicas(lj, fresh):
    """sigma 2.7, no learning: replicas unstable in epoch 0 restart epoch 1 from their epoch-0
    start positions; stable ones continue. Without fresh velocities the reset replicas replay
    their failure exactly (Nose-Hoover is deterministic); with them they do not."""
    cfg = base_cfg(phases={"max_frac_unstable": 1.0, "fresh_velocities_on_reset": fresh})
    assert PhaseConfig().fresh_velocities_on_reset is False  # the replay is the default
    s0 = TrainState.create(lj.problem, sig(2.7), cfg)
    s1, r0 = epoch(s0, cfg)
    s2, r1 = epoch(s1, cfg)
    u = np.asarray(s1.last_unstable)
    assert 0 < u.sum() < N_REPLICAS
    assert r1["n_reset"] == u.sum()
    a, b, c = s1.epoch_start, s2.epoch_start, s1.replicas  # starts of epochs 0, 1; end of 0
    pos_b = np.asarray(b.md.position)
    np.testing.assert_array_equal(pos_b[u], np.asarray(a.md.position)[u])
    np.testing.assert_array_equal(pos_b[~u], np.asarray(c.md.position)[~u])
    np.testing.assert_array_equal(np.asarray(b.md.momentum)[~u], np.asarray(c.md.momentum)[~u])
    assert not np.asarray(b.unstable).any() and not np.asarray(b.step).any()
    same_momenta = np.all(np.asarray(b.md.momentum)[u] == np.asarray(a.md.momentum)[u],
                          axis=(1, 2))
    first0 = np.asarray(s1.replicas.first_unstable_step)[u]
    first1 = np.asarray(s2.replicas.first_unstable_step)[u]
    if fresh:
        assert not same_momenta.any()
        assert not np.array_equal(first0, first1)
    else:
        assert same_momenta.all()
        np.testing.assert_array_equal(first1, first0)  # the same failures, replayed
        np.testing.assert_array_equal(np.asarray(s2.replicas.md.position)[u],
                                      np.asarray(s1.replicas.md.position)[u])


def test_config_must_match_state(lj, tmp_path):
    cfg = base_cfg()
    state = TrainState.create(lj.problem, sig(2.7), cfg)
    with pytest.raises(ValueError, match="n_replicas"):
        epoch(state, base_cfg(n_replicas=4))
    with pytest.raises(ValueError, match="epoch_ps"):
        epoch(state, base_cfg(epoch_ps=60 * DT_FS / 1000))
    # train() checks cfg against the config the state was built with, naming the field; the
    # loop's own fields (n_epochs, stable_epochs) may differ.
    with pytest.raises(ValueError, match=r"learning_rate=0\.1 \(state: 0\.3\)"):
        train_fn(state, base_cfg(optimizer={"learning_rate": 0.1}), run_dir=tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    out = train_fn(state, base_cfg(n_epochs=1, stable_epochs=None))
    assert int(out.epoch) == 1




def test_resume_refuses_another_config_unless_the_change_is_allowed(lj, tmp_path):
    """The run directory records its config: a resume with another learning rate or seed is
    refused (naming the field and both values) before anything is restored; the learning rate
    may change when named in ``allow_changes``; the epoch count always may."""
    from stablejax.errors import InputError

    cfg1 = base_cfg(n_epochs=1, stable_epochs=None)
    train_fn(TrainState.create(lj.problem, sig(2.2), cfg1), cfg1, run_dir=tmp_path)
    cfg2 = base_cfg(n_epochs=2, stable_epochs=None, optimizer={"learning_rate": 0.1})
    state2 = TrainState.create(lj.problem, sig(2.2), cfg2)
    with pytest.raises(InputError, match=r"config\.optimizer\.learning_rate: 0\.3 -> 0\.1.*"
                                         r"--allow-change optimizer\.learning_rate"):
        train_fn(state2, cfg2, run_dir=tmp_path)
    cfg_seed = base_cfg(n_epochs=2, stable_epochs=None, seed=7)
    with pytest.raises(InputError, match=r"config\.seed: 0 -> 7.*another run directory"):
        train_fn(TrainState.create(lj.problem, sig(2.2), cfg_seed), cfg_seed, run_dir=tmp_path)
    with pytest.raises(InputError, match="not a field a resume may change"):
        train_fn(state2, cfg2, run_dir=tmp_path, allow_changes=("seed",))
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    out = train_fn(state2, cfg2, run_dir=tmp_path, allow_changes=("optimizer.learning_rate",))
    assert int(out.epoch) == 2
    record = json.loads((tmp_path / "inputs.json").read_text())
    assert record["config"]["optimizer"]["learning_rate"] == 0.1
    assert record["changes"][-1]["config.optimizer.learning_rate"] == [0.3, 0.1]


def test_keep_epoch_keeps_the_parameters_of_the_chosen_epoch(lj, tmp_path):
    """train(keep_epoch=rule) saves the parameters of the epoch the rule names on the log so far
    (here epoch 2 of 5) as run_dir/kept: they equal a 3-epoch run's final parameters."""
    from stablejax.io.run_dir import KEPT, RunDir

    def rule(records):
        return min(int(records[-1]["epoch"]), 2)

    cfg = base_cfg(n_epochs=5, stable_epochs=None)
    s5 = train_fn(TrainState.create(lj.problem, sig(2.2), cfg), cfg, run_dir=tmp_path / "a",
                  keep_epoch=rule)
    kept = RunDir(tmp_path / "a").load_params(KEPT, s5.params)
    cfg3 = base_cfg(n_epochs=3, stable_epochs=None)
    s3 = train_fn(TrainState.create(lj.problem, sig(2.2), cfg3), cfg3)
    assert tree_equal(kept, s3.params)
    records = RunDir(tmp_path / "a").records()
    if any(r["phase"] == "learning" for r in records[3:]):
        assert not tree_equal(kept, s5.params)
    with pytest.raises(ValueError, match="needs a run_dir"):
        train_fn(TrainState.create(lj.problem, sig(2.2), cfg), cfg, keep_epoch=rule)
