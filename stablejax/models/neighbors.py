"""Edges (directed atom pairs within the cutoff) for free molecules and periodic boxes.

Two layouts, chosen by the caller and visible from ``Edges.senders.ndim``:

* dense ``[n_atoms, n_slots]``: row ``i`` lists the neighbours ``j`` of atom ``i``. Free molecules
  use all ``n_atoms - 1`` other atoms (a static index table, cheap for 20-50 atoms and friendly to
  ``vmap`` over replicas); a JAX-MD ``Dense`` neighbour list gives ``[n_atoms, max_neighbors]``.
* sparse ``[n_edges]``: a JAX-MD ``Sparse`` neighbour list, ``idx[0]`` = receiver (centre),
  ``idx[1]`` = sender (neighbour).

Padding entries (index ``n_atoms`` in JAX-MD lists) and pairs beyond the cutoff are masked. Padded
entries get a dummy displacement of length ``2 * cutoff`` so no ``0/0`` appears in gradients.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import partition, space

from stablejax._types import Array

logger = logging.getLogger(__name__)

_FORMATS = {
    "dense": partition.NeighborListFormat.Dense,
    "sparse": partition.NeighborListFormat.Sparse,
}


class Edges(NamedTuple):
    """Directed edges ``j -> i`` of one configuration (see the module docstring for layouts).

    Attributes:
      senders: [n_atoms, n_slots] or [n_edges] int, neighbour ``j`` (clipped to a valid index).
      receivers: same shape, int, centre ``i``.
      vectors: [..., 3] float, ``r_j - r_i`` (minimum image), Angstrom; dummy where masked.
      mask: [...] bool, True for real pairs with ``|r_j - r_i| < cutoff``.
    """

    senders: Array
    receivers: Array
    vectors: Array
    mask: Array


def aggregate(messages: Array, edges: Edges, n_atoms: int) -> Array:
    """Sum edge messages onto their receivers.

    Args:
      messages: [*edge_shape, F] edge messages.
      edges: the edges the messages live on.
      n_atoms: number of atoms.

    Returns:
      [n_atoms, F] sums over the (unmasked) edges of each receiver.
    """
    m = jnp.where(edges.mask[..., None], messages, 0)
    if edges.senders.ndim == 2:  # dense layout: row i holds the neighbours of atom i
        return jnp.sum(m, axis=1)
    return jax.ops.segment_sum(m, edges.receivers, num_segments=n_atoms)


def all_pairs_index(n_atoms: int) -> np.ndarray:
    """[n_atoms, n_atoms - 1] int32 table: row ``i`` lists every ``j != i`` in increasing order."""
    j = np.tile(np.arange(n_atoms - 1, dtype=np.int32), (n_atoms, 1))
    return j + (j >= np.arange(n_atoms, dtype=np.int32)[:, None])


def _finish(R: Array, senders: Array, receivers: Array, valid: Array, vectors: Array,
            cutoff: float) -> Edges:
    fill = jnp.zeros(3, R.dtype).at[0].set(2.0 * cutoff)
    vectors = jnp.where(valid[..., None], vectors, fill)
    dist2 = jnp.sum(vectors**2, axis=-1)
    mask = valid & (dist2 < cutoff**2)
    return Edges(senders, receivers, vectors, mask)


def _pair_vectors(R: Array, senders: Array, receivers: Array, displacement_fn, kwargs) -> Array:
    """``displacement_fn(R[j], R[i])`` over any index shape; plain difference when fn is None."""
    if displacement_fn is None:
        return R[senders] - R[receivers]
    disp = jax.vmap(lambda a, b: displacement_fn(a, b, **kwargs))
    flat = disp(R[senders].reshape(-1, 3), R[receivers].reshape(-1, 3))
    return flat.reshape(senders.shape + (3,))


def all_pairs_edges(R: Array, cutoff: float, displacement_fn=None, **kwargs: Any) -> Edges:
    """Dense edges over all ordered pairs ``i != j`` (free molecules; small periodic tests).

    Args:
      R: [n_atoms, 3] positions, Angstrom.
      cutoff: cutoff, Angstrom; pairs at or beyond it are masked.
      displacement_fn: JAX-MD displacement ``d(Ra, Rb) = Ra - Rb`` (e.g. minimum image); ``None``
        uses the plain difference (free space, fastest).
      **kwargs: forwarded to ``displacement_fn`` (e.g. ``box=``).

    Returns:
      Dense :class:`Edges` of shape [n_atoms, n_atoms - 1].
    """
    n = R.shape[0]
    senders = jnp.asarray(all_pairs_index(n))
    receivers = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], senders.shape)
    vectors = _pair_vectors(R, senders, receivers, displacement_fn, kwargs)
    return _finish(R, senders, receivers, jnp.ones(senders.shape, bool), vectors, cutoff)


def neighbor_list_edges(R: Array, neighbor: partition.NeighborList, cutoff: float,
                        displacement_fn, **kwargs: Any) -> Edges:
    """Edges from a JAX-MD neighbour list (``Dense`` or ``Sparse`` format).

    Args:
      R: [n_atoms, 3] positions, Angstrom.
      neighbor: a JAX-MD ``NeighborList`` built with ``mask_self=True``; ``OrderedSparse`` lists
        (each pair once) are rejected since message passing needs both directions.
      cutoff: model cutoff, Angstrom (the list may hold pairs up to cutoff + dr_threshold).
      displacement_fn: JAX-MD displacement function of the space.
      **kwargs: forwarded to ``displacement_fn``.

    Raises:
      ValueError: for an ``OrderedSparse`` list or an object that is not a neighbour list.
    """
    if not isinstance(neighbor, partition.NeighborList):
        raise ValueError(f"neighbor must be a jax_md.partition.NeighborList, got {type(neighbor)}")
    n = R.shape[0]
    fmt = neighbor.format
    if fmt is partition.NeighborListFormat.OrderedSparse:
        raise ValueError("neighbor lists in OrderedSparse format store each pair once; message "
                         "passing needs both directions: use format 'dense' or 'sparse'")
    idx = neighbor.idx
    if fmt is partition.NeighborListFormat.Dense:
        if idx.ndim != 2 or idx.shape[0] != n:
            raise ValueError(f"Dense neighbor list idx has shape {idx.shape}, expected [{n}, k] "
                             f"for {n} atoms")
        valid = idx < n
        senders = jnp.where(valid, idx, 0)
        receivers = jnp.broadcast_to(jnp.arange(n, dtype=idx.dtype)[:, None], idx.shape)
    else:
        if idx.ndim != 2 or idx.shape[0] != 2:
            raise ValueError(f"Sparse neighbor list idx has shape {idx.shape}, expected [2, k]")
        valid = (idx[0] < n) & (idx[1] < n) & (idx[0] != idx[1])
        receivers = jnp.where(valid, idx[0], 0)
        senders = jnp.where(valid, idx[1], 0)
    vectors = _pair_vectors(R, senders, receivers, displacement_fn, kwargs)
    return _finish(R, senders, receivers, valid, vectors, cutoff)


def as_box(box: Any, cutoff: float) -> np.ndarray:
    """Validate a periodic box and return it in JAX-MD's convention.

    Args:
      box: side length (cube), [3] side lengths (orthorhombic) or [3, 3] matrix whose COLUMNS are
        the lattice vectors (JAX-MD convention: ``box = frames.cell.T`` for row-vector cells),
        Angstrom. A diagonal matrix is reduced to its [3] diagonal (lets JAX-MD use cell lists).
      cutoff: the interaction cutoff, Angstrom; every perpendicular box width must be at least
        twice the cutoff (minimum image convention).

    Returns:
      float64 numpy box of shape [], [3] or [3, 3], Angstrom.

    Raises:
      ValueError: on a bad shape, non-finite values, a degenerate cell or a box too small.
    """
    b = np.asarray(box, dtype=np.float64)
    if b.shape not in ((), (3,), (3, 3)):
        raise ValueError(f"box must be a scalar, [3] or [3, 3] (Angstrom), got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"box has non-finite entries: {b.tolist()}")
    if b.ndim == 2 and np.allclose(b, np.diag(np.diag(b))):
        b = np.diag(b).copy()
    if b.ndim < 2:
        widths = np.broadcast_to(b, (3,))
    else:
        vol = abs(np.linalg.det(b))
        if vol <= 0:
            raise ValueError(f"box matrix is singular: {b.tolist()}")
        cols = b.T
        widths = np.array([vol / np.linalg.norm(np.cross(cols[(k + 1) % 3], cols[(k + 2) % 3]))
                           for k in range(3)])
    if np.any(widths < 2.0 * cutoff):
        raise ValueError(f"box widths {np.round(widths, 4).tolist()} Angstrom are smaller than "
                         f"2 x cutoff = {2 * cutoff} Angstrom; the minimum image convention would "
                         "miss neighbours (use a larger box or a smaller cutoff)")
    return b


def make_space(box: Any, cutoff: float):
    """JAX-MD ``(displacement_fn, shift_fn, box)``; free space when ``box`` is None.

    Periodic spaces use ``space.periodic_general(box, fractional_coordinates=False)``: positions
    stay in Angstrom, the protocol's convention.
    """
    if box is None:
        displacement_fn, shift_fn = space.free()
        return displacement_fn, shift_fn, None
    b = as_box(box, cutoff)
    displacement_fn, shift_fn = space.periodic_general(jnp.asarray(b), fractional_coordinates=False)
    return displacement_fn, shift_fn, b


def neighbor_format(fmt: Any) -> partition.NeighborListFormat:
    """Parse ``'dense'``/``'sparse'`` (or a ``NeighborListFormat``); OrderedSparse is rejected."""
    if isinstance(fmt, partition.NeighborListFormat):
        if fmt is partition.NeighborListFormat.OrderedSparse:
            raise ValueError("neighbor_format OrderedSparse is not supported (message passing "
                             "needs both directions): use 'dense' or 'sparse'")
        return fmt
    key = str(fmt).lower()
    if key not in _FORMATS:
        raise ValueError(f"neighbor_format must be one of {sorted(_FORMATS)}, got {fmt!r}")
    return _FORMATS[key]


def make_neighbor_fn(displacement_fn, box: np.ndarray, cutoff: float, *, fmt: Any = "dense",
                     dr_threshold_angstrom: float = 0.5,
                     capacity_multiplier: float = 1.25) -> partition.NeighborListFns:
    """A JAX-MD neighbour list for a periodic model (positions in Angstrom, not fractional).

    The list holds pairs within ``cutoff + dr_threshold_angstrom`` and is rebuilt on ``update``
    only when an atom moved more than half the threshold. ``nbrs.did_buffer_overflow`` must be
    checked by the caller after each jitted chunk; on overflow, reallocate with
    ``neighbor_fn.allocate(R)`` and redo the chunk.
    """
    if not dr_threshold_angstrom >= 0:
        raise ValueError(f"dr_threshold_angstrom must be >= 0, got {dr_threshold_angstrom}")
    if not capacity_multiplier >= 1:
        raise ValueError(f"capacity_multiplier must be >= 1, got {capacity_multiplier}")
    return partition.neighbor_list(
        displacement_fn, jnp.asarray(box), cutoff, dr_threshold=dr_threshold_angstrom,
        capacity_multiplier=capacity_multiplier, fractional_coordinates=False,
        format=neighbor_format(fmt))


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
