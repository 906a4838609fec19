"""Liquid-water reference data: SPC/Fw Langevin MD in OpenMM (CPU platform, one thread).

Recipe: ``n_molecules`` waters on a cubic lattice with seeded random orientations in a cubic box
at ``density_g_cm3``, minimised once (``equilibrium.npz``). Every trajectory starts from that
structure with its own Maxwell-Boltzmann velocities, LangevinMiddle at ``temperature_k`` (friction
1/ps, 1 fs), PME with a real-space cutoff below half the box and the long-range dispersion
correction, and discards ``equilibration_ps``. Training and validation frames (10 fs apart) come
from the first ``n_trajectories`` trajectories, test frames from ``n_test_trajectories`` others;
one more contiguous trajectory is the reference for the RDF and diffusivity targets.

Each trajectory is cut into chunks of ``chunk_steps`` steps. A chunk builds a fresh OpenMM
context from the previous chunk's saved end positions and velocities (float64, exact) with its
own integrator seed ``openmm_seed(seed, job, chunk + 1)``, and is written atomically. An
uninterrupted run does the same, so a killed and resumed run gives identical frames.

Layout of ``<data_dir>/<system>/<system>-<hash>/`` (``system`` is ``water``, or ``water<N>`` for
another box): ``train.npz``, ``val.npz``, ``test.npz``, ``reference.npz`` (keys R, z, E, F, cell,
pbc; eV, Angstrom; cell [3, 3] rows are lattice vectors), ``system.json`` (with ``cell_angstrom``,
``pbc`` and ``molecule_index``), ``equilibrium.npz``, ``settings.json``, ``complete.json`` and
the chunks under ``work/``. Train/val/test positions are wrapped by molecule (whole molecules,
centres in the cell); reference positions are unwrapped (continuous), for the MSD. Every npz's
metadata states its ``positions`` convention, ``frame_interval_fs`` and ``molecule_index``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from stablejax._types import ProgressFn
from stablejax.data.frames import Frames, concatenate, make_frames
from stablejax.data.md_jobs import REFERENCE_JOB, Job
from stablejax.data.paths import resolve_data_dir
from stablejax.data.water_config import WaterConfig
from stablejax.errors import InputError
from stablejax.sharding import primary_first

log = logging.getLogger(__name__)

WRAPPED = "wrapped by molecule: whole molecules, geometric centres inside the cell"
UNWRAPPED = "unwrapped: continuous trajectory (molecules whole), for MSD and diffusivity"


def plan_water_jobs(cfg: WaterConfig) -> list[Job]:
    """Train/val trajectories, test trajectories and the reference trajectory, longest first."""
    n_eq = math.ceil(cfg.equilibration_ps * 1000 / cfg.timestep_fs / cfg.chunk_steps)
    per_pool = math.ceil((cfg.n_train + cfg.n_val) / cfg.n_trajectories)
    per_test = math.ceil(cfg.n_test / cfg.n_test_trajectories)
    jobs = [Job(k, f"traj{k:02d}", per_pool if k < cfg.n_trajectories else per_test,
                cfg.sample_every, n_eq)
            for k in range(cfg.n_trajectories + cfg.n_test_trajectories)]
    n_ref = max(round(cfg.reference_ps * 1000 / cfg.timestep_fs / cfg.reference_sample_every), 1)
    jobs.append(Job(REFERENCE_JOB, "reference", n_ref, cfg.reference_sample_every, n_eq))
    return sorted(jobs, key=lambda j: -(j.n_frames * j.sample_every))


def water_chunks(cfg: WaterConfig, job: Job) -> int:
    """Chunks of ``job``: equilibration chunks, then the kept ones."""
    per_chunk = cfg.chunk_steps // job.sample_every
    return job.n_eq_chunks + math.ceil(job.n_frames / per_chunk)


def water_chunk_path(root: Path, job: Job, c: int) -> Path:
    return root / "work" / job.name / f"chunk{c:05d}.npz"


def prepare_box(root: Path, cfg: WaterConfig) -> None:
    """The minimised lattice box, ``root/equilibrium.npz`` (z, R, cell, molecule_index)."""
    from stablejax.data.water_model import lattice_box, make_openmm_system, minimise, water_numbers
    from stablejax.io.npz import save_arrays

    path = root / "equilibrium.npz"
    if path.exists():
        return
    edge = cfg.edge_angstrom
    _, system = make_openmm_system(cfg.n_molecules, edge, cfg.cutoff, cfg.ewald_tolerance)
    R = minimise(system, lattice_box(cfg.n_molecules, edge, cfg.seed))
    z, mol = water_numbers(cfg.n_molecules)
    save_arrays(path, z=z, R=R, cell=edge * np.eye(3), molecule_index=mol)


def run_water_job(root: Path, cfg: WaterConfig, job: Job, on_chunk=None) -> None:
    """Run (or resume) one trajectory chunk by chunk; finished chunks are skipped."""
    os.environ["OMP_NUM_THREADS"] = "1"
    from stablejax.data.water_model import (
        langevin, make_context, make_openmm_system, openmm_seed, read_state, set_state,
    )
    from stablejax.io.npz import save_arrays

    _, system = make_openmm_system(cfg.n_molecules, cfg.edge_angstrom, cfg.cutoff,
                                   cfg.ewald_tolerance)
    positions, velocities = np.load(root / "equilibrium.npz")["R"], None
    n_total = water_chunks(cfg, job)
    start = 0
    for c in range(n_total - 1, -1, -1):  # resume after the last finished chunk
        path = water_chunk_path(root, job, c)
        if path.exists():
            with np.load(path) as d:
                positions, velocities = d["end_R"], d["end_V"]
            start = c + 1
            break
    per_chunk = cfg.chunk_steps // job.sample_every
    for c in range(start, n_total):
        t0 = time.process_time()
        integ = langevin(cfg.temperature_k, cfg.friction_per_ps, cfg.timestep_fs,
                         openmm_seed(cfg.seed, job.job_id, c + 1))
        ctx = make_context(system, integ)
        set_state(ctx, positions, velocities)
        if velocities is None:
            ctx.setVelocitiesToTemperature(cfg.temperature_k, openmm_seed(cfg.seed, job.job_id, 0))
        R, E, F = [], [], []
        if c < job.n_eq_chunks:
            integ.step(cfg.chunk_steps)
        else:
            n = min(per_chunk, job.n_frames - (c - job.n_eq_chunks) * per_chunk)
            for _ in range(n):
                integ.step(job.sample_every)
                r, e, f, _ = read_state(ctx)
                R.append(r), E.append(e), F.append(f)
        positions, _, _, velocities = read_state(ctx, labels=False)
        if not (np.isfinite(positions).all() and np.isfinite(np.asarray(E)).all()):
            raise RuntimeError(f"water {job.name} chunk {c}: OpenMM returned non-finite values")
        n_atoms = 3 * cfg.n_molecules
        save_arrays(water_chunk_path(root, job, c), R=np.asarray(R).reshape(-1, n_atoms, 3),
                    E=np.asarray(E, dtype=np.float64), F=np.asarray(F).reshape(-1, n_atoms, 3),
                    end_R=positions, end_V=velocities, cpu_s=np.float64(time.process_time() - t0))
        del ctx, integ
        if on_chunk is not None:
            on_chunk(job, c)


def load_water_job(root: Path, cfg: WaterConfig, job: Job) -> Frames:
    """The kept frames of a finished trajectory, unwrapped, with the cubic cell."""
    eq = np.load(root / "equilibrium.npz")
    chunks = [np.load(water_chunk_path(root, job, c))
              for c in range(job.n_eq_chunks, water_chunks(cfg, job))]
    R = np.concatenate([d["R"] for d in chunks])
    E = np.concatenate([d["E"] for d in chunks])
    F = np.concatenate([d["F"] for d in chunks])
    return make_frames(R, eq["z"], E, F, eq["cell"], (True, True, True),
                       source=f"{root}/work/{job.name}")


@primary_first
def generate_water(
    cfg: WaterConfig,
    data_dir: str | Path | None = None,
    *,
    n_workers: int | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Generate (or resume, or find) the water reference data set; returns its directory.

    Args:
      cfg: the settings.
      data_dir: cache root (:func:`stablejax.data.paths.resolve_data_dir`).
      n_workers: processes running trajectories in parallel (default: all cores, at most the
        number of trajectories); 1 runs in this process. OpenMM uses one thread in each.
      progress: ``progress(done_chunks, total_chunks, info)``, called as chunks finish.

    Raises:
      InputError: ``n_workers`` < 1.
    """
    if n_workers is not None and (isinstance(n_workers, bool) or n_workers < 1):
        raise InputError(f"n_workers (--workers) must be >= 1, got {n_workers!r}")
    root = resolve_data_dir(data_dir) / cfg.system / f"{cfg.system}-{cfg.digest()}"
    if (root / "complete.json").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps({**cfg.record(), "digest": cfg.digest()},
                                                   indent=1))
    t0 = time.perf_counter()
    prepare_box(root, cfg)
    jobs = plan_water_jobs(cfg)
    total = sum(water_chunks(cfg, j) for j in jobs)

    def count_done() -> int:
        return sum(water_chunk_path(root, j, c).exists()
                   for j in jobs for c in range(water_chunks(cfg, j)))

    info = {"stage": "openmm-md", "system": cfg.system}
    if progress:
        progress(count_done(), total, info)
    n_workers = n_workers or min(os.cpu_count() or 1, len(jobs))
    if n_workers == 1:
        for job in jobs:
            run_water_job(root, cfg, job,
                          (lambda j, c: progress(count_done(), total, info)) if progress else None)
    else:
        from stablejax.data.generate import _run_pool

        _run_pool(root, cfg, jobs, n_workers,
                  lambda: progress(count_done(), total, info) if progress else None,
                  run_job=run_water_job)
    t_md = time.perf_counter() - t0
    _assemble(root, cfg, jobs)
    cpu_s = sum(float(np.load(water_chunk_path(root, j, c))["cpu_s"])
                for j in jobs for c in range(water_chunks(cfg, j)))
    simulated_ps = sum(
        (j.n_eq_chunks * cfg.chunk_steps + j.n_frames * j.sample_every) for j in jobs
    ) * cfg.timestep_fs / 1000
    from stablejax.io.run_dir import write_json

    write_json(root / "complete.json", {
        "wall_s": time.perf_counter() - t0, "md_wall_s": t_md, "n_workers": n_workers,
        "simulated_ps": simulated_ps, "md_cpu_s": cpu_s,
        "ps_per_cpu_s": simulated_ps / cpu_s if cpu_s > 0 else None,
    })
    return root


def _assemble(root: Path, cfg: WaterConfig, jobs: list[Job]) -> None:
    from stablejax.data.periodic import wrap_by_molecule
    from stablejax.data.systems import System
    from stablejax.io.npz import write_npz

    eq = np.load(root / "equilibrium.npz")
    cell, mol = eq["cell"], eq["molecule_index"]
    by_id = {j.job_id: j for j in jobs}
    n_pool, n_all = cfg.n_trajectories, cfg.n_trajectories + cfg.n_test_trajectories
    pool = concatenate([load_water_job(root, cfg, by_id[k]) for k in range(n_pool)])
    test_pool = concatenate([load_water_job(root, cfg, by_id[k]) for k in range(n_pool, n_all)])
    rng = np.random.default_rng([cfg.seed, 7])
    perm = rng.permutation(pool.n_frames)
    splits = {
        "train": pool[np.sort(perm[: cfg.n_train])],
        "val": pool[np.sort(perm[cfg.n_train: cfg.n_train + cfg.n_val])],
        "test": test_pool[np.sort(rng.permutation(test_pool.n_frames)[: cfg.n_test])],
    }
    meta = {"method": "SPC/Fw (Wu, Tepper, Voth, J. Chem. Phys. 124, 024503, 2006)",
            "code": "OpenMM CPU platform, 1 thread", "versions": _versions(),
            "settings": cfg.record(), "molecule_index": mol.tolist(),
            "cell_convention": "rows are lattice vectors, Angstrom"}
    for name, frames in splits.items():
        frames = frames.replace(positions=wrap_by_molecule(frames.positions, cell, mol))
        write_npz(root / f"{name}.npz", frames,
                  {**meta, "split": name, "positions": WRAPPED,
                   "frame_interval_fs": cfg.sample_every * cfg.timestep_fs})
    write_npz(root / "reference.npz", load_water_job(root, cfg, by_id[REFERENCE_JOB]),
              {**meta, "split": "reference", "positions": UNWRAPPED,
               "frame_interval_fs": cfg.reference_sample_every * cfg.timestep_fs})
    bonds = np.stack([np.repeat(3 * np.arange(cfg.n_molecules), 2),
                      (3 * np.arange(cfg.n_molecules)[:, None] + [1, 2]).reshape(-1)], axis=1)
    R = splits["train"].positions
    lengths = np.linalg.norm(R[:, bonds[:, 1]] - R[:, bonds[:, 0]], axis=-1).mean(axis=0)
    System(cfg.system, eq["z"].astype(np.int32), eq["R"], bonds.astype(np.int32), lengths,
           cfg.temperature_k, cfg.timestep_fs, cell=cell, pbc=(True, True, True),
           molecule_index=mol).save(root / "system.json")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("stablejax", "openmm", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
