"""The SPC/Fw water reference data: generation cost and water-likeness against the literature.

Generates (or finds in the cache) the water data set of a scale, then prints one JSON line:
mean O-H length and H-O-H angle over the training frames, O-O RDF first peak (reference
trajectory, dr 0.02 A, 0.1 A moving average), O self-diffusion from the unwrapped reference
trajectory (MSD over all time origins, least-squares slope over lags ``--fit-from-ps`` ..
``--fit-to-ps``, D = slope / 6, in 1e-9 m2/s) raw and with the Yeh-Hummer finite-size correction
D + xi kT / (6 pi eta L) (xi = 2.837297, eta = ``--viscosity-mpa-s``), generation time and
OpenMM speed. Literature for SPC/Fw (Wu, Tepper, Voth 2006): O-H 1.03 A, H-O-H 107.7 deg,
D 2.3e-9 m2/s; g_OO first peak of liquid water about 2.7-2.8 A.

Usage: python benchmarks/water_reference.py [--scale demo] [--molecules 64] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from stablejax.data import load_dataset  # noqa: E402
from stablejax.data.water import generate_water  # noqa: E402
from stablejax.data.water_config import water_config  # noqa: E402
from stablejax.observables import bond_lengths, diffusivity, partial_rdfs  # noqa: E402
from stablejax.observables.dynamics import ANGSTROM2_PER_FS_IN_1E9_M2_PER_S  # noqa: E402

YEH_HUMMER_XI = 2.837297
BOLTZMANN_J_PER_K = 1.380649e-23


def hoh_angles_deg(R: np.ndarray) -> np.ndarray:
    """H-O-H angles [frames, molecules] of whole molecules stored O, H, H, degrees."""
    m = R.reshape(R.shape[0], -1, 3, 3)
    a, b = m[:, :, 1] - m[:, :, 0], m[:, :, 2] - m[:, :, 0]
    cos = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def openmm_speed(cfg, root, steps: int = 2000) -> float:
    """ps of SPC/Fw MD per CPU-second on one thread, timed after a 100-step warm-up."""
    from stablejax.data.water_model import langevin, make_context, make_openmm_system, set_state

    _, system = make_openmm_system(cfg.n_molecules, cfg.edge_angstrom, cfg.cutoff,
                                   cfg.ewald_tolerance)
    integ = langevin(cfg.temperature_k, cfg.friction_per_ps, cfg.timestep_fs, 1)
    ctx = make_context(system, integ)
    set_state(ctx, np.load(root / "equilibrium.npz")["R"])
    ctx.setVelocitiesToTemperature(cfg.temperature_k, 1)
    integ.step(100)
    t0 = time.process_time()
    integ.step(steps)
    return steps * cfg.timestep_fs / 1000 / (time.process_time() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="demo", choices=("demo", "cpu", "paper"))
    p.add_argument("--molecules", type=int, default=64)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--fit-from-ps", type=float, default=2.0)
    p.add_argument("--fit-to-ps", type=float, default=10.0)
    p.add_argument("--viscosity-mpa-s", type=float, default=0.85,
                   help="shear viscosity for Yeh-Hummer (experiment at 300 K: 0.85 mPa s)")
    a = p.parse_args()
    cfg = water_config(a.scale, n_molecules=a.molecules)
    root = generate_water(cfg, a.data_dir, n_workers=a.workers)
    complete = json.loads((root / "complete.json").read_text())
    ds = load_dataset(root)
    z, cell = ds.system.atomic_numbers, ds.system.cell
    bonds = ds.system.bonds
    oh = np.asarray(bond_lengths(ds.train.positions, bonds, cell=cell))
    ang = hoh_angles_deg(ds.train.positions)

    ref = ds.reference.positions
    r_max = min(6.0, 0.5 * float(np.min(np.diag(cell))) - 0.01)
    dr = 0.02
    r_max = dr * np.floor(r_max / dr)
    g = np.asarray(partial_rdfs(ref, z, cell, pairs=((8, 8),), r_max=r_max, dr=dr))[0]
    smooth = np.convolve(g, np.ones(5) / 5, mode="same")
    centres = (np.arange(len(g)) + 0.5) * dr
    first = int(np.argmax(np.where(centres < 3.2, smooth, -np.inf)))

    dt = ds.reference_interval_fs
    lag_lo, lag_hi = round(a.fit_from_ps * 1000 / dt), round(a.fit_to_ps * 1000 / dt)
    oxygens = jax.numpy.asarray(ref[:, z == 8])  # msd indexes with traced lags: a jax array
    d_raw = float(diffusivity(oxygens, dt, max_lag=lag_hi, method="fit", fit_start_lag=lag_lo))
    d_raw *= ANGSTROM2_PER_FS_IN_1E9_M2_PER_S
    L_m = float(cell[0, 0]) * 1e-10
    yh = YEH_HUMMER_XI * BOLTZMANN_J_PER_K * cfg.temperature_k / (
        6 * np.pi * a.viscosity_mpa_s * 1e-3 * L_m) * 1e9
    out = {
        "bench": "water_reference", "scale": a.scale, "n_molecules": cfg.n_molecules,
        "n_atoms": int(len(z)), "edge_angstrom": round(float(cell[0, 0]), 4),
        "cutoff_angstrom": cfg.cutoff,
        "frames": {k: getattr(ds, k).n_frames for k in ("train", "val", "test", "reference")},
        "reference_ps": cfg.reference_ps, "reference_interval_fs": dt,
        "oh_mean_angstrom": round(float(oh.mean()), 4), "oh_std_angstrom": round(float(oh.std()), 4),
        "hoh_mean_deg": round(float(ang.mean()), 2), "hoh_std_deg": round(float(ang.std()), 2),
        "goo_first_peak_angstrom": round(float(centres[first]), 3),
        "goo_first_peak_height": round(float(smooth[first]), 2),
        "rdf_frames": int(ref.shape[0]),
        "d_o_raw_1e9_m2_s": round(d_raw, 3),
        "d_o_yeh_hummer_1e9_m2_s": round(d_raw + yh, 3),
        "yeh_hummer_correction_1e9_m2_s": round(yh, 3),
        "msd_fit_lags_ps": [a.fit_from_ps, a.fit_to_ps],
        "generation_wall_s": round(complete["wall_s"], 1),
        "generation_workers": complete["n_workers"],
        "simulated_ps": complete["simulated_ps"],
        "openmm_ps_per_cpu_s_generation": round(complete["ps_per_cpu_s"], 2),
        "openmm_ps_per_cpu_s": round(openmm_speed(cfg, root), 2),
        "literature": {"oh_angstrom": 1.03, "hoh_deg": 107.7, "goo_peak_angstrom": [2.7, 2.8],
                       "d_o_1e9_m2_s": 2.3},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
