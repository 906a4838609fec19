"""GFN2-xTB energies and forces through tblite, in eV and eV/Angstrom.

tblite uses OpenMP: set ``OMP_NUM_THREADS=1`` before it is imported (the generators here do it
for their worker processes); two threads on two busy cores can be tens of times slower.
"""

from __future__ import annotations

import os

import numpy as np

from stablejax.units import BOHR_ANGSTROM, HARTREE_EV

METHOD = "GFN2-xTB"


def _limit_threads() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def ase_calculator(method: str = METHOD, *, charge: int = 0, multiplicity: int = 1):
    """An ASE calculator for GFN2-xTB (tblite), silent, for a molecule of total ``charge`` (e)
    and spin ``multiplicity`` (tblite runs with ``multiplicity - 1`` unpaired electrons)."""
    _limit_threads()
    from tblite.ase import TBLite

    return TBLite(method=method, charge=charge, multiplicity=multiplicity, verbosity=0)


def energy_forces(
    atomic_numbers: np.ndarray, positions: np.ndarray, method: str = METHOD, *,
    charge: int = 0, multiplicity: int = 1,
) -> tuple[float, np.ndarray]:
    """One GFN2-xTB single point via tblite's own interface (no ASE in between).

    Args:
      atomic_numbers: [n_atoms] int.
      positions: [n_atoms, 3] Angstrom.
      charge: total charge, e.
      multiplicity: spin multiplicity (``multiplicity - 1`` unpaired electrons).

    Returns:
      (energy in eV, forces [n_atoms, 3] in eV/Angstrom).
    """
    _limit_threads()
    from tblite.interface import Calculator

    calc = Calculator(method, np.asarray(atomic_numbers), np.asarray(positions) / BOHR_ANGSTROM,
                      charge=float(charge), uhf=int(multiplicity) - 1)
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    energy = float(res.get("energy")) * HARTREE_EV
    forces = -np.asarray(res.get("gradient")) * HARTREE_EV / BOHR_ANGSTROM
    return energy, forces
