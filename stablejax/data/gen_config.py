"""Settings of a generated data set (:class:`GenerationConfig`) and the size presets.

A config names a built-in molecule, or the user's own molecule by a SMILES string or a 3-D
structure (:mod:`stablejax.data.molecule`), with its charge and spin multiplicity; the user's
molecule is checked here (name, elements, charge, spin) before anything runs. The hash of the
settings names the cache directory; the hash of a built-in molecule's settings does not depend
on the fields for the user's molecules, so existing cached data sets stay valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from stablejax.data.molecule import (
    MoleculeStructure,
    check_charge_spin,
    check_elements,
    check_name,
    check_smiles,
)
from stablejax.data.systems import BUILTIN_MOLECULES, MoleculeSpec, builtin_key, get_molecule
from stablejax.errors import InputError

#: Sizes per scale (docs/method.md §10.4, docs/reference-data.md): train, val, test frames;
#: reference trajectory (ps); equilibration per trajectory (ps).
SCALES = {
    "demo": dict(n_train=200, n_val=50, n_test=100, reference_ps=2.0, equilibration_ps=0.5),
    "cpu": dict(n_train=950, n_val=50, n_test=500, reference_ps=20.0, equilibration_ps=2.0),
    "paper": dict(n_train=950, n_val=50, n_test=1000, reference_ps=100.0, equilibration_ps=2.0),
}
_SYSTEM_SCALES = {
    ("ac-ala3-nhme", "cpu"): dict(n_train=1000, n_val=100, n_test=300, reference_ps=10.0),
    ("ac-ala3-nhme", "paper"): dict(n_train=14894, n_val=2127, n_test=1000),
}


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Settings of a generated data set; all of them enter the cache hash.

    Attributes:
      system: a built-in molecule name (``stablejax.data.systems.BUILTIN_MOLECULES``), or the
        name of the user's molecule given by ``smiles`` or ``structure``.
      n_train, n_val, n_test: frames per split.
      reference_ps: length of the reference trajectory, ps.
      equilibration_ps: discarded start of every trajectory, ps.
      temperature_k: K (None: the molecule's default, 500 K for aspirin/Ac-Ala3-NHMe and for
        the user's molecules).
      timestep_fs: fs (None: the molecule's default, 0.5 fs).
      friction_per_fs: Langevin friction, 1/fs.
      sample_every: MD steps between training-pool frames (20 = 10 fs at 0.5 fs).
      reference_sample_every: MD steps between reference-trajectory frames.
      n_trajectories: independent training-pool trajectories; the last
        ``n_test_trajectories`` of them give the test split.
      chunk_frames: frames per resumable chunk.
      seed: seed of everything (structure embedding, velocities, noise, splits).
      method: the quantum-chemistry method.
      smiles: the molecule's SMILES (filled in for a built-in molecule); '' with ``structure``.
      structure: the user's 3-D input structure (from a file), or None; the hash covers its
        :meth:`~stablejax.data.molecule.MoleculeStructure.sha256`.
      charge: total charge, e (the user's molecules only; built-in ones are neutral).
      multiplicity: spin multiplicity (``multiplicity - 1`` unpaired electrons).
    """

    system: str
    n_train: int = 200
    n_val: int = 50
    n_test: int = 100
    reference_ps: float = 2.0
    equilibration_ps: float = 2.0
    temperature_k: float | None = None
    timestep_fs: float | None = None
    friction_per_fs: float = 0.01
    sample_every: int = 20
    reference_sample_every: int = 10
    n_trajectories: int = 8
    n_test_trajectories: int = 2
    chunk_frames: int = 25
    seed: int = 0
    method: str = "GFN2-xTB"
    smiles: str = ""
    structure: MoleculeStructure | None = None
    charge: int = 0
    multiplicity: int = 1

    def __post_init__(self):
        spec = _molecule_spec(self)
        object.__setattr__(self, "system", spec.name)
        object.__setattr__(self, "smiles", spec.smiles)
        if self.temperature_k is None:
            object.__setattr__(self, "temperature_k", spec.temperature_k)
        if self.timestep_fs is None:
            object.__setattr__(self, "timestep_fs", spec.timestep_fs)
        for name in ("n_train", "n_val", "n_test", "sample_every", "reference_sample_every",
                     "chunk_frames"):
            if getattr(self, name) < (1 if name != "n_val" else 0):
                raise ValueError(f"GenerationConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.n_test_trajectories < self.n_trajectories:
            raise ValueError(
                "GenerationConfig.n_test_trajectories must be in (0, n_trajectories), got "
                f"{self.n_test_trajectories} of {self.n_trajectories}"
            )
        for name in ("reference_ps", "equilibration_ps", "temperature_k", "timestep_fs",
                     "friction_per_fs"):
            if getattr(self, name) < 0 or (name != "equilibration_ps" and getattr(self, name) == 0):
                raise ValueError(f"GenerationConfig.{name} must be > 0, got {getattr(self, name)}")

    @property
    def is_builtin(self) -> bool:
        return self.structure is None and builtin_key(self.system) in BUILTIN_MOLECULES

    def settings(self) -> dict:
        """The hashed settings: every field, the structure by its sha256, and charge and
        multiplicity only when they differ from a neutral singlet (so the hash of a built-in
        molecule's settings is the same as before these fields existed)."""
        d = dataclasses.asdict(self)
        d.pop("structure")
        if self.structure is not None:
            d["structure_sha256"] = self.structure.sha256()
        for key, neutral in (("charge", 0), ("multiplicity", 1)):
            if d[key] == neutral:
                d.pop(key)
        return d

    def digest(self) -> str:
        """12-hex hash of the settings (with the SMILES or structure), naming the cache
        directory."""
        blob = json.dumps(self.settings(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def record(self) -> dict:
        """What ``settings.json`` and the split files record: :meth:`settings`, charge and
        multiplicity, and the input structure (file, atoms, positions, bonds)."""
        out = self.settings()
        if self.is_builtin:
            return out
        out.update(charge=self.charge, multiplicity=self.multiplicity)
        if self.structure is not None:
            out["structure"] = dataclasses.asdict(self.structure)
        return out


def _molecule_spec(cfg: GenerationConfig) -> MoleculeSpec:
    """The built-in molecule of ``cfg.system``, or a spec for the user's molecule after its
    checks (name, elements, charge, spin)."""
    key = builtin_key(cfg.system)
    if key in BUILTIN_MOLECULES and cfg.structure is None:
        spec = BUILTIN_MOLECULES[key]
        if cfg.smiles not in ("", spec.smiles) or (cfg.charge, cfg.multiplicity) != (0, 1):
            raise InputError(f"GenerationConfig.system {cfg.system!r} is a built-in molecule "
                             f"(SMILES {spec.smiles!r}, neutral singlet); give your molecule "
                             "another name")
        return spec
    if key in BUILTIN_MOLECULES:
        raise InputError(f"GenerationConfig.system {cfg.system!r} is a built-in molecule; give "
                         "your structure another name")
    if not cfg.smiles and cfg.structure is None:
        raise ValueError(f"unknown system {cfg.system!r}; built-in systems: "
                         f"{sorted(BUILTIN_MOLECULES)}; for another molecule give a SMILES "
                         "or a structure file")
    if cfg.smiles and cfg.structure is not None:
        raise InputError("GenerationConfig: give smiles or structure, not both")
    check_name(cfg.system, "GenerationConfig.system")
    if cfg.smiles:
        check_smiles(cfg.smiles, cfg.charge, cfg.multiplicity)
    else:
        s = cfg.structure
        check_elements(s.atomic_numbers, s.source or "structure")
        check_charge_spin(s.atomic_numbers, cfg.charge, cfg.multiplicity,
                          source=s.source or "structure", formal_charge=s.formal_charge,
                          n_radicals=s.n_radicals)
    return MoleculeSpec(cfg.system, cfg.smiles)


def scale_config(system: str, scale: str = "demo", **overrides: Any) -> GenerationConfig:
    """The :class:`GenerationConfig` of a ``--scale {demo,cpu,paper}`` preset, with overrides.

    ``system`` is a built-in molecule, or the name of the user's molecule when ``overrides``
    hold ``smiles=`` or ``structure=``.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    custom = bool(overrides.get("smiles")) or overrides.get("structure") is not None
    name = system if custom else get_molecule(system).name
    sizes = {**SCALES[scale], **_SYSTEM_SCALES.get((name, scale), {})}
    return GenerationConfig(system=name, **{**sizes, **overrides})
