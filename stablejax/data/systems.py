"""Built-in molecular systems and the :class:`System` record stored with every data set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import MappingProxyType

import numpy as np
from ase.data import chemical_symbols

from stablejax.data.topology import bond_lengths, bonds_from_structure
from stablejax.errors import InputError


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


def builtin_key(name: str) -> str:
    """The key of ``name`` in :data:`BUILTIN_MOLECULES` (case-insensitive; '_' and '-' are
    equivalent), whether or not it is there."""
    return name.strip().lower().replace("_", "-")


def get_molecule(name: str) -> MoleculeSpec:
    """Look up a built-in molecule by name (case-insensitive; '_' and '-' are equivalent)."""
    key = builtin_key(name)
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
      charge: total charge of the molecule, e (0 in system.json files that lack it).
      multiplicity: spin multiplicity (1 in system.json files that lack it).
      structure_sha256: hash of the input structure file's atoms, positions and bonds ('' if
        built from SMILES or imported).
      cell: [3, 3] Angstrom, rows are lattice vectors, for a periodic system; None for a free
        molecule (system.json: optional ``cell_angstrom``).
      pbc: periodicity per axis (system.json: optional ``pbc``, default all False).
      molecule_index: [n_atoms] int, the molecule of every atom; None for one molecule
        (system.json: optional ``molecule_index``).
    """

    name: str
    atomic_numbers: np.ndarray
    equilibrium_positions: np.ndarray
    bonds: np.ndarray
    reference_bond_lengths: np.ndarray
    temperature_k: float
    timestep_fs: float
    smiles: str = ""
    charge: int = 0
    multiplicity: int = 1
    structure_sha256: str = ""
    cell: np.ndarray | None = None
    pbc: tuple[bool, bool, bool] = (False, False, False)
    molecule_index: np.ndarray | None = None

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
            "charge": int(self.charge),
            "multiplicity": int(self.multiplicity),
            "structure_sha256": self.structure_sha256,
            "temperature_k": self.temperature_k,
            "timestep_fs": self.timestep_fs,
            "atomic_numbers": np.asarray(self.atomic_numbers).tolist(),
            "equilibrium_positions_angstrom": np.asarray(self.equilibrium_positions).tolist(),
            "bonds": np.asarray(self.bonds).tolist(),
            "reference_bond_lengths_angstrom": np.asarray(self.reference_bond_lengths).tolist(),
            **({} if self.cell is None else {"cell_angstrom": np.asarray(self.cell).tolist()}),
            **({"pbc": [bool(p) for p in self.pbc]} if any(self.pbc) else {}),
            **({} if self.molecule_index is None
               else {"molecule_index": np.asarray(self.molecule_index).tolist()}),
        }

    @classmethod
    def from_json(cls, d: dict, *, source: str = "system.json") -> "System":
        """Build from :meth:`to_json`'s dict.

        Raises:
          InputError: a missing field or an invalid value, naming ``source``, the field, the
            value and the rule.
        """
        if not isinstance(d, dict):
            raise InputError(f"{source}: must be a JSON object, got {type(d).__name__}")
        missing = [k for k in _FIELDS if k not in d]
        if missing:
            raise InputError(f"{source}: missing key {missing[0]!r}")
        for key in ("name", "smiles", "structure_sha256"):
            if not isinstance(d.get(key, ""), str):
                raise InputError(f"{source}: {key} must be a string, got {d[key]!r:.60}")
        for key, low in (("charge", None), ("multiplicity", 1)):
            v = d.get(key, 0 if low is None else low)
            if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low):
                rule = "an integer" + ("" if low is None else f" >= {low}")
                raise InputError(f"{source}: {key} must be {rule}, got {v!r:.60}")
        z = _array(d, "atomic_numbers", "iu", source)
        n_elements = len(chemical_symbols) - 1
        if z.ndim != 1 or z.size == 0 or not ((z >= 1) & (z <= n_elements)).all():
            raise InputError(f"{source}: atomic_numbers must be a non-empty list of integers in "
                             f"1..{n_elements}, got {z.tolist()!r:.80}")
        eq = _array(d, "equilibrium_positions_angstrom", "iuf", source, shape=(len(z), 3))
        bonds = _array(d, "bonds", "iu", source)
        if bonds.size == 0:
            bonds = bonds.reshape(0, 2)
        if bonds.ndim != 2 or bonds.shape[1] != 2 or not ((bonds >= 0) & (bonds < len(z))).all():
            raise InputError(f"{source}: bonds must be pairs of atom indices in 0..{len(z) - 1}, "
                             f"got {bonds.tolist()!r:.80}")
        ref = _array(d, "reference_bond_lengths_angstrom", "iuf", source, shape=(len(bonds),))
        cell, pbc, mol = _periodic_fields(d, len(z), source)
        return cls(
            name=d["name"],
            smiles=d.get("smiles", ""),
            charge=d.get("charge", 0),
            multiplicity=d.get("multiplicity", 1),
            structure_sha256=d.get("structure_sha256", ""),
            temperature_k=_positive(d, "temperature_k", source),
            timestep_fs=_positive(d, "timestep_fs", source),
            atomic_numbers=z.astype(np.int32),
            equilibrium_positions=eq.astype(np.float64),
            bonds=bonds.astype(np.int32),
            reference_bond_lengths=ref.astype(np.float64),
            cell=cell,
            pbc=pbc,
            molecule_index=mol,
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "System":
        """Read a ``system.json`` written by :meth:`save`.

        Raises:
          FileNotFoundError: no file at ``path``.
          InputError: invalid JSON (with its line and column) or an invalid field.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such system file")
        return cls.from_json(read_json(path), source=str(path))


_FIELDS = ("name", "temperature_k", "timestep_fs", "atomic_numbers",
           "equilibrium_positions_angstrom", "bonds", "reference_bond_lengths_angstrom")


def read_json(path: Path):
    """Parse a JSON file.

    Raises:
      FileNotFoundError: no file at ``path``.
      InputError: naming the file and, for a syntax error, JSON's line and column.
    """
    try:
        return json.loads(Path(path).read_bytes())
    except json.JSONDecodeError as e:
        msg = f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
    except UnicodeDecodeError as e:
        msg = f"not UTF-8 text ({e.reason} at byte {e.start})"
    except RecursionError:
        msg = "JSON nested too deeply"
    except FileNotFoundError:
        raise
    except OSError as e:
        msg = f"cannot be read ({e.strerror})"
    raise InputError(f"{path}: {msg}")


def _periodic_fields(d: dict, n_atoms: int, source: str):
    """The optional ``cell_angstrom``, ``pbc`` and ``molecule_index`` of a system.json."""
    cell = None
    if "cell_angstrom" in d:
        from stablejax.data.periodic import check_cell

        cell = check_cell(_array(d, "cell_angstrom", "iuf", source, shape=(3, 3)),
                          source=f"{source}: cell_angstrom")
    pbc = d.get("pbc", [False] * 3)
    if not (isinstance(pbc, list) and len(pbc) == 3 and all(isinstance(p, bool) for p in pbc)):
        raise InputError(f"{source}: pbc must be three booleans, got {pbc!r:.60}")
    if any(pbc) and cell is None:
        raise InputError(f"{source}: pbc {pbc} needs cell_angstrom (rows are lattice vectors)")
    mol = None
    if "molecule_index" in d:
        mol = _array(d, "molecule_index", "iu", source, shape=(n_atoms,)).astype(np.int64)
        if mol.min() < 0:
            raise InputError(f"{source}: molecule_index must be >= 0")
    return cell, tuple(pbc), mol


def _array(d: dict, key: str, kinds: str, source: str, shape=None) -> np.ndarray:
    try:
        a = np.asarray(d[key])
    except (TypeError, ValueError, OverflowError):
        a = None
    bad_kind = a is None or (a.dtype.kind not in kinds and a.size > 0)
    if bad_kind or (shape is not None and a.shape != shape):
        want = "integers" if kinds == "iu" else "numbers"
        raise InputError(f"{source}: {key} must be {want}" + (f" of shape {shape}" if shape else "")
                         + f", got {d[key]!r:.80}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError(f"{source}: {key} must be finite, got {a.tolist()!r:.80}")
    return a


def _positive(d: dict, key: str, source: str) -> float:
    v = as_positive_float(d[key])
    if v is None:
        raise InputError(f"{source}: {key} must be a finite number > 0, got {d[key]!r:.60}")
    return v


def as_positive_float(value) -> float | None:
    """``value`` as a float if it is a finite number > 0 (an int or float from JSON, not a
    bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            v = float(value)
        except OverflowError:
            return None
        if 0 < v < float("inf"):
            return v
    return None


def make_system(
    name: str,
    atomic_numbers: np.ndarray,
    equilibrium_positions: np.ndarray,
    train_positions: np.ndarray | None = None,
    *,
    temperature_k: float,
    timestep_fs: float,
    smiles: str = "",
    charge: int = 0,
    multiplicity: int = 1,
    structure_sha256: str = "",
) -> System:
    """Build a :class:`System`: bonds from the equilibrium structure, reference lengths as the
    mean over ``train_positions`` [n_frames, n_atoms, 3] (the equilibrium lengths if None)."""
    z = np.asarray(atomic_numbers, dtype=np.int32)
    eq = np.asarray(equilibrium_positions, dtype=np.float64)
    bonds = bonds_from_structure(eq, z)
    src = eq[None] if train_positions is None else np.asarray(train_positions)
    ref = bond_lengths(src, bonds).mean(axis=0)
    return System(name, z, eq, bonds, ref, float(temperature_k), float(timestep_fs), smiles,
                  int(charge), int(multiplicity), structure_sha256)
