"""Periodic molecular liquids: molecules from minimum-image bonds, whole and wrapped frames.

Pure numpy, float64. Conventions:

* A cell is a ``[3, 3]`` array in Angstrom whose **rows are the lattice vectors** (triclinic
  allowed); :mod:`stablejax.data.cell` has its checks and the minimum image, re-exported here.
* Positions are ``[n_atoms, 3]`` Angstrom (or ``[..., n_atoms, 3]`` where stated). A molecule
  index is ``[n_atoms]`` int, molecules numbered 0, 1, ... in the order of their first atom.

Files written by ASE, LAMMPS and CP2K are usually wrapped *by atom*, so molecules are split
across the boundary; :func:`molecule_index` finds molecules from minimum-image bonds whatever the
atom order, :func:`make_whole` joins them and :func:`wrap_by_molecule` wraps whole molecules.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from ase.data import covalent_radii

from stablejax.data.cell import (  # noqa: F401 (re-exported: the periodic API in one place)
    cell_heights,
    check_cell,
    check_periodic_cell,
    minimum_image,
)
from stablejax.data.topology import BOND_SCALE
from stablejax.errors import InputError


def bonds_periodic(
    positions, atomic_numbers, cell, *, scale: float = BOND_SCALE, source: str = "positions"
) -> np.ndarray:
    """Covalent bonds with minimum-image distances (the rule of
    :func:`stablejax.data.topology.bonds_from_structure`: bonded when
    ``d_ij < scale * (r_cov_i + r_cov_j)``, Cordero radii).

    Args:
      positions: [n_atoms, 3] Angstrom, wrapped or not.
      atomic_numbers: [n_atoms] int.
      cell: [3, 3] Angstrom, rows are lattice vectors.
      scale: the bond-length factor.
      source: the file named in errors.

    Returns:
      [n_bonds, 2] int32 atom index pairs (i < j), sorted.

    Raises:
      InputError: naming ``source``: a bad cell (:func:`check_cell`), mismatched shapes, or a
        bond longer than half the box (the longest bond allowed between the elements present
        exceeds half the shortest cell height, so minimum-image bonds are ambiguous).
    """
    R = np.asarray(positions, dtype=np.float64)
    z = np.asarray(atomic_numbers).astype(np.int64)
    if R.ndim != 2 or R.shape[1] != 3 or z.shape != (R.shape[0],):
        raise InputError(
            f"{source}: positions {R.shape} and atomic numbers {z.shape} do not match "
            "([n_atoms, 3] and [n_atoms])"
        )
    C = check_cell(cell, source=source)
    if C.ndim != 2:
        raise InputError(f"{source}: bonds_periodic needs one [3, 3] cell, got {C.shape}")
    radii = covalent_radii[z]
    elements, counts = np.unique(z, return_counts=True)
    longest, pair = 0.0, None
    for i, zi in enumerate(elements):
        for zj in elements[i:]:
            if zi == zj and counts[i] < 2:
                continue
            b = scale * (covalent_radii[zi] + covalent_radii[zj])
            if b > longest:
                longest, pair = b, (int(zi), int(zj))
    h = cell_heights(C)
    if pair is not None and longest >= 0.5 * h.min():
        raise InputError(
            f"{source}: a bond longer than half the box: the longest bond allowed between "
            f"atomic numbers {pair[0]} and {pair[1]} ({longest:.3g} Angstrom = {scale:g} x the "
            f"covalent radii) is not below half the shortest cell height {0.5 * h.min():.4g} "
            f"Angstrom (heights {', '.join(f'{x:.4g}' for x in h)}); the box is too small"
        )
    n = len(z)
    out = []
    chunk = max(1, 200_000 // max(n, 1))
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        d = np.linalg.norm(minimum_image(R[None, :] - R[rows, None], C), axis=-1)
        cut = scale * (radii[rows, None] + radii[None])
        i, j = np.nonzero((d < cut) & (np.arange(n)[None] > rows[:, None]))
        out.append(np.stack([rows[i], j], axis=1))
    bonds = np.concatenate(out) if out else np.zeros((0, 2), np.int64)
    return bonds[np.lexsort((bonds[:, 1], bonds[:, 0]))].astype(np.int32)


def components(n_atoms: int, bonds) -> np.ndarray:
    """Connected components of a bond graph, numbered in the order of their first atom.

    Args:
      n_atoms: number of atoms.
      bonds: [n_bonds, 2] int atom index pairs.

    Returns:
      [n_atoms] int64: the component of each atom; atom 0 is in component 0.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    b = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(b)), (b[:, 0], b[:, 1])), shape=(n_atoms, n_atoms))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)  # labels are 0..k-1; first atom of each
    rank = np.argsort(np.argsort(first))
    return rank[labels].astype(np.int64)


def molecule_index(
    positions, atomic_numbers, cell, *, scale: float = BOND_SCALE, source: str = "positions"
) -> np.ndarray:
    """The molecule of every atom: connected components of the minimum-image bond graph.

    Never inferred from atom order: atoms of one molecule may be anywhere in the file and on
    either side of the boundary.

    Args:
      positions: [n_atoms, 3] Angstrom (one frame, wrapped or not).
      atomic_numbers: [n_atoms] int.
      cell: [3, 3] Angstrom, rows are lattice vectors.
      scale, source: as :func:`bonds_periodic`.

    Returns:
      [n_atoms] int64, molecules numbered 0, 1, ... in the order of their first atom.

    Raises:
      InputError: as :func:`bonds_periodic`.
    """
    R = np.asarray(positions, dtype=np.float64)
    bonds = bonds_periodic(R, atomic_numbers, cell, scale=scale, source=source)
    return components(len(R), bonds)


def _tree_edges(molecule_index: np.ndarray, bonds) -> list[tuple[int, int]]:
    """(parent, child) pairs of a breadth-first walk of each molecule from its first atom."""
    mol = np.asarray(molecule_index)
    n = len(mol)
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for i, j in np.asarray(bonds, dtype=np.int64).reshape(-1, 2):
        if mol[i] != mol[j]:
            raise InputError(
                f"bond ({i}, {j}) joins atoms of molecules {mol[i]} and {mol[j]}: the bonds and "
                "the molecule index disagree"
            )
        nbrs[i].append(int(j))
        nbrs[j].append(int(i))
    first: dict[int, int] = {}
    for a in range(n):
        first.setdefault(int(mol[a]), a)
    seen = np.zeros(n, bool)
    edges = []
    for a in range(n):
        if seen[a]:
            continue
        # A part of a molecule with no bond path to its first atom is imaged to that atom.
        if first[int(mol[a])] != a:
            edges.append((first[int(mol[a])], a))
        seen[a] = True
        queue = deque([a])
        while queue:
            p = queue.popleft()
            for c in nbrs[p]:
                if not seen[c]:
                    seen[c] = True
                    edges.append((p, c))
                    queue.append(c)
    return edges


def make_whole(positions, cell, molecule_index, *, bonds=None) -> np.ndarray:
    """Join molecules split across the periodic boundary.

    Without ``bonds``, every atom is moved to its minimum image relative to the first atom of
    its molecule. That is right when every atom lies within half the shortest cell height of
    its molecule's first atom: any small molecule (water, methanol) in a box of a few
    Angstrom or more. With ``bonds`` (e.g. from :func:`bonds_periodic`), each molecule is walked
    along its bond graph from its first atom, each atom placed at the minimum image of its
    bond, so chain molecules longer than half the box stay whole as long as each bond is shorter
    than half the box.

    Args:
      positions: [n_atoms, 3] or [n_frames, n_atoms, 3] Angstrom.
      cell: [3, 3] Angstrom (rows are lattice vectors), or [n_frames, 3, 3].
      molecule_index: [n_atoms] int (:func:`molecule_index`).
      bonds: optional [n_bonds, 2] int intramolecular bonds.

    Returns:
      float64 positions of the same shape; the first atom of every molecule is not moved.
    """
    R = np.array(positions, dtype=np.float64)
    mol = np.asarray(molecule_index, dtype=np.int64)
    if R.shape[-2:] != (len(mol), 3):
        raise InputError(
            f"positions {R.shape} do not match the molecule index of {len(mol)} atoms"
        )
    C = np.asarray(cell, dtype=np.float64)
    if bonds is None:
        _, first = np.unique(mol, return_index=True)
        anchor = R[..., first[mol], :]
        return anchor + minimum_image(R - anchor, C)
    for p, c in _tree_edges(mol, bonds):
        R[..., c, :] = R[..., p, :] + minimum_image(R[..., c, :] - R[..., p, :], C)
    return R


def wrap_by_molecule(positions, cell, molecule_index, *, bonds=None) -> np.ndarray:
    """Whole molecules whose geometric centres lie inside the cell (fractional [0, 1)).

    Molecules are first made whole (:func:`make_whole`, with ``bonds`` if given), then each is
    shifted by a lattice vector so that the mean of its atoms' positions is in the cell.

    Args:
      positions: [n_atoms, 3] or [n_frames, n_atoms, 3] Angstrom.
      cell: [3, 3] Angstrom (rows are lattice vectors), or [n_frames, 3, 3].
      molecule_index: [n_atoms] int.
      bonds: optional [n_bonds, 2] int, passed to :func:`make_whole`.

    Returns:
      float64 positions of the same shape.
    """
    R = make_whole(positions, cell, molecule_index, bonds=bonds)
    mol = np.asarray(molecule_index, dtype=np.int64)
    n_mol = int(mol.max()) + 1 if len(mol) else 0
    counts = np.bincount(mol, minlength=n_mol)
    onehot = np.zeros((len(mol), n_mol))
    onehot[np.arange(len(mol)), mol] = 1.0 / counts[mol]
    centres = np.einsum("am,...ak->...mk", onehot, R)  # [..., n_mol, 3]
    C = np.asarray(cell, dtype=np.float64)
    if C.ndim == 3 and R.ndim == 3:
        C = C[:, None]
    s = np.einsum("...j,...jk->...k", centres, np.linalg.inv(C))
    shift = np.einsum("...j,...jk->...k", -np.floor(s), C)
    return R + shift[..., mol, :]


def unwrap_trajectory(positions_frames, cell) -> np.ndarray:
    """Continuous (unwrapped) positions of consecutive frames, for MSD and diffusivity.

    Sums the minimum-image step of every atom between consecutive frames onto frame 0, using
    :func:`stablejax.observables.unwrap_positions`; valid while no atom moves by half the
    shortest cell height between frames (the steps are then far below the range where
    rounding of fractional coordinates and the true minimum image differ). Computed in JAX's
    default precision (float32 unless x64 is enabled).

    Args:
      positions_frames: [n_frames, n_atoms, 3] Angstrom, wrapped by atom or by molecule.
      cell: [3, 3] Angstrom, rows are lattice vectors (a fixed box).

    Returns:
      [n_frames, n_atoms, 3] float64, equal to the input in frame 0.
    """
    from stablejax.observables import unwrap_positions

    R = np.asarray(positions_frames, dtype=np.float64)
    C = check_cell(cell, source="unwrap_trajectory")
    if C.ndim != 2:
        raise InputError(f"unwrap_trajectory: needs one [3, 3] cell, got {C.shape}")
    if R.ndim != 3 or R.shape[-1] != 3:
        raise InputError(f"unwrap_trajectory: positions must be [frames, atoms, 3], got {R.shape}")
    out = np.asarray(unwrap_positions(R, C), dtype=np.float64)
    out[0] = R[0]
    return out


def check_water(atomic_numbers, source: str, *, molecule_index=None) -> None:
    """Check that a system is pure water: n_atoms a multiple of 3, composition (H2O)n and, with
    ``molecule_index``, every molecule one O and two H.

    Args:
      atomic_numbers: [n_atoms] int.
      source: the file named in errors.
      molecule_index: optional [n_atoms] int (:func:`molecule_index`).

    Raises:
      InputError: naming ``source`` and the problem.
    """
    z = np.asarray(atomic_numbers).reshape(-1)
    n = len(z)
    if n == 0 or n % 3:
        raise InputError(
            f"{source}: not a water box: {n} atoms is not a multiple of 3 (3 atoms per H2O)"
        )
    n_o, n_h = int(np.sum(z == 8)), int(np.sum(z == 1))
    if n_o != n // 3 or n_h != 2 * n_o:
        other = sorted({int(x) for x in z} - {1, 8})
        raise InputError(
            f"{source}: not a water box: composition {n_o} O and {n_h} H"
            + (f" and atomic numbers {other[:5]}" if other else "")
            + f" is not (H2O){n // 3}"
        )
    if molecule_index is not None:
        mol = np.asarray(molecule_index, dtype=np.int64)
        n_mol = int(mol.max()) + 1
        o = np.bincount(mol[z == 8], minlength=n_mol)
        h = np.bincount(mol[z == 1], minlength=n_mol)
        bad = np.nonzero((o != 1) | (h != 2))[0]
        if len(bad):
            m = int(bad[0])
            raise InputError(
                f"{source}: not a water box: {len(bad)} of {n_mol} molecules are not H2O, "
                f"first: molecule {m} (atoms {np.nonzero(mol == m)[0][:6].tolist()}) has "
                f"{o[m]} O and {h[m]} H; atoms too close or too far for bonds"
            )
