"""Periodic water through the pipeline: a tiny OpenMM data set -> pre-training of a tiny SchNet
with periodic neighbour lists (CLI) -> a tiny evaluation with the water criteria."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openmm")

from stablejax.data import load_dataset  # noqa: E402
from stablejax.data.water import generate_water  # noqa: E402
from stablejax.data.water_config import water_config  # noqa: E402
from stablejax.errors import InputError  # noqa: E402

N_MOL = 16  # edge 7.83 A: cutoffs up to 3.9 A


@pytest.fixture(scope="module")
def water_root(tmp_path_factory):
    cfg = water_config("demo", n_molecules=N_MOL, equilibration_ps=0.5, chunk_steps=200,
                       n_train=12, n_val=4, n_test=6, n_trajectories=2, n_test_trajectories=1,
                       reference_ps=2.0, reference_sample_every=50)
    return generate_water(cfg, tmp_path_factory.mktemp("water"), n_workers=1)


@pytest.fixture(scope="module")
def pretrained(water_root, tmp_path_factory):
    from stablejax.cli.pretrain import main

    run = tmp_path_factory.mktemp("runs") / "pre"
    rc = main(["--system", "water", "--data", str(water_root), "--run-dir", str(run),
               "--max-epochs", "2", "--n-interactions", "1", "--features", "8",
               "--cutoff-angstrom", "3.5", "--batch-size", "4"])
    assert rc == 0
    return run


def test_pretrain_periodic_schnet(pretrained, water_root):
    from stablejax.pipeline import load_model_dir

    results = json.loads((pretrained / "results.json").read_text())
    assert results["system"] == "water16" and results["epochs"] == 2
    assert np.isfinite(results["test_force_mae_mev_per_angstrom"])
    assert np.isfinite(results["test_energy_mae_mev"])
    spec, model, params = load_model_dir(pretrained)
    cell = load_dataset(water_root).system.cell
    np.testing.assert_allclose(np.asarray(spec.box), cell.T)
    assert model.neighbor_fn is not None


def test_cutoff_larger_than_half_box_is_refused(water_root, tmp_path):
    from stablejax.cli.pretrain import main

    with pytest.raises(InputError, match="half the shortest cell height"):
        main(["--system", "water", "--data", str(water_root), "--run-dir",
              str(tmp_path / "run"), "--max-epochs", "1", "--cutoff-angstrom", "5"])


@pytest.mark.slow  # make test-slow (default-suite time)
def test_evaluate_water_criterion(pretrained, water_root):
    from stablejax.config import MDConfig
    from stablejax.evaluate.stability_run import EvalConfig, evaluate_model
    from stablejax.pipeline import load_model_dir

    dataset = load_dataset(water_root)
    _, model, params = load_model_dir(pretrained)
    md = MDConfig(integrator="langevin", temperature_k=300.0, dt_fs=1.0, gamma_per_ps=1.0,
                  frame_interval_fs=20.0, tolerance_angstrom=0.5)
    cfg = EvalConfig(md=md, n_replicas=2, time_ps=0.4, n_bootstrap=10)
    res = evaluate_model(model, params, dataset, cfg)
    s = res.summary
    assert s["rdf_window_frames"] == 10 and s["rdf_window_ps"] == 0.2
    assert s["rdf_r_max_angstrom"] == pytest.approx(3.912)  # half of the 7.83-A box
    assert s["reference_frames"] == 40
    assert s["window_ps"] in (pytest.approx(0.2), pytest.approx(0.4))  # may stop early
    assert len(res.arrays["stability_time_ps"]) == 2
    assert len(set(res.arrays["start_frame"])) == s["n_start_frames"] == 2
    assert s["resample_unit"] == "replica"  # two replicas, two start frames
    assert res.arrays["g_ref"].shape == (3, 326)
    assert np.isfinite(s["o_diffusivity_reference_1e-9_m2_per_s"])
    if s["n_stable_frames"]:
        assert set(s["rdf_mae"]) == {"O-O", "O-H", "H-H", "max"}


def _tiny_eval_cfg():
    from stablejax.config import MDConfig
    from stablejax.evaluate.stability_run import EvalConfig

    md = MDConfig(integrator="langevin", temperature_k=300.0, dt_fs=1.0, gamma_per_ps=1.0,
                  frame_interval_fs=20.0, tolerance_angstrom=0.5)
    return EvalConfig(md=md, n_replicas=2, time_ps=0.6, n_bootstrap=10, stop_fraction=1.0)


@pytest.mark.slow  # ~12 s; the resume logic is shared with tests/test_evaluate_resume.py
def test_evaluate_water_resumes_bit_for_bit(pretrained, water_root, tmp_path):
    from stablejax.evaluate.stability_run import evaluate_model
    from stablejax.pipeline import load_model_dir

    dataset = load_dataset(water_root)
    _, model, params = load_model_dir(pretrained)
    cfg = _tiny_eval_cfg()
    whole = evaluate_model(model, params, dataset, cfg)

    def stop_after_first_chunk(done, total, info):
        raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        evaluate_model(model, params, dataset, cfg, progress=stop_after_first_chunk,
                       checkpoint_dir=ckpt)
    resumed = evaluate_model(model, params, dataset, cfg, checkpoint_dir=ckpt)
    assert json.dumps(resumed.summary, sort_keys=True) == json.dumps(whole.summary,
                                                                     sort_keys=True)
    assert set(resumed.arrays) == set(whole.arrays)
    for k in whole.arrays:
        np.testing.assert_array_equal(resumed.arrays[k], whole.arrays[k], err_msg=k)
    assert {"msd_lag_ps", "msd_model", "msd_ref", "msd_ref_lag_ps", "rdf_r"} <= set(whole.arrays)
    assert whole.arrays["msd_ref"][0] == 0 and np.all(np.diff(whole.arrays["msd_ref_lag_ps"]) > 0)


def test_evaluate_report_and_simulate_cli_on_water(pretrained, water_root, tmp_path):
    import ase.io

    from stablejax.cli.evaluate import main as evaluate
    from stablejax.cli.simulate import main as simulate
    from stablejax.evaluate.report import write_report

    out = tmp_path / "eval"
    assert evaluate(["--model", str(pretrained), "--data", str(water_root), "--out", str(out),
                     "--n-replicas", "2", "--time-ps", "0.4", "--frame-interval-fs", "20",
                     "--n-bootstrap", "10"]) == 0
    s = json.loads((out / "summary.json").read_text())
    # the liquid's conditions: Langevin at the reference's friction, the data's T and step
    assert (s["integrator"], s["temperature_k"], s["dt_fs"]) == ("langevin", 300.0, 1.0)
    assert s["n_replicas"] == 2 and "rdf_mae" in s
    inputs = json.loads((out / "inputs.json").read_text())
    assert inputs["settings"]["md"]["gamma_per_ps"] == 1.0
    report = write_report(out)
    text = report.read_text()
    assert "RDF MAE" in text and "O diffusivity" in text
    for png in ("rdf.png", "msd.png", "survival.png"):
        assert (out / png).exists(), png

    sim = tmp_path / "sim"
    assert simulate(["--model", str(pretrained), "--data", str(water_root), "--out", str(sim),
                     "--n-replicas", "2", "--time-ps", "0.2", "--frame-interval-fs", "20"]) == 0
    ss = json.loads((sim / "summary.json").read_text())
    assert ss["criterion"] == "min_intermolecular_distance_angstrom"
    assert ss["integrator"] == "langevin" and ss["hr_mae"] is None
    frames = ase.io.read(sim / "trajectories" / "replica_0000.extxyz", index=":")
    assert len(frames) >= 1 and all(frames[0].pbc)
    np.testing.assert_allclose(frames[0].cell.array, load_dataset(water_root).system.cell,
                               atol=1e-6)
    assert "min_intermolecular_distance_angstrom" in frames[0].info
    header = (sim / "stability.csv").read_text().splitlines()[0]
    assert "min_intermolecular_distance_angstrom" in header


def test_liquid_presets():
    from stablejax.cli.scales import model_overrides, pretrain_config

    cfg = pretrain_config("schnet", "demo", liquid=True)
    assert (cfg.loss.energy_weight, cfg.loss.force_weight) == (0.001, 0.999)
    assert pretrain_config("schnet", "demo").loss.energy_weight == 0.05
    nequip = pretrain_config("nequip", "demo", liquid=True)
    assert nequip.loss == pretrain_config("nequip", "demo").loss
    assert model_overrides("schnet", "demo", liquid=True)["n_interactions"] == 3
    assert model_overrides("schnet", "paper", liquid=True) == {}
    assert model_overrides("schnet", "demo") == {}


@pytest.mark.slow  # ~28 s; GemNet-T pre-training itself: tests/test_pretrain.py
def test_gemnet_pretrains_on_water_from_the_cli(water_root, tmp_path):
    from stablejax.cli.pretrain import main
    from stablejax.pipeline import load_model_dir

    run = tmp_path / "gemnet"
    assert main(["--system", "water", "--model", "gemnet-t", "--data", str(water_root),
                 "--run-dir", str(run), "--max-epochs", "1", "--n-interactions", "1",
                 "--cutoff-angstrom", "3.0", "--batch-size", "4"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["model"] == "gemnet-t" and np.isfinite(results["test_force_mae_mev_per_angstrom"])
    spec, model, _ = load_model_dir(run)
    assert spec.kind == "gemnet-t" and spec.config["n_blocks"] == 1
    assert spec.config["emb_size_atom"] == 32  # the cpu-sized configuration below paper scale
    cfg = json.loads((run / "inputs.json").read_text())["config"]
    assert cfg["loss"]["energy_weight"] == 0.001 and cfg["grad_clip_norm"] == 10.0


def test_localized_stable_training_on_water(pretrained, water_root):
    """StABlE on the liquid through ``stablejax.train`` with the localized estimator: the
    pre-trained tiny SchNet breaks the 1.2 A guard, the next epoch learns from (frame, molecule)
    environments, and the parameters move."""
    import jax

    from stablejax.config import MDConfig
    from stablejax.pipeline import load_model_dir
    from stablejax.train import TrainConfig, TrainState, make_problem, train
    from stablejax.train.stable_config import EstimatorConfig, OptimizerConfig, PhaseConfig

    dataset = load_dataset(water_root)
    _, model, params = load_model_dir(pretrained)
    md = MDConfig(integrator="langevin", temperature_k=300.0, dt_fs=1.0, gamma_per_ps=1.0,
                  frame_interval_fs=20.0, tolerance_angstrom=0.5)
    cfg = TrainConfig(md=md, n_replicas=2, epoch_ps=0.1, n_epochs=2, stable_epochs=None,
                      estimator=EstimatorConfig(environment="molecule", block_size=4,
                                                chunk_size=5, stratify_bins=10),
                      optimizer=OptimizerConfig(learning_rate=1e-3, qm_weight=0.0),
                      phases=PhaseConfig(max_frac_unstable=0.5, reset_probability=0.0))
    problem = make_problem(model, dataset.system, dataset.train, dataset.reference.positions,
                           cfg)
    assert problem.target.shape == (2,) and 0.95 < float(problem.target.mean()) < 1.1
    records = []
    state = TrainState.create(problem, params, cfg)
    state = train(state, cfg, progress=lambda d, t, info: records.append(info)
                  if "epoch" in info else None)
    epochs = [r for r in records if "phase" in r]
    assert [r["phase"] for r in epochs] == ["simulation", "learning"], epochs
    learned = epochs[1]
    assert learned["finite"] and learned["n_frames_used"] > 0 and learned["grad_norm"] > 0
    moved = jax.tree.map(lambda a, b: float(abs(a - b).max()), state.params, params)
    assert max(jax.tree.leaves(moved)) > 0

    with pytest.raises(ValueError, match="molecule index"):
        import dataclasses

        make_problem(model, dataclasses.replace(dataset.system, molecule_index=None),
                     dataset.train, dataset.reference.positions, cfg)
