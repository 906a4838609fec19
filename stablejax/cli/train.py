"""``python -m stablejax train --pretrained RUN_DIR [--config cfg.json] [--cfg.SECTION.FIELD value]``

Flags follow the nested :class:`stablejax.train.TrainConfig` (``--cfg.optimizer.learning-rate``,
``--cfg.md.dt-fs``, ``--cfg.n-epochs``); a ``--config`` JSON file uses the same nesting
(``{"optimizer": {"learning_rate": 3e-3}}``), the shape ``stablejax.config.to_json`` writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import tyro

from stablejax.cli.progress import ProgressBar
from stablejax.train.stable_config import TrainConfig

PRESETS = {"aspirin": TrainConfig.aspirin, "ac-ala3-nhme": TrainConfig.ac_ala3_nhme}


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    """StABlE training of a pre-trained potential (resumable from --run-dir)."""

    pretrained: Path = Path("runs/pretrain")
    """Pre-training run directory (model.json + best/)."""
    data: Path | None = None
    """Data set directory (default: the one the model was pre-trained on)."""
    run_dir: Path | None = None
    """Output directory (default: <pretrained>-stable)."""
    cfg: TrainConfig = TrainConfig()
    """StABlE settings (defaults: --preset, then --config, then these flags)."""
    allow_change: tuple[str, ...] = ()
    """Config fields a resume of --run-dir may change (n-epochs, stable-epochs,
    optimizer.learning-rate); any other change is refused."""


def load_config(path: Path | None, preset: str) -> TrainConfig:
    """A preset's TrainConfig updated with the (nested) fields of a JSON file."""
    from stablejax.config import replace

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[preset]()
    if path is None:
        return base
    if not path.exists():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        over = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    try:
        return replace(base, over)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def main(argv: list[str]) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    pre.add_argument("--preset", default="aspirin")
    known, rest = pre.parse_known_args(argv)
    cfg = load_config(known.config, known.preset)
    args = tyro.cli(TrainArgs, args=rest, default=TrainArgs(cfg=cfg), prog="stablejax train",
                    description="StABlE training. Extra flags: --config FILE.json (TrainConfig "
                    "fields), --preset {aspirin,ac-ala3-nhme}.")
    from stablejax.data import load_dataset
    from stablejax.pipeline import load_model_dir, stable_on_dataset

    spec, _, params = load_model_dir(args.pretrained)
    from stablejax.io.run_dir import RESULTS, RunDir

    data = args.data
    pre = RunDir(args.pretrained)
    if data is None:
        if not pre.is_finished:
            raise ValueError(f"{args.pretrained}: no {RESULTS}; pass --data DATA_SET_DIR")
        data = Path(pre.read_results()["data"])
    dataset = load_dataset(data)
    run_dir = args.run_dir or args.pretrained.with_name(args.pretrained.name + "-stable")
    allow = tuple(name.replace("-", "_") for name in args.allow_change)
    with ProgressBar("[StABlE] epochs", unit="epoch",
                     postfix_keys=("phase", "unstable_fraction", "learning_rate")) as bar:
        def progress(done, total, info):
            if info.get("stage") != "simulate":
                bar(done, total, info)

        summary = stable_on_dataset(dataset, spec, params, args.cfg, run_dir, progress=progress,
                                    allow_changes=allow)
    print(json.dumps(summary, indent=1))
    print(f"run directory: {run_dir}")
    return 0
