"""Seconds per GFN2-xTB energy+force call (tblite, one thread) for the built-in molecules.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gfn2.py

Prints one JSON line per molecule: the cost of a call inside MD (ASE calculator, SCF restarted
from the previous step, what data generation pays) and of a cold single point (tblite directly).
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def main(n_md_steps: int = 200, n_cold: int = 20) -> None:
    from ase import Atoms, units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    from stablejax.data.structures import embed_smiles
    from stablejax.data.systems import get_molecule
    from stablejax.data.xtb import ase_calculator, energy_forces

    for name in ("ethanol", "aspirin", "ac-ala3-nhme"):
        spec = get_molecule(name)
        z, R = embed_smiles(spec.smiles, seed=0)
        atoms = Atoms(numbers=z, positions=R)
        atoms.calc = ase_calculator()
        thermalize_momenta(atoms, temperature_K=spec.temperature_k,
                                     rng=np.random.default_rng(0))
        md = Langevin(atoms, timestep=spec.timestep_fs * units.fs, temperature_K=spec.temperature_k,
                      friction=0.01 / units.fs, fixcm=False, rng=np.random.default_rng(1))
        md.run(20)  # warm-up
        t = time.perf_counter()
        md.run(n_md_steps)
        md_s = (time.perf_counter() - t) / n_md_steps
        t = time.perf_counter()
        for i in range(n_cold):
            energy_forces(z, atoms.get_positions())
        cold_s = (time.perf_counter() - t) / n_cold
        print(json.dumps({"bench": "gfn2_call", "system": name, "n_atoms": int(len(z)),
                          "md_step_s": round(md_s, 5), "cold_single_point_s": round(cold_s, 5),
                          "omp_threads": os.environ.get("OMP_NUM_THREADS")}), flush=True)


if __name__ == "__main__":
    main()
