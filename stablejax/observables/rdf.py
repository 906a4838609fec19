"""Partial radial distribution functions g_AB(r) under periodic boundaries.

Normalisation (the ideal-gas one): for ordered pairs (i in A, j in B, i != j),
n_pairs = N_A * N_B (A != B) or N_A (N_A - 1) (A == B), pair density rho = n_pairs / V and

    g_AB(r_k) = <hist_k> / (rho * 4 pi / 3 * (r_{k+1}^3 - r_k^3)),

where hist_k counts pairs with r_k <= d_ij < r_{k+1} (minimum image) in one frame, <.> is the mean
over frames and r_k are the bin edges (plain histogram, no smearing). An ideal gas gives g = 1.
Defaults: dr = 0.012 Angstrom over [0, 6] Angstrom (500 bins). The RDF error used by the water
stability criterion is ``rdf_mae`` = r_max * mean_k |g - g_ref| (= integral of |g - g_ref| dr).

Species are given as a concrete [n_atoms] int array (e.g. atomic numbers) and pair types as
tuples of species, e.g. ``WATER_PAIRS = ((8, 8), (8, 1), (1, 1))``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Array
from stablejax.observables.distances import cell_volume, make_bins, masked_mean, minimum_image

RDF_R_MAX_ANGSTROM: float = 6.0
RDF_DR_ANGSTROM: float = 0.012
#: O-O, O-H, H-H partial RDFs of water (atomic numbers).
WATER_PAIRS: tuple[tuple[int, int], ...] = ((8, 8), (8, 1), (1, 1))


def pair_lists(species, pairs: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ordered index pairs (i in A, j in B, i != j) for each pair type: list of ([m], [m]) arrays.

    Raises:
      ValueError: if a species of a pair type does not occur.
    """
    s = np.asarray(species)
    if s.ndim != 1:
        raise ValueError(f"species must have shape [n_atoms], got {s.shape}")
    out = []
    for a, b in pairs:
        ia, ib = np.nonzero(s == a)[0], np.nonzero(s == b)[0]
        if ia.size == 0 or ib.size == 0:
            have = sorted(set(s.tolist()))
            raise ValueError(f"pair type ({a}, {b}): species not present (have {have})")
        I, J = np.meshgrid(ia, ib, indexing="ij")
        keep = I != J
        if not keep.any():
            raise ValueError(f"pair type ({a}, {b}) has no pairs of distinct atoms")
        out.append((I[keep].astype(np.int32), J[keep].astype(np.int32)))
    return out


def _check_r_max(cell, r_max: float) -> None:
    """Minimum image is exact only up to half the smallest perpendicular cell width."""
    if isinstance(cell, jax.core.Tracer):
        return
    c = np.asarray(cell, dtype=np.float64)
    if c.ndim < 2:
        widths = np.broadcast_to(c, (3,))
    else:
        vol = abs(np.linalg.det(c))
        areas = [np.linalg.norm(np.cross(c[(i + 1) % 3], c[(i + 2) % 3])) for i in range(3)]
        widths = vol / np.array(areas)
    if r_max > 0.5 * widths.min() + 1e-9:
        raise ValueError(
            f"r_max={r_max} exceeds half the smallest cell width "
            f"({0.5 * widths.min():.3f} Angstrom); the minimum-image RDF would be wrong there"
        )


def _histogram(d: Array, n_bins: int, dr: float) -> Array:
    k = jnp.floor(d / dr).astype(jnp.int32)
    k = jnp.where((d >= 0) & (k < n_bins), k, n_bins)  # out of range (and NaN) -> dropped bin
    return jnp.bincount(k, length=n_bins + 1)[:n_bins].astype(d.dtype)


def partial_rdfs(
    positions: Array,
    species,
    cell: Array,
    *,
    pairs: Sequence[tuple[int, int]] = WATER_PAIRS,
    r_max: float = RDF_R_MAX_ANGSTROM,
    dr: float = RDF_DR_ANGSTROM,
    valid: Array | None = None,
) -> Array:
    """Partial RDFs of frames in a periodic cell, averaged over frames.

    Args:
      positions: [..., n_atoms, 3] Angstrom (one frame or any leading frame/replica axes).
      species: [n_atoms] int (concrete), e.g. atomic numbers.
      cell: [3, 3] (rows are lattice vectors), [3] or scalar, Angstrom.
      pairs: pair types as species tuples.
      r_max, dr: histogram range [0, r_max) and bin width, Angstrom.
      valid: optional mask over the leading axes (frames to include).

    Returns:
      [n_pair_types, n_bins] g(r) (dimensionless).

    Raises:
      ValueError: unknown species in ``pairs``, or ``r_max`` beyond half the cell width.
    """
    bins = make_bins(r_max, dr)
    _check_r_max(cell, r_max)
    R = jnp.asarray(positions)
    flat = R.reshape((-1,) + R.shape[-2:])
    lists = pair_lists(species, pairs)
    volume = cell_volume(cell).astype(R.dtype)
    edges = jnp.asarray(bins.edges, R.dtype)
    shell = 4.0 * jnp.pi / 3.0 * (edges[1:] ** 3 - edges[:-1] ** 3)
    mask = None if valid is None else jnp.asarray(valid).reshape(-1)
    out = []
    for I, J in lists:

        def hist_one(r, I=I, J=J):
            dvec = minimum_image(r[I] - r[J], cell)
            return _histogram(jnp.sqrt(jnp.sum(dvec**2, axis=-1)), bins.n_bins, bins.dr)

        mean_hist = masked_mean(jax.lax.map(hist_one, flat, batch_size=16), mask, axis=0)
        rho = I.shape[0] / volume
        out.append(mean_hist / (rho * shell))
    return jnp.stack(out)


def rdf_mae(g: Array, g_ref: Array, r_max: float = RDF_R_MAX_ANGSTROM) -> Array:
    """RDF error r_max * mean over the last axis |g - g_ref| (the water convention; with the
    default 6 Angstrom this is the integral of |g - g_ref| dr)."""
    return r_max * jnp.mean(jnp.abs(g - g_ref), axis=-1)
