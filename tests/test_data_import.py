"""``data import``: a user's labelled trajectories (MD17-style npz, extxyz, ASE .traj) as a data
set directory; contiguous-block splits, the inferred system, reuse, errors, pre-training."""

import json

import numpy as np
import pytest

from stablejax.cli.main import main
from stablejax.data import ImportConfig, dataset_info, import_dataset, load_dataset
from stablejax.errors import InputError
from stablejax.units import KCAL_PER_MOL_EV

WATER = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


def _images(n, seed=0, symbols="OH2", base=WATER):
    """A correlated random walk of a small molecule labelled by ASE's EMT (format plumbing)."""
    from ase import Atoms
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    R = base + np.cumsum(0.01 * rng.normal(size=(n, *base.shape)), axis=0)
    out = []
    for r in R:
        a = Atoms(symbols, positions=r)
        a.calc = EMT()
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
        out.append(a)
    return out


def _npz_kcal(path, images):
    """An MD17-style file: R, z, E [frames, 1], F in kcal/mol and kcal/mol/A, no unit keys."""
    E = np.array([a.get_potential_energy() for a in images]) / KCAL_PER_MOL_EV
    F = np.stack([a.get_forces() for a in images]) / KCAL_PER_MOL_EV
    np.savez(path, R=np.stack([a.positions for a in images]), z=images[0].numbers,
             E=E[:, None], F=F)
    return path


def _write(path, images, fmt):
    import ase.io

    ase.io.write(path, images, format=fmt)
    return path


def test_md17_npz_one_trajectory_contiguous_blocks(tmp_path):
    images = _images(40)
    src = _npz_kcal(tmp_path / "md17_water.npz", images)
    res = import_dataset(ImportConfig("water", (src,), energy_unit="kcal/mol", n_train=10,
                                      temperature_k=300.0), tmp_path / "cache")
    assert not res.reused and res.path.parent == (tmp_path / "cache" / "water").resolve()
    ds = load_dataset(res.path)
    assert (ds.train.n_frames, ds.val.n_frames, ds.test.n_frames) == (10, 3, 6)
    # 40 frames: pool 0..31 (train 0..28, val 29..31), gap 32..33, test 34..39.
    E = np.array([a.get_potential_energy() for a in images])
    np.testing.assert_allclose(ds.test.energies, E[34:], rtol=1e-6)  # kcal/mol -> eV
    np.testing.assert_allclose(ds.val.energies, E[29:32], rtol=1e-6)
    np.testing.assert_allclose(ds.train.energies, E[0:29:2][:10], rtol=1e-6)  # stride 29 // 10
    s = res.summary
    assert s["splits"]["train"]["frames"] == [{"file": str(src), "first": 0, "last": 18,
                                               "n_frames": 10, "stride": 2}]
    assert s["splits"]["reference"]["n_frames"] == 32  # the pool, every frame
    assert ds.reference_interval_fs == 0.5 and ds.system.temperature_k == 300.0
    k = int(np.argmin(ds.train.energies))
    np.testing.assert_allclose(ds.system.equilibrium_positions, ds.train.positions[k])
    assert ds.system.bonds.tolist() == [[0, 1], [0, 2]]
    np.testing.assert_allclose(ds.system.reference_bond_lengths,
                               np.linalg.norm(ds.train.positions[:, 1:] - ds.train.positions[:, :1],
                                              axis=-1).mean(0))
    # The same inputs again: the same directory, reused; other settings: another directory.
    again = import_dataset(ImportConfig("water", (src,), energy_unit="kcal/mol", n_train=10,
                                        temperature_k=300.0), tmp_path / "cache")
    assert again.reused and again.path == res.path
    other = import_dataset(ImportConfig("water", (src,), energy_unit="kcal/mol", n_train=8,
                                        temperature_k=300.0), tmp_path / "cache")
    assert other.path != res.path
    # An npz without units needs --energy-unit.
    with pytest.raises(InputError, match="does not state its energy unit"):
        import_dataset(ImportConfig("water", (src,)), tmp_path / "cache")


def test_extxyz_files_split_by_file_and_out_dir_rules(tmp_path):
    a = _write(tmp_path / "a.extxyz", _images(12, seed=1), "extxyz")
    b = _write(tmp_path / "b.extxyz", _images(8, seed=2), "extxyz")
    out = tmp_path / "ds"
    res = import_dataset(ImportConfig("water", (a, b)), out=out)
    ds = load_dataset(out)
    assert res.path == out and (ds.test.n_frames, ds.train.n_frames, ds.val.n_frames) == (8, 11, 1)
    assert res.summary["splits"]["test"]["block"] == f"{b} frames 0..7"
    assert res.summary["splits"]["reference"]["block"] == f"{a} frames 0..11"
    # Same inputs, same --out: reused. Other inputs into it: refused.
    assert import_dataset(ImportConfig("water", (a, b)), out=out).reused
    with pytest.raises(InputError, match="holds another imported data set"):
        import_dataset(ImportConfig("water", (b, a)), out=out)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        import_dataset(ImportConfig("water", (a, b)), out=tmp_path / "junk")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_ase_traj_with_test_and_reference_files(tmp_path):
    train = _write(tmp_path / "train.traj", _images(10, seed=3), "traj")
    test = _write(tmp_path / "test.traj", _images(5, seed=4), "traj")
    ref = _images(30, seed=5)
    for im in ref:
        im.calc = None  # a reference trajectory may be unlabelled
    ref = _write(tmp_path / "ref.traj", ref, "traj")
    res = import_dataset(ImportConfig("water", (train,), test_files=(test,),
                                      reference_files=(ref,), max_reference_frames=10,
                                      frame_interval_fs=1.0), tmp_path)
    ds = load_dataset(res.path)
    assert ds.reference.n_frames == 10 and ds.reference_interval_fs == 3.0
    assert (ds.train.n_frames, ds.val.n_frames, ds.test.n_frames) == (9, 1, 5)
    info = dataset_info(res.path)
    assert info["made_by"] == "data import" and info["formula"] == "H2O"
    assert info["bond_types"] == {"H-O": 2} and info["import"]["digest"] in str(res.path)


@pytest.mark.parametrize("case, match", [
    ("periodic", "partly periodic frames"),
    ("species", "differ from those of"),
    ("unlabelled", "no energies and forces; train frames must be labelled"),
    ("too_few", "too few to split"),
    ("n_train", "--n-train 50 but the train block has only"),
    ("twice", "given twice"),
])
def test_import_errors(tmp_path, case, match):
    import ase.io

    imgs = _images(20, seed=6)
    path = _write(tmp_path / "a.extxyz", imgs, "extxyz")
    kw = {}
    files = (path,)
    if case == "periodic":
        for im in imgs:
            im.set_cell([10.0, 10.0, 10.0])
            im.pbc = (True, True, False)
        ase.io.write(path, imgs, format="extxyz")
    elif case == "species":
        files = (path, _write(tmp_path / "b.extxyz", _images(5, symbols="NH2"), "extxyz"))
    elif case == "unlabelled":
        for im in imgs:
            im.calc = None
        ase.io.write(path, imgs, format="extxyz")
    elif case == "too_few":
        files = (_write(tmp_path / "c.extxyz", imgs[:2], "extxyz"),)
    elif case == "n_train":
        kw["n_train"] = 50
    elif case == "twice":
        kw["test_files"] = (path,)
    with pytest.raises(InputError, match=match):
        import_dataset(ImportConfig("water", files, **kw), tmp_path / "cache")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import stablejax.data.importer as importer

    path = _write(tmp_path / "a.extxyz", _images(20), "extxyz")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(importer, "_write", boom)
    with pytest.raises(OSError, match="disk full"):
        import_dataset(ImportConfig("water", (path,)), out=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.extxyz"]


def test_cli_import_info_and_errors(tmp_path, capsys):
    src = _npz_kcal(tmp_path / "md17.npz", _images(30, seed=7))
    out = tmp_path / "ds"
    argv = ["data", "import", str(src), "--name", "water", "--out", str(out),
            "--energy-unit", "kcal/mol", "--temperature-k", "350"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "H2O, 3 atoms, 2 bonds" in text and "350 K" in text and "(new)" in text
    assert main(argv) == 0 and "existing, reused" in capsys.readouterr().out
    assert main(["data", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["temperature_k"] == 350.0 and info["frames"]["test"] == 4
    assert set(info["label_stats"]) == {"train", "val", "test", "reference"}
    assert main(["data", "import", str(src), "--name", "water", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "energy unit" in err and err.count("\n") == 1
    assert main(["data", "import", str(src), "--name", "bad/name"]) == 1
    assert main(["data", "import", str(tmp_path / "missing.npz"), "--name", "w"]) == 1
    with pytest.raises(SystemExit) as e:  # a usage error: --name is required
        main(["data", "import", str(src)])
    assert e.value.code == 2


def test_pretrain_on_imported_data(tmp_path):
    from stablejax.pipeline import pretrain_on_dataset
    from stablejax.train import PretrainConfig

    src = _write(tmp_path / "water.extxyz", _images(30, seed=8), "extxyz")
    res = import_dataset(ImportConfig("water", (src,), n_train=8, n_val=2, n_test=4),
                         out=tmp_path / "ds")
    cfg = PretrainConfig(max_epochs=1, batch_size=4, warmup_steps=0, eval_batch_size=4)
    out = pretrain_on_dataset(load_dataset(res.path), "schnet", cfg, tmp_path / "run",
                              model_overrides=dict(n_interactions=1, hidden_features=8,
                                                   n_filters=8, n_gaussians=8))
    assert out["epochs"] == 1 and out["system"] == "water"
    assert np.isfinite(out["test_force_mae_mev_per_angstrom"])
