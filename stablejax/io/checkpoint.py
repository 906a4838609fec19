"""Orbax checkpoints of array pytrees, with JSON metadata and a checksum, restored defensively.

A checkpoint directory holds numbered steps (``<dir>/<step>/``); orbax finalises a step only
when it is completely written, so a crash never leaves a half-written "latest" checkpoint. Each
step also records, in its JSON item, a sha256 over every array (key path, dtype, shape, bytes)
and over the JSON metadata, plus a digest of the array layout. Restoring checks, in order:

1. the JSON item and orbax's array metadata can be read, and that metadata agrees with the
   layout recorded at save (otherwise the step is damaged);
2. the saved tree has the key paths and shapes of ``like`` (otherwise it is a checkpoint of
   another model: :class:`CheckpointMismatchError`, raised before any array is read);
3. the arrays can be read and their checksum matches (otherwise the step is damaged).

A damaged newest step is reported with a warning and the next older one is tried; only when
none is intact does :func:`restore_checkpoint` raise :class:`CheckpointDamagedError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from stablejax.errors import InputError
from stablejax.sharding import primary_only

log = logging.getLogger(__name__)

CHECKSUM_KEY = "_checksum"  # reserved key of the JSON item: {"sha256": ..., "layout": ...}
_STATE, _META = "state", "meta"
_SETTLE_S = 0.05  # after a failed read: tensorstore reads still in flight finish well within it


class CheckpointDamagedError(InputError):
    """No intact checkpoint: every step tried is truncated, unreadable or fails its checksum."""


class CheckpointMismatchError(InputError):
    """The checkpoint holds another tree (another model): a key path or shape differs."""


class _Damaged(Exception):
    """Internal: one step cannot be trusted (the message is the one-line reason)."""


# ---------------------------------------------------------------------------- tree layout
def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat(tree: Any) -> dict[str, Any]:
    """Leaves by key path (``params/interaction_2/Dense_0/kernel``): the same string for a
    tuple, list or dict node, so a tree saved by orbax and one restored from it agree."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_name(k) for k in path): x for path, x in leaves}


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in (x.shape if hasattr(x, "shape") else np.shape(x)))


def _dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)


def _layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key path: (shape, dtype name)}`` of arrays or of orbax's array metadata."""
    return {p: (_shape(x), _dtype(x).name) for p, x in _flat(tree).items()}


def _layout_digest(layout: dict[str, tuple[tuple[int, ...], str]]) -> str:
    text = "\n".join(f"{p}|{dt}|{shape}" for p, (shape, dt) in sorted(layout.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def tree_digest(tree: Any, meta: dict | None = None) -> str:
    """sha256 over every array's key path, dtype, shape and bytes (in key-path order), then over
    ``meta`` as canonical JSON (sorted keys)."""
    h = hashlib.sha256()
    for path, x in sorted(_flat(tree).items()):
        x = np.ascontiguousarray(x)
        h.update(f"{path}|{x.dtype.name}|{x.shape}\n".encode())
        h.update(x.tobytes())
    h.update(json.dumps(meta or {}, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------- saving
def _manager(directory: Path, max_to_keep: int | None):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(Path(directory).resolve(), options=options)


def save_checkpoint(
    directory: str | Path, step: int, state: Any, meta: dict | None = None, *,
    max_to_keep: int | None = 3,
) -> Path:
    """Save an array pytree (and JSON ``meta``) as step ``step``; blocks until written. In a
    multi-host run every process calls it and orbax writes the (replicated) arrays once.

    Steps ``>= step`` already in ``directory`` are removed first: they belong to the future of
    a run that was resumed from an older step and now writes that future again.

    Args:
      directory: the checkpoint directory (created if needed).
      step: the step number (the epoch, for per-epoch checkpoints).
      state: a pytree of arrays.
      meta: JSON-serialisable metadata, returned by :func:`restore_checkpoint`.
      max_to_keep: the newest steps kept (None: all).

    Returns:
      The step directory.

    Raises:
      ValueError: ``meta`` uses the reserved key ``_checksum``.
    """
    import orbax.checkpoint as ocp

    directory, step = Path(directory), int(step)
    meta = json.loads(json.dumps(meta or {}))  # what restoring returns: the checksum covers it
    if CHECKSUM_KEY in meta:
        raise ValueError(f"save_checkpoint: meta key {CHECKSUM_KEY!r} is reserved")
    tree = jax.tree.map(np.asarray, state)
    meta[CHECKSUM_KEY] = {"sha256": tree_digest(tree, meta),
                          "layout": _layout_digest(_layout(tree))}
    _remove_steps_from(directory, step)
    mngr = _manager(directory, max_to_keep)
    try:
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)
        mngr.wait_until_finished()
    finally:
        mngr.close()
    return directory / str(step)


@primary_only
def _remove_steps_from(directory: Path, step: int) -> None:
    for old in checkpoint_steps(directory):
        if old >= step:
            log.info("%s: removing step %d (a resumed run writes steps from %d on again)",
                     directory, old, step)
            shutil.rmtree(directory / str(old))


# ------------------------------------------------------------------------------- restoring
def checkpoint_steps(directory: str | Path) -> list[int]:
    """The finalised steps in ``directory``, ascending; reads no file, so never fails on
    damaged metadata (orbax writes a step under a temporary name and renames it when done)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def latest_step(directory: str | Path) -> int | None:
    """The newest finalised step in ``directory`` (None if there is none); it may still prove
    damaged when restored."""
    steps = checkpoint_steps(directory)
    return steps[-1] if steps else None


def restore_checkpoint(directory: str | Path, like: Any | None = None, step: int | None = None
                       ) -> tuple[Any, dict]:
    """Restore (state, meta) from ``step``, or from the newest intact step.

    With ``step=None`` the newest step is tried first; a damaged one (missing, truncated or
    unreadable files, or a checksum that does not match) is logged as a one-line warning naming
    its directory, and the next older step is tried. Steps saved without a checksum restore
    unverified.

    Args:
      directory: the checkpoint directory.
      like: a pytree with the structure and shapes of the saved state; the restored arrays
        take its dtypes. None restores the raw nested dict of numpy arrays.
      step: restore exactly this step.

    Returns:
      (state, meta): the restored pytree and the JSON metadata given to :func:`save_checkpoint`.

    Raises:
      FileNotFoundError: no checkpoint in ``directory``, or no step ``step``.
      CheckpointMismatchError: the checkpoint's key paths or shapes differ from ``like`` (a
        checkpoint of another model); older steps are not tried.
      CheckpointDamagedError: ``step`` is damaged, or (``step=None``) every step is.
    """
    directory = Path(directory).resolve()  # orbax restores from absolute paths only
    steps = checkpoint_steps(directory)
    if not steps:
        raise FileNotFoundError(f"{directory}: no checkpoint found")
    if step is not None and int(step) not in steps:
        raise FileNotFoundError(f"{directory}: no checkpoint step {int(step)} "
                                f"(steps: {', '.join(map(str, steps))})")
    order = steps[::-1] if step is None else [int(step)]
    damaged = []
    with _drop_closed_loop_reports():
        try:
            for s in order:
                try:
                    return _restore_step(directory / str(s), like)
                except _Damaged as e:
                    damaged.append((s, str(e)))
                    if step is None:
                        log.warning("%s: damaged checkpoint (%s)%s", directory / str(s), e,
                                    "; trying the previous step" if s != order[-1] else "")
        finally:
            if damaged:  # let reads that orbax abandoned finish while their reports are dropped
                time.sleep(_SETTLE_S)
    if step is not None:
        raise CheckpointDamagedError(f"{directory / str(step)}: damaged checkpoint "
                                     f"({damaged[0][1]})")
    listing = "; ".join(f"step {s}: {reason}" for s, reason in damaged)
    raise CheckpointDamagedError(
        f"{directory}: no intact checkpoint ({listing}); remove the directory to start again from "
        "scratch")


def _restore_step(step_dir: Path, like: Any | None) -> tuple[Any, dict]:
    """One step: :class:`_Damaged` for anything that cannot be trusted (the caller tries an
    older step), :class:`CheckpointMismatchError` for another model's tree."""
    meta = _read("JSON item", lambda: _read_meta(step_dir))
    if not isinstance(meta, dict):
        raise _Damaged("JSON item is not an object")
    record = meta.pop(CHECKSUM_KEY, None)
    if record is not None and not isinstance(record, dict):
        raise _Damaged("checksum record is not an object")
    saved = _read("array metadata", lambda: _layout(_read_tree_metadata(step_dir)))
    if record is not None and _layout_digest(saved) != record.get("layout"):
        raise _Damaged("array metadata differs from the layout recorded at save")
    if like is not None:
        _check_like(saved, like, step_dir)
    raw = _read("arrays", lambda: _read_arrays(step_dir))
    if _layout(raw) != saved:
        raise _Damaged("restored arrays differ from their metadata")
    if record is None:
        log.debug("%s: saved without a checksum; restored unverified", step_dir)
    elif tree_digest(raw, meta) != record.get("sha256"):
        raise _Damaged("checksum mismatch: arrays or metadata changed since they were saved")
    if like is None:
        return raw, meta
    by_path = _flat(raw)
    leaves = [jnp.asarray(by_path[p], dtype=_dtype(ref)) for p, ref in _flat(like).items()]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves), meta


def _check_like(saved: dict, like: Any, step_dir: Path) -> None:
    want = {p: _shape(x) for p, x in _flat(like).items()}
    for p in sorted(saved.keys() | want.keys()):
        if p not in want:
            problem = f"{p} is in the checkpoint but not expected"
        elif p not in saved:
            problem = f"{p} is missing from the checkpoint"
        elif saved[p][0] != want[p]:
            problem = f"{p} has shape {saved[p][0]} in the checkpoint but {want[p]} expected"
        else:
            continue
        raise CheckpointMismatchError(
            f"{step_dir}: checkpoint of another model: {problem} (restore it with the model "
            "it was saved from, or use a fresh run directory)")


def _read(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as e:  # orbax, tensorstore and json raise many types for damaged files
        raise _Damaged(f"{what} unreadable: {type(e).__name__}: {_one_line(e)}") from e


def _one_line(e: Exception, n: int = 300) -> str:
    """The message on one line, without tensorstore's appended spec and source locations."""
    text = re.split(r"\s\[(?:tensorstore_spec|source locations)=", str(e))[0]
    text = " ".join(text.split()) or "no message"
    return text if len(text) <= n else f"{text[:n // 2]} ... {text[-n // 2:]}"


def _read_meta(step_dir: Path) -> Any:
    import orbax.checkpoint as ocp

    handler = ocp.JsonCheckpointHandler()
    try:
        return handler.restore(step_dir / _META, args=ocp.args.JsonRestore())
    finally:
        handler.close()


def _read_tree_metadata(step_dir: Path) -> Any:
    import orbax.checkpoint as ocp

    handler = ocp.StandardCheckpointHandler()
    try:
        metadata = handler.metadata(step_dir / _STATE)
    finally:
        handler.close()
    return getattr(metadata, "tree", metadata)


def _read_arrays(step_dir: Path) -> Any:
    import orbax.checkpoint as ocp

    handler = ocp.StandardCheckpointHandler()
    try:
        return handler.restore(step_dir / _STATE, args=ocp.args.StandardRestore(None))
    finally:
        handler.close()


@contextlib.contextmanager
def _drop_closed_loop_reports() -> Iterator[None]:
    """Silence the "Event loop is closed" reports of tensorstore reads still in flight after
    orbax gave up on a damaged step (printed as unraisable exceptions); all others pass."""
    previous = sys.unraisablehook

    def hook(unraisable):
        exc = unraisable.exc_value
        if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous
