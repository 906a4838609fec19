"""The batched replica simulator's host side: settings validation, the jitted boundaries
(``init``, ``run_chunk``), neighbour-list overflow handling, whole runs and replica resets.

The pure pieces (MD step, recorded frame, chunk) are in ``stablejax.simulate.chunk``; each is
compiled once per shape (parameters are traced arguments, so new parameters do not recompile).
See ``stablejax.simulate`` for the API overview and an example.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import space

from stablejax import sharding
from stablejax._keys import raw_key
from stablejax._types import Array, EnergyFn, Params, ProgressFn
from stablejax.simulate.chunk import (
    ChunkSpec,
    chunk_all,
    fresh_velocities,
    init_replica,
    initial_momenta,
)
from stablejax.simulate.integrators import IntegratorSettings
from stablejax.simulate.neighbors import allocate_batched, make_batched_update
from stablejax.simulate.state import (
    Criterion,
    ReplicaState,
    Simulator,
    SimulatorSettings,
    concatenate_trajectories,
    where_replicas,
)
from stablejax.simulate.velocities import degrees_of_freedom
from stablejax.units import KB_EV_PER_K

logger = logging.getLogger(__name__)


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
    window_criterion: Callable | None = None,
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
    mesh: Any = None,
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
      window_criterion: optional ``window_criterion(R [n_frames, n_atoms, 3], valid
        [n_frames]) -> (unstable, value)`` judging a replica's frames of each chunk together
        (a stability criterion over a window of frames, e.g. an RDF); a failing replica is
        unstable from the chunk's last step.
      frames_per_chunk: frames per compiled ``lax.scan`` chunk.
      gamma_per_ps: Langevin friction, 1/ps.
      nh_tau_steps: Nose-Hoover period in steps (tau = nh_tau_steps * dt).
      nh_chain_length, nh_chain_steps, nh_sy_steps: Nose-Hoover chain constants.
      remove_com: remove the centre-of-mass momentum of sampled velocities (and couple the
        Nose-Hoover chain to 3N - 3 degrees of freedom).
      rescale_velocities: rescale sampled velocities to the exact target kinetic energy.
      record_velocities, record_energy, record_unwrapped: optional trajectory outputs.
      mesh: a :class:`jax.sharding.Mesh` from :func:`stablejax.sharding.make_mesh`: the
        replicas are split over its devices, each integrating its own replicas with no
        communication inside a chunk (a replica count that does not divide the device count is
        padded inside each call and the padding cut from the results). None: one device.

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
    spec = ChunkSpec(energy_fn=energy_fn, displacement_fn=displacement_fn, shift_fn=shift_fn,
                     criterion=criterion, settings=settings, masses_amu=m_np,
                     window_criterion=window_criterion)

    mesh = sharding.check_mesh(mesh)
    init_one = jax.vmap(functools.partial(init_replica, spec), in_axes=(None, 0, 0, 0, 0))

    @jax.jit
    def _init(params, R, velocities, key, neighbor):
        momenta, keys = initial_momenta(spec, R, velocities, key)
        return sharding.map_leading(lambda p, xs: init_one(p, *xs), mesh, params,
                                    (R, momenta, keys, neighbor))

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
        neighbor = None if neighbor_fn is None else allocate_batched(neighbor_fn, R)
        if sharding.is_parallel(mesh):
            logger.info("simulation: %s", sharding.describe(mesh, int(R.shape[0]), "replicas"))
        return _init(params, R, velocities, raw_key(key), neighbor)

    batched_update = None if neighbor_fn is None else make_batched_update(neighbor_fn)
    chunk_fn = functools.partial(chunk_all, spec, batched_update)
    run_chunk = jax.jit(lambda params, state: sharding.map_leading(chunk_fn, mesh, params, state))

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
        if state.n_replicas % sharding.n_shards(mesh) == 0:  # keep the replicas' layout
            nbr = sharding.shard_leading(nbr, mesh)
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

    _fresh_velocities = jax.jit(functools.partial(fresh_velocities, spec))

    def reset_replicas(state: ReplicaState, mask: Array, stored_state: ReplicaState, key=None):
        """Restore replicas where ``mask`` [n_replicas] is True to ``stored_state`` (all fields:
        positions, momenta, thermostat, step count, flags). With ``key``, the restored replicas
        get fresh Maxwell-Boltzmann velocities and a fresh Langevin noise key
        (docs/method.md §4)."""
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
            new = where_replicas(mask, _fresh_velocities(new, raw_key(key)), new)
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
