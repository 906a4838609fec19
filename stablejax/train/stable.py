"""StABlE training as pure functions: ``make_stable(problem, cfg) -> StableFns(init, epoch)`` and
the loop ``stablejax.train(state, cfg)``.

Each epoch simulates all replicas for ``cfg.steps_per_epoch`` steps; the phase machine
(:mod:`stablejax.train.phases`) decides where replicas start and whether the epoch learns. A
learning epoch re-simulates from the saved start states with the current model, then takes one
optax step (:func:`stablejax.train.optim.stable_optimizer`: clip, SGD, skip non-finite) on
g = g_obs + qm_weight * g_QM, where g_obs is the Boltzmann-estimator gradient of the h(r) loss
over the finite frames (one VJP) and g_QM the energy/force-loss gradient on the QM training set
(no new QM calls); with ``estimator.max_steps_per_epoch > 1`` further steps reuse the epoch's
frames, importance-reweighted (:mod:`stablejax.train.learn`). As the reference, learning epoch
t's reduce-on-plateau and exit test read the unstable fraction of epoch t-1's simulation.

Split between static and traced: :class:`StableFns` (functions, the config they were built
with) is the static part of :class:`TrainState`, the way an equinox module carries its
functions; everything that is an array (parameters, optimizer state, replicas, phase, counters,
PRNG key, the target and QM batches in ``state.data``) is a pytree leaf passed in and out.

Example::

    fns = make_stable(problem, cfg)
    state = fns.init(params)                  # or TrainState.create(problem, params, cfg)
    state = stablejax.train(state, cfg, run_dir="runs/stable")   # checkpointed, resumable
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from stablejax._keys import raw_key
from stablejax._types import Array, Params, ProgressFn
from stablejax.config import to_dict
from stablejax.io.run_dir import END_OF_CYCLE, KEPT, RunDir
from stablejax.simulate import ReplicaState
from stablejax.train import phases
from stablejax.train.learn import (
    StableData,
    learn_epoch,
    learning_frames,
    make_frame_reweighting,
    make_learn_step,
)
from stablejax.train.optim import PlateauState, observe_plateau, plateau_of, stable_optimizer
from stablejax.train.problem import Problem, replica_starts
from stablejax.train.stable_config import Phase, TrainConfig

log = logging.getLogger(__name__)

# TrainConfig fields that only steer the loop; a run may be resumed or continued with others.
LOOP_FIELDS = ("n_epochs", "stable_epochs")
# Fields a resume from a run directory may change when the caller names them (allow_changes).
RESUMABLE_FIELDS = LOOP_FIELDS + ("optimizer.learning_rate",)


@dataclasses.dataclass(frozen=True, eq=False)
class StableFns:
    """The functions of one StABlE configuration (see :func:`make_stable`). Compared and hashed
    by identity: it is the static part of :class:`TrainState`."""

    init: Callable[..., "TrainState"]
    epoch: Callable[..., tuple["TrainState", dict]]
    learn_step: Callable
    cfg: TrainConfig
    problem: Problem


@struct.dataclass
class TrainState:
    """The evolving state of StABlE training (a pytree; ``fns`` is static).

    Create with :meth:`TrainState.create` or ``make_stable(problem, cfg).init(params)``.
    """

    params: Params  # model parameters
    opt_state: optax.OptState  # stable_optimizer state: non-finite count, plateau of the phase
    phase: Array  # () i32, a Phase
    epoch: Array  # () i32, epochs completed
    cycle: Array  # () i32, learning phases completed
    replicas: ReplicaState  # replicas at the end of the last epoch
    epoch_start: ReplicaState  # their start states of the last epoch
    learn_start: ReplicaState  # start states of the epoch that crossed the threshold
    ring: ReplicaState  # [K] older start-of-epoch states of simulation epochs
    ring_count: Array  # () i32, states pushed into the ring so far
    last_unstable: Array  # [n_replicas] bool, unstable in the last epoch
    phase_unstable: Array  # [n_replicas] bool, unstable at least once in this simulation phase
    sim_epochs_in_phase: Array  # () i32, epochs of the current simulation phase
    stable_streak: Array  # () i32, consecutive simulation epochs below the threshold
    key: Array  # [2] u32 PRNG key
    data: StableData  # h(r) target, QM batches (inputs of the learn step, not checkpointed)
    fns: StableFns = struct.field(pytree_node=False)

    @classmethod
    def create(cls, problem: Problem, params: Params, cfg: TrainConfig,
               key: Array | None = None) -> "TrainState":
        """``make_stable(problem, cfg).init(params, key)``: replicas start from random training
        structures with Maxwell-Boltzmann velocities (key default ``PRNGKey(cfg.seed)``)."""
        return make_stable(problem, cfg).init(params, key)

    @property
    def plateau(self) -> PlateauState:
        return plateau_of(self.opt_state)

    @property
    def learning_rate(self) -> float:
        """The SGD rate of the current epoch: lr_0 x plateau scale in learning, 0 otherwise."""
        return phase_learning_rate(int(self.phase), self.opt_state, self.fns.cfg)

    @property
    def unstable_fraction(self) -> float:
        """Fraction of replicas unstable in the last epoch (exact: count / n)."""
        return phases.fraction(self.last_unstable)

    def checkpoint_arrays(self) -> dict:
        """What a checkpoint holds: every evolving array (not the input data)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("data", "fns")}


def phase_learning_rate(phase: int, opt_state: Any, cfg: TrainConfig) -> float:
    """The SGD rate of an epoch: lr_0 x the plateau scale in learning, 0 in simulation."""
    if phase != Phase.LEARNING:
        return 0.0
    return cfg.optimizer.learning_rate * float(plateau_of(opt_state).scale)


def make_stable(problem: Problem, cfg: TrainConfig, *, mesh: Any = None) -> StableFns:
    """StABlE's functions for one problem and configuration.

    Args:
      problem: model, simulator, observable and data (:func:`stablejax.train.make_problem`, or
        built by hand from the public API, e.g. for a periodic fluid).
      cfg: the training config.
      mesh: reserved for a device mesh (replicas and frames sharded); only None (one device)
        is supported.

    Returns:
      ``StableFns(init, epoch, learn_step, cfg, problem)``: ``init(params, key=None)`` ->
      :class:`TrainState`; ``epoch(state, progress=None)`` -> (state, record).

    Raises:
      ValueError: the simulator's chunk does not divide ``steps_per_epoch``; ``qm_weight > 0``
        without QM batches; a mesh.
    """
    if mesh is not None:
        raise ValueError("make_stable(mesh=...) is not supported yet: pass mesh=None")
    spc = problem.simulator.settings.steps_per_chunk
    if cfg.steps_per_epoch % spc:
        raise ValueError(f"TrainConfig.epoch_ps={cfg.epoch_ps} ({cfg.steps_per_epoch} steps) is "
                         f"not a multiple of the simulator's steps per chunk ({spc})")
    tx = stable_optimizer(cfg.optimizer.learning_rate, grad_clip_norm=cfg.optimizer.grad_clip_norm,
                          plateau_factor=cfg.optimizer.plateau_factor,
                          plateau_patience=cfg.optimizer.plateau_patience,
                          method=cfg.optimizer.method)
    learn_step = make_learn_step(problem, cfg, tx)
    reweighting = make_frame_reweighting(problem, cfg) \
        if cfg.estimator.max_steps_per_epoch > 1 else None
    sim = problem.simulator

    def init(params: Params, key: Array | None = None) -> TrainState:
        key = jax.random.PRNGKey(cfg.seed) if key is None else jnp.asarray(key)
        key = raw_key(key)  # raw uint32 keys: checkpointable as plain arrays
        params = jax.tree.map(jnp.asarray, params)  # python floats -> arrays
        leaves = jax.tree.leaves(params)
        if not leaves:
            raise ValueError("params has no array leaves")
        k_pos, k_vel, k_run = jax.random.split(key, 3)
        R0 = jnp.asarray(replica_starts(problem, cfg.n_replicas, k_pos), leaves[0].dtype)
        replicas = sim.init(params, R0, k_vel)
        n_ring = cfg.phases.n_checkpoints_kept
        ring = jax.tree.map(lambda x: jnp.repeat(x[None], n_ring, 0), replicas)
        data = StableData(target=jnp.asarray(problem.target), qm_batches=problem.qm_batches)
        i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
        return TrainState(
            params=params, opt_state=tx.init(params), phase=i32(Phase.SIMULATION),
            epoch=i32(0), cycle=i32(0), replicas=replicas, epoch_start=replicas,
            learn_start=replicas, ring=ring, ring_count=i32(0),
            last_unstable=jnp.zeros((cfg.n_replicas,), bool),
            phase_unstable=jnp.zeros((cfg.n_replicas,), bool),
            sim_epochs_in_phase=i32(0), stable_streak=i32(0), key=k_run, data=data, fns=fns)

    def epoch(state: TrainState, progress: ProgressFn | None = None) -> tuple[TrainState, dict]:
        """One epoch of the phase machine; returns the new state and its log record."""
        t0 = time.perf_counter()
        check_state(state, cfg)
        # What the phase machine decides on, read from the device once.
        h = jax.device_get({"phase": state.phase, "epoch": state.epoch, "cycle": state.cycle,
                            "last_unstable": state.last_unstable,
                            "frozen": state.replicas.frozen,
                            "phase_unstable": state.phase_unstable,
                            "ring_count": state.ring_count,
                            "sim_epochs": state.sim_epochs_in_phase,
                            "streak": state.stable_streak})
        key, k_start, k_learn = jax.random.split(state.key, 3)
        f_prev = phases.fraction(h["last_unstable"])
        f_phase = phases.fraction(h["phase_unstable"])
        phase, opt_state, learn_start = int(h["phase"]), state.opt_state, state.learn_start
        if phases.enters_learning(phase, int(h["epoch"]), f_phase, cfg):
            phase, opt_state = int(Phase.LEARNING), tx.init(state.params)
            learn_start = state.epoch_start
        ring, ring_count = state.ring, state.ring_count
        if phase == Phase.LEARNING:
            start, n_reset, n_jumped = learn_start, 0, 0
        elif int(h["epoch"]) == 0:
            start, n_reset, n_jumped = state.replicas, 0, 0
        else:
            start, n_reset, n_jumped = phases.simulation_starts(
                sim, state.replicas, state.epoch_start, state.ring,
                unstable=h["last_unstable"] | h["frozen"],
                n_stored=min(int(h["ring_count"]), cfg.phases.n_checkpoints_kept),
                first_epoch_of_phase=int(h["sim_epochs"]) == 0, cfg=cfg, key=k_start)
        start = phases.clear_flags(start)
        if phase == Phase.SIMULATION:
            slot = int(h["ring_count"]) % cfg.phases.n_checkpoints_kept
            ring = jax.tree.map(lambda r, s: r.at[slot].set(s), ring, start)
            ring_count = ring_count + 1
        lr = phase_learning_rate(phase, opt_state, cfg)

        sim_progress = None
        if progress is not None:
            sim_progress = lambda d, t, i: progress(d, t, {**i, "stage": "simulate"})  # noqa: E731
        replicas, traj = sim.run(state.params, start, cfg.steps_per_epoch,
                                 progress=sim_progress)
        unstable = replicas.unstable
        good_frames = phases.stable_frames(traj)
        hr = jax.vmap(jax.vmap(problem.observable_fn))(traj.positions)
        loss, unstable_h = jax.device_get((
            phases.epoch_obs_loss(hr, good_frames, state.data.target.astype(hr.dtype)),
            unstable))
        f_new = phases.fraction(unstable_h)
        loss = float(loss)
        record = {"epoch": int(h["epoch"]), "phase": Phase(phase).name.lower(),
                  "cycle": int(h["cycle"]), "unstable_fraction": f_new,
                  "unstable_fraction_before": f_prev, "unstable_fraction_phase_before": f_phase,
                  "learning_rate": lr,
                  "hr_loss_stable_frames": loss if loss == loss else None,  # None: no frame
                  "n_reset": n_reset, "n_jumped": n_jumped}
        if int(h["epoch"]) == 0:
            record.update(validation_errors(problem, state.params))

        params, cycle = state.params, int(h["cycle"])
        sim_epochs, streak = int(h["sim_epochs"]), int(h["streak"])
        phase_unstable = state.phase_unstable
        if phase == Phase.LEARNING:
            mask = good_frames if cfg.estimator.stable_frames_only else traj.valid
            params, opt_state, info = learn_epoch(
                params, opt_state, state.data, learning_frames(traj), mask.reshape(-1), k_learn,
                cfg, learn_step, reweighting, int(h["epoch"]))
            record.update(info)
            # As the reference, the plateau rule and the exit test of learning epoch t read the
            # unstable fraction of epoch t-1's simulation (docs/method.md §4, learning phase).
            opt_state = observe_plateau(opt_state, f_prev, factor=cfg.optimizer.plateau_factor,
                                        patience=cfg.optimizer.plateau_patience)
            record["plateau_observed_fraction"] = f_prev
            record.update(validation_errors(problem, params))
            if phases.leaves_learning(int(plateau_of(opt_state).n_reductions), f_prev, cfg):
                phase, cycle = int(Phase.SIMULATION), cycle + 1
                record["end_of_cycle"] = cycle
                # The next simulation phase restarts from the learning phase's start states.
                replicas, unstable, sim_epochs = learn_start, jnp.zeros_like(unstable), 0
                phase_unstable = jnp.zeros_like(unstable)
            streak = 0
        else:
            sim_epochs += 1
            phase_unstable = phase_unstable | unstable
            f_phase_new = phases.fraction(jax.device_get(phase_unstable))
            record["unstable_fraction_phase"] = f_phase_new
            streak = phases.stable_streak(streak, cycle, f_phase_new, cfg)
        i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
        new_state = state.replace(
            params=params, opt_state=opt_state, phase=i32(phase), epoch=state.epoch + 1,
            cycle=i32(cycle), replicas=replicas, epoch_start=start, learn_start=learn_start,
            ring=ring, ring_count=ring_count, last_unstable=unstable,
            phase_unstable=phase_unstable, sim_epochs_in_phase=i32(sim_epochs),
            stable_streak=i32(streak), key=key)
        record["stable_streak"] = streak
        record["seconds"] = time.perf_counter() - t0
        return new_state, record

    fns = StableFns(init=init, epoch=epoch, learn_step=learn_step, cfg=cfg, problem=problem)
    return fns


def validation_errors(problem: Problem, params: Params) -> dict:
    """``val_energy_mae_mev`` and ``val_force_mae_mev_per_angstrom`` of ``params`` on the
    problem's validation frames (empty when it has none)."""
    if problem.val_errors is None:
        return {}
    err = problem.val_errors(params)
    return {"val_energy_mae_mev": err["energy_mae_mev"],
            "val_force_mae_mev_per_angstrom": err["force_mae_mev_per_angstrom"]}


def check_state(state: TrainState, cfg: TrainConfig) -> None:
    """The state's shapes must be those of ``cfg`` (replicas, ring of old states)."""
    n_rep = int(state.last_unstable.shape[0])
    if n_rep != cfg.n_replicas:
        raise ValueError(f"TrainConfig.n_replicas is {cfg.n_replicas} but the state has {n_rep} "
                         "replicas (create the state with the same config)")
    n_ring = int(jax.tree.leaves(state.ring)[0].shape[0])
    if n_ring != cfg.phases.n_checkpoints_kept:
        raise ValueError(f"TrainConfig.phases.n_checkpoints_kept is "
                         f"{cfg.phases.n_checkpoints_kept} but the state keeps {n_ring} (create "
                         "the state with the same config)")


def check_config(state: TrainState, cfg: TrainConfig) -> None:
    """``cfg`` must equal the config the state's functions were built with, except for the
    loop's own fields (``n_epochs``, ``stable_epochs``)."""
    from stablejax.io.inputs import flatten

    built, given = flatten(to_dict(state.fns.cfg)), flatten(to_dict(cfg))
    diff = [k for k in given if k not in LOOP_FIELDS and given[k] != built.get(k)]
    if diff:
        detail = ", ".join(f"{k}={given[k]!r} (state: {built.get(k)!r})" for k in diff)
        raise ValueError(f"TrainConfig differs from the one the state was created with: {detail}; "
                         "create the state with this config (make_stable(problem, cfg).init) "
                         "or pass the state's config")
    check_state(state, cfg)


def stop_reason(state: TrainState, cfg: TrainConfig) -> str | None:
    if int(state.epoch) >= cfg.n_epochs:
        return f"n_epochs {cfg.n_epochs} reached"
    if cfg.stable_epochs is not None and int(state.stable_streak) >= cfg.stable_epochs:
        return f"stable: {cfg.stable_epochs} simulation epochs below the threshold"
    return None


def train(state: TrainState, cfg: TrainConfig, *, run_dir: str | Path | None = None,
          progress: ProgressFn | None = None, allow_changes: tuple[str, ...] = (),
          keep_epoch: Callable[[list[dict]], int] | None = None) -> TrainState:
    """Run StABlE training until ``cfg.n_epochs`` or the model is stable (see module doc).

    ``cfg`` is checked against the config the state was created with (only ``n_epochs`` and
    ``stable_epochs`` may differ).

    With ``run_dir``: an orbax checkpoint of the whole evolving state every epoch
    (``run_dir/checkpoints``), the parameters at the end of every learning phase
    (``run_dir/end_of_cycle``), and ``run_dir/metrics.jsonl`` (one record per epoch: phase,
    unstable fraction, losses, learning rate, seconds). If ``run_dir`` holds a checkpoint, the
    run resumes from it and continues identically. The directory records the config it was made
    with (``inputs.json``, see :mod:`stablejax.io.inputs`); resuming with another config is
    refused, except for ``n_epochs``/``stable_epochs`` and the fields named in
    ``allow_changes``.

    Args:
      progress: ``progress(done, total, info)``; called with the epoch count after each epoch
        (info: the epoch's record) and with simulated steps during an epoch
        (info['stage'] == 'simulate').
      allow_changes: TrainConfig fields (dotted, from ``RESUMABLE_FIELDS``, e.g.
        ``"optimizer.learning_rate"``) that may differ from the run directory's record.
      keep_epoch: a rule ``records -> epoch`` on the training log so far (e.g.
        :func:`stablejax.train.selection.post_cycle_epoch`); after every epoch whose log names
        that epoch, its parameters are saved as ``run_dir/kept`` (one slot), so the slot ends
        with the epoch the whole log names when each prefix names either its last epoch or the
        final answer. Needs ``run_dir``.

    Raises:
      InputError: the run directory was made with another config (fields named).
    """
    from stablejax.io.inputs import allow_paths, check_inputs

    check_config(state, cfg)  # before restoring: shapes must match the checkpoint
    if keep_epoch is not None and run_dir is None:
        raise ValueError("train(keep_epoch=...) needs a run_dir to keep the parameters in")
    rd = RunDir(run_dir) if run_dir is not None else None
    if rd is not None:
        allow = allow_paths(LOOP_FIELDS + tuple(allow_changes), RESUMABLE_FIELDS)
        check_inputs(rd.path, {"config": to_dict(cfg)}, allow=allow,
                     resumable=[f"config.{k}" for k in RESUMABLE_FIELDS],
                     defaults={"config": to_dict(type(cfg)())})
        arrays = rd.resume(like=state.checkpoint_arrays())
        if arrays is not None:
            state = state.replace(**arrays)
            log.info("resumed StABlE training after epoch %d", int(state.epoch))
    while (reason := stop_reason(state, cfg)) is None:
        state, record = state.fns.epoch(state, progress)
        if rd is not None:
            # The state checkpoint goes last: a run killed in between resumes from the previous
            # epoch, drops this epoch's log line and rewrites both identically.
            epoch = int(state.epoch)
            if "end_of_cycle" in record:
                rd.save_params(END_OF_CYCLE, record["end_of_cycle"], state.params,
                               {"epoch": epoch}, keep=None)
            if keep_epoch is not None and keep_epoch(rd.records() + [record]) == record["epoch"]:
                rd.save_params(KEPT, epoch, state.params, {"epoch": record["epoch"]}, keep=1)
            rd.save_epoch(epoch, state.checkpoint_arrays(), record, {"phase": record["phase"]})
        if progress is not None:
            progress(int(state.epoch), cfg.n_epochs, record)
    log.info("StABlE training stops: %s", reason)
    return state


def train_epoch(state: TrainState, progress: ProgressFn | None = None
                ) -> tuple[TrainState, dict]:
    """One epoch with the state's own functions: ``state.fns.epoch(state, progress)``."""
    return state.fns.epoch(state, progress)
