"""Energies of stored frames: what a model needs besides the positions.

A free molecule's energy needs only ``R``. A periodic model takes ``neighbor=`` (a JAX-MD
neighbour list), which cannot be stored per frame as it is: its capacity and format are static
and its allocation is not jittable. Stored frames (QM data, frames recorded by the simulator)
therefore carry only the list's index array, ``neighbor_idx`` ([n_atoms, k] dense or [2, k]
sparse, padded with ``n_atoms``), and :func:`frame_energy_fn` rebuilds the ``NeighborList`` from a
template with the model's static settings. Every stage (pre-training batches, QM metrics, the
StABlE learning step and estimators) evaluates stored frames through it, so periodic models with
neighbour lists work everywhere free molecules do::

    energy = frame_energy_fn(model, R0)          # R0: one example frame [n_atoms, 3]
    idx = frames_neighbor_idx(model, R_frames)   # None for a free molecule
    E = energy(params, R_frames[0], neighbor_idx=None if idx is None else idx[0])

A list held by a frame lists every pair within the cutoff plus the skin, so it is exact for
that frame (the simulator records the list it used at that step; data frames get a fresh one).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Array, EnergyFn, Params
from stablejax.data.frames import Frames
from stablejax.models.core import Model
from stablejax.models.neighbors import allocate_batched


def frames_neighbor_idx(model: Model, positions: Any) -> np.ndarray | None:
    """One neighbour-list index array per frame, all with a common capacity.

    Args:
      model: the model (its ``neighbor_fn``; None for free molecules).
      positions: [n_frames, n_atoms, 3] Angstrom.

    Returns:
      [n_frames, ...] int32 (``neighbor.idx`` of each frame, padded with ``n_atoms``), or None
      when the model needs no neighbour list.
    """
    if model.neighbor_fn is None:
        return None
    return np.asarray(allocate_batched(model.neighbor_fn, np.asarray(positions)).idx)


def frame_energy_fn(model: Model, example_positions: Any, *, per_atom: bool = False
                    ) -> Callable[..., Array]:
    """``energy(params, R, neighbor_idx=None) -> eV`` of a stored frame (``per_atom``: the
    per-atom energies [n_atoms], eV, from ``model.per_atom_energy_fn``).

    For a free molecule this is ``model.energy_fn`` (``neighbor_idx`` must be None). For a
    periodic model, ``neighbor_idx`` is required and becomes ``neighbor=`` through a template
    list allocated once from ``example_positions`` ([n_atoms, 3]): only the static settings of
    the template are used (format, cutoff), never its pairs.
    """
    fn = model.per_atom_energy_fn if per_atom else model.energy_fn
    if fn is None:
        raise ValueError("this model has no per-atom energies (per_atom_energy_fn is None)")
    if model.neighbor_fn is None:
        def energy(params: Params, R: Array, neighbor_idx: Array | None = None) -> Array:
            if neighbor_idx is not None:
                raise ValueError("this model is not periodic: frames carry no neighbour list")
            return fn(params, R)

        return energy
    template = model.neighbor_fn.allocate(np.asarray(example_positions))

    def energy(params: Params, R: Array, neighbor_idx: Array | None = None) -> Array:
        if neighbor_idx is None:
            raise ValueError("this model is periodic: a stored frame needs its neighbor_idx "
                             "(see stablejax.models.frames_neighbor_idx)")
        return fn(params, R, neighbor=template.set(idx=neighbor_idx))

    return energy


def pad_neighbor_idx(idx: Array, capacity: int, n_atoms: int) -> Array:
    """Pad the last axis of neighbour-list index arrays to ``capacity`` with ``n_atoms``
    (JAX-MD's empty slot), so lists of different capacity stack."""
    pad = capacity - idx.shape[-1]
    if pad < 0:
        raise ValueError(f"capacity {capacity} is smaller than the list's {idx.shape[-1]}")
    if pad == 0:
        return idx
    widths = [(0, 0)] * (idx.ndim - 1) + [(0, pad)]
    return jnp.pad(idx, widths, constant_values=n_atoms)


class Batch(NamedTuple):
    """A padded batch of labelled frames (``weight`` 0 marks padding)."""

    positions: Array  # [B, n_atoms, 3] Angstrom
    energies: Array  # [B] eV
    forces: Array  # [B, n_atoms, 3] eV/Angstrom
    weight: Array  # [B] 1 for real frames, 0 for padding
    neighbor_idx: Array | None = None  # [B, ...] int32 neighbour lists (periodic models)


def predict(energy_fn: EnergyFn, params: Params, R: Array,
            neighbor_idx: Array | None = None) -> tuple[Array, Array]:
    """Energies [B] (eV) and forces [B, n_atoms, 3] (eV/Angstrom) of a batch of frames.

    With ``neighbor_idx`` [B, ...] (periodic models), ``energy_fn`` is a frame energy
    (``stablejax.models.frame_energy_fn``) called with ``neighbor_idx=`` per frame.
    """
    if neighbor_idx is None:
        e, g = jax.vmap(jax.value_and_grad(energy_fn, argnums=1), in_axes=(None, 0))(params, R)
        return e, -g
    one = lambda p, r, idx: energy_fn(p, r, neighbor_idx=idx)  # noqa: E731
    e, g = jax.vmap(jax.value_and_grad(one, argnums=1), in_axes=(None, 0, 0))(params, R,
                                                                             neighbor_idx)
    return e, -g


#: Pairs (atoms x neighbour-list slots) per evaluation batch of periodic frames: forces of one
#: 64-molecule water frame (192 atoms x ~106 slots, SchNet 64 x 6) take ~260 MB, so an
#: evaluation batch of 128 such frames would need ~33 GB.
EVAL_PAIR_BUDGET = 100_000


def eval_batch_size(requested: int, neighbor_idx: np.ndarray | None) -> int:
    """Frames per evaluation batch: ``requested``, capped for neighbour-list frames so that a
    batch holds at most :data:`EVAL_PAIR_BUDGET` pairs (free molecules: unchanged).

    Args:
      requested: the configured batch size.
      neighbor_idx: [n_frames, n_atoms, capacity] (dense) or [n_frames, 2, n_pairs] (sparse)
        neighbour lists of the frames, or None.
    """
    if neighbor_idx is None:
        return int(requested)
    pairs = int(np.prod(np.shape(neighbor_idx)[1:]))
    return max(1, min(int(requested), EVAL_PAIR_BUDGET // max(pairs, 1)))


def make_batches(frames: Frames, batch_size: int, order: np.ndarray | None = None,
                 dtype=jnp.float32, neighbor_idx: np.ndarray | None = None) -> list[Batch]:
    """Split frames (in ``order``) into batches of ``batch_size``, padding the last one.

    ``neighbor_idx`` [n_frames, ...]: the frames' neighbour lists (periodic models, from
    ``stablejax.models.frames_neighbor_idx``), batched alongside.
    """
    idx = np.arange(frames.n_frames) if order is None else np.asarray(order)
    n_batches = -(-len(idx) // batch_size)
    pad = n_batches * batch_size - len(idx)
    w = np.concatenate([np.ones(len(idx)), np.zeros(pad)])
    idx = np.concatenate([idx, np.full(pad, idx[0])])
    out = []
    for b in range(n_batches):
        sl = idx[b * batch_size:(b + 1) * batch_size]
        out.append(Batch(jnp.asarray(frames.positions[sl], dtype),
                         jnp.asarray(frames.energies[sl], dtype),
                         jnp.asarray(frames.forces[sl], dtype),
                         jnp.asarray(w[b * batch_size:(b + 1) * batch_size], dtype),
                         None if neighbor_idx is None else jnp.asarray(neighbor_idx[sl])))
    return out


def stack_batches(batches: list[Batch]) -> Batch:
    """Stack batches on a new leading axis (for ``lax.scan`` over batches)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *batches)


def label_errors(model: Model, frames: Frames, *, batch_size: int = 128,
                 dtype: str = "float32") -> Callable[[Params], dict]:
    """``errors(params) -> {"energy_mae_mev", "force_mae_mev_per_angstrom", "n_frames"}`` on
    labelled ``frames`` (force MAE per component): the batches are built and the pass is
    compiled once, so the function can be called every epoch.

    Raises:
      ValueError: frames without energy and force labels.
    """
    if not frames.has_labels:
        raise ValueError("energy/force errors need frames with energy and force labels")
    nbr = frames_neighbor_idx(model, frames.positions)
    batches = stack_batches(make_batches(frames, eval_batch_size(batch_size, nbr),
                                         dtype=jnp.dtype(dtype), neighbor_idx=nbr))
    energy_fn = frame_energy_fn(model, frames.positions[0])

    @jax.jit
    def sums(params, batches):
        def one(acc, b):
            e, f = predict(energy_fn, params, b.positions, b.neighbor_idx)
            w = b.weight
            acc = acc + jnp.stack([jnp.sum(w * jnp.abs(e - b.energies)),
                                   jnp.sum(w[:, None, None] * jnp.abs(f - b.forces))])
            return acc, None

        return jax.lax.scan(one, jnp.zeros(2, batches.energies.dtype), batches)[0]

    n = frames.n_frames

    def errors(params: Params) -> dict:
        s = np.asarray(sums(params, batches))
        return {"energy_mae_mev": 1000 * float(s[0]) / n,
                "force_mae_mev_per_angstrom": 1000 * float(s[1]) / (n * frames.n_atoms * 3),
                "n_frames": n}

    return errors
