"""Pure pieces of the replica simulator: initialisation, one MD step, one recorded frame, and
the compiled chunk of ``frames_per_chunk`` frames of ``n_dump`` steps each.

Every function takes its fixed settings as an explicit :class:`ChunkSpec` and its state as
arguments; none does host work or applies ``jax.jit``. ``stablejax.simulate.rollout`` binds the
spec and jits at the outer boundary (``init``, ``run_chunk``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stablejax._types import Array, EnergyFn, Params
from stablejax.simulate.integrators import (
    IntegratorFns,
    build_integrator,
    kinetic_energy,
    set_momenta,
)
from stablejax.simulate.neighbors import did_overflow
from stablejax.simulate.state import Criterion, ReplicaState, SimulatorSettings, Trajectory
from stablejax.simulate.velocities import maxwell_boltzmann_velocities, velocities_to_momenta
from stablejax.units import FS


class ChunkSpec(NamedTuple):
    """The fixed (closed-over, never traced) pieces of a simulator.

    Attributes:
      energy_fn: ``energy_fn(params, R, **kwargs)`` in eV (``neighbor=`` with neighbour lists).
      displacement_fn, shift_fn: JAX-MD space functions of one replica.
      criterion: ``criterion(R [n_atoms, 3]) -> (unstable, value)`` evaluated at every dump,
        or None.
      window_criterion: ``window_criterion(R [n_frames, n_atoms, 3], valid [n_frames]) ->
        (unstable, value)`` judging each replica's frames of a whole chunk at once (e.g. an RDF
        over a window of frames), or None.
      settings: the validated :class:`SimulatorSettings`.
      masses_amu: [n_atoms] float64 numpy array, amu.
    """

    energy_fn: EnergyFn
    displacement_fn: Callable
    shift_fn: Callable
    criterion: Criterion | None
    settings: SimulatorSettings
    masses_amu: np.ndarray
    window_criterion: Callable | None = None


def integrator_for(spec: ChunkSpec, params: Params) -> IntegratorFns:
    """The JAX-MD integrator of one replica with ``params`` bound (traced, not constant)."""
    return build_integrator(lambda R, **kw: spec.energy_fn(params, R, **kw), spec.shift_fn,
                            spec.settings.integrator)


def all_finite(md: Any) -> Array:
    """Whether positions, momenta and forces of a JAX-MD state are all finite: bool []."""
    return (
        jnp.all(jnp.isfinite(md.position))
        & jnp.all(jnp.isfinite(md.momentum))
        & jnp.all(jnp.isfinite(md.force))
    )


def _select(pred: Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


# ------------------------------------------------------------------------------------- init
def sample_velocities(spec: ChunkSpec, keys: Array, dtype: Any) -> Array:
    """Maxwell-Boltzmann velocities [n_replicas, n_atoms, 3] Angstrom/fs, one key per replica."""
    s = spec.settings
    m = jnp.asarray(spec.masses_amu, dtype=dtype)
    return jax.vmap(
        lambda k: maxwell_boltzmann_velocities(
            k, m, s.kT_ev, remove_com=s.remove_com, rescale=s.rescale_velocities, dtype=dtype
        )
    )(keys)


def init_replica(spec: ChunkSpec, params: Params, R: Array, momenta: Array, key: Array,
                 neighbor: Any) -> ReplicaState:
    """One replica's state at ``R`` [n_atoms, 3]; frozen at step 0 if its forces are non-finite."""
    k_md, k_own = jax.random.split(key)
    kw = {} if neighbor is None else {"neighbor": neighbor}
    md = integrator_for(spec, params).init(
        k_md, R, jnp.asarray(spec.masses_amu, R.dtype), momenta, **kw
    )
    bad = ~all_finite(md)
    i32 = jnp.int32
    return ReplicaState(
        md=md,
        key=k_own,
        step=jnp.zeros((), i32),
        frozen=bad,
        frozen_step=jnp.where(bad, 0, -1).astype(i32),
        unstable=bad,
        first_unstable_step=jnp.where(bad, 0, -1).astype(i32),
        neighbor_overflow=jnp.zeros((), bool),
        neighbor=neighbor,
        unwrapped=R if spec.settings.record_unwrapped else None,
    )


def initial_momenta(spec: ChunkSpec, R: Array, velocities: Array | None,
                    key: Array) -> tuple[Array, Array]:
    """Momenta [n_replicas, n_atoms, 3] (JAX-MD units) and per-replica keys [n_replicas, 2].

    ``velocities`` [n_replicas, n_atoms, 3] Angstrom/fs, or None to draw them from ``key``.
    """
    keys = jax.random.split(key, R.shape[0] * 2).reshape(R.shape[0], 2, -1)
    if velocities is None:
        velocities = sample_velocities(spec, keys[:, 0], R.dtype)
    momenta = velocities_to_momenta(velocities, jnp.asarray(spec.masses_amu, R.dtype))
    return momenta, keys[:, 1]


def fresh_velocities(spec: ChunkSpec, state: ReplicaState, key: Array) -> ReplicaState:
    """All replicas with new Maxwell-Boltzmann momenta, Langevin noise keys and own keys."""
    dtype = state.md.position.dtype
    keys = jax.random.split(key, state.n_replicas * 3).reshape(state.n_replicas, 3, -1)
    v = sample_velocities(spec, keys[:, 0], dtype)
    p = velocities_to_momenta(v, jnp.asarray(spec.masses_amu, dtype))
    md = jax.vmap(set_momenta)(state.md, p)
    if hasattr(md, "rng"):
        md = md.set(rng=keys[:, 1])
    return state.replace(md=md, key=keys[:, 2])


# ------------------------------------------------------------------------------- one step
def step_replica(spec: ChunkSpec, integ: IntegratorFns, rs: ReplicaState,
                 neighbor: Any) -> ReplicaState:
    """One MD step of one replica with the step's neighbour list (None in free space).

    A replica whose new state is non-finite keeps its old state and is frozen (and unstable)
    from this step on; a frozen replica only counts steps.
    """
    kw = {}
    overflow = rs.neighbor_overflow
    if neighbor is not None:
        overflow = overflow | did_overflow(neighbor)
        kw["neighbor"] = neighbor
    md_new = integ.step(rs.md, **kw)
    ok = all_finite(md_new)
    advance = ok & ~rs.frozen
    unwrapped = rs.unwrapped
    if spec.settings.record_unwrapped:
        dR = jax.vmap(spec.displacement_fn)(md_new.position, rs.md.position)
        unwrapped = jnp.where(advance, unwrapped + dR, unwrapped)
    step = rs.step + 1
    newly_frozen = ~ok & ~rs.frozen
    return rs.replace(
        md=_select(advance, md_new, rs.md),
        neighbor=None if neighbor is None else _select(advance, neighbor, rs.neighbor),
        unwrapped=unwrapped,
        step=step,
        frozen=rs.frozen | newly_frozen,
        frozen_step=jnp.where(newly_frozen, step, rs.frozen_step),
        unstable=rs.unstable | newly_frozen,
        first_unstable_step=jnp.where(newly_frozen & ~rs.unstable, step, rs.first_unstable_step),
        neighbor_overflow=overflow,
    )


def record_frame(spec: ChunkSpec, params: Params,
                 rs: ReplicaState) -> tuple[ReplicaState, Trajectory]:
    """End-of-dump bookkeeping of one replica: run the criterion, update the instability flags
    and record the frame (fields of :class:`Trajectory` without the replica and frame axes)."""
    s = spec.settings
    R = rs.md.position
    if spec.criterion is not None:
        bad, value = spec.criterion(R)
        bad = jnp.asarray(bad, bool)
        value = jnp.asarray(value, R.dtype)
    else:
        bad, value = jnp.zeros((), bool), jnp.zeros((), R.dtype)
    newly = bad & ~rs.unstable
    rs = rs.replace(
        unstable=rs.unstable | bad,
        first_unstable_step=jnp.where(newly, rs.step, rs.first_unstable_step),
    )
    kw = {} if rs.neighbor is None else {"neighbor": rs.neighbor}
    frame = Trajectory(
        positions=R,
        valid=~rs.frozen,
        unstable=bad | rs.frozen,
        metric=value,
        step=rs.step,
        kinetic_energy=kinetic_energy(rs.md),
        potential_energy=spec.energy_fn(params, R, **kw) if s.record_energy else None,
        velocities=rs.md.momentum / rs.md.mass * FS if s.record_velocities else None,
        unwrapped_positions=rs.unwrapped if s.record_unwrapped else None,
        neighbor_idx=None if rs.neighbor is None else rs.neighbor.idx,
    )
    return rs, frame


# ------------------------------------------------------------------------------ one chunk
def chunk_replica(spec: ChunkSpec, params: Params,
                  rs: ReplicaState) -> tuple[ReplicaState, Trajectory]:
    """One replica's chunk in free space (frames [n_frames, ...]); ``vmap`` it over replicas."""
    s = spec.settings
    integ = integrator_for(spec, params)

    def dump(rs, _):
        rs, _ = lax.scan(lambda r, _: (step_replica(spec, integ, r, None), None), rs, None,
                         length=s.n_dump)
        return record_frame(spec, params, rs)

    return lax.scan(dump, rs, None, length=s.frames_per_chunk)


def chunk_vmapped(spec: ChunkSpec, params: Params,
                  rs: ReplicaState) -> tuple[ReplicaState, Trajectory]:
    """All replicas' chunk in free space: frames [n_replicas, n_frames, ...]."""
    return jax.vmap(lambda p, r: chunk_replica(spec, p, r), in_axes=(None, 0))(params, rs)


def chunk_batched(spec: ChunkSpec, batched_update: Callable, params: Params,
                  rs: ReplicaState) -> tuple[ReplicaState, Trajectory]:
    """All replicas' chunk with neighbour lists: frames [n_replicas, n_frames, ...].

    ``batched_update(positions [n_replicas, n_atoms, 3], lists) -> lists`` updates the lists of
    the whole batch (``neighbors.make_batched_update``); the rest runs per replica under
    ``vmap``.
    """
    s = spec.settings
    integ = integrator_for(spec, params)
    vstep = jax.vmap(lambda r, nbr: step_replica(spec, integ, r, nbr))
    vrecord = jax.vmap(lambda r: record_frame(spec, params, r))

    def md_step(rs, _):
        return vstep(rs, batched_update(rs.md.position, rs.neighbor)), None

    def dump(rs, _):
        rs, _ = lax.scan(md_step, rs, None, length=s.n_dump)
        return vrecord(rs)

    rs, traj = lax.scan(dump, rs, None, length=s.frames_per_chunk)
    return rs, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)


def judge_window(spec: ChunkSpec, rs: ReplicaState,
                 traj: Trajectory) -> tuple[ReplicaState, Trajectory]:
    """Apply ``spec.window_criterion`` to each replica's chunk of frames [n_replicas, n_frames]:
    a replica it fails becomes unstable at the chunk's last step (its last frame is marked)."""
    if spec.window_criterion is None:
        return rs, traj
    bad, _ = jax.vmap(spec.window_criterion)(traj.positions, traj.valid)
    bad = jnp.asarray(bad, bool)
    newly = bad & ~rs.unstable
    rs = rs.replace(unstable=rs.unstable | bad,
                    first_unstable_step=jnp.where(newly, rs.step, rs.first_unstable_step))
    traj = traj._replace(unstable=traj.unstable.at[:, -1].set(traj.unstable[:, -1] | bad))
    return rs, traj


def chunk_all(spec: ChunkSpec, batched_update: Callable | None, params: Params,
              rs: ReplicaState) -> tuple[ReplicaState, Trajectory]:
    """The chunk of all replicas (neighbour lists when ``batched_update`` is given), then the
    window criterion."""
    if batched_update is None:
        rs, traj = chunk_vmapped(spec, params, rs)
    else:
        rs, traj = chunk_batched(spec, batched_update, params, rs)
    return judge_window(spec, rs, traj)
