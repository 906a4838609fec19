"""The frames pytree: a set of configurations of one system with (optional) QM labels.

All arrays are numpy on the host (a data set lives there); ``jax.tree`` functions and
``jnp.asarray`` move them to a device when needed. Units: positions in Angstrom, energies in eV,
forces in eV/Angstrom.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from ase.data import chemical_symbols
from flax import struct

from stablejax.errors import InputError


@struct.dataclass
class Frames:
    """Configurations of one system (fixed atom count and species).

    Attributes:
      positions: [n_frames, n_atoms, 3] float, Angstrom.
      atomic_numbers: [n_atoms] int.
      energies: [n_frames] float, eV; or None when unlabelled.
      forces: [n_frames, n_atoms, 3] float, eV/Angstrom; or None when unlabelled.
      cell: [3, 3] (one box for all frames) or [n_frames, 3, 3], Angstrom, rows are lattice
        vectors; None for a free molecule.
      pbc: periodicity per axis (static, not a pytree leaf).
    """

    positions: np.ndarray  # [n_frames, n_atoms, 3] f64, Angstrom
    atomic_numbers: np.ndarray  # [n_atoms] i32
    energies: np.ndarray | None = None  # [n_frames] f64, eV
    forces: np.ndarray | None = None  # [n_frames, n_atoms, 3] f64, eV/Angstrom
    cell: np.ndarray | None = None  # [3, 3] or [n_frames, 3, 3] f64, Angstrom
    pbc: tuple[bool, bool, bool] = struct.field(pytree_node=False, default=(False, False, False))

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    @property
    def has_labels(self) -> bool:
        return self.energies is not None and self.forces is not None

    @property
    def symbols(self) -> list[str]:
        return [chemical_symbols[int(z)] for z in self.atomic_numbers]

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, index) -> "Frames":
        """Select frames (an int, slice or index array); per-frame arrays are indexed."""
        if isinstance(index, (int, np.integer)):
            index = np.array([index])
        cell = self.cell
        if cell is not None and cell.ndim == 3:
            cell = cell[index]
        return self.replace(
            positions=self.positions[index],
            energies=None if self.energies is None else self.energies[index],
            forces=None if self.forces is None else self.forces[index],
            cell=cell,
        )


def make_frames(
    positions,
    atomic_numbers,
    energies=None,
    forces=None,
    cell=None,
    pbc=(False, False, False),
    *,
    source: str = "frames",
) -> Frames:
    """Build a validated :class:`Frames`; ``source`` names the file or origin in error messages.

    Raises:
      InputError: on a shape mismatch, a non-numeric or non-finite value, or an atomic number
        outside 1..118, naming ``source``, the array and (for values) the first bad frame.
    """
    R = as_real(positions, "positions", source)
    if R.ndim == 2:
        R = R[None]
    if R.ndim != 3 or R.shape[-1] != 3:
        raise InputError(f"{source}: positions must have shape [frames, atoms, 3], got {R.shape}")
    n_frames, n_atoms, _ = R.shape
    if n_frames == 0 or n_atoms == 0:
        raise InputError(f"{source}: no frames or no atoms (positions shape {R.shape})")
    z = _atomic_numbers(atomic_numbers, n_atoms, source)
    check_finite(R, "positions", source)

    E = None
    if energies is not None:
        E = as_real(energies, "energies", source)
        if E.size != n_frames:
            raise InputError(
                f"{source}: energies have {E.size} values but there are {n_frames} frames"
            )
        if E.ndim > 1 and E.shape != (n_frames, 1):
            raise InputError(
                f"{source}: energies have shape {E.shape}; expected [frames] or [frames, 1]"
            )
        E = E.reshape(-1)
        check_finite(E, "energies", source)
    F = None
    if forces is not None:
        F = as_real(forces, "forces", source)
        if F.shape != R.shape:
            raise InputError(f"{source}: forces have shape {F.shape}, positions {R.shape}")
        check_finite(F, "forces", source)
    C = None
    if cell is not None:
        C = as_real(cell, "cell", source)
        if C.shape not in ((3, 3), (n_frames, 3, 3)):
            raise InputError(f"{source}: cell must be [3, 3] or [frames, 3, 3], got {C.shape}")
        check_finite(C, "cell", source, per_frame=C.ndim == 3)
        if C.ndim == 3 and np.allclose(C, C[:1]):
            C = C[0]
    pbc = _pbc(pbc, source)
    if any(pbc) and C is None:
        raise InputError(f"{source}: periodic boundary conditions {pbc} need a cell")
    return Frames(positions=R, atomic_numbers=z, energies=E, forces=F, cell=C, pbc=pbc)


def as_real(x, key: str, source: str) -> np.ndarray:
    """``x`` as a float64 array, if it holds real numbers (int or float; not bool, complex,
    strings or objects); values beyond float64's range become inf (caught by
    :func:`check_finite`).

    Raises:
      InputError: naming ``source``, ``key`` and the dtype.
    """
    try:
        a = np.asarray(x)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"{source}: {key} is not a numeric array ({e})") from None
    if a.dtype.kind not in "iuf":
        raise InputError(f"{source}: {key} must hold real numbers, got dtype {a.dtype}")
    with np.errstate(over="ignore"):
        return a.astype(np.float64)


def _atomic_numbers(atomic_numbers, n_atoms: int, source: str) -> np.ndarray:
    z = np.asarray(atomic_numbers)
    if z.dtype.kind not in "iuf":
        raise InputError(f"{source}: atomic numbers must be integers, got dtype {z.dtype}")
    if z.ndim == 2 and z.shape[0] > 0:  # some files store z per frame; it must not change
        if not (z == z[:1]).all():
            raise InputError(
                f"{source}: atomic numbers change between frames; one system per file"
            )
        z = z[0]
    if z.shape != (n_atoms,):
        raise InputError(
            f"{source}: atomic numbers have shape {z.shape} but positions have {n_atoms} atoms"
        )
    n_elements = len(chemical_symbols) - 1
    with np.errstate(invalid="ignore"):
        bad = ~((z >= 1) & (z <= n_elements) & (np.mod(z, 1) == 0))
    if bad.any():
        values = sorted({float(v) if z.dtype.kind == "f" else int(v) for v in z[bad]})[:5]
        raise InputError(
            f"{source}: atomic numbers must be integers in 1..{n_elements}, got {values}"
        )
    return z.astype(np.int32)


def _pbc(pbc, source: str) -> tuple[bool, bool, bool]:
    p = np.asarray(pbc)
    if p.shape not in ((), (1,), (3,)) or p.dtype.kind not in "biu" or not np.isin(p, (0, 1)).all():
        raise InputError(
            f"{source}: pbc must be one or three booleans, got {p.tolist()!r:.60} "
            f"(dtype {p.dtype}, shape {p.shape})"
        )
    return tuple(bool(v) for v in np.broadcast_to(p.astype(bool).reshape(-1), (3,)))


def check_finite(x: np.ndarray, key: str, source: str, *, per_frame: bool = True) -> None:
    """Raise :class:`InputError` naming ``source``, ``key`` and the first NaN or inf (with its
    frame, the leading index, when ``per_frame``)."""
    ok = np.isfinite(x)
    if ok.all():
        return
    idx = tuple(int(i) for i in np.argwhere(~ok)[0])
    where = f"first at index {idx}" + (f" (frame {idx[0]})" if per_frame and idx else "")
    raise InputError(
        f"{source}: {key} contain {int((~ok).sum())} non-finite value(s) (NaN/inf), {where}"
    )


def concatenate(frames: list[Frames]) -> Frames:
    """Join frame sets of the same system along the frame axis."""
    if not frames:
        raise ValueError("concatenate: empty list")
    first = frames[0]
    for f in frames[1:]:
        if not np.array_equal(f.atomic_numbers, first.atomic_numbers):
            raise ValueError("concatenate: frame sets have different atoms")
    cat = lambda xs: None if any(x is None for x in xs) else np.concatenate(xs)  # noqa: E731
    cells = [f.cell for f in frames]
    if all(c is None for c in cells):
        cell = None
    elif all(c is not None and c.ndim == 2 for c in cells) and all(
        np.allclose(c, cells[0]) for c in cells
    ):
        cell = cells[0]
    else:
        cell = np.concatenate(
            [np.broadcast_to(c, (f.n_frames, 3, 3)) for c, f in zip(cells, frames)]
        )
    return first.replace(
        positions=cat([f.positions for f in frames]),
        energies=cat([f.energies for f in frames]),
        forces=cat([f.forces for f in frames]),
        cell=cell,
    )


class Splits(NamedTuple):
    """Train / validation / test frames."""

    train: Frames
    val: Frames
    test: Frames


def random_split(frames: Frames, n_train: int, n_val: int, n_test: int, *, seed: int = 0) -> Splits:
    """Seeded random disjoint split of one frame set.

    For data from MD, prefer splits by trajectory (see ``stablejax.data.generate``), so test
    frames share no trajectory segment with training.
    """
    total = n_train + n_val + n_test
    if min(n_train, n_val, n_test) < 0 or total > frames.n_frames:
        raise ValueError(
            f"cannot split {frames.n_frames} frames into {n_train}/{n_val}/{n_test} "
            "(train/val/test)"
        )
    perm = np.random.default_rng(seed).permutation(frames.n_frames)
    a, b = n_train, n_train + n_val
    return Splits(frames[perm[:a]], frames[perm[a:b]], frames[perm[b:total]])
