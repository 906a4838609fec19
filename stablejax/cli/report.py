"""``python -m stablejax report RUN_DIR``: Markdown report with PNG plots."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro


@dataclasses.dataclass(frozen=True)
class ReportArgs:
    """Write RUN_DIR/report.md (survival curves, h(r), bond lengths, training history, table)."""

    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """Experiment run directory (eval_pretrained/, eval_stable/, stable_model/, ...)."""
    title: str | None = None
    """Report title (None: the run directory's name)."""


def main(argv: list[str]) -> int:
    args = tyro.cli(ReportArgs, args=argv, prog="stablejax report")
    from stablejax.evaluate.report import write_report

    path = write_report(args.run_dir, args.title)
    print(f"report: {path.resolve()}")
    return 0
