"""Covalent-bond topology from a structure and covalent radii."""

from __future__ import annotations

import numpy as np
from ase.data import covalent_radii

#: Two atoms are bonded when their distance is below this factor times the sum of their
#: covalent radii (Cordero et al. 2008, as tabulated in ASE).
BOND_SCALE: float = 1.2


def bonds_from_structure(
    positions: np.ndarray, atomic_numbers: np.ndarray, *, scale: float = BOND_SCALE
) -> np.ndarray:
    """Covalent bonds of a (free) molecule.

    Args:
      positions: [n_atoms, 3] Angstrom, ideally an equilibrium structure.
      atomic_numbers: [n_atoms] int.
      scale: bonded when d_ij < scale * (r_cov_i + r_cov_j).

    Returns:
      [n_bonds, 2] int32 array of atom index pairs (i < j), sorted.
    """
    R = np.asarray(positions, dtype=np.float64)
    z = np.asarray(atomic_numbers)
    if R.ndim != 2 or R.shape[1] != 3 or z.shape != (R.shape[0],):
        raise ValueError(
            f"bonds_from_structure: positions {R.shape} and atomic numbers {z.shape} do not match"
        )
    radii = covalent_radii[z]
    d = np.linalg.norm(R[:, None] - R[None], axis=-1)
    cutoff = scale * (radii[:, None] + radii[None])
    i, j = np.nonzero(np.triu(d < cutoff, k=1))
    return np.stack([i, j], axis=1).astype(np.int32)


def bond_lengths(positions: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """Bond lengths in Angstrom: [..., n_atoms, 3] positions -> [..., n_bonds]."""
    R = np.asarray(positions)
    b = np.asarray(bonds)
    return np.linalg.norm(R[..., b[:, 0], :] - R[..., b[:, 1], :], axis=-1)
