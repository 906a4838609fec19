import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before tblite's OpenMP runtime loads

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Enable float64 for one test (restored afterwards)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def x64_module():
    """Enable float64 for a whole test module: ``pytestmark =
    pytest.mark.usefixtures("x64_module")``."""
    with jax.enable_x64(True):
        yield
