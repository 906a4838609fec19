"""Periodic cells: heights, checks and the minimum-image convention for triclinic cells.

Pure numpy, float64. A cell is a ``[3, 3]`` array in Angstrom whose **rows are the lattice
vectors** a, b, c (ASE's and JAX-MD's ``periodic_general`` convention), triclinic allowed, or
``[n_frames, 3, 3]`` for one cell per frame. Fractional coordinates ``s`` and Cartesian ``r``
are related by ``r = s @ cell``. The cell *heights* are the perpendicular widths between
opposite faces, ``h_a = V / |b x c|`` and so on; a sphere of radius ``r`` fits in the cell
without meeting its own image when ``r`` is at most half the shortest height.
"""

from __future__ import annotations

import itertools

import numpy as np

from stablejax.errors import InputError

#: The 27 integer shifts {-1, 0, 1}^3 of the neighbouring images, [27, 3].
_SHIFTS = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)
#: A cell whose volume is below this fraction of |a| |b| |c| is treated as singular.
_SINGULAR_TOL = 1e-8


def cell_heights(cell: np.ndarray) -> np.ndarray:
    """Perpendicular widths of a cell, Angstrom.

    Args:
      cell: [3, 3] (rows are lattice vectors) or [n_frames, 3, 3], Angstrom.

    Returns:
      [3] (or [n_frames, 3]): the distances between the faces opposite a, b and c.
    """
    C = np.asarray(cell, dtype=np.float64)
    volume = np.abs(np.linalg.det(C))
    a, b, c = C[..., 0, :], C[..., 1, :], C[..., 2, :]
    areas = np.stack([np.linalg.norm(np.cross(b, c), axis=-1),
                      np.linalg.norm(np.cross(c, a), axis=-1),
                      np.linalg.norm(np.cross(a, b), axis=-1)], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return volume[..., None] / areas


def check_cell(
    cell, *, cutoff_angstrom: float | None = None, source: str = "cell"
) -> np.ndarray:
    """Check a periodic cell and, optionally, that a cutoff fits in it.

    Args:
      cell: [3, 3] or [n_frames, 3, 3], Angstrom, rows are lattice vectors.
      cutoff_angstrom: an interaction, RDF or bond cutoff that must not exceed half the
        shortest cell height (else an atom would meet its own image, or a pair two images).
      source: the file (or option) named in errors.

    Returns:
      The cell as a float64 array of the same shape.

    Raises:
      InputError: naming ``source``: a cell that is not numeric, of the wrong shape, not finite
        or singular (lattice vectors linearly dependent, e.g. a zero vector), or a cutoff larger
        than half the shortest height.
    """
    try:
        C = np.asarray(cell, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{source}: the cell is not an array of numbers") from None
    if C.shape[-2:] != (3, 3) or C.ndim not in (2, 3):
        raise InputError(
            f"{source}: the cell must be [3, 3] or [frames, 3, 3] (rows are lattice vectors, "
            f"Angstrom), got shape {C.shape}"
        )
    if not np.isfinite(C).all():
        raise InputError(f"{source}: the cell has non-finite values")
    with np.errstate(all="ignore"):
        lengths = np.prod(np.linalg.norm(C, axis=-1), axis=-1)
        volume = np.abs(np.linalg.det(C))
    if not (np.isfinite(lengths).all() and np.isfinite(volume).all()):
        raise InputError(
            f"{source}: the cell's volume overflows (largest entry {np.abs(C).max():.3g} Angstrom)"
        )
    bad = ~(volume > _SINGULAR_TOL * lengths) | (lengths == 0)
    if bad.any():
        k = int(np.argmax(np.atleast_1d(bad)))
        where, first = (f" (frame {k})", C[k]) if C.ndim == 3 else ("", C)
        raise InputError(
            f"{source}: the cell is singular{where} (volume {float(np.atleast_1d(volume)[k]):.3g}"
            f" Angstrom^3, lattice vectors {np.round(first, 4).tolist()} are linearly dependent)"
        )
    if cutoff_angstrom is not None:
        with np.errstate(all="ignore"):
            heights = cell_heights(C).reshape(-1, 3)
        k = int(np.argmin(heights.min(axis=1)))
        h = heights[k]
        if float(cutoff_angstrom) > 0.5 * h.min():
            frame = f" (frame {k})" if C.ndim == 3 else ""
            raise InputError(
                f"{source}: cutoff {float(cutoff_angstrom):g} Angstrom is larger than half the "
                f"shortest cell height {0.5 * h.min():.4g} Angstrom (cell heights "
                f"{', '.join(f'{x:.4g}' for x in h)} Angstrom{frame}); use a larger box or a "
                "smaller cutoff"
            )
    return C


def minimum_image(d, cell) -> np.ndarray:
    """Minimum-image displacement vectors for a general (triclinic) cell.

    The fractional components are first reduced to [-0.5, 0.5) and the shortest of the 27
    neighbouring images of the reduced vector is taken. Plain rounding of fractional
    coordinates is exact only for orthorhombic cells; the 27-image search is exact for every
    cell whose shortest lattice vectors are within one shell of the reduced ones, which holds
    for reduced cells (ASE's ``Cell.niggli_reduce`` / LAMMPS tilt factors at most half a box
    length), the cells MD codes use. A cell skewed beyond that should be reduced first.

    Args:
      d: [..., 3] displacement vectors, Angstrom.
      cell: [3, 3] Angstrom (rows are lattice vectors), or [n_frames, 3, 3] with
        ``d`` of shape [n_frames, ..., 3].

    Returns:
      [..., 3] float64, the image of each ``d`` of smallest length.
    """
    d = np.asarray(d, dtype=np.float64)
    C = np.asarray(cell, dtype=np.float64)
    if C.ndim == 3:  # one cell per frame: broadcast over the middle axes of d
        C = C.reshape(C.shape[0], *([1] * (d.ndim - 2)), 3, 3)
    inv = np.linalg.inv(C)
    s = np.einsum("...j,...jk->...k", d, inv)
    s = s - np.floor(s + 0.5)
    v0 = np.einsum("...j,...jk->...k", s, C)
    images = np.einsum("nj,...jk->...nk", _SHIFTS, C)  # [..., 27, 3]
    cand = v0[..., None, :] + images
    best = np.argmin(np.einsum("...nk,...nk->...n", cand, cand), axis=-1)
    return np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]


def check_periodic_cell(cell, pbc, source: str) -> None:
    """Check a file's cell against its periodicity, as the readers do.

    Args:
      cell: None, [3, 3] or [n_frames, 3, 3] Angstrom (rows are lattice vectors).
      pbc: three booleans.
      source: the file named in errors.

    Raises:
      InputError: naming ``source``: periodic along some axis without a cell (no cell, or a
        zero lattice vector along a periodic axis, as ASE reads an extxyz frame with ``pbc="T T
        T"`` and no ``Lattice=``); fully periodic with a bad cell (:func:`check_cell`).
    """
    p = np.asarray(pbc, dtype=bool).reshape(-1)
    if not p.any():
        return
    axes = "".join("abc"[i] for i in np.nonzero(p)[0])
    C = None if cell is None else np.asarray(cell, dtype=np.float64)
    if C is None or not (np.linalg.norm(C[..., p, :], axis=-1) > 0).all():
        raise InputError(
            f"{source}: periodic (pbc={p.tolist()}) but no cell for lattice vector(s) {axes} "
            "(extxyz: Lattice=; npz: key 'cell' or 'lattice'); give the cell or set pbc to False"
        )
    if p.all():
        check_cell(C, source=source)
