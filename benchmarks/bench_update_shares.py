"""Where one StABlE localized-estimator update lands in GemNet-T, per layer group, for the old
parameterisation (zero-initialised output layers, fixed scale constants) and the new default
(He-orthogonal output layers, trainable scale factors).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_update_shares.py          # ~8 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_update_shares.py --quick  # ~4 min

(times on the shared 2-core machine). Setup: a small OpenMM SPC/Fw water box (``--molecules``,
default 32: edge 9.87 A; a few ps of data, cached like the experiments' data sets); per
parameterisation the cpu-scale GemNet-T (``GemNetTConfig.cpu_scale()``; ``--quick``: one block
of width 16, 24 molecules) briefly pre-trained with the water recipe (``PretrainConfig.gemnet``,
``--pretrain-epochs`` over ``--frames`` frames); a short Nose-Hoover MD of that model with the
water StABlE settings (``TrainConfig.water``, ``--replicas`` x ``--md-ps``), then ONE
localized-estimator gradient on all its valid frames (``own_md``), exactly as a learning epoch
takes it (``stablejax.train.learn.localized_obs_loss``: stratified environments, the
reference's blocks of 4), and one on the SPC/Fw test frames (``reference_frames``: the same
frames for every model, bond lengths near the target, as in a learning epoch of a model that is
mostly stable). An SGD step is a multiple of the (clipped) gradient, so its share per layer
group (:func:`stablejax.models.gemnet_groups.update_shares`) is the gradient's.

One JSON line per parameterisation: the output kernels' norms, the fitted model's test force MAE
and, per frame set, ``shares`` (fraction of the update's squared norm per group),
``grad_norm``, ``obs_loss`` and the relative change per group (||dtheta_g|| / ||theta_g||) and
of the forces on those frames (||F' - F|| / ||F||) of one step of SGD 3e-3 clipped to 1.0 (the
reference's water step) and of SGD 30 clipped to 1e-3 (the cpu-scale step).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from stablejax.models import GemNetTConfig
from stablejax.models.gemnet_groups import relative_changes, update_shares

VARIANTS = {"old": dict(output_init="zeros", trainable_scales=False),
            "new": dict(output_init="heorthogonal", trainable_scales=True)}
STEPS = {"sgd_3e-3_clip_1": (3e-3, 1.0), "sgd_30_clip_1e-3": (30.0, 1e-3)}


def water_data(args):
    from stablejax.data.dataset import load_dataset
    from stablejax.data.water import generate_water
    from stablejax.data.water_config import WaterConfig

    cfg = WaterConfig(n_molecules=args.molecules, equilibration_ps=2.0, n_train=args.frames,
                      n_val=8, n_test=8, n_trajectories=1, sample_every=20, reference_ps=2.0,
                      reference_sample_every=20, chunk_steps=1000, seed=args.seed)
    return load_dataset(generate_water(cfg, args.data_dir, n_workers=1))


def model_config(args, variant: str) -> GemNetTConfig:
    small = dict(n_blocks=1, emb_size_atom=16, emb_size_edge=16) if args.quick else {}
    return GemNetTConfig.cpu_scale(**small, **VARIANTS[variant])


def fitted_model(ds, cfg: GemNetTConfig, args):
    """(spec, model, params, validation force MAE) after a brief pre-training."""
    from stablejax.pipeline import load_model_dir, pretrain_on_dataset
    from stablejax.train import PretrainConfig

    pcfg = PretrainConfig.gemnet(ema_decay=None, max_epochs=args.pretrain_epochs, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        res = pretrain_on_dataset(ds, "gemnet-t", pcfg, f"{tmp}/pre",
                                  model_overrides={"config": cfg})
        spec, model, params = load_model_dir(f"{tmp}/pre")
    return spec, model, params, res["test_force_mae_mev_per_angstrom"]


def md_frames(problem, params, cfg, key):
    """(frames, valid mask) of one StABlE epoch of the model's own MD."""
    from stablejax.train.learn import learning_frames
    from stablejax.train.problem import replica_starts

    k_start, k_md = jax.random.split(key)
    sim = problem.simulator
    state = sim.init(params, replica_starts(problem, cfg.n_replicas, k_start), k_md)
    _, traj = sim.run(params, state, cfg.steps_per_epoch)
    return learning_frames(traj), jnp.asarray(traj.valid).reshape(-1)


def reference_frames(model, frames):
    """The same SPC/Fw frames for every model (test split; bond lengths near the target)."""
    from stablejax.models.frames import frames_neighbor_idx

    R = jnp.asarray(frames.positions, jnp.float32)
    return ({"R": R, "neighbor_idx": jnp.asarray(frames_neighbor_idx(model, frames.positions))},
            jnp.ones(R.shape[0], bool))


def forces_fn(problem, frames):
    """``forces(params) -> [n_frames, n_atoms, 3]`` eV/A on ``frames``."""
    from stablejax.train.learn import frame_functions

    energy_fn = frame_functions(problem)[0]

    @jax.jit
    def forces(p):
        def one(R, idx):
            return -jax.grad(lambda x: energy_fn(p, {"R": x, "neighbor_idx": idx}))(R)
        return jax.lax.map(lambda f: one(*f), (frames["R"], frames["neighbor_idx"]))

    return forces


def update_report(problem, cfg, params, frames, mask, key) -> dict:
    """Shares, norm and step sizes of one localized-estimator update on ``frames``."""
    from stablejax.train.learn import localized_obs_loss

    obs_loss = localized_obs_loss(problem, cfg)
    target = jnp.asarray(problem.target)
    loss_fn = jax.jit(jax.value_and_grad(
        lambda p: obs_loss(p, target, frames, mask, key, None)[0]))
    loss, grad = loss_fn(params)
    norm = float(np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                             for g in jax.tree.leaves(grad))))
    forces = forces_fn(problem, frames)
    f0 = forces(params)
    steps, force_change = {}, {}
    for name, (lr, clip) in STEPS.items():
        factor = lr * min(1.0, clip / norm) if norm > 0 else 0.0
        update = jax.tree.map(lambda g: -factor * g, grad)
        steps[name] = relative_changes(update, params)
        df = forces(jax.tree.map(jnp.add, params, update)) - f0
        force_change[name] = float(jnp.linalg.norm(df) / jnp.linalg.norm(f0))
    return {"n_frames": int(np.sum(np.asarray(mask))), "obs_loss": float(loss),
            "grad_norm": norm,
            "shares": dict(sorted(update_shares(grad).items(), key=lambda kv: -kv[1])),
            "relative_change_per_step": steps, "relative_force_change_per_step": force_change}


def run_variant(ds, variant: str, args) -> dict:
    from stablejax.train import TrainConfig
    from stablejax.train.problem import make_problem

    t0 = time.perf_counter()
    spec, model, params, force_mae = fitted_model(ds, model_config(args, variant), args)
    cfg = TrainConfig.water(n_replicas=args.replicas, epoch_ps=args.md_ps, seed=args.seed)
    problem = make_problem(model, ds.system, ds.train, ds.reference.positions, cfg, mesh=None)
    k_md, k_est = jax.random.split(jax.random.PRNGKey(args.seed))
    regimes = {"own_md": md_frames(problem, params, cfg, k_md),
               "reference_frames": reference_frames(model, ds.test)}
    kernels = {k: float(jnp.linalg.norm(v["out_energy"]))
               for k, v in params["params"].items() if k.startswith("output_")}
    return {"bench": "update_shares", "variant": variant, **VARIANTS[variant],
            "n_params": int(sum(x.size for x in jax.tree.leaves(params))),
            "n_scale_factors": sum(1 for p, _ in jax.tree_util.tree_leaves_with_path(params)
                                   if str(p[-1].key).startswith("scale_")),
            "n_atoms": int(ds.system.n_atoms), "pretrain_epochs": args.pretrain_epochs,
            "test_force_mae_mev_per_angstrom": force_mae, "output_kernel_norms": kernels,
            **{name: update_report(problem, cfg, params, frames, mask, k_est)
               for name, (frames, mask) in regimes.items()},
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one-block width-16 model, fewer frames")
    p.add_argument("--molecules", type=int, default=32)
    p.add_argument("--frames", type=int, default=40, help="pre-training frames")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--md-ps", type=float, default=0.2)
    p.add_argument("--variants", default="old,new")
    p.add_argument("--data-dir", default=None, help="data cache (default: stablejax's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.molecules, args.frames, args.pretrain_epochs = 24, 24, 2
    ds = water_data(args)
    for variant in args.variants.split(","):
        print(json.dumps(run_variant(ds, variant, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
