"""A generated (or user-assembled) data set on disk: splits, reference trajectory, system."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stablejax.data.frames import Frames
from stablejax.data.systems import System, as_positive_float, read_json
from stablejax.errors import InputError

# io/ sits above data/ (its readers build ``Frames``): data imports io only inside functions.


class Dataset(NamedTuple):
    """Everything a StABlE run needs from data.

    Attributes:
      system: molecule, equilibrium structure, bonds and reference bond lengths.
      train, val, test: labelled frames (eV, Angstrom).
      reference: the long reference trajectory for observable targets (labels included).
      reference_interval_fs: time between reference frames, fs.
      path: the data set directory.
    """

    system: System
    train: Frames
    val: Frames
    test: Frames
    reference: Frames
    reference_interval_fs: float
    path: Path


SPLITS = ("train", "val", "test", "reference")


def load_dataset(path: str | Path) -> Dataset:
    """Load a data set directory written by :func:`stablejax.data.generate.generate_dataset`
    or :func:`stablejax.data.importer.import_dataset`.

    Raises:
      FileNotFoundError: naming the missing file (an unfinished generation has no
        ``complete.json``: run the generator again to resume it).
      InputError: naming the file and the problem: an unreadable or invalid file (see
        :func:`stablejax.io.npz.read_npz` and :meth:`System.load`), a split of other atoms
        than ``system.json``, an unlabelled train/val/test split, a reference trajectory
        without a valid ``frame_interval_fs`` in its metadata.
    """
    from stablejax.io.npz import read_metadata, read_npz

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a data set directory")
    if not path.is_dir():
        raise InputError(f"{path}: a file, not a data set directory")
    for name in ("system.json", *(f"{k}.npz" for k in SPLITS)):
        if not (path / name).exists():
            hint = "" if (path / "complete.json").exists() else (
                " (generation unfinished: run `python -m stablejax data generate` again to resume)"
            )
            raise FileNotFoundError(f"{path}: missing {name}{hint}")
    system = System.load(path / "system.json")
    frames = {k: read_npz(path / f"{k}.npz") for k in SPLITS}
    for k, f in frames.items():
        if not np.array_equal(f.atomic_numbers, system.atomic_numbers):
            raise InputError(
                f"{path / f'{k}.npz'}: atomic numbers {f.atomic_numbers.tolist()} differ from "
                f"those of system.json {system.atomic_numbers.tolist()}"
            )
        if k != "reference" and not f.has_labels:
            raise InputError(f"{path / f'{k}.npz'}: no energies and forces; the train, val and "
                             "test splits must be labelled")
    ref_path = path / "reference.npz"
    raw = read_metadata(ref_path).get("frame_interval_fs")
    interval = as_positive_float(raw)
    if interval is None:
        raise InputError(f"{ref_path}: metadata frame_interval_fs (time between reference "
                         f"frames, fs) must be a finite number > 0, got {raw!r:.60}")
    return Dataset(system=system, **frames, reference_interval_fs=interval, path=path)


def dataset_info(path: str | Path, **read_kwargs) -> dict:
    """Summary of a data set directory or a single frames file (for ``stablejax data info``).

    ``read_kwargs`` go to the file reader (:func:`stablejax.io.read_frames`: ``energy_unit``,
    ``length_unit``, ``energy_key``, ``forces_key``); they do not apply to a data set
    directory, stored in eV / Angstrom with its keys.

    Raises:
      FileNotFoundError, InputError: as :func:`load_dataset` or the file reader; reader
        options given for a data set directory.
    """
    from stablejax.io.ase_io import read_frames

    path = Path(path)
    if path.is_dir():
        given = sorted(k for k, v in read_kwargs.items() if v is not None)
        if given:
            raise InputError(f"{path}: the reader options {given} are for a frames file, not a "
                             "data set directory (stored in eV / Angstrom with known keys)")
        ds = load_dataset(path)
        sysm = ds.system
        out = {
            "path": str(path),
            "system": sysm.name,
            "formula": _formula(ds.train),
            "n_atoms": sysm.n_atoms,
            "species": dict(Counter(ds.train.symbols)),
            "n_bonds": int(len(sysm.bonds)),
            "bond_types": _bond_types(ds.train.symbols, sysm.bonds),
            "smiles": sysm.smiles,
            "charge": sysm.charge,
            "multiplicity": sysm.multiplicity,
            "temperature_k": sysm.temperature_k,
            "timestep_fs": sysm.timestep_fs,
            "frames": {k: getattr(ds, k).n_frames for k in SPLITS},
            "reference_interval_fs": ds.reference_interval_fs,
            "made_by": ("data import" if (path / "import.json").exists() else
                        "data generate" if (path / "settings.json").exists() else "unknown"),
        }
        if sysm.structure_sha256:
            out["structure_sha256"] = sysm.structure_sha256
        for k in ("settings.json", "complete.json", "import.json"):
            if (path / k).exists():
                out[k.removesuffix(".json")] = read_json(path / k)
        out.update(_label_stats(ds.train))
        out["label_stats"] = {k: _label_stats(getattr(ds, k)) for k in SPLITS}
        return out
    frames = read_frames(path, **read_kwargs)
    return {"path": str(path), "n_frames": frames.n_frames, "n_atoms": frames.n_atoms,
            "formula": _formula(frames), "pbc": list(frames.pbc), **_label_stats(frames)}


def _bond_types(symbols: list[str], bonds: np.ndarray) -> dict[str, int]:
    """Bond counts by element pair, e.g. {'C-H': 5, 'C-C': 1}."""
    pairs = ("-".join(sorted((symbols[i], symbols[j]))) for i, j in np.asarray(bonds).tolist())
    return dict(sorted(Counter(pairs).items()))


def _formula(frames: Frames) -> str:
    from ase.formula import Formula

    return Formula.from_list(frames.symbols).format("hill")


def _label_stats(frames: Frames) -> dict:
    if not frames.has_labels:
        return {"labels": False}
    return {
        "labels": True,
        "energy_mean_ev": float(frames.energies.mean()),
        "energy_std_ev": float(frames.energies.std()),
        "force_rms_ev_per_angstrom": float(np.sqrt((frames.forces**2).mean())),
    }
