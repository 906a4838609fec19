"""Scaling over devices: MD replica-steps per second and Boltzmann-estimator time against the
device count, one JSON line per (system, device count).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scaling.py                 # 1, 2, 4 devices
    .venv/bin/python benchmarks/scaling.py --devices 1 2 --systems aspirin --quick   # smoke

Each device count runs in its own process (on a CPU the host device count must be set before
JAX starts: ``XLA_FLAGS=--xla_force_host_platform_device_count=N``; on a GPU/TPU machine the
process sees its devices and uses the first N). The replicas (simulation) and the frames
(estimator) are split over a one-axis mesh of N devices (:mod:`stablejax.sharding`), exactly as
``--devices N`` does in training and evaluation.

Systems (random-init parameters: throughput only, as ``md_throughput.py``): ``aspirin`` =
SchNet with the paper's hyperparameters on the aspirin structure (``benchmarks/aspirin.xyz``),
Langevin 500 K, 0.5 fs; ``water`` = the cpu-sized GemNet-T on the 64-molecule box, 300 K, 1 fs.
MD: ``--replicas`` replicas (default 16 aspirin, 4 water), one compiled chunk of ``--steps``
steps, median of ``--repeats``. Estimator: the global Boltzmann estimator's gradient
(physical scaling, chunks of 16) over ``--frames`` frames (aspirin; the replicas' recorded
frames), or the localized estimator over 8 water frames (every molecule an environment, chunks
of 2).

Keys: ``devices``, ``replica_steps_per_s``, ``estimator_s``, ``parallel_efficiency`` (parent
only: throughput on N devices / (N x throughput on 1), and the same for the estimator's time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _worker(args) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(HERE))
    import md_throughput as mt

    from stablejax.sharding import make_mesh
    from stablejax.simulate import make_simulator

    warnings.filterwarnings("ignore")
    n_dev = args.worker
    mesh = make_mesh(n_dev)
    for name in args.systems:
        margs = argparse.Namespace(quick=args.quick, data=None, structure=str(HERE / "aspirin.xyz"),
                                   water_model="gemnet-t", lj_cells=4)
        s = mt.build_system(name, "float32", margs)
        model, params = s["model"], s["params"]
        n_rep = args.replicas or (4 if name == "water" else 16)
        n_dump = max(1, args.steps // 10)
        sim = make_simulator(model.energy_fn, masses=s["masses"], dt_fs=s["dt_fs"],
                             n_dump=n_dump, integrator="langevin",
                             temperature_k=s["temperature_k"],
                             displacement_fn=model.displacement_fn, shift_fn=model.shift_fn,
                             neighbor_fn=model.neighbor_fn, frames_per_chunk=10,
                             gamma_per_ps=1.0, mesh=mesh)
        R0 = jnp.broadcast_to(jnp.asarray(s["R"], jnp.float32), (n_rep,) + s["R"].shape)
        state = sim.init(params, R0, jax.random.PRNGKey(0))
        state, traj = sim.run_chunk(params, state)  # compile
        jax.block_until_ready(traj.positions)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            state, traj = sim.run_chunk(params, state)
            jax.block_until_ready(traj.positions)
            times.append(time.perf_counter() - t)
        md_s = statistics.median(times)
        steps = n_dump * 10
        est_s = _estimator_time(name, s, traj, mesh, args)
        print(json.dumps({
            "bench": "scaling", "system": name, "model": s["label"], "devices": n_dev,
            "device_kind": jax.devices()[0].device_kind, "n_replicas": n_rep, "steps": steps,
            "replica_steps_per_s": n_rep * steps / md_s, "estimator_s": est_s,
            "estimator_frames": args.frames if name != "water" else 8, "quick": args.quick,
        }), flush=True)


def _estimator_time(name, s, traj, mesh, args) -> float:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from stablejax.estimator import boltzmann_loss
    from stablejax.models.frames import frame_energy_fn

    model, params = s["model"], s["params"]
    reps = max(1, args.repeats)
    if name == "water":
        from stablejax.estimator.localized import (
            all_environments,
            bond_length_observable,
            localized_boltzmann_loss,
            molecule_bonds,
        )

        R = traj.positions.reshape((-1,) + traj.positions.shape[2:])[:8]
        n_at = R.shape[1]
        mol = np.arange(n_at) // 3
        bonds = np.array([(3 * m, 3 * m + h) for m in range(n_at // 3) for h in (1, 2)])
        obs = bond_length_observable(molecule_bonds(bonds, mol), float(s["box"]))
        eps = frame_energy_fn(model, np.asarray(R[0]), per_atom=True)
        idx = traj.neighbor_idx.reshape((-1,) + traj.neighbor_idx.shape[2:])[:8]
        frames = {"R": R, "neighbor_idx": idx}
        env = all_environments(R.shape[0], n_at // 3)

        def loss(p):
            return localized_boltzmann_loss(
                p, frames, env, per_atom_energy_fn=lambda q, f: eps(
                    q, f["R"], neighbor_idx=f["neighbor_idx"]),
                observable_fn=lambda f, m: obs(f["R"], m), molecule_index=mol,
                target=jnp.array([1.0, 1.0]), kT=0.0259, chunk_size=2, mesh=mesh,
                forward_energies=False)
    else:
        from stablejax.observables.distances import distance_distribution

        R = traj.positions.reshape((-1,) + traj.positions.shape[2:])
        k = int(np.ceil(args.frames / R.shape[0]))
        R = jnp.concatenate([R] * k)[:args.frames]
        target = distance_distribution(R[0])  # the default h(r): 10 A, 500 bins

        def loss(p):
            return boltzmann_loss(
                p, R, energy_fn=model.energy_fn,
                observable_fn=distance_distribution,
                target=target, kT=0.0431, chunk_size=16, mesh=mesh, forward_energies=False)
    grad = jax.jit(jax.grad(loss))
    jax.block_until_ready(grad(params))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(grad(params))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--systems", nargs="+", choices=["aspirin", "water"],
                   default=["aspirin", "water"])
    p.add_argument("--replicas", type=int, default=None,
                   help="replicas (default 16 aspirin, 4 water)")
    p.add_argument("--steps", type=int, default=200, help="MD steps per timed chunk")
    p.add_argument("--frames", type=int, default=512, help="estimator frames (aspirin)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        _worker(args)
        return
    base = {}
    for n in args.devices:
        env = dict(os.environ)
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(n)]
        for flag in ("systems",):
            cmd += [f"--{flag}", *getattr(args, flag)]
        for flag in ("steps", "frames", "repeats"):
            cmd += [f"--{flag}", str(getattr(args, flag))]
        if args.replicas:
            cmd += ["--replicas", str(args.replicas)]
        if args.quick:
            cmd += ["--quick"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"scaling: the {n}-device run failed:\n{out.stderr[-2000:]}")
        for line in out.stdout.splitlines():
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            key = r["system"]
            if r["devices"] == 1:
                base[key] = r
            if key in base:
                b = base[key]
                r["parallel_efficiency"] = r["replica_steps_per_s"] / (
                    r["devices"] * b["replica_steps_per_s"])
                r["estimator_parallel_efficiency"] = b["estimator_s"] / (
                    r["devices"] * r["estimator_s"])
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
