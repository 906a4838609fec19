"""Energy and force errors of a potential on labelled QM frames (test MAE, docs/method.md §8)."""

from __future__ import annotations

from stablejax._types import Params
from stablejax.data.frames import Frames
from stablejax.models import Model
from stablejax.models.frames import label_errors


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
    return label_errors(model, frames, batch_size=batch_size, dtype=dtype)(params)
