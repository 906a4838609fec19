"""Turn a user's labelled trajectories of a free molecule or a periodic box into a data set
directory.

Inputs: sGDML/MD17/MD22 ``.npz``, extxyz or any ASE-readable trajectory
(:func:`stablejax.io.read_frames`, with its unit and label-key options). Every file must hold
the same atoms in the same order, energies and forces (a reference file may be unlabelled), and
either no periodic boundaries (a free molecule) or pbc in all three directions with one fixed
cell (a periodic box, e.g. liquid water). For a box, the molecules come from minimum-image bonds
of the lowest-energy training frame (never from atom order; molecules split across the boundary
in the file are normal), training/validation/test frames are stored wrapped by molecule and the
reference trajectory made whole and unwrapped (for MSD and diffusivity); ``system.json`` then
holds the cell (rows = lattice vectors, Angstrom), pbc and the molecule of every atom.

Splits follow :mod:`stablejax.data.import_splits`: by file when there are several (the last one
is the test file unless ``test_files`` are given), else contiguous blocks of the one trajectory
(training and validation blocks, a gap, a test block at the end), never random frames. The
system (``system.json``) is inferred: the equilibrium structure is the lowest-energy training
frame, bonds come from covalent radii on it, reference bond lengths are the mean over the
training frames (:func:`stablejax.data.systems.make_system`).

The output directory is ``<data_dir>/<name>/<name>-<hash>`` (or ``out``), the hash covering the
files' contents and every setting. It is written atomically (a temporary directory renamed into
place). Importing the same inputs again reuses it; other inputs into an existing directory are
refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stablejax.data.frames import Frames, concatenate
from stablejax.data.import_splits import (
    Piece,
    describe,
    plan_blocks,
    provenance,
    spread,
    strided,
)
from stablejax.data.molecule import check_name
from stablejax.data.paths import resolve_data_dir
from stablejax.data.systems import make_system, read_json
from stablejax.errors import InputError

# io/ sits above data/ (its readers build ``Frames``): data imports io only inside functions.

IMPORT_JSON = "import.json"

#: Default frames per split: all frames of the block, at most this many.
DEFAULT_MAX = {"train": 1000, "val": 100, "test": 1000}


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """What to import and how to split it; every field but the file paths enters the hash
    (the files enter by their contents).

    Attributes:
      name: data set (system) name.
      files: training files, in time order. With several files and no ``test_files``, the last
        one becomes the test file.
      test_files: test files (default: see ``files``; with one file, its last block).
      reference_files: reference trajectory (observable targets); default: the training and
        validation blocks.
      n_train, n_val, n_test: frames per split, spread evenly over the split's block (default:
        the whole block, at most :data:`DEFAULT_MAX`).
      test_fraction: one trajectory: its last fraction is the test block.
      gap_fraction: one trajectory: frames dropped between the pool and the test block.
      val_fraction: last fraction of the training files' frames used for validation.
      max_reference_frames: the reference trajectory is strided to at most this many frames.
      temperature_k: temperature of the data, K (later MD runs at it).
      timestep_fs: MD timestep of the data, fs.
      frame_interval_fs: time between consecutive frames of the files, fs (default: the
        timestep, i.e. every MD step was saved, as in MD17).
      energy_unit, length_unit, energy_key, forces_key: reader options
        (:func:`stablejax.io.read_frames`); e.g. ``energy_unit='kcal/mol'`` for MD17.
    """

    name: str
    files: tuple[str, ...]
    test_files: tuple[str, ...] = ()
    reference_files: tuple[str, ...] = ()
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    test_fraction: float = 0.15
    gap_fraction: float = 0.05
    val_fraction: float = 0.1
    max_reference_frames: int = 10_000
    temperature_k: float = 500.0
    timestep_fs: float = 0.5
    frame_interval_fs: float | None = None
    energy_unit: str | None = None
    length_unit: str | None = None
    energy_key: str | None = None
    forces_key: str | None = None

    def __post_init__(self):
        check_name(self.name)
        files = tuple(str(f) for f in self.files)
        test = tuple(str(f) for f in self.test_files)
        if not files:
            raise InputError("ImportConfig.files: give at least one file")
        if not test and len(files) > 1:
            files, test = files[:-1], files[-1:]
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "test_files", test)
        object.__setattr__(self, "reference_files", tuple(str(f) for f in self.reference_files))
        seen: dict[str, str] = {}
        for role in ("files", "test_files", "reference_files"):
            for f in getattr(self, role):
                key = str(Path(f).resolve())
                if key in seen:
                    raise InputError(f"{f}: given twice (as {seen[key]} and {role}); each file "
                                     "has one role")
                seen[key] = role
        for key in ("n_train", "n_val", "n_test", "max_reference_frames"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InputError(f"ImportConfig.{key} must be an integer >= 1, got {v!r}")
        for key, lo, hi in (("test_fraction", 0.0, 1.0), ("val_fraction", 0.0, 1.0)):
            if not lo < getattr(self, key) < hi:
                raise InputError(f"ImportConfig.{key} must be in (0, 1), got {getattr(self, key)}")
        if not 0 <= self.gap_fraction < 1 - self.test_fraction:
            raise InputError(f"ImportConfig.gap_fraction must be in [0, 1 - test_fraction), got "
                             f"{self.gap_fraction}")
        for key in ("temperature_k", "timestep_fs", "frame_interval_fs"):
            v = getattr(self, key)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise InputError(f"ImportConfig.{key} must be a finite number > 0, got {v!r}")
        if self.frame_interval_fs is None:
            object.__setattr__(self, "frame_interval_fs", float(self.timestep_fs))

    def roles(self) -> list[tuple[str, str]]:
        """(path, role) of every input file; role in 'train', 'test', 'reference'."""
        return ([(f, "train") for f in self.files] + [(f, "test") for f in self.test_files]
                + [(f, "reference") for f in self.reference_files])

    def digest(self, sha256: list[str] | None = None) -> str:
        """12-hex hash of the settings and the input files' contents (not their paths);
        ``sha256``: the files' hashes in :meth:`roles` order, if already computed."""
        d = dataclasses.asdict(self)
        for key in ("files", "test_files", "reference_files"):
            d.pop(key)
        roles = self.roles()
        sha256 = sha256 or [_sha256(path) for path, _ in roles]
        d["inputs"] = [[role, h] for (_, role), h in zip(roles, sha256)]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


class ImportResult(NamedTuple):
    """``path``: the data set directory; ``reused``: it existed already; ``summary``: what
    ``import.json`` records (system, splits and their source frames, settings)."""

    path: Path
    reused: bool
    summary: dict


def import_dataset(cfg: ImportConfig, data_dir: str | Path | None = None, *,
                   out: str | Path | None = None) -> ImportResult:
    """Import labelled trajectories as a data set directory (see the module docstring).

    Args:
      cfg: files and settings.
      data_dir: cache root (:func:`stablejax.data.paths.resolve_data_dir`) of the default output
        ``<data_dir>/<name>/<name>-<hash>``.
      out: the output directory instead (absent or empty, or this import's earlier output).

    Raises:
      FileNotFoundError: an input file is missing.
      InputError: one line naming the file and the problem: unreadable, unlabelled, periodic,
        other atoms than the first file, too few frames for the splits; or ``out`` holding
        another data set.
    """
    for path, _ in cfg.roles():
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
    sha256 = [_sha256(path) for path, _ in cfg.roles()]
    digest = cfg.digest(sha256)
    dest = Path(out) if out is not None else (
        resolve_data_dir(data_dir) / cfg.name / f"{cfg.name}-{digest}")
    found = _existing(dest, digest)
    if found is not None:
        return ImportResult(dest, True, found)
    frames = _read_all(cfg)
    names = [p for p, _ in cfg.roles()]
    splits, summary = _build(cfg, frames, names, sha256)
    summary["digest"] = digest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    tmp.chmod(0o755)  # mkdtemp's 0o700 would stay with the data set
    try:
        _write(tmp, cfg, splits, summary)
        try:
            os.rename(tmp, dest)  # atomic; replaces an empty directory
        except OSError:
            found = _existing(dest, digest)  # e.g. the same import finished meanwhile
            if found is None:
                raise
            return ImportResult(dest, True, found)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return ImportResult(dest, False, summary)


def _existing(dest: Path, digest: str) -> dict | None:
    """The summary of ``dest`` if it is this import's output; None if absent or empty."""
    if not dest.exists():
        return None
    if not dest.is_dir():
        raise InputError(f"{dest}: exists and is not a directory; choose another --out")
    if not any(dest.iterdir()):
        return None
    if (dest / IMPORT_JSON).exists():
        rec = read_json(dest / IMPORT_JSON)
        if isinstance(rec, dict) and rec.get("digest") == digest:
            return rec
        other = rec.get("digest") if isinstance(rec, dict) else None
        raise InputError(f"{dest}: holds another imported data set (hash {other}, these inputs "
                         f"{digest}); choose another --out or remove it")
    raise InputError(f"{dest}: exists and is not empty (not an imported data set); choose "
                     "another --out")


def _read_all(cfg: ImportConfig) -> list[Frames]:
    from stablejax.io.ase_io import read_frames

    opts = dict(energy_unit=cfg.energy_unit, length_unit=cfg.length_unit,
                energy_key=cfg.energy_key, forces_key=cfg.forces_key)
    out: list[Frames] = []
    for path, role in cfg.roles():
        f = read_frames(path, **opts)
        if any(f.pbc) and not all(f.pbc):
            raise InputError(f"{path}: partly periodic frames (pbc={list(f.pbc)}); import takes "
                             "free molecules (no pbc) or fully periodic boxes (pbc in all three "
                             "directions)")
        if all(f.pbc):
            _check_fixed_cell(f, path)
        if out and all(f.pbc) != all(out[0].pbc):
            raise InputError(f"{path}: periodic and free-molecule files mixed; give files of one "
                             "kind")
        if role != "reference" and not f.has_labels:
            raise InputError(f"{path}: no energies and forces; {role} frames must be labelled "
                             "(--energy-key/--forces-key name other keys)")
        if out and not np.array_equal(f.atomic_numbers, out[0].atomic_numbers):
            raise InputError(f"{path}: atoms {_formula(f)} {f.atomic_numbers.tolist()[:12]} "
                             f"differ from those of {cfg.roles()[0][0]} ({_formula(out[0])} "
                             f"{out[0].atomic_numbers.tolist()[:12]}); one molecule, same atom "
                             "order in every file")
        out.append(f)
    return out


def _build(cfg: ImportConfig, frames: list[Frames], names: list[str], sha256: list[str]):
    roles = [role for _, role in cfg.roles()]
    pieces = {r: [Piece(i, 0, f.n_frames) for i, (f, rr) in enumerate(zip(frames, roles))
                  if rr == r] for r in ("train", "test", "reference")}
    blocks = plan_blocks(pieces["train"], pieces["test"], pieces["reference"],
                         test_fraction=cfg.test_fraction, gap_fraction=cfg.gap_fraction,
                         val_fraction=cfg.val_fraction, what=", ".join(cfg.files))
    chosen = {}
    for split in ("train", "val", "test"):
        n = getattr(cfg, f"n_{split}")
        total = sum(p.n for p in blocks[split])
        chosen[split] = spread(blocks[split], min(total, DEFAULT_MAX[split]) if n is None else n,
                               split=split, option=f"--n-{split}", what=", ".join(cfg.files))
    chosen["reference"], ref_stride = strided(blocks["reference"], cfg.max_reference_frames)
    splits = {k: concatenate([frames[s.file][s.indices] for s in sel])
              for k, sel in chosen.items()}
    train = splits["train"]
    k = int(np.argmin(train.energies))
    at = [(s.file, int(i)) for s in chosen["train"] for i in s.indices][k]
    if all(train.pbc):
        splits, system = _periodic(cfg, splits, k, source=names[at[0]])
    else:
        system = make_system(cfg.name, train.atomic_numbers, train.positions[k], train.positions,
                             temperature_k=cfg.temperature_k, timestep_fs=cfg.timestep_fs)
    summary = {
        "name": cfg.name,
        "formula": _formula(train),
        "periodic": bool(all(train.pbc)),
        "n_atoms": system.n_atoms,
        "n_bonds": int(len(system.bonds)),
        "temperature_k": cfg.temperature_k,
        "timestep_fs": cfg.timestep_fs,
        "frame_interval_fs": cfg.frame_interval_fs,
        "reference_interval_fs": ref_stride * cfg.frame_interval_fs,
        "equilibrium": {"rule": "lowest-energy training frame", "file": names[at[0]],
                        "frame": at[1], "energy_ev": float(train.energies[k])},
        "splits": {name: {"n_frames": splits[name].n_frames,
                          "block": describe(blocks[name], names),
                          "frames": provenance(sel, names)}
                   for name, sel in chosen.items()},
        "inputs": [{"path": str(Path(p).resolve()), "role": r, "sha256": h,
                    "n_frames": f.n_frames}
                   for (p, r), f, h in zip(cfg.roles(), frames, sha256)],
        "settings": dataclasses.asdict(cfg),
    }
    return {**splits, "system": system}, summary


def _check_fixed_cell(f: Frames, path: str) -> None:
    """A periodic file's cell: valid, and the same in every frame (constant-volume data)."""
    from stablejax.data.periodic import check_cell

    cell = check_cell(f.cell, source=str(path))
    if cell.ndim == 3 and not np.allclose(cell, cell[0], rtol=0, atol=1e-6):
        raise InputError(f"{path}: the cell changes between frames (constant-pressure data); "
                         "import takes boxes of one fixed cell")


def _periodic(cfg: ImportConfig, splits: dict, k: int, *, source: str):
    """Periodic splits and their System: molecules from minimum-image bonds of the lowest-energy
    training frame (never from atom order), training/validation/test frames wrapped by molecule,
    the reference trajectory made whole and unwrapped (for MSD and diffusivity)."""
    from stablejax.data.periodic import (
        bonds_periodic,
        components,
        make_whole,
        unwrap_trajectory,
        wrap_by_molecule,
    )
    from stablejax.data.systems import System
    from stablejax.data.topology import bond_lengths

    train = splits["train"]
    cell = np.asarray(train.cell, np.float64)
    cell = cell if cell.ndim == 2 else cell[0]
    z = train.atomic_numbers
    bonds = bonds_periodic(train.positions[k], z, cell, source=source)
    mol = components(len(z), bonds)
    out = {}
    for name in ("train", "val", "test"):
        f = splits[name]
        out[name] = f.replace(positions=wrap_by_molecule(f.positions, cell, mol, bonds=bonds))
    ref = splits["reference"]
    whole = make_whole(ref.positions, cell, mol, bonds=bonds)
    out["reference"] = ref.replace(positions=np.asarray(unwrap_trajectory(whole, cell),
                                                        np.float64))
    eq = out["train"].positions[k]
    lengths = bond_lengths(out["train"].positions, bonds).mean(axis=0)
    system = System(cfg.name, z.astype(np.int32), eq, bonds.astype(np.int32), lengths,
                    cfg.temperature_k, cfg.timestep_fs, cell=cell, pbc=(True, True, True),
                    molecule_index=mol)
    return out, system


def _write(root: Path, cfg: ImportConfig, splits: dict, summary: dict) -> None:
    from stablejax.io.npz import write_npz
    from stablejax.io.run_dir import write_json

    meta = {"method": "imported", "name": cfg.name,
            "inputs": [i["path"] for i in summary["inputs"]]}
    if summary.get("periodic"):
        meta["cell_convention"] = "rows are lattice vectors, Angstrom"
        wrapped = {"positions": "wrapped by molecule: whole molecules, geometric centres inside "
                                "the cell"}
        unwrapped = {"positions": "unwrapped: continuous trajectory (molecules whole), for MSD "
                                  "and diffusivity"}
    else:
        wrapped = unwrapped = {}
    for name in ("train", "val", "test"):
        write_npz(root / f"{name}.npz", splits[name], {**meta, **wrapped, "split": name})
    write_npz(root / "reference.npz", splits["reference"],
              {**meta, **unwrapped, "split": "reference",
               "frame_interval_fs": summary["reference_interval_fs"]})
    splits["system"].save(root / "system.json")
    write_json(root / IMPORT_JSON, summary)


def _formula(frames: Frames) -> str:
    from ase.formula import Formula

    return Formula.from_list(frames.symbols).format("hill")


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
