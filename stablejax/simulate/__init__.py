"""Batched replica molecular dynamics on top of JAX-MD.

Units: eV, Angstrom, fs, K, amu (kT in eV); velocities in Angstrom/fs. JAX-MD's internal time unit
(~10.18 fs for eV/Angstrom/amu) never leaves this package.

Overview
--------
``make_simulator(energy_fn, *, masses, dt_fs, n_dump, integrator, kT_ev | temperature_k, ...)``
returns a :class:`Simulator`, a NamedTuple of functions:

* ``init(params, positions [R, N, 3], key, *, velocities=None) -> ReplicaState``: per-replica
  keys, Maxwell-Boltzmann velocities (Gaussian components, centre-of-mass momentum removed,
  optionally rescaled), forces, thermostat state, neighbour lists.
* ``run_chunk(params, state) -> (state, Trajectory)``: jitted; ``frames_per_chunk`` frames of
  ``n_dump`` steps each, one ``jax.vmap`` over replicas of the JAX-MD integrator inside
  ``lax.scan``. ``params`` is a traced argument: new parameters reuse the compiled code.
* ``run_chunk_safe(params, state)``: the same, but on neighbour-list overflow it reallocates the
  lists and re-runs the chunk from its start state, so results are never silently wrong.
* ``run(params, state, n_steps, *, progress=None, stop_fraction=None)``: whole chunks with a
  ``progress(done_steps, total_steps, info)`` callback between chunks (no printing).
* ``reset_replicas(state, mask, stored_state, key=None)``: restore selected replicas to a stored
  earlier state, optionally with fresh Maxwell-Boltzmann velocities (docs/method.md §4).
* ``reallocate_neighbors(state, ...)``: re-size the per-replica neighbour lists.

Recording (docs/method.md §2.5): frames are taken after steps n_dump, 2 n_dump, ... (step 0,
the start state, is not recorded) and stacked by ``lax.scan`` into [n_replicas, n_frames, ...]
buffers. Every step checks positions, momenta and forces for non-finite values: a replica that
produces one is frozen at once (its state keeps the last finite step), so it never injects NaN
downstream; its later frames repeat that last finite frame with ``valid = False``.
The stability criterion (``stablejax.stability``) runs at every dump; ``ReplicaState`` records
``first_unstable_step`` (time = step * dt_fs; -1 = never) per replica. A frozen replica counts
as unstable from its freeze step. Step counters are per replica and restored by resets.

Neighbour lists: ``run_chunk`` sets ``state.neighbor_overflow`` (sticky until reallocation) and
never fixes it; the caller checks it after each chunk or uses ``run_chunk_safe``/``run``.

Integrators: ``"nose_hoover"`` (JAX-MD Nose-Hoover chain, tau = 20 dt by default, coupled to
3N - 3 degrees of freedom when the centre-of-mass momentum is removed), ``"langevin"`` (JAX-MD
BAOAB, friction ``gamma_per_ps`` in 1/ps), ``"nve"`` (velocity Verlet).

Periodic systems: pass ``displacement_fn, shift_fn = jax_md.space.periodic_general(box,
fractional_coordinates=False)`` and a JAX-MD ``neighbor_fn``; the energy function receives
``neighbor=`` and each replica has its own list (common capacity). ``record_unwrapped=True``
also records unwrapped positions (for diffusion).

Modules: ``rollout`` (``make_simulator``: validation, the jitted boundaries, overflow handling,
runs and resets), ``chunk`` (the pure per-replica MD step, recorded frame and chunk it compiles),
``state`` (state and API types), ``integrators``, ``velocities``, ``neighbors``.

Example (a harmonic triatomic, free space, 8 replicas)::

    import jax, jax.numpy as jnp
    from jax_md import energy, space
    from stablejax.simulate import make_simulator
    from stablejax.stability import bond_length_criterion, stability_time_fs

    disp, _ = space.free()
    bonds = jnp.array([[0, 1], [0, 2]])

    def energy_fn(params, R, **kw):
        return energy.simple_spring_bond(disp, bonds, length=params["r0"], epsilon=params["k"])(R)

    params = {"r0": 0.96, "k": 40.0}
    R0 = jnp.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    sim = make_simulator(
        energy_fn, masses=jnp.array([16.0, 1.0, 1.0]), dt_fs=0.5, n_dump=100,
        integrator="nose_hoover", temperature_k=300.0, frames_per_chunk=10,
        criterion=bond_length_criterion(bonds, jnp.array([0.96, 0.96]), threshold_angstrom=0.5),
    )
    state = sim.init(params, jnp.tile(R0, (8, 1, 1)), jax.random.key(0))
    state, traj = sim.run(params, state, 2000)   # traj.positions: [8, 20, 3, 3]
    t_fail_fs, censored = stability_time_fs(state.first_unstable_step, sim.settings.dt_fs, 2000)
"""

from stablejax.simulate.integrators import (
    INTEGRATORS,
    IntegratorFns,
    IntegratorSettings,
    build_integrator,
    set_momenta,
)
from stablejax.simulate.build import make_simulator_for
from stablejax.simulate.neighbors import allocate_batched, did_overflow
from stablejax.simulate.rollout import make_simulator
from stablejax.simulate.state import (
    Criterion,
    ReplicaState,
    Simulator,
    SimulatorSettings,
    Trajectory,
    concatenate_trajectories,
    take_replicas,
    where_replicas,
)
from stablejax.simulate.velocities import (
    degrees_of_freedom,
    kinetic_energy_ev,
    kinetic_temperature_k,
    maxwell_boltzmann_velocities,
    momenta_to_velocities,
    velocities_to_momenta,
)

__all__ = [
    "INTEGRATORS",
    "Criterion",
    "IntegratorFns",
    "IntegratorSettings",
    "ReplicaState",
    "Simulator",
    "SimulatorSettings",
    "Trajectory",
    "allocate_batched",
    "build_integrator",
    "concatenate_trajectories",
    "degrees_of_freedom",
    "did_overflow",
    "kinetic_energy_ev",
    "kinetic_temperature_k",
    "make_simulator",
    "make_simulator_for",
    "maxwell_boltzmann_velocities",
    "momenta_to_velocities",
    "set_momenta",
    "take_replicas",
    "velocities_to_momenta",
    "where_replicas",
]
