"""Read and write frame sets as ``.npz``: sGDML/MD17/MD22 files and stablejax's own.

Keys understood on read (first match wins):

  positions         R, coords, positions               [frames, atoms, 3]
  atomic numbers    z, nuclear_charges, atomic_numbers [atoms] (or [frames, atoms])
  energies          E, energies, energy                [frames] or [frames, 1]
  forces            F, forces                          [frames, atoms, 3]
  cell / pbc        cell / lattice, pbc                optional
                    cell [3, 3] or [frames, 3, 3], rows are lattice vectors; pbc defaults to
                    True when a cell is given; periodic without a cell, or a singular cell,
                    is an error

The ``energy_key``/``forces_key`` arguments name other keys for the labels.

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

from stablejax.data.cell import check_periodic_cell
from stablejax.data.frames import Frames, check_finite, make_frames
from stablejax.errors import InputError
from stablejax.sharding import primary_only
from stablejax.units import energy_unit_to_ev, length_unit_to_angstrom

_KEYS = {
    "positions": ("R", "coords", "positions"),
    "atomic_numbers": ("z", "nuclear_charges", "atomic_numbers"),
    "energies": ("E", "energies", "energy"),
    "forces": ("F", "forces"),
    "cell": ("cell", "lattice"),
}
_OPTION = {"energies": "energy_key", "forces": "forces_key"}


def read_npz(
    path: str | Path,
    *,
    energy_unit: str | None = None,
    length_unit: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
) -> Frames:
    """Load an sGDML/MD17/MD22 or stablejax ``.npz`` file as :class:`Frames` in eV / Angstrom.

    Args:
      path: the file.
      energy_unit: unit of E and F (F in ``energy_unit``/length) when the file does not say,
        e.g. ``"kcal/mol"`` for MD17/MD22. If the file says and this disagrees: an error.
      length_unit: unit of R when the file does not say (default Angstrom).
      energy_key, forces_key: the keys of the energies and forces, replacing the lookup in the
        module docstring's table; the file must hold them.

    Raises:
      FileNotFoundError: no file at ``path``.
      InputError: naming the file and the problem: not an npz archive, a damaged member, a
        pickled (object) array, a missing key, energies without forces (or the reverse), a
        shape mismatch, a non-numeric or non-finite value, an atomic number outside 1..118,
        an unknown or missing unit.
    """
    path = Path(path)
    arrays = load_arrays(path)
    kR, kz = _find(arrays, "positions", path), _find(arrays, "atomic_numbers", path)
    if kR is None:
        raise InputError(f"{path}: missing positions (one of keys {_KEYS['positions']})")
    if kz is None:
        raise InputError(
            f"{path}: missing atomic numbers (one of keys {_KEYS['atomic_numbers']})"
        )
    kE = _find(arrays, "energies", path, energy_key)
    kF = _find(arrays, "forces", path, forces_key)
    kC = _find(arrays, "cell", path)
    if (kE is None) != (kF is None):
        have, lack = ("energies", "forces") if kF is None else ("forces", "energies")
        raise InputError(
            f"{path}: has {have} (key {kE or kF!r}) but no {lack} (one of keys {_KEYS[lack]}; "
            f"pass {_OPTION[lack]}= if they are stored under another key)"
        )

    e_unit = _resolve_unit(path, "energy", _meta_str(arrays, path, "energy_unit", "e_unit"),
                           energy_unit)
    r_unit = _resolve_unit(path, "length", _meta_str(arrays, path, "length_unit", "r_unit"),
                           length_unit) or "angstrom"
    if kE is not None and e_unit is None:
        raise InputError(
            f"{path}: the file does not state its energy unit; pass energy_unit= "
            "(MD17/MD22 files are in 'kcal/mol'; stablejax files in 'eV')"
        )
    pbc = arrays["pbc"] if "pbc" in arrays else (kC is not None)
    frames = make_frames(
        arrays[kR], arrays[kz], None if kE is None else arrays[kE],
        None if kF is None else arrays[kF], None if kC is None else arrays[kC], pbc,
        source=str(path),
    )
    check_periodic_cell(frames.cell, frames.pbc, str(path))
    e_scale = 1.0 if e_unit is None else unit_scale(path, "energy", e_unit)
    return convert_units(frames, e_scale, unit_scale(path, "length", r_unit), str(path))


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read in full (so a damaged member is found here) and
    without unpickling.

    Raises:
      FileNotFoundError: no file at ``path``.
      InputError: not a zip archive, a damaged or truncated archive, a member that is not a
        ``.npy`` array, an object array (which would need pickle).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise InputError(f"{path}: empty file")
    if head[:2] != b"PK":
        raise InputError(f"{path}: not an .npz file (a zip archive of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:  # zipfile, zlib and .npy-header errors of a damaged file
        raise InputError(
            f"{path}: not a readable .npz file ({type(e).__name__}: {str(e)[:200]})"
        ) from None
    for k, v in arrays.items():
        if not isinstance(v, np.ndarray):
            raise InputError(f"{path}: member {k!r} is not a .npy array")
    return arrays


def _find(arrays: dict, what: str, path: Path, key: str | None = None) -> str | None:
    if key is None:
        return next((k for k in _KEYS[what] if k in arrays), None)
    if key not in arrays:
        raise InputError(
            f"{path}: no key {key!r} ({_OPTION[what]}={key!r}); "
            f"keys in the file: {sorted(arrays)}"
        )
    return key


def _meta_str(arrays: dict, path: Path, *keys: str) -> str | None:
    for k in keys:
        if k in arrays:
            v = arrays[k]
            if v.dtype.kind not in "US" or v.size != 1:
                raise InputError(
                    f"{path}: {k} must be one string, got dtype {v.dtype} and shape {v.shape}"
                )
            item = v.reshape(-1)[0]
            if isinstance(item, bytes):
                try:
                    item = item.decode()
                except UnicodeDecodeError:
                    raise InputError(f"{path}: {k} is not UTF-8 text: {item[:40]!r}") from None
            return str(item)
    return None


def unit_scale(path: Path, kind: str, unit: str) -> float:
    """Multiplier from an ``"energy"`` or ``"length"`` unit to eV or Angstrom.

    Raises:
      InputError: an unknown unit, naming ``path`` and the known units.
    """
    conv = energy_unit_to_ev if kind == "energy" else length_unit_to_angstrom
    try:
        return conv(unit)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None


def _resolve_unit(path, kind: str, from_file: str | None, given: str | None) -> str | None:
    if from_file and given:
        if unit_scale(path, kind, from_file) != unit_scale(path, kind, given):
            raise InputError(
                f"{path}: file says {kind} unit {from_file!r} but {kind}_unit={given!r} was given"
            )
    return from_file or given


def convert_units(frames: Frames, e_scale: float, r_scale: float, source: str) -> Frames:
    """Scale validated frames to eV / Angstrom: energies by ``e_scale``, lengths by ``r_scale``
    and forces by their ratio.

    Raises:
      InputError: a value pushed past float64's range, naming ``source``, array and frame.
    """
    if e_scale == 1.0 and r_scale == 1.0:
        return frames
    scale = {"positions": r_scale, "cell": r_scale, "energies": e_scale,
             "forces": e_scale / r_scale}
    out = {}
    with np.errstate(over="ignore"):
        for key, s in scale.items():
            x = getattr(frames, key)
            if x is not None:
                out[key] = x * s
                check_finite(out[key], f"{key} (in eV/Angstrom)", source,
                             per_frame=not (key == "cell" and x.ndim == 2))
    return frames.replace(**out)


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
    """``np.savez`` made atomic: a crash never leaves a half-written file at ``path`` (process 0
    writes in a multi-host run)."""
    path = Path(path)
    _save_arrays(path, arrays)
    return path


@primary_only
def _save_arrays(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata stored by :func:`write_npz` ({} if none).

    Raises:
      FileNotFoundError, InputError: as :func:`load_arrays`; or metadata that is not a JSON
        object (naming JSON's line and column).
    """
    path = Path(path)
    text = _meta_str(load_arrays(path), path, "metadata")
    if text is None:
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{path}: metadata is not valid JSON (line {e.lineno} column {e.colno}: {e.msg})"
        ) from None
    except RecursionError:
        raise InputError(f"{path}: metadata JSON is nested too deeply") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: metadata must be a JSON object, got {type(meta).__name__}")
    return meta
