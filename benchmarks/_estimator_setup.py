"""Shared set-up of ``benchmarks/estimator.py``: the benchmark's constants, the input files the
parent writes for its child processes, and the child's timing and memory measurements.

Imported by the script (run as ``python benchmarks/estimator.py``, so this folder is on
``sys.path``); JAX is passed in to the measurement helpers, so the parent never imports it.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np

SYSTEM = "aspirin"
TEMPERATURE_K = 500.0
BLOCK_SIZE = 40  # reference scaling only (docs/method.md §2.4)
R_MAX_ANGSTROM = 10.0
DR_ANGSTROM = 0.02  # 500 bins
N_TARGET_FRAMES = 256
TARGET_DISPLACEMENT_FACTOR = 1.5
GB = 1e9


def write_inputs(workdir: Path, n_frames: int, displacement: float, seed: int = 0,
                 structure: str | None = None) -> int:
    """Save atomic numbers, frames and target frames (float64 numpy) for the children.

    The structure is the RDKit embedding of aspirin's SMILES, or ``structure`` (a file ASE reads,
    e.g. ``benchmarks/aspirin.xyz``, that embedding saved for machines without RDKit).

    Returns:
      the number of atoms.
    """
    if structure is not None:
        import ase.io

        atoms = ase.io.read(structure)
        z, R0 = atoms.numbers, atoms.positions
    else:
        from stablejax.data.structures import embed_smiles
        from stablejax.data.systems import get_molecule

        z, R0 = embed_smiles(get_molecule(SYSTEM).smiles, seed=seed)
    rng = np.random.default_rng(seed)
    frames = R0[None] + displacement * rng.standard_normal((n_frames,) + R0.shape)
    ref = R0[None] + (TARGET_DISPLACEMENT_FACTOR * displacement
                      * rng.standard_normal((N_TARGET_FRAMES,) + R0.shape))
    np.save(workdir / "atomic_numbers.npy", z)
    np.save(workdir / "frames.npy", frames)
    np.save(workdir / "target_frames.npy", ref)
    return int(len(z))


def sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits (GB figures span several decades)."""
    return float(f"{x:.{digits}g}")




def rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB), GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def memory_limit_gb(jax) -> float:
    """80% of the device's memory (accelerator: allocator limit; CPU: physical RAM), GB."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return 0.8 * stats["bytes_limit"] / GB
    return 0.8 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GB


def device_peak_gb(jax) -> float | None:
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return sig(stats["peak_bytes_in_use"] / GB)


def compile_measured(jax, fn, *args):
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t
    analysis = compiled.memory_analysis()
    temp_gb = None if analysis is None else sig(analysis.temp_size_in_bytes / GB)
    return compiled, compile_s, temp_gb


def compiled_cost(compiled) -> dict:
    """XLA's cost analysis of a compiled function: ``{"gflop": .., "gb_accessed": ..}``
    (None where XLA gives no figure)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
        cost = cost[0] if cost else None
    cost = cost or {}
    return {"gflop": sig(cost["flops"] / 1e9) if "flops" in cost else None,
            "gb_accessed": sig(cost["bytes accessed"] / GB) if "bytes accessed" in cost
            else None}


def op_time_shares(jax, compiled, args, top: int = 6) -> dict:
    """One traced call of ``compiled`` (``jax.profiler``): the share of XLA-CPU kernel time by
    kind of operation (the HLO name without its number: ``copy_bitcast_fusion``, ``dot``, ...),
    the ``top`` largest, in percent."""
    import collections
    import glob
    import gzip
    import json
    import re
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            jax.block_until_ready(compiled(*args))
        (path,) = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)
        events = json.load(gzip.open(path))["traceEvents"]
    kinds = collections.Counter()
    for e in events:
        name = e.get("name", "")
        kind = re.sub(r"\.\d+$", "", name)
        # kernels only: not Python frames ($...), runtime spans (A::B), jit calls or the
        # control-flow ops whose spans contain their bodies' kernels
        if (e.get("ph") == "X" and not name.startswith(("$", "PjitFunction")) and "::" not in name
                and kind not in ("while", "cond", "conditional", "call")):
            kinds[kind] += e.get("dur", 0)
    total = sum(kinds.values()) or 1
    return {k: round(100 * v / total, 1) for k, v in kinds.most_common(top)}


def gflops(jax, fn, *args) -> float | None:
    return compiled_cost(jax.jit(fn).lower(*args).compile())["gflop"]


def median_seconds(jax, fn, args, repeats: int):
    out = jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times), out
