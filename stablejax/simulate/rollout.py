"""The batched replica simulator: one ``jax.vmap`` over replicas of a JAX-MD integrator, advanced
in ``lax.scan`` chunks, compiled once per shape (parameters are traced arguments, so new parameters
do not recompile). See ``stablejax.simulate`` for the API overview and an example.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax_md import space

from stablejax._types import Array, EnergyFn, Params, ProgressFn
from stablejax.simulate.integrators import (
    IntegratorSettings,
    build_integrator,
    kinetic_energy,
    set_momenta,
)
from stablejax.simulate.neighbors import allocate_batched, did_overflow, make_batched_update
from stablejax.simulate.state import (
    Criterion,
    ReplicaState,
    Simulator,
    SimulatorSettings,
    Trajectory,
    concatenate_trajectories,
    where_replicas,
)
from stablejax.simulate.velocities import (
    degrees_of_freedom,
    maxwell_boltzmann_velocities,
    velocities_to_momenta,
)
from stablejax.units import FS, KB_EV_PER_K

logger = logging.getLogger(__name__)

def _all_finite(md: Any) -> Array:
    return (
        jnp.all(jnp.isfinite(md.position))
        & jnp.all(jnp.isfinite(md.momentum))
        & jnp.all(jnp.isfinite(md.force))
    )


def _select(pred: Array, a: Any, b: Any) -> Any:
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def _raw_key(key: Array) -> Array:
    key = jnp.asarray(key)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return key


def make_simulator(
    energy_fn: EnergyFn,
    *,
    masses: Array,
    dt_fs: float,
    n_dump: int,
    integrator: str = "nose_hoover",
    kT_ev: float | None = None,
    temperature_k: float | None = None,
    displacement_fn: Callable | None = None,
    shift_fn: Callable | None = None,
    neighbor_fn: Any = None,
    criterion: Criterion | None = None,
    frames_per_chunk: int = 10,
    gamma_per_ps: float = 0.1,
    nh_tau_steps: float = 20.0,
    nh_chain_length: int = 5,
    nh_chain_steps: int = 2,
    nh_sy_steps: int = 3,
    remove_com: bool = True,
    rescale_velocities: bool = False,
    record_velocities: bool = False,
    record_energy: bool = False,
    record_unwrapped: bool = False,
) -> Simulator:
    """Build a batched replica simulator for ``energy_fn(params, R, **kwargs)`` (eV, Angstrom).

    Args:
      energy_fn: the energy protocol; with a neighbour list it receives ``neighbor=``.
      masses: [n_atoms] masses in amu.
      dt_fs: time step in fs.
      n_dump: steps between recorded frames (frames after steps n_dump, 2 n_dump, ...).
      integrator: ``"nose_hoover"``, ``"langevin"`` or ``"nve"``.
      kT_ev, temperature_k: target temperature (give one; NVE uses it only to draw velocities).
      displacement_fn, shift_fn: JAX-MD space functions; both None means free space. For a
        periodic box use ``jax_md.space.periodic_general(box, fractional_coordinates=False)``.
      neighbor_fn: optional JAX-MD ``NeighborListFns`` (periodic systems); lists are kept per
        replica and passed to ``energy_fn`` as ``neighbor=``.
      criterion: optional ``criterion(R) -> (unstable, value)`` evaluated at every dump
        (see ``stablejax.stability``).
      frames_per_chunk: frames per compiled ``lax.scan`` chunk.
      gamma_per_ps: Langevin friction, 1/ps.
      nh_tau_steps: Nose-Hoover period in steps (tau = nh_tau_steps * dt).
      nh_chain_length, nh_chain_steps, nh_sy_steps: Nose-Hoover chain constants.
      remove_com: remove the centre-of-mass momentum of sampled velocities (and couple the
        Nose-Hoover chain to 3N - 3 degrees of freedom).
      rescale_velocities: rescale sampled velocities to the exact target kinetic energy.
      record_velocities, record_energy, record_unwrapped: optional trajectory outputs.

    Returns:
      A :class:`Simulator`.

    Raises:
      ValueError: on inconsistent settings (named in the message).
    """
    m_np = np.asarray(masses, dtype=np.float64)
    if m_np.ndim != 1 or m_np.shape[0] < 1:
        raise ValueError(f"masses must have shape [n_atoms], got {m_np.shape}")
    if not np.all(np.isfinite(m_np)) or np.any(m_np <= 0):
        raise ValueError("masses must be finite and > 0 (amu)")
    n_atoms = int(m_np.shape[0])
    if (kT_ev is None) == (temperature_k is None):
        if not (integrator == "nve" and kT_ev is None and temperature_k is None):
            raise ValueError("give exactly one of kT_ev and temperature_k")
    if temperature_k is not None:
        kT_ev = KB_EV_PER_K * float(temperature_k)
    if int(n_dump) < 1 or int(frames_per_chunk) < 1:
        raise ValueError(
            f"n_dump and frames_per_chunk must be >= 1, got {n_dump}, {frames_per_chunk}"
        )
    if (displacement_fn is None) != (shift_fn is None):
        raise ValueError("give both displacement_fn and shift_fn, or neither (free space)")
    if neighbor_fn is not None and displacement_fn is None:
        raise ValueError(
            "a neighbor_fn needs the periodic displacement_fn and shift_fn it was built for"
        )
    if displacement_fn is None:
        displacement_fn, shift_fn = space.free()
    if remove_com and n_atoms < 2:
        raise ValueError("remove_com=True needs at least 2 atoms")
    integ = IntegratorSettings(
        name=integrator,
        dt_fs=float(dt_fs),
        kT_ev=None if kT_ev is None else float(kT_ev),
        n_dof=degrees_of_freedom(n_atoms, remove_com=remove_com),
        gamma_per_ps=float(gamma_per_ps),
        nh_tau_steps=float(nh_tau_steps),
        nh_chain_length=int(nh_chain_length),
        nh_chain_steps=int(nh_chain_steps),
        nh_sy_steps=int(nh_sy_steps),
    )
    settings = SimulatorSettings(
        integrator=integ,
        n_atoms=n_atoms,
        n_dump=int(n_dump),
        frames_per_chunk=int(frames_per_chunk),
        remove_com=bool(remove_com),
        rescale_velocities=bool(rescale_velocities),
        record_velocities=bool(record_velocities),
        record_energy=bool(record_energy),
        record_unwrapped=bool(record_unwrapped),
    )
    pair_disp = jax.vmap(displacement_fn)

    def integrator_for(params):
        return build_integrator(lambda R, **kw: energy_fn(params, R, **kw), shift_fn, integ)

    def sample_velocities(keys, dtype):
        m = jnp.asarray(m_np, dtype=dtype)
        return jax.vmap(
            lambda k: maxwell_boltzmann_velocities(
                k, m, kT_ev, remove_com=remove_com, rescale=rescale_velocities, dtype=dtype
            )
        )(keys)

    # ------------------------------------------------------------------ init
    def _init_one(params, R, momenta, key, neighbor):
        k_md, k_own = jax.random.split(key)
        kw = {} if neighbor is None else {"neighbor": neighbor}
        md = integrator_for(params).init(k_md, R, jnp.asarray(m_np, R.dtype), momenta, **kw)
        bad = ~_all_finite(md)
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
            unwrapped=R if record_unwrapped else None,
        )

    @jax.jit
    def _init_jit(params, R, velocities, key):
        keys = jax.random.split(key, R.shape[0] * 2).reshape(R.shape[0], 2, -1)
        if velocities is None:
            velocities = sample_velocities(keys[:, 0], R.dtype)
        momenta = velocities_to_momenta(velocities, jnp.asarray(m_np, R.dtype))
        return momenta, keys[:, 1]

    _init_vmapped = jax.jit(jax.vmap(_init_one, in_axes=(None, 0, 0, 0, 0)))

    def init(params: Params, positions: Array, key: Array, *, velocities: Array | None = None):
        """Start replicas at ``positions`` [n_replicas, n_atoms, 3] Angstrom.

        Velocities [n_replicas, n_atoms, 3] Angstrom/fs are used as given, or drawn from
        Maxwell-Boltzmann at the target temperature with per-replica keys split from ``key``.
        A replica whose initial forces are non-finite starts frozen (frozen_step 0).
        """
        R = jnp.asarray(positions)
        if R.ndim != 3 or R.shape[1:] != (n_atoms, 3):
            raise ValueError(
                f"positions must have shape [n_replicas, {n_atoms}, 3], got {tuple(R.shape)}"
            )
        if not jnp.issubdtype(R.dtype, jnp.floating):
            raise ValueError(f"positions must be floating point, got {R.dtype}")
        if not bool(jnp.all(jnp.isfinite(R))):
            raise ValueError("positions contain non-finite values")
        if velocities is not None:
            velocities = jnp.asarray(velocities, R.dtype)
            if velocities.shape != R.shape:
                raise ValueError(
                    f"velocities must have shape {tuple(R.shape)}, got {velocities.shape}"
                )
        elif kT_ev is None:
            raise ValueError(
                "NVE without a temperature: pass velocities to init, or kT_ev/temperature_k"
            )
        momenta, keys = _init_jit(params, R, velocities, _raw_key(key))
        neighbor = None if neighbor_fn is None else allocate_batched(neighbor_fn, R)
        return _init_vmapped(params, R, momenta, keys, neighbor)

    # ------------------------------------------------------------ one chunk
    def _chunk_fns(params):
        """Per-replica pieces of a chunk: one MD step given the step's neighbour list, and the
        end-of-dump bookkeeping (criterion, frame)."""
        integ_fns = integrator_for(params)

        def md_step_with(rs, nbr_new):
            kw = {}
            overflow = rs.neighbor_overflow
            if nbr_new is not None:
                overflow = overflow | did_overflow(nbr_new)
                kw["neighbor"] = nbr_new
            md_new = integ_fns.step(rs.md, **kw)
            ok = _all_finite(md_new)
            advance = ok & ~rs.frozen
            unwrapped = rs.unwrapped
            if record_unwrapped:
                dR = pair_disp(md_new.position, rs.md.position)
                unwrapped = jnp.where(advance, unwrapped + dR, unwrapped)
            step = rs.step + 1
            newly_frozen = ~ok & ~rs.frozen
            return rs.replace(
                md=_select(advance, md_new, rs.md),
                neighbor=None if nbr_new is None else _select(advance, nbr_new, rs.neighbor),
                unwrapped=unwrapped,
                step=step,
                frozen=rs.frozen | newly_frozen,
                frozen_step=jnp.where(newly_frozen, step, rs.frozen_step),
                unstable=rs.unstable | newly_frozen,
                first_unstable_step=jnp.where(
                    newly_frozen & ~rs.unstable, step, rs.first_unstable_step
                ),
                neighbor_overflow=overflow,
            )

        def end_of_dump(rs):
            R = rs.md.position
            if criterion is not None:
                bad, value = criterion(R)
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
                potential_energy=energy_fn(params, R, **kw) if record_energy else None,
                velocities=rs.md.momentum / rs.md.mass * FS if record_velocities else None,
                unwrapped_positions=rs.unwrapped if record_unwrapped else None,
                neighbor_idx=None if rs.neighbor is None else rs.neighbor.idx,
            )
            return rs, frame

        return md_step_with, end_of_dump

    def _chunk_one(params, rs: ReplicaState):
        """One replica's chunk (free space: every replica is independent; ``vmap``-ed)."""
        md_step_with, end_of_dump = _chunk_fns(params)

        def dump(rs, _):
            rs, _ = lax.scan(lambda r, _: (md_step_with(r, None), None), rs, None,
                             length=settings.n_dump)
            return end_of_dump(rs)

        return lax.scan(dump, rs, None, length=settings.frames_per_chunk)

    def _chunk_batched(params, rs: ReplicaState):
        """All replicas' chunk with neighbour lists: the list update runs on the whole batch
        (rebuild only in steps where some replica needs it, see ``make_batched_update``),
        the rest per replica under ``vmap``. Output frames [n_replicas, n_frames, ...]."""
        md_step_with, end_of_dump = _chunk_fns(params)
        vstep = jax.vmap(md_step_with)

        def md_step(rs, _):
            return vstep(rs, batched_update(rs.md.position, rs.neighbor)), None

        def dump(rs, _):
            rs, _ = lax.scan(md_step, rs, None, length=settings.n_dump)
            return jax.vmap(end_of_dump)(rs)

        rs, traj = lax.scan(dump, rs, None, length=settings.frames_per_chunk)
        return rs, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), traj)

    if neighbor_fn is None:
        run_chunk = jax.jit(jax.vmap(_chunk_one, in_axes=(None, 0)))
    else:
        batched_update = make_batched_update(neighbor_fn)
        run_chunk = jax.jit(_chunk_batched)

    # ------------------------------------------------------ host-side helpers
    def reallocate_neighbors(state: ReplicaState, *, extra_positions=None, extra_capacity: int = 0):
        if neighbor_fn is None:
            return state
        nbr = allocate_batched(
            neighbor_fn,
            state.md.position,
            extra_positions=extra_positions,
            extra_capacity=extra_capacity,
        )
        no_overflow = jnp.zeros_like(state.neighbor_overflow)
        return state.replace(neighbor=nbr, neighbor_overflow=no_overflow)

    def run_chunk_safe(params: Params, state: ReplicaState, *, max_reallocations: int = 4):
        if neighbor_fn is None:
            return run_chunk(params, state)
        if bool(jnp.any(state.neighbor_overflow)):
            state = reallocate_neighbors(state)
        new_state, traj = run_chunk(params, state)
        attempt = 0
        while bool(jnp.any(new_state.neighbor_overflow)):
            attempt += 1
            if attempt > max_reallocations:
                raise RuntimeError(
                    f"neighbour list still overflows after {max_reallocations} reallocations; "
                    "increase capacity_multiplier of the neighbor_fn"
                )
            logger.info("neighbour list overflow: reallocating, re-running the chunk (%d)", attempt)
            state = reallocate_neighbors(
                state, extra_positions=new_state.md.position, extra_capacity=4 * attempt
            )
            new_state, traj = run_chunk(params, state)
        return new_state, traj

    def run(
        params: Params,
        state: ReplicaState,
        n_steps: int,
        *,
        progress: ProgressFn | None = None,
        stop_fraction: float | None = None,
    ):
        """Run ``n_steps`` (a multiple of ``steps_per_chunk``) steps; stop early once at least
        ``stop_fraction`` of the replicas are unstable. Calls ``progress(done, total, info)``
        after each chunk, info = {n_unstable, n_frozen, n_replicas, chunk}."""
        spc = settings.steps_per_chunk
        if n_steps < spc or n_steps % spc:
            raise ValueError(
                f"n_steps={n_steps} must be a positive multiple of steps_per_chunk={spc} "
                f"(n_dump={settings.n_dump} * frames_per_chunk={settings.frames_per_chunk})"
            )
        chunks = []
        for c in range(n_steps // spc):
            state, traj = run_chunk_safe(params, state)
            chunks.append(traj)
            n_unstable = int(jnp.sum(state.unstable))
            info = {
                "n_unstable": n_unstable,
                "n_frozen": int(jnp.sum(state.frozen)),
                "n_replicas": state.n_replicas,
                "chunk": c,
            }
            if progress is not None:
                progress((c + 1) * spc, n_steps, info)
            if stop_fraction is not None and n_unstable >= stop_fraction * state.n_replicas:
                logger.info("stopping: %d/%d replicas unstable", n_unstable, state.n_replicas)
                break
        return state, concatenate_trajectories(chunks)

    @jax.jit
    def _fresh_velocities(state: ReplicaState, key: Array):
        dtype = state.md.position.dtype
        keys = jax.random.split(key, state.n_replicas * 3).reshape(state.n_replicas, 3, -1)
        v = sample_velocities(keys[:, 0], dtype)
        p = velocities_to_momenta(v, jnp.asarray(m_np, dtype))
        md = jax.vmap(set_momenta)(state.md, p)
        if hasattr(md, "rng"):
            md = md.set(rng=keys[:, 1])
        return state.replace(md=md, key=keys[:, 2])

    def reset_replicas(state: ReplicaState, mask: Array, stored_state: ReplicaState, key=None):
        """Restore replicas where ``mask`` [n_replicas] is True to ``stored_state`` (all fields:
        positions, momenta, thermostat, step count, flags). With ``key``, the restored replicas
        get fresh Maxwell-Boltzmann velocities and a fresh Langevin noise key (method.md 6.6)."""
        mask = jnp.asarray(mask, bool)
        if mask.shape != (state.n_replicas,):
            raise ValueError(f"mask must have shape [{state.n_replicas}], got {mask.shape}")
        if stored_state.n_replicas != state.n_replicas:
            raise ValueError(
                f"stored_state has {stored_state.n_replicas} replicas, state has {state.n_replicas}"
            )
        same_nbr = jax.tree.structure(state.neighbor) == jax.tree.structure(stored_state.neighbor)
        if not same_nbr:  # different neighbour capacities: restore and re-allocate below
            stored_state = stored_state.replace(neighbor=state.neighbor)
        new = where_replicas(mask, stored_state, state)
        if key is not None:
            if kT_ev is None:
                raise ValueError("fresh velocities need a temperature (kT_ev/temperature_k)")
            new = where_replicas(mask, _fresh_velocities(new, _raw_key(key)), new)
        if not same_nbr:
            new = reallocate_neighbors(new)
        return new

    return Simulator(
        init=init,
        run_chunk=run_chunk,
        run_chunk_safe=run_chunk_safe,
        run=run,
        reset_replicas=reset_replicas,
        reallocate_neighbors=reallocate_neighbors,
        settings=settings,
        masses_amu=m_np,
    )
