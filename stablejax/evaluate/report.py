"""Markdown report with PNG plots of an experiment run directory.

Expected layout (written by the experiments; missing parts are skipped):

  RUN_DIR/pretrain/results.json          QM pre-training results
  RUN_DIR/eval_pretrained/summary.json   evaluation of the pre-trained model (+ arrays.npz)
  RUN_DIR/stable_model/stable/metrics.jsonl  StABlE training history (or RUN_DIR/stable/...)
  RUN_DIR/eval_stable/summary.json       evaluation of the StABlE model (+ arrays.npz)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stablejax.io.run_dir import METRICS, RESULTS, STABLE

MODELS = (("eval_pretrained", "pre-trained"), ("eval_stable", "StABlE"))


def save_eval(directory: Path, summary: dict, arrays: dict) -> None:
    """Write an evaluation's ``arrays.npz`` then ``summary.json``, each atomically (temporary
    file + rename): a present summary means complete arrays."""
    import os

    from stablejax.io.run_dir import write_json

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "arrays.tmp.npz"
    np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, directory / "arrays.npz")
    write_json(directory / "summary.json", summary)


def _load(run_dir: Path, name: str):
    """(summary, arrays) of an evaluation: ``RUN_DIR/<name>/`` in a run directory, or the
    ``<name>`` entry of ``RUN_DIR/summary.json`` in an exported result directory (no arrays:
    its plots are kept as they are)."""
    d = run_dir / name
    if (d / "summary.json").exists():
        summary = json.loads((d / "summary.json").read_text())
        arrays = dict(np.load(d / "arrays.npz")) if (d / "arrays.npz").exists() else {}
        return summary, arrays
    top = run_dir / "summary.json"
    if top.exists():
        exported = json.loads(top.read_text())
        if isinstance(exported.get(name), dict):
            return exported[name], {}
    return None, None


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def _fmt(x, nd=2):
    if x is None:
        return "n/a"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v, nd) for v in x) + "]"
    return f"{x:.{nd}f}"


MARK = "†"  # footnote marker of an interval that excludes its point estimate
# interval key -> (point-estimate key, name in the report)
INTERVALS = {
    "stability_time_ps_median_ci95": ("stability_time_ps_median", "median stability time"),
    "stability_time_ps_mean_ci95": ("stability_time_ps_mean", "mean stability time"),
    "hr_mae_ci95": ("hr_mae", "h(r) MAE"),
}
# What an evaluation summary without a "ci_method" record holds.
DEFAULT_CI_METHOD = "percentile bootstrap over replicas (method not recorded in the summary)"


def excludes_estimate(estimate, interval, rtol: float = 1e-6) -> bool:
    """True when a finite ``interval`` [low, high] leaves out ``estimate`` (relative tolerance
    ``rtol``: the estimate and the interval may be computed at different float precision)."""
    if estimate is None or not interval or any(v is None for v in interval):
        return False
    low, high = (float(v) for v in interval)
    if not (np.isfinite(low) and np.isfinite(high) and np.isfinite(estimate)):
        return False
    tol = rtol * max(abs(estimate), abs(low), abs(high), 1e-12)
    return not low - tol <= estimate <= high + tol


def _ci_cell(s: dict, key: str, nd: int, flagged: list[str]) -> str:
    """``"estimate [low, high]"`` of interval ``key``; marked with ``MARK`` (and ``key``
    appended to ``flagged``) when the interval excludes the estimate."""
    est_key = INTERVALS[key][0]
    text = _fmt(s.get(est_key), nd)
    if s.get(key) is None:
        return text
    text += f" {_fmt(s[key], nd)}"
    if excludes_estimate(s.get(est_key), s[key]):
        flagged.append(key)
        text += MARK
    return text


def _interval_notes(evals: dict, flagged: dict[str, list[str]]) -> list[str]:
    """Paragraphs naming each interval's method and explaining the flagged intervals."""
    items = []
    for key, (_, name) in INTERVALS.items():
        methods = {label: s.get("ci_method", {}).get(key, DEFAULT_CI_METHOD)
                   for label, (s, _) in evals.items() if s.get(key) is not None}
        if len(set(methods.values())) == 1:
            items.append(f"- {name}: {next(iter(methods.values()))}")
        elif methods:
            items.append(f"- {name}: " + "; ".join(f"{label}: {m}"
                                                   for label, m in methods.items()))
    paras = ["95% confidence intervals:\n" + "\n".join(items)] if items else []
    if any(flagged.values()):
        which = ", ".join(f"{INTERVALS[k][1]} ({label})" for label, keys in flagged.items()
                          for k in keys)
        hr = [label for label, keys in flagged.items() if "hr_mae_ci95" in keys]
        bias = [f"{evals[label][0]['hr_mae_bootstrap_bias']:+.3f} ({label})" for label in hr
                if evals[label][0].get("hr_mae_bootstrap_bias") is not None]
        why = (" The h(r) MAE of finitely many frames is biased upward, since histogram noise "
               "only adds absolute error"
               + (f" (bootstrap estimate of that bias: {', '.join(bias)})" if bias else "") + "."
               if hr else "")
        paras.append(
            f"{MARK} The interval excludes its point estimate: {which}. Fewer than 2.5% of the "
            "bootstrap resamples fall on one side of the estimate, so at this sample size the "
            f"statistic is biased by more than its spread.{why} A percentile interval then lies "
            "beyond the estimate, on the side of the bias, and misses the value at infinite "
            "sampling; a bias-corrected (basic or BCa) interval lies on the other side of the "
            "estimate. Either way the estimate is dominated by sampling noise: compare such "
            "values only with more replicas or longer windows.")
    return paras


def write_report(run_dir: str | Path, title: str | None = None) -> Path:
    """Write ``RUN_DIR/report.md`` and its plots; returns the report path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run directory")
    evals = {label: _load(run_dir, name) for name, label in MODELS}
    evals = {k: v for k, v in evals.items() if v[0] is not None}
    lines = [f"# {title or run_dir.name}", ""]
    info_path = run_dir / "experiment.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        lines += ["Reference data: GFN2-xTB (tblite), made offline by stablejax; not the paper's "
                  "DFT data. Compare the two models on this data only.", "",
                  "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in info.items()]
        lines.append("")
    # A run directory, or a result directory exported by scripts/export_results.sh.
    pre = _first(run_dir / "pretrain" / RESULTS, run_dir / "pretrain_results.json")
    if pre is not None:
        r = json.loads(pre.read_text())
        lines += [f"QM pre-training: {r['model']} on {r['n_train']} frames, {r['epochs']} epochs "
                  f"({r['train_wall_s']:.0f} s), best epoch {r['best_epoch']}.", ""]
    if evals:
        lines += ["## Results", "",
                  "| model | stability time, median (ps) [95% CI] | mean (ps) [95% CI] | stable "
                  "whole window | h(r) MAE [95% CI] | bond-length dist. MAE | force MAE (meV/Å) "
                  "| energy MAE (meV) |", "|---|---|---|---|---|---|---|---|"]
        flagged = {}
        for label, (s, _) in evals.items():
            fl = flagged.setdefault(label, [])
            lines.append(
                f"| {label} | {_ci_cell(s, 'stability_time_ps_median_ci95', 2, fl)} | "
                f"{_ci_cell(s, 'stability_time_ps_mean_ci95', 2, fl)} | "
                f"{100 * s['fraction_stable_whole_window']:.0f}% | "
                f"{_ci_cell(s, 'hr_mae_ci95', 3, fl)} | "
                f"{_fmt(s['bond_length_distribution_mae'], 4)} | "
                f"{_fmt(s['test_force_mae_mev_per_angstrom'], 1)} | "
                f"{_fmt(s['test_energy_mae_mev'], 1)} |")
        for para in _interval_notes(evals, flagged):
            lines += ["", para]
        any_s = next(iter(evals.values()))[0]
        lines += ["", f"Evaluation: {any_s['n_replicas']} replicas, {any_s['integrator']} at "
                  f"{any_s['temperature_k']:.0f} K, window {any_s['window_ps']:.1f} ps, unstable "
                  f"when a bond deviates > {any_s['tolerance_angstrom']} Å from its mean; "
                  "stability time = time to first failure (censored at the window); h(r) MAE = "
                  "10 x mean |h - h_ref| over stable frames (MDsim convention).", ""]
        notes = [f"Note ({name}): {v[0]['note']}." for name, v in evals.items()
                 if v[0].get("note")]
        lines += [line for note in notes for line in (note, "")]
        if any(a for _, a in evals.values()):
            _plot_evals(plt, run_dir, evals)
        for png, name in (("survival.png", "survival"), ("hr.png", "h(r)"),
                          ("bonds.png", "bond lengths")):
            if (run_dir / png).exists():
                lines += [f"![{name}]({png})", ""]
    hist = _first(run_dir / "stable_model" / STABLE / METRICS, run_dir / STABLE / METRICS,
                  run_dir / "stable_metrics.jsonl")
    if hist is not None and hist.read_text().strip():
        records = [json.loads(x) for x in hist.read_text().splitlines() if x.strip()]
        _plot_history(plt, run_dir, records)
        learn = [r for r in records if r["phase"] == "learning"]
        n_steps = sum(r.get("learning_steps", 1) for r in learn)
        steps = (f": {n_steps} SGD steps, {n_steps - len(learn)} of them on reused, "
                 "importance-reweighted frames" if n_steps > len(learn) else "")
        lines += ["## StABlE training", "",
                  f"{len(records)} epochs ({len(learn)} learning{steps}), "
                  f"{sum(r['seconds'] for r in records):.0f} s; cycles completed: "
                  f"{max(r['cycle'] + ('end_of_cycle' in r) for r in records)}.", "",
                  "![history](history.png)", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _plot_evals(plt, run_dir: Path, evals: dict) -> None:
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


def _plot_history(plt, run_dir: Path, records: list[dict]) -> None:
    ep = np.array([r["epoch"] for r in records])
    learn = np.array([r["phase"] == "learning" for r in records])
    fig, axes = plt.subplots(4, 1, figsize=(7, 8), sharex=True)
    series = [("unstable_fraction", "unstable fraction"),
              ("obs_loss", "h(r) loss (learning)"),
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
