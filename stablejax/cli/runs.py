"""Run names: every command writes its run under ``runs/NAME`` (relative to the working
directory) and finds the previous stage's run by that name.

``pretrain`` writes ``runs/pretrain-<system>-<model>-<scale>`` (or ``runs/NAME`` with
``--name``); ``train --pretrained NAME`` reads it and writes ``runs/NAME-stable``;
``evaluate --model NAME`` writes ``runs/NAME/eval``; ``report NAME`` reports on any of them. A
value that is an existing path is used as it is; otherwise it is looked up under ``runs/``.
Left out, the input is the most recent run of the right kind, named on stdout.
"""

from __future__ import annotations

from pathlib import Path

from stablejax.errors import InputError

RUNS = Path("runs")

# kind of run -> what it is called in messages
KIND_NAMES = {"pretrain": "pre-training", "stable": "StABlE", "evaluation": "evaluation",
              "experiment": "experiment"}
# files whose modification time dates a run's latest activity (an evaluation of a run counts)
_ACTIVITY = ("inputs.json", "results.json", "metrics.jsonl", "stable/metrics.jsonl",
             "summary.json", "eval/summary.json", "report.md")


def output_dir(name: str | None, run_dir: Path | None, default_name: str, what: str) -> Path:
    """The directory a command writes: ``run_dir`` as given, else ``runs/<name or
    default_name>``.

    Raises:
      InputError: both ``--name`` and ``--run-dir`` are given, or ``--name`` is not a plain
        name (it holds a path separator or is empty).
    """
    if name is not None and run_dir is not None:
        raise InputError(f"--name {name} and --run-dir {run_dir}: give one ({what} goes to "
                         "runs/NAME, or to the directory --run-dir names)")
    if run_dir is not None:
        return Path(run_dir).absolute()
    if name is not None and (not name.strip() or "/" in name or name in (".", "..")):
        raise InputError(f"--name {name!r}: must be a plain run name (written under {RUNS}/); "
                         "use --run-dir for a path")
    return (RUNS / (name or default_name)).absolute()


def run_ref(path: Path) -> str:
    """How to name a run on the command line: its name when it is under ``runs/``, else its
    path."""
    path = Path(path).absolute()
    return path.name if path.parent == RUNS.absolute() else str(path)


def _activity(path: Path) -> float:
    times = [(path / f).stat().st_mtime for f in _ACTIVITY if (path / f).exists()]
    return max(times, default=path.stat().st_mtime)


def list_runs(kinds: tuple[str, ...] | None = None) -> list[Path]:
    """The runs under ``runs/`` (of ``kinds``, default any), most recent activity first."""
    from stablejax.evaluate.report import run_kind

    if not RUNS.is_dir():
        return []
    runs = [p for p in RUNS.iterdir() if p.is_dir()
            and (k := run_kind(p)) is not None and (kinds is None or k in kinds)]
    return sorted(runs, key=_activity, reverse=True)


def _listing() -> str:
    names = sorted(p.name for p in list_runs())
    if not names:
        return f"no runs under {RUNS.absolute()}"
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    return f"runs under {RUNS}/: {shown}"


def resolve_run(value: str | Path | None, flag: str, kinds: tuple[str, ...], *,
                finished: bool = True, what: str = "run directory") -> Path:
    """The run a flag names: an existing path, else ``runs/<value>``; left out, the most
    recent run of ``kinds`` under ``runs/`` (with ``finished``: only those with their
    ``results.json``), printed.

    Raises:
      InputError: no such path or run (one line listing the runs under ``runs/``), or no run
        of ``kinds`` to default to.
    """
    from stablejax.io.run_dir import RESULTS

    if value is None:
        runs = [p for p in list_runs(kinds) if not finished or (p / RESULTS).exists()]
        kind = ("" if set(kinds) == set(KIND_NAMES)
                else " or ".join(KIND_NAMES[k] for k in kinds) + " ")
        done = "finished " if finished else ""
        if not runs:
            raise InputError(f"{flag}: not given, and no {done}{kind}run under "
                             f"{RUNS.absolute()} to default to ({_listing()})")
        print(f"{flag} {runs[0].name}: the most recent {done}{kind}run ({runs[0]}); "
              f"name another to choose it")
        return runs[0].absolute()
    path = Path(value)
    if path.exists():
        return path.absolute()
    if not path.is_absolute() and (RUNS / path).exists():
        return (RUNS / path).absolute()
    raise InputError(f"{flag} {value}: no such {what} (nor a run of that name); {_listing()}")
