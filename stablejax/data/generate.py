"""Offline quantum reference data: GFN2-xTB (tblite) Langevin MD of a molecule.

Recipe (docs/reference-data.md): RDKit structure from SMILES, GFN2 optimisation, then
``n_trajectories`` independent ASE Langevin trajectories (different seeds) at the molecule's
temperature (500 K for aspirin and Ac-Ala3-NHMe), timestep 0.5 fs, friction 0.01/fs, with an
equilibration that is discarded; frames every ``sample_every`` steps. Train and validation frames
come from the first ``n_trajectories - n_test_trajectories`` trajectories, test frames from the
others, so test frames share no trajectory segment with training. One more long trajectory, the
*reference trajectory*, gives observable targets (h(r), bond-length distributions).

Every trajectory is cut into chunks of ``chunk_frames`` frames. A chunk starts from the saved end
state of the previous one, with a fresh ASE Langevin integrator, a fresh tblite calculator and
its own random stream ``default_rng([seed, trajectory, chunk])``; it is written atomically when
done. So an interrupted run keeps its finished chunks, and a resumed run produces exactly the
frames of an uninterrupted one. The output directory is keyed by a hash of the settings.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from stablejax._types import ProgressFn
from stablejax.data.frames import concatenate
from stablejax.data.md_jobs import (  # noqa: F401  (run_trajectory re-exported)
    REFERENCE_JOB,
    Job,
    chunk_path,
    load_job,
    n_chunks,
    plan_jobs,
    run_trajectory,
)
from stablejax.data.paths import resolve_data_dir
from stablejax.data.systems import get_molecule, make_system

# io/ sits above data/ (it builds ``Frames``): data imports io only inside functions.

log = logging.getLogger(__name__)

#: Sizes per scale (docs/method.md §10.4, docs/reference-data.md): train, val, test frames;
#: reference trajectory (ps); equilibration per trajectory (ps).
SCALES = {
    "demo": dict(n_train=200, n_val=50, n_test=100, reference_ps=2.0, equilibration_ps=0.5),
    "cpu": dict(n_train=950, n_val=50, n_test=500, reference_ps=20.0, equilibration_ps=2.0),
    "paper": dict(n_train=950, n_val=50, n_test=1000, reference_ps=100.0, equilibration_ps=2.0),
}
_SYSTEM_SCALES = {
    ("ac-ala3-nhme", "cpu"): dict(n_train=1000, n_val=100, n_test=300, reference_ps=10.0),
    ("ac-ala3-nhme", "paper"): dict(n_train=14894, n_val=2127, n_test=1000),
}


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Settings of a generated data set; all of them enter the cache hash.

    Attributes:
      system: built-in molecule name (``stablejax.data.systems.BUILTIN_MOLECULES``).
      n_train, n_val, n_test: frames per split.
      reference_ps: length of the reference trajectory, ps.
      equilibration_ps: discarded start of every trajectory, ps.
      temperature_k: K (None: the molecule's default, 500 K for aspirin/Ac-Ala3-NHMe).
      timestep_fs: fs (None: the molecule's default, 0.5 fs).
      friction_per_fs: Langevin friction, 1/fs.
      sample_every: MD steps between training-pool frames (20 = 10 fs at 0.5 fs).
      reference_sample_every: MD steps between reference-trajectory frames.
      n_trajectories: independent training-pool trajectories; the last
        ``n_test_trajectories`` of them give the test split.
      chunk_frames: frames per resumable chunk.
      seed: seed of everything (structure embedding, velocities, noise, splits).
    """

    system: str
    n_train: int = 200
    n_val: int = 50
    n_test: int = 100
    reference_ps: float = 2.0
    equilibration_ps: float = 2.0
    temperature_k: float | None = None
    timestep_fs: float | None = None
    friction_per_fs: float = 0.01
    sample_every: int = 20
    reference_sample_every: int = 10
    n_trajectories: int = 8
    n_test_trajectories: int = 2
    chunk_frames: int = 25
    seed: int = 0
    method: str = "GFN2-xTB"

    def __post_init__(self):
        spec = get_molecule(self.system)  # raises for an unknown system
        object.__setattr__(self, "system", spec.name)
        if self.temperature_k is None:
            object.__setattr__(self, "temperature_k", spec.temperature_k)
        if self.timestep_fs is None:
            object.__setattr__(self, "timestep_fs", spec.timestep_fs)
        for name in ("n_train", "n_val", "n_test", "sample_every", "reference_sample_every",
                     "chunk_frames"):
            if getattr(self, name) < (1 if name != "n_val" else 0):
                raise ValueError(f"GenerationConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.n_test_trajectories < self.n_trajectories:
            raise ValueError(
                "GenerationConfig.n_test_trajectories must be in (0, n_trajectories), got "
                f"{self.n_test_trajectories} of {self.n_trajectories}"
            )
        for name in ("reference_ps", "equilibration_ps", "temperature_k", "timestep_fs",
                     "friction_per_fs"):
            if getattr(self, name) < 0 or (name != "equilibration_ps" and getattr(self, name) == 0):
                raise ValueError(f"GenerationConfig.{name} must be > 0, got {getattr(self, name)}")

    @property
    def smiles(self) -> str:
        return get_molecule(self.system).smiles

    def digest(self) -> str:
        """12-hex hash of the settings (and the SMILES), naming the cache directory."""
        blob = json.dumps({**dataclasses.asdict(self), "smiles": self.smiles}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def scale_config(system: str, scale: str = "demo", **overrides: Any) -> GenerationConfig:
    """The :class:`GenerationConfig` of a ``--scale {demo,cpu,paper}`` preset, with overrides."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    name = get_molecule(system).name
    sizes = {**SCALES[scale], **_SYSTEM_SCALES.get((name, scale), {})}
    return GenerationConfig(system=name, **{**sizes, **overrides})


def _prepare_structure(root: Path, cfg: GenerationConfig) -> None:
    from stablejax.io.npz import save_arrays

    path = root / "equilibrium.npz"
    if path.exists():
        return
    from stablejax.data.structures import embed_smiles, optimise_gfn2

    z, R0 = embed_smiles(cfg.smiles, seed=cfg.seed)
    R = optimise_gfn2(z, R0)
    save_arrays(path, z=z, R=R)


def generate_dataset(
    cfg: GenerationConfig,
    data_dir: str | Path | None = None,
    *,
    n_workers: int | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Generate (or resume, or just find) a reference data set; returns its directory.

    The directory ``<data_dir>/<system>/<system>-<hash>/`` holds ``train.npz``, ``val.npz``,
    ``test.npz`` (labelled frames, eV / Angstrom), ``reference.npz`` (the reference trajectory),
    ``system.json`` (equilibrium structure, bonds, reference bond lengths), ``settings.json`` and
    ``complete.json`` (provenance and timings). ``data_dir``: see
    :func:`stablejax.data.paths.resolve_data_dir`.

    Args:
      cfg: the settings.
      data_dir: cache root.
      n_workers: processes running trajectories in parallel (default: all cores, at most the
        number of trajectories); 1 runs in this process. tblite runs single-threaded in each.
      progress: ``progress(done_chunks, total_chunks, info)``, called as chunks finish.
    """
    root = resolve_data_dir(data_dir) / cfg.system / f"{cfg.system}-{cfg.digest()}"
    if (root / "complete.json").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    settings = {**dataclasses.asdict(cfg), "smiles": cfg.smiles, "digest": cfg.digest()}
    (root / "settings.json").write_text(json.dumps(settings, indent=1))
    t0 = time.perf_counter()
    _prepare_structure(root, cfg)

    jobs = plan_jobs(cfg)
    total = sum(n_chunks(j, cfg.chunk_frames) for j in jobs)

    def count_done() -> int:
        return sum(
            1 for j in jobs for c in range(n_chunks(j, cfg.chunk_frames))
            if chunk_path(root, j, c).exists()
        )

    n_workers = n_workers or min(os.cpu_count() or 1, len(jobs))
    info = {"stage": "gfn2-md", "system": cfg.system}
    if progress:
        progress(count_done(), total, info)
    if n_workers == 1:
        done = count_done()

        def on_chunk(job, c):
            nonlocal done
            done += 1
            if progress:
                progress(done, total, info)

        for job in jobs:
            run_trajectory(root, cfg, job, on_chunk)
    else:
        _run_pool(root, cfg, jobs, n_workers, lambda: progress(count_done(), total, info)
                  if progress else None)
    t_md = time.perf_counter() - t0
    _assemble(root, cfg, jobs)
    n_calls = sum(
        (j.n_eq_chunks * cfg.chunk_frames + j.n_frames) * j.sample_every for j in jobs
    )
    complete = {"wall_s": time.perf_counter() - t0, "md_wall_s": t_md,
                "gfn2_calls": n_calls, "n_workers": n_workers}
    from stablejax.io.run_dir import write_json

    write_json(root / "complete.json", complete)  # atomic: its presence marks a finished set
    return root


def _end_with_parent() -> None:
    """Pool worker initialiser: ask Linux to send SIGTERM to this worker when its parent dies
    (SIGKILL or SIGTERM of ``data generate`` included), so no orphaned worker keeps running.
    Elsewhere a no-op (an interrupted parent still terminates its workers explicitly)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call: end now
        os._exit(1)


def _run_pool(root, cfg, jobs, n_workers, poll) -> None:
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold JAX threads
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers before tblite loads
    try:
        with cf.ProcessPoolExecutor(n_workers, mp_context=ctx,
                                    initializer=_end_with_parent) as pool:
            futures = [pool.submit(run_trajectory, root, cfg, job) for job in jobs]
            try:
                pending = set(futures)
                while pending:
                    finished, pending = cf.wait(pending, timeout=1.0)
                    for f in finished:
                        f.result()  # re-raise a worker's error here
                    poll()
            except BaseException:
                # Do not wait for running trajectories (each resumes from its last chunk).
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                raise
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


def _assemble(root: Path, cfg: GenerationConfig, jobs: list[Job]) -> None:
    from stablejax.io.npz import write_npz

    z = np.load(root / "equilibrium.npz")["z"]
    eq = np.load(root / "equilibrium.npz")["R"]
    by_id = {j.job_id: j for j in jobs}
    n_pool = cfg.n_trajectories - cfg.n_test_trajectories
    pool = concatenate([load_job(root, cfg, by_id[k], z) for k in range(n_pool)])
    test_pool = concatenate(
        [load_job(root, cfg, by_id[k], z) for k in range(n_pool, cfg.n_trajectories)]
    )
    rng = np.random.default_rng([cfg.seed, 7])
    perm = rng.permutation(pool.n_frames)
    train = pool[np.sort(perm[: cfg.n_train])]
    val = pool[np.sort(perm[cfg.n_train : cfg.n_train + cfg.n_val])]
    test = test_pool[np.sort(rng.permutation(test_pool.n_frames)[: cfg.n_test])]
    reference = load_job(root, cfg, by_id[REFERENCE_JOB], z)
    meta = {
        "method": cfg.method,
        "code": "tblite via ASE",
        "versions": _versions(),
        "settings": {**dataclasses.asdict(cfg), "smiles": cfg.smiles},
    }
    for name, frames in (("train", train), ("val", val), ("test", test)):
        write_npz(root / f"{name}.npz", frames, {**meta, "split": name})
    ref_meta = {**meta, "split": "reference",
                "frame_interval_fs": cfg.reference_sample_every * cfg.timestep_fs}
    write_npz(root / "reference.npz", reference, ref_meta)
    system = make_system(
        cfg.system, z, eq, train.positions, temperature_k=cfg.temperature_k,
        timestep_fs=cfg.timestep_fs, smiles=cfg.smiles,
    )
    system.save(root / "system.json")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("stablejax", "tblite", "ase", "rdkit", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
