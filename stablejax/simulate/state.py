"""Replica state, recorded trajectories and the simulator's API types.

Every array leaf of a :class:`ReplicaState` has a leading ``[n_replicas]`` axis, so a state can
be stored, indexed, compared and partially restored with ordinary ``jax.tree`` operations.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from stablejax._types import Array, Criterion, CriterionResult  # noqa: F401  (re-exported)
from stablejax.models.frames import pad_neighbor_idx
from stablejax.simulate.integrators import IntegratorSettings
from stablejax.units import FS


@struct.dataclass
class ReplicaState:
    """State of ``n_replicas`` independent MD replicas.

    Attributes:
      md: the JAX-MD integrator state (``NVTNoseHooverState``, ``NVTLangevinState`` or
        ``NVEState``), leaves batched: ``md.position`` [n_replicas, n_atoms, 3] Angstrom,
        ``md.momentum`` [n_replicas, n_atoms, 3] amu*Angstrom/(10.18 fs), ``md.force``
        [n_replicas, n_atoms, 3] eV/Angstrom, ``md.mass`` [n_replicas, n_atoms, 1] amu.
      key: per-replica PRNG keys (for velocity resampling on reset), [n_replicas, 2] uint32.
      step: steps taken by each replica since ``init``, [n_replicas] int32.
      frozen: the replica produced a non-finite position, momentum or force and stopped
        updating; it holds its last finite state. [n_replicas] bool.
      frozen_step: step whose result was non-finite (the state holds step ``frozen_step - 1``),
        -1 if never. [n_replicas] int32.
      unstable: the stability criterion fired at some dump, or the replica froze. [n_replicas] bool.
      first_unstable_step: step of the first dump at which the criterion fired (or the freeze
        step, whichever came first), -1 if never. [n_replicas] int32.
      neighbor_overflow: a neighbour-list buffer overflowed since the last (re)allocation: results
        since then are wrong; re-run from the chunk's start (``Simulator.run_chunk_safe``).
        [n_replicas] bool, sticky until ``Simulator.reallocate_neighbors``.
      neighbor: a JAX-MD ``NeighborList`` with leaves batched over replicas, or None (free space).
      unwrapped: [n_replicas, n_atoms, 3] Angstrom, positions without periodic wrapping (sum of
        minimum-image step displacements), or None when not tracked.
    """

    md: Any
    key: Array  # [n_replicas, 2] uint32
    step: Array  # [n_replicas] int32
    frozen: Array  # [n_replicas] bool
    frozen_step: Array  # [n_replicas] int32, -1 = never
    unstable: Array  # [n_replicas] bool
    first_unstable_step: Array  # [n_replicas] int32, -1 = never
    neighbor_overflow: Array  # [n_replicas] bool
    neighbor: Any = None  # jax_md.partition.NeighborList, batched, or None
    unwrapped: Array | None = None  # [n_replicas, n_atoms, 3] f, Angstrom

    @property
    def n_replicas(self) -> int:
        return int(self.step.shape[0])

    @property
    def positions(self) -> Array:
        """[n_replicas, n_atoms, 3] Angstrom."""
        return self.md.position

    @property
    def velocities(self) -> Array:
        """[n_replicas, n_atoms, 3] Angstrom/fs."""
        return self.md.momentum / self.md.mass * FS


class Trajectory(NamedTuple):
    """Frames recorded by the simulator after steps n_dump, 2 n_dump, ... (step 0 excluded).

    Attributes:
      positions: [n_replicas, n_frames, n_atoms, 3] Angstrom. After a replica froze, its frames
        repeat its last finite configuration (never NaN) and ``valid`` is False.
      valid: [n_replicas, n_frames] bool, the replica had not frozen when the frame was recorded.
      unstable: [n_replicas, n_frames] bool, the criterion fired on this frame or the replica froze.
      metric: [n_replicas, n_frames] float, the criterion's value on this frame (0 without one).
      step: [n_replicas, n_frames] int32, the replica's step count at the frame.
      kinetic_energy: [n_replicas, n_frames] eV.
      potential_energy: [n_replicas, n_frames] eV, or None (``record_energy=False``).
      velocities: [n_replicas, n_frames, n_atoms, 3] Angstrom/fs, or None.
      unwrapped_positions: [n_replicas, n_frames, n_atoms, 3] Angstrom, or None.
      neighbor_idx: [n_replicas, n_frames, ...] int32, the index array of the neighbour list
        the replica used at the frame (periodic models; None without a neighbour list). With
        ``stablejax.models.frame_energy_fn`` it gives the frame's energy exactly as simulated.
    """

    positions: Array
    valid: Array
    unstable: Array
    metric: Array
    step: Array
    kinetic_energy: Array
    potential_energy: Array | None = None
    velocities: Array | None = None
    unwrapped_positions: Array | None = None
    neighbor_idx: Array | None = None

    @property
    def n_frames(self) -> int:
        return int(self.valid.shape[1])


def where_replicas(mask: Array, on_true: Any, on_false: Any) -> Any:
    """Per-replica select between two pytrees with leading [n_replicas] axes.

    Args:
      mask: [n_replicas] bool.
      on_true, on_false: pytrees of identical structure.

    Returns:
      A pytree taking replica i from ``on_true`` where ``mask[i]`` and from ``on_false`` otherwise.
    """
    mask = jnp.asarray(mask, dtype=bool)

    def sel(a, b):
        m = mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - 1))
        return jnp.where(m, a, b)

    return jax.tree.map(sel, on_true, on_false)


def take_replicas(tree: Any, index: Array) -> Any:
    """Index the leading replica axis of every leaf (``index``: int array or slice)."""
    return jax.tree.map(lambda x: x[index], tree)


def concatenate_trajectories(trajectories: list[Trajectory]) -> Trajectory:
    """Join chunks of one run along the frame axis."""
    if not trajectories:
        raise ValueError("concatenate_trajectories: empty list")
    if len(trajectories) == 1:
        return trajectories[0]
    if trajectories[0].neighbor_idx is not None:
        # A reallocation between chunks changes the capacity: pad to the largest.
        cap = max(int(t.neighbor_idx.shape[-1]) for t in trajectories)
        n_atoms = int(trajectories[0].positions.shape[2])
        trajectories = [t._replace(neighbor_idx=pad_neighbor_idx(t.neighbor_idx, cap, n_atoms))
                        for t in trajectories]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *trajectories)


@dataclasses.dataclass(frozen=True)
class SimulatorSettings:
    """Static settings of a :class:`Simulator` (validated by ``make_simulator``).

    Attributes:
      integrator: the integrator settings (name, dt_fs, kT_ev, thermostat constants).
      n_atoms: atoms per replica.
      n_dump: steps between recorded frames.
      frames_per_chunk: frames per compiled chunk; a chunk is ``n_dump * frames_per_chunk`` steps.
      remove_com: remove the centre-of-mass momentum from sampled velocities.
      rescale_velocities: rescale sampled velocities to the exact target kinetic energy.
      record_velocities, record_energy, record_unwrapped: optional outputs of the trajectory.
    """

    integrator: IntegratorSettings
    n_atoms: int
    n_dump: int
    frames_per_chunk: int
    remove_com: bool
    rescale_velocities: bool
    record_velocities: bool
    record_energy: bool
    record_unwrapped: bool

    @property
    def steps_per_chunk(self) -> int:
        return self.n_dump * self.frames_per_chunk

    @property
    def dt_fs(self) -> float:
        return self.integrator.dt_fs

    @property
    def kT_ev(self) -> float | None:
        return self.integrator.kT_ev


class Simulator(NamedTuple):
    """Functions of a batched replica simulator (see ``make_simulator``).

    Attributes:
      init: ``init(params, positions, key, *, velocities=None) -> ReplicaState``.
      run_chunk: jitted ``run_chunk(params, state) -> (state, Trajectory)``, one chunk of
        ``settings.steps_per_chunk`` steps; flags neighbour-list overflow in the state, never
        fixes it.
      run_chunk_safe: ``run_chunk_safe(params, state) -> (state, Trajectory)``, like ``run_chunk``
        but reallocates neighbour lists and re-runs the chunk from its start state on overflow.
      run: ``run(params, state, n_steps, *, progress=None, stop_fraction=None)
        -> (state, Trajectory)``: whole chunks with a progress callback between them.
      reset_replicas: ``reset_replicas(state, mask, stored_state, key=None) -> ReplicaState``:
        restore the masked replicas to a stored state, with fresh Maxwell-Boltzmann velocities
        (and fresh Langevin noise) when ``key`` is given.
      reallocate_neighbors: ``reallocate_neighbors(state, *, extra_positions=None,
        extra_capacity=0) -> ReplicaState``; identity in free space.
      settings: the static :class:`SimulatorSettings`.
      masses_amu: [n_atoms] float64 numpy array.
    """

    init: Callable[..., ReplicaState]
    run_chunk: Callable[..., tuple[ReplicaState, Trajectory]]
    run_chunk_safe: Callable[..., tuple[ReplicaState, Trajectory]]
    run: Callable[..., tuple[ReplicaState, Trajectory]]
    reset_replicas: Callable[..., ReplicaState]
    reallocate_neighbors: Callable[..., ReplicaState]
    settings: SimulatorSettings
    masses_amu: np.ndarray
