"""Energy shift/scale and neighbour statistics from data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stablejax.data.frames import make_frames
from stablejax.models import (
    SchNetConfig,
    average_num_neighbors,
    energy_statistics,
    make_model,
)


def molecule_frames(z, n_frames, seed, per_species=None):
    rng = np.random.default_rng(seed)
    z = np.asarray(z)
    R = rng.normal(size=(n_frames, len(z), 3)) * 2.0
    F = rng.normal(size=(n_frames, len(z), 3)) * 0.7
    if per_species is None:
        E = rng.normal(size=n_frames) - 50.0
    else:
        E = np.full(n_frames, sum(per_species[int(v)] for v in z))
    return make_frames(R, z, energies=E, forces=F)


def test_single_molecule_uses_mean_energy_per_atom():
    frames = molecule_frames([8, 1, 1, 6], 40, seed=0)
    stats = energy_statistics(frames)
    mu = frames.energies.mean() / 4
    assert set(stats.shift) == {1, 6, 8}
    for s in (1, 6, 8):
        assert stats.shift[s] == pytest.approx(mu, rel=1e-12)
    assert stats.scale == pytest.approx(np.sqrt(np.mean(frames.forces**2)), rel=1e-12)
    # a model built from these constants predicts mean(E) when the network outputs zero
    assert len(frames.atomic_numbers) * np.mean(list(stats.shift.values())) == pytest.approx(
        frames.energies.mean(), rel=1e-12)


def test_several_compositions_recover_per_species_energies():
    truth = {1: -13.6, 8: -2040.0, 6: -1030.0}  # eV per atom (made up, exactly linear)
    sets = [molecule_frames(z, 5, seed=k, per_species=truth)
            for k, z in enumerate([[8, 1, 1], [8, 8, 1, 1], [6, 1, 1, 1, 1], [6, 8, 8]])]
    stats = energy_statistics(sets)
    for s, v in truth.items():
        assert stats.shift[s] == pytest.approx(v, abs=1e-8)


def test_unlabelled_frames_raise():
    frames = make_frames(np.zeros((2, 2, 3)) + np.arange(2)[:, None], [1, 1])
    with pytest.raises(ValueError, match="no energy/force labels"):
        energy_statistics(frames)


def test_average_num_neighbors_free_and_periodic():
    # free: atoms at x = 0, 1, 2.5 with cutoff 1.6 -> 1, 2, 1 neighbours
    R = np.array([[[0.0, 0, 0], [1.0, 0, 0], [2.5, 0, 0]]])
    assert average_num_neighbors(make_frames(R, [1, 1, 1]), 1.6) == pytest.approx(4 / 3)
    # periodic simple cubic lattice (a = 2, 2x2x2 cell of side 4): 6 neighbours at 2.0, 12 at 2.83
    g = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3) * 2.0
    lat = make_frames(g, [18] * 8, cell=np.eye(3) * 4.0, pbc=True)
    assert average_num_neighbors(lat, 2.1) == pytest.approx(6.0)
    assert average_num_neighbors(lat, 2.9) == pytest.approx(18.0)


def test_statistics_feed_make_model():
    frames = molecule_frames([8, 1, 1], 10, seed=3)
    stats = energy_statistics(frames)
    model = make_model(SchNetConfig(n_interactions=1, hidden_features=8, n_filters=8),
                       frames.atomic_numbers, energy_shift=stats.shift,
                       energy_scale=stats.scale)
    R = jnp.asarray(frames.positions[0], jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), R)
    zero = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)  # network output 0
    e = jax.jit(model.energy_fn)(zero, R)  # = sum of the shifts = mean training energy
    assert float(e) == pytest.approx(frames.energies.mean(), rel=1e-6)


def test_single_composition_many_frames_shift_is_mean_energy_per_atom():
    """Regression: 950 identical composition rows made np.linalg.pinv invert round-off singular
    values (per-species shifts of ~1e11 eV on real aspirin data)."""
    rng = np.random.default_rng(0)
    z = np.array([6] * 9 + [8] * 4 + [1] * 8)
    n = 950
    E = -1077.2 + 0.2 * rng.normal(size=n)
    F = rng.normal(size=(n, 21, 3))
    fr = make_frames(rng.normal(size=(n, 21, 3)) * 3, z, E, F)
    stats = energy_statistics(fr)
    mu = E.mean() / 21
    for zz in (1, 6, 8):
        assert abs(stats.shift[zz] - mu) < 1e-6
