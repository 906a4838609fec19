"""``python -m stablejax train [--pretrained NAME] [--scale demo] [--config cfg.json]
[--cfg.SECTION.FIELD value]``

The settings are built in this order: the preset of the data set's system (``--preset``:
aspirin and ac-ala3-nhme have their own; any other molecule gets ``molecule``, the paper's MD17
settings at the temperature and time step of its reference data), then ``--scale``'s sizes
(:mod:`stablejax.cli.scales`), then ``--config`` (nested JSON, the shape
``stablejax.config.to_json`` writes: ``{"optimizer": {"learning_rate": 3e-3}}``), then the flags,
which follow the nested :class:`stablejax.train.TrainConfig` (``--cfg.optimizer.learning-rate``,
``--cfg.md.dt-fs``, ``--cfg.n-epochs``).

``--pretrained`` is a run name under ``runs/`` or a pre-training run directory; the StABlE run
goes next to it, ``<pretrained>-stable`` (``runs/NAME-stable``), unless ``--name`` or
``--run-dir`` say otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Literal

import tyro

from stablejax.cli.progress import ProgressBar
from stablejax.cli.scales import DEFAULT_SCALE, SCALES
from stablejax.errors import InputError
from stablejax.train.stable_config import PRESETS, TrainConfig

PRESET_NAMES = (*PRESETS, "molecule")
EXTRA_FLAGS = ("Extra flags: --config FILE.json (TrainConfig fields, nested as --cfg), "
               "--preset {" + ",".join(PRESET_NAMES) + "} (default: the data set's system's "
               "own, else molecule: the paper's MD17 settings at the system's temperature and "
               "time step).")


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    """StABlE training of a pre-trained potential (resumable: run the same command again)."""

    pretrained: str | None = None
    """Pre-training run name under runs/, or its directory (model.json + best/); default: the
    most recent finished pre-training run under runs/."""
    scale: Literal[SCALES] = DEFAULT_SCALE
    """Sizes on top of the preset: demo 16 replicas x 20 epochs of 1,000 steps (a frame every
    50 steps); cpu 32 replicas x 80 epochs, SGD 3e-3; paper the preset's (128 x 500)."""
    name: str | None = None
    """Run name: writes runs/NAME (default: <pretrained>-stable, next to the pre-training run)."""
    run_dir: Path | None = None
    """Output directory instead of runs/NAME."""
    data: Path | None = None
    """Data set directory (default: the one the model was pre-trained on)."""
    cfg: TrainConfig = TrainConfig()
    """StABlE settings (defaults: --preset, --scale, then --config, then these flags)."""
    allow_change: tuple[str, ...] = ()
    """Config fields a resume may change (n-epochs, stable-epochs, optimizer.learning-rate);
    any other change is refused."""


def load_config(path: Path | None, base: str | TrainConfig) -> TrainConfig:
    """``base`` (a TrainConfig, or the name of a preset with its own settings) updated with the
    (nested) fields of a JSON file."""
    from stablejax.config import replace

    if isinstance(base, str):
        if base not in PRESETS:
            raise InputError(f"--preset {base}: unknown; choose one of {', '.join(PRESET_NAMES)}")
        base = PRESETS[base]()
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


def split_argv(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(``--config``, ``--preset``, ``--scale``, ``--pretrained``, ``--data``; the arguments
    for the flag parser, which are ``argv`` without ``--config`` and ``--preset``)."""
    extra = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    extra.add_argument("--config", type=Path, default=None)
    extra.add_argument("--preset", default=None)
    known, rest = extra.parse_known_args(argv)
    if known.preset is not None and known.preset not in PRESET_NAMES:
        raise InputError(f"--preset {known.preset}: unknown; choose one of "
                         f"{', '.join(PRESET_NAMES)}")
    from stablejax.cli.scales import peek

    peeked = peek(rest, "--pretrained", "--data")
    known.scale, known.pretrained, known.data = peeked.scale, peeked.pretrained, peeked.data
    return known, rest


def build_config(system, preset: str | None, scale: str, config: Path | None
                 ) -> tuple[TrainConfig, str]:
    """(config before the flags, preset name) for a data set's ``system``."""
    from stablejax.cli.scales import train_config
    from stablejax.train.stable_config import preset_for

    base, name = preset_for(system.name, system.temperature_k, system.timestep_fs, preset)
    return load_config(config, train_config(base, scale)), name


def _cli(rest: list[str], default: TrainArgs) -> TrainArgs:
    return tyro.cli(TrainArgs, args=rest, default=default, prog="stablejax train",
                    description="StABlE training. " + EXTRA_FLAGS)


def main(argv: list[str]) -> int:
    known, rest = split_argv(argv)
    if {"-h", "--help"} & set(rest):
        from stablejax.cli.scales import train_config

        _cli(rest, TrainArgs(cfg=load_config(known.config, train_config(TrainConfig(),
                                                                        known.scale))))
    from stablejax.cli.runs import output_dir, resolve_run, run_ref
    from stablejax.data import load_dataset
    from stablejax.io.run_dir import RESULTS, RunDir
    from stablejax.pipeline import load_model_dir, stable_on_dataset

    pretrained = resolve_run(known.pretrained, "--pretrained", ("pretrain",),
                             what="pre-training run directory")
    spec, _, params = load_model_dir(pretrained)
    data = known.data
    if data is None:
        if not RunDir(pretrained).is_finished:
            raise InputError(f"--pretrained {pretrained}: no {RESULTS} (the pre-training has "
                             "not finished); finish it, or pass --data DATA_SET_DIR")
        data = RunDir(pretrained).read_results()["data"]
    dataset = load_dataset(Path(data))
    system = dataset.system
    cfg, preset = build_config(system, known.preset, known.scale, known.config)
    args = _cli(rest, TrainArgs(pretrained=str(pretrained), scale=known.scale, data=Path(data),
                                cfg=cfg))
    if args.name is None and args.run_dir is None:
        run_dir = pretrained.with_name(pretrained.name + "-stable")
    else:
        run_dir = output_dir(args.name, args.run_dir, "", "the StABlE run")
    c = args.cfg
    print(f"StABlE preset {preset} ({system.name}; {c.md.integrator} {c.md.temperature_k:g} K, "
          f"{c.md.dt_fs:g} fs), --scale {known.scale}: {c.n_replicas} replicas x up to "
          f"{c.n_epochs} epochs of {c.epoch_ps:g} ps -> {run_dir}")
    allow = tuple(name.replace("-", "_") for name in args.allow_change)
    with ProgressBar("[StABlE] epochs", unit="epoch",
                     postfix_keys=("phase", "unstable_fraction", "learning_rate")) as bar:
        def progress(done, total, info):
            if info.get("stage") != "simulate":
                bar(done, total, info)

        summary = stable_on_dataset(dataset, spec, params, c, run_dir, progress=progress,
                                    allow_changes=allow, pretrained_dir=pretrained)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))
    print(f"run directory: {run_dir}")
    print(f"next: python -m stablejax evaluate --model {run_ref(run_dir)}")
    return 0
