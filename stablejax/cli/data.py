"""``python -m stablejax data {generate,info}``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from stablejax.cli.progress import ProgressBar


@dataclasses.dataclass(frozen=True)
class GenerateArgs:
    """Generate GFN2-xTB reference data for a built-in molecule (resumable, cached)."""

    system: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="SYSTEM")]
    """Molecule: aspirin, ac-ala3-nhme (or ethanol, a small test system)."""
    scale: Literal["demo", "cpu", "paper"] = "demo"
    """Size preset of the splits and the reference trajectory."""
    data_dir: Path | None = None
    """Cache root (default: $STABLEJAX_DATA, else the user cache directory)."""
    workers: int | None = None
    """Parallel worker processes (default: all cores)."""
    seed: int = 0
    """Seed of structure, velocities, thermostat noise and splits."""
    n_train: int | None = None
    """Override the scale's training-set size."""
    reference_ps: float | None = None
    """Override the scale's reference-trajectory length, ps."""


@dataclasses.dataclass(frozen=True)
class InfoArgs:
    """Summarise a data set directory or a frames file (npz, extxyz, any ASE format)."""

    path: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="PATH")]
    """Data set directory or frames file."""
    energy_unit: str | None = None
    """Energy unit of a frames file: of an npz without unit metadata (e.g. kcal/mol for MD17),
    of an extxyz or other ASE file (default eV). Not for a data set directory."""
    energy_key: str | None = None
    """Key of the energies in a frames file, e.g. REF_energy (default: energy; npz: E, energies
    or energy)."""
    forces_key: str | None = None
    """Key of the forces in a frames file, e.g. REF_forces (default: forces; npz: F or forces)."""


def generate(argv: list[str]) -> int:
    from stablejax.data import generate_dataset, scale_config

    args = tyro.cli(GenerateArgs, args=argv, prog="stablejax data generate")
    overrides = {k: v for k, v in (("n_train", args.n_train), ("reference_ps", args.reference_ps))
                 if v is not None}
    cfg = scale_config(args.system, args.scale, seed=args.seed, **overrides)
    with ProgressBar(f"{cfg.system} GFN2-xTB MD", unit="chunk") as bar:
        path = generate_dataset(cfg, args.data_dir, n_workers=args.workers, progress=bar)
    complete = json.loads((path / "complete.json").read_text())
    print(f"data set: {path}")
    print(f"  wall time {complete['wall_s']:.1f} s (this run; 0 if cached), "
          f"{complete['gfn2_calls']} GFN2 calls, {complete['n_workers']} workers")
    return 0


def info(argv: list[str]) -> int:
    from stablejax.data import dataset_info

    args = tyro.cli(InfoArgs, args=argv, prog="stablejax data info")
    out = dataset_info(args.path, energy_unit=args.energy_unit, energy_key=args.energy_key,
                       forces_key=args.forces_key)
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


USAGE = """usage: python -m stablejax data {generate,info} [options]

Reference data sets of GFN2-xTB energies and forces.

subcommands:
  generate SYSTEM   generate (or find in the cache) the data set of a built-in molecule:
                    aspirin, ac-ala3-nhme (ethanol: a small test system)
  info PATH         summarise a data set directory or a frames file (npz, extxyz, any ASE format)

Run `python -m stablejax data SUBCOMMAND --help` for a subcommand's options.
"""


def main(argv: list[str]) -> int:
    commands = {"generate": generate, "info": info}
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv or argv[0] not in commands:
        what = f"unknown data subcommand {argv[0]!r}\n\n" if argv else ""
        print(what + USAGE, file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])
