"""Read and write frame sets through ASE (extxyz and any ASE-readable trajectory format).

Labels: by default the energy and forces that ASE reads as calculator results (the extxyz
``energy=`` key and ``forces`` column; the stored calculator of an ASE ``.traj``), else
``info['energy']`` / ``arrays['forces']``. ``energy_key``/``forces_key`` name other keys
(e.g. ``REF_energy``/``REF_forces``, the MACE convention), looked up in the same places.

Periodic frames: the cell (extxyz ``Lattice=``, rows are lattice vectors, Angstrom) and ``pbc``
are returned in :class:`Frames` (``cell`` [3, 3] when all frames share it, else [n_frames, 3,
3]); a periodic frame without a cell, or a fully periodic one with a singular cell, is an error.

A file is labelled in every frame (energies and forces) or in none: labels in some frames only,
or energies without forces (or the reverse), are errors. A file read as unlabelled whose frames
hold other energy- or force-like keys logs a warning naming them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from stablejax.data.cell import check_periodic_cell
from stablejax.data.frames import Frames, make_frames
from stablejax.errors import InputError
from stablejax.io.npz import convert_units, read_npz, unit_scale

log = logging.getLogger(__name__)

_LABEL_LIKE = re.compile(r"energy|force", re.IGNORECASE)


def read_ase(
    path: str | Path,
    *,
    index: str = ":",
    format: str | None = None,
    energy_unit: str | None = None,
    length_unit: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
) -> Frames:
    """Read frames with ``ase.io.read`` (extxyz, ASE .traj, xyz, ...), in eV / Angstrom.

    Args:
      path: the file.
      index, format: passed to ``ase.io.read``.
      energy_unit: unit of the energies (forces in ``energy_unit``/length); default eV.
      length_unit: unit of positions and cell; default Angstrom.
      energy_key, forces_key: label keys (see the module docstring); default ``energy`` and
        ``forces``.

    Raises:
      FileNotFoundError: no file at ``path``.
      InputError: naming the file and the problem: unreadable or empty, atoms changing between
        frames, partial labels, a label key given but absent, a malformed label, a non-finite
        value (array and first frame), an atomic number outside 1..118, an unknown unit.
    """
    import ase.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        images = ase.io.read(path, index=index, format=format)
    except Exception as e:  # ASE's parsers raise many types on malformed text
        raise InputError(
            f"{path}: ASE could not read it ({type(e).__name__}: {str(e)[:300]})"
        ) from None
    if not isinstance(images, list):
        images = [images]
    if not images:
        raise InputError(f"{path}: contains no frames")
    z0 = images[0].get_atomic_numbers()
    for i, a in enumerate(images):
        if not np.array_equal(a.get_atomic_numbers(), z0):
            raise InputError(
                f"{path}: frame {i} has different atoms than frame 0 (one system per file)"
            )
    R = np.stack([a.get_positions() for a in images])
    E, F = _labels(path, images, energy_key, forces_key)
    pbc = images[0].get_pbc()
    cell = np.stack([a.get_cell().array for a in images]) if pbc.any() else None
    if cell is not None and np.isfinite(cell).all():
        check_periodic_cell(cell, pbc, str(path))
    frames = make_frames(R, z0, E, F, cell, pbc, source=str(path))
    e_scale = 1.0 if energy_unit is None else unit_scale(path, "energy", energy_unit)
    r_scale = 1.0 if length_unit is None else unit_scale(path, "length", length_unit)
    return convert_units(frames, e_scale, r_scale, str(path))


def _labels(path: Path, images: list, energy_key: str | None, forces_key: str | None):
    """(energies [frames], forces [frames, atoms, 3]) or (None, None) for an unlabelled file."""
    keys = {"energies": energy_key or "energy", "forces": forces_key or "forces"}
    found = {
        "energies": [_lookup(a, keys["energies"], a.info) for a in images],
        "forces": [_lookup(a, keys["forces"], a.arrays) for a in images],
    }
    have = {k: [v is not None for v in vs] for k, vs in found.items()}
    if not any(have["energies"]) and not any(have["forces"]):
        for option, given in (("energy_key", energy_key), ("forces_key", forces_key)):
            if given is not None:
                raise InputError(
                    f"{path}: no frame has the key {given!r} ({option}={given!r}); keys of "
                    f"frame 0: {_all_keys(images[0])}"
                )
        others = [k for k in _all_keys(images[0]) if _LABEL_LIKE.search(k)]
        if others:
            log.warning(
                "%s: read as unlabelled (no %r or %r) although the frames hold %s; pass "
                "energy_key=/forces_key= (--energy-key/--forces-key) to use them",
                path, keys["energies"], keys["forces"], others,
            )
        return None, None
    for what, other in (("energies", "forces"), ("forces", "energies")):
        option = "energy_key" if what == "energies" else "forces_key"
        if not any(have[what]):
            raise InputError(
                f"{path}: has {other} ({keys[other]!r}) but no {what} ({keys[what]!r}) in any "
                f"frame; pass {option}= if they are stored under another key"
            )
        missing = [i for i, h in enumerate(have[what]) if not h]
        if missing:
            raise InputError(
                f"{path}: {len(missing)} of {len(images)} frames have no {what} "
                f"({keys[what]!r}), first: frames {missing[:5]}; label every frame or none"
            )
    n_atoms = len(images[0])
    E = np.array([_energy(path, i, e, keys["energies"]) for i, e in enumerate(found["energies"])])
    F = np.stack([_forces(path, i, f, keys["forces"], n_atoms)
                  for i, f in enumerate(found["forces"])])
    return E, F


def _lookup(atoms, key: str, store: dict):
    results = getattr(atoms.calc, "results", None) or {}
    return results[key] if key in results else store.get(key)


def _all_keys(atoms) -> list[str]:
    results = getattr(atoms.calc, "results", None) or {}
    return sorted({*results, *atoms.info, *atoms.arrays} - {"numbers", "positions"})


def _energy(path: Path, frame: int, value, key: str) -> float:
    if not isinstance(value, (bool, np.bool_)) and np.ndim(value) == 0:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise InputError(f"{path}: frame {frame}: energy {key!r} is not a number: {value!r:.60}")


def _forces(path: Path, frame: int, value, key: str, n_atoms: int) -> np.ndarray:
    f = np.asarray(value)
    if f.dtype.kind not in "iuf" or f.shape != (n_atoms, 3):
        raise InputError(
            f"{path}: frame {frame}: forces {key!r} must be real numbers of shape "
            f"({n_atoms}, 3), got dtype {f.dtype} and shape {f.shape}"
        )
    return f.astype(np.float64)


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


def read_frames(
    path: str | Path,
    *,
    energy_unit: str | None = None,
    length_unit: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
) -> Frames:
    """Read any supported file: ``.npz`` (see :func:`stablejax.io.npz.read_npz`) or ASE formats
    (see :func:`read_ase`), with the same unit and label-key options."""
    kwargs = dict(energy_unit=energy_unit, length_unit=length_unit, energy_key=energy_key,
                  forces_key=forces_key)
    path = Path(path)
    if path.suffix == ".npz":
        return read_npz(path, **kwargs)
    return read_ase(path, **kwargs)
