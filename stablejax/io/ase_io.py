"""Read and write frame sets through ASE (extxyz and any ASE-readable trajectory format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stablejax.data.frames import Frames, make_frames


def read_ase(path: str | Path, *, index: str = ":", format: str | None = None) -> Frames:
    """Read frames with ``ase.io.read`` (extxyz, ASE .traj, xyz, ...), in eV / Angstrom.

    Energies and forces are taken when every frame has them (extxyz ``energy=`` / ``forces``
    columns, or a stored calculator); otherwise the frames are unlabelled.

    Raises:
      FileNotFoundError, ValueError: naming the file and the problem (unreadable, empty,
        atoms changing between frames, NaN, unknown element).
    """
    import ase.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        images = ase.io.read(path, index=index, format=format)
    except Exception as e:
        raise ValueError(f"{path}: ASE could not read it ({type(e).__name__}: {e})") from None
    if not isinstance(images, list):
        images = [images]
    if not images:
        raise ValueError(f"{path}: contains no frames")
    z0 = images[0].get_atomic_numbers()
    for i, a in enumerate(images):
        if not np.array_equal(a.get_atomic_numbers(), z0):
            raise ValueError(
                f"{path}: frame {i} has different atoms than frame 0 (one system per file)"
            )
    R = np.stack([a.get_positions() for a in images])
    E = F = None
    energies, forces = [], []
    for a in images:
        e, f = _labels(a)
        energies.append(e)
        forces.append(f)
    if all(e is not None for e in energies) and all(f is not None for f in forces):
        E, F = np.asarray(energies, dtype=np.float64), np.stack(forces)
    pbc = images[0].get_pbc()
    cell = np.stack([a.get_cell().array for a in images]) if pbc.any() else None
    return make_frames(R, z0, E, F, cell, pbc, source=str(path))


def _labels(atoms):
    calc = atoms.calc
    if calc is not None:
        try:
            return float(atoms.get_potential_energy()), np.asarray(atoms.get_forces())
        except Exception:
            pass
    e = atoms.info.get("energy", atoms.info.get("Energy"))
    f = atoms.arrays.get("forces")
    return (None if e is None else float(e)), f


def write_extxyz(path: str | Path, frames: Frames, info: dict | None = None) -> Path:
    """Write frames as extended XYZ (energy in eV, forces in eV/Angstrom), atomically."""
    import os

    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(frames.n_frames):
        cell = None
        if frames.cell is not None:
            cell = frames.cell if frames.cell.ndim == 2 else frames.cell[i]
        a = Atoms(numbers=frames.atomic_numbers, positions=frames.positions[i], cell=cell,
                  pbc=frames.pbc)
        if frames.energies is not None:
            a.calc = SinglePointCalculator(
                a, energy=float(frames.energies[i]), forces=frames.forces[i]
            )
        if info:
            a.info.update(info)
        images.append(a)
    tmp = path.with_name(path.name + ".tmp")
    ase.io.write(tmp, images, format="extxyz")
    os.replace(tmp, path)
    return path


def read_frames(path: str | Path, **kwargs) -> Frames:
    """Read any supported file: ``.npz`` (see :func:`stablejax.io.npz.read_npz`) or ASE formats."""
    from stablejax.io.npz import read_npz

    path = Path(path)
    if path.suffix == ".npz":
        return read_npz(path, **kwargs)
    return read_ase(path, **kwargs)
