"""Neighbour lists for a batch of replicas (periodic boxes).

JAX-MD allocates a neighbour list from concrete positions (not jittable) and updates it inside
``jit`` at a fixed capacity, setting an overflow bit when the capacity is too small. For replicas
we need one list per replica with the *same* static capacity, so that the lists stack into one
pytree with a leading replica axis and ``jax.vmap(neighbor_fn.update)`` applies. The capacity is
the largest one any replica (or any extra configuration given for sizing) needs.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import partition

from stablejax._types import Array
from stablejax.models.neighbors import allocate_batched  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

_OVERFLOW_BITS = int(
    partition.PartitionErrorCode.NEIGHBOR_LIST_OVERFLOW
    | partition.PartitionErrorCode.CELL_LIST_OVERFLOW
)


def did_overflow(neighbor: Any) -> Array:
    """Overflow flag(s) of a (possibly batched) JAX-MD neighbour list: bool [] or [n_replicas]."""
    return (neighbor.error.code & jnp.uint8(_OVERFLOW_BITS)) != 0


def _rebuild_predicate(neighbor_fn: partition.NeighborListFns):
    """JAX-MD's own "must rebuild" test of ``neighbor_fn.update``, or None if not found.

    ``partition.neighbor_list(...).update`` rebuilds a list when some atom moved more than
    dr_threshold / 2 from the list's reference position (``lax.cond`` on that test). Under
    ``vmap`` over replicas the ``cond`` turns into a ``select`` that computes the rebuild every
    step. To keep the rebuild rare we evaluate the same test (jax-md's ``metric_sq`` and
    ``threshold_sq``, read from the closure of the pinned jax-md 0.2.29 update function) for the
    whole batch outside the ``vmap``. Returns ``None`` (caller falls back to the plain vmapped
    update, correct but slower) when the closure does not have that shape.
    """
    try:
        update = neighbor_fn.update
        outer = dict(zip(update.__code__.co_freevars, update.__closure__))
        inner_fn = outer["neighbor_list_fn"].cell_contents
        inner = dict(zip(inner_fn.__code__.co_freevars, inner_fn.__closure__))
        if inner["_always_rebuild"].cell_contents:
            return None
        metric_sq = inner["metric_sq"].cell_contents
        threshold_sq = inner["threshold_sq"].cell_contents
    except (AttributeError, KeyError, TypeError, ValueError):
        return None

    def needs_rebuild(positions: Array, neighbors: Any) -> Array:
        d = jax.vmap(jax.vmap(metric_sq))(positions, neighbors.reference_position)
        return jnp.any(d > threshold_sq)

    return needs_rebuild


def make_batched_update(neighbor_fn: partition.NeighborListFns):
    """``update(positions [n_rep, n_atoms, 3], lists) -> lists`` for a batch of replicas.

    Equal to ``jax.vmap(neighbor_fn.update)``, without its cost: under ``vmap`` JAX-MD's
    rebuild ``cond`` becomes a ``select`` that rebuilds every replica's list every step. Here
    the replicas are visited one after another (``lax.map``), so each keeps JAX-MD's own
    ``cond`` and rebuilds only when it must, and that loop runs only in steps where at least
    one replica needs a rebuild (the same test evaluated for the whole batch).
    """
    needs_rebuild = _rebuild_predicate(neighbor_fn)
    if needs_rebuild is None:
        logger.warning("could not read the rebuild test of this neighbor_fn; the neighbour "
                       "lists of all replicas are rebuilt every step (correct, slower)")
        return jax.vmap(neighbor_fn.update)

    def one_by_one(positions: Array, neighbors: Any) -> Any:
        return jax.lax.map(lambda pn: neighbor_fn.update(*pn), (positions, neighbors))

    def update(positions: Array, neighbors: Any) -> Any:
        return jax.lax.cond(needs_rebuild(positions, neighbors),
                            lambda: one_by_one(positions, neighbors), lambda: neighbors)

    return update
