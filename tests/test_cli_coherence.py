"""The command line as one tool: run names, ``--scale`` defaults, ``--time-ps``, StABlE presets
by system, seeds, ``--workers``, the cutoff's name, and ``report`` on every kind of run."""

import json
import os
import shutil
import time

import pytest

from stablejax.cli.main import main
from stablejax.errors import InputError


# ------------------------------------------------------------------------------- helpers
def _summary(median=1.5, **extra):
    """An evaluation summary as ``stablejax evaluate`` writes it (the keys the report reads)."""
    return dict(n_replicas=8, window_ps=2.0, integrator="langevin", temperature_k=500.0,
                tolerance_angstrom=0.5, stability_time_ps_median=median,
                stability_time_ps_median_ci95=[1.0, 2.0], stability_time_ps_mean=1.4,
                stability_time_ps_mean_ci95=[1.1, 1.7], fraction_stable_whole_window=0.25,
                n_stable_frames=100, hr_mae=0.3, hr_mae_ci95=[0.2, 0.4],
                hr_mean_abs_error=0.03, bond_length_distribution_mae=0.01,
                test_force_mae_mev_per_angstrom=100.0, test_energy_mae_mev=40.0, **extra)


def _eval(directory, model_dir, median=1.5, n_replicas=8):
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps(_summary(median)))
    (directory / "inputs.json").write_text(json.dumps(
        {"command": "evaluate", "settings": {"n_replicas": n_replicas, "time_ps": 2.0},
         "model": {"dir": str(model_dir)}}))


PRE_RESULTS = dict(model="schnet", system="ethanol", data="/nowhere", n_train=6, n_val=2,
                   n_test=4, epochs=3, best_epoch=2, train_wall_s=1.0,
                   test_energy_mae_mev=40.0, test_force_mae_mev_per_angstrom=100.0)
SPEC = {"kind": "schnet", "config": {"cutoff_angstrom": 5.0}, "atomic_numbers": [6, 8],
        "energy_shift": {}, "energy_scale": 1.0}


def _pretrain_run(path, evaluated=True):
    path.mkdir(parents=True)
    (path / "model.json").write_text(json.dumps(SPEC))
    (path / "results.json").write_text(json.dumps(PRE_RESULTS))
    if evaluated:
        _eval(path / "eval", path)
    return path


def _stable_run(path, pretrained, evaluated=True, n_replicas=8):
    (path / "stable").mkdir(parents=True)
    (path / "model.json").write_text(json.dumps(SPEC))
    (path / "inputs.json").write_text(json.dumps({"pretrained": {"model": SPEC}}))
    rec = dict(cycle=0, unstable_fraction=0.5, learning_rate=0.0, seconds=2.0)
    (path / "stable" / "metrics.jsonl").write_text(
        json.dumps(dict(rec, epoch=0, phase="simulation")) + "\n"
        + json.dumps(dict(rec, epoch=1, phase="learning", obs_loss=0.1, qm_loss=0.2)) + "\n")
    (path / "results.json").write_text(json.dumps(
        {"pretrained_dir": str(pretrained), "learning_epochs": 1}))
    if evaluated:
        _eval(path / "eval", path, median=1.9, n_replicas=n_replicas)
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """A working directory of its own: ``runs/`` is ``tmp_path/runs``."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------- run names
def test_run_names_resolve_under_runs_and_list_what_exists(in_tmp, capsys):
    from stablejax.cli.runs import output_dir, resolve_run

    old = _pretrain_run(in_tmp / "runs" / "old")
    new = _pretrain_run(in_tmp / "runs" / "new")
    stable = _stable_run(in_tmp / "runs" / "new-stable", new)
    past = time.time() - 100
    for f in old.rglob("*"):
        os.utime(f, (past, past))
    assert resolve_run("old", "--pretrained", ("pretrain",)) == old.absolute()
    assert resolve_run(str(new), "--pretrained", ("pretrain",)) == new.absolute()  # a path
    # Left out: the most recent run of the kind, said on stdout.
    assert resolve_run(None, "--pretrained", ("pretrain",)) == new.absolute()
    assert "--pretrained new: the most recent finished pre-training run" in capsys.readouterr().out
    assert resolve_run(None, "--model", ("pretrain", "stable")) == stable.absolute()
    with pytest.raises(InputError) as e:
        resolve_run("nwe", "--model", ("pretrain", "stable"), what="model directory")
    msg = str(e.value)
    assert msg.startswith("--model nwe: no such model directory") and "\n" not in msg
    assert "runs under runs/: new, new-stable, old" in msg
    # Outputs: runs/NAME, or --run-dir; not both, and a name is a name.
    assert output_dir("x", None, "d", "it") == (in_tmp / "runs" / "x")
    assert output_dir(None, None, "d", "it") == (in_tmp / "runs" / "d")
    assert output_dir(None, in_tmp / "elsewhere", "d", "it") == in_tmp / "elsewhere"
    for name, run_dir in (("x", in_tmp / "y"), ("a/b", None), ("..", None)):
        with pytest.raises(InputError, match="--name"):
            output_dir(name, run_dir, "d", "it")


def test_missing_runs_fail_in_one_line_naming_the_runs_there(in_tmp, capsys):
    _pretrain_run(in_tmp / "runs" / "mine")
    assert main(["evaluate", "--model", "nosuch"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("error: --model nosuch: no such model directory (nor a run of that name); "
                   "runs under runs/: mine")
    assert main(["report", "nosuch"]) == 1
    assert "runs under runs/: mine" in capsys.readouterr().err
    shutil.rmtree(in_tmp / "runs")
    assert main(["train"]) == 1  # no --pretrained and nothing to default to
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --pretrained: not given, and no finished pre-training run")
    assert "\n" not in err


def test_train_finds_the_pretraining_run_by_name_and_writes_name_stable(
        ethanol_model_dirs, in_tmp, monkeypatch, capsys):
    """``train --pretrained NAME`` (and without it, the most recent run) reads runs/NAME,
    takes its data set from results.json, picks the system's preset at the demo scale and
    writes runs/NAME-stable, recording where it came from."""
    import stablejax.pipeline

    model_dir, data = ethanol_model_dirs
    run = in_tmp / "runs" / "eth"
    shutil.copytree(model_dir, run)
    (run / "results.json").write_text(json.dumps(dict(PRE_RESULTS, data=str(data))))
    seen = {}

    def fake_stable(dataset, spec, params, cfg, run_dir, **kw):
        seen.update(cfg=cfg, run_dir=run_dir, pretrained_dir=kw["pretrained_dir"])
        return {"epochs": 0}

    monkeypatch.setattr(stablejax.pipeline, "stable_on_dataset", fake_stable)
    for argv in (["train", "--pretrained", "eth"], ["train"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert seen["run_dir"] == in_tmp / "runs" / "eth-stable"
        assert seen["pretrained_dir"] == run.absolute()
        assert "StABlE preset molecule (ethanol; nose_hoover 500 K, 0.5 fs)" in out
        assert "16 replicas x up to 20 epochs of 0.5 ps" in out
        assert "evaluate --model eth-stable" in out
    cfg = seen["cfg"]
    assert (cfg.n_replicas, cfg.n_epochs, cfg.md.frame_interval_fs) == (16, 20, 25.0)
    assert main(["train", "--pretrained", "eth", "--scale", "paper", "--name", "p",
                 "--cfg.n-epochs", "3"]) == 0
    assert seen["run_dir"] == in_tmp / "runs" / "p"
    assert (seen["cfg"].n_replicas, seen["cfg"].n_epochs, seen["cfg"].epoch_ps) == (128, 3, 1.0)


# ---------------------------------------------------------------------------------- scales
def test_default_scales_are_laptop_sized_and_paper_is_the_papers():
    from stablejax.cli.evaluate import EvaluateArgs, parse
    from stablejax.cli.scales import eval_config, pretrain_config, train_config
    from stablejax.cli.simulate import SimulateArgs
    from stablejax.evaluate import EvalConfig
    from stablejax.train import PretrainConfig, TrainConfig

    # The library keeps the paper's defaults (the experiments rely on them).
    assert (EvalConfig().n_replicas, EvalConfig().time_ps) == (256, 1000.0)
    assert (TrainConfig().n_replicas, TrainConfig().n_epochs) == (128, 500)
    assert PretrainConfig().max_epochs == 10_000

    def ev(*argv):
        from stablejax.cli.scales import peek

        scale = peek(list(argv)).scale
        a = parse(EvaluateArgs, list(argv), "t", default=EvaluateArgs(scale=scale,
                                                                       eval=eval_config(scale)))
        return a.eval.n_replicas, a.eval.time_ps

    assert ev() == (16, 5.0)
    assert ev("--scale", "cpu") == (32, 25.0)
    assert ev("--scale", "paper") == (256, 1000.0)
    assert ev("--scale", "paper", "--n-replicas", "4") == (4, 1000.0)  # a flag wins
    assert (SimulateArgs().n_replicas, SimulateArgs().time_ps) == (16, 5.0)
    demo = train_config(TrainConfig.aspirin(), "demo")
    assert (demo.n_replicas, demo.n_epochs, demo.steps_per_epoch, demo.md.n_dump) == (
        16, 20, 1000, 50)
    assert train_config(TrainConfig.aspirin(), "paper") == TrainConfig.aspirin()
    assert train_config(TrainConfig.aspirin(), "cpu").optimizer.learning_rate == 3e-3
    assert pretrain_config("schnet", "demo").max_epochs == 30
    assert pretrain_config("schnet", "paper") == PretrainConfig.schnet()
    assert pretrain_config("nequip", "demo").batch_size == PretrainConfig.nequip().batch_size


def test_a_bad_scale_is_one_line(capsys):
    assert main(["evaluate", "--scale", "huge"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: --scale huge: must be one of demo, cpu, paper")


# ------------------------------------------------------------------------------- --time-ps
def test_time_is_spelled_time_ps_in_simulate_and_evaluate(capsys):
    from stablejax.cli.evaluate import EvaluateArgs, parse
    from stablejax.cli.simulate import SimulateArgs

    assert parse(SimulateArgs, ["--time-ps", "2"], "s").time_ps == 2.0
    assert parse(EvaluateArgs, ["--time-ps", "2"], "e").eval.time_ps == 2.0
    for cls in (SimulateArgs, EvaluateArgs):
        for argv in (["--time", "2"], ["--time-ps", "10ps"], ["--time-p", "2"]):
            with pytest.raises(SystemExit) as e:
                parse(cls, argv, "cmd")
            assert e.value.code == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and err.count("\n") == 1, err


# -------------------------------------------------------------------------------- presets
def test_presets_follow_the_data_sets_system():
    from stablejax.train.stable_config import TrainConfig, preset_for

    assert preset_for("aspirin", 500.0, 0.5) == (TrainConfig.aspirin(), "aspirin")
    assert preset_for("ac-ala3-nhme", 500.0, 0.5) == (TrainConfig.ac_ala3_nhme(),
                                                      "ac-ala3-nhme")
    cfg, name = preset_for("ethanol", 300.0, 1.0)
    assert name == "molecule" and cfg != TrainConfig.aspirin()
    assert (cfg.md.temperature_k, cfg.md.dt_fs, cfg.md.n_dump, cfg.steps_per_epoch) == (
        300.0, 1.0, 100, 2000)
    # The rest is the paper's MD17 settings.
    asp = TrainConfig.aspirin()
    assert (cfg.md.tolerance_angstrom, cfg.hr, cfg.optimizer, cfg.n_replicas) == (
        asp.md.tolerance_angstrom, asp.hr, asp.optimizer, asp.n_replicas)
    assert preset_for("ethanol", 300.0, 1.0, "aspirin")[1] == "aspirin"  # named explicitly
    with pytest.raises(ValueError, match="unknown preset"):
        preset_for("ethanol", 300.0, 1.0, "argon")
    # a water box of any size gets the water preset (the localized estimator)
    for name in ("water", "water32"):
        water, preset = preset_for(name, 300.0, 1.0)
        assert preset == "water" and water.estimator.environment == "molecule"


# --------------------------------------------------------------- pretrain seeds and workers
@pytest.fixture
def fake_pretrain(ethanol_model_dirs, in_tmp, monkeypatch):
    """``pretrain`` with data generation and training replaced by recorders."""
    import stablejax.data
    import stablejax.pipeline

    seen = {}

    def generate(cfg, data_dir=None, *, n_workers=None, progress=None):
        seen.update(data_cfg=cfg, n_workers=n_workers)
        return ethanol_model_dirs[1]

    def pretrain(dataset, kind, cfg, run_dir, *, model_overrides=None, **kw):
        seen.update(cfg=cfg, run_dir=run_dir, overrides=model_overrides)
        return {"model": kind}

    monkeypatch.setattr(stablejax.data, "generate_dataset", generate)
    monkeypatch.setattr(stablejax.pipeline, "pretrain_on_dataset", pretrain)
    return seen


def test_pretrain_seed_seeds_the_model_not_the_data(fake_pretrain, in_tmp):
    assert main(["pretrain", "--system", "ethanol", "--seed", "7"]) == 0
    assert fake_pretrain["data_cfg"].seed == 0 and fake_pretrain["cfg"].seed == 7
    assert fake_pretrain["run_dir"] == in_tmp / "runs" / "pretrain-ethanol-schnet-demo"
    assert fake_pretrain["cfg"].max_epochs == 30  # the demo scale
    assert main(["pretrain", "--system", "ethanol", "--data-seed", "3", "--name", "x"]) == 0
    assert fake_pretrain["data_cfg"].seed == 3 and fake_pretrain["cfg"].seed == 0
    assert fake_pretrain["run_dir"] == in_tmp / "runs" / "x"


def test_pretrain_workers_are_checked(fake_pretrain, capsys):
    for bad in ("0", "-2"):
        assert main(["pretrain", "--system", "ethanol", "--workers", bad]) == 1
        assert capsys.readouterr().err.strip() == (
            f"error: --workers {bad}: must be >= 1 (worker processes)")
    assert "data_cfg" not in fake_pretrain  # nothing ran
    assert main(["pretrain", "--system", "ethanol", "--workers", "2"]) == 0
    assert fake_pretrain["n_workers"] == 2


# ---------------------------------------------------------------------------------- cutoff
def test_both_models_call_the_cutoff_cutoff_angstrom(fake_pretrain):
    import dataclasses

    from stablejax.models import NequIPConfig, SchNetConfig

    for cls in (SchNetConfig, NequIPConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        assert "cutoff_angstrom" in names and "r_max_angstrom" not in names
    for model in ("schnet", "nequip"):
        assert main(["pretrain", "--system", "ethanol", "--model", model,
                     "--cutoff-angstrom", "4.5"]) == 0
        assert fake_pretrain["overrides"]["cutoff_angstrom"] == 4.5


def test_a_model_json_with_nequips_old_r_max_angstrom_loads(ethanol_model_dirs, tmp_path):
    """A NequIP model.json written before the rename (``r_max_angstrom``) loads as a model
    directory, with the cutoff as ``cutoff_angstrom``."""
    import jax

    from stablejax.data import load_dataset
    from stablejax.io.checkpoint import save_checkpoint
    from stablejax.pipeline import load_model_dir
    from stablejax.train.model_spec import ModelSpec, spec_from_data

    train = load_dataset(ethanol_model_dirs[1]).train
    spec = spec_from_data("nequip", train, cutoff_angstrom=4.0, n_layers=1,
                          hidden_irreps="4x0e+2x1o", radial_hidden=8, n_bessel=4)
    old = spec.to_json()
    old["config"]["r_max_angstrom"] = old["config"].pop("cutoff_angstrom")
    run = tmp_path / "old-nequip"
    run.mkdir()
    (run / "model.json").write_text(json.dumps(old))
    assert ModelSpec.load(run / "model.json").model_config.cutoff_angstrom == 4.0
    params = spec.build().init(jax.random.PRNGKey(0), train.positions[0])
    save_checkpoint(run / "best", 0, {"params": params})
    loaded, model, _ = load_model_dir(run)
    assert loaded.model_config == spec.model_config
    assert loaded.model_config.cutoff == 4.0 and callable(model.energy_fn)


# ---------------------------------------------------------------------------------- report
def _rows(text):
    return [line.split("|")[1].strip() for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| model")
            and not line.startswith("| setting")]


def test_report_on_a_pretraining_run_and_its_evaluation(in_tmp, capsys):
    run = _pretrain_run(in_tmp / "runs" / "pre")
    assert main(["report", "pre"]) == 0
    text = (run / "report.md").read_text()
    assert _rows(text) == ["pre-trained"] and "QM pre-training: schnet on 6 frames" in text
    assert main(["report", "pre/eval"]) == 0  # the output of evaluate
    text = (run / "eval" / "report.md").read_text()
    assert text.startswith("# pre/eval") and _rows(text) == ["pre-trained"]
    assert f"Evaluation of `{run}`" in text
    unevaluated = _pretrain_run(in_tmp / "runs" / "bare", evaluated=False)
    assert main(["report", "bare"]) == 0
    text = (unevaluated / "report.md").read_text()
    assert "## Results" not in text and "Not evaluated yet" in text


def test_report_on_a_stable_run_compares_it_with_its_pretraining_run(in_tmp, capsys):
    pre = _pretrain_run(in_tmp / "runs" / "pre")
    run = _stable_run(in_tmp / "runs" / "pre-stable", pre)
    assert main(["report"]) == 0  # the most recent run
    assert "report pre-stable: the most recent run" in capsys.readouterr().out
    text = (run / "report.md").read_text()
    assert _rows(text) == ["pre-trained", "StABlE"]
    assert "1.90 [1.00, 2.00]" in text.splitlines()[[r.startswith("| StABlE") for r in
                                                      text.splitlines()].index(True)]
    assert "## StABlE training" in text and "2 epochs (1 learning)" in text
    assert "QM pre-training: schnet" in text and "different settings" not in text
    # Evaluations made with other settings are flagged; an unevaluated StABlE run still
    # reports its training log.
    other = _stable_run(in_tmp / "runs" / "pre-stable2", pre, n_replicas=4)
    assert main(["report", "pre-stable2"]) == 0
    assert "different settings (n_replicas: 8 vs 4)" in (other / "report.md").read_text()
    bare = _stable_run(in_tmp / "runs" / "b-stable", pre, evaluated=False)
    assert main(["report", str(bare)]) == 0
    text = (bare / "report.md").read_text()
    assert _rows(text) == ["pre-trained"] and "## StABlE training" in text


def test_report_keeps_the_experiments_layout_and_refuses_other_directories(tmp_path, capsys):
    from stablejax.evaluate.report import write_report

    run = tmp_path / "exp"
    _eval(run / "eval_pretrained", run / "pretrain")
    _eval(run / "eval_stable", run / "stable_model", median=1.9)
    (run / "pretrain").mkdir()
    (run / "pretrain" / "results.json").write_text(json.dumps(PRE_RESULTS))
    text = write_report(run, "title").read_text()
    assert text.startswith("# title") and _rows(text) == ["pre-trained", "StABlE"]
    (tmp_path / "junk").mkdir()
    assert main(["report", str(tmp_path / "junk")]) == 1
    assert "not a run stablejax writes" in capsys.readouterr().err
