"""``python -m stablejax simulate``: outputs, stability table, summary, errors (tiny ethanol)."""

import csv
import json

import numpy as np
import pytest

from stablejax.cli.main import main
from stablejax.data import load_dataset
from stablejax.io import read_frames
from stablejax.observables import bond_lengths


@pytest.fixture(scope="module")
def dirs(ethanol_model_dirs):
    return ethanol_model_dirs


def _run(model_dir, data, out, *extra):
    return main(["simulate", "--model", str(model_dir), "--data", str(data),
                 "--n-replicas", "3", "--time-ps", "0.02", "--dt-fs", "0.5",
                 "--frame-interval-fs", "5", "--frames-per-chunk", "2", "--out", str(out),
                 *extra])


def test_simulate_extxyz(dirs, tmp_path, capsys):
    model_dir, data = dirs
    ds = load_dataset(data)
    out = tmp_path / "out"
    assert _run(model_dir, data, out) == 0
    # 20 fs at 5 fs per frame = 4 frames per replica, written in 2 chunks of 2 frames.
    rows = list(csv.DictReader(open(out / "stability.csv")))
    assert [int(r["replica"]) for r in rows] == [0, 1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and not summary["interrupted"]
    assert summary["simulated_ps"] == pytest.approx(0.02)
    assert summary["n_replicas"] == 3
    n_unstable = 0
    for r in rows:
        frames = read_frames(out / "trajectories" / f"replica_{int(r['replica']):04d}.extxyz")
        assert frames.n_frames == int(r["n_frames"])
        np.testing.assert_array_equal(frames.atomic_numbers, ds.system.atomic_numbers)
        stable = r["stable_whole_run"] == "True"
        assert stable == (r["first_unstable_time_ps"] == "")
        n_unstable += not stable
        if frames.n_frames:
            # The table's max deviation is the bond criterion on the written frames (float32).
            dev = np.abs(bond_lengths(frames.positions, ds.system.bonds)
                         - ds.system.reference_bond_lengths).max()
            assert float(r["max_bond_deviation_angstrom"]) == pytest.approx(dev, abs=1e-4)
            # Starts from test structures: 20 fs at 500 K moves atoms by well under 1 A.
            R0 = ds.test.positions[int(r["start_test_frame"])]
            assert np.abs(frames.positions[0] - R0).max() < 1.0
    assert summary["n_unstable"] == n_unstable
    assert summary["n_stable_whole_run"] == 3 - n_unstable
    if summary["n_stable_frames"]:
        assert summary["hr_mae"] >= 0 and summary["bond_length_distribution_mae"] >= 0
    record = json.loads((out / "inputs.json").read_text())
    assert record["model"]["dir"] == str(model_dir.resolve())
    assert record["settings"]["md"]["dt_fs"] == 0.5 and record["settings"]["n_replicas"] == 3
    # The same command again returns the finished result; other settings need --overwrite.
    assert _run(model_dir, data, out) == 0
    assert "already holds this simulation (same settings)" in capsys.readouterr().out
    assert _run(model_dir, data, out, "--format", "npz") == 1
    assert '--format: "extxyz" -> "npz"' in capsys.readouterr().err
    assert _run(model_dir, data, out, "--overwrite", "--format", "npz") == 0
    with np.load(out / "trajectories.npz") as z:
        assert z["positions"].shape == (3, 4, ds.system.n_atoms, 3)
        np.testing.assert_allclose(z["time_ps"], [0.005, 0.01, 0.015, 0.02])
    assert not (out / "trajectories").exists() and not (out / "partial").exists()


def test_errors(dirs, tmp_path, capsys):
    model_dir, data = dirs
    # Bad values are rejected by the config classes while parsing (usage error, rc 2).
    for flags, message in [
            (("--time-ps", "-1"), "SimulateArgs.time_ps must be > 0, got -1.0"),
            (("--frame-interval-fs", "0.7"),
             "MDConfig.frame_interval_fs must be a positive multiple of dt_fs=0.5, got 0.7")]:
        with pytest.raises(SystemExit) as exit_info:
            _run(model_dir, data, tmp_path / "a", *flags)
        assert exit_info.value.code == 2
        assert message in " ".join(capsys.readouterr().err.split())
    assert _run(tmp_path / "missing", data, tmp_path / "b") == 1
    assert "no such model directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _run(tmp_path / "empty", data, tmp_path / "c") == 1
    assert "model.json" in capsys.readouterr().err
    assert _run(model_dir, tmp_path / "nodata", tmp_path / "d") == 1
    assert "not a data set directory" in capsys.readouterr().err
    # A bad flag or input is rejected before anything in --out is touched (nothing is lost).
    keep = tmp_path / "f"
    keep.mkdir()
    (keep / "summary.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        _run(model_dir, data, keep, "--overwrite", "--gamma-per-ps", "-1")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --gamma-per-ps: MDConfig.gamma_per_ps must be > 0, got -1.0")
    assert err.count("\n") == 1
    assert _run(model_dir, tmp_path / "nodata", keep, "--overwrite") == 1
    assert "not a data set directory" in capsys.readouterr().err
    assert [p.name for p in keep.iterdir()] == ["summary.json"]
    assert (keep / "summary.json").read_text() == "{}"
    # An output directory of unknown settings is not replaced without --overwrite.
    assert _run(model_dir, data, keep) == 1
    assert "inputs.json missing (settings unknown)" in capsys.readouterr().err


def test_ctrl_c_keeps_what_was_simulated(dirs, tmp_path, monkeypatch, capsys):
    """A Ctrl-C after the first chunk (of two) leaves its table, summary and npz in
    ``--out/partial`` and says so; a Ctrl-C before any chunk says that nothing is kept."""
    import stablejax.cli.simulate as cli_simulate

    class InterruptingBar(cli_simulate.ProgressBar):
        def __call__(self, done, total, info=None):
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_simulate, "ProgressBar", InterruptingBar)
    model_dir, data = dirs
    out = tmp_path / "out"
    assert _run(model_dir, data, out, "--format", "npz") == 130
    assert ("interrupted: 1 of 2 chunks (0.01 ps per replica) are kept in "
            f"{out / 'partial'}; run the same command to resume") in capsys.readouterr().err
    part = out / "partial"
    summary = json.loads((part / "summary.json").read_text())
    assert summary["interrupted"] and not summary["finished"]
    assert summary["simulated_ps"] == pytest.approx(0.01)  # one chunk: 2 frames x 5 fs
    assert not (out / "summary.json").exists()
    rows = list(csv.DictReader(open(part / "stability.csv")))
    assert len(rows) == 3
    with np.load(part / "trajectories.npz") as z:
        assert z["positions"].shape[:2] == (3, 2)
        assert json.loads(str(z["metadata"]))["interrupted"]
        assert sum(int(r["n_frames"]) for r in rows) == int(z["valid"].sum())

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_simulate, "_simulate", interrupt)
    assert _run(model_dir, data, tmp_path / "other") == 130
    assert ("interrupted: no chunk had finished, so nothing simulated is kept"
            in capsys.readouterr().err)


def test_evaluate_cli_uses_shared_md_flags(dirs, tmp_path, monkeypatch, capsys):
    """``stablejax evaluate`` takes the same simulation flags as ``simulate`` and applies them;
    a Ctrl-C after its (only) chunk says the chunk is kept, and the same command finishes."""
    import stablejax.cli.evaluate as cli_evaluate

    model_dir, data = dirs
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(model_dir), "--data", str(data), "--n-replicas", "2",
            "--time-ps", "0.01", "--dt-fs", "0.5", "--frame-interval-fs", "5",
            "--integrator", "nose_hoover", "--tolerance-angstrom", "0.4", "--out", str(out)]
    Bar = cli_evaluate.ProgressBar

    class InterruptingBar(Bar):
        def __call__(self, done, total, info=None):
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_evaluate, "ProgressBar", InterruptingBar)
    assert main(argv) == 130
    assert ("interrupted: 1 of 1 chunks (0.01 ps per replica) are kept in "
            f"{out / 'partial'}; run the same command to resume") in capsys.readouterr().err
    assert (out / "partial" / "checkpoints" / "1").is_dir()
    assert not (out / "summary.json").exists()
    monkeypatch.setattr(cli_evaluate, "ProgressBar", Bar)
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_replicas"] == 2 and summary["window_ps"] == pytest.approx(0.01)
    assert summary["integrator"] == "nose_hoover"
    assert summary["tolerance_angstrom"] == pytest.approx(0.4)
    assert "written:" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["arrays.npz", "inputs.json", "summary.json"]


def test_progress_bar_times_only_its_own_work():
    """A bar whose first report is already at 5 of 10 (a resumed run) must not count those 5
    as done in no time: its rate comes from the reports it timed."""
    from stablejax.cli.progress import ProgressBar

    with ProgressBar("resume", unit="epoch") as bar:
        bar(5, 10)
        bar(6, 10)
        d = bar._bar.format_dict
        assert d["initial"] == 5 and d["n"] == 6
