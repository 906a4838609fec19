"""What a run directory was made from (``inputs.json``), and the check that a re-run or a resume
asks for the same thing.

``inputs.json`` holds named sections (``config``, ``model``, ``data``, ``pretrained``, ...) and
the code version. The first run writes them; every later run in the same directory compares the
sections it is given, field by field (nested dicts are compared on their dotted paths):

* a field that differs stops the run with one line naming every differing field, its recorded
  and its new value, unless the caller lists it in ``allow`` (the fields a stage lets a resume
  change, e.g. the learning rate or the epoch count; the user names them explicitly, e.g.
  ``--allow-change learning_rate``). Accepted changes are recorded (``changes``) and the
  sections updated, so the next resume compares against them;
* a finished run (``finished=True``) re-run with any difference is refused: its results were
  made from the recorded settings;
* only the code version may differ freely: that is logged as a warning, so a run survives an
  upgrade of stablejax;
* a field the record lacks (added to a config after the run was made) compares equal to its
  default when the caller gives ``defaults``: a new option at its default value reproduces the
  old behaviour, so such a run still resumes.

A directory made without ``inputs.json`` adopts the sections given on its next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from stablejax.errors import InputError
from stablejax.io.run_dir import read_json, write_json
from stablejax.sharding import primary_decides

log = logging.getLogger(__name__)

INPUTS = "inputs.json"


def code_version() -> str:
    import stablejax

    return stablejax.__version__


def _normal(x: Any) -> Any:
    """JSON's view of ``x`` (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(x, default=_default))


def _default(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b.c": leaf}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v: Any) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


@primary_decides
def check_inputs(run_dir: str | Path, sections: dict[str, dict], *, allow: Iterable[str] = (),
                 resumable: Iterable[str] = (), finished: bool = False,
                 defaults: dict[str, dict] | None = None) -> list[str]:
    """Record ``sections`` in ``run_dir/inputs.json``, or check them against the record.

    Args:
      run_dir: the run directory (created if missing).
      sections: {section name: dict}; fields are compared as dotted paths
        ``section.field.subfield``.
      allow: dotted paths (``config.learning_rate``) that may differ from the record; the new
        values are then recorded. Anything else that differs raises.
      resumable: the dotted paths the stage would let ``allow`` name (for the message).
      finished: the run directory holds a finished run: any difference raises.
      defaults: sections of default values (same layout as ``sections``); a field missing from
        the record is taken to have its default there.

    Returns:
      The dotted paths that differed and were accepted.

    Raises:
      InputError: a differing field not in ``allow`` (or any, for a finished run), in one line
        naming the directory, each field and both values.
    """
    run_dir = Path(run_dir)
    path = run_dir / INPUTS
    new = {name: _normal(sec) for name, sec in sections.items()}
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, {"code_version": code_version(), **new, "changes": []})
        return []
    try:
        record = read_json(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable ({e}); it records what this run was made from, "
                         "so the run cannot be checked: use another run directory") from None
    if record.get("code_version") != code_version():
        log.warning("%s was made by stablejax %s; this is %s", run_dir,
                    record.get("code_version"), code_version())
    old_flat = flatten({k: record[k] for k in new if k in record})
    for key, value in flatten({k: _normal(v) for k, v in (defaults or {}).items()
                               if k in record}).items():
        old_flat.setdefault(key, value)
    new_flat = flatten({k: v for k, v in new.items() if k in record})
    keys = sorted(set(old_flat) | set(new_flat))
    diff = [k for k in keys if old_flat.get(k, "<absent>") != new_flat.get(k, "<absent>")]
    adopted = [k for k in new if k not in record]
    if not diff and not adopted:
        return []
    allow = set(allow)
    if diff:
        detail = "; ".join(f"{k}: {_short(old_flat.get(k, '<absent>'))} -> "
                           f"{_short(new_flat.get(k, '<absent>'))}" for k in diff)
        if finished:
            raise InputError(f"{run_dir} holds a finished run made with other settings ({detail});"
                             " use another run directory for these settings")
        refused = [k for k in diff if k not in allow]
        if refused:
            resumable = set(resumable)
            hint = ("; to continue with the new values pass --allow-change "
                    + " ".join(k.split(".", 1)[1] for k in refused)
                    if all(k in resumable for k in refused) else
                    "; use another run directory for these settings")
            raise InputError(f"{run_dir}: resuming with other settings than it was made with "
                             f"({detail}){hint}")
        log.warning("%s: resuming with changed %s", run_dir, detail)
    changes = list(record.get("changes", []))
    if diff:
        changes.append({k: [old_flat.get(k), new_flat.get(k)] for k in diff})
    write_json(path, {**record, **new, "code_version": record.get("code_version"),
                      "changes": changes})
    return diff


def allow_paths(names: Iterable[str], resumable: Iterable[str], section: str = "config"
                ) -> list[str]:
    """Validate user-named fields (``--allow-change``) against a stage's ``resumable`` ones
    (dotted paths without the section) and return their paths in ``section``.

    Raises:
      InputError: a name the stage does not let a resume change.
    """
    resumable = tuple(resumable)
    out = []
    for name in names:
        key = name.replace("-", "_")
        if key not in resumable:
            raise InputError(f"--allow-change {name}: not a field a resume may change "
                             f"(choose from {', '.join(resumable)})")
        out.append(f"{section}.{key}")
    return out


def file_digest(path: str | Path, n_hex: int = 16) -> str:
    """sha256 of a file's bytes (first ``n_hex`` hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n_hex]


def array_digest(tree: Any, n_hex: int = 16) -> str:
    """sha256 over a pytree's leaves (dtype, shape, bytes) in flatten order."""
    import jax

    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:n_hex]


def dataset_identity(dataset) -> dict:
    """A data set's identity: absolute path, system, species per atom, frames per split and a
    digest of each split file (a data set regenerated with other settings differs)."""
    path = Path(dataset.path).resolve()
    files = {name: file_digest(path / f"{name}.npz")
             for name in ("train", "val", "test", "reference") if (path / f"{name}.npz").exists()}
    return {
        "path": str(path),
        "system": dataset.system.name,
        "atomic_numbers": [int(z) for z in dataset.system.atomic_numbers],
        "n_frames": {name: int(getattr(dataset, name).n_frames)
                     for name in ("train", "val", "test", "reference")},
        "sha256": files,
    }
