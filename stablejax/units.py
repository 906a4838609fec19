"""Unit constants. stablejax works in eV, Angstrom, fs, K and amu (kT in eV).

Conversions happen once, when data enters (``stablejax.io``) or leaves the library.
"""

from __future__ import annotations

import ase.units

#: Boltzmann constant in eV/K.
KB_EV_PER_K: float = float(ase.units.kB)
#: 1 kcal/mol in eV (MD17/MD22 store kcal/mol and kcal/mol/Angstrom).
KCAL_PER_MOL_EV: float = float(ase.units.kcal / ase.units.mol)
#: 1 kJ/mol in eV.
KJ_PER_MOL_EV: float = float(ase.units.kJ / ase.units.mol)
#: 1 Hartree in eV.
HARTREE_EV: float = float(ase.units.Hartree)
#: 1 Bohr in Angstrom.
BOHR_ANGSTROM: float = float(ase.units.Bohr)
#: 1 fs in the time unit of (eV, Angstrom, amu): sqrt(amu * A^2 / eV) ~ 10.18 fs.
FS: float = float(ase.units.fs)

#: Energy units a data file may declare, as multipliers to eV.
ENERGY_UNITS_TO_EV: dict[str, float] = {
    "ev": 1.0,
    "mev": 1e-3,
    "kcal/mol": KCAL_PER_MOL_EV,
    "kj/mol": KJ_PER_MOL_EV,
    "hartree": HARTREE_EV,
}
#: Length units a data file may declare, as multipliers to Angstrom.
LENGTH_UNITS_TO_ANGSTROM: dict[str, float] = {
    "angstrom": 1.0,
    "a": 1.0,
    "ang": 1.0,
    "bohr": BOHR_ANGSTROM,
    "nm": 10.0,
}


def kT_ev(temperature_k: float) -> float:
    """Thermal energy k_B T in eV for a temperature in K."""
    return KB_EV_PER_K * float(temperature_k)


def energy_unit_to_ev(unit: str) -> float:
    """Multiplier from an energy unit name (case-insensitive) to eV.

    Raises:
      ValueError: for an unknown unit, listing the known ones.
    """
    key = unit.strip().lower().replace(" ", "")
    if key not in ENERGY_UNITS_TO_EV:
        raise ValueError(
            f"unknown energy unit {unit!r}; known units: {sorted(ENERGY_UNITS_TO_EV)}"
        )
    return ENERGY_UNITS_TO_EV[key]


def length_unit_to_angstrom(unit: str) -> float:
    """Multiplier from a length unit name (case-insensitive) to Angstrom."""
    key = unit.strip().lower()
    if key not in LENGTH_UNITS_TO_ANGSTROM:
        raise ValueError(
            f"unknown length unit {unit!r}; known units: {sorted(LENGTH_UNITS_TO_ANGSTROM)}"
        )
    return LENGTH_UNITS_TO_ANGSTROM[key]
