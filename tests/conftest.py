import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite's OpenMP runtime loads

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Enable float64 for one test (restored afterwards)."""
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", prev)
