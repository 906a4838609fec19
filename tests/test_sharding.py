"""Sharding over devices (stablejax.sharding): the same results on 1, 2 and 4 host devices.

The agreement runs in a subprocess (tests/sharding_worker.py) because the host device count
must be set before JAX starts (``XLA_FLAGS=--xla_force_host_platform_device_count=4``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stablejax import sharding
from stablejax.errors import InputError

WORKER = Path(__file__).with_name("sharding_worker.py")
# float64: reductions in another order only; float32: the same, at float32 rounding
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


@pytest.mark.parametrize("dtype,counts,resume", [
    # make test-slow (with the two-process test below; default-suite time): 1 vs 4 devices in
    # float64 (~70 s), the StABlE checkpoint saved on 4 devices and resumed on 1 and the
    # reverse (~25 s more), float32 on 2 devices (~45 s)
    pytest.param("float64", "4", False, marks=pytest.mark.slow),
    pytest.param("float64", "4", True, marks=pytest.mark.slow),
    pytest.param("float32", "2", False, marks=pytest.mark.slow),
])
def test_one_two_four_devices_agree(dtype, counts, resume):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu", SHARDING_RESUME="1" if resume else "0")
    proc = subprocess.run([sys.executable, str(WORKER), dtype, counts], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    diffs = {k: v for k, v in result.items() if k not in ("dtype", "devices")}
    # energies/forces, both scalings of the global and the localized estimator, the QM loss
    # gradient (MSE and L2-MAE forces), per device count
    # float64 only: trajectories (chaotic MD) and a 3-epoch StABlE run (phases, parameters;
    # checkpointed after 2 epochs on k devices and resumed on 1, and the reverse)
    per_count = (10 + 2 * resume) if dtype == "float64" else 7
    assert len(diffs) == per_count * len(counts.split(",")), diffs
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE[dtype]}
    assert not bad, f"{dtype}: differences to the 1-device results above " \
                    f"{TOLERANCE[dtype]}: {bad}"


def test_mesh_errors_are_one_line():
    with pytest.raises(InputError, match=r"n_devices=64 but only \d+ cpu device"):
        sharding.make_mesh(64)
    with pytest.raises(InputError, match="n_devices must be an integer >= 1"):
        sharding.make_mesh(0)
    with pytest.raises(InputError, match="must be a jax.sharding.Mesh"):
        sharding.check_mesh("cpu")
    other = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("batch",))
    with pytest.raises(InputError, match="one axis 'data'"):
        sharding.check_mesh(other)


def test_single_device_mesh_is_the_plain_code():
    mesh = sharding.make_mesh(1)
    assert not sharding.is_parallel(mesh) and sharding.n_shards(None) == 1
    x = jnp.arange(5.0)
    assert sharding.map_leading(lambda s, v: v * s, mesh, 2.0, x) is not None
    np.testing.assert_array_equal(sharding.map_leading(lambda s, v: v * s, mesh, 2.0, x), 2 * x)
    assert "5 replicas on 1 device" in sharding.describe(mesh, 5, "replicas")


def test_padding_helpers():
    tree = {"a": jnp.arange(3.0), "b": jnp.ones((3, 2))}
    padded = sharding.pad_leading(tree, 8)
    assert padded["a"].shape == (8,) and padded["b"].shape == (8, 2)
    np.testing.assert_array_equal(padded["a"][3:], 0.0)  # copies of element 0
    back = sharding.take_leading(padded, 3)
    np.testing.assert_array_equal(back["a"], tree["a"])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MULTI_HOST_WORKER = Path(__file__).with_name("multihost_worker.py")


def _two_processes(run_dir: Path, epochs: int, returncode: int = 0, **env_vars) -> list[dict]:
    """tests/multihost_worker.py in two processes joined by jax.distributed on localhost."""
    address = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", **env_vars)
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, str(MULTI_HOST_WORKER), str(run_dir),
                               str(epochs), address, str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == returncode, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def _start_one_process(run_dir: Path, epochs: int, devices: int = 2) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, str(MULTI_HOST_WORKER), str(run_dir), str(epochs),
                             "--single"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _one_process(run_dir: Path, epochs: int, devices: int = 2) -> dict:
    return _result(_start_one_process(run_dir, epochs, devices))


def _check_multi_host_run(run_dir: Path, epochs: int, results: list[dict], single: dict):
    p0, p1 = sorted(results, key=lambda r: r["process"])
    assert p0["sigma"] == p1["sigma"] == single["sigma"]  # float64, the same 2-device mesh
    assert p1["log_records"] == 0 and p0["log_records"] > 0  # logs from process 0 only
    records = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(epochs))  # written once


@pytest.mark.slow  # make test-slow (default-suite time)
def test_two_processes_on_localhost_train_as_one(tmp_path):
    """jax.distributed with two CPU processes (one device each, a 2-device mesh) trains the LJ
    fluid like one process with two devices: the same parameters, one metrics log, one
    checkpoint per epoch, logs from process 0 only."""
    reference = _start_one_process(tmp_path / "single", 2)  # runs beside the two processes
    results = _two_processes(tmp_path / "multi", 2)
    single = _result(reference)
    assert results[0]["phases"] == single["phases"] == ["simulation", "learning"]
    _check_multi_host_run(tmp_path / "multi", 2, results, single)
    assert sorted(p.name for p in (tmp_path / "multi" / "checkpoints").iterdir()) == ["1", "2"]


@pytest.mark.slow
def test_multi_host_checkpoint_resumes_anywhere(tmp_path):
    """~100 s: two processes train 2 epochs and resume for a third, refuse to resume with
    another config (both with process 0's error); one process with one device then resumes
    the same run directory for a fourth."""
    multi = tmp_path / "multi"
    _two_processes(multi, 2)
    results = _two_processes(multi, 3)
    assert results[0]["phases"] == ["learning"]
    _check_multi_host_run(multi, 3, results, _one_process(tmp_path / "single", 3))
    # another config: both processes refuse to resume with process 0's one-line error
    refused = _two_processes(multi, 4, returncode=2, LEARNING_RATE="0.1")
    assert refused[0]["error"] == refused[1]["error"]
    assert "optimizer.learning_rate: 0.3 -> 0.1" in refused[0]["error"], refused
    last = _one_process(multi, 4, devices=1)
    assert len(last["phases"]) == 1
    assert len((multi / "metrics.jsonl").read_text().splitlines()) == 4


def test_unreachable_coordinator_is_a_one_line_error():
    env = dict(os.environ, STABLEJAX_COORDINATOR=f"127.0.0.1:{_free_port()}",
               STABLEJAX_NUM_PROCESSES="2", STABLEJAX_PROCESS_ID="1",
               STABLEJAX_DIST_TIMEOUT="2")
    proc = subprocess.run([sys.executable, "-m", "stablejax", "--distributed", "train"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not be reached within 2 s" in lines[0], proc.stderr


def test_devices_option_is_checked():
    proc = subprocess.run([sys.executable, "-m", "stablejax", "--devices", "x", "train"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--devices needs an integer >= 1" in proc.stderr
