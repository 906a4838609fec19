"""Aspirin / SchNet experiment: data -> QM pre-training -> evaluation -> StABlE -> report.

    python -m experiments.aspirin_schnet --scale demo     # ~10 min on 2 cores
    python -m experiments.aspirin_schnet --scale cpu      # <= 100 min on 2 cores

Every stage writes its output under the run directory and is skipped when it is already there,
so an interrupted run resumes where it stopped. Stages implemented so far: data generation and
the data report (pre-training, StABlE and evaluation stages follow in later versions).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Literal

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import tyro  # noqa: E402

from stablejax.cli.progress import ProgressBar  # noqa: E402
from stablejax.data import bond_lengths, generate_dataset, load_dataset, scale_config  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
    scale: Literal["demo", "cpu", "paper"] = "demo"
    """Size preset (method.md §7)."""
    run_dir: Path | None = None
    """Output directory (default: runs/aspirin_schnet-<scale> under the current directory)."""
    data_dir: Path | None = None
    """Data cache root (default: $STABLEJAX_DATA, else the user cache directory)."""
    workers: int | None = None
    """Processes for GFN2-xTB data generation (default: all cores)."""
    seed: int = 0


SYSTEM = "aspirin"


def stage_data(args: Args) -> Path:
    cfg = scale_config(SYSTEM, args.scale, seed=args.seed)
    with ProgressBar(f"[data] {SYSTEM} GFN2-xTB MD", unit="chunk") as bar:
        return generate_dataset(cfg, args.data_dir, n_workers=args.workers, progress=bar)


def write_report(run_dir: Path, data_path: Path, timings: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = load_dataset(data_path)
    ref_bonds = bond_lengths(ds.reference.positions, ds.system.bonds)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name in ("train", "test"):
        fr = getattr(ds, name)
        axes[0].hist(fr.energies - ds.train.energies.mean(), bins=30, alpha=0.6, label=name)
    axes[0].set(xlabel="E - <E_train> (eV)", ylabel="frames", title="GFN2-xTB energies, 500 K")
    axes[0].legend()
    axes[1].hist(ref_bonds.ravel(), bins=200, color="k")
    axes[1].set(xlabel="bond length (Å)", ylabel="count", title="Reference-trajectory bonds")
    fig.tight_layout()
    fig.savefig(run_dir / "data.png", dpi=110)
    plt.close(fig)
    info = {
        "data set": str(data_path),
        "frames (train/val/test/reference)": [ds.train.n_frames, ds.val.n_frames,
                                              ds.test.n_frames, ds.reference.n_frames],
        "bonds": int(len(ds.system.bonds)),
        "force RMS (eV/Å)": float(np.sqrt((ds.train.forces ** 2).mean())),
        "max |bond - mean| on reference trajectory (Å)": float(
            np.abs(ref_bonds - ds.system.reference_bond_lengths).max()),
    }
    lines = [f"# Aspirin / SchNet run ({run_dir.name})", "",
             "Reference data: GFN2-xTB (tblite), our own data, not MD17's DFT.", "",
             "| quantity | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines += ["", "| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    lines += ["", "![data](data.png)", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=argv)
    run_dir = args.run_dir or Path("runs") / f"aspirin_schnet-{args.scale}"
    run_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    t = time.perf_counter()
    data_path = stage_data(args)
    timings["data"] = time.perf_counter() - t
    (run_dir / "timings.json").write_text(json.dumps(timings, indent=1))
    report = write_report(run_dir, data_path, timings)
    print(f"report: {report.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
