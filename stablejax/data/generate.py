"""Offline quantum reference data: GFN2-xTB (tblite) Langevin MD of a molecule.

Recipe (docs/reference-data.md): RDKit structure from SMILES (or the user's 3-D structure
file), GFN2 optimisation with a check that it kept the input's bonds, then ``n_trajectories``
independent ASE Langevin trajectories (different seeds) at the molecule's temperature (500 K
for aspirin, Ac-Ala3-NHMe and by default the user's molecules), timestep 0.5 fs, friction
0.01/fs, with an equilibration that is discarded; frames every ``sample_every`` steps. Train and
validation frames come from the first ``n_trajectories - n_test_trajectories`` trajectories, test
frames from the others, so test frames share no trajectory segment with training. One more long
trajectory, the *reference trajectory*, gives observable targets (h(r), bond-length
distributions).

Every trajectory is cut into chunks of ``chunk_frames`` frames. A chunk starts from the saved end
state of the previous one, with a fresh ASE Langevin integrator, a fresh tblite calculator and
its own random stream ``default_rng([seed, trajectory, chunk])``; it is written atomically when
done. So an interrupted run keeps its finished chunks, and a resumed run produces exactly the
frames of an uninterrupted one. The output directory is keyed by a hash of the settings.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

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
from stablejax.data.gen_config import SCALES, GenerationConfig, scale_config  # noqa: F401
from stablejax.data.molecule import check_topology
from stablejax.data.paths import resolve_data_dir
from stablejax.data.systems import make_system
from stablejax.errors import InputError
from stablejax.sharding import primary_first

# io/ sits above data/ (it builds ``Frames``): data imports io only inside functions.

log = logging.getLogger(__name__)


def _prepare_structure(root: Path, cfg: GenerationConfig) -> None:
    """The GFN2-optimised structure, ``root/equilibrium.npz``, once its bonds are checked."""
    from stablejax.io.npz import save_arrays

    path = root / "equilibrium.npz"
    if path.exists():
        return
    from stablejax.data.structures import embed_smiles, optimise_gfn2, smiles_bonds

    if cfg.structure is not None:
        z, R0, expected = cfg.structure.arrays()
        source = f"{cfg.structure.source or 'structure'} (bonds from {cfg.structure.bonds_from})"
    else:
        z, R0 = embed_smiles(cfg.smiles, seed=cfg.seed)
        expected, source = smiles_bonds(cfg.smiles), f"SMILES {cfg.smiles!r}"
    R = optimise_gfn2(z, R0, charge=cfg.charge, multiplicity=cfg.multiplicity)
    check_topology(z, R, expected, source)
    save_arrays(path, z=z, R=R)


@primary_first
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
      n_workers: processes running trajectories in parallel (default None: all cores, at most
        the number of trajectories); 1 runs in this process. tblite runs single-threaded in each.
      progress: ``progress(done_chunks, total_chunks, info)``, called as chunks finish.

    Raises:
      InputError: ``n_workers`` < 1; the optimised structure's bonds differ from the input's
        (:func:`stablejax.data.molecule.check_topology`; nothing is kept then).
    """
    if n_workers is not None and (isinstance(n_workers, bool) or n_workers < 1):
        raise InputError(f"n_workers (--workers) must be >= 1 (or None for all cores), got "
                         f"{n_workers!r}")
    root = resolve_data_dir(data_dir) / cfg.system / f"{cfg.system}-{cfg.digest()}"
    if (root / "complete.json").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    settings = {**cfg.record(), "digest": cfg.digest()}
    (root / "settings.json").write_text(json.dumps(settings, indent=1))
    t0 = time.perf_counter()
    try:
        _prepare_structure(root, cfg)
    except InputError:
        _remove_if_only_settings(root)
        raise

    jobs = plan_jobs(cfg)
    total = sum(n_chunks(j, cfg.chunk_frames) for j in jobs)

    def count_done() -> int:
        return sum(
            1 for j in jobs for c in range(n_chunks(j, cfg.chunk_frames))
            if chunk_path(root, j, c).exists()
        )

    if n_workers is None:
        n_workers = min(os.cpu_count() or 1, len(jobs))
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


def _remove_if_only_settings(root: Path) -> None:
    """Remove a data set directory (and its empty parent) that holds only settings.json."""
    if [p.name for p in root.iterdir()] == ["settings.json"]:
        (root / "settings.json").unlink()
        root.rmdir()
        try:
            root.parent.rmdir()
        except OSError:  # not empty: other data sets of the molecule
            pass


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


def _run_pool(root, cfg, jobs, n_workers, poll, run_job=run_trajectory) -> None:
    """Run ``run_job(root, cfg, job)`` for every job in ``n_workers`` spawned processes that
    end with this one, calling ``poll()`` about once a second; on any error or interrupt the
    running workers are terminated (each job resumes from its last finished chunk)."""
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold JAX threads
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers before tblite loads
    try:
        with cf.ProcessPoolExecutor(n_workers, mp_context=ctx,
                                    initializer=_end_with_parent) as pool:
            futures = [pool.submit(run_job, root, cfg, job) for job in jobs]
            try:
                pending = set(futures)
                while pending:
                    finished, pending = cf.wait(pending, timeout=1.0)
                    for f in finished:
                        f.result()  # re-raise a worker's error here
                    poll()
            except BaseException:
                # Do not wait for running trajectories (each resumes from its last chunk).
                procs = list((getattr(pool, "_processes", None) or {}).values())
                pool.shutdown(wait=False, cancel_futures=True)  # sets pool._processes to None
                for proc in procs:
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
        "settings": cfg.record(),
    }
    for name, frames in (("train", train), ("val", val), ("test", test)):
        write_npz(root / f"{name}.npz", frames, {**meta, "split": name})
    ref_meta = {**meta, "split": "reference",
                "frame_interval_fs": cfg.reference_sample_every * cfg.timestep_fs}
    write_npz(root / "reference.npz", reference, ref_meta)
    system = make_system(
        cfg.system, z, eq, train.positions, temperature_k=cfg.temperature_k,
        timestep_fs=cfg.timestep_fs, smiles=cfg.smiles, charge=cfg.charge,
        multiplicity=cfg.multiplicity,
        structure_sha256="" if cfg.structure is None else cfg.structure.sha256(),
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
