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


@pytest.mark.parametrize("dtype,counts", [("float64", "2,4"), ("float32", "4")])
def test_one_two_four_devices_agree(dtype, counts):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(WORKER), dtype, counts], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    diffs = {k: v for k, v in result.items() if k not in ("dtype", "devices")}
    # trajectories (6 replicas padded to 8 on 4 devices), energies/forces, both scalings of
    # the global and the localized estimator, per device count
    per_count = 6 if dtype == "float64" else 5  # trajectories: float64 only (chaotic MD)
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
