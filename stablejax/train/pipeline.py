"""Pre-training from a data set directory: the stage shared by the CLI and the experiments."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax

from stablejax._types import ProgressFn
from stablejax.data.dataset import Dataset
from stablejax.train.model_spec import ModelSpec, spec_from_data
from stablejax.train.pretrain import (
    PretrainConfig,
    PretrainState,
    evaluate_qm,
    load_best_params,
    pretrain,
)


def pretrain_on_dataset(
    dataset: Dataset,
    kind: str,
    cfg: PretrainConfig,
    run_dir: str | Path,
    *,
    model_overrides: dict | None = None,
    progress: ProgressFn | None = None,
) -> dict:
    """Pre-train a ``kind`` ('schnet' / 'nequip') model on a data set; resumable via ``run_dir``.

    Writes ``run_dir/model.json`` (the :class:`ModelSpec`), ``checkpoints/``, ``best/``,
    ``metrics.jsonl`` and ``results.json`` (test energy/force MAE of the best parameters, wall
    time, throughput). A finished run (``results.json`` present) is returned as is.

    Returns:
      The results dict.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "results.json").exists():
        return json.loads((run_dir / "results.json").read_text())
    spec_path = run_dir / "model.json"
    if spec_path.exists():
        spec = ModelSpec.load(spec_path)
    else:
        spec = spec_from_data(kind, dataset.train, **(model_overrides or {}))
        spec.save(spec_path)
    model = spec.build()
    state = PretrainState.create(model, jax.random.PRNGKey(cfg.seed),
                                 dataset.train.positions[0], cfg)
    t0 = time.perf_counter()
    state = pretrain(state, cfg, dataset.train, dataset.val, run_dir=run_dir, progress=progress)
    params = load_best_params(run_dir, state.params)
    test = evaluate_qm(model, params, dataset.test, dtype=cfg.dtype)
    results = {
        "model": kind,
        "system": dataset.system.name,
        "data": str(dataset.path),
        "n_train": dataset.train.n_frames,
        "n_val": dataset.val.n_frames,
        "n_test": dataset.test.n_frames,
        "epochs": int(state.epoch),
        "best_epoch": int(state.best_epoch),
        "train_wall_s": float(state.elapsed_s),
        "this_call_wall_s": time.perf_counter() - t0,
        "test_energy_mae_mev": float(test["energy_mae_mev"]),
        "test_force_mae_mev_per_angstrom": float(test["force_mae_mev_per_angstrom"]),
        "config": {k: (v if not hasattr(v, "__dict__") else v.__dict__)
                   for k, v in cfg.__dict__.items()},
        "n_params": int(sum(x.size for x in jax.tree.leaves(params))),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results


def load_model_dir(run_dir: str | Path):
    """(spec, model, params) of a model directory: a StABlE run (``model.json`` + ``final/``)
    or a pre-training run (``model.json`` + ``best/``); ``final/`` wins when both exist."""
    import numpy as np

    from stablejax.io.checkpoint import restore_checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "model.json").exists():
        raise FileNotFoundError(
            f"{run_dir}: no model.json (expected a pre-training or StABlE run directory)")
    spec = ModelSpec.load(run_dir / "model.json")
    model = spec.build()
    n = len(spec.atomic_numbers)
    like = model.init(jax.random.PRNGKey(0), np.arange(n)[:, None] * np.array([1.5, 0.3, 0.1]))
    for sub in ("final", "best"):
        if (run_dir / sub).exists():
            out, _ = restore_checkpoint(run_dir / sub, like={"params": like})
            return spec, model, out["params"]
    raise FileNotFoundError(f"{run_dir}: no final/ or best/ parameter checkpoint")



def stable_on_dataset(dataset: Dataset, model, params, cfg, run_dir: str | Path, *,
                      progress: ProgressFn | None = None) -> dict:
    """StABlE training of ``params`` on a data set (resumable from ``run_dir``).

    Writes ``run_dir/stable/`` (checkpoints, metrics.jsonl, end_of_cycle/), the final
    parameters as ``run_dir/final`` (so ``run_dir`` with ``model.json`` is a model directory)
    and ``run_dir/results.json`` (summary, with the data set path).
    A finished run (``run_dir/stable/done.json``) is returned as is.
    """
    import dataclasses

    from stablejax.io.checkpoint import save_checkpoint
    from stablejax.train.problem import make_problem
    from stablejax.train.stable import TrainState, stop_reason, train

    run_dir = Path(run_dir)
    done = run_dir / "stable" / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    problem = make_problem(model, dataset.system, dataset.train, dataset.reference.positions, cfg)
    state = TrainState.create(problem, params, cfg)
    state = train(state, cfg, run_dir=run_dir / "stable", progress=progress)
    save_checkpoint(run_dir / "final", int(state.epoch), {"params": state.params},
                    {"epoch": int(state.epoch)}, max_to_keep=1)
    records = [json.loads(x) for x in (run_dir / "stable" / "metrics.jsonl").read_text()
               .splitlines() if x.strip()]
    summary = {
        "data": str(dataset.path),
        "epochs": int(state.epoch),
        "learning_epochs": sum(r["phase"] == "learning" for r in records),
        "cycles": int(state.cycle),
        "final_unstable_fraction": state.unstable_fraction,
        "stop_reason": stop_reason(state, cfg),
        "train_wall_s": sum(r["seconds"] for r in records),
        "this_call_wall_s": time.perf_counter() - t0,
        "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
    }
    done.write_text(json.dumps(summary, indent=1))
    (run_dir / "results.json").write_text(json.dumps(summary, indent=1))  # model dir -> data
    return summary
