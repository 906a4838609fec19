"""A user's molecule for GFN2-xTB reference data: a SMILES string or a 3-D structure file.

Everything here is checked before any quantum-chemistry call, each failure an
:class:`~stablejax.errors.InputError` of one line:

- a SMILES that RDKit cannot parse; a structure file that cannot be read, is periodic, is 2-D
  or lacks its hydrogens;
- elements GFN2-xTB does not cover (it is parametrised for H to Rn, Z 1..86);
- a total charge that differs from the molecule's formal charge (RDKit), or a spin
  multiplicity that does not fit the electron count (an even count needs an odd multiplicity
  and the reverse) or the molecule's radical electrons;
- fewer than 2 atoms.

After the GFN2 optimisation :func:`check_topology` compares the covalent-radius bonds of the
optimised structure with the input's bond graph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from stablejax.data.topology import bonds_from_structure
from stablejax.errors import InputError

log = logging.getLogger(__name__)

#: GFN2-xTB is parametrised for the elements H to Rn.
GFN2_MAX_Z = 86

#: A data set name: used as a directory name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")

#: Structure files read by RDKit with their bonds; any other format is read by ASE.
RDKIT_FORMATS = (".sdf", ".mol", ".pdb")


@dataclasses.dataclass(frozen=True)
class MoleculeStructure:
    """A 3-D input structure with its bond graph (hashable, JSON-friendly tuples).

    Attributes:
      atomic_numbers: [n_atoms] int.
      positions: [n_atoms, 3] Angstrom.
      bonds: [n_bonds, 2] atom index pairs (i < j), sorted.
      bonds_from: 'file' (read by RDKit with the file's bonds) or 'covalent radii' (of the
        input geometry, for formats without bonds, e.g. xyz).
      formal_charge: total formal charge stated by the file (sdf/mol), None if it states none.
      n_radicals: radical electrons stated by the file (sdf/mol), else 0.
      source: the file it was read from (not part of :meth:`sha256`).
    """

    atomic_numbers: tuple[int, ...]
    positions: tuple[tuple[float, float, float], ...]
    bonds: tuple[tuple[int, int], ...]
    bonds_from: str = "covalent radii"
    formal_charge: int | None = None
    n_radicals: int = 0
    source: str = ""

    @classmethod
    def from_arrays(cls, atomic_numbers, positions, bonds, **kwargs) -> "MoleculeStructure":
        z = tuple(int(v) for v in np.asarray(atomic_numbers).reshape(-1))
        R = tuple(tuple(float(x) for x in row) for row in np.asarray(positions, dtype=np.float64))
        pairs = np.asarray(bonds).reshape(-1, 2)
        b = tuple(sorted(tuple(sorted((int(i), int(j)))) for i, j in pairs))
        return cls(z, R, b, **kwargs)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(atomic numbers [n] int32, positions [n, 3] Angstrom, bonds [n_bonds, 2] int32)."""
        return (np.asarray(self.atomic_numbers, dtype=np.int32),
                np.asarray(self.positions, dtype=np.float64),
                np.asarray(self.bonds, dtype=np.int32).reshape(-1, 2))

    def sha256(self) -> str:
        """Hash of the atoms, positions, bonds and stated charge/radicals (not the file name)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is a usable data set (directory) name, else an InputError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(f"{what} {name!r} must be 1-64 characters: letters, digits and . _ + -, "
                         "starting with a letter or digit")
    return name


def element_label(z: int) -> str:
    return f"{chemical_symbols[z]} (Z={z})" if 0 < z < len(chemical_symbols) else f"Z={z}"


def check_elements(atomic_numbers, source: str) -> None:
    """Every element must be covered by GFN2-xTB (Z 1..86); at least 2 atoms."""
    z = [int(v) for v in np.asarray(atomic_numbers).reshape(-1)]
    bad = sorted({v for v in z if not 1 <= v <= GFN2_MAX_Z})
    if bad:
        raise InputError(f"{source}: element {', '.join(element_label(v) for v in bad)} is not "
                         f"covered by GFN2-xTB (elements H to Rn, Z 1..{GFN2_MAX_Z})")
    if len(z) < 2:
        raise InputError(f"{source}: {len(z)} atom(s); a molecule needs at least 2")


def check_charge_spin(
    atomic_numbers, charge: int, multiplicity: int, *, source: str,
    formal_charge: int | None = None, n_radicals: int = 0,
) -> None:
    """The total ``charge`` and spin ``multiplicity`` must fit the molecule.

    Rules: ``charge`` equals the input's formal charge (when it states one); radical electrons
    need ``multiplicity > 1``; the electron count ``sum(Z) - charge`` is even for an odd
    multiplicity and odd for an even one; at most one unpaired electron per electron.

    Raises:
      InputError: naming ``source``, the values and the flag to pass.
    """
    for key, v, low in (("charge", charge, None), ("multiplicity", multiplicity, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or (low and v < low):
            rule = "an integer" + (f" >= {low}" if low else "")
            raise InputError(f"{source}: {key} must be {rule}, got {v!r}")
    if formal_charge is not None and formal_charge != charge:
        raise InputError(f"{source}: the molecule has formal charge {formal_charge:+d} but the "
                         f"charge is {charge}; pass --charge {formal_charge}")
    n_el = int(np.sum(atomic_numbers)) - int(charge)
    if n_el < 1:
        raise InputError(f"{source}: charge {charge} leaves {n_el} electrons")
    if n_radicals and multiplicity == 1:
        raise InputError(f"{source}: open shell: the molecule has {n_radicals} radical "
                         f"electron(s) but multiplicity 1; pass --multiplicity {n_radicals + 1}")
    if n_el % 2 != (multiplicity - 1) % 2:
        parity = "odd" if n_el % 2 else "even"
        hint = "2 (doublet)" if n_el % 2 else "1 (singlet) or 3 (triplet)"
        raise InputError(f"{source}: {n_el} electrons (charge {charge}) is {parity}, which does "
                         f"not fit multiplicity {multiplicity}; pass --multiplicity {hint}, or "
                         "the right --charge")
    if multiplicity - 1 > n_el:
        raise InputError(f"{source}: multiplicity {multiplicity} needs {multiplicity - 1} "
                         f"unpaired electrons but there are {n_el} electrons")


def parse_smiles(smiles: str):
    """An RDKit molecule with explicit hydrogens (heavy atoms in SMILES order, then H).

    Raises:
      InputError: RDKit cannot parse or sanitise the SMILES (its reason included).
    """
    from rdkit import Chem, rdBase

    if not isinstance(smiles, str) or not smiles.strip():
        raise InputError(f"SMILES {smiles!r}: empty")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raw = Chem.MolFromSmiles(smiles, sanitize=False)
            reason = "syntax error"
            if raw is not None:
                try:
                    Chem.SanitizeMol(raw)
                except Exception as e:  # RDKit's valence/kekulisation errors
                    reason = str(e).strip() or type(e).__name__
            raise InputError(f"SMILES {smiles!r}: RDKit cannot parse it ({reason})")
    return Chem.AddHs(mol)


def smiles_facts(smiles: str) -> tuple[np.ndarray, int, int]:
    """(atomic numbers with hydrogens, formal charge, radical electrons) of a SMILES."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    mol = parse_smiles(smiles)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int32)
    return z, int(Chem.GetFormalCharge(mol)), int(Descriptors.NumRadicalElectrons(mol))


def check_smiles(smiles: str, charge: int = 0, multiplicity: int = 1) -> np.ndarray:
    """Parse and check a SMILES (elements, charge, spin); returns its atomic numbers."""
    source = f"SMILES {smiles!r}"
    z, formal, radicals = smiles_facts(smiles)
    check_elements(z, source)
    check_charge_spin(z, charge, multiplicity, source=source, formal_charge=formal,
                      n_radicals=radicals)
    return z


def read_structure_file(path: str | Path, *, charge: int = 0,
                        multiplicity: int = 1) -> MoleculeStructure:
    """Read and check the first structure of a file.

    ``.sdf``, ``.mol`` and ``.pdb`` are read by RDKit with their bonds (and, for sdf/mol, their
    formal charges and radicals); any other format (xyz, extxyz, ...) by ASE, bonds then from
    covalent radii of the input geometry (:func:`stablejax.data.topology.bonds_from_structure`).

    Raises:
      FileNotFoundError: no file at ``path``.
      InputError: unreadable, periodic, 2-D, missing hydrogens, or failing
        :func:`check_elements` / :func:`check_charge_spin`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: structure file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.suffix.lower() in RDKIT_FORMATS:
        z, R, bonds, formal, radicals = _read_rdkit(path)
        kw = dict(bonds_from="file", formal_charge=formal, n_radicals=radicals)
    else:
        z, R = _read_ase(path)
        bonds = bonds_from_structure(R, z)
        kw = dict(bonds_from="covalent radii")
    check_elements(z, str(path))
    if not np.isfinite(R).all():
        raise InputError(f"{path}: positions must be finite")
    check_charge_spin(z, charge, multiplicity, source=str(path),
                      formal_charge=kw.get("formal_charge"), n_radicals=kw.get("n_radicals", 0))
    return MoleculeStructure.from_arrays(z, R, bonds, source=str(path), **kw)


def _read_ase(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import ase.io

    try:
        atoms = ase.io.read(path, index=0)
    except Exception as e:  # ASE's parsers raise many types on malformed text
        raise InputError(f"{path}: ASE could not read it ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None
    if atoms.get_pbc().any():
        raise InputError(f"{path}: periodic structure (pbc={atoms.get_pbc().tolist()}); only "
                         "free molecules are supported")
    return atoms.get_atomic_numbers().astype(np.int32), atoms.get_positions()


def _read_rdkit(path: Path):
    from rdkit import Chem, rdBase
    from rdkit.Chem import Descriptors

    suffix = path.suffix.lower()
    pdb = suffix == ".pdb"

    def read(sanitize: bool):
        if suffix == ".sdf":
            supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=sanitize)
            return next(iter(supplier), None) if len(supplier) else None
        if suffix == ".mol":
            return Chem.MolFromMolFile(str(path), removeHs=False, sanitize=sanitize)
        return Chem.MolFromPDBFile(str(path), removeHs=False, sanitize=sanitize)

    with rdBase.BlockLogs():
        try:
            mol = read(sanitize=not pdb)  # PDB files carry no bond orders: graph only
            raw = read(sanitize=False) if mol is None and not pdb else None
        except (OSError, RuntimeError) as e:
            raise InputError(f"{path}: RDKit cannot read it ({e})") from None
        if raw is not None:
            try:
                Chem.SanitizeMol(raw)
            except Exception as e:  # RDKit's valence/kekulisation errors
                raise InputError(f"{path}: RDKit cannot read the molecule ({e})") from None
    if mol is None or mol.GetNumAtoms() == 0 or mol.GetNumConformers() == 0:
        raise InputError(f"{path}: RDKit cannot read a molecule with coordinates from it")
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int32)
    R = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
    if not pdb and len(z) > 2 and not mol.GetConformer().Is3D() and np.allclose(R[:, 2], 0.0):
        raise InputError(f"{path}: 2-D coordinates (every z = 0); give a 3-D structure, or the "
                         "SMILES (--smiles) to have one embedded")
    bonds = np.array(sorted(tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx())))
                            for b in mol.GetBonds()), dtype=np.int32).reshape(-1, 2)
    if pdb:
        if 1 not in z and 6 in z:
            log.warning("%s: no hydrogen atoms; GFN2-xTB needs every hydrogen in the structure",
                        path)
        return z, R, bonds, None, 0
    implicit = [i for i, a in enumerate(mol.GetAtoms()) if a.GetNumImplicitHs() > 0]
    if implicit:
        raise InputError(f"{path}: atoms {implicit[:8]} have implicit hydrogens; write the "
                         "structure with explicit hydrogen atoms and coordinates (e.g. RDKit "
                         "Chem.AddHs(mol, addCoords=True))")
    return (z, R, bonds, int(Chem.GetFormalCharge(mol)),
            int(Descriptors.NumRadicalElectrons(mol)))


def bond_label(z: np.ndarray, i: int, j: int) -> str:
    return f"{chemical_symbols[int(z[i])]}{i}-{chemical_symbols[int(z[j])]}{j}"


def check_topology(atomic_numbers, positions, expected_bonds, source: str) -> None:
    """Covalent-radius bonds of the optimised ``positions`` must equal ``expected_bonds``.

    Raises:
      InputError: naming the bonds the optimisation formed and broke, with their lengths.
    """
    z = np.asarray(atomic_numbers)
    R = np.asarray(positions)
    got = {tuple(b) for b in bonds_from_structure(R, z).tolist()}
    want = {tuple(sorted(b)) for b in np.asarray(expected_bonds).reshape(-1, 2).tolist()}
    if got == want:
        return

    def show(pairs):
        items = [f"{bond_label(z, i, j)} ({np.linalg.norm(R[i] - R[j]):.2f} A)"
                 for i, j in sorted(pairs)]
        return ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")

    parts = []
    if got - want:
        parts.append(f"formed {show(got - want)}")
    if want - got:
        parts.append(f"broke {show(want - got)}")
    raise InputError(f"{source}: the GFN2-optimised structure's bonds (covalent radii) differ "
                     f"from the input's: it {' and '.join(parts)}; the optimisation changed the "
                     "molecule or the input geometry is odd (check the structure, charge and "
                     "multiplicity)")
