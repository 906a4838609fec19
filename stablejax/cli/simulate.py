"""``python -m stablejax simulate --model NAME [--scale {demo,cpu,paper}] [--n-replicas 128]
[--time-ps 10]``

Batched replica MD of a model from evenly spread test structures. ``--model`` and ``--scale``
work as in ``evaluate`` (a run name under ``runs/`` or a model directory; the defaults of
``--n-replicas`` and ``--time-ps``). The finished result in ``--out`` (default
``<model>/simulate``)::

    inputs.json     the settings, model (absolute path, parameter digest), data set identity
    stability.csv   replica, first_unstable_time_ps (empty if stable), stable_whole_run,
                    n_frames, max_bond_deviation_angstrom, start_test_frame
    trajectories/replica_0000.extxyz ...   finite frames of each replica (``--format extxyz``)
    trajectories.npz                       positions [replicas, frames, atoms, 3], ... (``npz``)
    summary.json    h(r) MAE (MDsim convention) and bond-length distribution MAE of the stable
                    frames against the reference trajectory, stability times, counts; written
                    last, its presence marks a finished result

A run builds its result in ``--out/partial/`` (the same files, with ``finished: false`` in the
summary, rewritten after every chunk) and keeps there, after every chunk,
``checkpoints/<chunks done>/`` (orbax: the replica state with positions, momenta, thermostat
state and keys, the running sums, the extxyz file sizes) and, for ``npz``, the chunk's frames
``frames/chunk_00000.npz ...``. Run after an interrupt or a kill, the same command resumes after
the last finished chunk (extxyz files are cut back to that chunk) and gives the same result as
an uninterrupted run, bit for bit. On Ctrl-C the table, summary (``interrupted: true``) and npz
in ``partial/`` are written for what was simulated, and the command says how many chunks are
kept. The finished result replaces the old one in ``--out`` only once it is complete (see
:func:`stablejax.cli.evaluate.open_out` and ``promote``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np

from stablejax.cli.evaluate import (
    CHECKPOINTS,
    INPUTS,
    PARTIAL,
    SUMMARY,
    inputs_record,
    kept_note,
    load_inputs,
    md_for_system,
    open_out,
    parse,
    promote,
)
from stablejax.cli.progress import ProgressBar
from stablejax.cli.runs import resolve_run
from stablejax.cli.scales import DEFAULT_SCALE, EVAL_SIZES, SCALES, peek
from stablejax.config import HRConfig, MDConfig, check_types, need
from stablejax.errors import InputError
from stablejax.evaluate.stability_run import EVAL_MD
from stablejax.sharding import primary_only

TABLE = "stability.csv"
TRAJ = {"extxyz": "trajectories", "npz": "trajectories.npz"}
_KEYS = ("positions", "valid", "unstable", "metric", "step")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateArgs:
    """Batched replica MD of a model with stability detection, streamed to disk. The simulation
    flags are the fields of :class:`stablejax.config.MDConfig` (as in ``evaluate``)."""

    model: str | None = None
    """Run name under runs/ or model directory (a pre-training or StABlE run); default: the
    most recent finished one under runs/."""
    scale: Literal[SCALES] = DEFAULT_SCALE
    """Defaults of --n-replicas and --time-ps: demo 16 x 5 ps, cpu 32 x 25 ps, paper 256 x
    1000 ps; a periodic liquid (water) as in ``evaluate``: demo 4 x 2 ps, cpu 4 x 5 ps, paper
    5 x 1000 ps, Langevin at 1/ps. A liquid's replicas are unstable once atoms of different
    molecules come within 1.2 Angstrom; its frames are written with the cell."""
    md: MDConfig = EVAL_MD
    n_replicas: int = EVAL_SIZES[DEFAULT_SCALE]["n_replicas"]
    time_ps: float = EVAL_SIZES[DEFAULT_SCALE]["time_ps"]
    """Time per replica, ps; rounded up to whole frames."""
    hr: HRConfig = HRConfig()
    seed: int = 0
    data: Path | None = None
    """Data set directory (default: the one recorded with the model)."""
    frames_per_chunk: int = 10
    """Frames per compiled chunk (files are flushed and a resume point kept after every chunk)."""
    stop_fraction: float = 1.0
    """Stop early once this fraction of the replicas is unstable."""
    format: Literal["extxyz", "npz"] = "extxyz"
    out: Path | None = None
    """Output directory (default: <model>/simulate)."""
    overwrite: bool = False
    """Replace a finished result (or discard an unfinished run) made with other settings."""

    def __post_init__(self):
        check_types(self)
        need(self, "n_replicas", self.n_replicas >= 1, ">= 1")
        need(self, "time_ps", self.time_ps > 0, "> 0")
        need(self, "frames_per_chunk", self.frames_per_chunk >= 1, ">= 1")
        need(self, "stop_fraction", 0 < self.stop_fraction <= 1, "in (0, 1]")

    @property
    def n_frames(self) -> int:
        return math.ceil(self.time_ps * 1000.0 / self.md.frame_interval_fs - 1e-9)

    @property
    def chunks(self) -> tuple[int, int]:
        """(frames per chunk, chunks): the largest chunk of at most ``frames_per_chunk`` frames
        that divides the run."""
        n = self.n_frames
        fpc = max(d for d in range(1, min(self.frames_per_chunk, n) + 1) if n % d == 0)
        return fpc, n // fpc


def metric_name(system) -> str:
    """What the per-frame criterion measures (the trajectory and table column name)."""
    return ("min_intermolecular_distance_angstrom" if any(system.pbc)
            else "max_bond_deviation_angstrom")


@primary_only
def _append_extxyz(traj_dir: Path, system, host: dict, dt_fs: float) -> None:
    """Append each replica's finite (``valid``) frames of a chunk to its extxyz file (periodic
    systems: with the cell and pbc, atoms wrapped into the cell)."""
    import ase.io
    from ase import Atoms

    numbers = np.asarray(system.atomic_numbers)
    periodic = {"cell": np.asarray(system.cell), "pbc": system.pbc} if any(system.pbc) else {}
    name = metric_name(system)
    for i, (valid, steps) in enumerate(zip(host["valid"], host["step"])):
        images = []
        for k in np.flatnonzero(valid):
            a = Atoms(numbers=numbers, positions=host["positions"][i, k], **periodic)
            a.info.update(time_ps=float(steps[k] * dt_fs / 1000), step=int(steps[k]),
                          unstable=bool(host["unstable"][i, k]),
                          **{name: float(host["metric"][i, k])})
            images.append(a)
        if images:
            with open(traj_dir / f"replica_{i:04d}.extxyz", "a") as f:
                ase.io.write(f, images, format="extxyz")


def _extxyz_sizes(traj_dir: Path, n_rep: int) -> list[int]:
    return [(traj_dir / f"replica_{i:04d}.extxyz").stat().st_size
            if (traj_dir / f"replica_{i:04d}.extxyz").exists() else 0 for i in range(n_rep)]


@primary_only
def _cut_extxyz(traj_dir: Path, sizes: list[int]) -> None:
    """Cut each replica file back to its size at the checkpoint (frames of a chunk whose
    checkpoint was never written are dropped)."""
    for i, size in enumerate(sizes):
        path = traj_dir / f"replica_{i:04d}.extxyz"
        if path.exists() and path.stat().st_size >= size:
            os.truncate(path, size)
        elif size:
            raise InputError(f"{path}: shorter than its checkpoint says ({size} bytes), so the "
                             f"unfinished run cannot be resumed; delete {traj_dir.parent} to "
                             "start it over")


def _simulate(args: SimulateArgs, model_dir: Path, model, params, ds, part: Path) -> None:
    """Run (or resume) the simulation in ``part``, leaving its complete result there."""
    import jax
    import jax.numpy as jnp

    from stablejax.evaluate.stability_run import spread_indices
    from stablejax.evaluate.stream import (
        load_stream_checkpoint,
        make_stream,
        run_stream,
        save_stream_checkpoint,
    )
    from stablejax.io.npz import save_arrays
    from stablejax.io.run_dir import remove_tree, write_json
    from stablejax.simulate.build import make_simulator_for

    md, n_rep, system = args.md, args.n_replicas, ds.system
    fpc, n_chunks = args.chunks
    sim = make_simulator_for(model, system, md, frames_per_chunk=fpc)
    dtype = jax.tree.leaves(params)[0].dtype
    start = spread_indices(ds.test.n_frames, n_rep)
    state = sim.init(params, jnp.asarray(ds.test.positions[start], dtype),
                     jax.random.PRNGKey(args.seed))
    stream = make_stream(system, ds.reference.positions, n_replicas=n_rep, dt_fs=md.dt_fs,
                         hr=args.hr)
    traj_dir, frames_dir, ckpt = part / "trajectories", part / "frames", part / CHECKPOINTS
    found = load_stream_checkpoint(ckpt, state)
    resume, extra = found if found is not None else (None, {})
    if resume is None:  # a fresh start: drop frames of a first chunk that never finished
        remove_tree(traj_dir, frames_dir)
    elif args.format == "extxyz":
        _cut_extxyz(traj_dir, extra["extxyz_bytes"])
    (traj_dir if args.format == "extxyz" else frames_dir).mkdir(exist_ok=True)
    latest = {"state": state, "acc": stream.init(), "chunks": 0}  # after the last commit
    if resume is not None:
        latest.update(state=resume.state, acc=resume.acc, chunks=resume.chunks_done)
    total_ps = n_chunks * fpc * md.frame_interval_fs / 1000
    wall0, t0 = float(extra.get("wall_s", 0.0)), time.perf_counter()

    @primary_only
    def write_results(finished: bool, interrupted: bool = False, stopped: bool = False) -> None:
        st, acc = latest["state"], latest["acc"]
        fus = acc.first_unstable_step
        with open(part / (TABLE + ".tmp"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["replica", "first_unstable_time_ps", "stable_whole_run", "n_frames",
                        metric_name(system), "start_test_frame"])
            for i in range(n_rep):
                t = "" if fus[i] < 0 else f"{fus[i] * md.dt_fs / 1000:.6g}"
                w.writerow([i, t, bool(fus[i] < 0), int(acc.n_frames[i]),
                            f"{acc.max_deviation[i]:.6g}", int(start[i])])
        os.replace(part / (TABLE + ".tmp"), part / TABLE)
        m = stream.finalize(acc)
        summary = {
            "model_dir": str(model_dir.resolve()), "data_dir": str(Path(ds.path).resolve()),
            "integrator": md.integrator, "temperature_k": md.temperature_k,
            "dt_fs": md.dt_fs, "criterion": metric_name(system),
            "tolerance_angstrom": None if any(system.pbc) else md.tolerance_angstrom,
            "frame_interval_fs": md.frame_interval_fs, "seed": args.seed,
            "n_replicas": n_rep, "requested_ps": total_ps, "simulated_ps": m.window_ps,
            "finished": finished, "interrupted": interrupted, "stopped_early": stopped,
            "n_unstable": int((fus >= 0).sum()), "n_stable_whole_run": int(np.sum(m.censored)),
            "n_frozen": int(np.sum(np.asarray(st.frozen))),
            "stability_time_ps_median": float(np.median(m.times_ps)) if acc.steps_done else None,
            "stability_time_ps_mean": float(np.mean(m.times_ps)) if acc.steps_done else None,
            "n_stable_frames": m.n_stable_frames, "hr_mae": m.hr_mae,
            "hr_mean_abs_error": m.hr_mean_abs_error,
            "bond_length_distribution_mae": m.bond_length_distribution_mae,
            "wall_s": wall0 + time.perf_counter() - t0,
        }
        if args.format == "npz" and (finished or interrupted) and latest["chunks"]:
            chunks = []
            for c in range(latest["chunks"]):
                with np.load(frames_dir / f"chunk_{c:05d}.npz") as z:
                    chunks.append({k: z[k] for k in _KEYS})
            cat = {k: np.concatenate([c[k] for c in chunks], axis=1) for k in _KEYS}
            cell = {"cell": np.asarray(system.cell)} if any(system.pbc) else {}
            save_arrays(part / TRAJ["npz"], **cat, **cell, z=np.asarray(system.atomic_numbers),
                        time_ps=cat["step"][0] * md.dt_fs / 1000,
                        metadata=np.array(json.dumps(summary)))
        write_json(part / SUMMARY, summary)

    done_ps = latest["chunks"] * fpc * md.frame_interval_fs / 1000
    print(f"simulating {n_rep} replicas x {total_ps:g} ps ({sim.settings.steps_per_chunk} steps "
          f"per chunk)" + (f", resuming at {done_ps:g} ps" if resume else "") + f" -> {part}")
    try:
        with ProgressBar("[simulate] ps", unit="ps", postfix_keys=("n_unstable",)) as bar:

            def on_chunk(c) -> None:  # the chunk is reduced; the next one is already running
                host = {k: np.asarray(getattr(c.traj, k)) for k in _KEYS}
                if args.format == "npz":
                    save_arrays(frames_dir / f"chunk_{c.index:05d}.npz", **host)
                else:
                    _append_extxyz(traj_dir, system, host, md.dt_fs)
                save_stream_checkpoint(ckpt, c, {  # the commit point of the chunk
                    "extxyz_bytes": _extxyz_sizes(traj_dir, n_rep),
                    "wall_s": wall0 + time.perf_counter() - t0})
                latest.update(state=c.state, acc=c.acc, chunks=c.index + 1)
                write_results(finished=False)
                bar(round(c.acc.steps_done * md.dt_fs / 1000, 6), total_ps,
                    {"n_unstable": c.n_unstable})

            _, _, stopped = run_stream(sim, params, state, stream, n_chunks=n_chunks,
                                       stop_fraction=args.stop_fraction, on_chunk=on_chunk,
                                       resume=resume)
    except KeyboardInterrupt:
        write_results(finished=False, interrupted=True)
        raise
    write_results(finished=True, stopped=stopped)


def main(argv: list[str]) -> int:
    scale = peek(argv).scale
    args = parse(SimulateArgs, argv, "stablejax simulate",
                 default=SimulateArgs(scale=scale, **EVAL_SIZES[scale]))
    model_dir = resolve_run(args.model, "--model", ("pretrain", "stable"),
                            what="model directory")
    model, params, ds = load_inputs(model_dir, args.data, "--model")
    args = dataclasses.replace(args, md=md_for_system(args.md, ds.system, argv, scale))
    if any(ds.system.pbc):  # a periodic liquid: the scale's liquid sizes where not given
        from stablejax.cli.evaluate import given_flags
        from stablejax.cli.scales import liquid_eval_fields

        given = given_flags(argv)
        args = dataclasses.replace(args, **{k: v for k, v in liquid_eval_fields(scale).items()
                                            if k in ("n_replicas", "time_ps")
                                            and k not in given})
    out = args.out or model_dir / "simulate"
    settings = {k: v for k, v in dataclasses.asdict(args).items()
                if k not in ("model", "scale", "data", "out", "overwrite")}
    record = inputs_record("simulate", settings, model_dir, params, ds)
    status = open_out(out, record, (SUMMARY, INPUTS, TABLE, *TRAJ.values()), args.overwrite)
    if status == "finished":
        print((out / SUMMARY).read_text())
        print(f"{out} already holds this simulation (same settings): nothing to do")
        return 0
    fpc, n_chunks = args.chunks
    try:
        if status != "complete":
            _simulate(args, model_dir, model, params, ds, out / PARTIAL)
        promote(out, (TABLE, TRAJ[args.format]),
                tuple(v for k, v in TRAJ.items() if k != args.format))
    except KeyboardInterrupt:
        raise KeyboardInterrupt(kept_note(out, n_chunks, fpc * args.md.frame_interval_fs / 1000)
                                ) from None
    print((out / SUMMARY).read_text())
    print(f"written: {out}")
    return 0
