"""Energy + force throughput (frames/s) of the paper's SchNet (aspirin) and NequIP (Ac-Ala3-NHMe).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_models.py --quick
    .venv/bin/python benchmarks/bench_models.py                      # float32, batch 128
    .venv/bin/python benchmarks/bench_models.py --dtypes float32 float64

Per configuration (model, system, dtype) one JSON line on stdout:

* ``frames_per_s``: energy + forces of a batch of frames with
  ``jax.jit(jax.vmap(jax.value_and_grad(energy_fn, argnums=1), in_axes=(None, 0)))``, batch
  size / median seconds per call over ``--repeats`` timed calls (``block_until_ready``), after
  one warm-up call; ``compile_s`` is the ahead-of-time compile (``lower(...).compile()``), apart;
* ``train_step_frames_per_s``: one pre-training step on the same batch (energy + force loss of
  ``stablejax.train.losses.qm_loss`` with the paper's weights, its gradient w.r.t. the
  parameters, and an Adam update), batch size / median seconds; ``train_compile_s`` likewise.

Models come from ``stablejax.models.make_model`` with the paper's hyperparameters
(``SchNetConfig()``, ``NequIPConfig()``; NequIP's avg_num_neighbors is the mean neighbour count
of the benchmark frames within r_max) and random-initialised parameters: the cost does not depend
on the parameter values. Frames are the RDKit structure of the built-in SMILES with independent
Gaussian displacements (``--displacement`` Angstrom per Cartesian component). Labels are zeros
(the loss value does not change the cost). Nothing but JSON lines is printed on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stablejax.data.frames import make_frames
from stablejax.data.structures import embed_smiles
from stablejax.data.systems import get_molecule
from stablejax.models import NequIPConfig, SchNetConfig, average_num_neighbors, make_model
from stablejax.train.losses import Batch, LossScales, QMLossConfig, qm_loss

#: (model name, system) pairs of the paper (docs/method.md §10.1, §10.2).
SYSTEMS = {"schnet": "aspirin", "nequip": "ac-ala3-nhme"}
#: Pre-training loss weights (docs/method.md §3, §10.1, §10.2).
LOSSES = {
    "schnet": QMLossConfig(energy_weight=0.05, force_weight=0.95),
    "nequip": QMLossConfig(energy_weight=1.0, force_weight=1000.0, per_atom_energy=True),
}


def model_config(name: str, dtype: str, quick: bool, cpu_nequip: bool = False
                 ) -> SchNetConfig | NequIPConfig:
    """Paper hyperparameters, or a tiny model for ``--quick``; ``cpu_nequip``: the cpu-scale
    NequIP of the experiments (``NequIPConfig.cpu_scale()``)."""
    if name == "schnet":
        if quick:
            return SchNetConfig(hidden_features=8, n_filters=8, n_interactions=1,
                                n_gaussians=8, param_dtype=dtype)
        return SchNetConfig(param_dtype=dtype)
    if quick:
        return NequIPConfig(n_layers=1, hidden_irreps="2x0e+2x1o", radial_hidden=4,
                            radial_layers=1, param_dtype=dtype)
    if cpu_nequip:
        return NequIPConfig.cpu_scale(param_dtype=dtype)
    return NequIPConfig(param_dtype=dtype)


def make_positions(system: str, batch: int, displacement: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers [n_atoms] and frames [batch, n_atoms, 3] (Angstrom, float64 numpy)."""
    z, R0 = embed_smiles(get_molecule(system).smiles, seed=seed)
    rng = np.random.default_rng(seed)
    X = R0[None] + displacement * rng.standard_normal((batch,) + R0.shape)
    return z, X


def _median_seconds(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _compile(fn, *args):
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t


def bench(name: str, dtype: str, batch: int, repeats: int, displacement: float,
          quick: bool, cpu_nequip: bool = False) -> dict:
    """Throughput of one (model, dtype) configuration; returns the JSON record."""
    system = SYSTEMS[name]
    cfg = model_config(name, dtype, quick, cpu_nequip)
    z, X_np = make_positions(system, batch, displacement, seed=0)
    avg_nn = None
    if name == "nequip":
        avg_nn = average_num_neighbors(make_frames(X_np, z), cfg.cutoff)
    model = make_model(cfg, z, avg_num_neighbors=avg_nn)
    X = jnp.asarray(X_np, dtype=dtype)
    params = model.init(jax.random.key(0), X[0])
    n_params = int(sum(x.size for x in jax.tree.leaves(params)))

    energy_force = jax.vmap(jax.value_and_grad(model.energy_fn, argnums=1), in_axes=(None, 0))
    ef, ef_compile_s = _compile(energy_force, params, X)
    energies = ef(params, X)[0]
    if energies.dtype != jnp.dtype(dtype) or not bool(jnp.all(jnp.isfinite(energies))):
        raise RuntimeError(f"{name}: energies came out {energies.dtype} (wanted {dtype}) or "
                           f"non-finite; the benchmark would time the wrong thing")
    ef_s = _median_seconds(ef, (params, X), repeats)

    loss_cfg = LOSSES[name]
    labels = Batch(positions=X, energies=jnp.zeros((batch,), dtype),
                   forces=jnp.zeros_like(X), weight=jnp.ones((batch,), dtype))
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    def train_step(params, opt_state, labels):
        def loss_fn(p):
            return qm_loss(p, labels, energy_fn=model.energy_fn, cfg=loss_cfg,
                           scales=LossScales(1.0, 1.0))[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step, step_compile_s = _compile(train_step, params, opt_state, labels)
    step_s = _median_seconds(step, (params, opt_state, labels), repeats)

    record = {
        "bench": "model_eval",
        "model": name,
        "system": system,
        "n_atoms": int(len(z)),
        "batch": batch,
        "dtype": dtype,
        "frames_per_s": round(batch / ef_s, 2),
        "compile_s": round(ef_compile_s, 3),
        "train_step_frames_per_s": round(batch / step_s, 2),
        "train_compile_s": round(step_compile_s, 3),
        "n_params": n_params,
        "repeats": repeats,
        "quick": quick,
        "size": "cpu_scale" if cpu_nequip else ("quick" if quick else "paper"),
        "device": jax.devices()[0].device_kind,
    }
    if avg_nn is not None:
        record["avg_num_neighbors"] = round(avg_nn, 3)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SYSTEMS),
                        default=["schnet", "nequip"])
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"],
                        default=["float32"])
    parser.add_argument("--batch", type=int, default=128, help="frames per call")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls (median)")
    parser.add_argument("--displacement", type=float, default=0.05,
                        help="Gaussian displacement per Cartesian component, Angstrom")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models, batch 4, 2 repeats (smoke test, seconds)")
    parser.add_argument("--cpu-nequip", action="store_true",
                        help="NequIP at the experiments' cpu-scale size (NequIPConfig.cpu_scale())")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be >= 1")
    if args.quick:
        args.batch, args.repeats = 4, 2
    for dtype in args.dtypes:
        # float64 only inside its own context, so float32 runs keep JAX's default config
        with jax.enable_x64(dtype == "float64"):
            for name in args.models:
                record = bench(name, dtype, args.batch, args.repeats, args.displacement,
                               args.quick, args.cpu_nequip and name == "nequip")
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
