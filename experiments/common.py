"""The experiment pipeline shared by the systems: data -> QM pre-training -> evaluation of the
pre-trained model -> StABlE training -> evaluation of the StABlE model -> report.

Every stage writes its result under the run directory and is skipped when the result is there,
so an interrupted run continues where it stopped (the pre-training and StABlE stages also resume
mid-way from their orbax checkpoints).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Literal

os.environ.setdefault("OMP_NUM_THREADS", "1")

import tyro  # noqa: E402

from stablejax.cli.main import configure_logging  # noqa: E402
from stablejax.cli.progress import ProgressBar  # noqa: E402
from stablejax.sharding import primary_only  # noqa: E402

Scale = Literal["demo", "cpu", "paper"]


@dataclasses.dataclass(frozen=True)
class Args:
    scale: Scale = "demo"
    """Size preset (docs/method.md §10.4): demo ~10 min, cpu <= 100 min on 2 cores, paper for
    GPUs."""
    run_dir: Path | None = None
    """Output directory (default: runs/<experiment>-<scale> under the current directory)."""
    data_dir: Path | None = None
    """Data cache root (default: $STABLEJAX_DATA, else the user cache directory)."""
    workers: int | None = None
    """Processes for GFN2-xTB data generation (default: all cores)."""
    seed: int = 0
    devices: int | None = None
    """Split replicas, estimator frames and batches over this many devices (on a CPU: host
    devices of this process); default: every device (one CPU device)."""
    until: Literal["data", "pretrain", "eval_pretrained", "stable", "eval_stable"] | None = None
    """Stop after this stage (default: run every stage and write the report); a later run
    with the same --run-dir continues from there."""
    train_overrides: str | None = None
    """JSON object of TrainConfig fields that replace the plan's, nested as the config is,
    e.g. '{"optimizer": {"qm_weight": 0.01}}'
    (a variant of the plan; recorded in the report's notes). Use another --run-dir for it."""
    eval_overrides: str | None = None
    """JSON object of EvalConfig fields that replace the plan's for both models, e.g.
    '{"n_replicas": 32}' to screen a variant (recorded in the report's notes)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """All settings of one experiment at one scale."""

    system: str
    model: str
    pretrain: object  # PretrainConfig
    model_overrides: dict
    train: object  # TrainConfig
    evaluation: object  # EvalConfig
    notes: tuple[str, ...] = ()
    data_overrides: dict = dataclasses.field(default_factory=dict)  # GenerationConfig fields
    reference: Literal["gfn2-xtb", "openmm-water"] = "gfn2-xtb"
    """Reference data: GFN2-xTB molecular dynamics of ``system`` (``data_overrides``:
    GenerationConfig fields), or the OpenMM SPC/Fw water box (``data_overrides``: WaterConfig
    fields, e.g. ``n_molecules``)."""
    evaluated_epoch: tuple[int, int] | None = None
    """Evaluate the StABlE parameters that the reference's ``post_cycle{c}_epoch{k}`` rule picks
    from the training log, ``(c, k)`` (:func:`stablejax.train.selection.post_cycle_epoch`),
    fixed in the plan before any evaluation; None: the final parameters."""
    train_frames: int | None = None
    """Use only this many training frames (a seeded random subset of the data set's training
    split) for pre-training and for StABlE's QM term: the paper's data-limited recipe. The
    validation and test splits are unchanged."""


def limit_training_frames(dataset, n: int | None, seed: int):
    """The data set with a seeded random subset of ``n`` training frames (all if ``None``)."""
    import numpy as np

    if n is None:
        return dataset
    if not 0 < n <= dataset.train.n_frames:
        raise ValueError(f"train_frames={n}: the data set at {dataset.path} has "
                         f"{dataset.train.n_frames} training frames")
    keep = np.sort(np.random.default_rng([seed, 7]).permutation(dataset.train.n_frames)[:n])
    return dataset._replace(train=dataset.train[keep])


def same_parameters(a, b) -> bool:
    """True when two parameter pytrees have the same structure and bitwise-equal leaves."""
    import jax
    import numpy as np

    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    return ta == tb and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _stage(name: str):
    logging.getLogger("stablejax.experiments").info("stage: %s", name)
    return time.perf_counter()


def run(plan: Plan, args: Args, experiment: str) -> Path:
    """Run (or resume) every stage up to ``args.until``; returns the report path (the run
    directory when stopped early)."""
    configure_logging()
    from stablejax.data import generate_dataset, load_dataset, scale_config
    from stablejax.evaluate import evaluate_model
    from stablejax.evaluate.report import save_eval, write_report
    from stablejax.io.run_dir import remove_tree, write_json
    from stablejax.pipeline import load_model_dir, pretrain_on_dataset, stable_on_dataset

    run_dir = args.run_dir or Path("runs") / f"{experiment}-{args.scale}"
    run_dir.mkdir(parents=True, exist_ok=True)
    timings_path = run_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}

    def done(stage: str, t0: float) -> None:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
        write_json(timings_path, timings)

    t = _stage("data")
    if plan.reference == "openmm-water":
        from stablejax.data.water import generate_water
        from stablejax.data.water_config import water_config

        water_cfg = water_config(args.scale, seed=args.seed, **plan.data_overrides)
        with ProgressBar(f"[1/6 data] {water_cfg.system} OpenMM MD", unit="chunk") as bar:
            data_path = generate_water(water_cfg, args.data_dir, n_workers=args.workers,
                                       progress=bar)
        reference = "OpenMM SPC/Fw flexible water, made offline by stablejax"
    else:
        data_cfg = scale_config(plan.system, args.scale, seed=args.seed, **plan.data_overrides)
        with ProgressBar(f"[1/6 data] {plan.system} GFN2-xTB MD", unit="chunk") as bar:
            data_path = generate_dataset(data_cfg, args.data_dir, n_workers=args.workers,
                                         progress=bar)
        reference = "GFN2-xTB (tblite), made offline by stablejax; not the paper's DFT data"
    dataset = limit_training_frames(load_dataset(data_path), plan.train_frames, args.seed)
    done("data", t)
    if args.until == "data":
        return run_dir
    write_json(run_dir / "experiment.json", {
        "experiment": experiment, "scale": args.scale, "system": dataset.system.name,
        "model": plan.model, "reference data": reference, "data set": str(data_path),
        "frames train/val/test/reference (used)": f"{dataset.train.n_frames}/{dataset.val.n_frames}/"
                                           f"{dataset.test.n_frames}/{dataset.reference.n_frames}",
        "StABlE replicas x epoch": f"{plan.train.n_replicas} x {plan.train.epoch_ps} ps",
        "StABlE max epochs": plan.train.n_epochs,
        "estimator scaling": plan.train.estimator.scaling,
        "evaluation": f"{plan.evaluation.n_replicas} replicas x {plan.evaluation.time_ps} ps, "
                      f"{plan.evaluation.md.integrator}",
        **({"notes": " ".join(plan.notes)} if plan.notes else {}),
    })

    t = _stage("pretrain")
    pre_dir = run_dir / "pretrain"
    with ProgressBar(f"[2/6 pretrain] {plan.model}", unit="epoch",
                     postfix_keys=("val_force_mae_mev_per_angstrom",)) as bar:
        pre = pretrain_on_dataset(dataset, plan.model, plan.pretrain, pre_dir,
                                  model_overrides=plan.model_overrides, progress=bar)
    done("pretrain", t)
    if args.until == "pretrain":
        return run_dir
    spec, model, params = load_model_dir(pre_dir)

    def evaluate(name: str, params, label: str) -> None:
        if (run_dir / name / "summary.json").exists():
            return
        t = _stage(name)
        with ProgressBar(f"{label} MD", unit="step",
                         postfix_keys=("simulated_ps", "n_unstable")) as bar:
            # every finished chunk is kept: an interrupted evaluation continues from it
            res = evaluate_model(model, params, dataset, plan.evaluation, progress=bar,
                                 checkpoint_dir=run_dir / f"{name}.partial")
        save_eval(run_dir / name, res.summary, res.arrays)
        remove_tree(run_dir / f"{name}.partial")
        done(name, t)

    evaluate("eval_pretrained", params, "[3/6 evaluate pre-trained]")
    if args.until == "eval_pretrained":
        return run_dir

    t = _stage("stable")
    stable_dir = run_dir / "stable_model"
    with ProgressBar("[4/6 StABlE] epochs", unit="epoch",
                     postfix_keys=("phase", "unstable_fraction")) as bar:
        def progress(d, tot, info):
            if info.get("stage") != "simulate":
                bar(d, tot, info)

        stable = stable_on_dataset(dataset, spec, params, plan.train, stable_dir,
                                   progress=progress, keep_epoch=kept_epoch_rule(plan))
    done("stable", t)
    if args.until == "stable":
        return run_dir
    _, _, stable_params = load_model_dir(stable_dir)
    if plan.evaluated_epoch is not None:
        from stablejax.io.run_dir import KEPT, STABLE, RunDir

        stable_params = RunDir(stable_dir / STABLE).load_params(KEPT, stable_params)

    if same_parameters(params, stable_params) and not (run_dir / "eval_stable").exists():
        # No learning phase happened (no replica went unstable often enough): the StABlE model
        # is the pre-trained one, and the evaluation (same settings, same seed) is
        # deterministic, so it is reused instead of being run twice.
        logging.getLogger("stablejax.experiments").info(
            "StABlE never entered a learning phase: parameters unchanged, evaluation reused")
        reuse_pretrained_evaluation(run_dir)
    evaluate("eval_stable", stable_params, "[5/6 evaluate StABlE]")
    if args.until == "eval_stable":
        return run_dir
    _stage("report")
    report = write_report(run_dir, f"{experiment} ({args.scale} scale)")
    summary = {name: json.loads((run_dir / name / "summary.json").read_text())
               for name in ("eval_pretrained", "eval_stable")}
    summary["pretrain"] = {k: pre[k] for k in ("test_energy_mae_mev",
                                               "test_force_mae_mev_per_angstrom", "epochs")}
    if "kept_epoch" in stable:
        summary["evaluated_stable_epoch"] = stable["kept_epoch"]
    summary["timings_s"] = timings
    write_json(run_dir / "summary.json", summary)
    return report


def kept_epoch_rule(plan: Plan):
    """``records -> epoch`` of the plan's ``evaluated_epoch`` rule, or None."""
    if plan.evaluated_epoch is None:
        return None
    from stablejax.train.selection import post_cycle_epoch

    cycle, learning_epoch = plan.evaluated_epoch
    return functools.partial(post_cycle_epoch, cycle=cycle, learning_epoch=learning_epoch)


@primary_only
def reuse_pretrained_evaluation(run_dir: Path) -> None:
    shutil.copytree(run_dir / "eval_pretrained", run_dir / "eval_stable")
    s = json.loads((run_dir / "eval_stable" / "summary.json").read_text())
    s["note"] = ("StABlE never entered a learning phase; the parameters equal the "
                 "pre-trained ones and this is the pre-trained model's evaluation")
    (run_dir / "eval_stable" / "summary.json").write_text(json.dumps(s, indent=1))


def with_overrides(plan: Plan, overrides: str | None, field: str = "train") -> Plan:
    """The plan with the fields of its ``field`` config (``'train'``: TrainConfig,
    ``'evaluation'``: EvalConfig) replaced by a JSON object, nested as the config is
    (``'{"optimizer": {"qm_weight": 30.0}, "n_epochs": 70}'``; None: unchanged)."""
    from stablejax.config import replace

    if not overrides:
        return plan
    flag = f"--{'train' if field == 'train' else 'eval'}-overrides"
    try:
        fields = json.loads(overrides)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} is not valid JSON ({e}): {overrides!r}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{flag} must be a JSON object, got {overrides!r}")
    cfg = replace(getattr(plan, field), fields)
    name = type(cfg).__name__
    return dataclasses.replace(plan, **{field: cfg},
                               notes=plan.notes + (f"Variant: {name} overrides {fields}.",))


def with_train_overrides(plan: Plan, overrides: str | None) -> Plan:
    """:func:`with_overrides` of the plan's TrainConfig."""
    return with_overrides(plan, overrides, "train")


def main(make_plan, experiment: str, argv: list[str] | None = None) -> int:
    doc = getattr(sys.modules.get(getattr(make_plan, "__module__", "")), "__doc__", None) or ""
    args = tyro.cli(Args, args=argv, prog=f"python -m experiments.{experiment}",
                    description=doc.strip() or None)
    from stablejax.sharding import use_devices

    use_devices(args.devices)  # before JAX starts its backend
    plan = with_train_overrides(make_plan(args.scale, args.seed), args.train_overrides)
    plan = with_overrides(plan, args.eval_overrides, "evaluation")
    out = run(plan, args, experiment)
    if args.until is not None:
        print(f"stopped after stage {args.until}: {out.resolve()}")
    else:
        print(f"report: {out.resolve()}")
    return 0
