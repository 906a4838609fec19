"""StABlE training: ``stablejax.train(state, cfg)``, the phase machine of method.md §3 and §6.6.

Each epoch simulates all replicas for ``cfg.steps_per_epoch`` steps.

* Simulation phase (learning rate 0): unstable replicas are reset to their start-of-epoch
  state (with fresh Maxwell-Boltzmann velocities unless ``fresh_velocities_on_reset=False``),
  stable ones continue; in the first epoch of a simulation phase a fraction
  ``reset_probability`` of stable replicas jumps to an older start-of-epoch checkpoint. When the
  fraction of replicas that went unstable at least once in the current simulation phase reaches
  ``max_frac_unstable``, the next epoch enters learning (a reset replica stays counted: with
  fresh velocities it need not fail again, while the reference's deterministic replay makes it
  fail every epoch; both give the build-up of method.md §3).
* Learning phase: every epoch re-simulates all replicas from the start states of the epoch that
  crossed the threshold with the current model, then takes one SGD step on
  g = g_obs + qm_weight * g_QM (clipped), where g_obs is the Boltzmann-estimator gradient of the
  h(r) loss over the finite frames (``stablejax.estimator.boltzmann_loss``, one VJP) and g_QM
  the energy/force-loss gradient on the QM training set (no new QM calls). With
  ``max_learning_steps_per_epoch > 1`` further steps reuse the epoch's frames, importance-
  reweighted, while their effective sample size stays high (method.md 6.12). The unstable fraction
  measured before the step drives reduce-on-plateau; learning ends after ``max_lr_reductions``
  reductions or when the fraction is at most ``min_frac_unstable``.

Everything that evolves is in :class:`TrainState` (a pytree) and is checkpointed with orbax
every epoch; a killed run resumed from its run directory continues identically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from stablejax._types import Array, Params, ProgressFn
from stablejax.estimator import boltzmann_loss, frame_energies, importance_weights
from stablejax.io.checkpoint import latest_step, restore_checkpoint, save_checkpoint
from stablejax.simulate import ReplicaState
from stablejax.simulate.state import where_replicas
from stablejax.train.losses import qm_loss
from stablejax.train.plateau import PlateauState, plateau_update
from stablejax.train.problem import Problem, replica_starts
from stablejax.train.stable_config import Phase, TrainConfig

log = logging.getLogger(__name__)


@struct.dataclass
class TrainState:
    """The evolving state of StABlE training (a pytree; ``problem`` is static).

    Create with :meth:`TrainState.create`.
    """

    params: Params  # model parameters
    phase: Array  # () i32, a Phase
    epoch: Array  # () i32, epochs completed
    cycle: Array  # () i32, learning phases completed
    learning_rate: Array  # () f32, SGD rate (0 in simulation phases)
    plateau: PlateauState  # reduce-on-plateau of the current learning phase
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
    problem: Problem = struct.field(pytree_node=False)

    @classmethod
    def create(cls, problem: Problem, params: Params, cfg: TrainConfig,
               key: Array | None = None) -> "TrainState":
        """Start replicas from random training structures with Maxwell-Boltzmann velocities.

        Args:
          problem: from :func:`stablejax.train.make_problem`.
          params: the (pre-trained) model parameters.
          cfg: the training config.
          key: PRNG key (default ``PRNGKey(cfg.seed)``).
        """
        key = jax.random.PRNGKey(cfg.seed) if key is None else jnp.asarray(key)
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)  # raw uint32 keys: checkpointable as plain arrays
        params = jax.tree.map(jnp.asarray, params)  # python floats -> arrays (SGD, checkpoints)
        leaves = jax.tree.leaves(params)
        if not leaves:
            raise ValueError("params has no array leaves")
        k_pos, k_vel, k_run = jax.random.split(key, 3)
        dtype = leaves[0].dtype
        R0 = jnp.asarray(replica_starts(problem, cfg.n_replicas, k_pos), dtype)
        replicas = problem.simulator.init(params, R0, k_vel)
        ring = jax.tree.map(lambda x: jnp.repeat(x[None], cfg.n_checkpoints_kept, 0), replicas)
        return cls(
            params=params, phase=jnp.asarray(int(Phase.SIMULATION), jnp.int32),
            epoch=jnp.asarray(0, jnp.int32), cycle=jnp.asarray(0, jnp.int32),
            learning_rate=jnp.asarray(0.0, jnp.float32), plateau=PlateauState.create(),
            replicas=replicas, epoch_start=replicas, learn_start=replicas, ring=ring,
            ring_count=jnp.asarray(0, jnp.int32),
            last_unstable=jnp.zeros((cfg.n_replicas,), bool),
            phase_unstable=jnp.zeros((cfg.n_replicas,), bool),
            sim_epochs_in_phase=jnp.asarray(0, jnp.int32),
            stable_streak=jnp.asarray(0, jnp.int32), key=k_run, problem=problem)

    @property
    def unstable_fraction(self) -> float:
        """Fraction of replicas unstable in the last epoch, an exact Python float (count / n):
        a float32 mean would put e.g. 7/10 just below 0.7 and miss a threshold of 0.7."""
        return _fraction(self.last_unstable)


def _fraction(mask: Array) -> float:
    return int(jnp.sum(mask)) / int(mask.shape[0])


def _stable_frames(traj) -> Array:
    """[n_replicas, n_frames] bool: finite frames recorded before the replica first went
    unstable in this epoch (a frame after the first violation stays excluded even when the
    criterion no longer fires on it)."""
    went_unstable = jnp.cumsum(traj.unstable.astype(jnp.int32), axis=1) > 0
    return traj.valid & ~went_unstable


def _clear_flags(rs: ReplicaState) -> ReplicaState:
    """Start a new epoch: instability flags refer to one epoch (frozen replicas stay frozen
    until they are reset)."""
    return rs.replace(unstable=rs.frozen, first_unstable_step=jnp.where(rs.frozen, 0, -1),
                      step=jnp.zeros_like(rs.step))


def make_learn_step(problem: Problem, cfg: TrainConfig):
    """Jitted ``learn_step(params, frames, mask, key, lr, log_weights=None) -> (params, info)``:
    one clipped SGD step on g_obs + qm_weight * g_QM (``log_weights``: importance weights of
    frames sampled under older parameters, see :func:`make_frame_reweighting`). ``info`` holds
    scalars (losses, norms, frames used, finite) and ``energies`` [n_frames], the frames' energies
    under the step's input parameters (NaN with ``cfg.estimator_forward_energies=False``).

    Raises:
      ValueError: ``cfg.qm_weight > 0`` but ``problem.qm_batches`` is None.
    """
    if cfg.qm_weight > 0 and problem.qm_batches is None:
        raise ValueError(
            f"TrainConfig.qm_weight is {cfg.qm_weight} but the problem has no QM batches "
            "(Problem.qm_batches is None): set qm_weight=0 or give labelled frames")
    use_qm = cfg.qm_weight > 0
    model = problem.model
    energy_fn = lambda p, R: model.energy_fn(p, R)  # noqa: E731
    target = jnp.asarray(problem.target)

    def obs_loss(params, frames, mask, key, log_weights):
        return boltzmann_loss(params, frames, energy_fn=energy_fn,
                              observable_fn=problem.observable_fn, target=target,
                              kT=problem.kT_ev, mask=mask, log_weights=log_weights,
                              scaling=cfg.scaling,
                              block_size=cfg.block_size, chunk_size=cfg.chunk_size, key=key,
                              has_aux=True, forward_energies=cfg.estimator_forward_energies)

    def qm_grad(params, key):
        batches = problem.qm_batches
        n = batches.energies.shape[0]
        if cfg.qm_max_batches is not None and cfg.qm_max_batches < n:
            idx = jax.random.choice(key, n, (cfg.qm_max_batches,), replace=False)
            batches = jax.tree.map(lambda x: x[idx], batches)
        loss_fn = lambda p, b: qm_loss(p, b, energy_fn=model.energy_fn, cfg=cfg.qm_loss,  # noqa: E731
                                       scales=problem.qm_scales)[0]

        def one(acc, b):
            l, g = jax.value_and_grad(loss_fn)(params, b)
            return jax.tree.map(jnp.add, acc, (l, g)), None

        zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
        (l, g), _ = jax.lax.scan(one, zero, batches)
        m = batches.energies.shape[0]
        return l / m, jax.tree.map(lambda x: x / m, g)

    @jax.jit
    def learn_step(params, frames, mask, key, lr, log_weights=None):
        k_est, k_qm = jax.random.split(key)
        (l_obs, aux), g_obs = jax.value_and_grad(obs_loss, has_aux=True)(params, frames, mask,
                                                                          k_est, log_weights)
        if use_qm:
            l_qm, g_qm = qm_grad(params, k_qm)
            g = jax.tree.map(lambda a, b: a + cfg.qm_weight * b, g_obs, g_qm)
        else:
            l_qm, g = jnp.zeros(()), g_obs
        norm = optax.tree.norm(g)
        finite = jnp.isfinite(norm)
        scale = jnp.where(finite, jnp.minimum(1.0, cfg.grad_clip_norm / (norm + 1e-12)), 0.0)
        new = jax.tree.map(lambda p, d: p - (lr * scale * jnp.where(finite, d, 0)).astype(p.dtype),
                           params, g)
        info = {"obs_loss": l_obs, "qm_loss": l_qm, "grad_norm": norm,
                "obs_grad_norm": optax.tree.norm(g_obs), "n_frames_used": aux.n_valid,
                "finite": finite, "energies": aux.energies}
        return new, info

    return learn_step


def make_frame_reweighting(problem: Problem, cfg: TrainConfig):
    """Jitted ``(energies, weights)`` for reusing a learning epoch's frames (method.md 6.12):
    ``energies(params, frames) -> [n]`` eV, stored at sampling time, and
    ``weights(params, frames, mask, ref_energies) -> ImportanceWeights`` under newer parameters,
    at the sampling temperature (beta is physical whatever the estimator's scaling)."""
    energy_fn = lambda p, R: problem.model.energy_fn(p, R)  # noqa: E731
    energies = jax.jit(lambda p, f: frame_energies(p, f, energy_fn, chunk_size=cfg.chunk_size))
    weights = jax.jit(lambda p, f, m, e0: importance_weights(
        p, f, energy_fn, e0, problem.kT_ev, m, chunk_size=cfg.chunk_size))
    return energies, weights


def _learn(params, frames, mask, key, lr, cfg: TrainConfig, learn_step, reweighting,
           epoch: int) -> tuple[Params, dict]:
    """The SGD steps of one learning epoch: the first on the fresh frames, then up to
    ``cfg.max_learning_steps_per_epoch - 1`` more on the same frames, importance-reweighted,
    while their ESS stays >= ``cfg.reuse_min_ess_fraction`` of the usable frames. The record
    carries the first step's losses and norms (those of the fresh frames)."""
    params0 = params
    params, info = learn_step(params, frames, mask, key, lr)
    e_fresh = info.pop("energies")
    record = {k: (bool(v) if k == "finite" else float(v)) for k, v in info.items()}
    if not record["finite"]:
        log.warning("epoch %d: non-finite gradient, update skipped", epoch)
    n_steps, ess_fraction = 1, None
    if cfg.max_learning_steps_per_epoch > 1 and record["finite"]:
        energies_fn, weights_fn = reweighting
        # The estimator's forward pass already evaluated the fresh frames' energies.
        e0 = e_fresh if cfg.estimator_forward_energies else energies_fn(params0, frames)
        usable = mask & jnp.isfinite(e0)
        n_usable = int(jnp.sum(usable))
        for k in jax.random.split(jax.random.fold_in(key, 1),
                                  cfg.max_learning_steps_per_epoch - 1):
            w = weights_fn(params, frames, usable, e0)
            ess_fraction = float(w.ess) / max(n_usable, 1)
            if n_usable == 0 or ess_fraction < cfg.reuse_min_ess_fraction:
                break
            new, info_k = learn_step(params, frames, usable, k, lr, jnp.log(w.weights))
            if not bool(info_k["finite"]):
                break
            params, n_steps = new, n_steps + 1
            record["obs_loss_last_step"] = float(info_k["obs_loss"])
            record["qm_loss_last_step"] = float(info_k["qm_loss"])
    record["learning_steps"] = n_steps
    record["reuse_ess_fraction"] = ess_fraction
    return params, record


@jax.jit
def _epoch_obs_loss(h, valid, target):
    """MSE of the mean h(r) of the selected frames vs the target (NaN when none is selected)."""
    m = valid.reshape(-1)
    h = h.reshape(-1, h.shape[-1])
    # where, not a product: h(r) of a frame that flew apart is NaN, and NaN * 0 is NaN.
    mean = jnp.sum(jnp.where(m[:, None], h, 0.0), 0) / m.sum()
    return jnp.mean((mean - target) ** 2)


def _start_states(state: TrainState, cfg: TrainConfig, phase: int,
                  key: Array) -> tuple[ReplicaState, dict]:
    """Start states of this epoch and what was reset (method.md §3 step 2)."""
    sim = state.problem.simulator
    info = {"n_reset": 0, "n_jumped": 0}
    if phase == Phase.LEARNING:
        return state.learn_start, info
    start = state.replicas
    if int(state.epoch) == 0:
        return start, info
    k_reset, k_pick, k_idx, k_jump = jax.random.split(key, 4)
    unstable = state.last_unstable | state.replicas.frozen
    if bool(jnp.any(unstable)):
        start = sim.reset_replicas(start, unstable, state.epoch_start,
                                   key=k_reset if cfg.fresh_velocities_on_reset else None)
        info["n_reset"] = int(jnp.sum(unstable))
    n_stored = min(int(state.ring_count), cfg.n_checkpoints_kept)
    if int(state.sim_epochs_in_phase) == 0 and cfg.reset_probability > 0 and n_stored > 0:
        stable_idx = np.flatnonzero(~np.asarray(unstable))
        n_jump = math.ceil(cfg.reset_probability * len(stable_idx))
        if n_jump:
            chosen = np.asarray(jax.random.choice(k_pick, stable_idx, (n_jump,), replace=False))
            slots = np.asarray(jax.random.randint(k_idx, (cfg.n_replicas,), 0, n_stored))
            older = jax.tree.map(lambda x: x[slots, np.arange(cfg.n_replicas)], state.ring)
            mask = np.zeros(cfg.n_replicas, bool)
            mask[chosen] = True
            jumped = where_replicas(jnp.asarray(mask), older, start)
            if cfg.fresh_velocities_on_reset:
                jumped = sim.reset_replicas(start, jnp.asarray(mask), jumped, key=k_jump)
            start = jumped
            info["n_jumped"] = int(n_jump)
    return start, info


def train_epoch(state: TrainState, cfg: TrainConfig, learn_step=None,
                progress: ProgressFn | None = None,
                reweighting=None) -> tuple[TrainState, dict]:
    """One epoch of the phase machine; returns the new state and its log record.

    ``learn_step`` and ``reweighting`` (from :func:`make_learn_step` and
    :func:`make_frame_reweighting`) are built when not given; pass them to reuse compilations.
    """
    t0 = time.perf_counter()
    _check_compatible(state, cfg)
    problem = state.problem
    sim = problem.simulator
    learn_step = learn_step or make_learn_step(problem, cfg)
    if reweighting is None and cfg.max_learning_steps_per_epoch > 1:
        reweighting = make_frame_reweighting(problem, cfg)
    key, k_start, k_learn = jax.random.split(state.key, 3)
    f_prev = state.unstable_fraction
    # In a simulation phase the count builds up: a replica that failed once stays counted even
    # if, reset with fresh velocities, it survives later epochs (the reference gets the same
    # build-up from replaying failures deterministically).
    f_phase = _fraction(state.phase_unstable)
    phase, lr, plateau = int(state.phase), state.learning_rate, state.plateau
    learn_start = state.learn_start
    entering = phase == Phase.SIMULATION and int(state.epoch) > 0 and \
        f_phase >= cfg.max_frac_unstable
    if entering:
        phase, lr, plateau = int(Phase.LEARNING), jnp.asarray(cfg.learning_rate, jnp.float32), \
            PlateauState.create()
        learn_start = state.epoch_start
        state = state.replace(learn_start=learn_start)
    start, reset_info = _start_states(state, cfg, phase, k_start)
    start = _clear_flags(start)
    ring, ring_count = state.ring, state.ring_count
    if phase == Phase.SIMULATION:
        slot = int(ring_count) % cfg.n_checkpoints_kept
        ring = jax.tree.map(lambda r, s: r.at[slot].set(s), ring, start)
        ring_count = ring_count + 1

    sim_progress = None
    if progress is not None:
        sim_progress = lambda d, t, i: progress(d, t, {**i, "stage": "simulate"})  # noqa: E731
    replicas, traj = sim.run(state.params, start, cfg.steps_per_epoch, progress=sim_progress)
    unstable = replicas.unstable
    f_new = _fraction(unstable)
    stable_frames = _stable_frames(traj)
    h = jax.vmap(jax.vmap(problem.observable_fn))(traj.positions)
    epoch_obs_loss = float(_epoch_obs_loss(h, stable_frames,
                                           jnp.asarray(problem.target, h.dtype)))
    epoch_obs_loss = epoch_obs_loss if math.isfinite(epoch_obs_loss) else None  # no stable frame
    record = {"epoch": int(state.epoch), "phase": Phase(phase).name.lower(),
              "cycle": int(state.cycle), "unstable_fraction": f_new,
              "unstable_fraction_before": f_prev, "unstable_fraction_phase_before": f_phase,
              "learning_rate": float(lr),
              "hr_loss_stable_frames": epoch_obs_loss, **reset_info}

    params, cycle = state.params, int(state.cycle)
    sim_epochs, streak = int(state.sim_epochs_in_phase), int(state.stable_streak)
    phase_unstable = state.phase_unstable
    if phase == Phase.LEARNING:
        mask = stable_frames if cfg.stable_frames_only else traj.valid
        frames = traj.positions.reshape((-1,) + traj.positions.shape[2:])
        params, info = _learn(params, frames, mask.reshape(-1), k_learn, lr, cfg, learn_step,
                              reweighting, int(state.epoch))
        record.update(info)
        # Scheduler and exit test use f measured before the update (method.md §3 step 4).
        plateau = plateau_update(plateau, f_new, factor=cfg.plateau_factor,
                                 patience=cfg.plateau_patience)
        lr = jnp.asarray(cfg.learning_rate, jnp.float32) * plateau.scale
        if int(plateau.n_reductions) >= cfg.max_lr_reductions or f_new <= cfg.min_frac_unstable:
            phase, cycle, lr = int(Phase.SIMULATION), cycle + 1, jnp.asarray(0.0, jnp.float32)
            record["end_of_cycle"] = cycle
            # The next simulation phase restarts from the learning phase's start states.
            replicas, unstable, sim_epochs = learn_start, jnp.zeros_like(unstable), 0
            phase_unstable = jnp.zeros_like(unstable)
        streak = 0
    else:
        sim_epochs += 1
        phase_unstable = phase_unstable | unstable
        f_phase_new = _fraction(phase_unstable)
        record["unstable_fraction_phase"] = f_phase_new
        streak = streak + 1 if (cycle > 0 and f_phase_new < cfg.max_frac_unstable) else 0
    new_state = state.replace(
        params=params, phase=jnp.asarray(phase, jnp.int32), epoch=state.epoch + 1,
        cycle=jnp.asarray(cycle, jnp.int32), learning_rate=jnp.asarray(lr, jnp.float32),
        plateau=plateau, replicas=replicas, epoch_start=start, ring=ring, ring_count=ring_count,
        last_unstable=unstable, phase_unstable=phase_unstable,
        sim_epochs_in_phase=jnp.asarray(sim_epochs, jnp.int32),
        stable_streak=jnp.asarray(streak, jnp.int32), key=key)
    record["stable_streak"] = streak
    record["seconds"] = time.perf_counter() - t0
    return new_state, record


def stop_reason(state: TrainState, cfg: TrainConfig) -> str | None:
    if int(state.epoch) >= cfg.n_epochs:
        return f"n_epochs {cfg.n_epochs} reached"
    if cfg.stable_epochs is not None and int(state.stable_streak) >= cfg.stable_epochs:
        return f"stable: {cfg.stable_epochs} simulation epochs below the threshold"
    return None


def _arrays(state: TrainState) -> dict:
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
            if f.name != "problem"}


def train(state: TrainState, cfg: TrainConfig, *, run_dir: str | Path | None = None,
          progress: ProgressFn | None = None) -> TrainState:
    """Run StABlE training until ``cfg.n_epochs`` or the model is stable (see module doc).

    With ``run_dir``: an orbax checkpoint of the whole state every epoch
    (``run_dir/checkpoints``), the parameters at the end of every learning phase
    (``run_dir/end_of_cycle``), and ``run_dir/metrics.jsonl`` (one record per epoch: phase,
    unstable fraction, losses, learning rate, seconds). If ``run_dir`` holds a checkpoint, the
    run resumes from it and continues identically.

    Args:
      progress: ``progress(done, total, info)``; called with the epoch count after each epoch
        (info: the epoch's record) and with simulated steps during an epoch
        (info['stage'] == 'simulate').
    """
    _check_compatible(state, cfg)  # before restoring: shapes must match the checkpoint
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if latest_step(run_dir / "checkpoints") is not None:
            arrays, _ = restore_checkpoint(run_dir / "checkpoints", like=_arrays(state))
            state = state.replace(**arrays)
            log.info("resumed StABlE training after epoch %d", int(state.epoch))
        _truncate_log(run_dir / "metrics.jsonl", int(state.epoch))
    learn_step = make_learn_step(state.problem, cfg)
    reweighting = make_frame_reweighting(state.problem, cfg)
    while (reason := stop_reason(state, cfg)) is None:
        state, record = train_epoch(state, cfg, learn_step, progress, reweighting)
        if run_dir is not None:
            # The state checkpoint goes last: a run killed in between resumes from the previous
            # epoch, drops this epoch's log line (_truncate_log) and rewrites both identically.
            epoch = int(state.epoch)
            with open(run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
            if "end_of_cycle" in record:
                save_checkpoint(run_dir / "end_of_cycle", record["end_of_cycle"],
                                {"params": state.params}, {"epoch": epoch}, max_to_keep=None)
            save_checkpoint(run_dir / "checkpoints", epoch, _arrays(state),
                            {"epoch": epoch, "phase": record["phase"]}, max_to_keep=2)
        if progress is not None:
            progress(int(state.epoch), cfg.n_epochs, record)
    log.info("StABlE training stops: %s", reason)
    return state


def _check_compatible(state: TrainState, cfg: TrainConfig) -> None:
    """The config must match the state's shapes and the simulator's chunking (checked before
    anything is traced)."""
    n_rep = int(state.last_unstable.shape[0])
    if n_rep != cfg.n_replicas:
        raise ValueError(f"TrainConfig.n_replicas is {cfg.n_replicas} but the state has {n_rep} "
                         "replicas (create the state with the same config)")
    n_ring = int(jax.tree.leaves(state.ring)[0].shape[0])
    if n_ring != cfg.n_checkpoints_kept:
        raise ValueError(f"TrainConfig.n_checkpoints_kept is {cfg.n_checkpoints_kept} but the "
                         f"state keeps {n_ring} (create the state with the same config)")
    spc = state.problem.simulator.settings.steps_per_chunk
    if cfg.steps_per_epoch % spc:
        raise ValueError(f"TrainConfig.steps_per_epoch={cfg.steps_per_epoch} is not a multiple "
                         f"of the simulator's steps per chunk ({spc})")


def _truncate_log(path: Path, n_epochs: int) -> None:
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln)["epoch"] < n_epochs]
    path.write_text("".join(k + "\n" for k in keep))
