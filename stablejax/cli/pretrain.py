"""``python -m stablejax pretrain --system aspirin --model schnet ...``"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import tyro

from stablejax.cli.progress import ProgressBar


@dataclasses.dataclass(frozen=True)
class PretrainArgs:
    """Pre-train a potential on GFN2-xTB energies and forces (resumable from --run-dir)."""

    system: str = "aspirin"
    """Built-in system whose data set is generated (or found in the cache)."""
    model: Literal["schnet", "nequip"] = "schnet"
    scale: Literal["demo", "cpu", "paper"] = "demo"
    """Data-set size preset (see `stablejax data generate`)."""
    data: Path | None = None
    """Use this data set directory instead of generating one."""
    data_dir: Path | None = None
    """Data cache root."""
    run_dir: Path | None = None
    """Output directory (default: runs/pretrain-<system>-<model>-<scale>)."""
    max_epochs: int | None = None
    time_budget_s: float | None = None
    """Stop after this much training time (s), summed over resumed runs."""
    learning_rate: float | None = None
    batch_size: int | None = None
    warmup_steps: int | None = None
    n_interactions: int | None = None
    """SchNet interaction blocks / NequIP layers (default: the paper's)."""
    features: int | None = None
    """SchNet hidden width and filters (default 64)."""
    float64: bool = False
    seed: int = 0
    allow_change: tuple[str, ...] = ()
    """Settings a resume of --run-dir may change (learning-rate; max-epochs and
    time-budget-s always may); any other change is refused."""


def main(argv: list[str]) -> int:
    args = tyro.cli(PretrainArgs, args=argv, prog="stablejax pretrain")
    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    from stablejax.data import generate_dataset, load_dataset, scale_config
    from stablejax.train import PretrainConfig
    from stablejax.pipeline import pretrain_on_dataset

    if args.data is None:
        cfg_data = scale_config(args.system, args.scale, seed=args.seed)
        with ProgressBar(f"[data] {cfg_data.system}", unit="chunk") as bar:
            data_path = generate_dataset(cfg_data, args.data_dir, progress=bar)
    else:
        data_path = args.data
    dataset = load_dataset(data_path)
    over = {k: getattr(args, k) for k in ("max_epochs", "time_budget_s", "learning_rate",
                                          "batch_size", "warmup_steps")
            if getattr(args, k) is not None}
    over["seed"] = args.seed
    if args.float64:
        over["dtype"] = "float64"
    cfg = (PretrainConfig.schnet if args.model == "schnet" else PretrainConfig.nequip)(**over)
    model_over = {}
    if args.n_interactions is not None:
        model_over["n_interactions" if args.model == "schnet" else "n_layers"] = args.n_interactions
    if args.features is not None:
        if args.model != "schnet":
            raise ValueError("--features applies to SchNet only")
        model_over.update(hidden_features=args.features, n_filters=args.features)
    allow = tuple(name.replace("-", "_") for name in args.allow_change)
    run_dir = args.run_dir or Path("runs") / f"pretrain-{dataset.system.name}-{args.model}-{args.scale}"
    with ProgressBar(f"[pretrain] {args.model}", unit="epoch",
                     postfix_keys=("train_loss", "val_force_mae_mev_per_angstrom")) as bar:
        results = pretrain_on_dataset(dataset, args.model, cfg, run_dir, model_overrides=model_over,
                                      progress=bar, allow_changes=allow)
    print(json.dumps({k: v for k, v in results.items() if k != "config"}, indent=1))
    print(f"run directory: {run_dir}")
    return 0
