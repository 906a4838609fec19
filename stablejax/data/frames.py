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
      ValueError: on a shape mismatch, non-finite values or an unknown element, naming
        ``source`` and the offending key.
    """
    R = np.asarray(positions, dtype=np.float64)
    if R.ndim == 2:
        R = R[None]
    if R.ndim != 3 or R.shape[-1] != 3:
        raise ValueError(f"{source}: positions must have shape [frames, atoms, 3], got {R.shape}")
    n_frames, n_atoms, _ = R.shape
    if n_frames == 0 or n_atoms == 0:
        raise ValueError(f"{source}: no frames or no atoms (positions shape {R.shape})")
    z = np.asarray(atomic_numbers)
    if z.ndim == 2:  # some files store z per frame; it must not change
        if not (z == z[:1]).all():
            raise ValueError(f"{source}: atomic numbers change between frames; one system per file")
        z = z[0]
    if z.shape != (n_atoms,):
        raise ValueError(
            f"{source}: atomic numbers have shape {z.shape} but positions have {n_atoms} atoms"
        )
    if not np.issubdtype(z.dtype, np.integer):
        if not np.all(np.equal(np.mod(z, 1), 0)):
            raise ValueError(f"{source}: atomic numbers must be integers, got {z[:5]}...")
    z = z.astype(np.int32)
    bad = [int(v) for v in z if v < 1 or v >= len(chemical_symbols)]
    if bad:
        raise ValueError(f"{source}: unknown element(s) with atomic number {sorted(set(bad))}")
    _check_finite(R, "positions", source)

    E = None
    if energies is not None:
        E = np.asarray(energies, dtype=np.float64).reshape(-1)
        if E.shape != (n_frames,):
            raise ValueError(
                f"{source}: energies have {E.shape[0]} values but there are {n_frames} frames"
            )
        _check_finite(E, "energies", source)
    F = None
    if forces is not None:
        F = np.asarray(forces, dtype=np.float64)
        if F.shape != R.shape:
            raise ValueError(f"{source}: forces have shape {F.shape}, positions {R.shape}")
        _check_finite(F, "forces", source)
    C = None
    if cell is not None:
        C = np.asarray(cell, dtype=np.float64)
        if C.shape not in ((3, 3), (n_frames, 3, 3)):
            raise ValueError(f"{source}: cell must be [3, 3] or [frames, 3, 3], got {C.shape}")
        _check_finite(C, "cell", source)
        if C.ndim == 3 and np.allclose(C, C[:1]):
            C = C[0]
    pbc = tuple(bool(p) for p in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)))
    if any(pbc) and C is None:
        raise ValueError(f"{source}: periodic boundary conditions {pbc} need a cell")
    return Frames(positions=R, atomic_numbers=z, energies=E, forces=F, cell=C, pbc=pbc)


def _check_finite(x: np.ndarray, key: str, source: str) -> None:
    ok = np.isfinite(x)
    if not ok.all():
        idx = np.argwhere(~ok)[0]
        raise ValueError(
            f"{source}: {key} contain {int((~ok).sum())} non-finite value(s) (NaN/inf), "
            f"first at index {tuple(int(i) for i in idx)}"
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
