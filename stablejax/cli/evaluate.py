"""``python -m stablejax evaluate --model NAME [--scale {demo,cpu,paper}] [--n-replicas 32]
[--time-ps 10]``

The flags are the fields of :class:`stablejax.evaluate.EvalConfig` and its
:class:`stablejax.config.MDConfig` (``--dt-fs``, ``--integrator``, ``--tolerance-angstrom``,
...), the same names as in ``simulate`` and in config files. ``--temperature-k`` and ``--dt-fs``
default to the data set's system (its reference data's temperature and time step; a periodic
liquid also gets the reference's Langevin friction, 1/ps, and the scale's frame spacing). ``--scale`` sets the defaults of
``--n-replicas`` and ``--time-ps`` (:mod:`stablejax.cli.scales`). ``--model`` is a run name
under ``runs/`` or a model directory (:mod:`stablejax.cli.runs`).

Output (``--out``, default ``<model>/eval``)::

    inputs.json     the settings, model (absolute path, parameter digest) and data set identity
    arrays.npz      survival curve, h(r) and bond-length distributions
    summary.json    the metrics; written last, its presence marks a finished result
    partial/        a run in progress: inputs.json and checkpoints/<chunks done>/ (orbax: the
                    replica state and running sums after the last finished chunks)

A run killed at any point resumes from ``partial/`` when the same command is run again, and
gives the same result as an uninterrupted run, bit for bit. The finished result is moved from
``partial/`` into ``--out`` only when complete, so ``--overwrite`` never loses an old result to
a run that does not finish. This module also holds what ``simulate`` shares: flag parsing with
one-line errors, input loading and checks, and the output-directory protocol.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from stablejax.cli.progress import ProgressBar
from stablejax.cli.runs import resolve_run
from stablejax.cli.scales import DEFAULT_SCALE, SCALES, eval_config, peek
from stablejax.errors import InputError
from stablejax.evaluate.stability_run import EvalConfig
from stablejax.io.run_dir import read_json, write_json
from stablejax.sharding import primary_decides, primary_only

PARTIAL = "partial"
INPUTS = "inputs.json"
SUMMARY = "summary.json"
ARRAYS = "arrays.npz"
CHECKPOINTS = "checkpoints"
_RULE = re.compile(r"^(\w+)\.(\w+) must be .+, got .+$", re.S)  # config.need's message
_FIELD = re.compile(r"^([A-Z]\w*)\.(\w+)\b")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluateArgs:
    """Long evaluation simulations of a model: stability times, h(r), bond lengths, force MAE."""

    model: str | None = None
    """Run name under runs/ or model directory (a pre-training or StABlE run); default: the
    most recent finished one under runs/."""
    scale: Literal[SCALES] = DEFAULT_SCALE
    """Defaults of --n-replicas and --time-ps: demo 16 x 5 ps, cpu 32 x 25 ps, paper 256 x
    1000 ps (the paper's); a periodic liquid (water): demo 4 x 2 ps, cpu 4 x 5 ps (a frame
    every 100 fs), paper 5 x 1000 ps (a frame every ps), Langevin at 1/ps."""
    data: Path | None = None
    """Data set directory (default: the one in <model>/results.json or its pre-training run)."""
    out: Path | None = None
    """Output directory (default: <model>/eval)."""
    overwrite: bool = False
    """Replace a finished result (or discard an unfinished run) made with other settings."""
    eval: EvalConfig = eval_config(DEFAULT_SCALE)


# ----------------------------------------------------------------------------- flags
def _one_line(exc: BaseException, text: str) -> str:
    """The message of a rejected command line: a config rule (``Class.field must be ..., got
    ...``) prefixed with its flag, else tyro's message with its box folded into one line."""
    seen = exc.__context__
    while seen is not None:
        if isinstance(seen, ValueError) and _RULE.match(str(seen)):
            return f"{_flag_of(str(seen))}: {seen}"
        seen = seen.__context__
    rows = []
    for line in text.splitlines()[1:]:
        row = line.strip().strip("│╭╰╮╯").strip()
        if set(row) <= set("─"):
            break
        rows.append(row)
    return " ".join(r for r in rows if r) or "invalid command line"


def _flag_of(message: str) -> str | None:
    """``--dt-fs`` for a config message about ``MDConfig.dt_fs`` (``... must be ...`` or
    ``...=value ...``), else None."""
    m = _FIELD.match(message)
    return None if m is None else "--" + m.group(2).replace("_", "-")


def parse(cls, argv: list[str], prog: str, default=None):
    """``tyro.cli`` with nested config fields as plain flags (``--dt-fs``, not ``--md.dt-fs``),
    starting from ``default`` (an instance of ``cls``; None: the class defaults).

    Every flag is validated here (by the config classes), before anything is loaded, traced or
    written. A rejected command line prints one line, ``error: --dt-fs: MDConfig.dt_fs must be
    > 0, got 0.0`` (flag, rule and value), and exits with status 2. A legal but implausible
    value the configs warn about prints one line, ``warning: --dt-fs: MDConfig.dt_fs=6.0 is
    above 5 fs ...``, and parsing goes on. ``--help`` prints the help and exits with status 0.
    """
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            args = tyro.cli(cls, args=argv, prog=prog, default=default,
                            config=(tyro.conf.OmitArgPrefixes,))
    except SystemExit as e:
        if not e.code:
            sys.stderr.write(buf.getvalue())
            raise
        print(f"error: {_one_line(e, buf.getvalue())} (see {prog} --help)", file=sys.stderr)
        raise SystemExit(2) from None
    for w in caught:
        text = " ".join(str(w.message).split())
        flag = _flag_of(text)
        print(f"warning: {flag + ': ' if flag else ''}{text}", file=sys.stderr)
    return args


# ---------------------------------------------------------------------------- inputs
def find_data(model_dir: Path) -> Path:
    from stablejax.io.run_dir import RESULTS

    for cand in (model_dir / RESULTS, model_dir.parent / "pretrain" / RESULTS):
        if cand.exists():
            return Path(json.loads(cand.read_text())["data"])
    raise InputError(f"{model_dir}: cannot tell which data set it belongs to; pass --data")


def load_inputs(model_dir: Path, data: Path | None, flag: str):
    """(model, params, dataset) of a model directory and its data set, checked: the
    directory exists and holds a model, the data set loads, its atoms are the model's, and its
    test split (the start structures) and reference trajectory are not empty.

    Raises:
      FileNotFoundError, InputError: one line naming the flag or file and the problem.
    """
    from stablejax.data import load_dataset
    from stablejax.pipeline import load_model_dir

    if not model_dir.is_dir():
        raise FileNotFoundError(f"{flag} {model_dir}: no such model directory")
    spec, model, params = load_model_dir(model_dir)
    ds = load_dataset(data or find_data(model_dir))
    spec.check_species(ds.system.atomic_numbers, f"data set {ds.path}")
    for split in ("test", "reference"):
        if getattr(ds, split).n_frames < 1:
            raise InputError(f"data set {ds.path}: the {split} split has no frames")
    return model, params, ds


def given_flags(argv: list[str]) -> set[str]:
    """Field names set on the command line (``--dt-fs`` and ``--md.dt-fs`` -> ``dt_fs``)."""
    return {a.split("=", 1)[0].rsplit(".", 1)[-1].lstrip("-").replace("-", "_")
            for a in argv if a.startswith("--")}


def md_for_system(md, system, argv: list[str], scale: str = DEFAULT_SCALE):
    """``md`` with the conditions of the data set's system where the command line did not set
    them: its temperature and time step (``--temperature-k``, ``--dt-fs``), and for a periodic
    liquid the reference's Langevin friction and the scale's frame spacing
    (:data:`stablejax.cli.scales.LIQUID_EVAL_SIZES`). A model is simulated at the conditions
    of its data unless asked otherwise."""
    from stablejax.cli.scales import liquid_eval_fields

    given = given_flags(argv)
    over = {"temperature_k": float(system.temperature_k), "dt_fs": float(system.timestep_fs)}
    if any(system.pbc):
        fields = {f.name for f in dataclasses.fields(md)}
        over.update({k: v for k, v in liquid_eval_fields(scale).items() if k in fields})
    over = {k: v for k, v in over.items() if k not in given}
    return dataclasses.replace(md, **over) if over else md


def eval_for_system(cfg: EvalConfig, system, argv: list[str], scale: str) -> EvalConfig:
    """``cfg`` (an :class:`EvalConfig`) at the conditions of the system (:func:`md_for_system`)
    and, for a periodic liquid, the scale's replicas and time where the command line did not
    set them."""
    from stablejax.cli.scales import liquid_eval_fields

    md = md_for_system(cfg.md, system, argv, scale)
    over = {}
    if any(system.pbc):
        given = given_flags(argv)
        over = {k: v for k, v in liquid_eval_fields(scale).items()
                if k in ("n_replicas", "time_ps") and k not in given}
    return dataclasses.replace(cfg, md=md, **over)


def inputs_record(command: str, settings: dict, model_dir: Path, params, ds) -> dict:
    """What a result is made from: the command's settings, the model (absolute directory,
    parameter digest) and the data set's identity (absolute path, species, file digests)."""
    from stablejax.io.inputs import array_digest, code_version, dataset_identity

    return {"command": command, "settings": json.loads(json.dumps(settings, default=str)),
            "model": {"dir": str(Path(model_dir).resolve()),
                      "params_sha256": array_digest(params)},
            "data": dataset_identity(ds), "code_version": code_version()}


def differences(old: dict, new: dict) -> list[str]:
    """``"--dt-fs: 0.5 -> 1.0"`` for each differing setting (flags by name, other fields by
    dotted path); the code version is not compared."""
    from stablejax.io.inputs import flatten

    a, b = flatten(old), flatten(new)
    out = []
    for k in sorted(set(a) | set(b)):
        if k == "code_version" or a.get(k, "<absent>") == b.get(k, "<absent>"):
            continue
        name = ("--" + k.rsplit(".", 1)[-1].replace("_", "-")) if k.startswith("settings.") else k
        out.append(f"{name}: {json.dumps(a.get(k, '<absent>'))} -> "
                   f"{json.dumps(b.get(k, '<absent>'))}")
    return out


# ----------------------------------------------------------------- output directory
def _read(path: Path) -> dict | None:
    try:
        return read_json(path) if path.exists() else None
    except (OSError, ValueError):
        return None


def _finished(summary: dict | None) -> bool:
    return bool(summary) and bool(summary.get("finished", True))


@primary_decides
def open_out(out: Path, record: dict, outputs: tuple[str, ...], overwrite: bool) -> str:
    """Decide what a run with inputs ``record`` does in ``out``. Call it only after every input
    is validated: it is the first step that writes. It deletes nothing but an unfinished run in
    ``out/partial`` made with other settings, and that only with ``overwrite``.

    Args:
      outputs: every name a finished result of this command may have in ``out``.

    Returns:
      ``"finished"`` (``out`` holds the finished result of ``record``; nothing to do),
      ``"complete"`` (``out/partial`` holds it complete: :func:`promote` it), ``"resume"``
      (``out/partial`` holds finished chunks of this run) or ``"new"`` (``out/partial`` is
      ready, holding only ``inputs.json``).

    Raises:
      InputError: ``out`` is a file or the model directory, or holds a result or an unfinished
        run made with other settings (each difference named) and ``overwrite`` is off.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: a file, not a directory")
    if out.resolve() == Path(record["model"]["dir"]):
        raise InputError(f"--out {out}: the model directory itself; choose a directory of its own")
    partial = out / PARTIAL
    partial_old = _read(partial / INPUTS)
    partial_same = partial_old is not None and not differences(partial_old, record)
    partial_complete = partial_same and _finished(_read(partial / SUMMARY))
    if partial_complete and not (out / SUMMARY).exists():
        return "complete"  # a promotion was interrupted after it removed the old summary
    if any((out / n).exists() for n in outputs):
        old = _read(out / INPUTS)
        diff = (["inputs.json missing (settings unknown)"] if old is None
                else differences(old, record))
        if not _finished(_read(out / SUMMARY)):
            diff = diff or ["the result is unfinished"]
        if not diff and not overwrite:
            if partial_same and not partial_complete:
                shutil.rmtree(partial)  # left over by a promotion interrupted at its end
            return "finished"
        if diff and not overwrite:
            raise InputError(f"{out} holds a result made with other settings ({'; '.join(diff)})"
                             ": pass --overwrite to replace it (once the new run has finished),"
                             " or choose another --out")
    if partial_same:
        return "complete" if partial_complete else "resume"
    if partial.exists():
        if partial_old is None and any(partial.iterdir()):
            raise InputError(f"{partial} is not an unfinished run of stablejax (no inputs.json):"
                             " move it away or choose another --out")
        if partial_old is not None and not overwrite:
            raise InputError(f"{partial} holds an unfinished run made with other settings "
                             f"({'; '.join(differences(partial_old, record))}): run its command "
                             "to resume it, pass --overwrite to discard it, or choose another "
                             "--out")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_json(partial / INPUTS, record)
    return "new"


@primary_only
def promote(out: Path, produced: tuple[str, ...], stale: tuple[str, ...] = ()) -> None:
    """Move the complete result in ``out/partial`` into ``out``, replacing the old one.

    The old ``summary.json`` goes first, so ``out`` never looks finished with mixed files;
    then each of ``produced`` replaces its old version (a directory is moved aside and removed
    after), each of ``stale`` (outputs this run does not make) is removed, and the new
    ``inputs.json`` and ``summary.json`` come last. Repeating an interrupted promotion
    completes it.
    """
    partial = out / PARTIAL
    (out / SUMMARY).unlink(missing_ok=True)
    for name in produced:
        src, dst = partial / name, out / name
        if src.exists():  # else: moved by an interrupted promotion
            if dst.is_dir():
                os.replace(dst, partial / f"old-{name}")
            os.replace(src, dst)
    for name in stale:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink(missing_ok=True)
    write_json(out / INPUTS, read_json(partial / INPUTS))
    os.replace(partial / SUMMARY, out / SUMMARY)
    shutil.rmtree(partial)


def kept_note(out: Path, n_chunks: int, chunk_ps: float) -> str:
    """What an interrupted run left in ``out/partial`` (read from disk) and how to resume."""
    from stablejax.io.checkpoint import latest_step

    done = latest_step(out / PARTIAL / CHECKPOINTS) or 0
    if done == 0:
        return "no chunk had finished, so nothing simulated is kept"
    return (f"{done} of {n_chunks} chunks ({done * chunk_ps:g} ps per replica) are kept in "
            f"{out / PARTIAL}; run the same command to resume")


# ----------------------------------------------------------------------------- main
def main(argv: list[str]) -> int:
    scale = peek(argv).scale
    args = parse(EvaluateArgs, argv, "stablejax evaluate",
                 default=EvaluateArgs(scale=scale, eval=eval_config(scale)))
    cfg = args.eval
    model_dir = resolve_run(args.model, "--model", ("pretrain", "stable"),
                            what="model directory")
    model, params, ds = load_inputs(model_dir, args.data, "--model")
    cfg = eval_for_system(cfg, ds.system, argv, scale)
    out = args.out or model_dir / "eval"
    record = inputs_record("evaluate", dataclasses.asdict(cfg), model_dir, params, ds)
    status = open_out(out, record, (SUMMARY, ARRAYS, INPUTS), args.overwrite)
    if status == "finished":
        print((out / SUMMARY).read_text())
        print(f"{out} already holds this evaluation (same settings): nothing to do")
        return 0
    fpc, n_chunks = cfg.chunks
    chunk_ps = fpc * cfg.md.frame_interval_fs / 1000
    try:
        if status != "complete":
            from stablejax.evaluate import evaluate_model
            from stablejax.io.npz import save_arrays

            with ProgressBar("[evaluate] steps", unit="step",
                             postfix_keys=("simulated_ps", "n_unstable")) as bar:
                result = evaluate_model(model, params, ds, cfg, progress=bar,
                                        checkpoint_dir=(out / PARTIAL / CHECKPOINTS).resolve())
            save_arrays(out / PARTIAL / ARRAYS,
                        **{k: np.asarray(v) for k, v in result.arrays.items()})
            write_json(out / PARTIAL / SUMMARY, result.summary)
        promote(out, (ARRAYS,))
    except KeyboardInterrupt:
        raise KeyboardInterrupt(kept_note(out, n_chunks, chunk_ps)) from None
    print((out / SUMMARY).read_text())
    print(f"written: {out}")
    return 0
