"""Energy and force errors of a potential on labelled QM frames (test MAE, docs/method.md §8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Params
from stablejax.data.frames import Frames
from stablejax.models import Model
from stablejax.models.frames import (
    eval_batch_size,
    frame_energy_fn,
    frames_neighbor_idx,
    make_batches,
    predict,
    stack_batches,
)


def evaluate_qm(model: Model, params: Params, frames: Frames, *, batch_size: int = 128,
                dtype: str = "float32") -> dict:
    """Energy MAE (meV) and force MAE (meV/Angstrom, per component) of ``params`` on ``frames``.

    Args:
      model: the potential (energy in eV).
      params: its parameters.
      frames: labelled frames (energies eV, forces eV/Angstrom).
      batch_size: frames per compiled batch (capped for periodic frames, see
        :func:`stablejax.models.frames.eval_batch_size`).
      dtype: floating dtype of the positions and labels.

    Returns:
      ``{"energy_mae_mev", "force_mae_mev_per_angstrom", "n_frames"}``.

    Raises:
      ValueError: frames without energy and force labels.
    """
    if not frames.has_labels:
        raise ValueError("evaluate_qm needs frames with energy and force labels")
    nbr = frames_neighbor_idx(model, frames.positions)
    batches = stack_batches(make_batches(frames, eval_batch_size(batch_size, nbr),
                                         dtype=jnp.dtype(dtype), neighbor_idx=nbr))
    energy_fn = frame_energy_fn(model, frames.positions[0])

    @jax.jit
    def run(params, batches):
        def one(acc, b):
            e, f = predict(energy_fn, params, b.positions, b.neighbor_idx)
            w = b.weight
            acc = acc + jnp.stack([jnp.sum(w * jnp.abs(e - b.energies)),
                                   jnp.sum(w[:, None, None] * jnp.abs(f - b.forces))])
            return acc, None

        return jax.lax.scan(one, jnp.zeros(2, batches.energies.dtype), batches)[0]

    sums = np.asarray(run(params, batches))
    n = frames.n_frames
    return {"energy_mae_mev": 1000 * sums[0] / n,
            "force_mae_mev_per_angstrom": 1000 * sums[1] / (n * frames.n_atoms * 3),
            "n_frames": n}
