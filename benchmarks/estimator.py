"""Boltzmann estimator (custom VJP, chunked) vs the per-frame-gradient baseline, aspirin/SchNet.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/estimator.py --quick
    .venv/bin/python benchmarks/estimator.py                       # 2,560 / 10,240 / 40,960 frames
    .venv/bin/python benchmarks/estimator.py --x64 --frames 2560   # float64 gradient agreement

Setup (the same frames for both methods): SchNet with the paper's hyperparameters
(``stablejax.models.SchNetConfig()``, random-initialised parameters) on aspirin (21 atoms, RDKit
structure of the built-in SMILES); frames = that structure plus independent Gaussian
displacements of thermal size (``--displacement``, 0.05 Angstrom per Cartesian component;
2,560 frames = the paper's 128 replicas x 20 frames per learning epoch); observable = h(r)
(``stablejax.observables.distances.distance_distribution``, r_max 10 Angstrom, 500 bins); target =
the mean h(r) of 256 frames with 1.5x larger displacements; kT at 500 K. Compared:

* estimator: ``jax.grad(stablejax.estimator.boltzmann_loss)`` (``chunk_size`` frames at a time);
* baseline: ``stablejax.estimator.per_frame_gradient_baseline`` (dense [n_frames, n_params]
  per-frame gradients, all frames at once);
* energy + force: ``lax.map`` over chunks of ``chunk_size`` frames of
  ``vmap(value_and_grad(energy_fn, argnums=1))``, the cost of evaluating the frames once, to
  put the estimator's time in proportion (``estimator_over_energy_force``, target <= 1.2);
* single pass: the estimator with ``forward_energies=False`` (no forward energy evaluation;
  ``single_pass_s``, ``single_pass_over_energy_force``, and ``single_pass_grad_rel_diff``, its
  gradient's relative difference to the estimator's, 0 up to round-off on finite frames).
* arithmetic floor: XLA's FLOP count (``compiled.cost_analysis()``) of ONE chunk of
  ``chunk_size`` frames for the energy+force pass (``energy_force_gflops_per_chunk``) and for
  the weighted-energy VJP with respect to the parameters that the estimator's backward pass
  runs per chunk (``param_vjp_gflops_per_chunk``); their ratio ``param_vjp_flops_over_energy_
  force`` is the least the single-pass estimator can cost relative to energy+force on this
  model (a parameter VJP forms a weight gradient for every dense layer that a position
  gradient does not need). Counted on one chunk, not on the ``lax.map`` over chunks, because
  XLA's cost analysis counts a loop body once.

Each method runs in a fresh subprocess of this script (``--child``), so that its peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the child, reported as
``*_peak_rss_gb``; ``*_setup_rss_gb`` is the same high-water mark just before compiling, i.e.
interpreter + JAX + frames + parameters) is its own. Per method: XLA's temporary buffer size of
the compiled gradient (``jax.jit(f).lower(...).compile().memory_analysis()``, ``*_temp_gb``),
the device's peak allocation where the backend reports one (GPU: ``*_device_peak_gb``), compile
time, and the median time of ``--repeats`` calls after a warm-up call (``block_until_ready``).
The energy + force timing runs in the estimator's child after its peak RSS was read.

The baseline runs only where it fits: its per-frame gradient matrix is predicted as n_frames x
n_params x bytes (``baseline_predicted_gb``); above ``--max-baseline-gb`` it is not run, nor
when XLA's temporary size of the compiled baseline (which also holds every frame's activations,
several times the matrix) exceeds ``--max-baseline-temp-gb`` (default 80% of the device memory
or RAM; compiling allocates nothing); the line then says ``"baseline": "OOM (skipped)"``.
``grad_rel_diff`` = |g_est - g_base| / |g_base| over the whole flattened gradient
(``grad_max_rel_diff``: max |diff| / max |g_base|); ``memory_ratio`` = baseline / estimator
temporary size, ``rss_ratio`` = baseline / estimator peak RSS, ``time_ratio`` = baseline /
estimator seconds. A baseline child that dies reports ``"OOM (crashed)"`` or ``"failed ..."``.

One JSON line per configuration (frames x chunk size x scaling) on stdout, nothing else.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _estimator_setup import (
    BLOCK_SIZE,
    DR_ANGSTROM,
    GB,
    R_MAX_ANGSTROM,
    SYSTEM,
    TEMPERATURE_K,
    compile_measured,
    device_peak_gb,
    gflops,
    median_seconds,
    memory_limit_gb,
    rss_gb,
    sig,
    write_inputs,
)

# --------------------------------------------------------------------------- parent (no JAX)


def run_child(role: str, workdir: Path, args: argparse.Namespace, chunk_size: int,
              scaling: str) -> tuple[dict | None, str]:
    """Run one method in a fresh process; returns (its JSON record or None, failure text)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", role,
           "--workdir", str(workdir), "--chunk-size", str(chunk_size), "--scaling", scaling,
           "--repeats", str(args.repeats)]
    if args.max_baseline_temp_gb is not None:
        cmd += ["--max-baseline-temp-gb", str(args.max_baseline_temp_gb)]
    cmd += ["--x64"] if args.x64 else []
    cmd += ["--quick"] if args.quick else []
    cmd += ["--matmul-precision", args.matmul_precision]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr)
        oom = proc.returncode in (-9, 137) or "RESOURCE_EXHAUSTED" in proc.stderr
        what = "OOM (crashed)" if oom else f"failed (exit code {proc.returncode})"
        return None, what
    return json.loads(lines[-1]), ""


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else round(a / b, 4)


def parent_config(args: argparse.Namespace, n_frames: int, chunk_size: int, scaling: str
                  ) -> dict:
    """One configuration: estimator child, then (if it fits) baseline child; the record."""
    with tempfile.TemporaryDirectory(prefix="stablejax_estimator_bench_") as tmp:
        workdir = Path(tmp)
        n_atoms = write_inputs(workdir, n_frames, args.displacement, structure=args.structure)
        est, failure = run_child("estimator", workdir, args, chunk_size, scaling)
        if est is None:
            raise RuntimeError(f"estimator child {failure} ({n_frames} frames, chunk "
                               f"{chunk_size}); its stderr is above")
        record = {
            "bench": "estimator",
            "system": SYSTEM,
            "model": "schnet",
            "n_atoms": n_atoms,
            "n_params": est["n_params"],
            "n_bins": est["n_bins"],
            "n_frames": n_frames,
            "chunk_size": chunk_size,
            "scaling": scaling,
            "dtype": est["dtype"],
            "matmul_precision": args.matmul_precision,
        }
        record.update({f"estimator_{k}": v for k, v in est["method"].items()})
        record["energy_force_chunked_s"] = est["energy_force_chunked_s"]
        record["energy_force_compile_s"] = est["energy_force_compile_s"]
        record["estimator_over_energy_force"] = _ratio(est["method"]["s"],
                                                       est["energy_force_chunked_s"])
        sp = est["single_pass"]
        record["single_pass_s"] = sp["s"]
        record["single_pass_temp_gb"] = sp["temp_gb"]
        record["single_pass_grad_rel_diff"] = sp["grad_rel_diff"]
        record["single_pass_over_energy_force"] = _ratio(sp["s"], est["energy_force_chunked_s"])
        record["energy_force_gflops_per_chunk"] = est["flops"]["energy_force"]
        record["param_vjp_gflops_per_chunk"] = est["flops"]["param_vjp"]
        record["param_vjp_flops_over_energy_force"] = _ratio(est["flops"]["param_vjp"],
                                                             est["flops"]["energy_force"])
        itemsize = 8 if args.x64 else 4
        predicted = n_frames * est["n_params"] * itemsize / GB
        record["baseline_predicted_gb"] = sig(predicted)
        base = None
        if predicted > args.max_baseline_gb:
            record["baseline"] = "OOM (skipped)"
        else:
            base, failure = run_child("baseline", workdir, args, chunk_size, scaling)
            if base is None:
                record["baseline"] = failure
            elif base.get("skipped"):
                record["baseline"] = "OOM (skipped)"
                record["baseline_temp_gb"] = base["method"]["temp_gb"]
            else:
                record["baseline"] = "ran"
                record.update({f"baseline_{k}": v for k, v in base["method"].items()})
                g_est = np.load(workdir / "estimator_grad.npy")
                g_base = np.load(workdir / "baseline_grad.npy")
                diff = g_est - g_base
                record["grad_rel_diff"] = float(np.linalg.norm(diff) / np.linalg.norm(g_base))
                record["grad_max_rel_diff"] = float(np.max(np.abs(diff))
                                                    / np.max(np.abs(g_base)))
                record["loss_rel_diff"] = float(abs(est["loss"] - base["loss"])
                                                / abs(base["loss"]))
        ran = base is not None and not base.get("skipped")
        record["memory_ratio"] = (_ratio(base["method"]["temp_gb"], est["method"]["temp_gb"])
                                  if ran else None)
        record["rss_ratio"] = (_ratio(base["method"]["peak_rss_gb"],
                                      est["method"]["peak_rss_gb"]) if ran else None)
        record["time_ratio"] = _ratio(base["method"]["s"], est["method"]["s"]) if ran else None
        record.update({"repeats": args.repeats, "quick": args.quick, "device": est["device"]})
        return record


# --------------------------------------------------------------------------- child (JAX)


def child(args: argparse.Namespace) -> dict:
    """Compile, time and measure one method on the frames in ``args.workdir``."""
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from stablejax.estimator import boltzmann_loss, per_frame_gradient_baseline
    from stablejax.estimator._common import weighted_energy_grad
    from stablejax.models import SchNetConfig, make_model
    from stablejax.observables.distances import (
        distance_distribution,
        distance_distribution_target,
    )
    from stablejax.units import kT_ev

    workdir = Path(args.workdir)
    chunk_size, scaling = args.chunk_size[0], args.scaling[0]
    dtype = "float64" if args.x64 else "float32"
    z = np.load(workdir / "atomic_numbers.npy")
    X = jnp.asarray(np.load(workdir / "frames.npy"), dtype)
    if args.quick:
        cfg = SchNetConfig(hidden_features=8, n_filters=8, n_interactions=1, n_gaussians=8,
                           param_dtype=dtype)
    else:
        cfg = SchNetConfig(param_dtype=dtype)
    model = make_model(cfg, z)
    params = model.init(jax.random.key(0), X[0])

    def observable_fn(R):
        return distance_distribution(R, r_max=R_MAX_ANGSTROM, dr=DR_ANGSTROM)

    target = distance_distribution_target(
        jnp.asarray(np.load(workdir / "target_frames.npy"), dtype), r_max=R_MAX_ANGSTROM,
        dr=DR_ANGSTROM)
    kw = dict(energy_fn=model.energy_fn, observable_fn=observable_fn, kT=kT_ev(TEMPERATURE_K),
              scaling=scaling, block_size=BLOCK_SIZE, key=jax.random.key(1),
              matmul_precision=None if args.matmul_precision == "jax" else args.matmul_precision)

    if args.child == "estimator":
        def method(p, x, t):
            return jax.value_and_grad(boltzmann_loss)(p, x, target=t, chunk_size=chunk_size,
                                                      **kw)
    else:
        def method(p, x, t):
            return per_frame_gradient_baseline(p, x, target=t, **kw)

    setup_rss = rss_gb()
    compiled, compile_s, temp_gb = compile_measured(jax, method, params, X, target)
    result = {"n_params": int(sum(x.size for x in jax.tree.leaves(params))),
              "n_bins": int(target.shape[0]), "dtype": dtype,
              "device": jax.devices()[0].device_kind}
    if args.child == "baseline" and temp_gb is not None:
        limit = args.max_baseline_temp_gb
        limit = memory_limit_gb(jax) if limit is None else limit
        if temp_gb > limit:
            result.update(skipped=True, method={"temp_gb": temp_gb})
            return result
    seconds, (loss, grads) = median_seconds(jax, compiled, (params, X, target), args.repeats)
    result["method"] = {"s": round(seconds, 5), "compile_s": round(compile_s, 3),
                        "temp_gb": temp_gb, "peak_rss_gb": sig(rss_gb()),
                        "setup_rss_gb": sig(setup_rss),
                        "device_peak_gb": device_peak_gb(jax)}
    result["loss"] = float(loss)
    flat = np.asarray(ravel_pytree(grads)[0], dtype=np.float64)
    if not np.all(np.isfinite(flat)):
        raise RuntimeError(f"{args.child}: non-finite gradient")
    np.save(workdir / f"{args.child}_grad.npy", flat)

    if args.child == "estimator":
        venergy_force = jax.vmap(jax.value_and_grad(model.energy_fn, argnums=1),
                                 in_axes=(None, 0))

        def energy_force_chunked(p, x):
            n = x.shape[0]
            chunk = min(chunk_size, n)
            n_chunks = -(-n // chunk)
            pad = jnp.broadcast_to(x[:1], (n_chunks * chunk - n,) + x.shape[1:])
            xs = jnp.concatenate([x, pad]).reshape((n_chunks, chunk) + x.shape[1:])
            e, g = jax.lax.map(lambda c: venergy_force(p, c), xs)
            return e.reshape(-1)[:n], -g.reshape((-1,) + x.shape[1:])[:n]

        ef, ef_compile_s, _ = compile_measured(jax, energy_force_chunked, params, X)
        ef_s, _ = median_seconds(jax, ef, (params, X), args.repeats)
        result["energy_force_chunked_s"] = round(ef_s, 5)
        result["energy_force_compile_s"] = round(ef_compile_s, 3)

        def single_pass(p, x, t):
            return jax.value_and_grad(boltzmann_loss)(p, x, target=t, chunk_size=chunk_size,
                                                      forward_energies=False, **kw)

        sp, _, sp_temp = compile_measured(jax, single_pass, params, X, target)
        sp_s, (_, sp_grads) = median_seconds(jax, sp, (params, X, target), args.repeats)
        sp_flat = np.asarray(ravel_pytree(sp_grads)[0], dtype=np.float64)
        result["single_pass"] = {"s": round(sp_s, 5), "temp_gb": sp_temp,
                                 "grad_rel_diff": sig(float(np.linalg.norm(sp_flat - flat)
                                                             / np.linalg.norm(flat)))}

        # Per-chunk FLOPs: energy+force vs the estimator's own per-chunk kernel, the
        # parameter VJP of a weighted energy sum (one chunk: no loop).
        x_chunk = X[:min(chunk_size, X.shape[0])]

        def param_vjp(p, x, w):
            return weighted_energy_grad(model.energy_fn, p, x, w, None)

        result["flops"] = {
            "energy_force": gflops(jax, venergy_force, params, x_chunk),
            "param_vjp": gflops(jax, param_vjp, params, x_chunk,
                                 jnp.ones(x_chunk.shape[0], dtype)),
        }
    return result


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", "--n-frames", dest="frames", type=int, nargs="+",
                        help="numbers of frames (default 2560 10240 40960; --quick: 64)")
    parser.add_argument("--chunk-size", type=int, nargs="+",
                        help="estimator chunk size(s), frames, also the energy+force chunks "
                             "(default 64; --quick: 16)")
    parser.add_argument("--scaling", nargs="+", choices=["physical", "reference"],
                        default=["physical"], help="estimator scaling(s), docs/method.md §2.4")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    parser.add_argument("--max-baseline-gb", type=float, default=8.0,
                        help="skip the baseline when its [n_frames, n_params] matrix is "
                             "predicted above this size, GB")
    parser.add_argument("--max-baseline-temp-gb", type=float,
                        help="also skip it when XLA's temporary size of the compiled baseline "
                             "exceeds this, GB (default: 80%% of the device memory / RAM)")
    parser.add_argument("--displacement", type=float, default=0.05,
                        help="Gaussian displacement per Cartesian component, Angstrom")
    parser.add_argument("--x64", action="store_true", help="float64 (gradient agreement)")
    parser.add_argument("--matmul-precision", default="highest",
                        choices=["highest", "high", "default", "tensorfloat32", "jax"],
                        help="matmul_precision of both methods ('jax': JAX's default, which a "
                             "JAX_DEFAULT_MATMUL_PRECISION setting changes); matters on GPUs")
    parser.add_argument("--structure", help="aspirin structure file read by ASE (e.g. "
                        "benchmarks/aspirin.xyz) instead of the RDKit embedding")
    parser.add_argument("--quick", action="store_true",
                        help="tiny SchNet, 1 repeat; default 64 frames, chunk 16 (smoke test)")
    parser.add_argument("--child", choices=["estimator", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if args.frames is None:
        args.frames = [64] if args.quick else [2560, 10240, 40960]
    if args.chunk_size is None:
        args.chunk_size = [16] if args.quick else [64]
    if min(args.frames) < 1 or min(args.chunk_size) < 1 or args.repeats < 1:
        parser.error("--frames, --chunk-size and --repeats must be >= 1")
    if args.child is not None:
        if args.workdir is None:
            parser.error("--child needs --workdir")
        print(json.dumps(child(args)), flush=True)
        return
    for n_frames in args.frames:
        for chunk_size in args.chunk_size:
            for scaling in args.scaling:
                record = parent_config(args, n_frames, chunk_size, scaling)
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
