"""``python -m stablejax pretrain --system aspirin --model schnet [--scale demo] [--name NAME]``

Writes the run ``runs/NAME`` (default ``pretrain-<system>-<model>-<scale>``), which ``train
--pretrained NAME``, ``evaluate --model NAME`` and ``report NAME`` find by that name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from stablejax.cli.progress import ProgressBar
from stablejax.cli.scales import DEFAULT_SCALE, SCALES
from stablejax.errors import InputError


@dataclasses.dataclass(frozen=True)
class PretrainArgs:
    """Pre-train a potential on GFN2-xTB energies and forces (resumable: run the same command
    again)."""

    system: str = "aspirin"
    """Built-in system whose data set is generated (or found in the cache): a molecule, or
    ``water`` (SPC/Fw liquid water in a periodic box, OpenMM reference data)."""
    molecules: int = 64
    """H2O molecules in the box (``--system water`` only; 64: edge 12.43 Angstrom)."""
    model: Literal["schnet", "nequip", "gemnet-t"] = "schnet"
    scale: Literal[SCALES] = DEFAULT_SCALE
    """Data-set size (as `stablejax data generate --scale`) and training length: demo 30
    epochs (batch 10), cpu 8 minutes (batch 10), paper the paper's recipe; NequIP below paper
    scale is the cpu-sized model (16 channels, 2 layers), SchNet on water below paper scale 3
    interactions x 32 features, GemNet-T below paper scale its cpu-sized configuration
    (GemNetTConfig.cpu_scale()) with batch 1; SchNet on water uses energy/force weights
    0.001 / 0.999.
    Flags given explicitly win."""
    name: str | None = None
    """Run name: writes runs/NAME (default: pretrain-<system>-<model>-<scale>)."""
    run_dir: Path | None = None
    """Output directory instead of runs/NAME."""
    data: Path | None = None
    """Use this data set directory instead of generating one."""
    data_dir: Path | None = None
    """Data cache root."""
    data_seed: int = 0
    """Seed of the generated data set (as `stablejax data generate --seed`)."""
    workers: int | None = None
    """Worker processes generating the data set (default: all cores)."""
    max_epochs: int | None = None
    time_budget_s: float | None = None
    """Stop after this much training time (s), summed over resumed runs."""
    learning_rate: float | None = None
    batch_size: int | None = None
    warmup_steps: int | None = None
    energy_weight: float | None = None
    """Weight of the normalised energy term (default: the model's recipe; SchNet 0.05, or
    0.001 on a periodic liquid)."""
    force_weight: float | None = None
    """Weight of the normalised force term (default: the model's recipe; SchNet 0.95, or
    0.999 on a periodic liquid)."""
    n_interactions: int | None = None
    """SchNet interaction blocks / NequIP layers / GemNet-T blocks (default: the scale's)."""
    features: int | None = None
    """SchNet hidden width and filters (default 64)."""
    cutoff_angstrom: float | None = None
    """Interaction cutoff of either model, Angstrom (default 5)."""
    float64: bool = False
    seed: int = 0
    """Seed of the model's initialisation and the batch order (not of the data: --data-seed)."""
    allow_change: tuple[str, ...] = ()
    """Settings a resume may change (learning-rate; max-epochs and time-budget-s always
    may); any other change is refused."""


def check(args: PretrainArgs) -> None:
    """Flags the configs do not check themselves.

    Raises:
      InputError: naming the flag and the value.
    """
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be >= 1 (worker processes)")
    if args.data_seed < 0:
        raise InputError(f"--data-seed {args.data_seed}: must be >= 0")
    if args.system != "water" and args.molecules != 64:
        raise InputError(f"--molecules {args.molecules}: applies to --system water only")
    if args.features is not None and args.model != "schnet":
        raise InputError(f"--features {args.features}: applies to SchNet only (--model "
                         f"{args.model}); NequIP's width is its hidden irreps, GemNet-T's its "
                         "embedding sizes")


def model_overrides(args: PretrainArgs, liquid: bool = False) -> dict:
    """Architecture overrides: the scale's (``liquid``: a periodic liquid), then the flags'."""
    from stablejax.cli.scales import model_overrides as scale_overrides

    over = scale_overrides(args.model, args.scale, liquid=liquid)
    if args.n_interactions is not None:
        key = {"schnet": "n_interactions", "nequip": "n_layers", "gemnet-t": "n_blocks"}
        over[key[args.model]] = args.n_interactions
    if args.features is not None:
        over.update(hidden_features=args.features, n_filters=args.features)
    if args.cutoff_angstrom is not None:
        over["cutoff_angstrom"] = args.cutoff_angstrom
    return over


def _water_data(args: PretrainArgs) -> Path:
    """Generate (or find in the cache) the water data set of ``args``' scale."""
    from stablejax.data.water import generate_water
    from stablejax.data.water_config import water_config

    cfg = water_config(args.scale, n_molecules=args.molecules, seed=args.data_seed)
    with ProgressBar(f"[data] {cfg.system} OpenMM MD", unit="chunk") as bar:
        return generate_water(cfg, args.data_dir, n_workers=args.workers, progress=bar)


def main(argv: list[str]) -> int:
    from stablejax.cli.evaluate import parse

    args = parse(PretrainArgs, argv, "stablejax pretrain")
    check(args)
    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    from stablejax.cli.runs import output_dir, run_ref
    from stablejax.cli.scales import pretrain_config
    from stablejax.data import generate_dataset, load_dataset, scale_config
    from stablejax.pipeline import pretrain_on_dataset

    if args.data is None and args.system == "water":
        data_path = _water_data(args)
    elif args.data is None:
        cfg_data = scale_config(args.system, args.scale, seed=args.data_seed)
        with ProgressBar(f"[data] {cfg_data.system}", unit="chunk") as bar:
            data_path = generate_dataset(cfg_data, args.data_dir, n_workers=args.workers,
                                         progress=bar)
    else:
        data_path = args.data
    dataset = load_dataset(data_path)
    over = {k: getattr(args, k) for k in ("max_epochs", "time_budget_s", "learning_rate",
                                          "batch_size", "warmup_steps")
            if getattr(args, k) is not None}
    over["seed"] = args.seed
    if args.float64:
        over["dtype"] = "float64"
    liquid = any(dataset.system.pbc)
    cfg = pretrain_config(args.model, args.scale, liquid=liquid, **over)
    if args.energy_weight is not None or args.force_weight is not None:
        loss = dataclasses.replace(cfg.loss, **{f"{k}_weight": getattr(args, f"{k}_weight")
                                                for k in ("energy", "force")
                                                if getattr(args, f"{k}_weight") is not None})
        cfg = dataclasses.replace(cfg, loss=loss)
    allow = tuple(name.replace("-", "_") for name in args.allow_change)
    run_dir = output_dir(args.name, args.run_dir,
                         f"pretrain-{dataset.system.name}-{args.model}-{args.scale}",
                         "the pre-training run")
    print(f"pre-training run: {run_dir}")
    with ProgressBar(f"[pretrain] {args.model}", unit="epoch",
                     postfix_keys=("train_loss", "val_force_mae_mev_per_angstrom")) as bar:
        results = pretrain_on_dataset(dataset, args.model, cfg, run_dir,
                                      model_overrides=model_overrides(args, liquid), progress=bar,
                                      allow_changes=allow)
    print(json.dumps({k: v for k, v in results.items() if k != "config"}, indent=1))
    print(f"run directory: {run_dir}")
    print(f"next: python -m stablejax train --pretrained {run_ref(run_dir)}")
    return 0
