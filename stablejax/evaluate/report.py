"""Markdown report with PNG plots of any run directory stablejax writes (:func:`run_kind`).

An experiment run (``experiments/``; missing parts are skipped)::

  RUN_DIR/pretrain/results.json          QM pre-training results
  RUN_DIR/eval_pretrained/summary.json   evaluation of the pre-trained model (+ arrays.npz)
  RUN_DIR/stable_model/stable/metrics.jsonl  StABlE training history (or RUN_DIR/stable/...)
  RUN_DIR/eval_stable/summary.json       evaluation of the StABlE model (+ arrays.npz)

or such a run exported by ``scripts/export_results.sh`` (``summary.json`` holding both
evaluations, ``pretrain_results.json``, ``stable_metrics.jsonl``). The command line's runs::

  pre-training run   model.json, results.json, best/; its evaluation in eval/
  StABlE run         model.json, stable/metrics.jsonl, final/, results.json (with
                     pretrained_dir); its evaluation in eval/, compared with the pre-training
                     run's eval/
  evaluation         summary.json, arrays.npz, inputs.json (the output of ``evaluate``)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stablejax.errors import InputError
from stablejax.evaluate.report_plots import plot_evals, plot_history
from stablejax.io.run_dir import METRICS, MODEL_SPEC, RESULTS, STABLE
from stablejax.sharding import primary_only

MODELS = (("eval_pretrained", "pre-trained"), ("eval_stable", "StABlE"))


@primary_only
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


def _resample_units(evals: dict) -> str:
    """`` (resampling unit: ...)`` of the summaries that record ``resample_unit``, else ``""``;
    one text when all agree."""
    units = {label: f"{s['resample_unit']}, {s['n_replicas']} replicas from "
                    f"{s['n_start_frames']} start frames"
             for label, (s, _) in evals.items() if s.get("resample_unit")}
    text = ("; ".join(f"{k}: {v}" for k, v in units.items()) if len(set(units.values())) > 1
            else next(iter(units.values()), ""))
    return f" (resampling unit: {text})" if text else ""


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
    paras = ([f"95% confidence intervals{_resample_units(evals)}:\n" + "\n".join(items)]
             if items else [])
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


EVAL = "eval"  # the evaluation of a model directory written by ``stablejax evaluate``
EXPERIMENT_PARTS = ("experiment.json", "pretrain_results.json", "pretrain/" + RESULTS,
                    "eval_pretrained", "eval_stable", "stable_model")


def _json(path: Path) -> dict | None:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def run_kind(path: str | Path) -> str | None:
    """What a directory holds: ``"experiment"`` (the layout of ``experiments/``, or such a run
    exported), ``"stable"`` (a StABlE run: ``model.json`` and ``stable/``), ``"pretrain"`` (a
    pre-training run: ``model.json``, or the ``results.json`` of one), ``"evaluation"`` (the
    output of ``stablejax evaluate``), or None."""
    p = Path(path)
    if not p.is_dir():
        return None
    if any((p / part).exists() for part in EXPERIMENT_PARTS):
        return "experiment"
    if (p / MODEL_SPEC).exists() or (p / STABLE / METRICS).exists():
        return "stable" if (p / STABLE).is_dir() else "pretrain"
    summary = _json(p / "summary.json") if (p / "summary.json").exists() else None
    if summary is not None and "fraction_stable_whole_window" in summary:
        return "evaluation"
    results = _json(p / RESULTS) if (p / RESULTS).exists() else None
    if results is not None and "test_force_mae_mev_per_angstrom" in results:
        return "pretrain"
    return None


def pretrained_of(run_dir: Path) -> Path | None:
    """The pre-training run a StABlE run started from: ``pretrained_dir`` in its
    ``results.json``, else the directory its name ends ``-stable`` after; either only when
    its ``model.json`` is the one the StABlE run records in ``inputs.json``."""
    results = _json(run_dir / RESULTS) or {}
    candidates = [Path(results["pretrained_dir"])] if results.get("pretrained_dir") else []
    if run_dir.name.endswith("-stable"):
        candidates.append(run_dir.with_name(run_dir.name[:-len("-stable")]))
    spec = ((_json(run_dir / "inputs.json") or {}).get("pretrained") or {}).get("model")
    for cand in candidates:
        if (cand / MODEL_SPEC).exists() and (spec is None or _json(cand / MODEL_SPEC) == spec):
            return cand
    return None


def _eval_settings(d: Path) -> dict:
    from stablejax.io.inputs import flatten

    return flatten((_json(d / "inputs.json") or {}).get("settings") or {})


def _sources(run_dir: Path, kind: str):
    """(evals {label: (summary, arrays)}, pre-training results or None, history path or None,
    extra lines) of a run directory of ``kind``."""
    lines, pre, hist = [], None, None
    dirs: dict[str, Path] = {}
    if kind == "experiment":
        evals = {label: _load(run_dir, name) for name, label in MODELS}
        evals = {k: v for k, v in evals.items() if v[0] is not None}
        pre_path = _first(run_dir / "pretrain" / RESULTS, run_dir / "pretrain_results.json")
        pre = _json(pre_path) if pre_path is not None else None
        hist = _first(run_dir / "stable_model" / STABLE / METRICS, run_dir / STABLE / METRICS,
                      run_dir / "stable_metrics.jsonl")
        return evals, pre, hist, lines
    if kind == "pretrain":
        pre = _json(run_dir / RESULTS)
        dirs["pre-trained"] = run_dir / EVAL
    elif kind == "stable":
        hist = run_dir / STABLE / METRICS
        source = pretrained_of(run_dir)
        if source is None:
            lines += ["The pre-training run this StABlE run started from was not found, so the "
                      "table has no pre-trained row.", ""]
        else:
            pre = _json(source / RESULTS)
            lines += [f"StABlE run of the pre-trained model `{source}`.", ""]
            dirs["pre-trained"] = source / EVAL
        dirs["StABlE"] = run_dir / EVAL
        if (_json(run_dir / RESULTS) or {}).get("learning_epochs") == 0:
            lines += ["StABlE never entered a learning phase (too few replicas went unstable): "
                      "its parameters are the pre-trained ones.", ""]
    else:  # evaluation
        model_dir = Path((_json(run_dir / "inputs.json") or {}).get("model", {}).get("dir", ""))
        label = "StABlE" if run_kind(model_dir) == "stable" else "pre-trained"
        if model_dir.parts:
            lines += [f"Evaluation of `{model_dir}`.", ""]
        dirs[label] = run_dir
    evals = {label: _load(d.parent, d.name) for label, d in dirs.items()}
    evals = {k: v for k, v in evals.items() if v[0] is not None}
    missing = [f"`{d.parent}`" for label, d in dirs.items() if label not in evals]
    if missing:
        lines += [f"Not evaluated yet: {', '.join(missing)} (`python -m stablejax evaluate "
                  "--model RUN` writes RUN/eval).", ""]
    if len(evals) == 2:
        a, b = (_eval_settings(dirs[label]) for label in evals)
        diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            lines += ["The two evaluations were run with different settings ("
                      + "; ".join(f"{k.rsplit('.', 1)[-1]}: {a.get(k)} vs {b.get(k)}"
                                  for k in diff) + "): compare them with care.", ""]
    return evals, pre, hist, lines


def water_results(plt, run_dir: Path, evals: dict) -> list[str]:
    """The results section (table, settings, plots) of water evaluations."""
    from stablejax.evaluate.report_plots import plot_survival, plot_water

    lines = ["## Results", "",
             "| model | stability time, median (ps) | mean (ps) | stable whole window | RDF MAE "
             "O-O / O-H / H-H (max) | O diffusivity (1e-9 m²/s) [reference] | diffusivity "
             "error | force MAE (meV/Å) | energy MAE (meV) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, (s, _) in evals.items():
        m = s.get("rdf_mae")
        rdf = ("-" if not m else f"{m['O-O']:.2f} / {m['O-H']:.2f} / {m['H-H']:.2f} "
               f"({m['max']:.2f})")
        lines.append(
            f"| {label} | {_fmt(s['stability_time_ps_median'])} | "
            f"{_fmt(s['stability_time_ps_mean'])} | "
            f"{100 * s['fraction_stable_whole_window']:.0f}% | {rdf} | "
            f"{_fmt(s['o_diffusivity_1e-9_m2_per_s'])} "
            f"[{_fmt(s['o_diffusivity_reference_1e-9_m2_per_s'])}] | "
            f"{_fmt(s['o_diffusivity_error'])} | "
            f"{_fmt(s['test_force_mae_mev_per_angstrom'], 1)} | "
            f"{_fmt(s['test_energy_mae_mev'], 1)} |")
    s = next(iter(evals.values()))[0]
    lines += ["", f"Evaluation: {s['n_replicas']} replicas, {s['integrator']} at "
              f"{s['temperature_k']:.0f} K, {s['dt_fs']:g} fs steps, {s['window_ps']:.1f} ps per "
              f"replica, a frame every {s['frame_interval_fs']:g} fs. Unstable when the worst "
              f"RDF MAE of a {s['rdf_window_ps']:g}-ps window ({s['rdf_window_frames']} frames) "
              f"is >= 3.0 (MAE = {s['rdf_r_max_angstrom']:g} x mean |g - g_ref| over 0-"
              f"{s['rdf_r_max_angstrom']:g} Å, dr {s['rdf_dr_angstrom']} Å; g_ref from the "
              f"{s['reference_frames']} reference frames), or when atoms of different molecules "
              "come within 1.2 Å. RDFs and diffusivities use the frames before a replica's "
              "first failure; D = slope of the O MSD over lags "
              f"{s['diffusivity_lag_fit_ps'][0]:g}-{s['diffusivity_lag_fit_ps'][1]:g} ps / 6 "
              "(raw, same box as the reference).", ""]
    if any(a for _, a in evals.values()):
        plot_survival(plt, run_dir, evals)
        for png in plot_water(plt, run_dir, evals):
            lines += [f"![{png[:-4]}]({png})", ""]
    if (run_dir / "survival.png").exists():
        lines += ["![survival](survival.png)", ""]
    return lines


def write_report(run_dir: str | Path, title: str | None = None) -> Path:
    """Write ``RUN_DIR/report.md`` and its plots; returns the report path. ``RUN_DIR`` is any
    directory :func:`run_kind` knows. In a multi-host run process 0 writes it.

    Raises:
      FileNotFoundError: ``run_dir`` is not a directory.
      InputError: it is none of the kinds of :func:`run_kind`.
    """
    _write_report(Path(run_dir), title)
    return Path(run_dir) / "report.md"


@primary_only
def _write_report(run_dir: Path, title: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run directory")
    kind = run_kind(run_dir)
    if kind is None:
        raise InputError(f"{run_dir}: not a run stablejax writes (a pre-training or StABlE "
                         "run, an evaluation, or an experiment run)")
    evals, pre, hist, extra = _sources(run_dir, kind)
    default_title = (f"{run_dir.parent.name}/{run_dir.name}" if kind == "evaluation"
                     else run_dir.name)
    lines = [f"# {title or default_title}", ""]
    info_path = run_dir / "experiment.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        source = info.get("reference data", "GFN2-xTB (tblite), made offline by stablejax; not "
                                                    "the paper's DFT data")
        lines += [f"Reference data: {source}. Compare the two models on this data only.", "",
                  "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in info.items()]
        lines.append("")
    lines += extra
    if pre is not None and "n_train" in pre:
        lines += [f"QM pre-training: {pre['model']} on {pre['n_train']} frames, {pre['epochs']} "
                  f"epochs ({pre['train_wall_s']:.0f} s), best epoch {pre['best_epoch']}.", ""]
    water = bool(evals) and all("rdf_mae" in s for s, _ in evals.values())
    if water:
        lines += water_results(plt, run_dir, evals)
    elif evals:
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
            plot_evals(plt, run_dir, evals)
        for png, name in (("survival.png", "survival"), ("hr.png", "h(r)"),
                          ("bonds.png", "bond lengths")):
            if (run_dir / png).exists():
                lines += [f"![{name}]({png})", ""]
    if hist is not None and hist.exists() and hist.read_text().strip():
        records = [json.loads(x) for x in hist.read_text().splitlines() if x.strip()]
        plot_history(plt, run_dir, records)
        learn = [r for r in records if r["phase"] == "learning"]
        n_steps = sum(r.get("learning_steps", 1) for r in learn)
        steps = (f": {n_steps} SGD steps, {n_steps - len(learn)} of them on reused, "
                 "importance-reweighted frames" if n_steps > len(learn) else "")
        lines += ["## StABlE training", "",
                  f"{len(records)} epochs ({len(learn)} learning{steps}), "
                  f"{sum(r['seconds'] for r in records):.0f} s; cycles completed: "
                  f"{max(r['cycle'] + ('end_of_cycle' in r) for r in records)}.", "",
                  "![history](history.png)", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
