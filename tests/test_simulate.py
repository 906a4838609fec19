"""Tests of stablejax.simulate: units, thermostats, recording, freezing, resets, neighbour lists.

Everything runs in float64 (module fixture) on tiny systems with JAX-MD classical potentials.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import energy, partition, space
from jax_md import simulate as jmd_simulate

from stablejax.observables import diffusivity, distance_distribution_frames, distance_distribution_target
from stablejax.simulate import (
    kinetic_temperature_k,
    make_simulator,
    maxwell_boltzmann_velocities,
    take_replicas,
)
from stablejax.stability import bond_length_criterion
from stablejax.units import FS, KB_EV_PER_K


pytestmark = pytest.mark.usefixtures("x64_module")


FREE_DISP, FREE_SHIFT = space.free()
TETRA_BONDS = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
TETRA_R0 = 1.5  # Angstrom, spring rest length (= edge of the start tetrahedron)
TETRA_MASSES = np.full(4, 12.0)


def tetra_energy(params, R, **kwargs):
    """Four atoms joined by six harmonic springs (k in eV/A^2)."""
    return energy.simple_spring_bond(FREE_DISP, TETRA_BONDS, length=TETRA_R0, epsilon=params["k"])(R)


def tetra_positions(n_replicas):
    a = TETRA_R0 / np.sqrt(8.0)
    R = a * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=np.float64)
    return jnp.asarray(np.tile(R, (n_replicas, 1, 1)))


TETRA_PARAMS = {"k": 5.0}


def plain_jaxmd_nve(energy_fn, R, v, masses, dt_fs, n_steps):
    """Independent reference: JAX-MD's velocity Verlet stepped in a Python loop (one replica).

    Returns the positions after steps 0..n_steps and the first step whose result is non-finite
    (n_steps + 1 if none)."""
    init_fn, step_fn = jmd_simulate.nve(energy_fn, FREE_SHIFT, dt_fs * FS)
    m = jnp.asarray(masses)
    state = init_fn(jax.random.key(0), jnp.asarray(R), 0.0, mass=m, momenta=jnp.asarray(v) * m[:, None] / FS)

    def body(state, _):
        state = step_fn(state)
        finite = jnp.all(jnp.isfinite(state.position)) & jnp.all(jnp.isfinite(state.momentum))
        return state, (state.position, finite & jnp.all(jnp.isfinite(state.force)))

    _, (pos, finite) = jax.lax.scan(body, state, None, length=n_steps)
    finite = np.asarray(finite)
    first_bad = int(np.argmin(finite)) + 1 if not finite.all() else n_steps + 1
    return np.concatenate([np.asarray(state.position)[None], np.asarray(pos)]), first_bad


def test_maxwell_boltzmann_velocities_units_and_com():
    masses = jnp.array([16.0, 1.0, 1.0, 12.0])
    kT = KB_EV_PER_K * 500.0
    keys = jax.random.split(jax.random.key(1), 20000)
    v = jax.vmap(lambda k: maxwell_boltzmann_velocities(k, masses, kT, remove_com=False))(keys)
    # <m v_x^2> = kT per component (v in A/fs -> internal units by / FS); 20000*12 samples: 1% ~ 7 sigma
    mv2 = (masses[None, :, None] * (v / FS) ** 2).mean(axis=(0, 2))
    np.testing.assert_allclose(mv2, kT, rtol=0.02)
    v = jax.vmap(lambda k: maxwell_boltzmann_velocities(k, masses, kT, rescale=True))(keys[:10])
    p_com = jnp.sum(masses[None, :, None] * v, axis=1)
    np.testing.assert_allclose(p_com, 0.0, atol=1e-12)
    ke = 0.5 * jnp.sum(masses[None, :, None] * (v / FS) ** 2, axis=(1, 2))
    np.testing.assert_allclose(kinetic_temperature_k(ke, 3 * 4 - 3), 500.0, rtol=1e-10)


def test_frames_recorded_after_n_dump_and_match_plain_jaxmd():
    sim = make_simulator(
        tetra_energy, masses=TETRA_MASSES, dt_fs=2.0, n_dump=5, frames_per_chunk=3,
        integrator="nve", temperature_k=300.0, record_velocities=True,
    )
    state0 = sim.init(TETRA_PARAMS, tetra_positions(2), jax.random.key(3))
    state, traj = sim.run_chunk(TETRA_PARAMS, state0)
    np.testing.assert_array_equal(traj.step, [[5, 10, 15]] * 2)  # step 0 is never recorded
    assert traj.positions.shape == (2, 3, 4, 3) and bool(traj.valid.all())
    for r in range(2):
        ref, _ = plain_jaxmd_nve(
            lambda R: tetra_energy(TETRA_PARAMS, R), state0.positions[r], state0.velocities[r],
            TETRA_MASSES, 2.0, 15,
        )
        np.testing.assert_allclose(traj.positions[r], ref[[5, 10, 15]], atol=1e-10)
    np.testing.assert_allclose(traj.velocities[:, -1], state.velocities, atol=1e-12)


def test_nve_energy_conservation_lj_cluster():
    sigma, eps, mass = 3.405, 0.0104, 39.95  # argon
    lj = energy.lennard_jones_pair(FREE_DISP, sigma=sigma, epsilon=eps, r_onset=2.0, r_cutoff=2.5)
    e_fn = lambda params, R, **kw: lj(R)  # noqa: E731
    d = 2 ** (1 / 6) * sigma
    R = d * np.array([[0, 0, 0], [1, 0, 0], [0.5, np.sqrt(3) / 2, 0], [0.5, np.sqrt(3) / 6, np.sqrt(2 / 3)],
                      [0.5, np.sqrt(3) / 6, -np.sqrt(2 / 3)], [1.5, np.sqrt(3) / 2, 0.0]])
    sim = make_simulator(
        e_fn, masses=np.full(6, mass), dt_fs=5.0, n_dump=10, frames_per_chunk=100,
        integrator="nve", temperature_k=20.0, record_energy=True,
    )
    state = sim.init({}, jnp.asarray(np.tile(R, (4, 1, 1))), jax.random.key(0))
    e0 = np.asarray(lj(state.positions[0]) + 0.5 * jnp.sum(state.md.momentum[0] ** 2 / state.md.mass[0]))
    state, traj = sim.run_chunk({}, state)  # 1000 steps = 5 ps, about 4 vibrational periods
    assert not bool(state.frozen.any())
    e_tot = np.asarray(traj.potential_energy + traj.kinetic_energy)
    # Velocity Verlet at dt = 5 fs (~1/250 of the Ar2 period): the total energy fluctuates by
    # O(dt^2) ~ 1e-4 of the kinetic energy and does not drift; allow 1e-3 of 6 atoms' kT.
    scale = 6 * KB_EV_PER_K * 20.0
    assert np.max(np.abs(e_tot - e_tot[:, :1])) < 1e-3 * scale
    assert abs(e_tot[0, 0] - e0) < 1e-3 * scale
    drift = np.abs(e_tot[:, -20:].mean(axis=1) - e_tot[:, :20].mean(axis=1))
    assert np.all(drift < 2e-4 * scale)


@pytest.mark.parametrize("integrator,n_dof", [("nose_hoover", 9), ("langevin", 12)])
def test_thermostat_reaches_target_temperature(integrator, n_dof):
    T = 300.0
    sim = make_simulator(
        tetra_energy, masses=TETRA_MASSES, dt_fs=2.0, n_dump=10, frames_per_chunk=300,
        integrator=integrator, temperature_k=T, gamma_per_ps=10.0,
    )
    state = sim.init(TETRA_PARAMS, tetra_positions(64), jax.random.key(7))
    state, traj = sim.run_chunk(TETRA_PARAMS, state)  # 3000 steps = 6 ps
    T_kin = kinetic_temperature_k(traj.kinetic_energy[:, 100:], n_dof)  # discard the first 2 ps
    # Nose-Hoover keeps the centre of mass at rest (9 dof); Langevin thermalises it too (12 dof).
    # Per-frame relative std sqrt(2/n_dof) ~ 0.45; 64 replicas x ~40 independent frames -> ~1%.
    assert abs(float(T_kin.mean()) / T - 1.0) < 0.03


def test_langevin_free_particle_diffusivity():
    T, m, gamma_per_ps = 300.0, 10.0, 100.0
    sim = make_simulator(
        lambda p, R, **kw: 0.0 * jnp.sum(R), masses=np.full(128, m), dt_fs=1.0, n_dump=10,
        frames_per_chunk=400, integrator="langevin", temperature_k=T, gamma_per_ps=gamma_per_ps,
    )
    R = jax.random.uniform(jax.random.key(0), (8, 128, 3)) * 20.0
    state = sim.init({}, R, jax.random.key(1))
    state, traj = sim.run_chunk({}, state)
    D = jnp.mean(jax.vmap(lambda x: diffusivity(x, 10.0, max_lag=100, method="fit"))(traj.positions))
    # D = kT / (m gamma): (kT/m) in (A/fs)^2 is kT/m * FS^2, gamma in 1/fs.
    D_exact = KB_EV_PER_K * T / m * FS**2 / (gamma_per_ps * 1e-3)
    # 1024 particles, 4 ps each: the fitted slope scatters by ~1.5 % (seeds 0-3: <= 2.7 %); allow 8 %.
    assert abs(float(D) / D_exact - 1.0) < 0.08


def _explode_setup():
    """Triatomic with harmonic bonds inside a 'domain' term that is NaN beyond 5 Angstrom."""
    bonds = np.array([[0, 1], [1, 2]])

    def e_fn(params, R, **kw):
        springs = energy.simple_spring_bond(FREE_DISP, bonds, length=1.0, epsilon=params["k"])(R)
        return springs + 1e-3 * jnp.sum(jnp.sqrt(25.0 - jnp.sum(R**2, axis=-1)))

    R = jnp.asarray(np.tile(np.array([[-1.0, 0, 0], [0, 0, 0], [1.0, 0, 0]]), (4, 1, 1)))
    v = np.zeros((4, 3, 3))
    v[0, 0, 1], v[0, 2, 1] = 0.002, -0.002  # gentle bending
    v[1, 2, 0] = 0.08  # stretches bond 1-2 beyond the tolerance, but stays finite
    v[2, :, 0] = 0.2  # the whole molecule flies out of the 5 A domain -> NaN forces
    v[3, 0, 2] = 0.001
    return e_fn, bonds, R, jnp.asarray(v)


def test_exploding_replica_is_frozen_flagged_and_isolated():
    e_fn, bonds, R, v = _explode_setup()
    params, masses, dt, n_dump = {"k": 10.0}, np.array([12.0, 12.0, 12.0]), 0.5, 4
    crit = bond_length_criterion(bonds, np.array([1.0, 1.0]), threshold_angstrom=0.25)
    sim = make_simulator(
        e_fn, masses=masses, dt_fs=dt, n_dump=n_dump, frames_per_chunk=12, integrator="nve",
        criterion=crit,
    )
    state, traj = sim.run_chunk(params, sim.init(params, R, jax.random.key(0), velocities=v))
    refs = [plain_jaxmd_nve(lambda x: e_fn(params, x), R[r], v[r], masses, dt, 48) for r in range(4)]

    np.testing.assert_array_equal(state.frozen, [False, False, True, False])
    s_bad = refs[2][1]
    assert 4 < s_bad < 48 and int(state.frozen_step[2]) == s_bad
    assert bool(jnp.all(jnp.isfinite(traj.positions))) and bool(jnp.all(jnp.isfinite(traj.kinetic_energy)))
    steps = n_dump * np.arange(1, 13)
    np.testing.assert_array_equal(traj.valid[2], steps < s_bad)
    last_finite = refs[2][0][s_bad - 1]
    for k in np.nonzero(steps >= s_bad)[0]:
        np.testing.assert_allclose(traj.positions[2, k], last_finite, atol=1e-12)
    for r in (0, 1, 3):  # the other replicas follow their independent reference exactly
        np.testing.assert_allclose(traj.positions[r], refs[r][0][steps], atol=1e-9)
        assert bool(traj.valid[r].all())

    # First unstable step: first dump where max |d - 1| > 0.25 in the reference (or the freeze).
    dev = lambda P: np.abs(np.linalg.norm(P[:, bonds[:, 0]] - P[:, bonds[:, 1]], axis=-1) - 1.0).max(-1)  # noqa
    alive = [steps[steps < refs[r][1]] for r in range(4)]
    over = [alive[r][dev(refs[r][0][alive[r]]) > 0.25] for r in range(4)]
    assert over[1].size > 0 and over[0].size == 0 and over[3].size == 0
    np.testing.assert_array_equal(state.unstable, [False, True, True, False])
    assert int(state.first_unstable_step[1]) == over[1][0]
    expect_2 = min([s_bad] + list(over[2][:1]))
    assert int(state.first_unstable_step[2]) == expect_2
    assert int(state.first_unstable_step[0]) == -1 and int(state.first_unstable_step[3]) == -1
    np.testing.assert_array_equal(traj.unstable[1], steps >= over[1][0])

    # Observables of all frames stay finite; the valid-frame average ignores the frozen frames.
    h = distance_distribution_frames(traj.positions, r_max=4.0)
    assert bool(jnp.all(jnp.isfinite(h)))
    h_valid = distance_distribution_target(traj.positions, valid=traj.valid, r_max=4.0)
    np.testing.assert_allclose(float(h_valid.sum()), 100.0, rtol=1e-10)


def test_reset_replicas_restores_stored_state_and_resamples():
    sim = make_simulator(
        tetra_energy, masses=TETRA_MASSES, dt_fs=2.0, n_dump=5, frames_per_chunk=4,
        integrator="nose_hoover", temperature_k=300.0,
    )
    s0 = sim.init(TETRA_PARAMS, tetra_positions(3), jax.random.key(11))
    s1, traj_a = sim.run_chunk(TETRA_PARAMS, s0)
    s2, _ = sim.run_chunk(TETRA_PARAMS, s1)
    mask = jnp.array([True, False, True])
    r = sim.reset_replicas(s2, mask, s0)
    for i, src in enumerate([s0, s2, s0]):
        jax.tree.map(lambda a, b, i=i: np.testing.assert_array_equal(a[i], b[i]), r, src)
    _, traj_b = sim.run_chunk(TETRA_PARAMS, r)  # deterministic Nose-Hoover replays replica 0
    np.testing.assert_allclose(traj_b.positions[0], traj_a.positions[0], atol=1e-12)

    r2 = sim.reset_replicas(s2, mask, s0, key=jax.random.key(5))
    np.testing.assert_array_equal(r2.positions[0], s0.positions[0])
    assert not np.allclose(r2.velocities[0], s0.velocities[0])
    np.testing.assert_array_equal(r2.velocities[1], s2.velocities[1])
    p_com = jnp.sum(r2.md.momentum, axis=1)
    np.testing.assert_allclose(p_com[jnp.array([0, 2])], 0.0, atol=1e-12)
    ke = 0.5 * jnp.sum(r2.md.momentum**2 / r2.md.mass, axis=(1, 2))
    np.testing.assert_allclose(r2.md.chain.kinetic_energy, ke, rtol=1e-12)
    assert int(r2.step[0]) == 0 and int(r2.step[1]) == 40


def test_vmap_over_replicas_equals_single_replica_and_params_do_not_recompile():
    sim = make_simulator(
        tetra_energy, masses=TETRA_MASSES, dt_fs=2.0, n_dump=5, frames_per_chunk=4,
        integrator="langevin", temperature_k=300.0, gamma_per_ps=5.0,
    )
    s0 = sim.init(TETRA_PARAMS, tetra_positions(3), jax.random.key(2))
    _, traj = sim.run_chunk(TETRA_PARAMS, s0)
    for i in range(3):
        _, single = sim.run_chunk(TETRA_PARAMS, take_replicas(s0, slice(i, i + 1)))
        np.testing.assert_allclose(single.positions[0], traj.positions[i], atol=1e-12)
    n_compiled = sim.run_chunk._cache_size()
    _, traj2 = sim.run_chunk({"k": 7.0}, s0)
    assert sim.run_chunk._cache_size() == n_compiled
    assert not np.allclose(traj2.positions, traj.positions)


def test_run_progress_and_stop_fraction():
    crit = bond_length_criterion(TETRA_BONDS, np.full(6, TETRA_R0), threshold_angstrom=1e-6)
    sim = make_simulator(
        tetra_energy, masses=TETRA_MASSES, dt_fs=2.0, n_dump=5, frames_per_chunk=2,
        integrator="nose_hoover", temperature_k=300.0, criterion=crit,
    )
    calls = []
    state = sim.init(TETRA_PARAMS, tetra_positions(2), jax.random.key(0))
    state, traj = sim.run(TETRA_PARAMS, state, 40, progress=lambda d, t, i: calls.append((d, t, i)))
    assert [(d, t) for d, t, _ in calls] == [(10, 40), (20, 40), (30, 40), (40, 40)]
    assert calls[0][2]["n_unstable"] == 2 and traj.positions.shape[1] == 8
    np.testing.assert_array_equal(state.first_unstable_step, [5, 5])  # the first dump
    state, traj = sim.run(TETRA_PARAMS, state, 40, stop_fraction=0.5)
    assert traj.positions.shape[1] == 2  # stopped after one chunk
    with pytest.raises(ValueError, match="multiple of steps_per_chunk"):
        sim.run(TETRA_PARAMS, state, 15)


@pytest.mark.slow  # make test-slow (default-suite time)
@pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types:FutureWarning")  # JAX-MD, x64
def test_neighbor_list_overflow_is_flagged_and_rerun_matches_dense():
    sigma, eps, L = 3.405, 0.0104, 11.4  # 27 argon atoms, cutoff 1.6 sigma = 5.45 A < L / 2
    disp, shift = space.periodic_general(jnp.eye(3) * L, fractional_coordinates=False)
    nbr_fn, lj_nl = energy.lennard_jones_neighbor_list(
        disp, L, sigma=sigma, epsilon=eps, r_onset=1.3, r_cutoff=1.6, dr_threshold=0.5,
        format=partition.Dense,
    )
    lj = energy.lennard_jones_pair(disp, sigma=sigma, epsilon=eps, r_onset=1.3, r_cutoff=1.6)
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * (L / 3)
    R = grid[None] + 0.1 * np.asarray(jax.random.normal(jax.random.key(0), (2, 27, 3)))
    kw = dict(masses=np.full(27, 39.95), dt_fs=5.0, n_dump=5, frames_per_chunk=4,
              integrator="nve", temperature_k=120.0)
    sim = make_simulator(lambda p, R, **k: lj_nl(R, **k), displacement_fn=disp, shift_fn=shift,
                         neighbor_fn=nbr_fn, record_unwrapped=True, **kw)
    dense = make_simulator(lambda p, R, **k: lj(R), displacement_fn=disp, shift_fn=shift, **kw)
    state = sim.init({}, jnp.asarray(R), jax.random.key(4))
    ref_state, ref = dense.run_chunk({}, dense.init({}, jnp.asarray(R), jax.random.key(9),
                                                    velocities=state.velocities))
    # Shrink the capacity and move the reference positions so the first update rebuilds.
    nb = state.neighbor
    small = nb.set(idx=nb.idx[..., :4], max_occupancy=4, reference_position=nb.reference_position + 1.0)
    bad = state.replace(neighbor=small)
    out, _ = sim.run_chunk({}, bad)
    assert bool(out.neighbor_overflow.all())
    out, traj = sim.run_chunk_safe({}, bad)
    assert not bool(out.neighbor_overflow.any()) and out.neighbor.max_occupancy > 4
    np.testing.assert_allclose(traj.positions, ref.positions, atol=1e-8)
    # Restoring a state stored with the old capacity re-allocates the lists consistently.
    back = sim.reset_replicas(out, jnp.array([True, False]), state)
    np.testing.assert_array_equal(back.positions[0], state.positions[0])
    np.testing.assert_array_equal(back.positions[1], out.positions[1])
    again, traj_again = sim.run_chunk({}, back)
    assert not bool(again.neighbor_overflow.any())
    np.testing.assert_allclose(traj_again.positions[0], ref.positions[0], atol=1e-8)
    # Unwrapped positions differ from wrapped ones by whole box vectors.
    shift_cells = (traj.unwrapped_positions - traj.positions) / L
    np.testing.assert_allclose(shift_cells, np.round(shift_cells), atol=1e-8)


def test_bad_settings_and_inputs_raise_clear_errors():
    kw = dict(masses=TETRA_MASSES, dt_fs=1.0, n_dump=5)
    with pytest.raises(ValueError, match="integrator must be one of"):
        make_simulator(tetra_energy, integrator="verlet", temperature_k=300.0, **kw)
    with pytest.raises(ValueError, match="exactly one of kT_ev and temperature_k"):
        make_simulator(tetra_energy, integrator="langevin", **kw)
    with pytest.raises(ValueError, match="masses must have shape"):
        make_simulator(tetra_energy, masses=np.ones((4, 1)), dt_fs=1.0, n_dump=5, temperature_k=300.0)
    with pytest.raises(ValueError, match="dt_fs must be > 0"):
        make_simulator(tetra_energy, masses=TETRA_MASSES, dt_fs=0.0, n_dump=5, temperature_k=300.0)
    with pytest.raises(ValueError, match="neighbor_fn needs the periodic"):
        make_simulator(tetra_energy, temperature_k=300.0, neighbor_fn=object(), **kw)
    sim = make_simulator(tetra_energy, temperature_k=300.0, **kw)
    with pytest.raises(ValueError, match=r"positions must have shape \[n_replicas, 4, 3\]"):
        sim.init(TETRA_PARAMS, jnp.zeros((2, 5, 3)), jax.random.key(0))
    with pytest.raises(ValueError, match="velocities must have shape"):
        sim.init(TETRA_PARAMS, tetra_positions(2), jax.random.key(0), velocities=jnp.zeros((2, 3, 3)))
    nve = make_simulator(tetra_energy, integrator="nve", **kw)
    with pytest.raises(ValueError, match="NVE without a temperature"):
        nve.init(TETRA_PARAMS, tetra_positions(2), jax.random.key(0))


@pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types:FutureWarning")  # JAX-MD, x64
def test_batched_neighbor_update_equals_vmapped_update_and_skips_needless_rebuilds():
    from stablejax.simulate.neighbors import (_rebuild_predicate, allocate_batched,
                                              make_batched_update)

    L = 11.4
    disp, _ = space.periodic_general(jnp.eye(3) * L, fractional_coordinates=False)
    nbr_fn = partition.neighbor_list(disp, L, 5.0, dr_threshold=0.5, format=partition.Dense)
    assert _rebuild_predicate(nbr_fn) is not None  # the pinned jax-md's closure layout
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * (L / 3)
    R = jnp.asarray(grid[None] + 0.1 * np.asarray(jax.random.normal(jax.random.key(1), (3, 27, 3))))
    lists = allocate_batched(nbr_fn, R)
    update = jax.jit(make_batched_update(nbr_fn))
    vupdate = jax.jit(jax.vmap(nbr_fn.update))
    small = R + 0.1  # below dr_threshold / 2: nothing is rebuilt, reference positions kept
    kept = update(small, lists)
    np.testing.assert_array_equal(kept.reference_position, lists.reference_position)
    moved = R.at[1, 5].add(jnp.array([0.4, 0.0, 0.0]))  # replica 1 needs a rebuild
    a, b = update(moved, lists), vupdate(moved, lists)
    np.testing.assert_array_equal(a.idx, b.idx)
    np.testing.assert_array_equal(a.reference_position, b.reference_position)
    np.testing.assert_array_equal(a.reference_position[1], moved[1])
    np.testing.assert_array_equal(a.reference_position[0], lists.reference_position[0])


@pytest.mark.parametrize("integrator", ["nose_hoover", "langevin"])
def test_float32_simulation_does_not_warn_about_float64_sums(integrator):
    # JAX-MD's kinetic energy asks for a float64 sum; under x32 JAX warns at every trace.
    import warnings

    sim = make_simulator(lambda p, R, **k: tetra_energy(p, R), masses=TETRA_MASSES, dt_fs=1.0,
                         n_dump=2, frames_per_chunk=2, integrator=integrator,
                         temperature_k=300.0)
    # this module runs in float64; the warning only exists under x32
    with jax.enable_x64(False), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = sim.init(TETRA_PARAMS, jnp.asarray(tetra_positions(2), jnp.float32),
                         jax.random.key(0))
        sim.run_chunk(TETRA_PARAMS, state)
    assert not [w for w in caught if "Explicitly requested dtype float64" in str(w.message)]


def test_window_criterion_judges_a_chunk_of_frames():
    """A criterion over a window of frames (here: the spread of the centre of mass over the
    chunk's frames) marks a replica unstable at the chunk's last step; one that never fires
    leaves the run bitwise unchanged."""
    kw = dict(masses=TETRA_MASSES, dt_fs=2.0, n_dump=5, frames_per_chunk=3, integrator="nve",
              temperature_k=300.0)

    def com_drift(R, valid):  # R [n_frames, 4, 3]
        com = jnp.mean(R, axis=1)
        spread = jnp.max(jnp.linalg.norm(com - com[0], axis=-1))
        return spread > limit, spread

    plain = make_simulator(tetra_energy, **kw)
    s0 = plain.init(TETRA_PARAMS, tetra_positions(2), jax.random.key(3))
    ref_state, ref = plain.run(TETRA_PARAMS, s0, 30)
    for limit, fires in [(1e9, False), (-1.0, True)]:
        sim = make_simulator(tetra_energy, window_criterion=com_drift, **kw)
        state, traj = sim.run(TETRA_PARAMS, sim.init(TETRA_PARAMS, tetra_positions(2),
                                                     jax.random.key(3)), 30)
        np.testing.assert_array_equal(traj.positions, ref.positions)
        if not fires:
            np.testing.assert_array_equal(traj.unstable, ref.unstable)
            assert not bool(state.unstable.any())
        else:
            np.testing.assert_array_equal(state.first_unstable_step, [15, 15])  # chunk 1 end
            np.testing.assert_array_equal(traj.unstable[:, [2, 5]], True)
            assert not bool(traj.unstable[:, [0, 1, 3, 4]].any())
