"""``python -m stablejax data {generate,import,info}``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from stablejax.cli.progress import ProgressBar
from stablejax.errors import InputError


@dataclasses.dataclass(frozen=True)
class GenerateArgs:
    """Generate GFN2-xTB reference data (resumable, cached) for a built-in molecule (SYSTEM) or
    your own (--smiles or --structure)."""

    system: Annotated[str | None, tyro.conf.Positional, tyro.conf.arg(metavar="[SYSTEM]")] = None
    """Built-in molecule: aspirin, ac-ala3-nhme (or ethanol, a small test system). Give exactly
    one of SYSTEM, --smiles and --structure."""
    smiles: str | None = None
    """Your molecule as a SMILES string (hydrogens added by RDKit), e.g. 'CCO'."""
    structure: Path | None = None
    """Your molecule as a 3-D structure file: .sdf/.mol/.pdb (read by RDKit with their bonds)
    or .xyz and other ASE formats (bonds from covalent radii). Hydrogens must be present."""
    name: str | None = None
    """Name of your molecule (data set directory name); needed with --smiles, default the
    file name with --structure."""
    charge: int = 0
    """Total charge of your molecule, e (must equal the SMILES/sdf formal charge)."""
    multiplicity: int = 1
    """Spin multiplicity of your molecule (2 for a radical with one unpaired electron)."""
    temperature_k: float | None = None
    """MD temperature, K (default 500 K)."""
    timestep_fs: float | None = None
    """MD timestep, fs (default 0.5 fs)."""
    scale: Literal["demo", "cpu", "paper"] = "demo"
    """Size preset of the splits and the reference trajectory."""
    n_train: int | None = None
    """Override the scale's training-set size (frames)."""
    n_val: int | None = None
    """Override the scale's validation-set size (frames)."""
    n_test: int | None = None
    """Override the scale's test-set size (frames)."""
    reference_ps: float | None = None
    """Override the scale's reference-trajectory length, ps."""
    data_dir: Path | None = None
    """Cache root (default: $STABLEJAX_DATA, else the user cache directory)."""
    workers: int | None = None
    """Parallel worker processes, >= 1 (default: all cores)."""
    seed: int = 0
    """Seed of structure, velocities, thermostat noise and splits."""


@dataclasses.dataclass(frozen=True)
class WaterArgs:
    """Generate SPC/Fw liquid-water reference data with OpenMM (resumable, cached): a cubic
    periodic box at 0.997 g/cm3 and 300 K (see stablejax.data.water_config for the scales)."""

    molecules: int = 64
    """H2O molecules in the box (64: edge 12.43 Angstrom, PME cutoff 6 Angstrom)."""
    scale: Literal["demo", "cpu", "paper"] = "demo"
    """Size preset of the splits and the reference trajectory."""
    data_dir: Path | None = None
    """Cache root (default: $STABLEJAX_DATA, else the user cache directory)."""
    workers: int | None = None
    """Parallel worker processes, >= 1 (default: all cores)."""
    seed: int = 0
    """Seed of the box, velocities, thermostat noise and splits."""


def generate_water(argv: list[str]) -> int:
    from stablejax.data.water import generate_water as run
    from stablejax.data.water_config import water_config

    args = tyro.cli(WaterArgs, args=argv, prog="stablejax data generate water")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1 (default: all cores), got {args.workers}")
    cfg = water_config(args.scale, n_molecules=args.molecules, seed=args.seed)
    print(f"{cfg.system}: {cfg.n_molecules} H2O (SPC/Fw, OpenMM), cubic box "
          f"{cfg.edge_angstrom:.3f} Angstrom, PME cutoff {cfg.cutoff:g} Angstrom; "
          f"{cfg.temperature_k:g} K, {cfg.timestep_fs:g} fs; {cfg.n_train}/{cfg.n_val}/"
          f"{cfg.n_test} train/val/test frames, {cfg.reference_ps:g} ps reference")
    with ProgressBar(f"{cfg.system} OpenMM MD", unit="chunk") as bar:
        path = run(cfg, args.data_dir, n_workers=args.workers, progress=bar)
    complete = json.loads((path / "complete.json").read_text())
    print(f"data set: {path}")
    print(f"  wall time {complete['wall_s']:.1f} s (0 if cached), {complete['simulated_ps']:g} ps "
          f"simulated, {complete['ps_per_cpu_s']:.2f} ps per CPU-second, "
          f"{complete['n_workers']} workers")
    return 0


@dataclasses.dataclass(frozen=True)
class ImportArgs:
    """Import labelled trajectories of one free molecule or one periodic box (MD17/MD22/sGDML
    npz, extxyz, ASE .traj or any ASE format) as a data set directory. Several files: split by file (the last
    is the test file unless --test is given). One file: contiguous blocks, in time order:
    training, validation, a gap, then the test block at the end."""

    files: Annotated[tuple[Path, ...], tyro.conf.Positional, tyro.conf.arg(metavar="FILE...")]
    """Training files in time order (and the test file last, without --test)."""
    name: str
    """Name of the molecule / data set."""
    out: Path | None = None
    """Output directory (default: <data-dir>/<name>/<name>-<hash>)."""
    data_dir: Path | None = None
    """Cache root of the default output (default: $STABLEJAX_DATA, else the user cache)."""
    test: tuple[Path, ...] = ()
    """Test files (then every FILE is a training file)."""
    reference: tuple[Path, ...] = ()
    """Reference trajectory for observable targets (h(r), bond lengths); default: the training
    and validation blocks."""
    n_train: int | None = None
    """Training frames, spread evenly over the training block (default: all, at most 1000)."""
    n_val: int | None = None
    """Validation frames (default: all of the validation block, at most 100)."""
    n_test: int | None = None
    """Test frames (default: all of the test block, at most 1000)."""
    test_fraction: float = 0.15
    """One file: the last fraction of its frames is the test block."""
    gap_fraction: float = 0.05
    """One file: fraction of frames dropped between the training and the test block."""
    val_fraction: float = 0.1
    """The last fraction of the training frames is the validation block."""
    max_reference_frames: int = 10_000
    """The reference trajectory is strided to at most this many frames."""
    temperature_k: float = 500.0
    """Temperature of the data (later MD runs at it), K."""
    timestep_fs: float = 0.5
    """MD timestep of the data, fs."""
    frame_interval_fs: float | None = None
    """Time between consecutive frames of the files, fs (default: --timestep-fs)."""
    energy_unit: str | None = None
    """Energy unit of files that do not state it: kcal/mol for MD17/MD22 npz (default eV for
    extxyz/ASE files)."""
    length_unit: str | None = None
    """Length unit of the positions (default Angstrom)."""
    energy_key: str | None = None
    """Key of the energies, e.g. REF_energy (default: energy; npz: E, energies or energy)."""
    forces_key: str | None = None
    """Key of the forces, e.g. REF_forces (default: forces; npz: F or forces)."""


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


def generation_config(args: GenerateArgs):
    """The :class:`~stablejax.data.GenerationConfig` of ``data generate``'s flags.

    Raises:
      InputError: not exactly one of SYSTEM / --smiles / --structure, flags that do not apply,
        a bad --workers, or a molecule that fails its checks.
    """
    from stablejax.data import read_structure_file, scale_config
    from stablejax.data.molecule import check_name

    given = [f for f, v in (("SYSTEM", args.system), ("--smiles", args.smiles),
                            ("--structure", args.structure)) if v is not None]
    if len(given) != 1:
        raise InputError("data generate: give exactly one of SYSTEM (a built-in molecule), "
                         f"--smiles and --structure, got {given or 'none'}")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1 (default: all cores), got {args.workers}")
    sizes = {k: getattr(args, k) for k in ("n_train", "n_val", "n_test", "reference_ps",
                                           "temperature_k", "timestep_fs")
             if getattr(args, k) is not None}
    if args.system is not None:
        for flag, v, default in (("--name", args.name, None), ("--charge", args.charge, 0),
                                 ("--multiplicity", args.multiplicity, 1)):
            if v != default:
                raise InputError(f"{flag} {v} is for your own molecule (--smiles/--structure); "
                                 f"built-in {args.system!r} is a named neutral singlet")
        return scale_config(args.system, args.scale, seed=args.seed, **sizes)
    if args.name is not None:
        check_name(args.name, "--name")
    spin = dict(charge=args.charge, multiplicity=args.multiplicity)
    if args.smiles is not None:
        if args.name is None:
            raise InputError("--smiles needs --name (the data set's name, e.g. --name ethanol2)")
        return scale_config(args.name, args.scale, seed=args.seed, smiles=args.smiles, **spin,
                            **sizes)
    structure = read_structure_file(args.structure, **spin)
    name = args.name
    if name is None:
        name = check_name(args.structure.stem, "--name (default: the file name)")
    return scale_config(name, args.scale, seed=args.seed, structure=structure, **spin, **sizes)


def generate(argv: list[str]) -> int:
    from ase.formula import Formula

    from stablejax.data import generate_dataset

    if argv[:1] == ["water"]:
        return generate_water(argv[1:])
    args = tyro.cli(GenerateArgs, args=argv, prog="stablejax data generate")
    cfg = generation_config(args)
    if cfg.structure is not None:
        z, what = cfg.structure.atomic_numbers, f"structure {cfg.structure.source}"
    else:
        from stablejax.data.molecule import smiles_facts

        z, what = smiles_facts(cfg.smiles)[0], f"SMILES {cfg.smiles}"
    from ase.data import chemical_symbols

    formula = Formula.from_list([chemical_symbols[int(v)] for v in z]).format("hill")
    print(f"{cfg.system}: {formula}, {len(z)} atoms from {what}; charge {cfg.charge}, "
          f"multiplicity {cfg.multiplicity}; {cfg.temperature_k:g} K, {cfg.timestep_fs:g} fs; "
          f"{cfg.n_train}/{cfg.n_val}/{cfg.n_test} train/val/test frames, "
          f"{cfg.reference_ps:g} ps reference")
    from ase.calculators.calculator import CalculationFailed

    try:
        with ProgressBar(f"{cfg.system} GFN2-xTB MD", unit="chunk") as bar:
            path = generate_dataset(cfg, args.data_dir, n_workers=args.workers, progress=bar)
    except CalculationFailed as e:
        raise InputError(
            f"GFN2-xTB failed during the reference MD of {cfg.system} ({str(e).strip()}); the "
            f"finished chunks are kept. Usual causes: a time step too large for the molecule "
            f"(--timestep-fs {cfg.timestep_fs:g}; 0.5 is the default) or a wrong --charge / "
            "--multiplicity") from None
    complete = json.loads((path / "complete.json").read_text())
    print(f"data set: {path}")
    print(f"  wall time {complete['wall_s']:.1f} s (this run; 0 if cached), "
          f"{complete['gfn2_calls']} GFN2 calls, {complete['n_workers']} workers")
    return 0


def import_(argv: list[str]) -> int:
    from stablejax.data import ImportConfig, import_dataset

    args = tyro.cli(ImportArgs, args=argv, prog="stablejax data import")
    fields = {f.name for f in dataclasses.fields(ImportConfig)}
    kw = {k: v for k, v in dataclasses.asdict(args).items() if k in fields}
    cfg = ImportConfig(**{**kw, "files": args.files, "test_files": args.test,
                          "reference_files": args.reference})
    res = import_dataset(cfg, args.data_dir, out=args.out)
    s = res.summary
    print(f"data set: {res.path} ({'existing, reused' if res.reused else 'new'})")
    print(f"  system {s['name']}: {s['formula']}, {s['n_atoms']} atoms, {s['n_bonds']} bonds "
          f"(covalent radii); {s['temperature_k']:g} K (--temperature-k), timestep "
          f"{s['timestep_fs']:g} fs, frames every {s['frame_interval_fs']:g} fs")
    eq = s["equilibrium"]
    print(f"  equilibrium structure: {eq['rule']} ({eq['file']} frame {eq['frame']}, "
          f"{eq['energy_ev']:.4f} eV)")
    for name, sp in s["splits"].items():
        strides = {f["stride"] for f in sp["frames"]} - {None}
        stride = max(strides, default=1)
        extra = (f", every {s['reference_interval_fs']:g} fs" if name == "reference" else
                 f", every {stride}th frame" if stride > 1 else "")
        print(f"  {name:<9} {sp['n_frames']:>6} frames{extra} from {sp['block']}")
    print(f"next: python -m stablejax data info {res.path}")
    return 0


def info(argv: list[str]) -> int:
    from stablejax.data import dataset_info

    args = tyro.cli(InfoArgs, args=argv, prog="stablejax data info")
    out = dataset_info(args.path, energy_unit=args.energy_unit, energy_key=args.energy_key,
                       forces_key=args.forces_key)
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


USAGE = """usage: python -m stablejax data {generate,import,info} [options]

Reference data sets of energies and forces.

subcommands:
  generate SYSTEM          generate (or find in the cache) GFN2-xTB data of a built-in molecule:
                           aspirin, ac-ala3-nhme (ethanol: a small test system)
  generate --smiles S --name N | --structure FILE
                           the same for your own molecule (SMILES, or sdf/mol/pdb/xyz file)
  generate water [--molecules N] [--scale S]
                           SPC/Fw liquid water (periodic box, 300 K) simulated with OpenMM
  import FILE... --name N  your own labelled trajectories (MD17/MD22/sGDML npz, extxyz, ASE
                           trajectories) as a data set directory
  info PATH                summarise a data set directory or a frames file (npz, extxyz, any
                           ASE format)

Run `python -m stablejax data SUBCOMMAND --help` for a subcommand's options.
"""


def main(argv: list[str]) -> int:
    commands = {"generate": generate, "import": import_, "info": info}
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not argv or argv[0] not in commands:
        what = f"unknown data subcommand {argv[0]!r}\n\n" if argv else ""
        print(what + USAGE, file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])
