"""SPC/Fw water reference data from OpenMM: format, resume, water-likeness, force consistency."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openmm")

from stablejax.data import load_dataset  # noqa: E402
from stablejax.data.water import generate_water, plan_water_jobs, water_chunk_path  # noqa: E402
from stablejax.data.water_config import WaterConfig, water_config  # noqa: E402
from stablejax.errors import InputError  # noqa: E402
from stablejax.io.npz import load_arrays, read_metadata  # noqa: E402

N_MOL = 16


def tiny(**kw) -> WaterConfig:
    """16 molecules (edge 7.83 A, cutoff 3.6 A), 0.5 ps equilibration, 0.2-ps chunks."""
    return water_config("demo", **{
        "n_molecules": N_MOL, "equilibration_ps": 0.5, "chunk_steps": 200, "n_train": 12,
        "n_val": 4, "n_test": 6, "n_trajectories": 2, "n_test_trajectories": 1,
        "reference_ps": 1.0, "reference_sample_every": 50, **kw})


@pytest.fixture(scope="module")
def water_set(tmp_path_factory):
    cfg = tiny()
    root = generate_water(cfg, tmp_path_factory.mktemp("water"), n_workers=1)
    return cfg, root


def test_format(water_set):
    cfg, root = water_set
    ds = load_dataset(root)
    n_atoms = 3 * N_MOL
    edge = cfg.edge_angstrom
    assert abs(edge - 7.8302) < 1e-3 and cfg.cutoff == 3.6
    assert root.parent.name == "water16" and root.name == f"water16-{cfg.digest()}"
    assert {k: getattr(ds, k).n_frames for k in ("train", "val", "test", "reference")} == {
        "train": 12, "val": 4, "test": 6, "reference": 20}
    assert ds.reference_interval_fs == 50.0
    for f in (ds.train, ds.val, ds.test, ds.reference):
        assert f.positions.shape[1:] == (n_atoms, 3) and f.forces.shape == f.positions.shape
        assert f.pbc == (True, True, True)
        np.testing.assert_allclose(f.cell, edge * np.eye(3))
        assert ((f.energies / N_MOL > -1.0) & (f.energies / N_MOL < 0.0)).all()  # eV/molecule
        rms = np.sqrt((f.forces**2).mean())
        assert 0.3 < rms < 5.0  # eV/Angstrom
    assert ds.train.atomic_numbers.tolist() == [8, 1, 1] * N_MOL
    s = ds.system
    np.testing.assert_array_equal(s.molecule_index, np.arange(n_atoms) // 3)
    assert s.pbc == (True, True, True) and s.cell.shape == (3, 3) and s.bonds.shape == (32, 2)
    meta = read_metadata(root / "train.npz")
    assert meta["molecule_index"] == (np.arange(n_atoms) // 3).tolist()
    assert meta["positions"].startswith("wrapped by molecule")
    assert read_metadata(root / "reference.npz")["positions"].startswith("unwrapped")
    # Training frames wrapped by molecule: whole molecules, centres in the cell.
    m = ds.train.positions.reshape(12, N_MOL, 3, 3)
    assert np.linalg.norm(m[:, :, 1:] - m[:, :, :1], axis=-1).max() < 1.3
    centres = m.mean(axis=2) / edge
    assert ((centres >= 0) & (centres < 1)).all()
    # Reference unwrapped: no jumps by a lattice vector between frames 50 fs apart.
    assert np.abs(np.diff(ds.reference.positions, axis=0)).max() < 0.3 * edge
    complete = json.loads((root / "complete.json").read_text())
    assert complete["ps_per_cpu_s"] > 0


def test_periodic_molecules_agree(water_set):
    from stablejax.data.periodic import check_cell, check_water, molecule_index

    cfg, root = water_set
    ds = load_dataset(root)
    check_cell(ds.system.cell, cutoff_angstrom=cfg.cutoff, source="water")
    for frames in (ds.train, ds.reference):
        mol = molecule_index(frames.positions[-1], frames.atomic_numbers, frames.cell)
        np.testing.assert_array_equal(mol, ds.system.molecule_index)
    check_water(ds.system.atomic_numbers, "water", molecule_index=ds.system.molecule_index)


def test_water_like(water_set):
    _, root = water_set
    ds = load_dataset(root)
    m = ds.reference.positions.reshape(ds.reference.n_frames, N_MOL, 3, 3)
    a, b = m[:, :, 1] - m[:, :, 0], m[:, :, 2] - m[:, :, 0]
    oh = np.linalg.norm(np.stack([a, b]), axis=-1)
    cos = np.sum(a * b, -1) / (oh[0] * oh[1])
    assert 0.99 < oh.mean() < 1.07  # SPC/Fw: 1.03 A
    assert 100.0 < np.degrees(np.arccos(cos)).mean() < 114.0  # SPC/Fw: 107.7 deg
    # No two molecules' atoms closer than 1.3 A.
    from stablejax.data.periodic import minimum_image

    R = ds.reference.positions[-1]
    d = np.linalg.norm(minimum_image(R[:, None] - R[None], ds.system.cell), axis=-1)
    other = ds.system.molecule_index[:, None] != ds.system.molecule_index[None]
    assert d[other].min() > 1.3


def test_forces_are_energy_gradient(water_set):
    """Stored (CPU platform) forces match finite differences of double-precision (Reference
    platform) energies."""
    from openmm import VerletIntegrator

    from stablejax.data.water_model import make_context, make_openmm_system, read_state, set_state

    cfg, root = water_set
    ds = load_dataset(root)
    _, system = make_openmm_system(cfg.n_molecules, cfg.edge_angstrom, cfg.cutoff,
                                   cfg.ewald_tolerance)
    ctx = make_context(system, VerletIntegrator(0.001), platform="Reference")
    R0, F_stored, E_stored = ds.test.positions[0], ds.test.forces[0], ds.test.energies[0]
    set_state(ctx, R0)
    _, E_ref, F_ref, _ = read_state(ctx)
    assert abs(E_ref - E_stored) < 2e-3 * abs(E_stored)
    assert np.sqrt(((F_ref - F_stored) ** 2).mean()) < 2e-2 * np.sqrt((F_ref**2).mean())
    h = 1e-4
    for atom, k in ((0, 0), (1, 1), (5, 2), (30, 0)):
        e = []
        for sign in (1, -1):
            R = R0.copy()
            R[atom, k] += sign * h
            set_state(ctx, R)
            e.append(read_state(ctx)[1])
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - F_ref[atom, k]) < 1e-3 + 1e-3 * abs(F_ref[atom, k])


class _Stop(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path, water_set):
    cfg, root_full = water_set
    stop_after = [9]

    def kill(done, total, info):
        if done >= stop_after[0]:
            raise _Stop

    with pytest.raises(_Stop):
        generate_water(cfg, tmp_path, n_workers=1, progress=kill)
    root = tmp_path / cfg.system / f"{cfg.system}-{cfg.digest()}"
    assert not (root / "complete.json").exists()
    done = sorted((root / "work").rglob("chunk*.npz"))
    assert 0 < len(done) < sum(1 for _ in (root_full / "work").rglob("chunk*.npz"))
    done[-1].unlink()  # a chunk lost (as if killed while writing it)
    stop_after[0] = 10**9
    resumed = generate_water(cfg, tmp_path, n_workers=1, progress=kill)
    for name in ("train.npz", "val.npz", "test.npz", "reference.npz", "equilibrium.npz"):
        a, b = load_arrays(resumed / name), load_arrays(root_full / name)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    job = plan_water_jobs(cfg)[0]
    assert water_chunk_path(resumed, job, 0).exists()


def test_bad_settings():
    with pytest.raises(InputError, match="below half the box edge"):
        tiny(cutoff_angstrom=4.0)
    with pytest.raises(InputError, match="multiple of sample_every"):
        tiny(chunk_steps=205)
    with pytest.raises(InputError, match="unknown scale"):
        water_config("huge")
    with pytest.raises(InputError, match="--molecules"):
        tiny(n_molecules=1)
    with pytest.raises(InputError, match="below 3.5 Angstrom.*too small"):
        tiny(n_molecules=8)
