"""Training vs evaluation dynamics of one model: the kinetic temperature and the failures of
replicas run with StABlE's training MD (Nose-Hoover, the reference's 20-step coupling) and with
the evaluation MD (Langevin, friction 0.1/ps), from the same start frames and seed.

    python benchmarks/thermostat_heating.py runs/ethanol_schnet-demo-seed0 --replicas 32 --time-ps 2

RUN_DIR is an experiment run directory (its experiment.json names the data set, pretrain/ holds
the model). One JSON line per (dynamics, frame): time, mean temperature of all replicas and of
those not yet unstable, and the count of unstable replicas.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from stablejax.data import load_dataset
from stablejax.evaluate.stability_run import EVAL_MD
from stablejax.pipeline import load_model_dir
from stablejax.simulate.build import make_simulator_for
from stablejax.train.stable_config import TRAIN_MD

KB_EV_PER_K = 8.617333262e-5


def temperatures(state) -> np.ndarray:
    """[n_replicas] kinetic temperature, K (3N - 3 degrees of freedom)."""
    p = np.asarray(state.md.momentum, np.float64)
    m = np.asarray(state.md.mass, np.float64)
    ke = 0.5 * (p**2 / m).sum(axis=(1, 2))
    return 2 * ke / ((3 * p.shape[1] - 3) * KB_EV_PER_K)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--replicas", type=int, default=32)
    ap.add_argument("--time-ps", type=float, default=2.0)
    ap.add_argument("--split", choices=("train", "test"), default="train")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    info = json.loads((a.run_dir / "experiment.json").read_text())
    ds = load_dataset(os.path.expanduser(info["data set"]))
    _, model, params = load_model_dir(a.run_dir / "pretrain")
    frames = getattr(ds, a.split)
    R = jnp.asarray(frames.positions[:a.replicas], jnp.float32)
    for name, md in (("training: nose_hoover", TRAIN_MD), ("evaluation: langevin", EVAL_MD)):
        sim = make_simulator_for(model, ds.system, md, frames_per_chunk=1)
        state = sim.init(params, R, jax.random.PRNGKey(a.seed))
        n_frames = int(round(a.time_ps * 1000 / md.frame_interval_fs))
        for k in range(1, n_frames + 1):
            state, _ = sim.run(params, state, md.n_dump)
            t = temperatures(state)
            bad = np.asarray(state.unstable | state.frozen)
            print(json.dumps({
                "bench": "thermostat_heating", "run_dir": str(a.run_dir), "dynamics": name,
                "start_split": a.split, "n_replicas": int(R.shape[0]),
                "time_ps": round(k * md.frame_interval_fs / 1000, 4),
                "temperature_k_all": round(float(t.mean()), 1),
                "temperature_k_not_unstable": (round(float(t[~bad].mean()), 1)
                                               if (~bad).any() else None),
                "n_unstable": int(bad.sum()),
                "tolerance_angstrom": md.tolerance_angstrom}), flush=True)


if __name__ == "__main__":
    main()
