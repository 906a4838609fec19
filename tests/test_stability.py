"""Tests of stablejax.stability criteria against brute-force numpy (float64)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stablejax.observables import partial_rdfs
from stablejax.stability import (
    BOND_TOLERANCE_EVAL_ANGSTROM,
    BOND_TOLERANCE_TRAIN_ANGSTROM,
    bond_length_criterion,
    min_intermolecular_distance_criterion,
    rdf_criterion,
    stability_time_fs,
)


pytestmark = pytest.mark.usefixtures("x64_module")


WATER = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2399, 0.9266, 0.0]])  # O, H, H


def water_box(n_side=2, spacing=3.1, seed=0):
    """n_side^3 randomly rotated water molecules on a cubic lattice; returns (R, box length)."""
    rng = np.random.default_rng(seed)
    mols = []
    for ijk in itertools.product(range(n_side), repeat=3):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        mols.append(WATER @ q.T + (np.array(ijk) + 0.5) * spacing)
    return np.concatenate(mols), n_side * spacing


def test_bond_criterion_value_threshold_and_nan():
    bonds = np.array([[0, 1], [0, 2]])
    ref = np.array([0.9572, 0.9572])
    crit = bond_length_criterion(bonds, ref, threshold_angstrom=BOND_TOLERANCE_TRAIN_ANGSTROM)
    R = WATER.copy()
    R[2] *= 1.2  # stretch O-H2 by 0.2 * 0.9572 = 0.191 A
    unstable, value = crit(jnp.asarray(R))
    d = np.linalg.norm(R[bonds[:, 0]] - R[bonds[:, 1]], axis=-1)
    np.testing.assert_allclose(value, np.abs(d - ref).max(), rtol=1e-12)
    assert not bool(unstable)
    R[2] = WATER[2] * 1.3  # 0.287 A > 0.25 A
    assert bool(crit(jnp.asarray(R)).unstable)
    loose = bond_length_criterion(bonds, ref, threshold_angstrom=BOND_TOLERANCE_EVAL_ANGSTROM)
    assert not bool(loose(jnp.asarray(R)).unstable)
    assert bool(crit(jnp.full((3, 3), jnp.nan)).unstable)  # non-finite always counts as unstable
    # vmap over replicas, and frames: the value is the worst over the given frames.
    batch = jnp.stack([jnp.asarray(WATER), jnp.asarray(R)])
    np.testing.assert_array_equal(jax.vmap(crit)(batch).unstable, [False, True])
    assert bool(crit(batch).unstable)
    with pytest.raises(ValueError, match="reference_lengths"):
        bond_length_criterion(bonds, ref[:1], threshold_angstrom=0.25)
    with pytest.raises(ValueError, match="bonds must have shape"):
        bond_length_criterion(np.array([0, 1]), ref, threshold_angstrom=0.25)


def test_min_intermolecular_distance_matches_bruteforce_min_image():
    R, L = water_box()
    mol = np.arange(len(R)) // 3
    crit = min_intermolecular_distance_criterion(mol, cell=L)
    shifts = np.array(list(itertools.product([-1, 0, 1], repeat=3))) * L
    d = np.linalg.norm(R[:, None, None] - R[None, :, None] + shifts[None, None], axis=-1).min(-1)
    expected = d[mol[:, None] != mol[None, :]].min()
    unstable, value = crit(jnp.asarray(R))
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert not bool(unstable) and expected > 1.2
    # Move molecule 1's oxygen next to an atom of molecule 0 through the periodic boundary.
    R2 = R.copy()
    R2[3:6] += (R[0] + np.array([1.0, 0.0, 0.0]) - L * np.array([0, 0, 1])) - R2[3]
    unstable, value = crit(jnp.asarray(R2))
    assert bool(unstable) and float(value) <= 1.0 + 1e-9
    free = min_intermolecular_distance_criterion(mol)  # without the cell the contact is missed
    assert float(free(jnp.asarray(R2)).value) > 1.0 + 1e-6


def test_rdf_criterion_flags_a_collapsed_box():
    rng = np.random.default_rng(1)
    R, L = water_box(n_side=3, spacing=4.1)  # L = 12.3 A, like the 64-molecule water box
    species = np.tile([8, 1, 1], len(R) // 3)
    ref_frames = R[None] + rng.normal(scale=0.05, size=(5,) + R.shape)
    g_ref = partial_rdfs(jnp.asarray(ref_frames), species, L)
    crit = rdf_criterion(species, L, g_ref)
    unstable, value = crit(jnp.asarray(ref_frames))
    assert not bool(unstable) and float(value) < 1e-12  # identical frames -> zero error
    collapsed = R[None] * 0.3 + rng.normal(scale=0.05, size=(5,) + R.shape)  # all atoms in 4 A
    unstable, value = crit(jnp.asarray(collapsed))
    g = partial_rdfs(jnp.asarray(collapsed), species, L)
    expected = (6.0 * jnp.mean(jnp.abs(g - g_ref), axis=-1)).max()
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert bool(unstable) and float(value) >= 3.0
    with pytest.raises(ValueError, match="reference_rdfs"):
        rdf_criterion(species, L, g_ref[:2])
    with pytest.raises(ValueError, match="half the smallest cell width"):
        partial_rdfs(jnp.asarray(R), species, 10.0)


def test_stability_time_is_time_to_first_failure_censored():
    t, censored = stability_time_fs(jnp.array([100, -1, 20]), 0.5, 2000)
    np.testing.assert_allclose(t, [50.0, 1000.0, 10.0])
    np.testing.assert_array_equal(censored, [False, True, False])
