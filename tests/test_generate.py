"""Real GFN2-xTB (tblite) data generation on ethanol (9 atoms, ~1 ms per call)."""

import json

import numpy as np
import pytest

from stablejax.data import bonds_from_structure, load_dataset, scale_config
from stablejax.data.generate import generate_dataset
from stablejax.data.structures import embed_smiles, smiles_bonds
from stablejax.data.xtb import energy_forces
from stablejax.io import read_npz


def _tiny(**kw):
    base = dict(n_train=12, n_val=3, n_test=6, reference_ps=0.05, equilibration_ps=0.02,
                chunk_frames=3, sample_every=5, reference_sample_every=5)
    return scale_config("ethanol", "demo", **{**base, **kw})


@pytest.fixture(scope="module")
def ethanol_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return generate_dataset(_tiny(), root, n_workers=1)


def test_dataset_layout_and_labels_match_direct_tblite(ethanol_dir):
    ds = load_dataset(ethanol_dir)
    assert (ds.train.n_frames, ds.val.n_frames, ds.test.n_frames) == (12, 3, 6)
    assert ds.reference.n_frames == 20  # 0.05 ps / (5 * 0.5 fs)
    assert ds.reference_interval_fs == pytest.approx(2.5)
    # Stored labels (ASE calculator during MD) equal a direct tblite call, in eV and eV/A.
    for i in (0, 5, 11):
        e, f = energy_forces(ds.train.atomic_numbers, ds.train.positions[i])
        assert ds.train.energies[i] == pytest.approx(e, abs=1e-6)
        # MD calls start the SCF from the previous step's density, the direct call from scratch:
        # they agree to the SCF tolerance (~1e-4 eV/A), far below any model's force error.
        np.testing.assert_allclose(ds.train.forces[i], f, rtol=0, atol=2e-4)
    meta = json.loads((ethanol_dir / "settings.json").read_text())
    assert meta["temperature_k"] == 500.0 and meta["timestep_fs"] == 0.5
    # Frames were sampled from MD: they differ from each other and from equilibrium.
    assert np.ptp(ds.train.energies) > 0.01


def test_splits_do_not_share_trajectories(ethanol_dir):
    ds = load_dataset(ethanol_dir)
    train_R = {r.tobytes() for r in ds.train.positions}
    test_R = {r.tobytes() for r in ds.test.positions}
    assert not train_R & test_R
    # Test frames come only from the last 2 trajectories, train/val from the first 6.
    test_chunks = [np.load(p)["R"] for p in sorted(ethanol_dir.glob("work/traj0[67]/chunk*.npz"))]
    test_pool = {r.tobytes() for c in test_chunks for r in c}
    assert test_R <= test_pool and not (train_R & test_pool)


def test_system_topology(ethanol_dir):
    ds = load_dataset(ethanol_dir)
    # Covalent-radius bonds on the GFN2 minimum agree with the SMILES bond graph.
    np.testing.assert_array_equal(ds.system.bonds, smiles_bonds("CCO"))
    eq = ds.system.equilibrium_positions
    e, f = energy_forces(ds.system.atomic_numbers, eq)
    assert np.abs(f).max() < 0.02  # optimised to fmax 0.01 eV/A
    assert np.all((ds.system.reference_bond_lengths > 0.9) & (ds.system.reference_bond_lengths < 1.6))


def test_forces_are_minus_energy_gradient():
    z, R = embed_smiles("CCO", seed=1)
    _, F = energy_forces(z, R)
    h = 1e-4
    for atom, axis in ((0, 0), (3, 1), (8, 2)):
        Rp, Rm = R.copy(), R.copy()
        Rp[atom, axis] += h
        Rm[atom, axis] -= h
        fd = -(energy_forces(z, Rp)[0] - energy_forces(z, Rm)[0]) / (2 * h)
        assert F[atom, axis] == pytest.approx(fd, abs=2e-4)


def test_resume_after_interrupt_gives_identical_frames(tmp_path):
    cfg = _tiny(seed=5)
    calls = {"n": 0}

    def interrupt_after_some_chunks(done, total, info):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(cfg, tmp_path / "a", n_workers=1, progress=interrupt_after_some_chunks)
    interrupted = next((tmp_path / "a").glob("ethanol/ethanol-*"))
    assert not (interrupted / "complete.json").exists()
    n_kept = len(list(interrupted.glob("work/*/chunk*.npz")))
    assert n_kept == 5
    resumed = generate_dataset(cfg, tmp_path / "a", n_workers=1)
    fresh = generate_dataset(cfg, tmp_path / "b", n_workers=1)
    for split in ("train", "val", "test", "reference"):
        a, b = read_npz(resumed / f"{split}.npz"), read_npz(fresh / f"{split}.npz")
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.energies, b.energies)


def test_parallel_workers_give_same_data(tmp_path, ethanol_dir):
    par = generate_dataset(_tiny(), tmp_path, n_workers=2)
    for split in ("train", "test", "reference"):
        a, b = read_npz(par / f"{split}.npz"), read_npz(ethanol_dir / f"{split}.npz")
        np.testing.assert_array_equal(a.positions, b.positions)


def test_cache_dir_keyed_by_settings(tmp_path, monkeypatch):
    a, b = _tiny(), _tiny(seed=1)
    assert a.digest() != b.digest() and a.digest() == _tiny().digest()
    monkeypatch.setenv("STABLEJAX_DATA", str(tmp_path / "env"))
    from stablejax.data import resolve_data_dir

    assert resolve_data_dir() == (tmp_path / "env").resolve()
    assert resolve_data_dir(tmp_path / "x") == (tmp_path / "x").resolve()


def test_bad_config_errors():
    with pytest.raises(ValueError, match="unknown system 'benzene'"):
        scale_config("benzene")
    with pytest.raises(ValueError, match="unknown scale"):
        scale_config("aspirin", "huge")
    with pytest.raises(ValueError, match="n_train must be positive"):
        scale_config("aspirin", n_train=0)
    with pytest.raises(ValueError, match="bonds_from_structure"):
        bonds_from_structure(np.zeros((3, 3)), np.array([1, 1]))


def test_killing_data_generate_ends_its_workers(tmp_path):
    """SIGKILL of ``data generate --workers 2`` must not leave its pool workers running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "stablejax", "data", "generate", "ethanol",
                             "--data-dir", str(tmp_path), "--workers", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children(pid):
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    try:
        deadline = time.monotonic() + 120
        workers = []
        # spawn's resource tracker is a child too; the pool's workers are the others
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = [p for p in children(proc.pid)
                       if "resource_tracker" not in open(f"/proc/{p}/cmdline").read()]
        assert len(workers) >= 2, "the pool's workers never started"
        time.sleep(2.0)  # let them import and reach their initialiser
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in workers):
            for p in workers:  # reap zombies re-parented to us, if any
                try:
                    os.waitpid(p, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.5)
        alive = [p for p in workers if os.path.exists(f"/proc/{p}")
                 and "Z" not in open(f"/proc/{p}/stat").read().split()[2]]
        assert not alive, f"workers {alive} outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
