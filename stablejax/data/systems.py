"""Built-in molecular systems and the :class:`System` record stored with every data set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import MappingProxyType

import numpy as np

from stablejax.data.topology import bond_lengths, bonds_from_structure


@dataclasses.dataclass(frozen=True)
class MoleculeSpec:
    """How to build a molecule and at which conditions its reference data is made."""

    name: str
    smiles: str
    temperature_k: float = 500.0
    timestep_fs: float = 0.5


#: Molecules known by name (immutable). Temperatures and timesteps follow docs/method.md §10
#: (500 K, 0.5 fs) and docs/reference-data.md.
BUILTIN_MOLECULES = MappingProxyType(
    {
        "aspirin": MoleculeSpec("aspirin", "CC(=O)Oc1ccccc1C(=O)O"),
        "ac-ala3-nhme": MoleculeSpec(
            "ac-ala3-nhme", "CC(=O)N[C@@H](C)C(=O)N[C@@H](C)C(=O)N[C@@H](C)C(=O)NC"
        ),
        # Small molecule used by the fast tests (9 atoms, ~1 ms per GFN2 call).
        "ethanol": MoleculeSpec("ethanol", "CCO"),
    }
)


def get_molecule(name: str) -> MoleculeSpec:
    """Look up a built-in molecule by name (case-insensitive; '_' and '-' are equivalent)."""
    key = name.strip().lower().replace("_", "-")
    if key not in BUILTIN_MOLECULES:
        raise ValueError(f"unknown system {name!r}; built-in systems: {sorted(BUILTIN_MOLECULES)}")
    return BUILTIN_MOLECULES[key]


@dataclasses.dataclass(frozen=True)
class System:
    """A molecule with its equilibrium structure, bond topology and reference bond lengths.

    Attributes:
      name: system name.
      atomic_numbers: [n_atoms] int.
      equilibrium_positions: [n_atoms, 3] Angstrom (GFN2-xTB minimum for generated data).
      bonds: [n_bonds, 2] int atom pairs, from covalent radii on the equilibrium structure.
      reference_bond_lengths: [n_bonds] Angstrom, mean over the training frames (docs/method.md §6).
      temperature_k: temperature of the reference data, K.
      timestep_fs: timestep of the reference data, fs.
      smiles: the SMILES it was built from ('' if from coordinates).
    """

    name: str
    atomic_numbers: np.ndarray
    equilibrium_positions: np.ndarray
    bonds: np.ndarray
    reference_bond_lengths: np.ndarray
    temperature_k: float
    timestep_fs: float
    smiles: str = ""

    @property
    def n_atoms(self) -> int:
        return int(len(self.atomic_numbers))

    @property
    def masses_amu(self) -> np.ndarray:
        from ase.data import atomic_masses

        return atomic_masses[self.atomic_numbers]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "smiles": self.smiles,
            "temperature_k": self.temperature_k,
            "timestep_fs": self.timestep_fs,
            "atomic_numbers": np.asarray(self.atomic_numbers).tolist(),
            "equilibrium_positions_angstrom": np.asarray(self.equilibrium_positions).tolist(),
            "bonds": np.asarray(self.bonds).tolist(),
            "reference_bond_lengths_angstrom": np.asarray(self.reference_bond_lengths).tolist(),
        }

    @classmethod
    def from_json(cls, d: dict, *, source: str = "system.json") -> "System":
        try:
            return cls(
                name=d["name"],
                smiles=d.get("smiles", ""),
                temperature_k=float(d["temperature_k"]),
                timestep_fs=float(d["timestep_fs"]),
                atomic_numbers=np.asarray(d["atomic_numbers"], dtype=np.int32),
                equilibrium_positions=np.asarray(d["equilibrium_positions_angstrom"], float),
                bonds=np.asarray(d["bonds"], dtype=np.int32).reshape(-1, 2),
                reference_bond_lengths=np.asarray(d["reference_bond_lengths_angstrom"], float),
            )
        except KeyError as e:
            raise ValueError(f"{source}: missing key {e.args[0]!r}") from None

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "System":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such system file")
        return cls.from_json(json.loads(path.read_text()), source=str(path))


def make_system(
    name: str,
    atomic_numbers: np.ndarray,
    equilibrium_positions: np.ndarray,
    train_positions: np.ndarray | None = None,
    *,
    temperature_k: float,
    timestep_fs: float,
    smiles: str = "",
) -> System:
    """Build a :class:`System`: bonds from the equilibrium structure, reference lengths as the
    mean over ``train_positions`` [n_frames, n_atoms, 3] (the equilibrium lengths if None)."""
    z = np.asarray(atomic_numbers, dtype=np.int32)
    eq = np.asarray(equilibrium_positions, dtype=np.float64)
    bonds = bonds_from_structure(eq, z)
    src = eq[None] if train_positions is None else np.asarray(train_positions)
    ref = bond_lengths(src, bonds).mean(axis=0)
    return System(name, z, eq, bonds, ref, float(temperature_k), float(timestep_fs), smiles)
