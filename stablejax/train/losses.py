"""Energy + force losses for fitting a potential to quantum labels (pre-training and the QM term
of StABlE's combined gradient)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Array, EnergyFn, Params
from stablejax.config import check_types
from stablejax.data.frames import Frames
from stablejax.models.frames import Batch, make_batches, predict, stack_batches  # noqa: F401


FORCE_LOSSES = ("mse", "l2mae")
NORMALIZATIONS = ("raw", "force_rms", "std")


@dataclasses.dataclass(frozen=True)
class QMLossConfig:
    """Weights and normalisation of the energy/force loss.

    loss = energy_weight * mean_b[(dE_b / s_E)^2] + force_weight * L_F

    with dE the energy error (divided by the atom count when ``per_atom_energy``). The scales
    s_E, s_F are ``normalization``, each the reference implementation's for its model:

    * ``'raw'``: s_E = 1 eV, s_F = 1 eV/Angstrom (SchNet: 0.05 MSE(E) + 0.95 MSE(F) in eV and
      eV/Angstrom; its checkpoints carry a target std of 1);
    * ``'force_rms'``: s_E = s_F = the RMS of the training forces (NequIP: its rescale layer
      divides per-atom energies and forces by the force RMS; weights per-atom energy 1 / forces
      1000);
    * ``'std'``: s_E = the std of the training energies (per atom likewise), s_F = the RMS of the
      training forces (GemNet-T: OCP's label normaliser, weights 0.001 / 0.999 with the L2-MAE
      force term); both terms dimensionless.

    The force term ``L_F`` is ``force_loss``:

    * ``'mse'``: mean over frames, atoms and components of ``(dF / s_F)^2``;
    * ``'l2mae'``: mean over frames and atoms of the Euclidean norm ``|dF_a| / s_F`` (OCP's and
      GemNet's force loss: linear in the error, so large errors weigh less than in the MSE).
    """

    energy_weight: float = 0.05
    force_weight: float = 0.95
    per_atom_energy: bool = False
    force_loss: str = "mse"
    normalization: str = "raw"

    def __post_init__(self):
        check_types(self)
        for f in ("energy_weight", "force_weight"):
            if getattr(self, f) < 0:
                raise ValueError(f"QMLossConfig.{f} must be >= 0, got {getattr(self, f)}")
        if self.energy_weight + self.force_weight == 0:
            raise ValueError("QMLossConfig: energy_weight and force_weight are both 0")
        if self.force_loss not in FORCE_LOSSES:
            raise ValueError(f"QMLossConfig.force_loss must be one of {', '.join(FORCE_LOSSES)}, "
                             f"got {self.force_loss!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"QMLossConfig.normalization must be one of "
                             f"{', '.join(NORMALIZATIONS)}, got {self.normalization!r}")


class LossScales(NamedTuple):
    energy: float  # eV (per atom if per_atom_energy)
    force: float  # eV/Angstrom


def loss_scales(train: Frames, cfg: QMLossConfig) -> LossScales:
    """Normalisation constants s_E, s_F of ``cfg.normalization`` from the training labels."""
    if cfg.normalization == "raw":
        return LossScales(energy=1.0, force=1.0)
    s_f = float(np.sqrt(np.mean(train.forces**2)))
    s_f = s_f if s_f > 0 else 1.0
    if cfg.normalization == "force_rms":
        return LossScales(energy=s_f, force=s_f)
    E = train.energies / (train.n_atoms if cfg.per_atom_energy else 1)
    s_e = float(np.std(E)) if train.n_frames > 1 else 1.0
    return LossScales(energy=s_e if s_e > 0 else 1.0, force=s_f)


def _frame_sums(params: Params, batch: Batch, *, energy_fn: EnergyFn, cfg: QMLossConfig,
                scales: LossScales) -> dict:
    """Sums over the batch's frames (weighted by ``batch.weight``): the normalised energy and
    force error terms and the metrics' absolute errors."""
    R = batch.positions
    e, f = predict(energy_fn, params, R, batch.neighbor_idx)
    n_atoms = R.shape[1]
    de = (e - batch.energies) / (n_atoms if cfg.per_atom_energy else 1)
    df = f - batch.forces
    w = batch.weight
    if cfg.force_loss == "l2mae":
        # sqrt with a floor: its gradient at a zero error is finite (exact fits of padded frames)
        norm = jnp.sqrt(jnp.maximum(jnp.sum((df / scales.force) ** 2, axis=-1), 1e-30))
        force_sum = jnp.sum(w[:, None] * norm)
    else:
        force_sum = jnp.sum(w[:, None, None] * (df / scales.force) ** 2)
    return {"energy_sq_sum": jnp.sum(w * (de / scales.energy) ** 2), "force_sum": force_sum,
            "energy_abs_sum_ev": jnp.sum(w * jnp.abs(e - batch.energies)),
            "force_abs_sum_ev_per_a": jnp.sum(w[:, None, None] * jnp.abs(df))}


def _loss_weights(batch: Batch, cfg: QMLossConfig) -> tuple[Array, Array]:
    """loss = a * energy_sq_sum + b * force_sum (a, b from the batch's weights only)."""
    n = jnp.maximum(batch.weight.sum(), 1.0)
    per_frame = batch.positions.shape[1] * (3 if cfg.force_loss == "mse" else 1)
    return cfg.energy_weight / n, cfg.force_weight / (n * per_frame)


def qm_loss(params: Params, batch: Batch, *, energy_fn: EnergyFn, cfg: QMLossConfig,
            scales: LossScales) -> tuple[Array, dict]:
    """Weighted, normalised energy + force loss of one batch, and metrics (eV, eV/Angstrom)."""
    sums = _frame_sums(params, batch, energy_fn=energy_fn, cfg=cfg, scales=scales)
    a, b = _loss_weights(batch, cfg)
    loss = a * sums["energy_sq_sum"] + b * sums["force_sum"]
    metrics = {"energy_abs_sum_ev": sums["energy_abs_sum_ev"],
               "force_abs_sum_ev_per_a": sums["force_abs_sum_ev_per_a"],
               "n_frames": batch.weight.sum()}
    return loss, metrics


def qm_value_and_grad(params: Params, batch: Batch, *, energy_fn: EnergyFn, cfg: QMLossConfig,
                      scales: LossScales, mesh=None) -> tuple[tuple[Array, dict], Params]:
    """``jax.value_and_grad(qm_loss, has_aux=True)``, data-parallel over ``mesh``: the batch's
    frames are split over the devices (padded with weight-0 frames), each device takes the
    gradient of its frames' share of the loss, and the shares are added (``psum``)."""
    from stablejax import sharding

    kw = dict(energy_fn=energy_fn, cfg=cfg, scales=scales)
    if not sharding.is_parallel(mesh):
        return jax.value_and_grad(qm_loss, has_aux=True)(params, batch, **kw)
    a, b = _loss_weights(batch, cfg)
    n = batch.weight.shape[0]
    padded = sharding.pad_leading(batch, sharding.padded_size(n, mesh))
    padded = padded._replace(weight=jnp.concatenate(
        [batch.weight, jnp.zeros((padded.weight.shape[0] - n,), batch.weight.dtype)]))

    def local(p, bt):
        def share(q):
            sums = _frame_sums(q, bt, **kw)
            return a * sums["energy_sq_sum"] + b * sums["force_sum"], sums

        (loss, sums), g = jax.value_and_grad(share, has_aux=True)(p)
        return loss, sums, g

    loss, sums, grads = sharding.sum_leading(local, mesh, params, padded)
    metrics = {"energy_abs_sum_ev": sums["energy_abs_sum_ev"],
               "force_abs_sum_ev_per_a": sums["force_abs_sum_ev_per_a"],
               "n_frames": batch.weight.sum()}
    return (loss, metrics), grads
