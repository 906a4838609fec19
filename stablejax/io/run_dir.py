"""The layout of a run directory, owned by one module: file names, atomic writes, resume.

A training run directory (pre-training or StABlE) holds::

    model.json        the model spec (architecture, species, normalisation)  -> ModelSpec
    checkpoints/      orbax checkpoints of the whole evolving state, one per epoch (last 2)
    metrics.jsonl     one JSON record per epoch
    best/             pre-training: the best parameters on the validation set
    end_of_cycle/     StABlE: the parameters at the end of every learning phase
    stable/           StABlE (pipeline): the training loop's own run directory
    final/            StABlE (pipeline): the final parameters
    results.json      the run's summary, written last: its presence marks a finished run

Everything written here is atomic (a temporary file renamed into place, or an orbax step that is
finalised only when complete), so a crash never leaves a half-written file that a re-run would
trust. The per-epoch order is: log record, then checkpoint; a run killed in between resumes from
the previous checkpoint, drops the extra record and writes both again identically. Checkpoints
carry a checksum (:mod:`stablejax.io.checkpoint`): a damaged newest one is skipped with a
warning and the run resumes from the previous one, its log cut to match.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from stablejax.io.checkpoint import latest_step, restore_checkpoint, save_checkpoint
from stablejax.io.jsonl import append_record, read_records, truncate_log
from stablejax.sharding import primary_only

MODEL_SPEC = "model.json"
RESULTS = "results.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
BEST = "best"
FINAL = "final"
END_OF_CYCLE = "end_of_cycle"
KEPT = "kept"  # parameters of the epoch a rule chose (train(keep_epoch=...))
STABLE = "stable"
DONE = "done.json"


@primary_only
def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temporary file + rename); in a multi-host run process 0
    writes and the others wait for it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


@primary_only
def remove_tree(*paths: str | Path) -> None:
    """Remove directories (missing ones are fine); in a multi-host run process 0 does it."""
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


class RunDir:
    """A run directory (see the module docstring for its files).

    Args:
      path: the directory; created on the first write.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def sub(self, name: str) -> "RunDir":
        return RunDir(self.path / name)

    def mkdir(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # ------------------------------------------------------------------ summary files
    @property
    def is_finished(self) -> bool:
        """True once ``results.json`` is written (the last file of a run)."""
        return (self.path / RESULTS).exists()

    def read_results(self) -> dict:
        return read_json(self.path / RESULTS)

    def write_results(self, results: dict) -> None:
        self.mkdir()
        write_json(self.path / RESULTS, results)

    @property
    def model_spec_path(self) -> Path:
        return self.path / MODEL_SPEC

    # ------------------------------------------------------- per-epoch log and checkpoint
    def resume(self, like: Any) -> Any | None:
        """The newest intact checkpointed state (structured like ``like``), or None when there
        is none; the metrics log is cut to the epochs that state contains (``like`` and the
        restored state need an ``epoch`` entry).

        A damaged newest checkpoint is skipped with a warning (see
        :func:`~stablejax.io.checkpoint.restore_checkpoint`).

        Raises:
          CheckpointDamagedError: every checkpoint is damaged.
          CheckpointMismatchError: the checkpoints hold another model's state.
        """
        self.mkdir()
        restored = None
        if latest_step(self.path / CHECKPOINTS) is not None:
            restored, _ = restore_checkpoint(self.path / CHECKPOINTS, like=like)
        n_epochs = 0 if restored is None else int(restored["epoch"])
        truncate_log(self.path / METRICS, n_epochs)
        return restored

    def save_epoch(self, epoch: int, arrays: Any, record: dict, meta: dict | None = None, *,
                   keep: int = 2) -> None:
        """Append the epoch's record, then checkpoint ``arrays`` as step ``epoch``."""
        self.mkdir()
        append_record(self.path / METRICS, record)
        save_checkpoint(self.path / CHECKPOINTS, epoch, arrays,
                        {"epoch": epoch, **(meta or {})}, max_to_keep=keep)

    def records(self) -> list[dict]:
        return read_records(self.path / METRICS)

    def save_params(self, name: str, step: int, params: Any, meta: dict | None = None, *,
                    keep: int | None = 1) -> None:
        """Parameters under ``name`` (``best``, ``final``, ``end_of_cycle``) as step ``step``."""
        save_checkpoint(self.path / name, step, {"params": params}, meta or {},
                        max_to_keep=keep)

    def load_params(self, name: str, like: Any) -> Any:
        """The newest intact parameters saved under ``name``, structured like ``like``; their
        checksum and their key paths and shapes (against ``like``) are checked.

        Raises:
          FileNotFoundError: nothing saved under ``name``.
          CheckpointDamagedError: every step saved under ``name`` is damaged.
          CheckpointMismatchError: the saved parameters are another model's.
        """
        out, _ = restore_checkpoint(self.path / name, like={"params": like})
        return out["params"]

    def has_params(self, name: str) -> bool:
        return latest_step(self.path / name) is not None


def params_template(init: Callable[..., Any], n_atoms: int, dtype=np.float32) -> Any:
    """Zero parameters with the shapes ``init(key, R)`` would give, traced abstractly
    (``jax.eval_shape``): no geometry is evaluated."""
    shapes = jax.eval_shape(init, jax.ShapeDtypeStruct((2,), np.uint32),
                            jax.ShapeDtypeStruct((n_atoms, 3), dtype))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
