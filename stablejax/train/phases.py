"""The decisions of StABlE's phase machine (docs/method.md §4), apart from the loop that acts
on them: when a learning phase starts and ends, and where each replica starts an epoch.

* Simulation phase: unstable replicas are reset to their start-of-epoch state (their own
  velocities and thermostat state, so with the frozen model they replay their failure; fresh
  Maxwell-Boltzmann velocities with ``fresh_velocities_on_reset=True``), stable ones continue;
  in the first epoch of a simulation phase a fraction ``reset_probability`` of the stable
  replicas jumps back to an older start-of-epoch checkpoint. When the fraction of replicas that
  went unstable at least once in the phase (the cumulative fraction) reaches
  ``max_frac_unstable``, the next epoch learns. Under the replay a failed replica fails again
  every epoch, so the cumulative fraction equals the last epoch's (the reference's rule);
  with fresh velocities a reset replica need not fail again, and the cumulative count still
  builds up.
* Learning phase: every epoch restarts all replicas from the start states of the epoch that
  crossed the threshold. The plateau rule and the exit test of learning epoch t read the
  unstable fraction of epoch t-1's simulation (the reference's order). It ends after
  ``max_lr_reductions`` plateau reductions or when that fraction is at most
  ``min_frac_unstable``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Array
from stablejax.simulate import ReplicaState, Simulator
from stablejax.simulate.state import where_replicas
from stablejax.train.stable_config import Phase, TrainConfig


def fraction(mask) -> float:
    """count / n of a boolean mask, an exact Python float: a float32 mean would put e.g. 7/10
    just below 0.7 and miss a threshold of 0.7."""
    m = np.asarray(mask)
    return int(m.sum()) / int(m.shape[0])


def enters_learning(phase: int, epoch: int, phase_unstable_fraction: float,
                    cfg: TrainConfig) -> bool:
    """A simulation phase turns into learning once the phase's unstable fraction reaches the
    threshold (never before the first epoch has run)."""
    return phase == Phase.SIMULATION and epoch > 0 and \
        phase_unstable_fraction >= cfg.phases.max_frac_unstable


def leaves_learning(n_reductions: int, unstable_fraction: float, cfg: TrainConfig) -> bool:
    """A learning phase ends after ``max_lr_reductions`` plateau reductions or when the unstable
    fraction it reads (learning epoch t: epoch t-1's simulation) is at most
    ``min_frac_unstable``."""
    return (n_reductions >= cfg.phases.max_lr_reductions
            or unstable_fraction <= cfg.phases.min_frac_unstable)


def stable_streak(streak: int, cycle: int, phase_unstable_fraction: float,
                  cfg: TrainConfig) -> int:
    """Consecutive simulation epochs below the threshold, counted after a learning phase."""
    below = phase_unstable_fraction < cfg.phases.max_frac_unstable
    return streak + 1 if (cycle > 0 and below) else 0


def clear_flags(rs: ReplicaState) -> ReplicaState:
    """Start a new epoch: instability flags refer to one epoch (frozen replicas stay frozen
    until they are reset)."""
    return rs.replace(unstable=rs.frozen, first_unstable_step=jnp.where(rs.frozen, 0, -1),
                      step=jnp.zeros_like(rs.step))


class Starts(NamedTuple):
    states: ReplicaState  # start states of the epoch
    n_reset: int  # unstable replicas reset to their last start state
    n_jumped: int  # stable replicas sent back to an older checkpoint


def simulation_starts(sim: Simulator, replicas: ReplicaState, epoch_start: ReplicaState,
                      ring: ReplicaState, *, unstable: np.ndarray, n_stored: int,
                      first_epoch_of_phase: bool, cfg: TrainConfig, key: Array) -> Starts:
    """Start states of a simulation epoch (docs/method.md §4, simulation phase, steps 1-2).

    Args:
      replicas: the replicas at the end of the last epoch.
      epoch_start: their start states of the last epoch (where unstable ones go back to).
      ring: [K] older start-of-epoch states.
      unstable: [n_replicas] bool (host), unstable or frozen in the last epoch.
      n_stored: states in the ring so far (at most K).
      first_epoch_of_phase: the reset-probability jumps happen only then.
    """
    k_reset, k_pick, k_idx, k_jump = jax.random.split(key, 4)
    start, n_reset, n_jump = replicas, 0, 0
    if unstable.any():
        start = sim.reset_replicas(start, jnp.asarray(unstable), epoch_start,
                                   key=k_reset if cfg.phases.fresh_velocities_on_reset else None)
        n_reset = int(unstable.sum())
    if first_epoch_of_phase and cfg.phases.reset_probability > 0 and n_stored > 0:
        stable_idx = np.flatnonzero(~unstable)
        n_jump = math.ceil(cfg.phases.reset_probability * len(stable_idx))
        if n_jump:
            n_rep = unstable.shape[0]
            chosen = np.asarray(jax.random.choice(k_pick, stable_idx, (n_jump,), replace=False))
            slots = np.asarray(jax.random.randint(k_idx, (n_rep,), 0, n_stored))
            older = jax.tree.map(lambda x: x[slots, np.arange(n_rep)], ring)
            mask = np.zeros(n_rep, bool)
            mask[chosen] = True
            jumped = where_replicas(jnp.asarray(mask), older, start)
            if cfg.phases.fresh_velocities_on_reset:
                jumped = sim.reset_replicas(start, jnp.asarray(mask), jumped, key=k_jump)
            start = jumped
    return Starts(start, n_reset, int(n_jump))


@jax.jit
def epoch_obs_loss(h: Array, valid: Array, target: Array) -> Array:
    """MSE of the mean observable of the selected frames vs the target (NaN when none is)."""
    m = valid.reshape(-1)
    h = h.reshape(-1, h.shape[-1])
    # where, not a product: h(r) of a frame that flew apart is NaN, and NaN * 0 is NaN.
    mean = jnp.sum(jnp.where(m[:, None], h, 0.0), 0) / m.sum()
    return jnp.mean((mean - target) ** 2)


def stable_frames(traj) -> Array:
    """[n_replicas, n_frames] bool: finite frames recorded before the replica first went
    unstable in this epoch (a frame after the first violation stays excluded even when the
    criterion no longer fires on it)."""
    went_unstable = jnp.cumsum(traj.unstable.astype(jnp.int32), axis=1) > 0
    return traj.valid & ~went_unstable
