"""Physics checks of the GemNet-T potential (tiny widths, CPU).

A 6-atom O/H cluster about 4 Angstrom wide with a 3 Angstrom cutoff (so edges and triplets are
masked), a 2-block model of width 8. Every symmetry test also asserts that the compared quantity
changes under a generic perturbation, so the comparison can fail.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from stablejax.models import GemNetTConfig, gemnet_parameter_count, make_model
from stablejax.models import gemnet_basis as gb
from stablejax.models.gemnet import reverse_edge_slot
from stablejax.models.neighbors import all_pairs_edges

Z = np.array([8, 1, 1, 8, 1, 1])
CUTOFF = 3.0
AVG = 3.0
SHIFT = {1: -0.5, 8: -2.0}
SCALE = {1: 0.3, 8: 0.9}
CFG = GemNetTConfig(cutoff_angstrom=CUTOFF, n_blocks=2, emb_size_atom=8, emb_size_edge=8,
                    emb_size_rbf=4, emb_size_cbf=4, emb_size_trip=4, emb_size_bil_trip=4,
                    num_radial=3, num_spherical=4, num_atom=1, num_after_skip=1)


def random_points(n: int, width: float, seed: int, min_dist: float = 1.0,
                  box: float | np.ndarray | None = None) -> np.ndarray:
    """n points in a cube (or box) of side ``width``, no pair (minimum image if box) closer than
    ``min_dist``, Angstrom."""
    rng = np.random.default_rng(seed)
    side = np.broadcast_to(np.asarray(width if box is None else box, float), (3,))
    pts: list[np.ndarray] = []
    while len(pts) < n:
        p = rng.uniform(0.0, 1.0, 3) * side
        ok = True
        for q in pts:
            d = p - q
            if box is not None:
                d = d - side * np.round(d / side)
            ok &= np.linalg.norm(d) >= min_dist
        if ok:
            pts.append(p)
    return np.array(pts)


def rotation(seed: int, proper: bool) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q = q @ np.diag([1.0, 1.0, -1.0])
    return q


R0 = random_points(len(Z), 4.0, seed=3)


def build(cfg=CFG, atomic_numbers=Z, **kwargs):
    return make_model(cfg, atomic_numbers, energy_shift=SHIFT, energy_scale=SCALE,
                      avg_num_neighbors=AVG, **kwargs)


def test_invariances():
    """Rotation, reflection, translation and same-species permutation leave the energy (and the
    per-atom energies, permuted) unchanged; a generic displacement changes them."""
    model = build()
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(R0, jnp.float32))
    per_atom = jax.jit(model.per_atom_energy_fn)
    e0 = np.asarray(per_atom(params, jnp.asarray(R0, jnp.float32)))
    perm = np.array([3, 2, 5, 0, 4, 1])  # O <-> O, H -> H
    assert np.all(Z[perm] == Z)
    cases = {
        "rotation": (R0 @ rotation(1, True).T, np.arange(6)),
        "reflection": (R0 @ rotation(2, False).T, np.arange(6)),
        "translation": (R0 + np.array([1.3, -2.1, 0.7]), np.arange(6)),
        "permutation": (R0[perm], perm),
    }
    for name, (R, order) in cases.items():
        e = np.asarray(per_atom(params, jnp.asarray(R, jnp.float32)))
        np.testing.assert_allclose(e, e0[order], atol=2e-5, err_msg=name)
    moved = R0 + 0.1 * np.random.default_rng(5).normal(size=R0.shape)
    assert np.abs(np.asarray(per_atom(params, jnp.asarray(moved, jnp.float32))) - e0).max() > 1e-3


def test_forces_finite_differences_and_per_atom_sum(x64):
    """float64: forces = -grad E equal central finite differences; per-atom energies sum to E."""
    model = build(dataclasses.replace(CFG, param_dtype="float64", n_blocks=1))
    R = jnp.asarray(R0, jnp.float64)
    params = model.init(jax.random.PRNGKey(1), R)
    energy = jax.jit(model.energy_fn)
    forces = -np.asarray(jax.jit(jax.grad(model.energy_fn, argnums=1))(params, R))
    assert np.abs(forces).max() > 1e-3
    h = 1e-5
    fd = np.zeros_like(forces)
    for i in range(R.shape[0]):
        for k in range(3):
            dR = np.zeros(R.shape)
            dR[i, k] = h
            fd[i, k] = -(float(energy(params, R + dR)) - float(energy(params, R - dR))) / (2 * h)
    np.testing.assert_allclose(forces, fd, atol=1e-7 * max(1.0, np.abs(forces).max()) + 1e-8)
    e_atoms = model.per_atom_energy_fn(params, R)
    assert e_atoms.shape == (len(Z),)
    np.testing.assert_allclose(float(jnp.sum(e_atoms)), float(energy(params, R)), rtol=1e-12)


def test_angle_dependence_beyond_cutoff(x64):
    """Centre atom with two neighbours at 0.8 cutoff whose mutual distance exceeds the cutoff:
    only the triplet at the centre sees the angle, and the energy must depend on it (float64:
    rounding is ~1e-15 eV, the angle effect of this untrained tiny model ~1e-4 eV)."""
    model = build(dataclasses.replace(CFG, param_dtype="float64"),
                  atomic_numbers=np.array([8, 1, 1]))
    d = 0.8 * CUTOFF

    def positions(theta_deg):
        t = np.deg2rad(theta_deg)
        return jnp.asarray([[0.0, 0.0, 0.0], [d, 0.0, 0.0], [d * np.cos(t), d * np.sin(t), 0.0]],
                           jnp.float64)

    params = model.init(jax.random.PRNGKey(2), positions(100.0))
    energy = jax.jit(model.energy_fn)
    energies = []
    for theta in (100.0, 130.0, 160.0):
        R = positions(theta)
        assert float(jnp.linalg.norm(R[1] - R[2])) > CUTOFF  # outer pair is not an edge
        edges = all_pairs_edges(R, CUTOFF)
        assert int(edges.mask.sum()) == 4  # only the four centre <-> outer edges
        energies.append(float(energy(params, R)))
    assert np.ptp(energies) > 1e-6, energies


def test_periodic_supercell():
    """Energy per atom of a periodic cubic box equals that of its 2x1x1 supercell."""
    cutoff, side = 2.0, 4.2
    cfg = dataclasses.replace(CFG, cutoff_angstrom=cutoff, n_blocks=1)
    z = np.array([8, 1, 1, 1, 8])
    R = random_points(len(z), side, seed=7, box=side)
    R2 = np.concatenate([R, R + np.array([side, 0.0, 0.0])])
    z2 = np.concatenate([z, z])
    box2 = np.array([2 * side, side, side])
    per_atom = []
    params = None
    for zz, RR, box in ((z, R, side), (z2, R2, box2)):
        model = build(cfg, zz, box=box, capacity_multiplier=1.5)
        Rj = jnp.asarray(RR, jnp.float32)
        if params is None:
            params = model.init(jax.random.PRNGKey(3), Rj)
        nbrs = model.neighbor_fn.allocate(Rj)
        assert not bool(nbrs.did_buffer_overflow)
        per_atom.append(np.asarray(model.per_atom_energy_fn(params, Rj, neighbor=nbrs)))
    np.testing.assert_allclose(per_atom[1][: len(z)], per_atom[0], atol=2e-5)
    np.testing.assert_allclose(per_atom[1][len(z):], per_atom[0], atol=2e-5)
    np.testing.assert_allclose(per_atom[1].sum() / len(z2), per_atom[0].sum() / len(z),
                               rtol=1e-5)
    assert np.ptp(per_atom[0]) > 1e-4  # the atoms see different environments


def test_sparse_neighbor_lists_rejected():
    with pytest.raises(ValueError, match="neighbor_format='dense'"):
        build(dataclasses.replace(CFG, cutoff_angstrom=2.0), box=4.2, neighbor_format="sparse")


def test_avg_num_neighbors_required():
    with pytest.raises(ValueError, match="avg_num_neighbors"):
        make_model(CFG, Z)


@pytest.mark.parametrize("field,value", [
    ("cutoff_angstrom", 0.0), ("n_blocks", 0), ("emb_size_atom", 2.5), ("emb_size_edge", -1),
    ("emb_size_trip", True), ("num_radial", 0), ("num_spherical", 1), ("envelope_exponent", 0),
    ("num_before_skip", -1), ("num_atom", 1.0), ("species", (1, 1)), ("param_dtype", "float16"),
])
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=f"GemNetTConfig.{field}"):
        GemNetTConfig(**{field: value})


def test_parameter_count():
    n_paper = gemnet_parameter_count(GemNetTConfig(), n_species=2)
    n_cpu = gemnet_parameter_count(GemNetTConfig.cpu_scale(), n_species=2)
    print(f"GemNet-T parameters (2 species): paper config {n_paper}, cpu scale {n_cpu}")
    assert 2.0e6 < n_paper < 2.6e6  # ~2.3M, docs/water.md
    assert n_cpu < n_paper / 20


def test_reverse_edge_slot():
    R = jnp.asarray(R0, jnp.float32)
    edges = all_pairs_edges(R, CUTOFF)
    rev = np.asarray(reverse_edge_slot(edges))
    s, mask = np.asarray(edges.senders), np.asarray(edges.mask)
    back = s[s, rev]  # the sender of the reverse edge is the receiver of the edge
    assert np.all(back[mask] == np.broadcast_to(np.arange(len(Z))[:, None], s.shape)[mask])
    assert np.all(mask[s, rev][mask])


def test_basis_functions():
    zeros = gb.spherical_bessel_zeros(4, 3)
    for ell in range(4):
        np.testing.assert_allclose(special.spherical_jn(ell, zeros[ell]), 0.0, atol=1e-10)
    x = np.linspace(0.1, 20.0, 200)
    for ell in range(4):
        np.testing.assert_allclose(np.asarray(gb.spherical_jn(ell, jnp.asarray(x))),
                                   special.spherical_jn(ell, x), atol=1e-6)
    c = np.linspace(-1.0, 1.0, 11)
    y = np.asarray(gb.zonal_harmonics(jnp.asarray(c), 4))
    for ell in range(4):
        np.testing.assert_allclose(y[:, ell], np.sqrt((2 * ell + 1) / (4 * np.pi))
                                   * special.eval_legendre(ell, c), atol=1e-6)
    env = np.asarray(gb.polynomial_envelope(jnp.asarray([0.0, 0.5, 1.0, 1.2]), 5))
    np.testing.assert_allclose(env[[0, 2, 3]], [1.0, 0.0, 0.0], atol=1e-6)
