"""Smoke tests of the benchmark scripts: their ``--quick`` modes run in a subprocess and print
valid JSON lines (and nothing else) on stdout, with sane values."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Generous: the scripts take ~10-25 s on a loaded 2-core machine; this only catches hangs.
TIMEOUT_S = 300


def run_script(name: str, *args: str) -> list[dict]:
    """Run ``benchmarks/<name>`` with ``args``; every stdout line must be a JSON object."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines, "no output on stdout"
    records = [json.loads(line) for line in lines]  # fails on any non-JSON line
    assert all(isinstance(r, dict) for r in records)
    return records


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow  # ~22 s; the models themselves: tests/test_models.py
def test_bench_models_quick():
    records = run_script("bench_models.py", "--quick")
    assert [(r["model"], r["system"], r["n_atoms"]) for r in records] == [
        ("schnet", "aspirin", 21), ("nequip", "ac-ala3-nhme", 42)]
    for r in records:
        assert r["bench"] == "model_eval" and r["dtype"] == "float32" and r["batch"] == 4
        for key in ("frames_per_s", "compile_s", "train_step_frames_per_s", "n_params"):
            assert _positive(r[key]), (key, r)
    # NequIP's neighbour count within 5 Angstrom of a 42-atom peptide: well above 0, below 41
    assert 5.0 < records[1]["avg_num_neighbors"] < 41.0


@pytest.mark.slow  # ~27 s; the estimator itself: tests/test_estimator.py
def test_estimator_quick_x64():
    """float64: the estimator and the dense baseline must agree to round-off (~1e-12 seen;
    1e-6 leaves room for other BLAS orders while still catching any estimator error, which
    would show up at O(1)); the 256-frame configuration exceeds the baseline size limit
    (256 x 417 params x 8 B = 0.85 MB > 0.4 MB) and must be skipped, not run."""
    records = run_script("estimator.py", "--quick", "--x64", "--frames", "64", "256",
                         "--max-baseline-gb", "0.0004", "--structure", "benchmarks/aspirin.xyz")
    assert [r["n_frames"] for r in records] == [64, 256]
    ran, skipped = records
    for r in records:
        assert r["bench"] == "estimator" and r["dtype"] == "float64"
        assert r["n_atoms"] == 21 and r["n_bins"] == 500 and r["chunk_size"] == 16
        for key in ("estimator_s", "estimator_temp_gb", "estimator_peak_rss_gb",
                    "energy_force_chunked_s", "estimator_over_energy_force"):
            assert _positive(r[key]), (key, r)
        assert r["estimator_peak_rss_gb"] >= r["estimator_setup_rss_gb"]
        # XLA's FLOP count of one chunk: a parameter VJP forms weight gradients on top of
        # everything a position gradient needs, so it costs more arithmetic than energy+force.
        assert _positive(r["energy_force_gflops_per_chunk"]), r
        assert r["param_vjp_flops_over_energy_force"] > 1.0, r
    assert ran["baseline"] == "ran"
    assert ran["grad_rel_diff"] < 1e-6 and ran["loss_rel_diff"] < 1e-12
    for key in ("baseline_s", "baseline_temp_gb", "baseline_peak_rss_gb", "memory_ratio",
                "time_ratio"):
        assert _positive(ran[key]), (key, ran)
    # the dense [n_frames, n_params] matrix makes the baseline's temporaries larger
    assert ran["memory_ratio"] > 1.0
    assert skipped["baseline"] == "OOM (skipped)"
    assert skipped["baseline_predicted_gb"] == pytest.approx(256 * ran["n_params"] * 8 / 1e9,
                                                             rel=1e-3)
    assert skipped["memory_ratio"] is None and "grad_rel_diff" not in skipped


@pytest.mark.slow
def test_gpu_check_script_runs_its_steps_on_the_cpu(tmp_path):
    """``benchmarks/gpu_check.sh --quick``: the GPU machine's steps at smoke-test sizes (~70 s)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable)
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--quick", str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=2 * TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env_record = json.loads((tmp_path / "gpu_check_env_cpu.json").read_text())
    assert env_record["backend"] == "cpu" and env_record["versions"]["jax-md"]
    md = [json.loads(x) for x in (tmp_path / "md_throughput_cpu.jsonl").read_text().splitlines()]
    est = [json.loads(x) for x in (tmp_path / "estimator_cpu.jsonl").read_text().splitlines()]
    assert {r["system"] for r in md} == {"aspirin", "lj_fluid"}
    assert all(_positive(r["replica_steps_per_s"]) for r in md)
    assert len(est) == 1 and est[0]["baseline"] == "ran" and est[0]["n_atoms"] == 21


@pytest.mark.slow  # ~32 s; the model itself: tests/test_gemnet.py
def test_bench_gemnet_quick():
    records = run_script("bench_gemnet.py", "--quick")
    assert [(r["system"], r["batch"]) for r in records] == [("water", 2), ("aspirin", 2)]
    for r in records:
        assert _positive(r["frames_per_s"]) and _positive(r["train_step_over_energy_force"])
        assert _positive(r["param_vjp_over_energy_force"])
        assert r["param_vjp_flops_over_energy_force"] is None or _positive(
            r["param_vjp_flops_over_energy_force"])
    assert records[0]["neighbour_slots"] > 0 and records[1]["neighbour_slots"] is None


@pytest.mark.slow  # ~45 s: the ASE, OpenMM and stablejax paths of the water box
def test_md_throughput_gemnet_water_quick():
    """The MD-step-over-force figure of GemNet-T on the water box (tiny model, smoke test)."""
    records = run_script("md_throughput.py", "--quick", "--systems", "water", "--water-model",
                         "gemnet-t", "--replicas", "1", "--dtypes", "float32",
                         "--openmm-steps", "10")
    mine = [r for r in records if r["engine"] == "stablejax"]
    assert len(mine) == 1 and mine[0]["model"] == "gemnet-t"
    assert _positive(mine[0]["step_over_force_ratio"]) and not mine[0]["neighbor_overflow"]


@pytest.mark.slow  # ~25 s; the estimator itself: tests/test_localized.py
def test_bench_localized_quick():
    records = run_script("bench_localized.py", "--quick")
    assert [r["n_environments"] for r in records] == [16, 64]
    for r in records:
        assert _positive(r["grad_s"]) and _positive(r["grad_over_energy_force"])
    if records[0]["temp_mb"] is not None:  # memory flat in the number of environments
        assert records[1]["temp_mb"] <= 1.1 * records[0]["temp_mb"]


@pytest.mark.slow  # ~100 s: one process per device count, both systems
def test_scaling_quick():
    records = run_script("scaling.py", "--quick", "--devices", "1", "2", "--repeats", "1",
                         "--steps", "20", "--frames", "32")
    assert sorted((r["system"], r["devices"]) for r in records) == [
        ("aspirin", 1), ("aspirin", 2), ("water", 1), ("water", 2)]
    for r in records:
        assert _positive(r["replica_steps_per_s"]) and _positive(r["estimator_s"])
        assert _positive(r["parallel_efficiency"])
