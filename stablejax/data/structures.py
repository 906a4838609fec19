"""3-D structures: RDKit embedding from SMILES, then a GFN2-xTB geometry optimisation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stablejax.errors import InputError

log = logging.getLogger(__name__)


def embed_smiles(smiles: str, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3-D structure from SMILES: add hydrogens, ETKDGv3 embedding (fixed seed), MMFF optimisation.

    Returns:
      (atomic_numbers [n_atoms], positions [n_atoms, 3] Angstrom); heavy atoms in SMILES order,
      then hydrogens.

    Raises:
      InputError: unparsable SMILES or failed embedding.
    """
    from rdkit.Chem import AllChem

    from stablejax.data.molecule import parse_smiles

    mol = parse_smiles(smiles)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True  # RDKit's advice for molecules ETKDG fails on
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise InputError(f"SMILES {smiles!r}: RDKit cannot embed it in 3-D (ETKDGv3, seed "
                             f"{seed}, also from random coordinates)")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int32)
    R = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
    return z, R


def smiles_bonds(smiles: str) -> np.ndarray:
    """Bond graph of a SMILES (with explicit hydrogens) as sorted [n_bonds, 2] index pairs."""
    from stablejax.data.molecule import parse_smiles

    mol = parse_smiles(smiles)
    pairs = sorted(tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in mol.GetBonds())
    return np.asarray(pairs, dtype=np.int32).reshape(-1, 2)


def read_structure(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers and positions (Angstrom) of the first structure in an ASE-readable file."""
    import ase.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: structure file not found")
    atoms = ase.io.read(path, index=0)
    return atoms.get_atomic_numbers().astype(np.int32), atoms.get_positions()


def optimise_gfn2(
    atomic_numbers: np.ndarray, positions: np.ndarray, *, fmax: float = 0.01, steps: int = 2000,
    charge: int = 0, multiplicity: int = 1,
) -> np.ndarray:
    """GFN2-xTB geometry optimisation (ASE BFGS) to max force ``fmax`` eV/Angstrom, at total
    ``charge`` (e) and spin ``multiplicity``.

    Returns:
      [n_atoms, 3] optimised positions in Angstrom.
    """
    from ase import Atoms
    from ase.optimize import BFGS

    from stablejax.data.xtb import ase_calculator

    atoms = Atoms(numbers=atomic_numbers, positions=positions)
    atoms.calc = ase_calculator(charge=charge, multiplicity=multiplicity)
    opt = BFGS(atoms, logfile=None)
    converged = opt.run(fmax=fmax, steps=steps)
    if not converged:
        log.warning("GFN2 optimisation did not reach fmax=%.3g in %d steps", fmax, steps)
    return atoms.get_positions()
