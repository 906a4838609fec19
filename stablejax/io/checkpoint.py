"""Orbax checkpoints of array pytrees, with JSON metadata, written atomically.

A checkpoint directory holds numbered steps (``<dir>/<step>/``); orbax finalises a step only
when it is completely written, so a crash never leaves a half-written "latest" checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)


def _manager(directory: Path, max_to_keep: int | None):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(Path(directory).resolve(), options=options)


def save_checkpoint(
    directory: str | Path, step: int, state: Any, meta: dict | None = None, *,
    max_to_keep: int | None = 3,
) -> Path:
    """Save an array pytree (and JSON ``meta``) as step ``step``; blocks until written."""
    import orbax.checkpoint as ocp

    tree = jax.tree.map(np.asarray, state)
    mngr = _manager(Path(directory), max_to_keep)
    try:
        mngr.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta or {})), force=True)
        mngr.wait_until_finished()
    finally:
        mngr.close()
    return Path(directory) / str(int(step))


def latest_step(directory: str | Path) -> int | None:
    """The newest complete step in ``directory`` (None if there is none)."""
    directory = Path(directory)
    if not directory.exists():
        return None
    mngr = _manager(directory, None)
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def restore_checkpoint(directory: str | Path, like: Any | None = None, step: int | None = None
                       ) -> tuple[Any, dict]:
    """Restore (state, meta) from ``step`` (default: the latest).

    Args:
      like: a pytree with the structure, shapes and dtypes of the saved state; None restores
        the raw nested dict of arrays.

    Raises:
      FileNotFoundError: no checkpoint in ``directory``.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory)
    mngr = _manager(directory, None)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{directory}: no checkpoint found")
        target = None if like is None else jax.tree.map(np.asarray, like)
        out = mngr.restore(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    finally:
        mngr.close()
    state = out["state"]
    if like is not None:
        state = jax.tree.map(lambda ref, x: jax.numpy.asarray(x, dtype=np.asarray(ref).dtype),
                             like, state)
    return state, dict(out["meta"] or {})
