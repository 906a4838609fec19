"""The plots of :mod:`stablejax.evaluate.report`: survival, h(r) and bond-length
distributions of evaluations, and the StABlE training history."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_evals(plt, run_dir: Path, evals: dict) -> None:
    """``survival.png``, ``hr.png`` and ``bonds.png`` in ``run_dir`` of evaluations
    ``{label: (summary, arrays)}``."""
    plot_survival(plt, run_dir, evals)
    _plot_distributions(plt, run_dir, evals)


def plot_survival(plt, run_dir: Path, evals: dict) -> None:
    """``survival.png`` in ``run_dir``: the fraction of replicas stable against time."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, (s, a) in evals.items():
        if "survival_t_ps" in a:
            ax.step(a["survival_t_ps"], a["survival_fraction"], where="post", label=label)
    ax.set(xlabel="simulated time (ps)", ylabel="fraction of replicas stable", ylim=(-0.02, 1.02),
           title="Survival of replicas")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "survival.png", dpi=110)
    plt.close(fig)


def _plot_distributions(plt, run_dir: Path, evals: dict) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    first = next(iter(evals.values()))[1]
    if "h_ref" in first:
        ax.plot(first["hr_centres"], first["h_ref"], "k", lw=2, label="reference (GFN2-xTB)")
    for label, (s, a) in evals.items():
        if "h_model" in a:
            ax.plot(a["hr_centres"], a["h_model"], lw=1.2, label=label)
    ax.set(xlabel="r (Å)", ylabel="h(r) (sum 100)", title="Interatomic distance distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "hr.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    if "bond_ref" in first:
        ax.plot(first["bond_centres"], first["bond_ref"], "k", lw=2, label="reference")
    for label, (s, a) in evals.items():
        if "bond_model" in a:
            ax.plot(a["bond_centres"], a["bond_model"], lw=1.2, label=label)
    ax.set(xlabel="bond length (Å)", ylabel="density (sum 100)", xlim=(0.8, 1.8),
           title="Bond-length distribution (stable frames)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "bonds.png", dpi=110)
    plt.close(fig)


def plot_history(plt, run_dir: Path, records: list[dict]) -> None:
    """``history.png`` in ``run_dir`` of a StABlE training log (one record per epoch)."""
    ep = np.array([r["epoch"] for r in records])
    learn = np.array([r["phase"] == "learning" for r in records])
    fig, axes = plt.subplots(4, 1, figsize=(7, 8), sharex=True)
    series = [("unstable_fraction", "unstable fraction"),
              ("obs_loss", "observable loss (learning)"),
              ("qm_loss", "QM loss (learning)"),
              ("learning_rate", "learning rate")]
    for ax, (key, label) in zip(axes, series):
        y = np.array([np.nan if r.get(key) is None else r.get(key, np.nan) for r in records],
                     float)
        ax.plot(ep, y, "o-", ms=3)
        ax.set_ylabel(label)
        for e in ep[learn]:
            ax.axvspan(e - 0.5, e + 0.5, color="orange", alpha=0.15, lw=0)
    axes[0].set_title("StABlE training (shaded: learning epochs)")
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(run_dir / "history.png", dpi=110)
    plt.close(fig)


def plot_water(plt, run_dir: Path, evals: dict) -> list[str]:
    """``rdf.png`` (O-O, O-H, H-H g(r) against the reference) and ``msd.png`` (O mean squared
    displacement against the reference's) in ``run_dir`` of water evaluations ``{label:
    (summary, arrays)}``; returns the names written."""
    written = []
    first = next(iter(evals.values()))[1]
    if "g_ref" in first and "rdf_r" in first:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
        for k, (ax, pair) in enumerate(zip(axes, ("O-O", "O-H", "H-H"))):
            ax.plot(first["rdf_r"], first["g_ref"][k], "k", lw=2, label="reference (SPC/Fw)")
            for label, (_, a) in evals.items():
                if "g_model" in a:
                    ax.plot(a["rdf_r"], a["g_model"][k], lw=1.2, label=label)
            ax.set(xlabel="r (Å)", ylabel="g(r)", title=f"{pair} RDF (stable windows)")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(run_dir / "rdf.png", dpi=110)
        plt.close(fig)
        written.append("rdf.png")
    if "msd_ref" in first:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ax.plot(first["msd_ref_lag_ps"], first["msd_ref"], "k", lw=2, label="reference (SPC/Fw)")
        for label, (_, a) in evals.items():
            if len(a.get("msd_model", [])) > 1:
                ax.plot(a["msd_lag_ps"], a["msd_model"], lw=1.2, label=label)
        ax.set(xlabel="lag (ps)", ylabel="O MSD (Å²)", title="O mean squared displacement")
        ax.legend()
        fig.tight_layout()
        fig.savefig(run_dir / "msd.png", dpi=110)
        plt.close(fig)
        written.append("msd.png")
    return written
