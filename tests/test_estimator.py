"""Tests of stablejax.estimator: the Boltzmann estimator, its baseline and frame reweighting.

All gradient checks run in float64 (enabled in the ``x64`` fixture only).
"""

from __future__ import annotations

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from stablejax.estimator import (
    boltzmann_loss,
    effective_sample_size,
    importance_weights,
    needs_resimulation,
    per_frame_gradient_baseline,
)

N_ATOMS = 5
BASE = np.array([[0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [0, 0, 1.1], [1.1, 1.1, 0.0]])


def _pair_r(R):
    iu = np.triu_indices(R.shape[0], 1)
    d = R[:, None] - R[None]
    return jnp.sqrt(jnp.sum(d**2, -1)[iu])


def toy_energy(p, R):
    """LJ plus a tiny neural pair term, eV; params: eps, sig, w1, b1, w2 (13 numbers)."""
    r = _pair_r(R)
    lj = 4 * p["eps"] * ((p["sig"] / r) ** 12 - (p["sig"] / r) ** 6)
    h = jnp.tanh(r[:, None] * p["w1"] + p["b1"])
    return jnp.sum(lj) + jnp.sum(h @ p["w2"])


def toy_observable(R):
    """Gaussian-smeared pair-distance histogram on 6 bins."""
    # centres built at trace time: a module-level float64 numpy constant, traced both with and
    # without x64 in one process, hits a dtype-mismatch lowering error in jax 0.12.0.1
    centres = jnp.linspace(0.8, 2.5, 6, dtype=R.dtype)
    r = _pair_r(R)
    return jnp.exp(-((r[:, None] - centres) ** 2) / 0.1).sum(0)


def toy_problem(n_frames=37, seed=0):
    rng = np.random.default_rng(seed)
    X = jnp.asarray(BASE + 0.1 * rng.normal(size=(n_frames, N_ATOMS, 3)))
    params = {
        "eps": jnp.asarray(0.01),
        "sig": jnp.asarray(1.0),
        "w1": jnp.asarray(rng.normal(size=3)),
        "b1": jnp.asarray(rng.normal(size=3)),
        "w2": jnp.asarray(0.1 * rng.normal(size=3)),
    }
    target = jnp.asarray(rng.uniform(1, 3, size=6))
    return params, X, target


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def _rel(a, b):
    a, b = _flat(a), _flat(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


KW = dict(energy_fn=toy_energy, observable_fn=toy_observable, kT=0.05)


# (a) analytic: harmonic oscillators sampled exactly from the Boltzmann distribution ------------
def test_harmonic_oscillator_matches_analytic(x64):
    # U = k/2 sum x^2 over M = 12 coordinates; x ~ N(0, kT/k); O = mean x^2, <O> = kT/k,
    # d<O>/dk = -kT/k^2. Estimate = -beta * (M/2) * Var_hat(O): its relative standard error is
    # sqrt((2 + 12/M)/N) = sqrt(3/N) = 0.87% for N = 40000 (O ~ chi2_M/M has excess kurtosis 12/M).
    # Tolerance 4 standard errors (3.5%); a missing beta would be off by 20x, a wrong sign by 200%.
    kT, k, n, m_atoms = 0.05, 2.5, 40000, 4
    se = np.sqrt(3.0 / n)
    x = jax.random.normal(jax.random.key(42), (n, m_atoms, 3)) * np.sqrt(kT / k)
    energy = lambda p, R: 0.5 * p["k"] * jnp.sum(R**2)  # noqa: E731
    obs = lambda R: jnp.mean(R**2)  # noqa: E731
    params = {"k": jnp.asarray(k)}
    common = dict(energy_fn=energy, observable_fn=obs, kT=kT, chunk_size=4096)
    linear = lambda a, t: a - t  # noqa: E731, loss = <O>: its gradient is d<O>/dk
    g = jax.grad(boltzmann_loss)(params, x, target=0.0, loss_fn=linear, **common)["k"]
    exact = -kT / k**2
    assert abs(g / exact - 1) < 4 * se, (g, exact)
    # default MSE loss with target t: dL/dk = 2 (<O> - t) d<O>/dk
    t = 0.005
    loss, g = jax.value_and_grad(boltzmann_loss)(params, x, target=t, **common)
    assert abs(loss / (kT / k - t) ** 2 - 1) < 4 * 2 * np.sqrt(2 / 12 / n) * kT / k / (kT / k - t)
    exact = 2 * (kT / k - t) * (-kT / k**2)
    assert abs(g["k"] / exact - 1) < 4 * se, (g["k"], exact)


# (b) estimator == per-frame baseline -----------------------------------------------------------
@pytest.mark.parametrize("scaling", ["physical", "reference"])
def test_matches_per_frame_baseline(x64, scaling):
    params, X, target = toy_problem()
    mask = jnp.asarray(np.random.default_rng(1).uniform(size=37) > 0.25)
    kw = dict(KW, target=target, mask=mask, scaling=scaling, block_size=5, key=jax.random.key(3))
    loss, g = jax.value_and_grad(boltzmann_loss)(params, X, chunk_size=8, **kw)
    loss_b, g_b = per_frame_gradient_baseline(params, X, **kw)
    assert abs(loss - loss_b) <= 1e-12 * abs(loss_b)
    assert _rel(g, g_b) < 1e-10
    # with importance weights (physical) / weighted blocks (reference) and a custom loss
    lw = jnp.asarray(np.random.default_rng(2).normal(size=37))
    l1 = lambda a, t: jnp.sum(jnp.abs(a - t) ** 1.5)  # noqa: E731
    kw.update(log_weights=lw, loss_fn=l1)
    g = jax.grad(boltzmann_loss)(params, X, chunk_size=8, **kw)
    assert _rel(g, per_frame_gradient_baseline(params, X, **kw)[1]) < 1e-10


def _literal_reference(params, X, target, block_size):
    """The reference implementation's loop, transcribed in numpy (no beta, blocks in order)."""
    per_frame = jax.vmap(jax.grad(toy_energy), (None, 0))(params, X)
    G = np.concatenate([np.reshape(g, (len(X), -1)) for g in jax.tree.leaves(per_frame)], 1)
    O = np.asarray(jax.vmap(toy_observable)(X))  # [n, d]
    raw = []
    for start in range(0, len(X), block_size):
        g, df = O[start : start + block_size], G[start : start + block_size]
        jac = (df.mean(0)[None] * g.mean(0)[:, None] - df[:, None] * g[:, :, None]).mean(0)
        v = 2 * (g.mean(0) - np.asarray(target))
        raw.append(v @ jac)
    return np.mean(raw, axis=0)


def test_reference_scaling_reproduces_reference_loop(x64):
    params, X, target = toy_problem()
    kw = dict(KW, target=target, scaling="reference", block_size=5, chunk_size=8, kT=None)
    g = _flat(jax.grad(boltzmann_loss)(params, X, **kw))  # 37 = 7 blocks of 5 + a block of 2
    ref = _literal_reference(params, X, target, 5)
    assert np.max(np.abs(g - ref)) < 1e-10 * np.max(np.abs(ref))
    # with a key: the reference loop on the valid frames in the shuffled order
    key = jax.random.key(7)
    mask = np.random.default_rng(4).uniform(size=37) > 0.3
    g = _flat(jax.grad(boltzmann_loss)(params, X, key=key, mask=jnp.asarray(mask), **kw))
    perm = np.asarray(jax.random.permutation(key, 37))
    order = perm[mask[perm]]
    ref = _literal_reference(params, X[order], target, 5)
    assert np.max(np.abs(g - ref)) < 1e-10 * np.max(np.abs(ref))


# (c) finite differences of the reweighted average -----------------------------------------------
def test_matches_finite_differences_of_reweighted_average(x64):
    params0, X, target = toy_problem()
    kT = 0.05
    ref_e = jax.vmap(toy_energy, (None, 0))(params0, X)  # frames "sampled" under params0
    params = jax.tree.map(lambda p: p * 1.002, params0)  # evaluate at theta != theta0

    def reweighted_loss(p):
        e = jax.vmap(toy_energy, (None, 0))(p, X)
        w = jax.nn.softmax(-(e - ref_e) / kT)
        avg = jnp.einsum("i,id->d", w, jax.vmap(toy_observable)(X))
        return jnp.mean((avg - target) ** 2)

    weights, _ = importance_weights(params, X, toy_energy, ref_e, kT)
    g = jax.grad(boltzmann_loss)(
        params, X, **KW, target=target, chunk_size=8, log_weights=jnp.log(weights)
    )
    # Exact autodiff through the weights of the explicit reweighted average: same gradient.
    assert _rel(g, jax.grad(reweighted_loss)(params)) < 1e-10
    # Central FD along 3 random directions. The truncation error (~eps^2 times the third
    # derivative) is large here (beta = 20/eV, steep LJ): measured 1.8e-4 at eps = 1e-5 and
    # 1.8e-6 at eps = 1e-6 for |g.d| ~ 4.5; round-off ~ 1e-16 L / eps ~ 1e-10.
    # Tolerance 1e-6 |g| |d| (~ 3e-5).
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    gflat = _flat(g)
    rng = np.random.default_rng(5)
    eps = 1e-6
    for _ in range(3):
        d = rng.normal(size=flat.shape)
        fd = reweighted_loss(unravel(flat + eps * d)) - reweighted_loss(unravel(flat - eps * d))
        fd = fd / (2 * eps)
        tol = 1e-6 * np.linalg.norm(gflat) * np.linalg.norm(d)
        assert abs(fd - gflat @ d) < tol, (fd, gflat @ d)


# (d) masking, NaN and inf frames ----------------------------------------------------------------
@pytest.mark.parametrize("scaling", ["physical", "reference"])
def test_bad_frames_are_excluded(x64, scaling):
    params, X, target = toy_problem()
    Xb = np.array(X)
    Xb[3, 2] = np.nan  # NaN position
    Xb[7, 0, 1] = np.inf  # inf position
    Xb[11, 1] = Xb[11, 0]  # two atoms on top of each other: LJ energy is inf/NaN
    mask = np.ones(37, bool)
    mask[20] = False
    good = np.setdiff1d(np.arange(37), [3, 7, 11, 20])
    # key=None keeps the order, so the blocks of the valid frames equal those of X[good]
    kw = dict(KW, target=target, scaling=scaling, block_size=4, chunk_size=6)
    loss, g = jax.value_and_grad(boltzmann_loss)(params, jnp.asarray(Xb), mask=mask, **kw)
    loss_ref, g_ref = jax.value_and_grad(boltzmann_loss)(params, X[good], **kw)
    assert np.all(np.isfinite(_flat(g)))
    assert abs(loss - loss_ref) < 1e-12 * loss_ref
    assert _rel(g, g_ref) < 1e-12
    _, aux = boltzmann_loss(params, jnp.asarray(Xb), mask=mask, has_aux=True, **kw)
    assert int(aux.n_valid) == 33 and not bool(aux.valid[11]) and bool(aux.valid[12])
    # with a key the result is finite too
    g = jax.grad(boltzmann_loss)(params, jnp.asarray(Xb), mask=mask, key=jax.random.key(0), **kw)
    assert np.all(np.isfinite(_flat(g)))


def test_no_valid_frames_gives_zero_without_nan(x64):
    params, X, target = toy_problem(8)
    Xb = np.array(X)
    Xb[:4] = np.nan
    mask = np.array([True] * 4 + [False] * 4)
    for scaling in ("physical", "reference"):
        f = functools.partial(boltzmann_loss, **KW, target=target, scaling=scaling, has_aux=True)
        (loss, aux), g = jax.value_and_grad(f, has_aux=True)(params, jnp.asarray(Xb), mask=mask)
        assert float(loss) == 0.0 and int(aux.n_valid) == 0
        assert np.all(_flat(g) == 0.0)


# (e) importance weights -----------------------------------------------------------------------
def test_importance_weights_uniform_at_theta0(x64):
    params, X, target = toy_problem()
    _, aux = boltzmann_loss(params, X, **KW, target=target, has_aux=True)
    w, ess = importance_weights(params, X, toy_energy, aux.energies, 0.05, chunk_size=8)
    np.testing.assert_allclose(w, 1 / 37, rtol=1e-12)
    assert abs(ess - 37) < 1e-9 and abs(effective_sample_size(w, "kish") - 37) < 1e-9
    assert not bool(needs_resimulation(ess, 37))
    mask = np.arange(37) % 4 != 0  # 27 frames kept
    w, ess = importance_weights(params, X, toy_energy, aux.energies, 0.05, mask)
    assert np.all(w[~mask] == 0) and abs(ess - 27) < 1e-9
    # far from theta0 the weights degenerate and the policy asks for new frames
    far = dict(params, w2=params["w2"] + 0.5)
    w, ess = importance_weights(far, X, toy_energy, aux.energies, 0.05)
    assert abs(float(jnp.sum(w)) - 1) < 1e-12 and ess < 0.9 * 37
    assert bool(needs_resimulation(ess, 37))
    one_hot = jnp.zeros(10).at[3].set(1.0)
    assert abs(effective_sample_size(one_hot) - 1) < 1e-12


# (f) jit, (g) chunk size ----------------------------------------------------------------------
def test_jit_matches_eager(x64):
    params, X, target = toy_problem()
    f = functools.partial(boltzmann_loss, **KW, target=target, chunk_size=8)
    loss, g = jax.value_and_grad(f)(params, X)
    loss_j, g_j = jax.jit(jax.value_and_grad(f))(params, X)
    assert abs(loss - loss_j) < 1e-12 * loss and _rel(g_j, g) < 1e-12
    # kT and the key may be traced
    fr = lambda p, x, kT, key: boltzmann_loss(  # noqa: E731
        p, x, **dict(KW, kT=kT), target=target, scaling="reference", key=key, block_size=6
    )
    g_r = jax.jit(jax.grad(fr))(params, X, 0.05, jax.random.key(1))
    assert _rel(g_r, jax.grad(fr)(params, X, 0.05, jax.random.key(1))) < 1e-12


@pytest.mark.parametrize("scaling", ["physical", "reference"])
def test_gradient_independent_of_chunk_size(x64, scaling):
    params, X, target = toy_problem()
    kw = dict(KW, target=target, scaling=scaling, block_size=5, key=jax.random.key(2))
    ref = jax.grad(boltzmann_loss)(params, X, chunk_size=None, **kw)
    for cs in (1, 8, 100):
        assert _rel(jax.grad(boltzmann_loss)(params, X, chunk_size=cs, **kw), ref) < 1e-12


# aux differentiability, pytree frames, no gradient to frames, argument checks -----------------
def test_aux_average_and_energies_are_differentiable(x64):
    params, X, target = toy_problem()

    def first_bin(p):
        return boltzmann_loss(p, X, **KW, target=target, has_aux=True)[1].average[0]

    g = jax.grad(first_bin)(params)
    pick = lambda a, t: a[0]  # noqa: E731
    g_b = per_frame_gradient_baseline(params, X, **KW, target=target, loss_fn=pick)[1]
    assert _rel(g, g_b) < 1e-10
    aux_fn = functools.partial(boltzmann_loss, frames=X, **KW, target=target, has_aux=True)
    g = jax.grad(lambda p: aux_fn(p)[1].energies.sum())
    g_direct = jax.grad(lambda p: jax.vmap(toy_energy, (None, 0))(p, X).sum())
    assert _rel(g(params), g_direct(params)) < 1e-12


def test_pytree_frames_and_zero_frame_gradient(x64):
    params, X, target = toy_problem()
    frames = {"R": X, "scale": jnp.ones(37)}
    kw = dict(
        energy_fn=lambda p, f: toy_energy(p, f["R"] * f["scale"]),
        observable_fn=lambda f: toy_observable(f["R"]),
        kT=0.05,
        target=target,
    )
    g = jax.grad(boltzmann_loss)(params, frames, **kw)
    assert _rel(g, jax.grad(boltzmann_loss)(params, X, **KW, target=target)) < 1e-12
    g_frames = jax.grad(boltzmann_loss, argnums=1)(params, X, **KW, target=target)
    assert np.all(np.asarray(g_frames) == 0)


def test_bad_arguments_raise():
    params, X, target = toy_problem(6)
    with pytest.raises(ValueError, match="mask"):
        boltzmann_loss(params, X, **KW, target=target, mask=jnp.ones(5, bool))
    with pytest.raises(ValueError, match="target"):
        boltzmann_loss(params, X, **KW, target=jnp.zeros(4))
    with pytest.raises(ValueError, match="scaling"):
        boltzmann_loss(params, X, **KW, target=target, scaling="nope")
    with pytest.raises(ValueError, match="kT"):
        boltzmann_loss(params, X, **dict(KW, kT=-1.0), target=target)
    with pytest.raises(ValueError, match="leading frame axis"):
        boltzmann_loss(params, {"R": X, "s": jnp.ones(3)}, **KW, target=target)
    with pytest.raises(ValueError, match="scalar"):
        boltzmann_loss(params, X, **dict(KW, energy_fn=lambda p, R: R), target=target)
    with pytest.raises(ValueError, match="matmul_precision"):
        boltzmann_loss(params, X, **KW, target=target, matmul_precision="tf32")


@pytest.mark.parametrize("precision", ["highest", None])
def test_matrix_products_get_the_requested_precision(precision):
    """Both passes' products are traced at ``matmul_precision`` (GPUs default to TF32 inputs,
    too coarse for the covariance), and None leaves JAX's default."""
    params, X, target = toy_problem(8)
    grad = jax.jit(jax.grad(lambda p: boltzmann_loss(p, X, **KW, target=target, chunk_size=4,
                                                     matmul_precision=precision)))
    dots = [line for line in grad.lower(params).as_text().splitlines() if "dot_general" in line]
    assert dots
    want = "HIGHEST" if precision else "DEFAULT"
    assert all(f"precision = [{want}, {want}]" in line for line in dots), dots


def test_memory_does_not_grow_with_frames_times_params():
    # Compiled temporary memory (XLA's static analysis, no run): the per-frame baseline stores an
    # [n_frames, P] gradient matrix, so from 128 to 512 frames it must grow by at least
    # 384 * P * 4 bytes; the estimator's growth is only the O(n_frames * d) observables and
    # weights, measured ~30 kB here, far below 10% of that (~670 kB).
    hidden = 64

    def energy(p, R):
        r = _pair_r(R)
        h = jnp.tanh(r[:, None] * p["w1"] + p["b1"])
        return jnp.sum(jnp.tanh(h @ p["w2"] + p["b2"]) @ p["w3"])

    keys = jax.random.split(jax.random.key(0), 4)
    params = {
        "w1": jax.random.normal(keys[0], (hidden,)),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(keys[1], (hidden, hidden)) / 8,
        "b2": jnp.zeros(hidden),
        "w3": jax.random.normal(keys[2], (hidden,)),
    }
    n_params = sum(x.size for x in jax.tree.leaves(params))
    kw = dict(energy_fn=energy, observable_fn=toy_observable, target=jnp.zeros(6), kT=0.05)
    est, base = [], []
    for n in (128, 512):
        X = jax.random.normal(keys[3], (n, 6, 3))
        f = jax.jit(jax.grad(lambda p, x: boltzmann_loss(p, x, chunk_size=16, **kw)))
        est.append(f.lower(params, X).compile().memory_analysis().temp_size_in_bytes)
        b = jax.jit(lambda p, x: per_frame_gradient_baseline(p, x, **kw)[1])
        base.append(b.lower(params, X).compile().memory_analysis().temp_size_in_bytes)
    dense_growth = 384 * n_params * 4
    assert base[1] - base[0] >= dense_growth
    assert est[1] - est[0] < 0.1 * dense_growth
    assert est[1] < 0.1 * base[1]


@pytest.mark.parametrize("scaling", ["physical", "reference"])
def test_skipping_forward_energies_gives_the_same_gradient(x64, scaling):
    params, X, target = toy_problem()
    mask = jnp.asarray(np.random.default_rng(4).uniform(size=37) > 0.2)
    kw = dict(KW, target=target, mask=mask, scaling=scaling, block_size=5, chunk_size=8)
    loss, g = jax.value_and_grad(boltzmann_loss)(params, X, **kw)
    f = functools.partial(boltzmann_loss, forward_energies=False, has_aux=True, **kw)
    (loss2, aux), g2 = jax.value_and_grad(f, has_aux=True)(params, X)
    assert abs(loss2 - loss) <= 1e-14 * abs(loss) and _rel(g2, g) < 1e-12
    assert bool(jnp.all(jnp.isnan(aux.energies)))
    # a frame with finite positions/observable but infinite energy (two atoms on top of each
    # other) is not caught in the forward pass: its chunk is dropped, the gradient stays finite
    Xb = np.array(X)
    Xb[11, 1] = Xb[11, 0]
    g3 = jax.jit(jax.grad(functools.partial(boltzmann_loss, forward_energies=False, **kw)))(
        params, jnp.asarray(Xb))
    assert np.all(np.isfinite(_flat(g3)))
