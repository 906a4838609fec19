"""``python -m stablejax evaluate --model RUN_DIR --replicas 32 --time-ps 10``"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import tyro

from stablejax.cli.progress import ProgressBar


@dataclasses.dataclass(frozen=True)
class MDFlags:
    """Simulation flags shared by ``evaluate`` and ``simulate`` (method.md evaluation defaults)."""

    integrator: Literal["langevin", "nose_hoover", "nve"] = "langevin"
    gamma_per_ps: float = 0.1
    temperature_k: float = 500.0
    dt_fs: float = 0.5
    tolerance_angstrom: float = 0.5
    """A replica is unstable once a bond deviates from its reference length by more than this."""
    frame_interval_fs: float = 100.0
    hr_r_max_angstrom: float = 10.0
    seed: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateArgs(MDFlags):
    """Long evaluation simulations of a model: stability times, h(r), bond lengths, force MAE."""

    model: Path = Path("runs/pretrain")
    """Model directory (pre-training or StABlE run: model.json + best/ or final/)."""
    data: Path | None = None
    """Data set directory (default: the one in <model>/results.json or its pre-training run)."""
    out: Path | None = None
    """Output directory (default: <model>/eval)."""
    replicas: int = 256
    time_ps: float = 1000.0


def find_data(model_dir: Path) -> Path:
    for cand in (model_dir / "results.json", model_dir.parent / "pretrain" / "results.json"):
        if cand.exists():
            return Path(json.loads(cand.read_text())["data"])
    raise ValueError(f"{model_dir}: cannot tell which data set it belongs to; pass --data")


def main(argv: list[str]) -> int:
    args = tyro.cli(EvaluateArgs, args=argv, prog="stablejax evaluate")
    from stablejax.data import load_dataset
    from stablejax.evaluate import EvalConfig, evaluate_model
    from stablejax.evaluate.report import save_eval
    from stablejax.train.pipeline import load_model_dir

    _, model, params = load_model_dir(args.model)
    dataset = load_dataset(args.data or find_data(args.model))
    md = {f.name: getattr(args, f.name) for f in dataclasses.fields(MDFlags)}
    cfg = EvalConfig(**md, n_replicas=args.replicas, time_ps=args.time_ps)
    with ProgressBar("[evaluate] steps", unit="step", postfix_keys=("simulated_ps", "n_unstable")
                     ) as bar:
        result = evaluate_model(model, params, dataset, cfg, progress=bar)
    out = args.out or args.model / "eval"
    save_eval(out, result.summary, result.arrays)
    print(json.dumps(result.summary, indent=1))
    print(f"written: {out}")
    return 0
