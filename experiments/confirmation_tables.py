"""The tables made from docs/results/confirmation.json (``python -m experiments.confirmation
tables``): ``docs/results/confirmation.md`` (a table per experiment and scale, a row per seed and
model) and the README's headline table between ``<!-- confirmation-table:start -->`` and
``<!-- confirmation-table:end -->``. They depend on confirmation.json alone, with fixed decimals,
so ``tables --check`` can tell when a committed file is out of date.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from stablejax.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = 1
RECORDS = Path("docs/results/confirmation.json")
TABLES = Path("docs/results/confirmation.md")
README = Path("README.md")
START, END = "<!-- confirmation-table:start -->", "<!-- confirmation-table:end -->"
MODELS = (("pretrained", "eval_pretrained", "pre-trained"), ("stable", "eval_stable", "StABlE"))
CI_NAMES = {"stability_time_ps_median_ci95": "median", "stability_time_ps_mean_ci95": "mean",
            "hr_mae_ci95": "h(r) MAE"}


def read_json(path: Path):
    """The JSON in ``path``; a one-line error naming it when missing or invalid."""
    if not path.exists():
        raise InputError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def load_records(path: Path) -> list[dict]:
    """The records of a confirmation.json (schema checked)."""
    data = read_json(path)
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{path}: schema is {found!r}, not {SCHEMA}")
    if not isinstance(data.get("records"), list):
        raise InputError(f"{path}: 'records' is not a list")
    return data["records"]


def record_key(r: dict) -> tuple:
    return r["experiment"], r["scale"], r["seed"]


def _num(x, nd: int) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _ci(value, ci, nd: int) -> str:
    return _num(value, nd) + ("" if not ci else f" [{_num(ci[0], nd)}, {_num(ci[1], nd)}]")


def _yes(flag) -> str:
    return {True: "yes", False: "no", None: "-"}[flag]


def _both(r: dict, fn: Callable[[dict], str]) -> str:
    """``fn`` of the two models: one text when equal."""
    a, b = fn(r["pretrained"]), fn(r["stable"])
    return a if a == b else f"pre-trained: {a}; StABlE: {b}"


def _water_cells(m: dict) -> list[str]:
    rdf = m.get("rdf_mae")
    return [" / ".join(_num(rdf.get(p), 2) for p in ("O-O", "O-H", "H-H")) if rdf else "-",
            _num(m.get("o_diffusivity_1e-9_m2_per_s"), 2)]


def _rows(r: dict, water: bool) -> list[str]:
    apart = r["claims"]["intervals_apart"]
    rows = []
    for label, _, name in MODELS:
        m = r[label]
        cells = [str(r["seed"]), name,
                 _ci(m.get("stability_time_ps_median"), m.get("stability_time_ps_median_ci95"), 2),
                 _ci(m.get("stability_time_ps_mean"), m.get("stability_time_ps_mean_ci95"), 2),
                 "-" if m.get("fraction_stable_whole_window") is None
                 else f"{100 * m['fraction_stable_whole_window']:.1f}%",
                 _ci(m.get("hr_mae"), m.get("hr_mae_ci95"), 3),
                 _num(m.get("test_force_mae_mev_per_angstrom"), 1),
                 _num(m.get("test_energy_mae_mev"), 1)] + (_water_cells(m) if water else [])
        cells += ["tuned" if r["tuned"] else "untuned",
                  f"{_yes(apart['median'])} / {_yes(apart['mean'])}" if label == "stable" else ""]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _record_line(r: dict) -> str:
    methods = _both(r, lambda m: "; ".join(f"{CI_NAMES.get(k, k)}: {v}" for k, v in
                                           (m.get("ci_method") or {}).items()) or "none")
    window = r["window_ps"] if isinstance(r["window_ps"], dict) else {"": r["window_ps"]}
    text = (f"- Seed {r['seed']}: run `{r['run_dir']}`, code `{r['code_commit']}`, "
            f"{r['n_replicas']} replicas from {r['n_start_frames']} start frames, window "
            + ", ".join(f"{k} {_num(v, 2)}".strip() for k, v in window.items()) + " ps. "
            f"Intervals: {methods}. Resample unit: {_both(r, lambda m: m['resample_unit'])}.")
    return text + "".join(f" Note: {n}." for n in r.get("notes", []))


def _groups(records: list[dict]) -> dict:
    groups = {}
    for r in sorted(records, key=record_key):
        groups.setdefault((r["experiment"], r["scale"]), []).append(r)
    return groups


def tables_markdown(records: list[dict]) -> str:
    """docs/results/confirmation.md."""
    lines = ["# Confirmation runs", "",
             f"Generated from `{RECORDS}` by `python -m experiments.confirmation tables`; do not "
             "edit by hand. Seed 0 is the seed each plan was tuned on (tuned); the other seeds "
             "confirm it (untuned). Intervals apart: StABlE's 95% interval lies wholly above "
             "the pre-trained model's (median / mean). Force and energy MAE on the test split.",
             ""]
    for (experiment, scale), recs in _groups(records).items():
        water = any("rdf_mae" in r[label] for r in recs for label, _, _ in MODELS)
        digests = sorted({r["plan_digest"] for r in recs})
        lines += [f"## {experiment}, {scale} scale", "",
                  f"Plan digest `{digests[0][:16]}` (every seed)." if len(digests) == 1 else
                  "Plan digests differ between seeds: " + ", ".join(
                      f"seed {r['seed']} `{r['plan_digest'][:16]}`" for r in recs) + ".", ""]
        head = (["seed", "model", "median (ps) [95% CI]", "mean (ps) [95% CI]",
                 "stable whole window", "h(r) MAE [95% CI]", "force MAE (meV/Å)",
                 "energy MAE (meV)"]
                + (["RDF MAE O-O / O-H / H-H", "O diffusivity (1e-9 m²/s)"] if water else [])
                + ["tuned", "intervals apart (median / mean)"])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += [row for r in recs for row in _rows(r, water)] + [""]
        lines += [_record_line(r) for r in recs] + [""]
    return "\n".join(lines)


def _ratios(recs: list[dict], key: str) -> str:
    return ", ".join(_num(r["claims"]["ratio_stable_to_pretrained"][key], 2) for r in recs)


def _apart_count(recs: list[dict], key: str) -> str:
    n = sum(bool(r["claims"]["intervals_apart"][key]) for r in recs)
    untuned = [r for r in recs if not r["tuned"]]
    m = sum(bool(r["claims"]["intervals_apart"][key]) for r in untuned)
    return f"{n} of {len(recs)} (untuned: {m} of {len(untuned)})"


def readme_block(records: list[dict]) -> str:
    """The README's headline table (between the markers)."""
    lines = ["| experiment | scale | seeds | median: intervals apart | mean: intervals apart | "
             "median ratio StABlE / pre-trained | h(r) MAE ratio | force MAE ratio | energy "
             "MAE ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for (experiment, scale), recs in _groups(records).items():
        seeds = ", ".join(f"{r['seed']}{' (tuned)' if r['tuned'] else ''}" for r in recs)
        lines.append(f"| {experiment} | {scale} | {seeds} | {_apart_count(recs, 'median')} | "
                     f"{_apart_count(recs, 'mean')} | {_ratios(recs, 'median')} | "
                     f"{_ratios(recs, 'hr_mae')} | {_ratios(recs, 'force_mae')} | "
                     f"{_ratios(recs, 'energy_mae')} |")
    lines += ["", f"Ratios in seed order; intervals apart: StABlE's 95% interval wholly above "
              f"the pre-trained model's. Per seed and model: [{TABLES}]({TABLES})."]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str | None:
    """``text`` with the part between the markers replaced by ``block`` (None: no markers)."""
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        return None
    return f"{text[:i + len(START)]}\n\n{block}\n\n{text[j:]}"


def generate(root: Path) -> tuple[dict[Path, str], list[str]]:
    """({relative path: content} of the generated files, notes); README.md only when it has
    the markers."""
    if not (root / RECORDS).exists():
        raise InputError(f"{root / RECORDS}: missing (python -m experiments.confirmation record "
                         "writes it)")
    records = load_records(root / RECORDS)
    files, notes = {TABLES: tables_markdown(records)}, []
    readme = root / README
    text = readme.read_text() if readme.exists() else ""
    new = replace_block(text, readme_block(records))
    if new is None:
        notes.append(f"note: {README} has no {START} ... {END} markers: left unchanged")
    else:
        files[README] = new
    return files, notes


def tables(root: Path = REPO, check: bool = False) -> int:
    """Write (or with ``check`` compare) the generated files; 1 when ``check`` finds a
    difference."""
    files, notes = generate(root)
    for note in notes:
        print(note, file=sys.stderr)
    for rel, text in files.items():
        path = root / rel
        current = path.read_text() if path.exists() else None
        if check and current != text:
            print(f"{rel} differs from what `python -m experiments.confirmation tables` "
                  f"generates from {RECORDS}: run it and commit the result", file=sys.stderr)
            return 1
        if not check and current != text:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
            print(f"wrote {rel}")
    return 0
