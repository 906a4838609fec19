"""Helpers shared by the estimators: input checks, chunked maps over frames, validity, blocks.

Private module: the public API is re-exported in ``stablejax.estimator``.

A *frames* argument is a pytree whose leaves all share a leading frame axis (usually one array of
positions [n_frames, n_atoms, 3] in Angstrom). One frame is the same pytree with that axis
removed; ``energy_fn(params, frame)`` and ``observable_fn(frame)`` take one frame.
"""

from __future__ import annotations

import contextlib

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._frames import (  # noqa: F401  (C.map_frames)
    chunked,
    effective_chunk,
    map_frames,
    pad_frames,
)
from stablejax._types import Array, PyTree

SCALINGS = ("physical", "reference")


def mse_loss(average: Array, target: Array) -> Array:
    """Default observable loss: mean over the observable's entries of the squared error."""
    return jnp.mean((average - target) ** 2)


def as_frames(frames: PyTree, name: str = "frames") -> tuple[PyTree, int]:
    """Convert the leaves to arrays and check they share a leading frame axis.

    Returns:
      (frames with jnp leaves, n_frames).

    Raises:
      ValueError: no leaves, a scalar leaf, mismatched leading axes, or zero frames.
    """
    leaves, treedef = jax.tree.flatten(frames)
    if not leaves:
        raise ValueError(
            f"{name} is an empty pytree; expected e.g. positions [n_frames, n_atoms, 3]"
        )
    leaves = [jnp.asarray(x) for x in leaves]
    sizes = set()
    for x in leaves:
        if x.ndim == 0:
            raise ValueError(f"{name}: every leaf needs a leading frame axis, got a scalar leaf")
        sizes.add(int(x.shape[0]))
    if len(sizes) != 1:
        shapes = [tuple(x.shape) for x in leaves]
        raise ValueError(f"{name}: leaves must share the leading frame axis, got shapes {shapes}")
    n = sizes.pop()
    if n == 0:
        raise ValueError(f"{name}: zero frames")
    return jax.tree.unflatten(treedef, leaves), n


def one_frame_struct(frames: PyTree) -> PyTree:
    """Abstract shapes of one frame (for ``jax.eval_shape``)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), frames)


def check_per_frame(x: Any, n_frames: int, name: str, dtype) -> Array | None:
    """Check an optional per-frame vector ([n_frames]) and convert it."""
    if x is None:
        return None
    x = jnp.asarray(x, dtype=dtype) if dtype is not None else jnp.asarray(x)
    if x.shape != (n_frames,):
        raise ValueError(f"{name} must have shape [n_frames] = ({n_frames},), got {x.shape}")
    return x


def _is_positive_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 1


def check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and not _is_positive_int(chunk_size):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


MATMUL_PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


def check_matmul_precision(precision: str | None) -> None:
    if precision is not None and precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul_precision must be None or one of {MATMUL_PRECISIONS}, "
                         f"got {precision!r}")


def precision_scope(precision: str | None):
    """Context in which traced matrix products get ``precision`` (None: JAX's default)."""
    if precision is None:
        return contextlib.nullcontext()
    return jax.default_matmul_precision(precision)


def check_settings(scaling: str, block_size: int, chunk_size: int | None, kT: Any,
                   matmul_precision: str | None) -> None:
    """The settings every estimator takes: scaling, block and chunk size, kT (required with the
    physical scaling), matmul precision."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    check_block_size(block_size)
    check_chunk_size(chunk_size)
    check_kT(kT, required=scaling == "physical")
    check_matmul_precision(matmul_precision)


def check_block_size(block_size: int) -> None:
    if not _is_positive_int(block_size):
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")


def check_kT(kT: Any, required: bool) -> None:
    """``kT`` (eV) must be > 0 when given as a concrete number; traced values are not checked."""
    if kT is None:
        if required:
            raise ValueError("kT (eV) is required with scaling='physical' (beta = 1/kT)")
        return
    if isinstance(kT, jax.core.Tracer):
        return
    val = np.asarray(kT)
    if val.shape != ():
        raise ValueError(f"kT must be a scalar in eV, got shape {val.shape}")
    if not np.isfinite(val) or val <= 0:
        raise ValueError(f"kT must be a finite positive energy in eV, got {float(val)}")


def check_observable(
    observable_fn: Callable, frames: PyTree, target: Any
) -> tuple[tuple, Any, Array]:
    """Shape and dtype of one frame's observable, and ``target`` checked to broadcast to it."""
    out = jax.eval_shape(observable_fn, one_frame_struct(frames))
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(
            f"observable_fn must return one array per frame, got a pytree {jax.tree.structure(out)}"
        )
    obs_shape = tuple(out.shape)
    target = jnp.asarray(target)
    try:
        bshape = np.broadcast_shapes(target.shape, obs_shape)
    except ValueError:
        bshape = None
    if bshape != obs_shape:
        raise ValueError(
            f"target of shape {target.shape} does not broadcast to the observable shape {obs_shape}"
        )
    return obs_shape, out.dtype, target


def check_energy(energy_fn: Callable, params: PyTree, frames: PyTree):
    """Check that ``energy_fn`` returns a scalar; returns its dtype."""
    out = jax.eval_shape(energy_fn, params, one_frame_struct(frames))
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", out)
        raise ValueError(f"energy_fn(params, frame) must return a scalar (eV), got {shape}")
    return out.dtype


def check_loss(loss_fn: Callable, obs_shape: tuple, dtype, target: Array) -> None:
    avg = jax.ShapeDtypeStruct(obs_shape, dtype)
    out = jax.eval_shape(loss_fn, avg, target)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", out)
        raise ValueError(f"loss_fn(average, target) must return a scalar, got {shape}")


def frames_finite(frames: PyTree) -> Array:
    """[n_frames] bool: True where every float entry of the frame is finite."""
    n = jax.tree.leaves(frames)[0].shape[0]
    ok = jnp.ones((n,), dtype=bool)
    for x in jax.tree.leaves(frames):
        if jnp.issubdtype(x.dtype, jnp.inexact):
            ok = ok & jnp.all(jnp.isfinite(x.reshape(n, -1)), axis=1)
    return ok


def replace_invalid(frames: PyTree, valid: Array) -> PyTree:
    """Replace every invalid frame by the first valid one (so nothing non-finite is evaluated).

    With no valid frame at all the frames are returned as they are; callers skip the evaluation.
    """
    first = jnp.argmax(valid)
    n = valid.shape[0]

    def fix(x):
        keep = valid.reshape((n,) + (1,) * (x.ndim - 1))
        return jnp.where(keep, x, x[first][None])

    return jax.tree.map(fix, frames)


def weighted_energy_grad(
    energy_fn: Callable, params: PyTree, frames: PyTree, coef: Array, chunk_size: int | None,
    mesh=None,
) -> PyTree:
    """``grad_params sum_i coef_i * energy_fn(params, frame_i)``, ``chunk_size`` frames at a time.

    ``coef`` is [n_frames] for a scalar ``energy_fn``, or [n_frames, *out] for one with output
    shape ``out`` (e.g. per-atom energies with per-atom coefficients: the localized estimator).

    One reverse pass per chunk, accumulated in a ``lax.scan`` carry: memory is that of one
    chunk's energy VJP plus one parameter-shaped accumulator, independent of the number of
    frames. Per-frame parameter gradients are never formed. All frames must be finite.

    A chunk in which a frame with a non-zero coefficient has a non-finite energy contributes
    nothing (its gradient is replaced by zeros with ``where``, so NaN cannot leak); callers that
    checked energies beforehand never hit this.

    With a parallel ``mesh`` (:mod:`stablejax.sharding`) the frames are split over its devices,
    each runs its own chunks, and the parameter cotangents are added across devices (``psum``).
    """
    n = coef.shape[0]
    from stablejax import sharding

    if sharding.is_parallel(mesh):
        n_pad = sharding.padded_size(n, mesh) - n  # padded frames get coefficient 0
        xs = pad_frames(frames, n_pad)
        cs = jnp.concatenate([coef, jnp.zeros((n_pad,) + coef.shape[1:], coef.dtype)])
        return sharding.sum_leading(
            lambda p, xc: weighted_energy_grad(energy_fn, p, *xc, chunk_size), mesh, params,
            (xs, cs))
    chunk = effective_chunk(chunk_size, n)
    venergy = jax.vmap(energy_fn, in_axes=(None, 0))

    def chunk_grad(p, xs, cs):
        def weighted(q):
            e = venergy(q, xs)
            return jnp.sum(cs.astype(e.dtype) * e), e

        g, e = jax.grad(weighted, has_aux=True)(p)
        ok = jnp.all(jnp.isfinite(e) | (cs == 0))
        return jax.tree.map(lambda x: jnp.where(ok, x, jnp.zeros_like(x)), g)

    if chunk == n:
        return chunk_grad(params, frames, coef)
    xs, n_chunks = chunked(frames, chunk)
    # padded frames are copies of frame 0 and get coefficient 0
    pad = jnp.zeros((n_chunks * chunk - n,) + coef.shape[1:], coef.dtype)
    cs = jnp.concatenate([coef, pad]).reshape((n_chunks, chunk) + coef.shape[1:])

    def body(acc, inp):
        g = chunk_grad(params, *inp)
        return jax.tree.map(jnp.add, acc, g), None

    zero = jax.tree.map(jnp.zeros_like, params)
    acc, _ = jax.lax.scan(body, zero, (xs, cs))
    return acc


def permutation(key: Array | None, n_frames: int) -> Array:
    """Random order of the frames (``key``) or the given order (``key=None``)."""
    if key is None:
        return jnp.arange(n_frames)
    return jax.random.permutation(key, n_frames)


def assign_blocks(perm: Array, valid: Array, block_size: int) -> Array:
    """Block index of every frame: the valid frames, in the order ``perm``, cut into blocks.

    Frame ``perm[k]`` is the k-th frame of the shuffled order. Valid frames are numbered in that
    order; valid frame number r goes to block r // block_size. Invalid frames get block
    ``n_max_blocks = ceil(n_frames / block_size)`` (a dummy block, dropped by callers).
    This equals the reference (drop invalid frames, shuffle, split) in distribution.

    Returns:
      [n_frames] int32 block ids.
    """
    n = valid.shape[0]
    n_max = math.ceil(n / block_size)
    valid_in_order = valid[perm]
    rank = jnp.cumsum(valid_in_order.astype(jnp.int32)) - 1
    block_in_order = jnp.where(valid_in_order, rank // block_size, n_max).astype(jnp.int32)
    return jnp.zeros((n,), jnp.int32).at[perm].set(block_in_order)


def normalised_log_weights(valid: Array, log_weights: Array | None, dtype) -> tuple[Array, Array]:
    """Unnormalised per-frame weights exp(lw - max lw), 0 for invalid frames, and their sum."""
    if log_weights is None:
        wt = valid.astype(dtype)
    else:
        lw = jnp.where(valid, log_weights.astype(dtype), -jnp.inf)
        m = jnp.max(lw)
        m = jnp.where(jnp.isfinite(m), m, 0.0)
        wt = jnp.where(valid, jnp.exp(jnp.where(valid, lw - m, 0.0)), 0.0)
    return wt, jnp.sum(wt)


def entropy_ess(w: Array) -> Array:
    """exp(-sum w log w) of normalised weights (0 log 0 = 0); N for N uniform weights."""
    pos = w > 0
    wl = jnp.where(pos, w * jnp.log(jnp.where(pos, w, 1.0)), 0.0)
    return jnp.where(jnp.any(pos), jnp.exp(-jnp.sum(wl)), 0.0)


def kish_ess(w: Array) -> Array:
    """(sum w)^2 / sum w^2 (Kish); N for N uniform weights."""
    s2 = jnp.sum(w**2)
    return jnp.where(s2 > 0, jnp.sum(w) ** 2 / jnp.where(s2 > 0, s2, 1.0), 0.0)
