"""``python -m stablejax simulate --checkpoint MODEL_DIR --replicas 128 --time 10ps``

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
import re
import time
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from stablejax.cli.evaluate import MDFlags
from stablejax.cli.progress import ProgressBar

_TIME_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(fs|ps|ns)?\s*$")
_FS_PER = {"fs": 1.0, "ps": 1e3, "ns": 1e6, None: 1e3}
_OUTPUTS = ("stability.csv", "summary.json", "trajectories.npz", "trajectories")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulateArgs(MDFlags):
    """Batched replica MD of a model with stability detection, streamed to disk."""

    checkpoint: Path
    """Model directory (pre-training or StABlE run: model.json + best/ or final/)."""
    replicas: int = 128
    time: str = "10ps"
    """Time per replica: '10ps', '500fs', '1ns' (bare number: ps); rounded up to whole frames."""
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


def parse_time_fs(text: str) -> float:
    """'10ps' / '500fs' / '1ns' / '10' (ps) -> fs; ValueError otherwise."""
    m = _TIME_RE.match(str(text))
    if m is None or not float(m.group(1)) > 0:
        raise ValueError(f"--time must be a positive duration such as 10ps, 500fs or 1ns "
                         f"(a bare number is ps), got {text!r}")
    return float(m.group(1)) * _FS_PER[m.group(2)]


def _check_args(a: SimulateArgs) -> tuple[int, int]:
    """(n_dump, n_frames_total); ValueError naming the bad option."""
    if a.replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {a.replicas}")
    if not a.dt_fs > 0 or not a.temperature_k > 0 or not a.tolerance_angstrom > 0:
        raise ValueError("--dt-fs, --temperature-k and --tolerance-angstrom must be > 0")
    if a.frames_per_chunk < 1 or not 0 < a.stop_fraction <= 1:
        raise ValueError("--frames-per-chunk must be >= 1 and --stop-fraction in (0, 1]")
    n_dump = a.frame_interval_fs / a.dt_fs
    if n_dump < 1 or abs(n_dump - round(n_dump)) > 1e-9:
        raise ValueError(f"--frame-interval-fs ({a.frame_interval_fs}) must be a positive "
                         f"multiple of --dt-fs ({a.dt_fs})")
    n_frames = math.ceil(parse_time_fs(a.time) / a.frame_interval_fs - 1e-9)
    return round(n_dump), n_frames


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
    args = tyro.cli(SimulateArgs, args=argv, prog="stablejax simulate")
    n_dump, n_frames_total = _check_args(args)
    if not args.checkpoint.is_dir():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such model directory")
    import jax
    import jax.numpy as jnp

    from stablejax.cli.evaluate import find_data
    from stablejax.data import load_dataset
    from stablejax.evaluate.stability_run import spread_indices
    from stablejax.io.npz import save_arrays
    from stablejax.observables import (bond_length_distribution, distance_distribution_frames,
                                       distance_distribution_target, hr_mae, map_frames,
                                       mean_abs_error)
    from stablejax.stability import stability_time_fs
    from stablejax.train.pipeline import load_model_dir
    from stablejax.train.problem import make_simulator_for

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
    sim = make_simulator_for(model, system, args, integrator=args.integrator,
                             tolerance_angstrom=args.tolerance_angstrom, n_dump=n_dump,
                             frames_per_chunk=fpc, gamma_per_ps=args.gamma_per_ps)
    dtype = jax.tree.leaves(params)[0].dtype
    start = spread_indices(ds.test.n_frames, args.replicas)
    state = sim.init(params, jnp.asarray(ds.test.positions[start], dtype),
                     jax.random.PRNGKey(args.seed))
    n_rep, total_ps = args.replicas, n_frames_total * n_dump * args.dt_fs / 1000
    hr = dict(r_max=args.hr_r_max_angstrom)
    h_ref = np.asarray(distance_distribution_target(jnp.asarray(ds.reference.positions), **hr))
    b_ref = np.asarray(bond_length_distribution(jnp.asarray(ds.reference.positions), system.bonds))

    def bond_hist(R):  # one frame -> [n_bins], the reference's convention
        return bond_length_distribution(R, system.bonds)

    @jax.jit
    def reduce_chunk(positions, stable):  # [n_rep, n_fr, n_atoms, 3], [n_rep, n_fr] -> sums
        w = stable.reshape(-1, 1)
        h = distance_distribution_frames(positions, **hr).reshape(w.shape[0], -1)
        b = map_frames(bond_hist, positions, 64).reshape(w.shape[0], -1)
        return jnp.where(w, h, 0).sum(0), jnp.where(w, b, 0).sum(0), jnp.sum(w)

    acc = dict(h=np.zeros_like(h_ref, np.float64), b=np.zeros_like(b_ref, np.float64), n=0.0)
    n_frames, max_dev, npz_chunks = np.zeros(n_rep, int), np.zeros(n_rep), []
    traj_dir, steps_done, t0 = out / "trajectories", 0, time.perf_counter()

    def write_results(finished: bool, interrupted: bool = False, stopped: bool = False) -> None:
        fus = np.asarray(state.first_unstable_step)
        with open(out / "stability.csv.tmp", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["replica", "first_unstable_time_ps", "stable_whole_run", "n_frames",
                        "max_bond_deviation_angstrom", "start_test_frame"])
            for i in range(n_rep):
                t = "" if fus[i] < 0 else f"{fus[i] * args.dt_fs / 1000:.6g}"
                w.writerow([i, t, bool(fus[i] < 0), int(n_frames[i]), f"{max_dev[i]:.6g}",
                            int(start[i])])
        os.replace(out / "stability.csv.tmp", out / "stability.csv")
        t_steps, censored = (np.asarray(x) for x in stability_time_fs(fus, 1.0, steps_done))
        t_ps, n_stable = t_steps.astype(np.float64) * args.dt_fs / 1000, acc["n"]  # exact
        summary = {
            "model_dir": str(args.checkpoint), "data_dir": str(ds.path),
            "integrator": args.integrator, "temperature_k": args.temperature_k,
            "dt_fs": args.dt_fs, "tolerance_angstrom": args.tolerance_angstrom,
            "frame_interval_fs": args.frame_interval_fs, "seed": args.seed,
            "n_replicas": n_rep, "requested_ps": total_ps,
            "simulated_ps": steps_done * args.dt_fs / 1000,
            "finished": finished, "interrupted": interrupted, "stopped_early": stopped,
            "n_unstable": int((fus >= 0).sum()), "n_stable_whole_run": int(np.sum(censored)),
            "n_frozen": int(np.sum(np.asarray(state.frozen))),
            "stability_time_ps_median": float(np.median(t_ps)) if steps_done else None,
            "stability_time_ps_mean": float(np.mean(t_ps)) if steps_done else None,
            "n_stable_frames": int(n_stable),
            "hr_mae": None, "hr_mean_abs_error": None, "bond_length_distribution_mae": None,
            "wall_s": time.perf_counter() - t0,
        }
        if n_stable > 0:
            h, b = jnp.asarray(acc["h"] / n_stable), jnp.asarray(acc["b"] / n_stable)
            summary.update(hr_mae=float(hr_mae(h, jnp.asarray(h_ref))),
                           hr_mean_abs_error=float(mean_abs_error(h, jnp.asarray(h_ref))),
                           bond_length_distribution_mae=float(mean_abs_error(b, b_ref)))
        (out / "summary.json.tmp").write_text(json.dumps(summary, indent=1))
        os.replace(out / "summary.json.tmp", out / "summary.json")
        if args.format == "npz" and (finished or interrupted) and npz_chunks:
            cat = {k: np.concatenate([c[k] for c in npz_chunks], axis=1) for k in npz_chunks[0]}
            save_arrays(out / "trajectories.npz", **cat, z=np.asarray(system.atomic_numbers),
                        time_ps=cat["step"][0] * args.dt_fs / 1000,
                        metadata=np.array(json.dumps(summary)))

    numbers = np.asarray(system.atomic_numbers)
    if args.format == "extxyz":
        traj_dir.mkdir(exist_ok=True)  # emptied by _prepare_out
    print(f"simulating {n_rep} replicas x {total_ps:g} ps ({sim.settings.steps_per_chunk} steps "
          f"per chunk) -> {out}")
    stopped, n_chunks = False, n_frames_total // fpc
    try:
        with ProgressBar("[simulate] ps", unit="ps", postfix_keys=("n_unstable",)) as bar:
            pending = sim.run_chunk_safe(params, state)  # dispatched asynchronously
            for c in range(n_chunks):
                new_state, traj = pending
                fus = new_state.first_unstable_step[:, None]
                stable = traj.valid & ((fus < 0) | (traj.step < fus))
                sums = [np.asarray(x, np.float64) for x in reduce_chunk(traj.positions, stable)]
                host = {k: np.asarray(getattr(traj, k))
                        for k in ("positions", "valid", "unstable", "metric", "step")}
                # Commit the chunk (host-side only from here on).
                state, steps_done = new_state, steps_done + sim.settings.steps_per_chunk
                for k, x in zip("hbn", sums):
                    acc[k] += x
                valid = host["valid"]
                n_frames += valid.sum(1)
                max_dev = np.maximum(max_dev, np.where(valid, host["metric"], 0).max(1))
                n_unstable = int(np.sum(np.asarray(state.unstable)))
                stopped = n_unstable >= args.stop_fraction * n_rep and c + 1 < n_chunks
                if c + 1 < n_chunks and not stopped:  # next chunk runs while files are written
                    pending = sim.run_chunk_safe(params, state)
                if args.format == "npz":
                    npz_chunks.append(host)
                else:
                    _append_extxyz(traj_dir, numbers, host, args.dt_fs)
                write_results(finished=False)
                bar(round(steps_done * args.dt_fs / 1000, 6), total_ps,
                    {"n_unstable": n_unstable})
                if stopped:
                    break
    except KeyboardInterrupt:
        write_results(finished=False, interrupted=True)
        raise
    write_results(finished=True, stopped=stopped)
    print((out / "summary.json").read_text())
    print(f"written: {out}")
    return 0
