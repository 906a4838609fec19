"""The localized Boltzmann estimator (one molecule per environment) against per-environment
baselines written here, on a small periodic water box with a tiny GemNet-T (float64)."""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from stablejax.estimator import boltzmann_loss
from stablejax.estimator.localized import (
    Environments,
    all_environments,
    bond_length_observable,
    localized_boltzmann_loss,
    molecule_bonds,
    stratified_environments,
)
from stablejax.models import GemNetTConfig, make_model

# JAX-MD's neighbour-list update scatters int64 indices under x64 (not this code's arrays)
pytestmark = pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types")

TINY = GemNetTConfig(cutoff_angstrom=2.5, n_blocks=1, emb_size_atom=8, emb_size_edge=8,
                     emb_size_rbf=4, emb_size_cbf=4, emb_size_trip=4, emb_size_bil_trip=4,
                     num_radial=3, num_spherical=3, num_atom=1, num_after_skip=1,
                     output_init="heorthogonal", param_dtype="float64")
KT = 0.0259


def water_molecules(centres: np.ndarray, seed: int, mixed_order: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """O, H, H per centre; with ``mixed_order`` atoms are listed H, O, H for odd molecules
    (atom order is not the molecule layout). Returns (atomic numbers, positions)."""
    rng = np.random.default_rng(seed)
    z, R = [], []
    for k, c in enumerate(centres):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        w = np.cross(u, rng.normal(size=3))
        w /= np.linalg.norm(w)
        a = np.deg2rad(104.5 / 2)
        o, h1, h2 = c, c + 0.96 * (np.cos(a) * u + np.sin(a) * w), c + 0.96 * (
            np.cos(a) * u - np.sin(a) * w)
        if k % 2 and mixed_order:
            z += [1, 8, 1]
            R += [h1, o, h2]
        else:
            z += [8, 1, 1]
            R += [o, h1, h2]
    return np.array(z), np.array(R)


def topology(z: np.ndarray):
    """Molecule index and bonds (O-H) of :func:`water_molecules`' layout."""
    mol = np.repeat(np.arange(len(z) // 3), 3)
    bonds = []
    for m in range(len(z) // 3):
        atoms = np.where(mol == m)[0]
        o = atoms[z[atoms] == 8][0]
        bonds += [(o, h) for h in atoms[z[atoms] == 1]]
    return mol, np.array(bonds)


def perturbed(R: np.ndarray, n: int, seed: int, scale: float = 0.06) -> np.ndarray:
    return R[None] + scale * np.random.default_rng(seed).normal(size=(n,) + R.shape)


@pytest.fixture(scope="module")
def box_setup(x64_module):
    side = 5.2
    centres = np.array([[1.0, 1.0, 1.0], [3.6, 1.2, 3.5], [1.3, 3.7, 3.2], [3.8, 3.9, 1.4]])
    z, R = water_molecules(centres, seed=0)
    mol, bonds = topology(z)
    model = make_model(TINY, z, box=side, avg_num_neighbors=4.0, capacity_multiplier=2.0)
    X = np.mod(perturbed(R, 3, seed=1), side)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(X[0]))
    nbrs = model.neighbor_fn.allocate(jnp.asarray(X[0]))

    def per_atom(p, R):
        return model.per_atom_energy_fn(p, R, neighbor=nbrs.update(R))

    obs_fn = bond_length_observable(molecule_bonds(bonds, mol), side)
    return dict(z=z, mol=mol, bonds=bonds, X=jnp.asarray(X), params=params, per_atom=per_atom,
                obs=obs_fn, side=side)


def baseline_terms(s, env: Environments):
    """Per-environment observables (numpy minimum image) and dU_e/dtheta (one jax.grad per
    environment): the dense quantities the estimator must never form."""
    X = np.asarray(s["X"])

    @jax.jit
    def local_energy_grad(R, atoms):  # atoms: [n_atoms] 0/1 membership of the molecule
        g = jax.grad(lambda p: jnp.sum(s["per_atom"](p, R) * atoms))(s["params"])
        return jax.flatten_util.ravel_pytree(g)[0]

    obs, grads = [], []
    for f, m in zip(np.asarray(env.frame), np.asarray(env.molecule)):
        pairs = s["bonds"][s["mol"][s["bonds"][:, 0]] == m]
        d = X[f][pairs[:, 0]] - X[f][pairs[:, 1]]
        d -= s["side"] * np.round(d / s["side"])
        obs.append(np.linalg.norm(d, axis=-1))
        grads.append(np.asarray(local_energy_grad(s["X"][f], (s["mol"] == m).astype(float))))
    return np.array(obs), np.array(grads)


def flat(tree) -> np.ndarray:
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0])


@pytest.mark.slow  # make test-slow (default-suite time); the blocked baseline stays
def test_physical_gradient_matches_per_environment_baseline(box_setup):
    s = box_setup
    env = all_environments(3, 4)
    rng = np.random.default_rng(2)
    weights = rng.uniform(0.5, 3.0, size=12)  # inverse inclusion probabilities
    env = env._replace(weight=jnp.asarray(weights))
    target = jnp.array([0.97, 0.99])
    obs, G = baseline_terms(s, env)
    w = weights / weights.sum()
    avg = w @ obs
    v = 2 * (avg - np.asarray(target)) / obs.shape[1]
    want = -(1 / KT) * ((w * ((obs - avg) @ v)) @ G)

    def loss(p):
        return localized_boltzmann_loss(p, s["X"], env, per_atom_energy_fn=s["per_atom"],
                                        observable_fn=s["obs"], molecule_index=s["mol"],
                                        target=target, kT=KT, chunk_size=2)

    got = flat(jax.jit(jax.grad(loss))(s["params"]))
    assert np.abs(want).max() > 1e-6
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12 * np.abs(want).max())
    val, aux = localized_boltzmann_loss(s["params"], s["X"], env,
                                        per_atom_energy_fn=s["per_atom"],
                                        observable_fn=s["obs"], molecule_index=s["mol"],
                                        target=target, kT=KT, has_aux=True)
    np.testing.assert_allclose(np.asarray(aux.average), avg, rtol=1e-12)
    assert float(val) == pytest.approx(np.mean((avg - np.asarray(target)) ** 2), rel=1e-12)
    # local energies sum to the frame energy over its molecules
    e_frame = jnp.sum(s["per_atom"](s["params"], s["X"][0]))
    assert float(jnp.sum(aux.local_energies[:4])) == pytest.approx(float(e_frame), rel=1e-12)


def test_reference_gradient_matches_blocked_baseline(box_setup):
    s = box_setup
    env = all_environments(3, 4)
    key = jax.random.PRNGKey(7)
    target = jnp.array([0.97, 0.99])
    obs, G = baseline_terms(s, env)
    perm = np.asarray(jax.random.permutation(key, 12))
    blocks = [perm[i:i + 4] for i in range(0, 12, 4)]
    want = np.zeros(G.shape[1])
    for b in blocks:
        ob = obs[b].mean(0)
        vb = 2 * (ob - np.asarray(target))
        want += -((obs[b] - ob) @ vb) @ G[b] / len(b)
    want /= len(blocks)

    def loss(p):
        return localized_boltzmann_loss(p, s["X"], env, per_atom_energy_fn=s["per_atom"],
                                        observable_fn=s["obs"], molecule_index=s["mol"],
                                        target=target, kT=None, scaling="reference",
                                        block_size=4, key=key, forward_energies=False)

    got = flat(jax.jit(jax.grad(loss))(s["params"]))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12 * np.abs(want).max())


@pytest.mark.slow  # make test-slow (default-suite time)
def test_non_interacting_environments_equal_the_global_estimator(x64):
    """Molecules farther apart than the cutoff: each local energy is its molecule's own energy,
    so the localized estimator equals the global one over the environments as frames."""
    centres = np.array([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]])
    z, R = water_molecules(centres, seed=3, mixed_order=False)
    mol, bonds = topology(z)
    model = make_model(TINY, z, avg_num_neighbors=4.0)
    X = jnp.asarray(perturbed(R, 4, seed=4))
    params = model.init(jax.random.PRNGKey(1), X[0])
    env = all_environments(4, 3)
    target = jnp.array([0.95, 0.98])
    obs_fn = bond_length_observable(molecule_bonds(bonds, mol), None)

    def local(p):
        return localized_boltzmann_loss(p, X, env, per_atom_energy_fn=model.per_atom_energy_fn,
                                        observable_fn=obs_fn, molecule_index=mol, target=target,
                                        kT=KT)

    # the same environments as frames of one isolated molecule (O, H, H), frame-major
    single = make_model(TINY, z[:3], avg_num_neighbors=4.0)
    frames = jnp.asarray(np.asarray(X).reshape(4 * 3, 3, 3))

    def glob(p):
        return boltzmann_loss(p, frames, energy_fn=single.energy_fn,
                              observable_fn=lambda x: jnp.linalg.norm(x[1:] - x[0], axis=-1),
                              target=target, kT=KT)

    g_local = flat(jax.jit(jax.grad(local))(params))
    g_global = flat(jax.jit(jax.grad(glob))(params))
    assert np.abs(g_global).max() > 1e-6
    np.testing.assert_allclose(g_local, g_global, rtol=1e-9, atol=1e-13)


def test_masked_and_non_finite_environments(box_setup):
    s = box_setup
    env = all_environments(3, 4)
    target = jnp.array([0.97, 0.99])
    X_bad = s["X"].at[1, 5, 0].set(jnp.nan)  # frame 1 is broken

    @jax.jit
    def grad_of_jit(X, env):
        def loss(p):
            return localized_boltzmann_loss(p, X, env, per_atom_energy_fn=s["per_atom"],
                                            observable_fn=s["obs"], molecule_index=s["mol"],
                                            target=target, kT=KT)
        return jax.grad(loss)(s["params"])

    def grad_of(X, env):
        return flat(grad_of_jit(X, env))

    without_frame_1 = env._replace(mask=jnp.asarray(np.asarray(env.frame) != 1))
    g_bad = grad_of(X_bad, env)
    assert np.all(np.isfinite(g_bad))
    np.testing.assert_allclose(g_bad, grad_of(s["X"], without_frame_1), rtol=1e-10)
    _, aux = localized_boltzmann_loss(s["params"], X_bad, env, per_atom_energy_fn=s["per_atom"],
                                      observable_fn=s["obs"], molecule_index=s["mol"],
                                      target=target, kT=KT, has_aux=True)
    assert int(aux.n_valid) == 8
    nothing = env._replace(mask=jnp.zeros(12, bool))
    assert np.all(grad_of(s["X"], nothing) == 0.0)


def test_stratified_environments():
    rng = np.random.default_rng(0)
    dev = rng.exponential(0.02, size=(30, 16))
    dev[3, 5] = 0.5  # one rare, strongly distorted molecule
    valid = np.ones_like(dev, bool)
    valid[7] = False  # a frame left out
    env = stratified_environments(jnp.asarray(dev), jnp.asarray(valid), jax.random.PRNGKey(0),
                                  n_bins=10, per_bin=12)
    f, m, w, mask = (np.asarray(x) for x in env)
    f, m, w = f[mask], m[mask], w[mask]
    assert len(set(zip(f, m))) == len(f)  # without replacement
    assert np.all(valid[f, m])
    assert (3, 5) in set(zip(f, m))  # the rare environment is always drawn, weight 1
    d = dev[valid]
    edges = np.linspace(d.min(), d.max(), 11)
    count = np.histogram(d, edges)[0]
    chosen_bins = np.clip(np.floor((dev[f, m] - d.min()) / (d.max() - d.min()) * 10), 0, 9)
    for b in range(10):
        n_b = int(np.sum(chosen_bins == b))
        assert n_b == min(count[b], 12)
        if n_b:
            np.testing.assert_allclose(w[chosen_bins == b], max(1.0, count[b] / 12), rtol=1e-6)
    # weighted sums over the draw estimate census totals: exact for the counts
    assert float(w.sum()) == pytest.approx(float(valid.sum()), rel=1e-6)


def test_bad_inputs(box_setup):
    s = box_setup
    env = all_environments(3, 4)
    kw = dict(per_atom_energy_fn=s["per_atom"], observable_fn=s["obs"], kT=KT)
    with pytest.raises(ValueError, match="molecule index"):
        localized_boltzmann_loss(s["params"], s["X"], env, molecule_index=None,
                                 target=jnp.zeros(2), **kw)
    with pytest.raises(ValueError, match=r"returns shape \(2,\) per environment"):
        localized_boltzmann_loss(s["params"], s["X"], env, molecule_index=s["mol"],
                                 target=jnp.zeros(3), **kw)
    empty = Environments(*(x[:0] for x in env))
    with pytest.raises(ValueError, match="zero environments"):
        localized_boltzmann_loss(s["params"], s["X"], empty, molecule_index=s["mol"],
                                 target=jnp.zeros(2), **kw)
    with pytest.raises(ValueError, match="molecule indices must be in"):
        localized_boltzmann_loss(s["params"], s["X"], env._replace(molecule=env.molecule + 1),
                                 molecule_index=s["mol"], target=jnp.zeros(2), **kw)
    with pytest.raises(ValueError, match="different molecules"):
        molecule_bonds(np.array([[0, 3]]), s["mol"])
