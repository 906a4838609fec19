"""``--scale {demo,cpu,paper}``: the sizes a command uses when its flags do not say.

``demo`` (the default) is sized for a first try on a laptop: minutes on 2 CPU cores for an
ethanol- or aspirin-sized molecule, models not converged. ``cpu`` is the cpu-scale experiments'
sizes (about an hour per stage on 2 cores). ``paper`` is the paper's (a GPU). The library's
config classes keep the paper's values as their defaults; the sizes below are applied on top of
them, and any flag given explicitly wins over the scale.
"""

from __future__ import annotations

import argparse
import dataclasses

from stablejax.errors import InputError

SCALES = ("demo", "cpu", "paper")
DEFAULT_SCALE = "demo"

#: evaluate / simulate: replicas and simulated time per replica (paper: EvalConfig's defaults).
EVAL_SIZES = {"demo": {"n_replicas": 16, "time_ps": 5.0},
              "cpu": {"n_replicas": 32, "time_ps": 25.0},
              "paper": {"n_replicas": 256, "time_ps": 1000.0}}

#: evaluate / simulate on a periodic liquid (water): replicas, time per replica and frame
#: spacing. The evaluation criterion judges windows of 10 frames (demo, cpu: 1 ps; paper: the
#: paper's 10 ps windows of one frame per ps, 5 replicas x 1 ns). Langevin at the reference
#: data's friction (1/ps), so diffusivities compare with the reference trajectory's.
LIQUID_EVAL_SIZES = {"demo": {"n_replicas": 4, "time_ps": 2.0, "frame_interval_fs": 100.0},
                     "cpu": {"n_replicas": 4, "time_ps": 5.0, "frame_interval_fs": 100.0},
                     "paper": {"n_replicas": 5, "time_ps": 1000.0, "frame_interval_fs": 1000.0}}
LIQUID_EVAL_MD = {"integrator": "langevin", "gamma_per_ps": 1.0}

#: pretrain: PretrainConfig fields (paper: the model's PretrainConfig preset).
PRETRAIN_SIZES = {"demo": {"max_epochs": 30, "batch_size": 10, "warmup_steps": 50},
                  "cpu": {"time_budget_s": 480.0, "batch_size": 10, "warmup_steps": 500},
                  "paper": {}}

#: train: replicas and epochs; demo epochs are 1,000 steps with a frame every 50 steps.
TRAIN_SIZES = {"demo": {"n_replicas": 16, "n_epochs": 20, "stable_epochs": 5},
               "cpu": {"n_replicas": 32, "n_epochs": 80, "stable_epochs": 20,
                       "optimizer": {"learning_rate": 3e-3, "plateau_patience": 5}},
               "paper": {}}


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise InputError(f"--scale {scale}: must be one of {', '.join(SCALES)}")
    return scale


def peek(argv: list[str], *flags: str) -> argparse.Namespace:
    """The values of ``--scale`` and ``flags`` in ``argv`` (left in it for the full parser):
    what a command must know before it builds its defaults. No abbreviations."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--scale", default=DEFAULT_SCALE)
    for flag in flags:
        parser.add_argument(flag, default=None)
    known, _ = parser.parse_known_args(argv)
    check_scale(known.scale)
    return known


def eval_config(scale: str):
    """The :class:`~stablejax.evaluate.EvalConfig` of a scale."""
    from stablejax.evaluate.stability_run import EvalConfig

    return dataclasses.replace(EvalConfig(), **EVAL_SIZES[check_scale(scale)])


def pretrain_config(model: str, scale: str, *, liquid: bool = False, **overrides):
    """The :class:`~stablejax.train.PretrainConfig` of a model (``schnet``, ``nequip``) at a
    scale, with ``overrides``; ``liquid``: the system is a periodic liquid (SchNet then uses
    :meth:`~stablejax.train.PretrainConfig.schnet_liquid`)."""
    from stablejax.train import PretrainConfig

    if model == "schnet":
        preset = PretrainConfig.schnet_liquid if liquid else PretrainConfig.schnet
    elif model == "gemnet-t":
        preset = PretrainConfig.gemnet
    else:
        preset = PretrainConfig.nequip
    sizes = dict(PRETRAIN_SIZES[check_scale(scale)])
    if model == "nequip":  # NequIP's own batch size (5) and warm-up (none) at every scale
        sizes = {k: v for k, v in sizes.items() if k not in ("batch_size", "warmup_steps")}
    if model == "gemnet-t":
        # Its own batch size (1) and no warm-up at every scale: batching frames saves nothing
        # per frame on a CPU (benchmarks/bench_gemnet.py), so batch 1 gives 10x the steps of
        # batch 10 for the same cost.
        sizes = {k: v for k, v in sizes.items() if k not in ("batch_size", "warmup_steps")}
        if scale != "paper":
            # The EMA starts at the initial parameters (no bias correction): with 0.999 and the
            # few hundred steps of these scales it evaluates parameters still mostly at their
            # initialisation (measured: aspirin demo, 2 epochs, force MAE 37,037 meV/A with the
            # EMA while the training loss had fallen 200-fold).
            sizes["ema_decay"] = None
    return preset(**{**sizes, **overrides})


#: SchNet on a periodic liquid below paper scale. The paper's SchNet (6 x 64) costs 223 ms per
#: force call on the 64-molecule water box (192 atoms, ~100 neighbours each, one core), so a
#: short evaluation (4 replicas x 2 ps) would take about 30 minutes; 3 x 32 costs 47 ms.
SCHNET_LIQUID_CPU = {"n_interactions": 3, "hidden_features": 32, "n_filters": 32}


def model_overrides(model: str, scale: str, *, liquid: bool = False) -> dict:
    """Architecture overrides of a scale: NequIP below paper scale is the cpu-sized model
    (:data:`stablejax.models.NequIPConfig.CPU_SCALE`), GemNet-T likewise (its ``CPU_SCALE``);
    SchNet keeps the paper's, except on a
    periodic liquid (``liquid``) below paper scale (:data:`SCHNET_LIQUID_CPU`)."""
    if check_scale(scale) == "paper":
        return {}
    if model == "nequip":
        from stablejax.models import NequIPConfig

        return dict(NequIPConfig.CPU_SCALE)
    if model == "gemnet-t":
        from stablejax.models import GemNetTConfig

        return dict(GemNetTConfig.CPU_SCALE)
    return dict(SCHNET_LIQUID_CPU) if liquid else {}


def train_config(cfg, scale: str):
    """A StABlE :class:`~stablejax.train.TrainConfig` (a preset) at a scale."""
    from stablejax.config import replace

    over = dict(TRAIN_SIZES[check_scale(scale)])
    if scale == "demo":
        dt = cfg.md.dt_fs
        over.update(epoch_ps=1000 * dt / 1000, md={"frame_interval_fs": 50 * dt})
    return replace(cfg, over)


def liquid_eval_fields(scale: str) -> dict:
    """{flag name: value} of an evaluation or simulation of a periodic liquid at a scale: the
    EvalConfig fields (``n_replicas``, ``time_ps``) and MDConfig fields (the rest)."""
    return {**LIQUID_EVAL_SIZES[check_scale(scale)], **LIQUID_EVAL_MD}
