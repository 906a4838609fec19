"""Bond lengths, deviations from reference lengths and bond-length distributions.

``bonds`` is an int array [n_bonds, 2] of atom indices (e.g. from
``stablejax.data.topology.bonds_from_structure``). Positions R [..., n_atoms, 3] Angstrom with
any leading frame/replica axes; periodic systems pass ``cell`` (minimum image).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Array
from stablejax.observables.distances import (
    gaussian_smeared_histogram,
    make_bins,
    masked_mean,
    minimum_image,
    normalise_to,
)


def check_bonds(bonds, n_atoms: int | None = None) -> np.ndarray:
    """Validate a bond list; returns it as an int32 numpy array [n_bonds, 2].

    Raises:
      ValueError: wrong shape, no bonds, or an index outside [0, n_atoms).
    """
    b = np.asarray(bonds)
    if b.ndim != 2 or b.shape[1] != 2 or b.shape[0] == 0:
        raise ValueError(f"bonds must have shape [n_bonds, 2] with n_bonds >= 1, got {b.shape}")
    if not np.issubdtype(b.dtype, np.integer):
        raise ValueError(f"bonds must be integer atom indices, got dtype {b.dtype}")
    if b.min() < 0 or (n_atoms is not None and b.max() >= n_atoms):
        raise ValueError(
            f"bond atom indices must lie in [0, {n_atoms}), got [{b.min()}, {b.max()}]"
        )
    return b.astype(np.int32)


def bond_lengths(R: Array, bonds, *, cell: Array | None = None) -> Array:
    """Bond lengths: R [..., n_atoms, 3] -> [..., n_bonds] Angstrom."""
    b = check_bonds(bonds, R.shape[-2])
    dR = minimum_image(R[..., b[:, 0], :] - R[..., b[:, 1], :], cell)
    return jnp.sqrt(jnp.sum(dR**2, axis=-1))


def reference_bond_lengths(positions: Array, bonds, *, cell: Array | None = None) -> Array:
    """Mean bond lengths [n_bonds] over reference frames [..., n_atoms, 3] (docs/method.md §6)."""
    d = bond_lengths(jnp.asarray(positions), bonds, cell=cell)
    return jnp.mean(d.reshape((-1, d.shape[-1])), axis=0)


def bond_deviations(
    R: Array, bonds, reference_lengths: Array, *, cell: Array | None = None
) -> Array:
    """|bond length - reference| per bond: [..., n_bonds] Angstrom."""
    return jnp.abs(bond_lengths(R, bonds, cell=cell) - jnp.asarray(reference_lengths))


def max_deviation_per_molecule(deviations: Array, bond_molecule, n_molecules: int) -> Array:
    """Local variant: the largest bond deviation of each molecule.

    Args:
      deviations: [..., n_bonds] from ``bond_deviations``.
      bond_molecule: [n_bonds] int, molecule index of each bond.
      n_molecules: number of molecules (static).

    Returns:
      [..., n_molecules]; -inf for a molecule without bonds.
    """
    seg = jnp.asarray(np.asarray(bond_molecule, dtype=np.int32))
    flat = deviations.reshape((-1, deviations.shape[-1]))
    out = jax.vmap(lambda d: jax.ops.segment_max(d, seg, num_segments=n_molecules))(flat)
    return out.reshape(deviations.shape[:-1] + (n_molecules,))


def bond_length_distribution(
    R: Array,
    bonds,
    *,
    r_min: float = 0.5,
    r_max: float = 2.5,
    dr: float = 0.01,
    sigma: float = 0.01,
    bond_types=None,
    n_types: int | None = None,
    valid: Array | None = None,
    cell: Array | None = None,
) -> Array:
    """Smeared bond-length distribution, averaged over frames, each normalised to sum 100.

    Args:
      R: [..., n_atoms, 3] frames (leading axes are averaged over).
      bonds: [n_bonds, 2].
      r_min, r_max, dr: bins (centres at midpoints), Angstrom.
      sigma: Gaussian smearing width, Angstrom (the h(r) convention).
      bond_types: optional [n_bonds] int type per bond; then one distribution per type.
      n_types: number of types (default max(bond_types) + 1).
      valid: optional mask over the leading axes of R (e.g. ``Trajectory.valid``).
      cell: periodic cell for the minimum image.

    Returns:
      [n_bins] for all bonds together, or [n_types, n_bins] with ``bond_types``.
    """
    bins = make_bins(r_max, dr, r_min)
    d = bond_lengths(jnp.asarray(R), bonds, cell=cell)
    flat = d.reshape((-1, d.shape[-1]))
    mask = None if valid is None else jnp.asarray(valid).reshape(-1)
    if bond_types is None:
        h = jax.vmap(lambda x: normalise_to(gaussian_smeared_histogram(x, bins.centres, sigma)))(
            flat
        )
        return masked_mean(h, mask, axis=0)
    types = np.asarray(bond_types, dtype=np.int32)
    if types.shape != (flat.shape[-1],):
        raise ValueError(f"bond_types must have shape [{flat.shape[-1]}], got {types.shape}")
    n_types = int(types.max()) + 1 if n_types is None else int(n_types)
    onehot = jnp.asarray(types[None, :] == np.arange(n_types)[:, None], flat.dtype)  # [T, B]

    def one_frame(x):
        return jax.vmap(
            lambda w: normalise_to(gaussian_smeared_histogram(x, bins.centres, sigma, w))
        )(onehot)

    return masked_mean(jax.vmap(one_frame)(flat), mask, axis=0)
