"""SPC/Fw liquid water in OpenMM: the box, the force field and single-thread CPU contexts.

The force field is ``forcefields/spcfw.xml`` (Wu, Tepper and Voth, J. Chem. Phys. 124, 024503
(2006); parameters and unit conversion cited in the file). Atoms are ordered O, H, H per
molecule by construction, so the molecule index is ``arange(n_atoms) // 3``. Positions here are
numpy arrays in Angstrom; OpenMM works in nm, kJ/mol and ps, converted at this boundary only.
The cell is cubic, ``edge * eye(3)``, rows are lattice vectors.
"""

from __future__ import annotations

import math
from importlib.resources import files

import numpy as np

from stablejax.errors import InputError
from stablejax.units import KJ_PER_MOL_EV

#: SPC/Fw force-field XML shipped with the package.
FORCEFIELD_XML = files("stablejax.data") / "forcefields" / "spcfw.xml"
#: Equilibrium O-H length (Angstrom) and H-O-H angle (degrees) of SPC/Fw.
R_OH_ANGSTROM = 1.012
THETA_HOH_DEG = 113.24
#: Molar mass of H2O in g/mol (the force field's masses), and Avogadro's number.
_WATER_G_PER_MOL = 15.99943 + 2 * 1.007947
_AVOGADRO = 6.02214076e23
#: OpenMM energies (kJ/mol) and forces (kJ/mol/nm) to eV and eV/Angstrom.
ENERGY_TO_EV = KJ_PER_MOL_EV
FORCE_TO_EV_PER_ANGSTROM = KJ_PER_MOL_EV / 10.0


def box_edge_angstrom(n_molecules: int, density_g_cm3: float) -> float:
    """Edge of the cubic box holding ``n_molecules`` waters at ``density_g_cm3``, Angstrom."""
    volume_cm3 = n_molecules * _WATER_G_PER_MOL / _AVOGADRO / density_g_cm3
    return (volume_cm3 * 1e24) ** (1.0 / 3.0)


def water_numbers(n_molecules: int) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers [3 n] (O, H, H per molecule) and molecule index [3 n] int."""
    z = np.tile(np.array([8, 1, 1], dtype=np.int32), n_molecules)
    return z, np.arange(3 * n_molecules, dtype=np.int64) // 3


def lattice_box(n_molecules: int, edge_angstrom: float, seed: int) -> np.ndarray:
    """Waters on a simple cubic lattice (a seeded choice of sites when ``n_molecules`` is not a
    cube) with seeded random orientations, at the SPC/Fw equilibrium geometry.

    Returns:
      [3 n_molecules, 3] float64 positions, Angstrom (O, H, H per molecule).
    """
    rng = np.random.default_rng([seed, 11])
    m = math.ceil(round(n_molecules ** (1.0 / 3.0), 9))
    grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = grid[np.sort(rng.permutation(len(grid))[:n_molecules])]
    oxygens = (sites + 0.5) * (edge_angstrom / m)
    half = math.radians(THETA_HOH_DEG) / 2.0
    local = R_OH_ANGSTROM * np.array(
        [[0.0, 0.0, 0.0], [math.sin(half), 0.0, math.cos(half)],
         [-math.sin(half), 0.0, math.cos(half)]]
    )
    q, r = np.linalg.qr(rng.normal(size=(n_molecules, 3, 3)))
    rot = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]  # Haar-random rotations
    R = oxygens[:, None, :] + np.einsum("kj,mij->mki", local, rot)
    return R.reshape(-1, 3)


def make_openmm_system(n_molecules: int, edge_angstrom: float, cutoff_angstrom: float,
                       ewald_tolerance: float):
    """The OpenMM ``(topology, system)`` of the SPC/Fw box: PME with a real-space cutoff,
    long-range dispersion correction, flexible water, centre-of-mass motion removed.

    Raises:
      InputError: the cutoff is not below half the box edge.
    """
    import openmm.app as app
    from openmm import NonbondedForce, Vec3, unit

    if not 0 < cutoff_angstrom < edge_angstrom / 2:
        raise InputError(f"water: cutoff {cutoff_angstrom:g} Angstrom must be > 0 and below half "
                         f"the box edge {edge_angstrom / 2:.4g} Angstrom ({n_molecules} "
                         "molecules); use a smaller cutoff or more molecules")
    top = app.Topology()
    chain = top.addChain()
    O, H = app.Element.getBySymbol("O"), app.Element.getBySymbol("H")
    for _ in range(n_molecules):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", O, res)
        top.addBond(o, top.addAtom("H1", H, res))
        top.addBond(o, top.addAtom("H2", H, res))
    e = edge_angstrom / 10.0
    top.setPeriodicBoxVectors((Vec3(e, 0, 0), Vec3(0, e, 0), Vec3(0, 0, e)) * unit.nanometer)
    ff = app.ForceField(str(FORCEFIELD_XML))
    system = ff.createSystem(
        top, nonbondedMethod=app.PME, nonbondedCutoff=cutoff_angstrom / 10.0 * unit.nanometer,
        constraints=None, rigidWater=False, ewaldErrorTolerance=ewald_tolerance,
    )
    for force in system.getForces():
        if isinstance(force, NonbondedForce):
            force.setUseDispersionCorrection(True)
    return top, system


def make_context(system, integrator, platform: str = "CPU"):
    """An OpenMM ``Context`` on one CPU thread with deterministic force summation (bitwise
    repeatable runs; ``platform="Reference"``: double precision)."""
    from openmm import Context, Platform

    plat = Platform.getPlatformByName(platform)
    props = {"Threads": "1", "DeterministicForces": "true"} if platform == "CPU" else {}
    return Context(system, integrator, plat, props)


def langevin(temperature_k: float, friction_per_ps: float, timestep_fs: float, seed: int):
    """A ``LangevinMiddleIntegrator`` with a fixed random seed (``seed`` >= 1; OpenMM treats 0
    as 'pick one at random')."""
    from openmm import LangevinMiddleIntegrator, unit

    if seed < 1:
        raise ValueError(f"OpenMM integrator seed must be >= 1, got {seed}")
    integ = LangevinMiddleIntegrator(temperature_k * unit.kelvin, friction_per_ps / unit.picosecond,
                                     timestep_fs * unit.femtosecond)
    integ.setRandomNumberSeed(int(seed))
    return integ


def openmm_seed(*key: int) -> int:
    """A seed in 1 .. 2^31 - 1 derived from integer ``key`` (numpy SeedSequence)."""
    return int(np.random.default_rng(list(key)).integers(1, 2**31 - 1))


def set_state(context, positions_angstrom: np.ndarray, velocities=None) -> None:
    """Set positions (Angstrom) and, if given, velocities (nm/ps, OpenMM's own, kept exactly)."""
    context.setPositions(np.asarray(positions_angstrom, dtype=np.float64) / 10.0)
    if velocities is not None:
        context.setVelocities(np.asarray(velocities, dtype=np.float64))


def read_state(context, *, labels: bool = True):
    """Positions (Angstrom, not wrapped), energy (eV), forces (eV/Angstrom) and velocities (nm/ps)
    of a context; energy and forces None without ``labels``."""
    state = context.getState(getPositions=True, getVelocities=True, getEnergy=labels,
                             getForces=labels)
    R = state.getPositions(asNumpy=True).value_in_unit_system(_md()) * 10.0
    V = state.getVelocities(asNumpy=True).value_in_unit_system(_md())
    if not labels:
        return np.asarray(R), None, None, np.asarray(V)
    E = state.getPotentialEnergy().value_in_unit_system(_md()) * ENERGY_TO_EV
    F = state.getForces(asNumpy=True).value_in_unit_system(_md()) * FORCE_TO_EV_PER_ANGSTROM
    return np.asarray(R), float(E), np.asarray(F), np.asarray(V)


def _md():
    from openmm import unit

    return unit.md_unit_system


def minimise(system, positions_angstrom: np.ndarray, *, tolerance: float = 1.0,
             max_iterations: int = 2000) -> np.ndarray:
    """Local energy minimum near ``positions_angstrom`` (L-BFGS, tolerance in kJ/mol/nm),
    Angstrom. Deterministic on one CPU thread."""
    from openmm import LocalEnergyMinimizer, VerletIntegrator, unit

    ctx = make_context(system, VerletIntegrator(0.001))
    set_state(ctx, positions_angstrom)
    LocalEnergyMinimizer.minimize(ctx, tolerance * unit.kilojoule_per_mole / unit.nanometer,
                                  max_iterations)
    return read_state(ctx, labels=False)[0]
