"""``python -m stablejax simulate --checkpoint MODEL_DIR --n-replicas 128 --time-ps 10``

Batched replica MD of a model from evenly spread test structures, streamed to ``--out``:
``trajectories/replica_0000.extxyz ...`` (one file per replica, finite frames appended per chunk;
``--format npz``: ``trajectories.npz`` with positions [replicas, frames, atoms, 3] at the end),
``stability.csv`` (replica, first_unstable_time_ps (empty if stable), stable_whole_run, n_frames,
max_bond_deviation_angstrom, start_test_frame) and ``summary.json`` (h(r) MAE, MDsim convention,
and bond-length distribution MAE of the stable frames against the reference trajectory;
stability times; counts). Table and summary are rewritten after every chunk; on Ctrl-C they
(and the npz) are written for what was simulated so far, then the interrupt propagates.
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

from stablejax.cli.evaluate import parse
from stablejax.cli.progress import ProgressBar
from stablejax.config import HRConfig, MDConfig, check_types, need
from stablejax.evaluate.stability_run import EVAL_MD

_OUTPUTS = ("stability.csv", "summary.json", "trajectories.npz", "trajectories")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateArgs:
    """Batched replica MD of a model with stability detection, streamed to disk. The simulation
    flags are the fields of :class:`stablejax.config.MDConfig` (as in ``evaluate``)."""

    checkpoint: Path
    """Model directory (pre-training or StABlE run: model.json + best/ or final/)."""
    md: MDConfig = EVAL_MD
    n_replicas: int = 128
    time_ps: float = 10.0
    """Time per replica, ps; rounded up to whole frames."""
    hr: HRConfig = HRConfig()
    seed: int = 0
    data: Path | None = None
    """Data set directory (default: the one recorded with the model)."""
    frames_per_chunk: int = 10
    """Frames per compiled chunk (files are flushed after every chunk)."""
    stop_fraction: float = 1.0
    """Stop early once this fraction of the replicas is unstable."""
    format: Literal["extxyz", "npz"] = "extxyz"
    out: Path | None = None
    """Output directory (default: <checkpoint>/simulate)."""
    overwrite: bool = False
    """Replace the outputs of an earlier run in --out."""

    def __post_init__(self):
        check_types(self)
        need(self, "n_replicas", self.n_replicas >= 1, ">= 1")
        need(self, "time_ps", self.time_ps > 0, "> 0")
        need(self, "frames_per_chunk", self.frames_per_chunk >= 1, ">= 1")
        need(self, "stop_fraction", 0 < self.stop_fraction <= 1, "in (0, 1]")

    @property
    def n_frames(self) -> int:
        return math.ceil(self.time_ps * 1000.0 / self.md.frame_interval_fs - 1e-9)


def _prepare_out(out: Path, overwrite: bool) -> None:
    existing = [out / n for n in _OUTPUTS if (out / n).exists()]
    if existing and not overwrite:
        raise ValueError(f"{out} already holds simulation outputs ({existing[0].name}); "
                         "pass --overwrite or another --out")
    for p in existing:
        for f in (p.glob("replica_*.extxyz") if p.is_dir() else [p]):
            f.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _append_extxyz(traj_dir: Path, numbers, host: dict, dt_fs: float) -> None:
    """Append each replica's finite (``valid``) frames of a chunk to its extxyz file."""
    import ase.io
    from ase import Atoms

    for i, (valid, steps) in enumerate(zip(host["valid"], host["step"])):
        images = []
        for k in np.flatnonzero(valid):
            a = Atoms(numbers=numbers, positions=host["positions"][i, k])
            a.info.update(time_ps=float(steps[k] * dt_fs / 1000), step=int(steps[k]),
                          unstable=bool(host["unstable"][i, k]),
                          max_bond_deviation_angstrom=float(host["metric"][i, k]))
            images.append(a)
        if images:
            with open(traj_dir / f"replica_{i:04d}.extxyz", "a") as f:
                ase.io.write(f, images, format="extxyz")


def main(argv: list[str]) -> int:
    args = parse(SimulateArgs, argv, "stablejax simulate")
    md = args.md
    n_dump, n_frames_total = md.n_dump, args.n_frames
    if not args.checkpoint.is_dir():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such model directory")
    import jax
    import jax.numpy as jnp

    from stablejax.cli.evaluate import find_data
    from stablejax.data import load_dataset
    from stablejax.evaluate.stability_run import spread_indices
    from stablejax.evaluate.stream import make_stream, run_stream
    from stablejax.io.npz import save_arrays
    from stablejax.io.run_dir import write_json
    from stablejax.simulate.build import make_simulator_for
    from stablejax.pipeline import load_model_dir

    spec, model, params = load_model_dir(args.checkpoint)
    ds = load_dataset(args.data or find_data(args.checkpoint))
    system = ds.system
    if tuple(int(z) for z in spec.atomic_numbers) != tuple(int(z) for z in system.atomic_numbers):
        raise ValueError(f"the model in {args.checkpoint} is for other atoms than the data set "
                         f"{ds.path} ({len(spec.atomic_numbers)} vs {system.n_atoms} atoms)")
    out = args.out or args.checkpoint / "simulate"
    _prepare_out(out, args.overwrite)
    fpc = max(d for d in range(1, min(args.frames_per_chunk, n_frames_total) + 1)
              if n_frames_total % d == 0)
    sim = make_simulator_for(model, system, md, frames_per_chunk=fpc)
    dtype = jax.tree.leaves(params)[0].dtype
    start = spread_indices(ds.test.n_frames, args.n_replicas)
    state = sim.init(params, jnp.asarray(ds.test.positions[start], dtype),
                     jax.random.PRNGKey(args.seed))
    n_rep, total_ps = args.n_replicas, n_frames_total * n_dump * md.dt_fs / 1000
    stream = make_stream(system, ds.reference.positions, n_replicas=n_rep, dt_fs=md.dt_fs,
                         hr=args.hr)
    latest = {"state": state, "acc": stream.init()}  # the last committed chunk
    npz_chunks, traj_dir, t0 = [], out / "trajectories", time.perf_counter()

    def write_results(finished: bool, interrupted: bool = False, stopped: bool = False) -> None:
        st, acc = latest["state"], latest["acc"]
        fus, steps_done = acc.first_unstable_step, acc.steps_done
        with open(out / "stability.csv.tmp", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["replica", "first_unstable_time_ps", "stable_whole_run", "n_frames",
                        "max_bond_deviation_angstrom", "start_test_frame"])
            for i in range(n_rep):
                t = "" if fus[i] < 0 else f"{fus[i] * md.dt_fs / 1000:.6g}"
                w.writerow([i, t, bool(fus[i] < 0), int(acc.n_frames[i]),
                            f"{acc.max_deviation[i]:.6g}", int(start[i])])
        os.replace(out / "stability.csv.tmp", out / "stability.csv")
        m = stream.finalize(acc)
        summary = {
            "model_dir": str(args.checkpoint), "data_dir": str(ds.path),
            "integrator": md.integrator, "temperature_k": md.temperature_k,
            "dt_fs": md.dt_fs, "tolerance_angstrom": md.tolerance_angstrom,
            "frame_interval_fs": md.frame_interval_fs, "seed": args.seed,
            "n_replicas": n_rep, "requested_ps": total_ps, "simulated_ps": m.window_ps,
            "finished": finished, "interrupted": interrupted, "stopped_early": stopped,
            "n_unstable": int((fus >= 0).sum()), "n_stable_whole_run": int(np.sum(m.censored)),
            "n_frozen": int(np.sum(np.asarray(st.frozen))),
            "stability_time_ps_median": float(np.median(m.times_ps)) if steps_done else None,
            "stability_time_ps_mean": float(np.mean(m.times_ps)) if steps_done else None,
            "n_stable_frames": m.n_stable_frames, "hr_mae": m.hr_mae,
            "hr_mean_abs_error": m.hr_mean_abs_error,
            "bond_length_distribution_mae": m.bond_length_distribution_mae,
            "wall_s": time.perf_counter() - t0,
        }
        write_json(out / "summary.json", summary)
        if args.format == "npz" and (finished or interrupted) and npz_chunks:
            cat = {k: np.concatenate([c[k] for c in npz_chunks], axis=1) for k in npz_chunks[0]}
            save_arrays(out / "trajectories.npz", **cat, z=np.asarray(system.atomic_numbers),
                        time_ps=cat["step"][0] * md.dt_fs / 1000,
                        metadata=np.array(json.dumps(summary)))

    numbers = np.asarray(system.atomic_numbers)
    if args.format == "extxyz":
        traj_dir.mkdir(exist_ok=True)  # emptied by _prepare_out
    print(f"simulating {n_rep} replicas x {total_ps:g} ps ({sim.settings.steps_per_chunk} steps "
          f"per chunk) -> {out}")
    stopped = False
    try:
        with ProgressBar("[simulate] ps", unit="ps", postfix_keys=("n_unstable",)) as bar:

            def on_chunk(c) -> None:  # the chunk is reduced; the next one is already running
                latest.update(state=c.state, acc=c.acc)
                host = {k: np.asarray(getattr(c.traj, k))
                        for k in ("positions", "valid", "unstable", "metric", "step")}
                if args.format == "npz":
                    npz_chunks.append(host)
                else:
                    _append_extxyz(traj_dir, numbers, host, md.dt_fs)
                write_results(finished=False)
                bar(round(c.acc.steps_done * md.dt_fs / 1000, 6), total_ps,
                    {"n_unstable": c.n_unstable})

            _, _, stopped = run_stream(sim, params, state, stream, n_chunks=n_frames_total // fpc,
                                       stop_fraction=args.stop_fraction, on_chunk=on_chunk)
    except KeyboardInterrupt:
        write_results(finished=False, interrupted=True)
        raise
    write_results(finished=True, stopped=stopped)
    print((out / "summary.json").read_text())
    print(f"written: {out}")
    return 0
