"""Mapping a one-frame function over many frames, a chunk at a time (shared by the observables
and the estimators; private: the public names are ``stablejax.observables.map_frames`` and the
estimators' ``chunk_size`` arguments).

A *frames* argument is a pytree whose leaves share a leading frame axis (usually positions
[n_frames, n_atoms, 3], Angstrom).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from stablejax._types import PyTree


def effective_chunk(chunk_size: int | None, n_frames: int) -> int:
    return n_frames if chunk_size is None else min(int(chunk_size), n_frames)


def pad_frames(tree: PyTree, n_pad: int) -> PyTree:
    """Append ``n_pad`` copies of frame 0 along the frame axis."""
    if n_pad == 0:
        return tree
    return jax.tree.map(
        lambda x: jnp.concatenate([x, jnp.broadcast_to(x[:1], (n_pad,) + x.shape[1:])]), tree
    )


def chunked(tree: PyTree, chunk: int) -> tuple[PyTree, int]:
    """Pad the frame axis to a multiple of ``chunk`` and reshape to [n_chunks, chunk, ...]."""
    n = jax.tree.leaves(tree)[0].shape[0]
    n_chunks = math.ceil(n / chunk)
    padded = pad_frames(tree, n_chunks * chunk - n)
    return jax.tree.map(lambda x: x.reshape((n_chunks, chunk) + x.shape[1:]), padded), n_chunks


def map_frames(fn: Callable, frames: PyTree, chunk_size: int | None, mesh=None) -> PyTree:
    """``vmap(fn)`` over the frame axis, evaluated ``chunk_size`` frames at a time
    (``lax.map`` over chunks; None: all frames at once).

    Peak memory is that of ``chunk_size`` simultaneous evaluations, plus the outputs. The last
    chunk is padded with copies of frame 0, whose outputs are dropped. With a parallel ``mesh``
    (:mod:`stablejax.sharding`) the frames are split over its devices, ``chunk_size`` frames at
    a time on each.
    """
    from stablejax import sharding

    if sharding.is_parallel(mesh):
        return sharding.map_leading(lambda _, f: map_frames(fn, f, chunk_size), mesh, None, frames)
    n = jax.tree.leaves(frames)[0].shape[0]
    chunk = effective_chunk(chunk_size, n)
    vfn = jax.vmap(fn)
    if chunk == n:
        return vfn(frames)
    xs, n_chunks = chunked(frames, chunk)
    out = jax.lax.map(vfn, xs)
    return jax.tree.map(lambda y: y.reshape((n_chunks * chunk,) + y.shape[2:])[:n], out)
