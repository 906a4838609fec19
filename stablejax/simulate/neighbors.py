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

logger = logging.getLogger(__name__)

_OVERFLOW_BITS = int(
    partition.PartitionErrorCode.NEIGHBOR_LIST_OVERFLOW
    | partition.PartitionErrorCode.CELL_LIST_OVERFLOW
)


def did_overflow(neighbor: Any) -> Array:
    """Overflow flag(s) of a (possibly batched) JAX-MD neighbour list: bool [] or [n_replicas]."""
    return (neighbor.error.code & jnp.uint8(_OVERFLOW_BITS)) != 0


def allocate_batched(
    neighbor_fn: partition.NeighborListFns,
    positions: Array,
    *,
    extra_positions: Array | None = None,
    extra_capacity: int = 0,
) -> Any:
    """Allocate one neighbour list per replica, all with a common capacity.

    Args:
      neighbor_fn: a JAX-MD ``NeighborListFns`` (``partition.neighbor_list(...)``).
      positions: [n_replicas, n_atoms, 3] positions the lists are built for.
      extra_positions: optional [m, n_atoms, 3] configurations used only to size the capacity
        (e.g. the end of a chunk that overflowed).
      extra_capacity: extra slots per atom (dense format) added on top of JAX-MD's estimate.

    Returns:
      A JAX-MD ``NeighborList`` whose array leaves have a leading [n_replicas] axis.

    Raises:
      ValueError: if ``positions`` is not [n_replicas, n_atoms, 3].
    """
    R = np.asarray(positions)
    if R.ndim != 3 or R.shape[-1] != 3:
        raise ValueError(f"positions must have shape [n_replicas, n_atoms, 3], got {R.shape}")
    lists = [neighbor_fn.allocate(jnp.asarray(r), extra_capacity=extra_capacity) for r in R]
    sizing = list(lists)
    if extra_positions is not None:
        E = np.asarray(extra_positions).reshape((-1,) + R.shape[1:])
        sizing += [neighbor_fn.allocate(jnp.asarray(r), extra_capacity=extra_capacity) for r in E]
    max_occupancy = max(nl.max_occupancy for nl in sizing)
    caps = [nl.cell_list_capacity for nl in sizing if nl.cell_list_capacity is not None]
    cell_capacity = max(caps) if caps else None
    n_atoms = R.shape[1]
    template = lists[0]
    padded = []
    for nl in lists:
        pad = max_occupancy - nl.idx.shape[-1]
        idx = jnp.pad(nl.idx, [(0, 0), (0, pad)], constant_values=n_atoms) if pad > 0 else nl.idx
        padded.append(
            nl.set(
                idx=idx,
                max_occupancy=max_occupancy,
                cell_list_capacity=cell_capacity,
                cell_list_fn=template.cell_list_fn,
                cell_size=template.cell_size,
            )
        )
    logger.debug(
        "allocated %d neighbour lists, capacity %d, cell capacity %s",
        len(padded),
        max_occupancy,
        cell_capacity,
    )
    return jax.tree.map(lambda *xs: jnp.stack(xs), *padded)
