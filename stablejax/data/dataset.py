"""A generated (or user-assembled) data set on disk: splits, reference trajectory, system."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from stablejax.data.frames import Frames
from stablejax.data.systems import System

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


def load_dataset(path: str | Path) -> Dataset:
    """Load a data set directory written by :func:`stablejax.data.generate.generate_dataset`.

    Raises:
      FileNotFoundError: naming the missing file (an unfinished generation has no
        ``complete.json``: run the generator again to resume it).
    """
    from stablejax.io.npz import read_metadata, read_npz

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a data set directory")
    for name in ("system.json", "train.npz", "val.npz", "test.npz", "reference.npz"):
        if not (path / name).exists():
            hint = "" if (path / "complete.json").exists() else (
                " (generation unfinished: run `python -m stablejax data generate` again to resume)"
            )
            raise FileNotFoundError(f"{path}: missing {name}{hint}")
    meta = read_metadata(path / "reference.npz")
    return Dataset(
        system=System.load(path / "system.json"),
        train=read_npz(path / "train.npz"),
        val=read_npz(path / "val.npz"),
        test=read_npz(path / "test.npz"),
        reference=read_npz(path / "reference.npz"),
        reference_interval_fs=float(meta.get("frame_interval_fs", float("nan"))),
        path=path,
    )


def dataset_info(path: str | Path, **read_kwargs) -> dict:
    """Summary of a data set directory or a single frames file (for ``stablejax data info``);
    ``read_kwargs`` go to the file reader (e.g. ``energy_unit='kcal/mol'`` for MD17 npz)."""
    from stablejax.io.ase_io import read_frames

    path = Path(path)
    if path.is_dir():
        ds = load_dataset(path)
        out = {
            "path": str(path),
            "system": ds.system.name,
            "n_atoms": ds.system.n_atoms,
            "n_bonds": int(len(ds.system.bonds)),
            "temperature_k": ds.system.temperature_k,
            "timestep_fs": ds.system.timestep_fs,
            "frames": {k: getattr(ds, k).n_frames for k in ("train", "val", "test", "reference")},
            "reference_interval_fs": ds.reference_interval_fs,
        }
        for k in ("settings.json", "complete.json"):
            if (path / k).exists():
                out[k.removesuffix(".json")] = json.loads((path / k).read_text())
        out.update(_label_stats(ds.train))
        return out
    frames = read_frames(path, **read_kwargs)
    return {"path": str(path), "n_frames": frames.n_frames, "n_atoms": frames.n_atoms,
            "formula": _formula(frames), "pbc": list(frames.pbc), **_label_stats(frames)}


def _formula(frames: Frames) -> str:
    from ase.formula import Formula

    return Formula.from_list(frames.symbols).format("hill")


def _label_stats(frames: Frames) -> dict:
    if not frames.has_labels:
        return {"labels": False}
    import numpy as np

    return {
        "labels": True,
        "energy_mean_ev": float(frames.energies.mean()),
        "energy_std_ev": float(frames.energies.std()),
        "force_rms_ev_per_angstrom": float(np.sqrt((frames.forces**2).mean())),
    }
