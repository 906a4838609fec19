"""Read and write frame sets as ``.npz``: sGDML/MD17/MD22 files and stablejax's own.

Keys understood on read (first match wins):

  positions         R, coords, positions               [frames, atoms, 3]
  atomic numbers    z, nuclear_charges, atomic_numbers [atoms] (or [frames, atoms])
  energies          E, energies, energy                [frames] or [frames, 1]
  forces            F, forces                          [frames, atoms, 3]
  cell / pbc        cell / lattice, pbc                optional

Units: taken from the file's metadata (sGDML ``e_unit``/``r_unit``, stablejax ``energy_unit``/
``length_unit``), else from the ``energy_unit``/``length_unit`` arguments. MD17/MD22 files use
kcal/mol and kcal/mol/Angstrom; a file without unit metadata must be loaded with an explicit
``energy_unit`` so that no unit is ever guessed. Everything is returned in eV and Angstrom.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from stablejax.data.frames import Frames, make_frames
from stablejax.units import energy_unit_to_ev, length_unit_to_angstrom

_KEYS = {
    "positions": ("R", "coords", "positions"),
    "atomic_numbers": ("z", "nuclear_charges", "atomic_numbers"),
    "energies": ("E", "energies", "energy"),
    "forces": ("F", "forces"),
    "cell": ("cell", "lattice"),
}


def _find(data, what: str):
    for k in _KEYS[what]:
        if k in data.files:
            return k
    return None


def _meta_str(data, *keys: str) -> str | None:
    for k in keys:
        if k in data.files:
            v = data[k]
            return str(v.item() if v.ndim == 0 else v[0])
    return None


def read_npz(
    path: str | Path, *, energy_unit: str | None = None, length_unit: str | None = None
) -> Frames:
    """Load an sGDML/MD17/MD22 or stablejax ``.npz`` file as :class:`Frames` in eV / Angstrom.

    Args:
      path: the file.
      energy_unit: unit of E and F (F in ``energy_unit``/length) when the file does not say,
        e.g. ``"kcal/mol"`` for MD17/MD22. If the file says and this disagrees: an error.
      length_unit: unit of R when the file does not say (default Angstrom).

    Raises:
      FileNotFoundError, ValueError: naming the file and the problem (missing key, shape
        mismatch, NaN, unknown element, unknown or missing unit).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # not a zip / corrupted
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    with data:
        kR, kz = _find(data, "positions"), _find(data, "atomic_numbers")
        if kR is None:
            raise ValueError(f"{path}: missing positions (one of keys {_KEYS['positions']})")
        if kz is None:
            raise ValueError(
                f"{path}: missing atomic numbers (one of keys {_KEYS['atomic_numbers']})"
            )
        kE, kF, kC = _find(data, "energies"), _find(data, "forces"), _find(data, "cell")
        if (kE is None) != (kF is None):
            missing = "forces (F)" if kF is None else "energies (E)"
            raise ValueError(f"{path}: has {'E' if kF is None else 'F'} labels but no {missing}")

        file_e_unit = _meta_str(data, "energy_unit", "e_unit")
        file_r_unit = _meta_str(data, "length_unit", "r_unit")
        e_unit = _resolve_unit(path, "energy", file_e_unit, energy_unit)
        r_unit = _resolve_unit(path, "length", file_r_unit, length_unit) or "angstrom"
        r_scale = length_unit_to_angstrom(r_unit)

        R = data[kR] * r_scale
        E = F = None
        if kE is not None:
            if e_unit is None:
                raise ValueError(
                    f"{path}: the file does not state its energy unit; pass energy_unit= "
                    "(MD17/MD22 files are in 'kcal/mol'; stablejax files in 'eV')"
                )
            e_scale = energy_unit_to_ev(e_unit)
            E = np.asarray(data[kE], dtype=np.float64)
            if E.size != len(R) or E.ndim > 2:
                raise ValueError(
                    f"{path}: energies have {E.size} values but there are {len(R)} frames "
                    f"(key {kE!r}, shape {E.shape})"
                )
            E = E.reshape(-1) * e_scale
            F = data[kF] * (e_scale / r_scale)
        cell = data[kC] * r_scale if kC is not None else None
        pbc = data["pbc"] if "pbc" in data.files else (cell is not None)
        return make_frames(R, data[kz], E, F, cell, pbc, source=str(path))


def _resolve_unit(path, kind: str, from_file: str | None, given: str | None) -> str | None:
    if from_file and given:
        conv = energy_unit_to_ev if kind == "energy" else length_unit_to_angstrom
        if conv(from_file) != conv(given):
            raise ValueError(
                f"{path}: file says {kind} unit {from_file!r} but {kind}_unit={given!r} was given"
            )
    return from_file or given


def write_npz(path: str | Path, frames: Frames, metadata: dict | None = None) -> Path:
    """Write frames with MD17-style keys (R, z, E, F, cell, pbc) in eV and Angstrom.

    Units are stored in the file (``energy_unit='eV'``, ``length_unit='Angstrom'``), and
    ``metadata`` as a JSON string under ``metadata``. The write is atomic (temp file + rename).
    """
    path = Path(path)
    arrays = {
        "R": frames.positions,
        "z": frames.atomic_numbers,
        "energy_unit": np.array("eV"),
        "length_unit": np.array("Angstrom"),
        "pbc": np.asarray(frames.pbc),
        "metadata": np.array(json.dumps(metadata or {})),
    }
    if frames.energies is not None:
        arrays["E"] = frames.energies
    if frames.forces is not None:
        arrays["F"] = frames.forces
    if frames.cell is not None:
        arrays["cell"] = frames.cell
    return save_arrays(path, **arrays)


def save_arrays(path: str | Path, **arrays) -> Path:
    """``np.savez`` made atomic: a crash never leaves a half-written file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata stored by :func:`write_npz` ({} if none)."""
    with np.load(path, allow_pickle=False) as data:
        if "metadata" not in data.files:
            return {}
        return json.loads(str(data["metadata"]))
