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


@pytest.fixture(scope="session")
def ethanol_model_dirs(tmp_path_factory):
    """(model_dir, data_dir): a tiny GFN2-xTB ethanol data set and an untrained 1-layer SchNet
    model directory (model.json + best/), shared by the CLI and evaluation tests."""
    import jax

    from stablejax.data import generate_dataset, load_dataset, scale_config
    from stablejax.io.checkpoint import save_checkpoint
    from stablejax.train.model_spec import spec_from_data

    root = tmp_path_factory.mktemp("ethanol")
    cfg = scale_config("ethanol", n_train=6, n_val=2, n_test=4, reference_ps=0.02,
                       equilibration_ps=0.01, chunk_frames=2, sample_every=5,
                       reference_sample_every=5)
    data = generate_dataset(cfg, root / "data", n_workers=1)
    ds = load_dataset(data)
    spec = spec_from_data("schnet", ds.train, n_interactions=1, hidden_features=8, n_filters=8,
                          n_gaussians=8)
    model_dir = root / "model"
    model_dir.mkdir()
    spec.save(model_dir / "model.json")
    params = spec.build().init(jax.random.PRNGKey(0), ds.train.positions[0])
    save_checkpoint(model_dir / "best", 0, {"params": params})
    return model_dir, data


@pytest.fixture(scope="session")
def lj():
    """The LJ fluid of ``tests/lj_fluid.py`` (reference run and StABlE problem), built once."""
    from lj_fluid import make_lj

    return make_lj()


try:  # the fuzz tests' profiles (hypothesis is in the dev extra)
    from hypothesis import HealthCheck, settings
except ImportError:
    pass
else:
    # "ci" (default): derandomised, so every run draws the same examples; no example database.
    settings.register_profile(
        "ci", derandomize=True, max_examples=200, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    # HYPOTHESIS_PROFILE=long: random draws, many more examples; failures are kept in
    # .hypothesis/ and replayed first on the next run.
    settings.register_profile(
        "long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
