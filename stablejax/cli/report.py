"""``python -m stablejax report [NAME]``: Markdown report with PNG plots of a run."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import tyro


@dataclasses.dataclass(frozen=True)
class ReportArgs:
    """Write report.md (results table, survival curves, h(r), bond lengths, training history)
    in a run directory."""

    run: Annotated[str | None, tyro.conf.Positional, tyro.conf.arg(metavar="NAME")] = None
    """Run name under runs/ or a directory: a pre-training run (with its evaluation), a StABlE
    run (its training log; its evaluation against the pre-training run's), an evaluation
    (<run>/eval) or an experiment run. Default: the most recent run under runs/."""
    title: str | None = None
    """Report title (None: the run's name)."""


def main(argv: list[str]) -> int:
    from stablejax.cli.evaluate import parse
    from stablejax.cli.runs import KIND_NAMES, resolve_run
    from stablejax.evaluate.report import write_report

    args = parse(ReportArgs, argv, "stablejax report")
    run_dir = resolve_run(args.run, "report", tuple(KIND_NAMES), finished=False)
    path = write_report(run_dir, args.title)
    print(f"report: {path.resolve()}")
    return 0
