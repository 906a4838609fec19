"""The JAX-MD adapter: Lennard-Jones as a stablejax model with learnable sigma and epsilon."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax_md import energy, simulate, space

from stablejax.models import bind, lennard_jones_model

SIGMA, EPS = 1.2, 0.3  # Angstrom, eV

# jax_md's smap sums in "high precision" and warns that float64 is unavailable without x64
pytestmark = pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")


def lattice(n_side: int, a: float, jitter: float, seed: int) -> np.ndarray:
    g = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    return g + jitter * np.random.default_rng(seed).normal(size=g.shape)


def test_free_matches_jax_md_and_closed_form():
    model = lennard_jones_model(sigma=SIGMA, epsilon=EPS)
    params = model.init(jax.random.PRNGKey(0), None)
    assert set(params) == {"sigma", "epsilon"} and params["sigma"].dtype == jnp.float32

    @jax.jit
    def ours(p, R):
        (e, (g_p, g_r)) = jax.value_and_grad(model.energy_fn, argnums=(0, 1))(p, R)
        return e, g_p, g_r, model.per_atom_energy_fn(p, R)

    @jax.jit
    def reference(sigma, epsilon, R):
        return jax.value_and_grad(
            energy.lennard_jones_pair(space.free()[0], sigma=sigma, epsilon=epsilon))(R)

    R = jnp.asarray(lattice(2, 1.3, 0.1, 0), jnp.float32)
    for sigma, eps in [(SIGMA, EPS), (1.0, 0.5)]:  # new parameter values flow through
        p = {"sigma": jnp.float32(sigma), "epsilon": jnp.float32(eps)}
        e, g_p, g_r, e_atoms = ours(p, R)
        e_ref, g_ref = reference(sigma, eps, R)
        assert float(e) == pytest.approx(float(e_ref), rel=1e-6)
        np.testing.assert_allclose(g_r, g_ref, rtol=1e-5, atol=1e-6 * float(jnp.abs(g_ref).max()))
        assert float(jnp.sum(e_atoms)) == pytest.approx(float(e), rel=1e-5)
        # parameter gradients: E is linear in epsilon; the sigma gradient is finite, non-zero
        assert float(g_p["epsilon"]) == pytest.approx(float(e) / eps, rel=1e-5)
        assert np.isfinite(float(g_p["sigma"])) and float(g_p["sigma"]) != 0.0
    # a dimer inside the onset radius (2 sigma) is plain LJ: 4 eps ((s/r)^12 - (s/r)^6)
    r = 1.4
    dimer = jnp.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0]])
    exact = 4 * EPS * ((SIGMA / r) ** 12 - (SIGMA / r) ** 6)
    assert float(jax.jit(model.energy_fn)(params, dimer)) == pytest.approx(exact, rel=1e-5)


def test_periodic_neighbor_list_matches_all_pairs():
    box = 6.5  # >= 2 x r_cutoff (2.5 sigma = 3 Angstrom)
    R = jnp.asarray(lattice(3, box / 3, 0.05, 2), jnp.float32)
    displacement, _ = space.periodic_general(jnp.float32(box), fractional_coordinates=False)
    ref = energy.lennard_jones_pair(displacement, sigma=SIGMA, epsilon=EPS)(R)
    for fmt in ("dense", "sparse"):
        model = lennard_jones_model(box=box, sigma=SIGMA, epsilon=EPS, neighbor_format=fmt)
        params = model.init(jax.random.PRNGKey(0), None)
        nbrs = model.neighbor_fn.allocate(R)
        assert not nbrs.did_buffer_overflow
        e, g = jax.jit(jax.value_and_grad(model.energy_fn))(params, R, neighbor=nbrs)
        assert float(e) == pytest.approx(float(ref), rel=1e-5)
        # padded neighbour slots give no NaN; E is linear in epsilon
        assert float(g["epsilon"]) == pytest.approx(float(e) / EPS, rel=1e-5)
        assert np.isfinite(float(g["sigma"]))
    with pytest.raises(ValueError, match="2 x cutoff"):
        lennard_jones_model(box=5.0, sigma=SIGMA)


def test_bind_runs_jax_md_nve():
    """bind(energy_fn, params) is a JAX-MD energy: 200 NVE steps conserve the total energy."""
    model = lennard_jones_model(sigma=1.0, epsilon=1.0)
    params = model.init(jax.random.PRNGKey(0), None)
    R = jnp.asarray(lattice(2, 1.12, 0.05, 3), jnp.float32)
    e_fn = bind(model.energy_fn, params)
    init, step = simulate.nve(e_fn, model.shift_fn, dt=1e-3)
    state = init(jax.random.PRNGKey(1), R, kT=0.1)

    def total(s):
        return e_fn(s.position) + 0.5 * jnp.sum(s.momentum**2 / s.mass)

    e0 = total(state)
    state = jax.jit(lambda s: jax.lax.fori_loop(0, 200, lambda i, s: step(s), s))(state)
    drift = abs(float(total(state) - e0))
    assert drift < 1e-3 * abs(float(e0))
    assert float(jnp.abs(state.position - R).max()) > 1e-3  # the atoms did move


def test_jax_md_lennard_jones_pair_has_nan_parameter_gradients():
    """Why the adapter uses lennard_jones_safe: the literal JAX-MD recipe (lennard_jones_pair with
    sigma and epsilon taken from params) gives NaN parameter gradients."""
    R = jnp.asarray(lattice(2, 1.3, 0.1, 1), jnp.float32)
    disp = space.free()[0]

    def literal(p, R):
        return energy.lennard_jones_pair(disp, sigma=p["sigma"], epsilon=p["epsilon"])(R)

    g = jax.grad(literal)({"sigma": jnp.float32(SIGMA), "epsilon": jnp.float32(EPS)}, R)
    assert np.isnan(float(g["epsilon"]))


def test_periodic_lj_float32_forces_finite_under_jit():
    """Regression: empty neighbour slots became ~1e-6 A self-pairs under jit in float32 and
    (sigma/dr)^12 overflowed to inf, giving NaN forces after JAX-MD's masking."""
    n_cells, a = 3, 5.82
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    box = n_cells * a
    rng = np.random.default_rng(0)
    for trial in range(4):
        R = ((cells + base[None]).reshape(-1, 3) * a + rng.normal(scale=0.01, size=(108, 3))) % box
        m = lennard_jones_model(box=box, sigma=3.405, epsilon=0.0104)
        p = m.init(None, None)
        R = jnp.asarray(R, jnp.float32)
        nbr = m.neighbor_fn.allocate(R)
        F = jax.jit(jax.grad(m.energy_fn, argnums=1))(p, R, neighbor=nbr)
        assert bool(jnp.all(jnp.isfinite(F))), f"non-finite forces in trial {trial}"
