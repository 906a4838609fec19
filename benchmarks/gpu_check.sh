#!/usr/bin/env bash
# GPU check: stablejax's MD throughput and Boltzmann-estimator benchmarks on an accelerator
# machine that has its own JAX and no package registry.
#
#   benchmarks/gpu_check.sh [--quick] [OUTDIR]      (default OUTDIR: docs/benchmarks)
#
# The machine's preinstalled jax/jaxlib, flax, optax, orbax and chex are used as they are (the
# one exception to the pinned stack in pyproject.toml); the pure-Python packages it lacks
# (jax-md, e3nn-jax, jraph, ml_collections, ase) are installed with --no-deps from a wheelhouse
# in .whl/ when they are not importable. Make the wheelhouse where pip works:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform any -d .whl ase==3.29.0 e3nn-jax==0.21.0 jax-md==0.2.29 jraph ml_collections
#
# No data generation and no RDKit: the aspirin structure is benchmarks/aspirin.xyz (the RDKit
# embedding the benchmarks use by default). Writes, per JAX backend (cpu/gpu/tpu):
#   OUTDIR/gpu_check_env_<backend>.json      versions and devices
#   OUTDIR/md_throughput_<backend>.jsonl     128 and 512 replicas, SchNet/aspirin and LJ, ASE loop
#   OUTDIR/estimator_<backend>.jsonl         2,560 and 40,960 frames, estimator vs baseline
#   OUTDIR/scaling_<backend>.jsonl           MD and estimator against the device count (1, 2,
#                                            4, ... up to all local devices; water only where
#                                            OpenMM is installed)
# --quick: the benchmarks' smoke-test sizes (the same steps, numbers meaningless) for trying
# the script on a CPU. Sized to finish in about 4 minutes on one GPU.
set -euo pipefail

quick=0
if [[ "${1:-}" == "--quick" ]]; then quick=1; shift; fi
out=${1:-docs/benchmarks}
py=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$out"

if ! "$py" -c "import jax_md, e3nn_jax, ase" 2>/dev/null; then
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "gpu_check: jax_md, e3nn_jax or ase is missing and .whl/ holds no wheels" >&2
        exit 1
    fi
    site=${TMPDIR:-/tmp}/stablejax-gpu-check-site
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

backend=$("$py" -c "import jax; print(jax.default_backend())")
"$py" - >"$out/gpu_check_env_$backend.json" <<'EOF'
import importlib.metadata as md, json, platform
import jax
names = ["jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "jax-md", "e3nn-jax", "ase"]
versions = {}
for name in names:
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        versions[name] = None
print(json.dumps({"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                  "device_kind": jax.devices()[0].device_kind, "python": platform.python_version(),
                  "versions": versions}))
EOF
cat "$out/gpu_check_env_$backend.json"

if ((quick)); then
    md_args=(--quick --systems aspirin lj --dtypes float32)
    est_args=(--quick --frames 64)
else
    md_args=(--systems aspirin lj --dtypes float32 --replicas 128 512 --steps 1000
             --ase-steps 200 --repeats 3)
    est_args=(--frames 2560 40960 --chunk-size 256 --repeats 3 --max-baseline-gb 40)
fi
echo "gpu_check: md_throughput ${md_args[*]}" >&2
"$py" benchmarks/md_throughput.py "${md_args[@]}" --structure benchmarks/aspirin.xyz \
    | tee "$out/md_throughput_$backend.jsonl"
echo "gpu_check: estimator ${est_args[*]}" >&2
"$py" benchmarks/estimator.py "${est_args[@]}" --structure benchmarks/aspirin.xyz \
    | tee "$out/estimator_$backend.jsonl"
n_dev=$("$py" -c "import jax; print(len(jax.devices()))")
counts=(1)
for ((k = 2; k <= n_dev; k *= 2)); do counts+=("$k"); done
# the water box is made with OpenMM (absent on the GPU machine): aspirin only without it
systems=(aspirin)
if "$py" -c "import openmm" 2>/dev/null; then systems+=(water); fi
if ((quick)); then
    scale_args=(--quick --devices 1 2 --steps 20 --frames 32 --repeats 1)
else
    scale_args=(--devices "${counts[@]}" --replicas 128 --steps 200 --frames 2560 --repeats 3)
fi
echo "gpu_check: scaling ${scale_args[*]}" >&2
"$py" benchmarks/scaling.py "${scale_args[@]}" --systems "${systems[@]}" \
    | tee "$out/scaling_$backend.jsonl"
echo "gpu_check: done; JSON lines in $out" >&2
