"""Kill/resume campaign: SIGKILL each stage at seeded random moments, resume it, and compare the
result with an uninterrupted run bit for bit.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kill_resume.py --points 20     # ~1 h on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kill_resume.py --points 1 --stages data

Stages (tiny sizes, the real code paths): ``data`` (GFN2-xTB ethanol data set generation, one
worker), ``pretrain`` (SchNet pre-training, 6 epochs), ``stable`` (StABlE training of that model
on the ethanol data, 6 epochs), ``evaluate`` (``stablejax evaluate`` of the pre-trained model,
several chunks). Per stage: one uninterrupted run (its wall time T), then ``--points`` runs,
each killed with SIGKILL after a seeded uniform time in (0, T) and then run again to the end in
the same directory; every output that a stage promises (data arrays; parameters, metrics and
results without their timings; evaluation summary and arrays) must equal the uninterrupted
run's exactly. A point whose run finished before its kill time is counted apart
(``finished_before_kill``). One JSON line per stage on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = ("data", "pretrain", "stable", "evaluate")
TIMING_KEYS = ("seconds", "wall_s", "this_call_wall_s", "train_wall_s", "md_wall_s",
               "elapsed_s", "wall_time_s", "steps_per_s", "replica_steps_per_s")


# ----------------------------------------------------------------------- the stages (children)

def _data_config():
    from stablejax.data import scale_config

    return scale_config("ethanol", n_train=6, n_val=2, n_test=4, reference_ps=0.04,
                        equilibration_ps=0.01, chunk_frames=2, sample_every=5,
                        reference_sample_every=5)


def _pretrain_config():
    from stablejax.train import PretrainConfig

    return PretrainConfig(max_epochs=6, batch_size=2, warmup_steps=4, eval_batch_size=4,
                          early_stopping_patience=None)


MODEL = dict(n_interactions=1, hidden_features=8, n_filters=8, n_gaussians=8)


def _stable_config():
    from stablejax.config import replace
    from stablejax.train.stable_config import TrainConfig

    return replace(TrainConfig.aspirin(), {
        "n_replicas": 4, "epoch_ps": 0.05, "n_epochs": 6, "stable_epochs": None,
        "md": {"frame_interval_fs": 5.0}})


def run_stage(stage: str, out: Path, base: Path) -> None:
    """Run one stage to its end in ``out`` (``base`` holds the data set and pre-trained model
    that later stages start from)."""
    from stablejax.data import generate_dataset, load_dataset

    if stage == "data":
        generate_dataset(_data_config(), out, n_workers=1)
        return
    data = next((base / "data").glob("ethanol*/ethanol-*"))
    dataset = load_dataset(data)
    if stage == "pretrain":
        from stablejax.pipeline import pretrain_on_dataset

        pretrain_on_dataset(dataset, "schnet", _pretrain_config(), out, model_overrides=MODEL)
    elif stage == "stable":
        from stablejax.pipeline import load_model_dir, stable_on_dataset

        spec, _, params = load_model_dir(base / "pretrain")
        stable_on_dataset(dataset, spec, params, _stable_config(), out)
    elif stage == "evaluate":
        from stablejax.cli.main import main

        rc = main(["evaluate", "--model", str(base / "pretrain"), "--data", str(data),
                   "--n-replicas", "4", "--time-ps", "0.5", "--out", str(out)])
        if rc != 0:
            raise SystemExit(rc)
    else:
        raise ValueError(f"unknown stage {stage!r}")


# ------------------------------------------------------------------------ outputs to compare

def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in TIMING_KEYS}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _path_free(x, root: Path):
    """JSON values with the run directory's own path replaced (runs live in other dirs)."""
    if isinstance(x, dict):
        return {k: _path_free(v, root) for k, v in x.items()}
    if isinstance(x, list):
        return [_path_free(v, root) for v in x]
    if isinstance(x, str):
        return x.replace(str(root.resolve()), "<run>").replace(str(root), "<run>")
    return x


def outputs(out: Path) -> dict:
    """Every array and JSON value a finished stage leaves in ``out`` (timings removed): npz
    members, orbax parameter checkpoints under best/ and final/, JSON and JSONL files."""
    from stablejax.io.checkpoint import restore_checkpoint

    found: dict = {}
    for path in sorted(out.rglob("*")):
        rel = str(path.relative_to(out))
        if "/work/" in f"/{rel}/" or rel.endswith(".tmp") or "checkpoints" in rel:
            continue
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                for k in f.files:
                    found[f"{rel}:{k}"] = f[k]
        elif path.suffix == ".json" and path.name not in ("timings.json",):
            found[rel] = _path_free(_strip(json.loads(path.read_text())), out)
        elif path.suffix == ".jsonl":
            found[rel] = [_strip(json.loads(x)) for x in path.read_text().splitlines() if x]
    for name in ("best", "final"):
        if (out / name).is_dir():
            state, _ = restore_checkpoint(out / name)
            for i, leaf in enumerate(_leaves(state)):
                found[f"{name}:{i}"] = leaf
    return found


def _leaves(tree) -> list:
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def same(a: dict, b: dict) -> tuple[bool, str]:
    if set(a) != set(b):
        return False, f"different outputs: {sorted(set(a) ^ set(b))[:5]}"
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            x, y = np.asarray(x), np.asarray(y)
            nan_ok = x.dtype.kind in "fc" and y.dtype.kind in "fc"
            if not (x.shape == y.shape and np.array_equal(x, y, equal_nan=nan_ok)):
                return False, f"{k} differs"
        elif x != y:
            return False, f"{k} differs"
    return True, ""


# ----------------------------------------------------------------------------------- parent

def _child(stage: str, out: Path, base: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, __file__, "--child", stage, "--out", str(out),
                             "--base", str(base)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _finish(stage: str, out: Path, base: Path) -> float:
    t0 = time.perf_counter()
    proc = _child(stage, out, base)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} run in {out} failed (rc {proc.returncode}): {err[-2000:]}")
    return time.perf_counter() - t0


def campaign(stage: str, base: Path, work: Path, points: int, seed: int) -> dict:
    ref_dir = work / f"{stage}-reference"
    wall = _finish(stage, ref_dir, base)
    ref = outputs(ref_dir)
    rng = np.random.default_rng([seed, STAGES.index(stage)])
    identical = early = 0
    failures = []
    for i in range(points):
        out = work / f"{stage}-{i}"
        t_kill = float(rng.uniform(0.0, wall))
        proc = _child(stage, out, base)
        try:
            proc.wait(timeout=t_kill)
            early += 1
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        _finish(stage, out, base)
        ok, why = same(ref, outputs(out))
        identical += ok
        if not ok:
            failures.append(f"point {i} (kill at {t_kill:.1f} s): {why}")
        shutil.rmtree(out, ignore_errors=True)
    return {"bench": "kill_resume", "stage": stage, "points": points, "identical": identical,
            "finished_before_kill": early, "uninterrupted_s": round(wall, 1),
            "failures": failures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=20, help="kill points per stage")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        run_stage(args.child, args.out, args.base)
        return 0
    if args.points < 1:
        p.error("--points must be >= 1")
    failed = False
    with tempfile.TemporaryDirectory(prefix="stablejax-kill-resume-") as tmp:
        base, work = Path(tmp) / "base", Path(tmp) / "work"
        # what the later stages start from: a data set and a pre-trained model
        _finish("data", base / "data", base)
        if {"stable", "evaluate"} & set(args.stages):
            _finish("pretrain", base / "pretrain", base)
        for stage in args.stages:
            record = campaign(stage, base, work, args.points, args.seed)
            failed |= record["identical"] != record["points"]
            print(json.dumps(record), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
