"""Physics checks of the GemNet-T potential (tiny widths, CPU).

A 6-atom O/H cluster about 4 Angstrom wide with a 3 Angstrom cutoff (so edges and triplets are
masked), a 2-block model of width 8. Every symmetry test also asserts that the compared quantity
changes under a generic perturbation, so the comparison can fail.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from stablejax.models import GemNetTConfig, gemnet_parameter_count, make_model
from stablejax.models.gemnet import gemnet_scale_factor_count
from stablejax.models import gemnet_basis as gb
from stablejax.models.gemnet import cap_neighbors, dense_product, reverse_edge_slot
from stablejax.models.neighbors import all_pairs_edges

Z = np.array([8, 1, 1, 8, 1, 1])
CUTOFF = 3.0
AVG = 3.0
SHIFT = {1: -0.5, 8: -2.0}
SCALE = {1: 0.3, 8: 0.9}
CFG = GemNetTConfig(cutoff_angstrom=CUTOFF, n_blocks=2, emb_size_atom=8, emb_size_edge=8,
                    emb_size_rbf=4, emb_size_cbf=4, emb_size_trip=4, emb_size_bil_trip=4,
                    num_radial=3, num_spherical=4, num_atom=1, num_after_skip=1,
                    output_init="heorthogonal")  # a non-trivial function at init


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


TRICLINIC_CELL = np.array([[4.2, 0.0, 0.0], [0.6, 4.3, 0.0], [-0.4, 0.5, 4.4]])  # rows


@pytest.mark.parametrize("cell", [pytest.param("cubic", marks=pytest.mark.slow), "triclinic"])
def test_periodic_supercell(cell):
    """Energy per atom of a periodic box equals that of its 2x1x1 supercell (cubic and
    triclinic cells; the lattice vectors are the rows of ``cell``)."""
    cutoff = 2.0
    cfg = dataclasses.replace(CFG, cutoff_angstrom=cutoff, n_blocks=1)
    z = np.array([8, 1, 1, 1, 8])
    lattice = np.diag([4.2] * 3) if cell == "cubic" else TRICLINIC_CELL
    frac = random_points(len(z), 1.0, seed=7, min_dist=0.25, box=1.0)
    R = frac @ lattice
    super_lattice = lattice * np.array([[2.0], [1.0], [1.0]])
    R2 = np.concatenate([R, R + lattice[0]])
    z2 = np.concatenate([z, z])
    per_atom = []
    params = None
    for zz, RR, lat in ((z, R, lattice), (z2, R2, super_lattice)):
        model = build(cfg, zz, box=lat.T, capacity_multiplier=1.5)
        Rj = jnp.asarray(RR, jnp.float32)
        if params is None:
            params = model.init(jax.random.PRNGKey(3), Rj)
        nbrs = model.neighbor_fn.allocate(Rj)
        assert not bool(nbrs.did_buffer_overflow)
        assert int(model.edges_fn(Rj, nbrs).mask.sum()) > 0
        per_atom.append(np.asarray(model.per_atom_energy_fn(params, Rj, neighbor=nbrs)))
    np.testing.assert_allclose(per_atom[1][: len(z)], per_atom[0], atol=2e-5)
    np.testing.assert_allclose(per_atom[1][len(z):], per_atom[0], atol=2e-5)
    np.testing.assert_allclose(per_atom[1].sum() / len(z2), per_atom[0].sum() / len(z),
                               rtol=1e-5)
    assert np.ptp(per_atom[0]) > 1e-4  # the atoms see different environments


def test_cutoff_above_half_box_rejected():
    with pytest.raises(ValueError, match="cutoff"):
        build(dataclasses.replace(CFG, cutoff_angstrom=2.5), box=4.2)


def test_unknown_species_rejected():
    cfg = dataclasses.replace(CFG, species=(1, 8))
    with pytest.raises(ValueError, match="6"):
        build(cfg, atomic_numbers=np.array([8, 1, 6]))


def test_neighbor_count_overflow_flagged():
    """A periodic list allocated for a dilute box overflows when the atoms crowd together; the
    caller sees ``did_buffer_overflow`` (the simulator then reallocates)."""
    cfg = dataclasses.replace(CFG, cutoff_angstrom=2.0, n_blocks=1)
    side = 6.0
    z = np.array([8, 1, 1, 8, 1, 1, 8, 1])
    R = random_points(len(z), side, seed=11, min_dist=1.9, box=side)
    model = build(cfg, z, box=side, capacity_multiplier=1.0)
    nbrs = model.neighbor_fn.allocate(jnp.asarray(R, jnp.float32))
    crowded = 2.0 + 0.3 * (R - R.mean(0)) / np.abs(R - R.mean(0)).max()
    nbrs = nbrs.update(jnp.asarray(crowded, jnp.float32))
    assert bool(nbrs.did_buffer_overflow)


def test_max_neighbors_cap():
    """The compatibility cap keeps mutual k-nearest edges: a symmetric graph with at most k
    edges per atom; the dropped edges are counted; a cap above every neighbour count changes
    nothing."""
    from stablejax.models.gemnet import count_capped_edges

    R = jnp.asarray(random_points(len(Z), 3.0, seed=4, min_dist=0.8), jnp.float32)
    full = all_pairs_edges(R, CUTOFF)
    counts = np.asarray(full.mask.sum(1))
    assert counts.max() >= 3
    base = build()
    params = base.init(jax.random.PRNGKey(0), R)
    e_full = float(base.energy_fn(params, R))
    loose = build(dataclasses.replace(CFG, max_neighbors=int(counts.max())))
    assert int(count_capped_edges(loose, int(counts.max()), R)) == 0
    assert float(loose.energy_fn(params, R)) == pytest.approx(e_full, abs=1e-6)
    k = 2
    capped_edges, dropped = cap_neighbors(full, k)
    mask, s = np.asarray(capped_edges.mask), np.asarray(full.senders)
    assert mask.sum(1).max() <= k
    rev = np.asarray(reverse_edge_slot(full))
    assert np.all(mask[s, rev][mask])  # every kept edge's reverse is kept
    assert int(dropped) == int(full.mask.sum()) - int(mask.sum()) > 0
    tight = build(dataclasses.replace(CFG, max_neighbors=k))
    assert int(count_capped_edges(tight, k, R)) == int(dropped)
    assert abs(float(tight.energy_fn(params, R)) - e_full) > 1e-5


@pytest.mark.slow  # make test-slow (default-suite time)
def test_zero_output_init():
    """``output_init='zeros'``: the untrained model gives the per-species shifts and no force."""
    model = build(dataclasses.replace(CFG, output_init="zeros"))
    R = jnp.asarray(R0, jnp.float32)
    params = model.init(jax.random.PRNGKey(0), R)
    e = np.asarray(model.per_atom_energy_fn(params, R))
    np.testing.assert_allclose(e, [SHIFT[int(z)] for z in Z], atol=1e-6)
    assert float(jnp.abs(jax.grad(model.energy_fn, argnums=1)(params, R)).max()) == 0.0


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
    ("max_neighbors", 0), ("output_init", "normal"), ("emb_size_trip", 0),
    ("trainable_scales", 1),
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
    old = dataclasses.replace(GemNetTConfig.cpu_scale(), trainable_scales=False)
    assert gemnet_parameter_count(old, n_species=2) == 49_734  # the cpu-scale run's model


def test_scale_factor_counts():
    """4 n_blocks + 1 trainable scale factors: the reference's 17 for the paper's 4 blocks, 9 for
    the cpu scale (2 blocks), 5 for the demo (1 block); none with fixed constants."""
    assert gemnet_scale_factor_count(GemNetTConfig()) == 17
    assert gemnet_scale_factor_count(GemNetTConfig.cpu_scale()) == 9
    assert gemnet_scale_factor_count(GemNetTConfig.cpu_scale(n_blocks=1)) == 5
    assert gemnet_scale_factor_count(GemNetTConfig(trainable_scales=False)) == 0


@pytest.mark.slow  # make test-slow (default-suite time)
def test_trainable_scales_start_at_the_constants():
    """With the same kernels, trainable scale factors at their initial values give the energy of
    the fixed constants; changing one changes it (it is a live parameter)."""
    R = jnp.asarray(R0, jnp.float32)
    fixed = build(dataclasses.replace(CFG, trainable_scales=False))
    live = build(CFG)
    p_fixed = fixed.init(jax.random.PRNGKey(0), R)
    p_live = live.init(jax.random.PRNGKey(0), R)

    def graft(path, x):  # the live tree's scale factors, every other leaf from the fixed tree
        names = [str(k.key) for k in path]
        return x if names[-1].startswith("scale_") else functools.reduce(
            lambda node, n: node[n], names, p_fixed)

    p = jax.tree_util.tree_map_with_path(graft, p_live)
    scales = {tuple(str(k.key) for k in path): float(x)
              for path, x in jax.tree_util.tree_leaves_with_path(p)
              if str(path[-1].key).startswith("scale_")}
    assert len(scales) == 4 * CFG.n_blocks + 1
    assert scales[("params", "output_0", "scale_sum")] == pytest.approx(AVG ** -0.5)
    assert scales[("params", "interaction_0", "scale_rbf")] == 1.0
    e_fixed = float(fixed.energy_fn(p_fixed, R))
    assert float(live.energy_fn(p, R)) == pytest.approx(e_fixed, abs=1e-5)
    p["params"]["interaction_1"]["scale_cbf_sum"] = jnp.asarray(2.0)
    assert abs(float(live.energy_fn(p, R)) - e_fixed) > 1e-4


def test_he_orthogonal_output_init_is_the_default():
    """The output layers start He-orthogonal (norm ~1, mean ~0 over the fan-in): the untrained
    model has forces."""
    model = build(GemNetTConfig(**{k: v for k, v in dataclasses.asdict(CFG).items()
                                   if k not in ("output_init", "trainable_scales")}))
    R = jnp.asarray(R0, jnp.float32)
    params = model.init(jax.random.PRNGKey(0), R)
    for t in range(CFG.n_blocks + 1):
        w = np.asarray(params["params"][f"output_{t}"]["out_energy"])[:, 0]
        assert np.linalg.norm(w) == pytest.approx(np.sqrt(1 - 1 / w.size), rel=1e-3)
        assert abs(w.mean()) < 1e-6
    assert float(jnp.abs(jax.grad(model.energy_fn, argnums=1)(params, R)).max()) > 1e-3


def test_model_json_without_the_new_fields_builds_the_old_model(tmp_path):
    """A model.json written before ``trainable_scales`` existed (no such field) rebuilds the
    old parameterisation (fixed constants, zero-initialised outputs), so its checkpoints load;
    the resume check reads the absent field as that old value too."""
    from stablejax.io.run_dir import RunDir, params_template
    from stablejax.train.model_spec import ModelSpec

    old_cfg = dataclasses.replace(CFG, output_init="zeros", trainable_scales=False)
    spec = ModelSpec(kind="gemnet-t", config=dataclasses.asdict(old_cfg),
                     atomic_numbers=tuple(int(z) for z in Z), energy_shift=SHIFT,
                     energy_scale=0.5, avg_num_neighbors=AVG)
    stored = spec.to_json()
    del stored["config"]["trainable_scales"], stored["config"]["output_init"]
    (tmp_path / "run").mkdir()
    rd = RunDir(tmp_path / "run")
    rd.model_spec_path.write_text(json.dumps(stored))
    model = spec.build()
    R = jnp.asarray(R0, jnp.float32)
    params = jax.tree.map(lambda x: x + 0.01, model.init(jax.random.PRNGKey(4), R))  # trained
    rd.save_params("best", 3, params)

    loaded = ModelSpec.load(rd.model_spec_path)
    cfg = loaded.model_config
    absent = {k: loaded.default_config()[k] for k in ("trainable_scales", "output_init")}
    assert (cfg.trainable_scales, cfg.output_init) == (False, "zeros")
    assert absent == {"trainable_scales": False, "output_init": "zeros"}
    rebuilt = loaded.build()
    restored = rd.load_params("best", params_template(rebuilt.init, len(Z)))
    assert float(rebuilt.energy_fn(restored, R)) == pytest.approx(
        float(model.energy_fn(params, R)), rel=1e-6)
    # the current default is the new parameterisation: its tree differs (scale factors)
    new = ModelSpec.from_json({**stored, "config": {**stored["config"], "trainable_scales": True,
                                                    "output_init": "heorthogonal"}})
    assert gemnet_scale_factor_count(new.model_config) == 4 * CFG.n_blocks + 1


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


def test_dense_product_gradients_match_plain_dot(x64):
    """The dense layers' custom VJP (kernel gradient from stored activations) gives jnp.dot's
    value, first derivatives and the second derivatives pre-training takes (the parameter
    gradient of a loss on input gradients, i.e. of forces)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 5, 4)))
    w = jnp.asarray(rng.normal(size=(4, 6)))
    c = jnp.asarray(rng.normal(size=(3, 5, 6)))

    def head(dot):
        def energy(w, x):
            return jnp.sum(jnp.tanh(dot(jnp.tanh(x), w)) * c)
        return energy

    mine, plain = head(dense_product), head(jnp.dot)
    np.testing.assert_allclose(mine(w, x), plain(w, x), rtol=1e-14)
    for argnums in (0, 1):
        np.testing.assert_allclose(jax.grad(mine, argnums)(w, x),
                                   jax.grad(plain, argnums)(w, x), rtol=1e-12)

    def force_loss(energy):
        return lambda w, x: jnp.sum(jax.grad(energy, 1)(w, x) ** 2)

    g_mine = jax.grad(force_loss(mine))(w, x)
    g_plain = jax.grad(force_loss(plain))(w, x)
    assert np.abs(g_plain).max() > 1e-3
    np.testing.assert_allclose(g_mine, g_plain, rtol=1e-11, atol=1e-14)
