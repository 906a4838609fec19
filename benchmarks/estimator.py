"""Boltzmann estimator (custom VJP, chunked) vs the per-frame-gradient baseline.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/estimator.py --quick
    .venv/bin/python benchmarks/estimator.py --n-frames 640 2560 --hidden 64 128 --n-atoms 21

On the same frames, for each configuration: compiled temporary memory of the gradient function
(``jax.jit(f).lower(...).compile().memory_analysis()``, a static figure, nothing is run for it),
seconds per gradient after a warm-up compile (``block_until_ready``), and the relative
difference of the two gradients (max |diff| / max |baseline|). One JSON line per configuration
and scaling. The energy is a small SchNet-like pair model defined here (Gaussian radial basis of
all pair distances -> MLP -> summed pair energies) so that it runs without stablejax.models;
the observable is a Gaussian-smeared pair-distance histogram (50 bins).
"""

from __future__ import annotations

import argparse
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stablejax.estimator import boltzmann_loss, per_frame_gradient_baseline


class PairMLP(nn.Module):
    """E = sum over pairs of MLP(Gaussian radial basis of r_ij), eV."""

    hidden: int
    n_layers: int = 3
    n_rbf: int = 25
    cutoff: float = 5.0

    @nn.compact
    def __call__(self, R):
        iu = np.triu_indices(R.shape[0], 1)
        r = jnp.sqrt(jnp.sum((R[:, None] - R[None]) ** 2, -1)[iu])
        centres = jnp.linspace(0.0, self.cutoff, self.n_rbf)
        h = jnp.exp(-((r[:, None] - centres) ** 2) / 0.1)
        for _ in range(self.n_layers):
            h = nn.silu(nn.Dense(self.hidden)(h))
        return jnp.sum(nn.Dense(1)(h))


def histogram(R, n_bins: int = 50, r_max: float = 5.0):
    iu = np.triu_indices(R.shape[0], 1)
    r = jnp.sqrt(jnp.sum((R[:, None] - R[None]) ** 2, -1)[iu])
    centres = (jnp.arange(n_bins) + 0.5) * (r_max / n_bins)
    h = jnp.exp(-((r[:, None] - centres) ** 2) / (2 * 0.05**2)).sum(0)
    return 100.0 * h / jnp.sum(h)


def _temp_bytes(fn, *args) -> int:
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    return -1 if analysis is None else int(analysis.temp_size_in_bytes)


def _seconds(fn, args, repeats: int) -> float:
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(*args))  # compile + warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        out = jitted(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / repeats


def run(n_frames: int, hidden: int, n_atoms: int, chunk_size: int, scaling: str,
        repeats: int) -> dict:
    model = PairMLP(hidden)
    key_p, key_x = jax.random.split(jax.random.key(0))
    base = jax.random.uniform(key_p, (n_atoms, 3), minval=0.0, maxval=4.0)
    params = model.init(key_p, base)
    params = jax.tree.map(lambda x: x.astype(base.dtype), params)  # flax inits float32
    X = base + 0.05 * jax.random.normal(key_x, (n_frames, n_atoms, 3))
    energy_fn = lambda p, R: model.apply(p, R)  # noqa: E731
    target = jax.vmap(histogram)(X).mean(0) * 1.01
    kw = dict(energy_fn=energy_fn, observable_fn=histogram, target=target, kT=0.0431,
              scaling=scaling, block_size=40, key=jax.random.key(1))

    def estimator(p, x):
        return jax.grad(boltzmann_loss)(p, x, chunk_size=chunk_size, **kw)

    def baseline(p, x):
        return per_frame_gradient_baseline(p, x, **kw)[1]

    g_est = jax.jit(estimator)(params, X)
    g_base = jax.jit(baseline)(params, X)
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g_est)])
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g_base)])
    return {
        "bench": "boltzmann_estimator",
        "scaling": scaling,
        "n_frames": n_frames,
        "n_atoms": n_atoms,
        "n_params": int(sum(x.size for x in jax.tree.leaves(params))),
        "chunk_size": chunk_size,
        "dtype": str(X.dtype),
        "estimator_temp_bytes": _temp_bytes(estimator, params, X),
        "baseline_temp_bytes": _temp_bytes(baseline, params, X),
        "estimator_s": round(_seconds(estimator, (params, X), repeats), 5),
        "baseline_s": round(_seconds(baseline, (params, X), repeats), 5),
        "rel_grad_diff": float(np.max(np.abs(a - b)) / np.max(np.abs(b))),
        "device": str(jax.devices()[0].platform),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-frames", type=int, nargs="+", default=[640, 2560])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64])
    parser.add_argument("--n-atoms", type=int, default=21)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--scaling", nargs="+", default=["physical", "reference"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--x64", action="store_true", help="float64 (gradient agreement check)")
    parser.add_argument("--quick", action="store_true", help="one tiny configuration")
    args = parser.parse_args()
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    if args.quick:
        args.n_frames, args.hidden, args.n_atoms, args.repeats = [96], [16], 6, 1
        args.chunk_size = 32
    for n_frames in args.n_frames:
        for hidden in args.hidden:
            for scaling in args.scaling:
                row = run(n_frames, hidden, args.n_atoms, args.chunk_size, scaling, args.repeats)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
