"""Trajectory jobs of the reference data generation (see ``stablejax.data.generate``).

A :class:`Job` is one GFN2-xTB Langevin trajectory, cut into chunk files of ``chunk_frames``
frames under ``<root>/work/<job name>/``. :func:`run_trajectory` is the per-trajectory worker
(run in this process or in a spawned pool worker); it resumes after the last finished chunk, and
every chunk has its own random stream, so a resumed run gives the frames of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stablejax.data.frames import Frames, make_frames

if TYPE_CHECKING:
    from stablejax.data.generate import GenerationConfig

REFERENCE_JOB = 1000  # job id of the reference trajectory in the random streams


@dataclasses.dataclass(frozen=True)
class Job:
    """One trajectory: ``n_eq_chunks`` discarded chunks, then ``n_frames`` kept frames."""

    job_id: int
    name: str
    n_frames: int
    sample_every: int
    n_eq_chunks: int


def plan_jobs(cfg: GenerationConfig) -> list[Job]:
    """The trajectories of a data set: the train/val pool, the test pool and the reference
    trajectory, longest first."""
    n_pool = cfg.n_trajectories - cfg.n_test_trajectories
    per_pool = math.ceil((cfg.n_train + cfg.n_val) / n_pool)
    per_test = math.ceil(cfg.n_test / cfg.n_test_trajectories)
    eq_steps = round(cfg.equilibration_ps * 1000 / cfg.timestep_fs)
    jobs = [
        Job(
            job_id=k,
            name=f"traj{k:02d}",
            n_frames=per_pool if k < n_pool else per_test,
            sample_every=cfg.sample_every,
            n_eq_chunks=math.ceil(eq_steps / (cfg.chunk_frames * cfg.sample_every)),
        )
        for k in range(cfg.n_trajectories)
    ]
    n_ref = round(cfg.reference_ps * 1000 / cfg.timestep_fs / cfg.reference_sample_every)
    jobs.append(
        Job(
            job_id=REFERENCE_JOB,
            name="reference",
            n_frames=max(n_ref, 1),
            sample_every=cfg.reference_sample_every,
            n_eq_chunks=math.ceil(eq_steps / (cfg.chunk_frames * cfg.reference_sample_every)),
        )
    )
    # Longest first, so the reference trajectory does not end up alone at the end.
    return sorted(jobs, key=lambda j: -(j.n_frames * j.sample_every))


def n_chunks(job: Job, chunk_frames: int) -> int:
    """Chunks of ``job``: the discarded equilibration chunks, then the kept ones."""
    return job.n_eq_chunks + math.ceil(job.n_frames / chunk_frames)


def chunk_path(root: Path, job: Job, c: int) -> Path:
    """The file of chunk ``c`` of ``job`` under the data set directory ``root``."""
    return root / "work" / job.name / f"chunk{c:05d}.npz"


def run_trajectory(root: Path, cfg: GenerationConfig, job: Job, on_chunk=None) -> None:
    """Run (or resume) one trajectory chunk by chunk; finished chunks are skipped."""
    from stablejax.io.npz import save_arrays

    os.environ["OMP_NUM_THREADS"] = "1"
    from ase import Atoms, units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

    from stablejax.data.xtb import ase_calculator

    eq = np.load(root / "equilibrium.npz")
    z, positions = eq["z"], eq["R"]
    n_total = n_chunks(job, cfg.chunk_frames)
    velocities = None
    start = 0
    for c in range(n_total - 1, -1, -1):  # resume after the last finished chunk
        path = chunk_path(root, job, c)
        if path.exists():
            with np.load(path) as d:
                positions, velocities = d["end_R"], d["end_V"]
            start = c + 1
            break
    for c in range(start, n_total):
        atoms = Atoms(numbers=z, positions=positions)
        if velocities is None:  # first chunk: Maxwell-Boltzmann, no net momentum/rotation
            rng = np.random.default_rng([cfg.seed, job.job_id, 0])
            thermalize_momenta(atoms, temperature_K=cfg.temperature_k, rng=rng)
            Stationary(atoms)
            ZeroRotation(atoms)
        else:
            atoms.set_velocities(velocities)
        atoms.set_constraint(FixCom())  # no centre-of-mass drift (ASE's recommended way)
        atoms.calc = ase_calculator(cfg.method, charge=cfg.charge,
                                    multiplicity=cfg.multiplicity)
        md = Langevin(
            atoms,
            timestep=cfg.timestep_fs * units.fs,
            temperature_K=cfg.temperature_k,
            friction=cfg.friction_per_fs / units.fs,
            fixcm=False,
            rng=np.random.default_rng([cfg.seed, job.job_id, c + 1]),
        )
        keep = c >= job.n_eq_chunks
        n_frames = cfg.chunk_frames
        if keep:
            n_frames = min(cfg.chunk_frames, job.n_frames - (c - job.n_eq_chunks) * cfg.chunk_frames)
        R, E, F, V = [], [], [], []
        for _ in range(n_frames):
            md.run(job.sample_every)
            if keep:
                R.append(atoms.get_positions())
                E.append(atoms.get_potential_energy())
                F.append(atoms.get_forces(apply_constraint=False))  # raw GFN2 forces
                V.append(atoms.get_velocities() / (units.Ang / units.fs))  # Angstrom/fs
        positions, velocities = atoms.get_positions(), atoms.get_velocities()
        if keep and not np.isfinite(np.asarray(E)).all():
            raise RuntimeError(f"{job.name} chunk {c}: GFN2 returned non-finite energies")
        save_arrays(
            chunk_path(root, job, c),
            R=np.asarray(R).reshape(-1, len(z), 3),
            E=np.asarray(E, dtype=np.float64),
            F=np.asarray(F).reshape(-1, len(z), 3),
            V=np.asarray(V).reshape(-1, len(z), 3),
            end_R=positions,
            end_V=velocities,
        )
        if on_chunk is not None:
            on_chunk(job, c)


def load_job(root: Path, cfg: GenerationConfig, job: Job, z: np.ndarray) -> Frames:
    """The kept frames of a finished ``job`` (equilibration chunks dropped); ``z`` [n_atoms]."""
    chunks = [
        np.load(chunk_path(root, job, c))
        for c in range(job.n_eq_chunks, n_chunks(job, cfg.chunk_frames))
    ]
    R = np.concatenate([d["R"] for d in chunks])
    E = np.concatenate([d["E"] for d in chunks])
    F = np.concatenate([d["F"] for d in chunks])
    return make_frames(R, z, E, F, source=f"{root}/work/{job.name}")
