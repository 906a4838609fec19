"""Energy + force throughput of GemNet-T (paper and cpu-scale sizes) on liquid water and aspirin.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gemnet.py --quick
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gemnet.py          # paper + cpu, batch 1 and 8

One JSON line per (size, system, batch) on stdout:

* ``frames_per_s``: energy + forces of a batch with
  ``jax.jit(jax.vmap(jax.value_and_grad(energy, argnums=1)))``, batch / median seconds per call
  over ``--repeats`` timed calls after one warm-up (``compile_s`` apart);
* ``train_step_over_energy_force``: one training step on the same batch (a weighted energy +
  force error, 0.001 / 0.999, its parameter gradient and an Adam update) over the energy +
  force call: what a parameter VJP costs on top of the forces;
* ``param_vjp_over_energy_force``: the Boltzmann estimator's reverse pass, the parameter VJP
  of a weighted sum of the batch's energies (no forces), over the energy + force call; with
  XLA's FLOP counts of both (``compiled.cost_analysis()``, as ``benchmarks/estimator.py``):
  ``energy_force_gflops_per_frame``, ``param_vjp_gflops_per_frame`` and their ratio
  ``param_vjp_flops_over_energy_force``.

Water is the 64-molecule SPC/Fw box (192 atoms, edge 12.43 A, OpenMM-minimised lattice, atoms
wrapped into the cell) with a JAX-MD dense neighbour list (skin 0.5 A); aspirin is its RDKit
structure (free molecule, all pairs). Frames of a batch get independent 0.02 A Gaussian
displacements. Parameters are random (the cost does not depend on their values).
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stablejax.data.structures import embed_smiles
from stablejax.data.systems import get_molecule
from stablejax.models import GemNetTConfig, make_model
from stablejax.models.neighbors import allocate_batched

from _estimator_setup import gflops, median_seconds  # benchmarks/ is on sys.path as a script

QUICK = dict(cutoff_angstrom=3.0, n_blocks=1, emb_size_atom=8, emb_size_edge=8, emb_size_rbf=4,
             emb_size_cbf=4, emb_size_trip=4, emb_size_bil_trip=4, num_radial=3,
             num_spherical=3, num_atom=1, num_after_skip=1)


def config(size: str) -> GemNetTConfig:
    if size == "paper":
        return GemNetTConfig()
    if size == "cpu":
        return GemNetTConfig.cpu_scale()
    return GemNetTConfig(**QUICK)


def frames(system: str, batch: int, seed: int = 0):
    """(atomic numbers, positions [batch, n_atoms, 3], cubic edge or None)."""
    rng = np.random.default_rng(seed)
    if system == "water":
        from md_throughput import water_box  # benchmarks/ is on sys.path when run as a script

        z, R, edge, _ = water_box(SimpleNamespace(data=None))
        R = np.mod(R, edge)
    else:
        z, R = embed_smiles(get_molecule(system).smiles, seed=seed)
        edge = None
    X = R[None] + 0.02 * rng.standard_normal((batch,) + R.shape)
    if edge is not None:
        X = np.mod(X, edge)
    return np.asarray(z), X, edge


def mean_neighbours(X: np.ndarray, edge: float | None, cutoff: float) -> float:
    d = X[0][:, None] - X[0][None]
    if edge is not None:
        d -= edge * np.round(d / edge)
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, np.inf)
    return float((r < cutoff).sum(1).mean())


def _median_seconds(fn, args, repeats: int) -> float:
    return median_seconds(jax, fn, args, repeats)[0]


def bench(size: str, system: str, batch: int, repeats: int) -> dict:
    cfg = config(size)
    z, X_np, edge = frames(system, batch)
    model = make_model(cfg, z, box=edge, avg_num_neighbors=mean_neighbours(X_np, edge, cfg.cutoff))
    X = jnp.asarray(X_np, jnp.float32)
    params = model.init(jax.random.key(0), X[0])
    nbr = None if model.neighbor_fn is None else allocate_batched(model.neighbor_fn, X_np)
    slots = None if nbr is None else int(nbr.idx.shape[-1])

    def energy(p, R, n):
        return model.energy_fn(p, R) if n is None else model.energy_fn(p, R, neighbor=n)

    in_axes = (None, 0, None if nbr is None else 0)
    ef = jax.jit(jax.vmap(jax.value_and_grad(energy, argnums=1), in_axes=in_axes))
    t = time.perf_counter()
    jax.block_until_ready(ef(params, X, nbr))
    compile_s = time.perf_counter() - t
    ef_s = _median_seconds(ef, (params, X, nbr), repeats)

    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    @jax.jit
    def step(p, s):
        def loss(q):  # the shape of the pre-training loss: weighted energy and force errors
            e, g = jax.vmap(jax.value_and_grad(energy, argnums=1), in_axes=in_axes)(q, X, nbr)
            return 0.001 * jnp.mean(e**2) + 0.999 * jnp.mean(g**2)

        val, grads = jax.value_and_grad(loss)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, val

    step_s = _median_seconds(step, (params, opt_state), repeats)

    w = jnp.linspace(0.5, 1.5, batch, dtype=X.dtype)  # importance weights of the frames

    def weighted_energy(p, R, n):
        return jnp.sum(w * jax.vmap(energy, in_axes=in_axes)(p, R, n))

    def param_vjp(p, R, n):
        return jax.vjp(lambda q: weighted_energy(q, R, n), p)[1](jnp.ones((), X.dtype))[0]

    vjp = jax.jit(param_vjp)
    vjp_s = _median_seconds(vjp, (params, X, nbr), repeats)
    ef_gf = gflops(jax, jax.vmap(jax.value_and_grad(energy, argnums=1), in_axes=in_axes),
                   params, X, nbr)
    vjp_gf = gflops(jax, param_vjp, params, X, nbr)
    return {"bench": "gemnet_eval", "size": size, "system": system, "n_atoms": int(len(z)),
            "batch": batch, "neighbour_slots": slots, "cutoff_angstrom": cfg.cutoff,
            "n_params": int(sum(x.size for x in jax.tree.leaves(params))),
            "frames_per_s": round(batch / ef_s, 3), "ms_per_frame": round(1000 * ef_s / batch, 1),
            "compile_s": round(compile_s, 2),
            "train_step_over_energy_force": round(step_s / ef_s, 2),
            "param_vjp_over_energy_force": round(vjp_s / ef_s, 2),
            "energy_force_gflops_per_frame": None if ef_gf is None else round(ef_gf / batch, 3),
            "param_vjp_gflops_per_frame": None if vjp_gf is None else round(vjp_gf / batch, 3),
            "param_vjp_flops_over_energy_force": (None if not (ef_gf and vjp_gf)
                                                  else round(vjp_gf / ef_gf, 2)),
            "repeats": repeats,
            "device": jax.devices()[0].device_kind}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=["paper", "cpu"], default=["cpu", "paper"])
    parser.add_argument("--systems", nargs="+", choices=["water", "aspirin"],
                        default=["water", "aspirin"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tiny model, batch 2")
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.batches) < 1:
        parser.error("--repeats and --batches must be >= 1")
    sizes = ["quick"] if args.quick else args.sizes
    batches = [2] if args.quick else args.batches
    for size in sizes:
        for system in args.systems:
            for batch in batches:
                print(json.dumps(bench(size, system, batch, 1 if args.quick else args.repeats)),
                      flush=True)


if __name__ == "__main__":
    main()
