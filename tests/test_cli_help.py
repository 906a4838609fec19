"""``--help`` / ``-h`` of every command, subcommand and experiment exits 0 and names it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# ``-h`` repeats ``--help`` through the same parser: those cases run with make test-slow (~5 s
# each, a subprocess apiece)
SLOW = pytest.mark.slow
# (argv after ``python -m``, text the help must contain)
CASES = [
    (["stablejax", "--help"], "python -m stablejax COMMAND"),
    pytest.param(["stablejax", "-h"], "python -m stablejax COMMAND", marks=SLOW),
    (["stablejax", "data", "--help"], "stablejax data"),
    pytest.param(["stablejax", "data", "-h"], "stablejax data", marks=SLOW),
    (["stablejax", "data", "generate", "--help"], "stablejax data generate"),
    (["stablejax", "data", "info", "--help"], "stablejax data info"),
    (["stablejax", "pretrain", "--help"], "stablejax pretrain"),
    (["stablejax", "simulate", "--help"], "stablejax simulate"),
    (["stablejax", "train", "--help"], "stablejax train"),
    pytest.param(["stablejax", "train", "-h"], "stablejax train", marks=SLOW),
    (["stablejax", "evaluate", "--help"], "stablejax evaluate"),
    (["stablejax", "report", "--help"], "stablejax report"),
    (["experiments.aspirin_schnet", "--help"], "python -m experiments.aspirin_schnet"),
    (["experiments.ac_ala3_nhme_nequip", "--help"], "python -m experiments.ac_ala3_nhme_nequip"),
]


def _id(case) -> str:
    argv = case.values[0] if hasattr(case, "values") else case[0]
    return " ".join(argv)


@pytest.mark.parametrize("argv, name", CASES, ids=[_id(c) for c in CASES])
def test_help_exits_zero_and_names_the_command(argv, name):
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert name in out, out
    assert "usage:" in out and "--help" in out, out


def test_missing_data_subcommand_is_a_usage_error():
    from stablejax.cli.main import main

    assert main(["data"]) == 2
    assert main(["data", "nonsense"]) == 2
    assert main(["no-such-command"]) == 2
