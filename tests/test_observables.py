"""Tests of stablejax.observables against independent numpy computations (float64)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stablejax.observables import (
    ANGSTROM2_PER_FS_IN_1E9_M2_PER_S,
    bond_length_distribution,
    bond_lengths,
    diffusivity,
    distance_distribution,
    distance_distribution_frames,
    distance_distribution_target,
    hr_mae,
    make_bins,
    max_deviation_per_molecule,
    mean_abs_error,
    msd,
    partial_rdfs,
    rdf_mae,
    unwrap_positions,
    vacf,
)


pytestmark = pytest.mark.usefixtures("x64_module")


def np_min_image_distances(a, b, box):
    """Brute force over the 27 neighbouring images of an orthorhombic box: [len(a), len(b)]."""
    shifts = np.array(list(itertools.product([-1, 0, 1], repeat=3))) * np.asarray(box)
    d = a[:, None, None, :] - b[None, :, None, :] + shifts[None, None]
    return np.linalg.norm(d, axis=-1).min(axis=-1)


def np_smeared(values, centres, sigma):
    return np.exp(-0.5 * ((centres[None, :] - values[:, None]) / sigma) ** 2).sum(axis=0)


def test_bins_follow_method_convention():
    b = make_bins(10.0, 0.02)
    assert b.n_bins == 500 and make_bins(15.0, 0.02).n_bins == 750
    np.testing.assert_allclose(b.centres[[0, -1]], [0.01, 9.99])
    with pytest.raises(ValueError, match="whole number of bins"):
        make_bins(10.0, 0.03)


def test_distance_distribution_matches_numpy():
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 4.0, size=(3, 7, 3))
    r_max, dr, sigma = 5.0, 0.02, 0.01
    centres = (np.arange(250) + 0.5) * dr
    per_frame = []
    for R in frames:  # all N(N-1) ordered pairs, as the reference code counts them
        d = np.linalg.norm(R[:, None] - R[None], axis=-1)[~np.eye(7, dtype=bool)]
        h = np_smeared(d, centres, sigma)
        per_frame.append(100 * h / h.sum())
    per_frame = np.array(per_frame)
    got = distance_distribution_frames(jnp.asarray(frames), r_max=r_max, dr=dr, sigma=sigma)
    np.testing.assert_allclose(got, per_frame, rtol=1e-10, atol=1e-12)
    target = distance_distribution_target(jnp.asarray(frames), r_max=r_max)
    np.testing.assert_allclose(target, per_frame.mean(0), rtol=1e-10, atol=1e-12)
    masked = distance_distribution_target(jnp.asarray(frames), valid=jnp.array([1, 0, 1]), r_max=r_max)
    np.testing.assert_allclose(masked, per_frame[[0, 2]].mean(0), rtol=1e-10, atol=1e-12)
    # jit + vmap of the one-frame function agree with the batched helper.
    vm = jax.jit(jax.vmap(lambda R: distance_distribution(R, r_max=r_max)))(jnp.asarray(frames))
    np.testing.assert_allclose(vm, per_frame, rtol=1e-10, atol=1e-12)


def test_dimer_peak_sits_at_its_bin_midpoint():
    R = jnp.array([[0.0, 0.0, 0.0], [1.23, 0.0, 0.0]])  # 1.23 is the centre of bin [1.22, 1.24)
    h = distance_distribution(R)
    c = make_bins(10.0, 0.02).centres
    assert abs(c[int(jnp.argmax(h))] - 1.23) < 1e-9
    # sigma = dr / 2: the neighbouring bins get exp(-2) of the peak.
    np.testing.assert_allclose(h[int(jnp.argmax(h)) + 1] / h.max(), np.exp(-2.0), rtol=1e-10)


def test_hr_mae_convention():
    h = jnp.zeros(500).at[0].set(100.0)
    h_ref = jnp.zeros(500).at[1].set(100.0)
    np.testing.assert_allclose(mean_abs_error(h, h_ref), 200.0 / 500)
    np.testing.assert_allclose(hr_mae(h, h_ref), 10 * 200.0 / 500)
    np.testing.assert_allclose(hr_mae(h, 3.0 * h_ref), hr_mae(h, h_ref))  # h_ref rescaled


def test_partial_rdfs_match_numpy():
    rng = np.random.default_rng(1)
    box = np.array([7.0, 8.0, 9.0])
    species = np.array([8] * 6 + [1] * 12)
    frames = rng.uniform(0, 1, size=(4, 18, 3)) * box
    r_max, dr = 3.5, 0.05
    edges = np.arange(71) * dr
    shell = 4 * np.pi / 3 * (edges[1:] ** 3 - edges[:-1] ** 3)
    expected = []
    for a, b in [(8, 8), (8, 1), (1, 1)]:
        ia, ib = np.nonzero(species == a)[0], np.nonzero(species == b)[0]
        hists = []
        for R in frames:
            d = np_min_image_distances(R[ia], R[ib], box)
            d = d[ia[:, None] != ib[None, :]]
            hists.append(np.histogram(d, bins=edges)[0])
        n_pairs = len(ia) * len(ib) - (len(ia) if a == b else 0)
        expected.append(np.mean(hists, axis=0) / (n_pairs / box.prod() * shell))
    got = partial_rdfs(jnp.asarray(frames), species, jnp.asarray(box), r_max=r_max, dr=dr)
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-10, atol=1e-10)
    # A [3, 3] cell gives the same result.
    got_cell = partial_rdfs(jnp.asarray(frames), species, jnp.diag(jnp.asarray(box)), r_max=r_max, dr=dr)
    np.testing.assert_allclose(got_cell, got, atol=1e-10)


def test_rdf_of_ideal_gas_is_one():
    frames = jax.random.uniform(jax.random.key(0), (300, 60, 3)) * 10.0
    g = partial_rdfs(frames, np.full(60, 8), 10.0, pairs=((8, 8),), r_max=4.5, dr=0.25)[0]
    # Bins at r >= 1.5: >= 3,700 distinct pairs per bin over 300 frames -> <= 1.7 % noise; allow
    # 8 % (~5 sigma). A normalisation error (e.g. shell r^2 dr vs exact volume) would show at small r.
    np.testing.assert_allclose(g[6:], 1.0, atol=0.08)
    assert float(rdf_mae(g[None, 6:], jnp.ones((1, 12)), 3.0)[0]) < 0.1


def test_bond_lengths_distribution_and_local_deviation():
    rng = np.random.default_rng(2)
    frames = rng.normal(size=(5, 6, 3))
    bonds = np.array([[0, 1], [1, 2], [3, 4], [4, 5]])
    d_np = np.linalg.norm(frames[:, bonds[:, 0]] - frames[:, bonds[:, 1]], axis=-1)
    np.testing.assert_allclose(bond_lengths(jnp.asarray(frames), bonds), d_np, rtol=1e-12)
    types = np.array([0, 1, 0, 1])
    got = bond_length_distribution(jnp.asarray(frames), bonds, r_min=0.0, r_max=5.0, dr=0.05,
                                   sigma=0.05, bond_types=types)
    centres = (np.arange(100) + 0.5) * 0.05
    for t in range(2):
        per = [np_smeared(d[types == t], centres, 0.05) for d in d_np]
        np.testing.assert_allclose(got[t], np.mean([100 * h / h.sum() for h in per], 0), rtol=1e-10,
                                   atol=1e-12)
    dev = jnp.abs(bond_lengths(jnp.asarray(frames), bonds) - 1.0)
    local = max_deviation_per_molecule(dev, np.array([0, 0, 1, 1]), 2)
    np.testing.assert_allclose(local, np.abs(d_np - 1).reshape(5, 2, 2).max(-1), rtol=1e-12)
    # Periodic minimum image: a bond across the boundary.
    R = jnp.array([[0.1, 5.0, 5.0], [9.9, 5.0, 5.0]])
    np.testing.assert_allclose(bond_lengths(R, np.array([[0, 1]]), cell=10.0), [0.2], atol=1e-12)


def np_lag_average(x, max_lag, fn):
    return np.array([np.mean([fn(x[t], x[t + lag]) for t in range(len(x) - lag)]) for lag in range(max_lag + 1)])


def test_msd_vacf_diffusivity_match_numpy():
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(size=(40, 5, 3)), axis=0)
    m_np = np_lag_average(x, 10, lambda a, b: np.mean(np.sum((b - a) ** 2, -1)))
    np.testing.assert_allclose(msd(jnp.asarray(x), 10), m_np, rtol=1e-10)
    np.testing.assert_allclose(msd(x, 10), m_np, rtol=1e-10)  # numpy input works too
    mask = np.array([1, 0, 1, 0, 1], bool)
    np.testing.assert_allclose(
        msd(jnp.asarray(x), 10, atom_mask=mask),
        np_lag_average(x[:, mask], 10, lambda a, b: np.mean(np.sum((b - a) ** 2, -1))), rtol=1e-10)
    v = rng.normal(size=(40, 5, 3))
    c_np = np_lag_average(v, 8, lambda a, b: np.mean(np.sum(a * b, -1)))
    np.testing.assert_allclose(vacf(jnp.asarray(v), 8), c_np, rtol=1e-10)
    np.testing.assert_allclose(vacf(jnp.asarray(v), 8, normalize=True), c_np / c_np[0], rtol=1e-10)
    dt = 2.5
    np.testing.assert_allclose(diffusivity(jnp.asarray(x), dt, max_lag=10), m_np[10] / (6 * 10 * dt))
    slope = np.polyfit(np.arange(2, 11) * dt, m_np[2:], 1)[0]
    np.testing.assert_allclose(
        diffusivity(jnp.asarray(x), dt, max_lag=10, method="fit", fit_start_lag=2), slope / 6, rtol=1e-8)
    # Ballistic motion x = v t: MSD(t) = |v|^2 t^2 exactly.
    vel = rng.normal(size=(4, 3))
    xb = np.arange(30)[:, None, None] * dt * vel[None]
    np.testing.assert_allclose(msd(jnp.asarray(xb), 5), (np.arange(6) * dt) ** 2 * np.mean(np.sum(vel**2, -1)))
    # 1 A^2/fs = 1e-20 m^2 / 1e-15 s, in units of 1e-9 m^2/s.
    assert ANGSTROM2_PER_FS_IN_1E9_M2_PER_S == pytest.approx(1e-20 / 1e-15 / 1e-9)


def test_unwrap_positions_inverts_wrapping():
    rng = np.random.default_rng(4)
    x = 5.0 + np.cumsum(rng.normal(scale=0.5, size=(60, 4, 3)), axis=0)
    wrapped = np.mod(x, 6.0)
    np.testing.assert_allclose(unwrap_positions(jnp.asarray(wrapped), 6.0), x - (x[0] - wrapped[0]), atol=1e-10)
