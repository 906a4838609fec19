"""experiments.confirmation: per-seed records of finished runs, and the tables made from them."""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from experiments import confirmation as conf
from experiments import confirmation_tables as tab
from experiments.common import Plan
from stablejax.errors import InputError
from stablejax.evaluate import EvalConfig
from stablejax.evaluate.report import save_eval
from stablejax.evaluate.stability_run import spread_indices
from stablejax.train import PretrainConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
N_REP = 4
CI = {"stability_time_ps_median_ci95": "percentile bootstrap, 20 resamples of the replicas",
      "stability_time_ps_mean_ci95": "BCa bootstrap, 20 resamples of the replicas",
      "hr_mae_ci95": "basic bootstrap, 20 resamples of the replicas"}


def fake_plan(scale, seed=0, n_bootstrap=20):
    """A tiny plan: the real config types, seeds in three of them."""
    return Plan(system="ethanol", model="schnet", pretrain=PretrainConfig(seed=seed),
                model_overrides={"n_interactions": 1}, train=TrainConfig(seed=seed),
                evaluation=EvalConfig(n_replicas=N_REP, time_ps=1.0, n_bootstrap=n_bootstrap,
                                      seed=seed),
                notes=(f"seed {seed} prose",))


def clean_git(root, *args):
    return "abc123\n" if args[0] == "rev-parse" else ""


def dirty_git(root, *args):
    return "abc123\n" if args[0] == "rev-parse" else " M stablejax/pipeline.py\n?? x.py\n"


def eval_summary(median, ci, mean, mean_ci, hr, force, energy, **extra):
    return {"n_replicas": N_REP, "window_ps": 1.0, "stability_time_ps_median": median,
            "stability_time_ps_median_ci95": ci, "stability_time_ps_mean": mean,
            "stability_time_ps_mean_ci95": mean_ci, "ci_method": dict(CI),
            "fraction_stable_whole_window": 0.25, "n_stable_frames": 30, "hr_mae": hr,
            "hr_mae_ci95": [hr - 0.01, hr + 0.01], "hr_mae_bootstrap_bias": 0.001,
            "test_force_mae_mev_per_angstrom": force, "test_energy_mae_mev": energy, **extra}


PRE = eval_summary(0.5, [0.3, 0.6], 0.55, [0.4, 0.7], 0.2, 100.0, 40.0)
STABLE = eval_summary(0.9, [0.7, 1.0], 0.8, [0.65, 0.95], 0.1, 110.0, 20.0)


def make_run(path: Path, pre=PRE, stable=STABLE, start_frame=True, experiment="ethanol_schnet",
             scale="demo"):
    """A finished run directory as experiments.common.run leaves it."""
    for name, s, times in (("eval_pretrained", pre, [0.2, 0.4, 0.6, 1.0]),
                           ("eval_stable", stable, [0.7, 0.9, 1.0, 1.0])):
        arrays = {"stability_time_ps": np.array(times), "censored": np.array(times) >= 1.0,
                  "survival_t_ps": np.linspace(0, 1, 5)}
        if start_frame:
            arrays["start_frame"] = np.array([0, 2, 4, 6])
        save_eval(path / name, s, arrays)
    (path / "experiment.json").write_text(json.dumps({
        "experiment": experiment, "scale": scale, "frames train/val/test/reference (used)":
        "12/4/8/40"}))
    (path / "summary.json").write_text(json.dumps({
        "eval_pretrained": pre, "eval_stable": stable,
        "pretrain": {"test_energy_mae_mev": 40.0}, "timings_s": {"data": 1.0}}))
    return path


def record(root, seed, run_dir, **kw):
    kw = {"make_plan": fake_plan, "git": clean_git, **kw}
    return conf.record("ethanol_schnet", "demo", seed, run_dir, root=root, **kw)


def test_record_writes_the_schema_and_its_arrays(tmp_path):
    run = make_run(tmp_path / "runs" / "seed11")
    rec = record(tmp_path, 11, run)
    data = json.loads((tmp_path / "docs/results/confirmation.json").read_text())
    assert data["schema"] == 1 and data["records"] == [rec]
    assert {k: rec[k] for k in ("experiment", "scale", "seed", "tuned", "code_commit",
                                "window_ps", "n_replicas", "n_start_frames")} == {
        "experiment": "ethanol_schnet", "scale": "demo", "seed": 11, "tuned": False,
        "code_commit": "abc123", "window_ps": 1.0, "n_replicas": 4, "n_start_frames": 4}
    assert rec["run_dir"] == "runs/seed11"  # relative to the root it lies under
    assert list(rec["pretrained"]) == list(conf.MOLECULE_KEYS)
    assert rec["stable"]["ci_method"] == CI and rec["stable"]["resample_unit"] == "replica"
    assert rec["notes"] == [n for n in rec["notes"] if "resample_unit" in n] and rec["notes"]
    assert rec["claims"] == {
        "intervals_apart": {"median": True, "mean": False},
        "ratio_stable_to_pretrained": {"median": pytest.approx(1.8), "hr_mae": pytest.approx(0.5),
                                       "force_mae": pytest.approx(1.1),
                                       "energy_mae": pytest.approx(0.5)}}
    path = tmp_path / rec["arrays"]
    assert rec["arrays"] == "docs/results/confirmation/ethanol_schnet-demo-seed11.npz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == rec["arrays_sha256"]
    with np.load(path) as z:
        assert sorted(z.files) == sorted(f"{m}_{k}" for m in ("pretrained", "stable")
                                         for k in ("stability_time_ps", "censored",
                                                   "start_frame"))
        np.testing.assert_array_equal(z["stable_stability_time_ps"], [0.7, 0.9, 1.0, 1.0])
        np.testing.assert_array_equal(z["pretrained_censored"], [False, False, False, True])
        np.testing.assert_array_equal(z["stable_start_frame"], [0, 2, 4, 6])


def test_record_replaces_rather_than_duplicates_and_keeps_the_order(tmp_path):
    run = make_run(tmp_path / "run11")
    record(tmp_path, 11, run)
    first = (tmp_path / "docs/results/confirmation/ethanol_schnet-demo-seed11.npz").read_bytes()
    record(tmp_path, 0, make_run(tmp_path / "run0"))
    record(tmp_path, 11, make_run(run, stable={**STABLE, "test_energy_mae_mev": 30.0}))
    records = json.loads((tmp_path / "docs/results/confirmation.json").read_text())["records"]
    assert [(r["seed"], r["tuned"]) for r in records] == [(0, True), (11, False)]
    assert records[1]["stable"]["test_energy_mae_mev"] == 30.0
    # the same arrays give the same bytes (fixed zip timestamps): no churn in the repository
    assert (tmp_path / records[1]["arrays"]).read_bytes() == first
    assert len({r["plan_digest"] for r in records}) == 1


def test_plan_digest_is_seed_independent_and_follows_every_other_setting():
    digests = {conf.plan_digest(fake_plan("demo", s)) for s in (0, 1, 11)}
    assert len(digests) == 1
    assert conf.plan_digest(fake_plan("demo", 0, n_bootstrap=21)) not in digests


@pytest.mark.parametrize("experiment", sorted(conf.EXPERIMENTS))
def test_plan_digest_of_the_real_plans_ignores_the_seed(experiment):
    make_plan = conf.load_make_plan(experiment)
    digests = {}
    for scale in ("demo", "cpu", "paper"):
        try:
            digests[scale] = {conf.plan_digest(make_plan(scale, s)) for s in (0, 7)}
        except ValueError:  # no plan at this scale
            continue
        assert len(digests[scale]) == 1, scale
    assert digests and len(set.union(*digests.values())) == len(digests)


def test_dirty_tree_is_refused_unless_allowed(tmp_path):
    run = make_run(tmp_path / "run")
    with pytest.raises(InputError, match=r"2 uncommitted change\(s\).*--allow-dirty") as e:
        record(tmp_path, 1, run, git=dirty_git)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "docs/results/confirmation.json").exists()
    assert record(tmp_path, 1, run, git=dirty_git, allow_dirty=True)["code_commit"] == \
        "abc123+dirty"
    assert record(tmp_path, 1, run, allow_dirty=True)["code_commit"] == "abc123"


def test_bad_input_is_refused_in_one_line_naming_the_file(tmp_path):
    run = make_run(tmp_path / "run")
    cases = [
        (lambda: record(tmp_path, 1, tmp_path / "nope"), "nope: no such run directory"),
        (lambda: conf.record("benzene_mace", "demo", 1, run, root=tmp_path, git=clean_git),
         "unknown experiment 'benzene_mace'"),
        (lambda: conf.record("aspirin_schnet", "demo", 1, run, root=tmp_path,
                             make_plan=fake_plan, git=clean_git),
         "experiment.json: experiment is 'ethanol_schnet', not 'aspirin_schnet'"),
        (lambda: record(tmp_path, 1, run, make_plan=lambda sc, s: dataclasses.replace(
            fake_plan(sc, s), evaluation=EvalConfig(n_replicas=8))),
         "do not have the 8 replicas"),
    ]
    for call, message in cases:
        with pytest.raises(InputError, match=message) as e:
            call()
        assert "\n" not in str(e.value)
    (run / "summary.json").unlink()
    with pytest.raises(InputError, match="summary.json: missing: the run has not finished"):
        record(tmp_path, 1, run)


def test_missing_start_frames_and_resample_unit_are_recomputed_and_said(tmp_path):
    units = {"resample_unit": "start frame", "n_start_frames": 2}
    run = make_run(tmp_path / "run", pre={**PRE, **units}, start_frame=False)
    rec = record(tmp_path, 3, run)
    with np.load(tmp_path / rec["arrays"]) as z:
        np.testing.assert_array_equal(z["pretrained_start_frame"], spread_indices(8, N_REP))
    assert rec["pretrained"]["resample_unit"] == "start frame"  # from the summary
    assert rec["stable"]["resample_unit"] == "replica"  # 4 distinct start frames
    assert rec["n_start_frames"] == {"pretrained": 2, "stable": 4}
    text = " ".join(rec["notes"])
    assert "spread_indices(8, 4)" in text and "stable: resample_unit inferred" in text


def test_water_records_keep_the_water_metrics(tmp_path):
    water = {"n_replicas": N_REP, "window_ps": 1.0, "stability_time_ps_median": 0.5,
             "stability_time_ps_mean": 0.6, "fraction_stable_whole_window": 0.25,
             "resample_unit": "replica", "n_start_frames": 4,
             "rdf_mae": {"O-O": 0.4, "O-H": 0.3, "H-H": 0.2, "max": 0.4},
             "o_diffusivity_1e-9_m2_per_s": 1.5, "o_diffusivity_reference_1e-9_m2_per_s": 2.2,
             "o_diffusivity_error": 0.3, "test_force_mae_mev_per_angstrom": 200.0,
             "test_energy_mae_mev": 8000.0, "criterion": "water"}
    run = make_run(tmp_path / "run", pre=water, stable=water, experiment="water_gemnet")
    rec = conf.record("water_gemnet", "demo", 0, run, root=tmp_path, make_plan=fake_plan,
                      git=clean_git)
    assert rec["stable"]["rdf_mae"] == {"O-O": 0.4, "O-H": 0.3, "H-H": 0.2}
    assert rec["stable"]["o_diffusivity_1e-9_m2_per_s"] == 1.5
    assert "criterion" not in rec["stable"] and "hr_mae" not in rec["stable"]
    assert rec["claims"]["intervals_apart"] == {"median": None, "mean": None}
    assert rec["claims"]["ratio_stable_to_pretrained"]["hr_mae"] is None
    text = tab.tables_markdown([rec])
    assert "| 0 | StABlE | 0.50 | 0.60 | 25.0% | - | 200.0 | 8000.0 | 0.40 / 0.30 / 0.20 | " \
           "1.50 | tuned | - / - |" in text


def test_tables_from_a_fixture_and_check(tmp_path, capsys):
    record(tmp_path, 0, make_run(tmp_path / "run0"))
    record(tmp_path, 5, make_run(tmp_path / "run5", stable={**STABLE,
           "stability_time_ps_median_ci95": [0.5, 1.0]}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{tab.START}\nold\n{tab.END}\n\nafter\n")
    assert tab.tables(tmp_path) == 0
    md = (tmp_path / "docs/results/confirmation.md").read_text()
    assert "## ethanol_schnet, demo scale" in md and md.count("| StABlE |") == 2
    assert ("| 0 | pre-trained | 0.50 [0.30, 0.60] | 0.55 [0.40, 0.70] | 25.0% | "
            "0.200 [0.190, 0.210] | 100.0 | 40.0 | tuned |  |") in md
    assert ("| 5 | StABlE | 0.90 [0.50, 1.00] | 0.80 [0.65, 0.95] | 25.0% | 0.100 [0.090, 0.110] "
            "| 110.0 | 20.0 | untuned | no / no |") in md
    assert "Resample unit: replica." in md
    assert "Intervals: median: percentile bootstrap, 20 resamples of the replicas; mean: BCa" in md
    text = readme.read_text()
    assert text.startswith(f"# x\n\n{tab.START}\n\n| experiment |") and "old" not in text
    assert text.endswith(f"\n\n{tab.END}\n\nafter\n")
    assert ("| ethanol_schnet | demo | 0 (tuned), 5 | 1 of 2 (untuned: 0 of 1) | "
            "0 of 2 (untuned: 0 of 1) | 1.80, 1.80 | 0.50, 0.50 | 1.10, 1.10 | 0.50, 0.50 |") \
        in text
    assert tab.tables(tmp_path, check=True) == 0
    readme.write_text(text.replace("1.80, 1.80", "1.80, 1.81"))
    capsys.readouterr()
    assert tab.tables(tmp_path, check=True) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("README.md differs") and "\n" not in err
    readme.write_text("no markers\n")
    assert tab.tables(tmp_path) == 0 and readme.read_text() == "no markers\n"
    assert "has no <!-- confirmation-table:start -->" in capsys.readouterr().err


def test_the_cli_records_and_checks(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path / "run")
    monkeypatch.setattr(conf, "load_make_plan", lambda name: fake_plan)
    argv = ["record", "--experiment", "ethanol_schnet", "--scale", "demo", "--seed", "2",
            "--run-dir", str(run), "--root", str(tmp_path)]
    # record's git default was bound at definition time: go through a patched record
    real = conf.record
    monkeypatch.setattr(conf, "record", lambda *a, **k: real(*a, git=clean_git, **k))
    assert conf.main(argv) == 0
    assert conf.main(["tables", "--check", "--root", str(tmp_path)]) == 1
    assert conf.main(["tables", "--root", str(tmp_path)]) == 0
    assert conf.main(["tables", "--check", "--root", str(tmp_path)]) == 0
    assert conf.main(["tables", "--root", str(tmp_path / "empty")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
    with pytest.raises(SystemExit) as e:
        conf.main(["--help"])
    assert e.value.code == 0


def committed_differences(root: Path) -> list[str]:
    """What in ``root`` disagrees with its confirmation.json: generated files out of date,
    arrays files whose sha256 is not the recorded one."""
    files, _ = tab.generate(root)
    out = [f"{rel} is out of date: run python -m experiments.confirmation tables"
           for rel, text in files.items()
           if not (root / rel).exists() or (root / rel).read_text() != text]
    for r in tab.load_records(root / tab.RECORDS):
        path = root / r["arrays"]
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != r["arrays_sha256"]:
            out.append(f"{r['arrays']}: sha256 is not the recorded {r['arrays_sha256']}")
    return out


def test_the_committed_tables_match_the_committed_records():
    """docs/results/confirmation.md and the README block are what `tables` makes of the
    committed confirmation.json, and every record's arrays file has its recorded sha256."""
    if not (REPO / tab.RECORDS).exists():
        pytest.skip(f"{tab.RECORDS} is not committed yet")
    assert committed_differences(REPO) == []


def test_the_committed_check_finds_every_difference(tmp_path):
    record(tmp_path, 0, make_run(tmp_path / "run"))
    (tmp_path / "README.md").write_text(f"{tab.START}\n{tab.END}\n")
    tab.tables(tmp_path)
    assert committed_differences(tmp_path) == []
    md = tmp_path / tab.TABLES
    md.write_text(md.read_text().replace("tuned", "untuned", 1))
    (tmp_path / "README.md").write_text(f"{tab.START}\nold\n{tab.END}\n")
    arrays = tmp_path / "docs/results/confirmation/ethanol_schnet-demo-seed0.npz"
    arrays.write_bytes(arrays.read_bytes() + b"x")
    found = committed_differences(tmp_path)
    assert [f.split(" ")[0].rstrip(":") for f in found] == [
        "docs/results/confirmation.md", "README.md", "docs/results/confirmation/"
        "ethanol_schnet-demo-seed0.npz"]
