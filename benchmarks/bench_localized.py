"""Localized Boltzmann estimator on liquid water: memory against the number of environments and
cost against an energy + force pass.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_localized.py --quick
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_localized.py     # cpu-scale GemNet-T

Setup: the 64-molecule SPC/Fw box (192 atoms, edge 12.43 A; ``md_throughput.water_box``) with
``--frames`` frames (independent 0.02 A displacements), the cpu-scale GemNet-T
(``GemNetTConfig.cpu_scale()``, random parameters; ``--quick``: a tiny one) with one JAX-MD
neighbour list per frame, the local observable = each molecule's two O-H lengths, the target
= 0.98 A. Environments: for ``--env-multiples`` m, ``m * --base-env`` (frame, molecule) pairs
drawn without replacement from all ``frames x 64`` candidates, weight 1.

One JSON line per multiple: ``temp_mb`` = XLA's temporary buffer size of the compiled gradient
(``compiled.memory_analysis()``: compile-time temporaries; flat in the number of environments
is the target), ``grad_s`` the median time of the localized gradient without the forward
validity pass (``forward_energies=False``), ``energy_force_s`` that of an energy + force pass
over the same frames (same chunks), and their ratio ``grad_over_energy_force`` (target
<= 1.5); ``grad_forward_s`` with the forward pass; XLA's cost analysis of both compiled
programs (``*_gflop``, ``*_gb_accessed``: the parameter gradient's extra cost is memory traffic,
see the README); ``--profile``: the share of kernel time by kind of XLA operation.
"""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

from _estimator_setup import compile_measured, compiled_cost, median_seconds, op_time_shares
from stablejax.estimator.localized import (
    Environments,
    bond_length_observable,
    localized_boltzmann_loss,
    molecule_bonds,
)
from stablejax.models import GemNetTConfig, make_model


def setup(args):
    from md_throughput import water_box  # benchmarks/ is on sys.path when run as a script

    z, R, edge, _ = water_box(SimpleNamespace(data=None))
    R = np.mod(R, edge)
    rng = np.random.default_rng(0)
    X = np.mod(R[None] + 0.02 * rng.standard_normal((args.frames,) + R.shape), edge)
    cfg = (GemNetTConfig(cutoff_angstrom=3.0, n_blocks=1, emb_size_atom=8, emb_size_edge=8,
                         emb_size_rbf=4, emb_size_cbf=4, emb_size_trip=4, emb_size_bil_trip=4,
                         num_radial=3, num_spherical=3, num_atom=1, num_after_skip=1,
                         output_init="heorthogonal")
           if args.quick else GemNetTConfig.cpu_scale(output_init="heorthogonal"))
    model = make_model(cfg, z, box=edge, avg_num_neighbors=20.0)
    from stablejax.models.frames import frame_energy_fn, frames_neighbor_idx

    frames = {"R": jnp.asarray(X, jnp.float32),
              "neighbor_idx": jnp.asarray(frames_neighbor_idx(model, X))}
    eps = frame_energy_fn(model, X[0], per_atom=True)

    def per_atom(p, f):
        return eps(p, f["R"], neighbor_idx=f["neighbor_idx"])

    def energy(p, f):
        return jnp.sum(per_atom(p, f))

    mol = np.repeat(np.arange(len(z) // 3), 3)
    bonds = np.array([(3 * m, 3 * m + k) for m in range(len(z) // 3) for k in (1, 2)])
    obs = bond_length_observable(molecule_bonds(bonds, mol), edge, positions=lambda f: f["R"])
    params = model.init(jax.random.PRNGKey(0), frames["R"][0])
    return dict(frames=frames, per_atom=per_atom, energy=energy, obs=obs, mol=mol,
                params=params, n_mol=len(z) // 3, n_params=sum(x.size for x in
                                                               jax.tree.leaves(params)))


def bench(s, n_env: int, args) -> dict:
    rng = np.random.default_rng(1)
    n_cand = args.frames * s["n_mol"]
    pick = rng.choice(n_cand, size=n_env, replace=False)
    env = Environments(jnp.asarray(pick // s["n_mol"], jnp.int32),
                       jnp.asarray(pick % s["n_mol"], jnp.int32), jnp.ones(n_env, jnp.float32),
                       jnp.ones(n_env, bool))

    def grad(params, frames, env, forward):
        def loss(p):
            return localized_boltzmann_loss(p, frames, env, per_atom_energy_fn=s["per_atom"],
                                            observable_fn=s["obs"], molecule_index=s["mol"],
                                            target=0.98, kT=None, scaling="reference",
                                            key=jax.random.PRNGKey(2), chunk_size=args.chunk,
                                            forward_energies=forward)
        return jax.grad(loss)(params)

    args_ = (s["params"], s["frames"], env)
    compiled, compile_s, temp_gb = compile_measured(
        jax, lambda p, f, e: grad(p, f, e, False), *args_)
    grad_s = median_seconds(jax, compiled, args_, args.repeats)[0]
    compiled_fwd = jax.jit(lambda p, f, e: grad(p, f, e, True)).lower(*args_).compile()
    grad_fwd_s = median_seconds(jax, compiled_fwd, args_, args.repeats)[0]

    def energy_force(p, frames):
        from stablejax._frames import map_frames

        def one(f):
            return jax.value_and_grad(
                lambda R: s["energy"](p, {"R": R, "neighbor_idx": f["neighbor_idx"]}))(f["R"])

        return map_frames(one, frames, args.chunk)

    ef_c = jax.jit(energy_force).lower(s["params"], s["frames"]).compile()
    ef_s = median_seconds(jax, ef_c, (s["params"], s["frames"]), args.repeats)[0]
    cost_g, cost_ef = compiled_cost(compiled), compiled_cost(ef_c)
    profile = {}
    if args.profile:
        profile = {"grad_op_time_percent": op_time_shares(jax, compiled, args_),
                   "energy_force_op_time_percent": op_time_shares(
                       jax, ef_c, (s["params"], s["frames"]))}
    return {"bench": "localized_estimator", "model": "gemnet-t quick" if args.quick
            else "gemnet-t cpu", "n_frames": args.frames, "n_molecules": s["n_mol"],
            "n_environments": n_env, "n_params": int(s["n_params"]), "chunk_size": args.chunk,
            "temp_mb": None if temp_gb is None else round(temp_gb * 1e3, 2),
            "compile_s": round(compile_s, 2), "grad_s": round(grad_s, 3),
            "grad_forward_s": round(grad_fwd_s, 3), "energy_force_s": round(ef_s, 3),
            "grad_over_energy_force": round(grad_s / ef_s, 2),
            "grad_forward_over_energy_force": round(grad_fwd_s / ef_s, 2),
            "grad_gflop": cost_g["gflop"], "energy_force_gflop": cost_ef["gflop"],
            "grad_gb_accessed": cost_g["gb_accessed"],
            "energy_force_gb_accessed": cost_ef["gb_accessed"], **profile,
            "repeats": args.repeats, "device": jax.devices()[0].device_kind}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--base-env", type=int, default=128, help="environments at multiple 1")
    p.add_argument("--env-multiples", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--chunk", type=int, default=4, help="frames per chunk")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny model, 2 frames, 1 repeat")
    p.add_argument("--profile", action="store_true",
                   help="add the share of kernel time by kind of XLA operation (one traced call)")
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(frames=2, base_env=16, chunk=2, repeats=1, env_multiples=[1, 4])
        args = p.parse_args(argv)
    if min(args.frames, args.base_env, args.chunk, args.repeats, *args.env_multiples) < 1:
        p.error("--frames, --base-env, --chunk, --repeats and --env-multiples must be >= 1")
    s = setup(args)
    for m in args.env_multiples:
        n_env = m * args.base_env
        if n_env > args.frames * s["n_mol"]:
            p.error(f"{n_env} environments exceed the {args.frames * s['n_mol']} candidates")
        print(json.dumps(bench(s, n_env, args)), flush=True)


if __name__ == "__main__":
    main()
