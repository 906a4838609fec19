"""``python -m stablejax COMMAND ...``: data, pretrain, simulate, train, evaluate, report."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

# command -> module under stablejax.cli with a ``main(argv) -> int``
COMMANDS = {
    "data": "data",
    "pretrain": "pretrain",
    "simulate": "simulate",
    "train": "train",
    "evaluate": "evaluate",
    "report": "report",
}

# command -> what an interrupt leaves on disk, for commands that do not say it themselves
# (``simulate`` and ``evaluate`` raise ``KeyboardInterrupt(note)`` with what they kept).
ON_INTERRUPT = {
    "data": "`data generate` keeps the chunks of reference MD it finished; run the same command "
            "to resume (`data import` writes its data set only when complete; `data info` "
            "writes nothing)",
    "pretrain": "the run directory keeps the checkpoint of the last finished epoch (none if no "
                "epoch finished); run the same command to resume from it",
    "train": "the run directory keeps the checkpoint of the last finished epoch (none if no "
             "epoch finished); run the same command to resume from it",
    "report": "the report may be incomplete; run the same command again",
    "simulate": "nothing was written (interrupted before the output directory was opened)",
    "evaluate": "nothing was written (interrupted before the output directory was opened)",
}

USAGE = """usage: python -m stablejax COMMAND [options]

commands:
  data generate SYSTEM   generate GFN2-xTB reference data (aspirin, ac-ala3-nhme, ethanol;
                         or --smiles S --name N, or --structure FILE for your molecule)
  data import FILE...    make a data set from your own npz / extxyz / ASE trajectories
  data info PATH         summarise a data set directory or a frames file
  pretrain               fit a potential to QM energies and forces      -> runs/NAME
  train                  StABlE training of a pre-trained run             -> runs/NAME-stable
  evaluate               evaluation simulations and metrics of a run      -> runs/NAME/eval
  simulate               batched replica MD with stability detection      -> runs/NAME/simulate
  report [NAME]          Markdown report with plots of a run              -> runs/NAME/report.md

Global option: --devices N splits replicas, estimator frames and batches over N devices (on a
CPU: N host devices of one process; default: every device, i.e. one CPU device). With
--distributed the process joins a multi-host run (jax.distributed.initialize; see the README).

Runs are named: each command finds the previous one's output by its name under runs/ (or a
path), and without one takes the most recent run, saying which. --scale {demo,cpu,paper} sizes
pretrain, train, evaluate and simulate: demo (default) takes minutes on a laptop, paper is the
paper's. Run `python -m stablejax COMMAND --help` for a command's options.
"""


def configure_logging() -> None:
    """INFO for stablejax, WARNING for the chatty libraries (orbax logs through absl)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("stablejax").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)
    # jax_md.simulate.kinetic_energy asks for float64 internally; harmless in float32 runs.
    warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")


def _global_options(argv: list[str]) -> list[str]:
    """Remove and apply ``--devices N`` and ``--distributed`` (anywhere in ``argv``): they must
    act before JAX starts its backend."""
    from stablejax import sharding

    rest, devices, distributed = [], None, False
    it = iter(argv)
    for a in it:
        if a == "--devices" or a.startswith("--devices="):
            value = a.split("=", 1)[1] if "=" in a else next(it, None)
            try:
                devices = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"--devices needs an integer >= 1, got {value!r}") from None
        elif a == "--distributed":
            distributed = True
        else:
            rest.append(a)
    if distributed:
        sharding.initialize_distributed()
    sharding.use_devices(devices)
    return rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    configure_logging()
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    try:
        argv = _global_options(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cmd = argv[0] if argv else ""
    if cmd not in COMMANDS:
        print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"stablejax.cli.{COMMANDS[cmd]}")
    try:
        return int(module.main(argv[1:]) or 0)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        note = str(e.args[0]) if e.args else ON_INTERRUPT.get(cmd, "nothing was kept")
        print(f"interrupted: {note}", file=sys.stderr)
        return 130
