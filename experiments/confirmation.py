"""Per-seed confirmation records of finished experiment runs, and the tables made from them.

    python -m experiments.confirmation record --experiment ethanol_schnet --scale demo \\
        --seed 11 --run-dir runs/ethanol_schnet-demo-seed11
    python -m experiments.confirmation tables            # regenerate the tables
    python -m experiments.confirmation tables --check    # exit 1 when they are out of date

``record`` adds (or replaces: one record per experiment, scale and seed) a record of a finished
run to ``docs/results/confirmation.json`` and writes the run's per-replica arrays to
``docs/results/confirmation/<experiment>-<scale>-seed<N>.npz``. ``tables`` regenerates
``docs/results/confirmation.md`` and the README block between ``<!-- confirmation-table:start
-->`` and ``<!-- confirmation-table:end -->`` from confirmation.json alone
(:mod:`experiments.confirmation_tables`).

A record: experiment, scale, seed, tuned (seed 0, the seed the plan was tuned on), plan_digest,
code_commit (``<commit>+dirty`` with --allow-dirty), run_dir, window_ps, n_replicas,
n_start_frames, ``pretrained`` and ``stable`` (the evaluation summaries' keys of KIND_KEYS),
claims (intervals apart; ratios StABlE / pre-trained), arrays and arrays_sha256 (per-replica
stability times, censoring flags and start frames of both models), and notes (what was
recomputed because the evaluation did not store it). The plan digest is the sha256 of the
plan's settings with every field named ``seed`` replaced by a placeholder (its prose ``notes``
left out): equal for every seed of one plan. Only runs of the plan as it is are recorded (no
--train-/--eval-overrides variant; the plan's number of evaluation replicas).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Annotated, Callable, Literal, Union

import numpy as np
import tyro

from experiments.confirmation_tables import (
    MODELS,
    RECORDS,
    REPO,
    SCHEMA,
    load_records,
    read_json,
    record_key,
    tables,
)
from stablejax.errors import InputError

ARRAYS_DIR = Path("docs/results/confirmation")
FRAMES_FIELD = "frames train/val/test/reference (used)"

# What a record keeps of an evaluation summary, by experiment kind (keys absent there are left
# out); TRANSFORMS reshape a value on the way.
MOLECULE_KEYS = (
    "stability_time_ps_median", "stability_time_ps_median_ci95", "stability_time_ps_mean",
    "stability_time_ps_mean_ci95", "ci_method", "resample_unit", "fraction_stable_whole_window",
    "hr_mae", "hr_mae_ci95", "test_force_mae_mev_per_angstrom", "test_energy_mae_mev")
KIND_KEYS = {
    "molecule": MOLECULE_KEYS,
    "water": MOLECULE_KEYS + ("rdf_mae", "o_diffusivity_1e-9_m2_per_s",
                              "o_diffusivity_reference_1e-9_m2_per_s", "o_diffusivity_error"),
}
TRANSFORMS = {"rdf_mae": lambda m: m and {p: m[p] for p in ("O-O", "O-H", "H-H")}}
EXPERIMENTS = {"ethanol_schnet": "molecule", "aspirin_schnet": "molecule",
               "ac_ala3_nhme_nequip": "molecule", "water_gemnet": "water"}

Git = Callable[..., str]


def run_git(root: Path, *args: str) -> str:
    """stdout of ``git -C root ARGS``."""
    try:
        return subprocess.run(["git", "-C", str(root), *args], check=True, text=True,
                              capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        raise InputError(f"{root}: git {' '.join(args)} failed: {detail}") from None


def code_commit(root: Path, allow_dirty: bool, git: Git = run_git) -> str:
    """HEAD's commit, ``"<commit>+dirty"`` when stablejax/ or experiments/ have uncommitted
    changes (untracked files included) and ``allow_dirty``.

    Raises:
      InputError: such changes and not ``allow_dirty``.
    """
    commit = git(root, "rev-parse", "HEAD").strip()
    dirty = git(root, "status", "--porcelain", "--", "stablejax", "experiments").splitlines()
    if dirty and not allow_dirty:
        raise InputError(f"{root}: {len(dirty)} uncommitted change(s) under stablejax/ or "
                         f"experiments/ (first: {dirty[0].strip()}); commit them, or pass "
                         "--allow-dirty to record the commit as '<commit>+dirty'")
    return f"{commit}+dirty" if dirty else commit


def _without_seeds(obj):
    if isinstance(obj, dict):
        return {k: "<seed>" if k == "seed" else _without_seeds(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_seeds(v) for v in obj]
    return obj


def plan_digest(plan) -> str:
    """sha256 of the plan's settings (canonical JSON) with every ``seed`` field replaced by a
    placeholder; the plan's prose ``notes`` are not settings and are left out."""
    from stablejax.config import to_dict

    settings = _without_seeds(to_dict(plan))
    settings.pop("notes", None)
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def load_make_plan(experiment: str):
    """``experiments.<experiment>.make_plan``."""
    if experiment not in EXPERIMENTS:
        raise InputError(f"unknown experiment {experiment!r} (known: "
                         f"{', '.join(sorted(EXPERIMENTS))})")
    return importlib.import_module(f"experiments.{experiment}").make_plan


def read_run(run_dir: Path, experiment: str, scale: str) -> tuple[dict, list[str]]:
    """({label: (evaluation summary, arrays)}, notes) of a finished plain run; the arrays are
    ``stability_time_ps``, ``censored`` and ``start_frame`` (recomputed, with a note, where the
    evaluation did not store it)."""
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory")
    path, info_path = run_dir / "summary.json", run_dir / "experiment.json"
    if not path.exists():
        raise InputError(f"{path}: missing: the run has not finished (the report stage writes "
                         "it last; run the experiment again with the same --run-dir)")
    summary, info = read_json(path), read_json(info_path)
    if not isinstance(summary, dict) or not isinstance(info, dict):
        raise InputError(f"{run_dir}: summary.json and experiment.json must hold JSON objects")
    for key, want in (("experiment", experiment), ("scale", scale)):
        if info.get(key) != want:
            raise InputError(f"{info_path}: {key} is {info.get(key)!r}, not {want!r}")
    if "Variant:" in str(info.get("notes", "")):
        raise InputError(f"{info_path}: notes name a variant (--train- or --eval-overrides); "
                         "only runs of the plan as it is are recorded")
    evals, notes = {}, []
    for label, name, _ in MODELS:
        if not isinstance(summary.get(name), dict):
            raise InputError(f"{path}: no {name!r} entry")
        arrays_path = run_dir / name / "arrays.npz"
        if not arrays_path.exists():
            raise InputError(f"{arrays_path}: missing (the per-replica arrays of {name})")
        with np.load(arrays_path) as z:
            arrays = {k: z[k] for k in ("stability_time_ps", "censored", "start_frame")
                      if k in z.files}
        for k in ("stability_time_ps", "censored"):
            if k not in arrays:
                raise InputError(f"{arrays_path}: no {k!r} array")
        if "start_frame" not in arrays:
            from stablejax.evaluate.stability_run import spread_indices

            n, n_test = len(arrays["censored"]), _n_test_frames(info, info_path)
            arrays["start_frame"] = spread_indices(n_test, n)
            notes.append(f"{label}: start frames not in its evaluation arrays, recomputed as "
                         f"spread_indices({n_test}, {n}) (as the evaluation picks them)")
        evals[label] = (summary[name], arrays)
    return evals, notes


def _n_test_frames(info: dict, info_path: Path) -> int:
    try:
        return int(str(info[FRAMES_FIELD]).split("/")[2])
    except (KeyError, IndexError, ValueError):
        raise InputError(f"{info_path}: field {FRAMES_FIELD!r} is {info.get(FRAMES_FIELD)!r}, "
                         "not 'train/val/test/reference'") from None


def _model_entry(kind: str, s: dict, starts: np.ndarray, label: str, notes: list) -> dict:
    """The record's entry of one model: the kind's keys of its evaluation summary."""
    values = dict(s)
    if "resample_unit" not in s:
        values["resample_unit"] = ("replica" if np.unique(starts).size == len(starts)
                                   else "start frame")
        notes.append(f"{label}: resample_unit inferred from the start frames (not in its "
                     "evaluation summary; ci_method names what the intervals resampled)")
    return {k: TRANSFORMS.get(k, _same)(values[k]) for k in KIND_KEYS[kind] if k in values}


def _same(value):
    return value


def _one(values: dict):
    """The common value of both models (a per-model dict when they differ)."""
    a, b = values.values()
    return a if a == b else dict(values)


def claims(pre: dict, stable: dict) -> dict:
    """Whether StABlE's 95% intervals lie above the pre-trained model's, and the ratios
    StABlE / pre-trained (None where a value is missing or the denominator is 0)."""
    def apart(key):
        a, b = pre.get(key), stable.get(key)
        return None if not a or not b else bool(b[0] > a[1])

    def ratio(key):
        a, b = pre.get(key), stable.get(key)
        return None if a is None or b is None or a == 0 else b / a

    return {"intervals_apart": {"median": apart("stability_time_ps_median_ci95"),
                                "mean": apart("stability_time_ps_mean_ci95")},
            "ratio_stable_to_pretrained": {
                "median": ratio("stability_time_ps_median"), "hr_mae": ratio("hr_mae"),
                "force_mae": ratio("test_force_mae_mev_per_angstrom"),
                "energy_mae": ratio("test_energy_mae_mev")}}


def build_record(experiment: str, scale: str, seed: int, run_dir: str, evals: dict,
                 notes: list[str], digest: str, commit: str) -> tuple[dict, dict]:
    """(record without its arrays entries, per-replica arrays) of one run (``evals``,
    ``notes``: from :func:`read_run`)."""
    notes, arrays, models, n, n_starts, window = list(notes), {}, {}, {}, {}, {}
    for label, (s, a) in evals.items():
        n[label] = len(a["stability_time_ps"])
        starts = a["start_frame"].astype(np.int64)
        models[label] = _model_entry(EXPERIMENTS[experiment], s, starts, label, notes)
        n_starts[label] = int(s.get("n_start_frames", np.unique(starts).size))
        window[label] = s.get("window_ps")
        arrays.update({f"{label}_stability_time_ps": a["stability_time_ps"].astype(np.float64),
                       f"{label}_censored": a["censored"].astype(bool),
                       f"{label}_start_frame": starts})
    record = {"experiment": experiment, "scale": scale, "seed": seed, "tuned": seed == 0,
              "plan_digest": digest, "code_commit": commit, "run_dir": run_dir,
              "window_ps": _one(window), "n_replicas": _one(n),
              "n_start_frames": _one(n_starts), **models,
              "claims": claims(models["pretrained"], models["stable"]), "notes": notes}
    return record, arrays


def write_npz(path: Path, arrays: dict) -> None:
    """A compressed .npz that np.load reads, byte-identical for identical arrays (fixed zip
    timestamps), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record(experiment: str, scale: str, seed: int, run_dir: Path, *, root: Path = REPO,
           allow_dirty: bool = False, make_plan=None, git: Git = run_git) -> dict:
    """Add or replace the record of one finished run in ``root/docs/results/confirmation.json``
    and write its arrays file; returns the record."""
    from stablejax.io.run_dir import write_json

    if make_plan is None or experiment not in EXPERIMENTS:
        make_plan = make_plan or load_make_plan(experiment)  # refuses an unknown experiment
    commit = code_commit(root, allow_dirty, git)
    evals, notes = read_run(Path(run_dir), experiment, scale)
    plan = make_plan(scale, seed)
    want = plan.evaluation.n_replicas
    if any(len(a["stability_time_ps"]) != want for _, a in evals.values()):
        raise InputError(f"{run_dir}: the evaluations do not have the {want} replicas of the "
                         f"current {experiment} {scale} plan (a run of another plan?)")
    shown = Path(run_dir)
    if shown.is_absolute() and shown.is_relative_to(root):
        shown = shown.relative_to(root)
    rec, arrays = build_record(experiment, scale, seed, str(shown), evals, notes,
                               plan_digest(plan), commit)
    rel = ARRAYS_DIR / f"{experiment}-{scale}-seed{seed}.npz"
    (root / ARRAYS_DIR).mkdir(parents=True, exist_ok=True)
    write_npz(root / rel, arrays)
    rec.update(arrays=str(rel), arrays_sha256=sha256_file(root / rel))
    path = root / RECORDS
    records = [r for r in (load_records(path) if path.exists() else [])
               if record_key(r) != record_key(rec)]
    write_json(path, {"schema": SCHEMA, "records": sorted(records + [rec], key=record_key)})
    return rec


# --------------------------------------------------------------------------------------- CLI
@dataclasses.dataclass(frozen=True)
class Record:
    """Add or replace one finished run's record in docs/results/confirmation.json."""

    experiment: str
    """One of ethanol_schnet, aspirin_schnet, ac_ala3_nhme_nequip, water_gemnet."""
    scale: Literal["demo", "cpu", "paper"]
    seed: int
    """The seed the run was made with (--seed of the experiment; 0 is the tuned seed)."""
    run_dir: Path
    """The finished run directory (with summary.json), e.g. runs/ethanol_schnet-demo-seed11;
    recorded as given."""
    allow_dirty: bool = False
    """Record even with uncommitted changes under stablejax/ or experiments/ ('<commit>+dirty')."""
    root: Path = REPO
    """Repository root (docs/results/ and README.md under it)."""


@dataclasses.dataclass(frozen=True)
class Tables:
    """Regenerate docs/results/confirmation.md and the README block from confirmation.json."""

    check: bool = False
    """Write nothing; exit 1 when a committed file differs from what would be generated."""
    root: Path = REPO


def main(argv: list[str] | None = None) -> int:
    cmd = tyro.cli(Union[Annotated[Record, tyro.conf.subcommand("record")],  # noqa: UP007
                         Annotated[Tables, tyro.conf.subcommand("tables")]],
                   args=argv, prog="python -m experiments.confirmation",
                   description=__doc__.strip())
    try:
        if isinstance(cmd, Tables):
            return tables(cmd.root, cmd.check)
        rec = record(cmd.experiment, cmd.scale, cmd.seed, cmd.run_dir, root=cmd.root,
                     allow_dirty=cmd.allow_dirty)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"recorded {rec['experiment']} {rec['scale']} seed {rec['seed']} in {RECORDS} "
          f"(arrays {rec['arrays']}); now run: python -m experiments.confirmation tables")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
