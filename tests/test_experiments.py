"""The experiment pipeline end to end on a tiny real system (GFN2-xTB ethanol data)."""

import json

import numpy as np

from experiments.common import Args, Plan, run
from stablejax.config import replace
from stablejax.evaluate import EvalConfig
from stablejax.models import SchNetConfig
from stablejax.train import PretrainConfig, TrainConfig


def test_pipeline_runs_every_stage_and_resumes(tmp_path):
    plan = Plan(
        system="ethanol", model="schnet",
        pretrain=PretrainConfig.schnet(max_epochs=2, batch_size=8, warmup_steps=0),
        model_overrides={"config": SchNetConfig(cutoff_angstrom=4.0, hidden_features=8,
                                                n_filters=8, n_interactions=1, n_gaussians=8)},
        train=TrainConfig.aspirin(n_replicas=2, epoch_ps=0.01, md={"frame_interval_fs": 5.0},
                                  n_epochs=2, optimizer={"qm_max_batches": 1,
                                                         "qm_batch_size": 8},
                                  hr={"r_max_angstrom": 4.0}),
        evaluation=replace(EvalConfig(), {"n_replicas": 2, "time_ps": 0.02,
                                          "md": {"frame_interval_fs": 5.0},
                                          "hr": {"r_max_angstrom": 4.0}, "n_bootstrap": 20}),
        data_overrides=dict(n_train=16, n_val=4, n_test=4, reference_ps=0.02,
                            equilibration_ps=0.01, chunk_frames=4, sample_every=5,
                            reference_sample_every=5),
        train_frames=12, evaluated_epoch=(1, 10))
    args = Args(scale="demo", run_dir=tmp_path / "run", data_dir=tmp_path / "data", workers=1)
    report = run(plan, args, "test_pipeline")
    run_dir = tmp_path / "run"
    assert report == run_dir / "report.md"
    text = report.read_text()
    assert "| pre-trained |" in text and "| StABlE |" in text
    for png in ("survival.png", "hr.png", "bonds.png", "history.png"):
        assert (run_dir / png).stat().st_size > 1000
    summary = json.loads((run_dir / "summary.json").read_text())
    for name in ("eval_pretrained", "eval_stable"):
        s = summary[name]
        assert s["n_replicas"] == 2 and 0 < s["window_ps"] <= 0.025
        assert np.isfinite(s["test_force_mae_mev_per_angstrom"])
    records = (run_dir / "stable_model" / "stable" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 2
    # The plan's checkpoint rule (post_cycle1_epoch10) falls back to the last epoch of a log
    # without 10 learning epochs: the kept parameters are the final ones.
    assert summary["evaluated_stable_epoch"] == 1
    from experiments.common import same_parameters
    from stablejax.io.run_dir import KEPT, STABLE, RunDir
    from stablejax.pipeline import load_model_dir

    final_params = load_model_dir(run_dir / "stable_model")[2]
    kept = RunDir(run_dir / "stable_model" / STABLE).load_params(KEPT, final_params)
    assert same_parameters(kept, final_params)
    # a StABlE run without a learning phase keeps the parameters; its evaluation is reused
    unchanged = same_parameters(load_model_dir(run_dir / "pretrain")[2],
                                load_model_dir(run_dir / "stable_model")[2])
    assert ("note" in summary["eval_stable"]) == unchanged
    assert ("never entered a learning phase" in text) == unchanged
    info = json.loads((run_dir / "experiment.json").read_text())
    assert info["frames train/val/test/reference (used)"].startswith("12/4/4/")
    # Everything is on disk: a second call redoes no stage and gives the same summary.
    mtime = (run_dir / "eval_stable" / "summary.json").stat().st_mtime
    run(plan, args, "test_pipeline")
    assert (run_dir / "eval_stable" / "summary.json").stat().st_mtime == mtime
    assert json.loads((run_dir / "summary.json").read_text())["eval_stable"] == summary["eval_stable"]


def test_plans_of_every_scale_build_and_training_subset_is_checked(tmp_path):
    import pytest

    from experiments import ac_ala3_nhme_nequip, aspirin_schnet, ethanol_schnet, water_gemnet
    from experiments.common import limit_training_frames
    from stablejax.data.dataset import Dataset
    from stablejax.data.frames import make_frames

    for module in (aspirin_schnet, ac_ala3_nhme_nequip, water_gemnet):
        for scale in ("demo", "cpu", "paper"):
            assert module.make_plan(scale).train.n_epochs > 0
    for scale in ("demo", "cpu", "paper"):  # water: the localized estimator, paper settings
        plan = water_gemnet.make_plan(scale)
        assert plan.reference == "openmm-water" and plan.model == "gemnet-t"
        assert plan.train.estimator.environment == "molecule"
        assert plan.train.optimizer.qm_weight == 0.0 and plan.train.md.temperature_k == 300.0
    paper = water_gemnet.make_plan("paper")
    assert (paper.train.n_replicas, paper.train.epoch_ps, paper.train.md.n_dump) == (8, 1.0, 100)
    assert (paper.train.estimator.block_size, paper.train.optimizer.learning_rate) == (4, 3e-3)
    assert (paper.evaluation.n_replicas, paper.evaluation.time_ps) == (5, 1000.0)
    demo = ethanol_schnet.make_plan("demo", seed=3)  # the main job
    assert demo.system == "ethanol" and demo.train.seed == demo.evaluation.seed == 3
    with pytest.raises(ValueError, match="demo plan only"):
        ethanol_schnet.make_plan("cpu")
    frames = make_frames(np.zeros((10, 3, 3)), np.array([1, 1, 8]), energies=np.zeros(10),
                         forces=np.zeros((10, 3, 3)))
    ds = Dataset(None, frames, frames, frames, frames, 1.0, tmp_path)
    sub = limit_training_frames(ds, 4, seed=0)
    assert sub.train.n_frames == 4 and sub.val.n_frames == 10
    with pytest.raises(ValueError, match="train_frames=11.*10 training frames"):
        limit_training_frames(ds, 11, seed=0)


def test_exploded_frames_do_not_poison_stable_frame_sums():
    """Regression: an unstable replica that flew apart has no distance in the histogram range;
    its normalised histogram is NaN and weighting it by 0 gave NaN bond/h(r) metrics."""
    import jax.numpy as jnp

    from stablejax.evaluate.stability_run import masked_frame_sum
    from stablejax.observables.distances import distance_distribution
    from stablejax.train.phases import epoch_obs_loss

    R = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 3)))
    exploded = R[0] * 1e3  # every distance far beyond r_max
    h_bad = distance_distribution(exploded, r_max=4.0)
    assert not bool(jnp.all(jnp.isfinite(h_bad)))
    h = jnp.stack([jnp.stack([distance_distribution(r, r_max=4.0) for r in R]),
                   jnp.stack([distance_distribution(R[1], r_max=4.0), h_bad, h_bad])])
    mask = jnp.asarray([[True, True, True], [True, False, False]])
    sums = masked_frame_sum(h, mask)
    assert bool(jnp.all(jnp.isfinite(sums)))
    np.testing.assert_allclose(np.asarray(sums[1]), np.asarray(h[1, 0]), rtol=1e-6)
    loss = epoch_obs_loss(h, mask, jnp.full(h.shape[-1], 100.0 / h.shape[-1]))
    assert bool(jnp.isfinite(loss))


def test_report_counts_reused_learning_steps(tmp_path):
    """A training log alone makes a report with its history; learning epochs that reused
    their frames are counted in SGD steps."""
    from stablejax.evaluate.report import write_report

    hist = tmp_path / "stable_model" / "stable"
    hist.mkdir(parents=True)
    base = dict(cycle=0, unstable_fraction=0.5, learning_rate=0.0, seconds=2.0,
                hr_loss_stable_frames=0.01)
    recs = [dict(base, epoch=0, phase="simulation"),
            dict(base, epoch=1, phase="learning", learning_rate=1e-3, obs_loss=0.01,
                 qm_loss=0.1, learning_steps=3, reuse_ess_fraction=0.95),
            dict(base, epoch=2, phase="learning", learning_rate=1e-3, obs_loss=0.009,
                 qm_loss=0.1, learning_steps=2, reuse_ess_fraction=0.88)]
    (hist / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = write_report(tmp_path).read_text()
    assert "3 epochs (2 learning: 5 SGD steps, 3 of them on reused, importance-reweighted " \
           "frames), 6 s" in text
    assert (tmp_path / "history.png").stat().st_size > 1000


def test_train_overrides_make_a_checked_variant_of_a_plan():
    import pytest

    from experiments import aspirin_schnet
    from experiments.common import with_train_overrides

    plan = aspirin_schnet.make_plan("cpu")
    assert with_train_overrides(plan, None) is plan
    v = with_train_overrides(
        plan, '{"optimizer": {"qm_weight": 0.01}, "md": {"frame_interval_fs": 25.0}}')
    assert v.train.optimizer.qm_weight == 0.01 and v.train.md.n_dump == 50
    # nested configs are merged, not replaced
    assert v.train.optimizer.learning_rate == plan.train.optimizer.learning_rate
    assert v.train.n_replicas == plan.train.n_replicas and "qm_weight" in v.notes[-1]
    with pytest.raises(ValueError, match=r"TrainConfig\.optimizer\.qm_wieght is not a field"):
        with_train_overrides(plan, '{"optimizer": {"qm_wieght": 0.01}}')
    with pytest.raises(ValueError, match="not valid JSON"):
        with_train_overrides(plan, "{qm_weight: 0.01}")
    with pytest.raises(ValueError, match="MDConfig.frame_interval_fs must be"):
        with_train_overrides(plan, '{"md": {"frame_interval_fs": 0.3}}')


def test_report_of_an_exported_result_directory_keeps_its_numbers_and_plots(tmp_path):
    """A committed result directory (scripts/export_results.sh: summary.json with both
    evaluations, pretrain_results.json, stable_metrics.jsonl, PNGs) still makes a report."""
    import shutil
    from pathlib import Path

    from stablejax.evaluate.report import write_report

    src = Path(__file__).resolve().parents[1] / "docs" / "results" / "ethanol_schnet-demo"
    run = tmp_path / "exported"
    shutil.copytree(src, run)
    (run / "report.md").unlink()
    png = (run / "hr.png").read_bytes()
    text = write_report(run, "exported").read_text()
    summary = json.loads((run / "summary.json").read_text())
    for label, key in (("pre-trained", "eval_pretrained"), ("StABlE", "eval_stable")):
        e = summary[key]
        lo, hi = e["stability_time_ps_median_ci95"]
        assert f"| {label} | {e['stability_time_ps_median']:.2f} [{lo:.2f}, {hi:.2f}] |" in text
    pre = json.loads((run / "pretrain_results.json").read_text())
    assert f"QM pre-training: schnet on {pre['n_train']} frames, {pre['epochs']} epochs" in text
    records = [json.loads(x) for x in (run / "stable_metrics.jsonl").read_text().splitlines()]
    n_learn = sum(r["phase"] == "learning" for r in records)
    assert 0 < n_learn < len(records)
    assert f"{len(records)} epochs ({n_learn} learning" in text
    assert "![h(r)](hr.png)" in text and (run / "hr.png").read_bytes() == png
