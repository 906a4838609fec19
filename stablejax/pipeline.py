"""The data -> pre-training -> StABlE stages on a data set, as the CLI and the experiments run
them: application code above the library's building blocks (``stablejax.train``,
``stablejax.evaluate``), writing run directories through :mod:`stablejax.io.run_dir`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import jax

from stablejax._types import ProgressFn
from stablejax.data.dataset import Dataset
from stablejax.train.model_spec import ModelSpec, spec_from_data
from stablejax.config import to_dict
from stablejax.io.run_dir import (
    BEST,
    DONE,
    FINAL,
    MODEL_SPEC,
    STABLE,
    RunDir,
    params_template,
    read_json,
    write_json,
)
from stablejax.train.pretrain import PretrainConfig, PretrainState, evaluate_qm, pretrain


def pretrain_on_dataset(
    dataset: Dataset,
    kind: str,
    cfg: PretrainConfig,
    run_dir: str | Path,
    *,
    model_overrides: dict | None = None,
    progress: ProgressFn | None = None,
    allow_changes: tuple[str, ...] = (),
) -> dict:
    """Pre-train a ``kind`` ('schnet' / 'nequip') model on a data set; resumable via ``run_dir``.

    Writes ``run_dir/inputs.json`` (config, model kind and overrides, data set identity),
    ``model.json`` (the :class:`ModelSpec`), ``checkpoints/``, ``best/``, ``metrics.jsonl`` and
    ``results.json`` (test energy/force MAE of the best parameters, wall time, throughput). A
    finished run (``results.json`` present) re-run with the same inputs is returned as is; with
    other inputs it is refused. A resume with other inputs is refused except for the fields of
    ``allow_changes`` (see :func:`stablejax.train.pretrain.pretrain`).

    Returns:
      The results dict.

    Raises:
      InputError: other inputs than the run directory records (fields named), or a data set
        whose atoms differ from the model's.
    """
    from stablejax.io.inputs import allow_paths, check_inputs, dataset_identity
    from stablejax.train.pretrain import LOOP_FIELDS, RESUMABLE_FIELDS

    rd = RunDir(Path(run_dir).absolute())  # orbax restores only absolute paths
    allow = allow_paths(LOOP_FIELDS + tuple(allow_changes), RESUMABLE_FIELDS)
    check_inputs(rd.path, {"config": to_dict(cfg),
                           "model": {"kind": kind, "overrides": dict(model_overrides or {})},
                           "data": dataset_identity(dataset)},
                 allow=allow, resumable=[f"config.{k}" for k in RESUMABLE_FIELDS],
                 finished=rd.is_finished, defaults={"config": to_dict(type(cfg)())})
    if rd.is_finished:
        return rd.read_results()
    spec_path = rd.model_spec_path
    if spec_path.exists():
        spec = ModelSpec.load(spec_path)
        spec.check_species(dataset.train.atomic_numbers, f"data set {dataset.path}")
    else:
        spec = spec_from_data(kind, dataset.train, **(model_overrides or {}))
        spec.save(spec_path)
    model = spec.build()
    state = PretrainState.create(model, jax.random.PRNGKey(cfg.seed),
                                 dataset.train.positions[0], cfg)
    t0 = time.perf_counter()
    state = pretrain(state, cfg, dataset.train, dataset.val, run_dir=rd.path, progress=progress,
                     allow_changes=allow_changes)
    params = rd.load_params(BEST, state.params)
    test = evaluate_qm(model, params, dataset.test, dtype=cfg.dtype)
    results = {
        "model": kind,
        "system": dataset.system.name,
        "data": str(Path(dataset.path).resolve()),
        "n_train": dataset.train.n_frames,
        "n_val": dataset.val.n_frames,
        "n_test": dataset.test.n_frames,
        "epochs": int(state.epoch),
        "best_epoch": int(state.best_epoch),
        "train_wall_s": float(state.elapsed_s),
        "this_call_wall_s": time.perf_counter() - t0,
        "test_energy_mae_mev": float(test["energy_mae_mev"]),
        "test_force_mae_mev_per_angstrom": float(test["force_mae_mev_per_angstrom"]),
        "config": to_dict(cfg),
        "n_params": int(sum(x.size for x in jax.tree.leaves(params))),
    }
    rd.write_results(results)
    return results


def load_model_dir(run_dir: str | Path):
    """(spec, model, params) of a model directory: a StABlE run (``model.json`` + ``final/``)
    or a pre-training run (``model.json`` + ``best/``); ``final/`` wins when both exist."""
    rd = RunDir(Path(run_dir).absolute())
    if not rd.model_spec_path.exists():
        raise FileNotFoundError(
            f"{rd.path}: no {MODEL_SPEC} (expected a pre-training or StABlE run directory)")
    spec = ModelSpec.load(rd.model_spec_path)
    model = spec.build()
    like = params_template(model.init, len(spec.atomic_numbers))
    for name in (FINAL, BEST):
        if rd.has_params(name):
            return spec, model, rd.load_params(name, like)
    raise FileNotFoundError(f"{rd.path}: no {FINAL}/ or {BEST}/ parameter checkpoint")


def stable_on_dataset(dataset: Dataset, spec: ModelSpec, params, cfg, run_dir: str | Path, *,
                      progress: ProgressFn | None = None, allow_changes: tuple[str, ...] = (),
                      pretrained_dir: str | Path | None = None,
                      keep_epoch: Callable[[list[dict]], int] | None = None) -> dict:
    """StABlE training of a pre-trained model (``spec``, ``params``) on a data set (resumable
    from ``run_dir``).

    Writes ``run_dir/inputs.json`` (config, the pre-trained model's spec and parameter digest,
    data set identity), ``run_dir/model.json`` (``spec``), ``run_dir/stable/`` (checkpoints,
    metrics.jsonl, end_of_cycle/), the final parameters as ``run_dir/final`` (so ``run_dir`` is
    a model directory) and ``run_dir/results.json`` (summary, with the data set path and
    ``pretrained_dir``, the pre-training run the parameters come from, when given). A
    finished run (``run_dir/stable/done.json``) re-run with the same inputs is returned as is;
    with other inputs it is refused, before anything is written. A resume may change only
    ``n_epochs``, ``stable_epochs`` and the fields of ``allow_changes``
    (see :func:`stablejax.train.stable.train`). ``keep_epoch``: a rule on the training log
    whose epoch's parameters are kept as ``run_dir/stable/kept`` (``train(keep_epoch=)``); the
    summary's ``kept_epoch`` names it.

    Raises:
      InputError: other inputs than the run directory records (fields named), or a data set
        whose atoms differ from the model's.
    """
    from stablejax.io.inputs import allow_paths, array_digest, check_inputs, dataset_identity
    from stablejax.train.problem import make_problem
    from stablejax.train.stable import LOOP_FIELDS, RESUMABLE_FIELDS, TrainState, stop_reason, train

    spec.check_species(dataset.system.atomic_numbers, f"data set {dataset.path}")
    rd = RunDir(Path(run_dir).absolute())
    loop_dir = rd.sub(STABLE)
    finished = (loop_dir / DONE).exists()
    check_inputs(rd.path, {"config": to_dict(cfg),
                           "pretrained": {"model": spec.to_json(),
                                          "params_sha256": array_digest(params)},
                           "data": dataset_identity(dataset)},
                 allow=allow_paths(LOOP_FIELDS + tuple(allow_changes), RESUMABLE_FIELDS),
                 resumable=[f"config.{k}" for k in RESUMABLE_FIELDS], finished=finished,
                 defaults={"config": to_dict(type(cfg)()),
                           "pretrained": {"model": {"config": spec.default_config()}}})
    if finished:
        return read_json(loop_dir / DONE)
    if not rd.model_spec_path.exists():
        spec.save(rd.model_spec_path)
    model = spec.build()
    t0 = time.perf_counter()
    problem = make_problem(model, dataset.system, dataset.train, dataset.reference.positions, cfg,
                           val=dataset.val)
    state = TrainState.create(problem, params, cfg)
    state = train(state, cfg, run_dir=loop_dir.path, progress=progress,
                  allow_changes=allow_changes, keep_epoch=keep_epoch)
    rd.save_params(FINAL, int(state.epoch), state.params, {"epoch": int(state.epoch)})
    records = loop_dir.records()
    summary = {
        "data": str(Path(dataset.path).resolve()),
        "epochs": int(state.epoch),
        "learning_epochs": sum(r["phase"] == "learning" for r in records),
        "cycles": int(state.cycle),
        "final_unstable_fraction": state.unstable_fraction,
        "stop_reason": stop_reason(state, cfg),
        "train_wall_s": sum(r["seconds"] for r in records),
        "this_call_wall_s": time.perf_counter() - t0,
        "config": to_dict(cfg),
    }
    if keep_epoch is not None:
        summary["kept_epoch"] = keep_epoch(records)
    if pretrained_dir is not None:
        summary["pretrained_dir"] = str(Path(pretrained_dir).resolve())
    write_json(loop_dir / DONE, summary)
    rd.write_results(summary)  # model dir -> data
    return summary
