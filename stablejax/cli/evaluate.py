"""``python -m stablejax evaluate --model RUN_DIR --n-replicas 32 --time-ps 10``

The flags are the fields of :class:`stablejax.evaluate.EvalConfig` and its
:class:`stablejax.config.MDConfig` (``--dt-fs``, ``--integrator``, ``--tolerance-angstrom``,
...), the same names as in ``simulate`` and in config files.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import tyro

from stablejax.cli.progress import ProgressBar
from stablejax.evaluate.stability_run import EvalConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateArgs:
    """Long evaluation simulations of a model: stability times, h(r), bond lengths, force MAE."""

    model: Path = Path("runs/pretrain")
    """Model directory (pre-training or StABlE run: model.json + best/ or final/)."""
    data: Path | None = None
    """Data set directory (default: the one in <model>/results.json or its pre-training run)."""
    out: Path | None = None
    """Output directory (default: <model>/eval)."""
    eval: EvalConfig = EvalConfig()


def parse(cls, argv: list[str], prog: str):
    """``tyro.cli`` with nested config fields as plain flags (``--dt-fs``, not ``--md.dt-fs``)."""
    return tyro.cli(cls, args=argv, prog=prog, config=(tyro.conf.OmitArgPrefixes,))


def find_data(model_dir: Path) -> Path:
    from stablejax.io.run_dir import RESULTS

    for cand in (model_dir / RESULTS, model_dir.parent / "pretrain" / RESULTS):
        if cand.exists():
            return Path(json.loads(cand.read_text())["data"])
    raise ValueError(f"{model_dir}: cannot tell which data set it belongs to; pass --data")


def main(argv: list[str]) -> int:
    args = parse(EvaluateArgs, argv, "stablejax evaluate")
    from stablejax.data import load_dataset
    from stablejax.evaluate import evaluate_model
    from stablejax.evaluate.report import save_eval
    from stablejax.pipeline import load_model_dir

    _, model, params = load_model_dir(args.model)
    dataset = load_dataset(args.data or find_data(args.model))
    with ProgressBar("[evaluate] steps", unit="step", postfix_keys=("simulated_ps", "n_unstable")
                     ) as bar:
        result = evaluate_model(model, params, dataset, args.eval, progress=bar)
    out = args.out or args.model / "eval"
    save_eval(out, result.summary, result.arrays)
    print(json.dumps(result.summary, indent=1))
    print(f"written: {out}")
    return 0
