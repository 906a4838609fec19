"""Physics checks of the SchNet and NequIP potentials and of the model protocol.

Small models (2 interactions/layers, 16 features or 4 channels per irrep) on an 8-atom C/O/H
cluster whose size (about 5 Angstrom) exceeds the 3 Angstrom test cutoff, so edge masking is
exercised. Tolerances: float32 energies of about 10 eV carry ~1e-6 relative rounding; forces are
compared to 1e-4 of their largest component, and every symmetry test also asserts that the
quantity it compares really changes under a generic (non-symmetric) perturbation, so the
comparison can fail.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stablejax.models import NequIPConfig, SchNetConfig, bind, make_model
from stablejax.models.neighbors import all_pairs_index

Z = np.array([6, 6, 8, 1, 1, 1, 6, 8])
CUTOFF = 3.0
SHIFT = {1: -0.5, 6: -1.0, 8: -2.0}  # eV per atom
SCALE = {1: 0.3, 6: 0.7, 8: 0.9}  # eV
AVG_NEIGHBORS = 4.0

CONFIGS = {
    "schnet": SchNetConfig(cutoff_angstrom=CUTOFF, hidden_features=16, n_filters=16,
                           n_interactions=2, n_gaussians=10),
    "nequip": NequIPConfig(cutoff_angstrom=CUTOFF, n_layers=2, hidden_irreps="4x0e+4x1e+4x0o+4x1o",
                           n_bessel=4, radial_hidden=8),
}


def random_cluster(n: int, width: float, seed: int, min_dist: float = 1.0) -> np.ndarray:
    """n points uniformly in a cube of side ``width`` (Angstrom), no pair closer than min_dist."""
    rng = np.random.default_rng(seed)
    pts: list[np.ndarray] = []
    while len(pts) < n:
        p = rng.uniform(0.0, width, 3)
        if all(np.linalg.norm(p - q) >= min_dist for q in pts):
            pts.append(p)
    return np.array(pts)


def random_rotation(seed: int, proper: bool = True) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q = q @ np.diag([1.0, 1.0, -1.0])
    return q


R0 = random_cluster(len(Z), 4.0, seed=1)


def build(name: str, atomic_numbers=Z, **kwargs):
    kw = dict(energy_shift=SHIFT, energy_scale=SCALE)
    if name == "nequip":
        kw["avg_num_neighbors"] = AVG_NEIGHBORS
    kw.update(kwargs)
    return make_model(CONFIGS[name], atomic_numbers, **kw)


def evaluator(model):
    """One jitted function per model: (energy, dE/dR, per-atom energies)."""

    def evaluate(params, R, **kwargs):
        e, g = jax.value_and_grad(model.energy_fn, argnums=1)(params, R, **kwargs)
        return e, g, model.per_atom_energy_fn(params, R, **kwargs)

    return jax.jit(evaluate)


@pytest.fixture(scope="module")
def initial_params():
    """Parameters per architecture; they depend only on the config and the species {H, C, O},
    so the free and periodic test systems share them (saves compiling init twice)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = jax.jit(build(name).init)(jax.random.PRNGKey(0),
                                                    jnp.asarray(R0, jnp.float32))
        return cache[name]

    return get


@pytest.fixture(scope="module", params=["schnet", "nequip"])
def case(request, initial_params):
    model = build(request.param)
    return request.param, model, initial_params(request.param), evaluator(model)


def energy_forces(ev, params, R):
    e, g, _ = ev(params, jnp.asarray(R, jnp.float32))
    return float(e), -np.asarray(g, np.float64)


def assert_forces_close(F, F_ref, rel=1e-4):
    tol = rel * np.abs(F_ref).max() + 1e-7
    np.testing.assert_allclose(F, F_ref, atol=tol, rtol=0)


def test_params_float32_and_outputs_float32(case):
    _, _, params, ev = case
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    e, g, ea = ev(params, jnp.asarray(R0, jnp.float32))
    assert e.shape == () and e.dtype == jnp.float32 and g.shape == (len(Z), 3)
    assert ea.shape == (len(Z),) and ea.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(g)))


def test_symmetries(case):
    """E invariant, F equivariant under rotations, a reflection, translations."""
    _, _, params, ev = case
    e0, f0 = energy_forces(ev, params, R0)
    assert np.abs(f0).max() > 1e-3  # forces are not trivially zero
    for seed, proper in [(0, True), (1, True), (2, False)]:
        Q = random_rotation(seed, proper)
        shift = np.random.default_rng(seed).normal(size=3) * 3.0
        e, f = energy_forces(ev, params, R0 @ Q.T + shift)
        assert e == pytest.approx(e0, rel=2e-6, abs=1e-5)
        assert_forces_close(f, f0 @ Q.T)
        assert np.abs(f - f0).max() > 100 * 1e-4 * np.abs(f0).max()  # rotation is not trivial
    # a generic deformation changes the energy far beyond the tolerance above
    e_def, _ = energy_forces(ev, params, R0 + 0.3 * np.random.default_rng(9).normal(size=R0.shape))
    assert abs(e_def - e0) > 10 * (2e-6 * abs(e0) + 1e-5)


def test_permutation(case):
    """Permuting atoms together with their species permutes per-atom energies and forces."""
    name, _, params, ev = case
    perm = np.random.default_rng(3).permutation(len(Z))
    e0, g0, ea0 = ev(params, jnp.asarray(R0, jnp.float32))
    e, g, ea = evaluator(build(name, Z[perm]))(params, jnp.asarray(R0[perm], jnp.float32))
    assert float(e) == pytest.approx(float(e0), rel=2e-6, abs=1e-5)
    assert_forces_close(np.asarray(g), np.asarray(g0)[perm])
    np.testing.assert_allclose(ea, np.asarray(ea0)[perm], rtol=1e-5, atol=1e-6)
    # permuting positions but NOT species is a different molecule: the energy must change
    e_wrong, _ = energy_forces(ev, params, R0[perm])
    assert abs(e_wrong - float(e0)) > 1e-3


def test_per_atom_energies_sum_to_total(case):
    _, model, params, ev = case
    R = jnp.asarray(R0, jnp.float32)
    e, _, ea = ev(params, R)
    assert float(jnp.sum(ea)) == pytest.approx(float(e), rel=1e-6)
    # bind gives JAX-MD's f(R) with the same value
    assert float(jax.jit(bind(model.energy_fn, params))(R)) == pytest.approx(float(e), rel=1e-6)
    # the per-species shift enters every atom: atoms of different species differ
    assert np.ptp(np.asarray(ea)) > 0.1


def test_atom_beyond_cutoff_does_not_interact(case):
    """An atom farther than the cutoff from all others feels no force, and moving it is free."""
    _, _, params, ev = case
    R = R0.copy()
    R[-1] = R0[:-1].mean(0) + np.array([20.0, 0.0, 0.0])
    e1, f1 = energy_forces(ev, params, R)
    R[-1] += np.array([0.0, 7.0, -3.0])
    e2, f2 = energy_forces(ev, params, R)
    assert np.all(f1[-1] == 0.0) and np.all(f2[-1] == 0.0)
    assert e1 == pytest.approx(e2, rel=1e-7, abs=1e-6)


def test_vmap_over_replicas_equals_loop(case):
    _, model, params, ev = case
    Rs = jnp.asarray(np.stack([R0 + 0.1 * np.random.default_rng(s).normal(size=R0.shape)
                               for s in range(2)]), jnp.float32)
    e_b, g_b = jax.jit(jax.vmap(jax.value_and_grad(model.energy_fn, argnums=1),
                                in_axes=(None, 0)))(params, Rs)
    for k in range(2):
        e, g, _ = ev(params, Rs[k])
        assert float(e_b[k]) == pytest.approx(float(e), rel=1e-6, abs=1e-6)
        assert_forces_close(np.asarray(g_b[k]), np.asarray(g), rel=1e-5)


def test_forces_match_finite_differences_float64(case, x64):
    """-grad E equals central differences (h = 1e-4 Angstrom) in float64.

    Truncation error is O(h^2 |d3E/dR3|) < 1e-8 eV/Angstrom, rounding ~1e-16 |E| / h ~ 1e-11;
    observed ~1e-9, tolerance 1e-6 of the largest force (~1e-8 here).
    """
    _, model, params, _ = case
    R = jnp.asarray(R0, jnp.float64)
    h = 1e-4
    eye = jnp.asarray(np.eye(R.size).reshape(-1, *R.shape) * h)

    @jax.jit
    def grad_and_fd(params, R):
        e, g = jax.value_and_grad(model.energy_fn, argnums=1)(params, R)
        es = jax.vmap(model.energy_fn, in_axes=(None, 0))(params, jnp.concatenate([R + eye,
                                                                                   R - eye]))
        return e, g, (es[: R.size] - es[R.size:]).reshape(R.shape) / (2 * h)

    e, g, fd = grad_and_fd(params, R)
    assert e.dtype == jnp.float64 and g.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(g), np.asarray(fd),
                               atol=1e-6 * float(jnp.abs(fd).max()) + 1e-9, rtol=0)


# ---------------------------------------------------------------- periodic boxes

BOX = 7.0  # Angstrom, >= 2 x cutoff
N_PBC = 12
Z_PBC = np.array([8, 1, 1, 8, 1, 1, 8, 1, 1, 6, 6, 1])
R_PBC = random_cluster(N_PBC, BOX, seed=5, min_dist=1.2)


@pytest.fixture(scope="module")
def periodic_schnet(initial_params):
    model = build("schnet", Z_PBC, box=BOX, neighbor_format="dense")
    return model, initial_params("schnet"), evaluator(model)


def test_periodic_neighbor_list_equals_all_pairs_minimum_image(periodic_schnet):
    """Dense and Sparse JAX-MD neighbour lists give the all-pairs minimum-image result."""
    model, params, ev = periodic_schnet
    R = jnp.asarray(R_PBC, jnp.float32)
    nbrs = model.neighbor_fn.allocate(R)
    assert not nbrs.did_buffer_overflow
    assert int(jnp.sum(nbrs.idx < N_PBC)) < N_PBC * (N_PBC - 1)  # the list really is pruned
    everyone = dataclasses.replace(nbrs, idx=jnp.asarray(all_pairs_index(N_PBC)))
    e_ref, g_ref, ea_ref = ev(params, R, neighbor=everyone)
    e, g, ea = ev(params, R, neighbor=nbrs)
    assert float(e) == pytest.approx(float(e_ref), rel=1e-6)
    assert_forces_close(np.asarray(g), np.asarray(g_ref), rel=1e-5)

    sparse = build("schnet", Z_PBC, box=BOX, neighbor_format="sparse")
    nbrs_s = sparse.neighbor_fn.allocate(R)
    assert nbrs_s.idx.shape[0] == 2
    e_s, g_s, ea_s = evaluator(sparse)(params, R, neighbor=nbrs_s)
    assert float(e_s) == pytest.approx(float(e_ref), rel=1e-6)
    assert_forces_close(np.asarray(g_s), np.asarray(g_ref), rel=1e-5)
    np.testing.assert_allclose(ea_s, ea_ref, rtol=1e-5, atol=1e-6)


def test_periodic_nequip_sparse_neighbor_list_equals_all_pairs(initial_params):
    """NequIP on a Sparse neighbour list equals the all-pairs minimum-image (dense) result."""
    model = build("nequip", Z_PBC, box=BOX, neighbor_format="sparse")
    R = jnp.asarray(R_PBC, jnp.float32)
    params = initial_params("nequip")
    nbrs = model.neighbor_fn.allocate(R)
    dense = build("nequip", Z_PBC, box=BOX).neighbor_fn.allocate(R)
    everyone = dataclasses.replace(dense, idx=jnp.asarray(all_pairs_index(N_PBC)))

    @jax.jit
    def both(params, R, nbrs, everyone):
        vg = jax.value_and_grad(model.energy_fn, argnums=1)
        return vg(params, R, neighbor=nbrs), vg(params, R, neighbor=everyone)

    (e, g), (e_ref, g_ref) = both(params, R, nbrs, everyone)
    assert nbrs.idx.shape[0] == 2 and int(jnp.sum(nbrs.idx[0] < N_PBC)) < N_PBC * (N_PBC - 1)
    assert float(e) == pytest.approx(float(e_ref), rel=1e-6)
    assert_forces_close(np.asarray(g), np.asarray(g_ref), rel=1e-5)


def test_periodic_equals_replicated_free_cluster(periodic_schnet):
    """Per-atom energies of the box = those of the central cell of a free 3x3x3 supercell.

    With 2 interactions of cutoff 3 Angstrom, an atom's energy depends on atoms within 6 < 7
    Angstrom, all present in the supercell around the central cell.
    """
    model, params, ev = periodic_schnet
    R = jnp.asarray(R_PBC, jnp.float32)
    _, _, ea = ev(params, R, neighbor=model.neighbor_fn.allocate(R))
    shifts = np.array([[i, j, k] for i in (0, -1, 1) for j in (0, -1, 1) for k in (0, -1, 1)])
    R_big = (R_PBC[None] + BOX * shifts[:, None]).reshape(-1, 3)  # central cell first
    free = build("schnet", np.tile(Z_PBC, len(shifts)))
    ea_big = np.asarray(jax.jit(free.per_atom_energy_fn)(params, jnp.asarray(R_big, jnp.float32)))
    np.testing.assert_allclose(ea, ea_big[:N_PBC], rtol=1e-5, atol=1e-5)
    assert np.abs(ea_big[N_PBC:] - np.tile(ea, len(shifts) - 1)).max() > 1e-3  # surface atoms


def test_periodic_vmap_with_neighbor_lists(periodic_schnet):
    """Replicas with their own neighbour lists under vmap equal one-by-one evaluation."""
    model, params, ev = periodic_schnet
    Rs = jnp.asarray(np.stack([R_PBC + 0.05 * np.random.default_rng(s).normal(size=R_PBC.shape)
                               for s in range(2)]), jnp.float32)
    nbrs = model.neighbor_fn.allocate(Rs[0], extra_capacity=2)

    @jax.jit
    def batched(params, Rs, nbrs):
        nbrs_b = jax.vmap(lambda R: nbrs.update(R))(Rs)
        e = jax.vmap(lambda R, nb: model.energy_fn(params, R, neighbor=nb))(Rs, nbrs_b)
        return e, nbrs_b.did_buffer_overflow

    e_b, overflow = batched(params, Rs, nbrs)
    assert not np.any(np.asarray(overflow))
    for k in range(2):
        e, _, _ = ev(params, Rs[k], neighbor=model.neighbor_fn.allocate(Rs[k]))
        assert float(e_b[k]) == pytest.approx(float(e), rel=1e-6)


# ---------------------------------------------------------------- input validation


def test_bad_species_raises():
    with pytest.raises(ValueError, match=r"\[8\].*'O'"):
        make_model(dataclasses.replace(CONFIGS["schnet"], species=(1, 6)), Z)
    with pytest.raises(ValueError, match="energy_shift.*missing \\[8\\]"):
        build("schnet", energy_shift={1: 0.0, 6: 0.0})


def test_bad_inputs_raise(periodic_schnet):
    model = build("schnet")
    with pytest.raises(ValueError, match=r"shape \[8, 3\]"):
        model.energy_fn(None, jnp.zeros((7, 3)))
    periodic, p_params, _ = periodic_schnet
    with pytest.raises(ValueError, match="neighbor="):
        periodic.energy_fn(p_params, jnp.asarray(R_PBC, jnp.float32))
    with pytest.raises(ValueError, match="avg_num_neighbors"):
        make_model(CONFIGS["nequip"], Z)
    with pytest.raises(ValueError, match="2 x cutoff"):
        build("schnet", box=5.0)
    with pytest.raises(ValueError, match="neighbor_format"):
        build("schnet", box=BOX, neighbor_format="ordered")


@pytest.mark.parametrize("cls, field, value", [
    (SchNetConfig, "cutoff_angstrom", -1.0),
    (SchNetConfig, "n_interactions", 0),
    (SchNetConfig, "n_gaussians", 1),
    (SchNetConfig, "param_dtype", "float16"),
    (NequIPConfig, "n_layers", 0),
    (NequIPConfig, "hidden_irreps", "4x1o"),
    (NequIPConfig, "hidden_irreps", "not irreps"),
    (NequIPConfig, "species", (1, 1)),
])
def test_config_validation(cls, field, value):
    with pytest.raises(ValueError, match=f"{cls.__name__}.{field}"):
        cls(**{field: value})
