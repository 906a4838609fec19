"""Quantum energy/force pre-training: ``stablejax.pretrain(state, cfg, train, val)``.

One jit-compiled epoch (``lax.scan`` over shuffled, padded batches) per call; the optax chain of
:func:`stablejax.train.optim.pretrain_optimizer` (Adam, linear warm-up, reduce-on-plateau on the
validation loss); optional EMA of the parameters (``optax.incremental_update``); early
stopping on the validation loss; best-model selection; an orbax checkpoint every epoch and a
JSONL metrics log, so a killed run resumed from its run directory continues exactly where it
stopped (the batch order of every epoch is a function of the seed and the epoch number).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from stablejax._types import Array, Params, ProgressFn
from stablejax.data.frames import Frames
from stablejax.evaluate.qm import evaluate_qm  # noqa: F401  (re-exported)
from stablejax.config import check_types
from stablejax.io.run_dir import BEST, RunDir
from stablejax.models import Model
from stablejax.models.frames import eval_batch_size, frame_energy_fn, frames_neighbor_idx
from stablejax.train.losses import (
    Batch,
    LossScales,
    QMLossConfig,
    loss_scales,
    make_batches,
    qm_loss,
    qm_value_and_grad,
    stack_batches,
)
from stablejax.train.optim import (
    observe_plateau,
    plateau_of,
    pretrain_optimizer,
    warmup_schedule,
)

log = logging.getLogger(__name__)


# PretrainConfig fields that only steer the loop (a resume may change them), and the fields a
# resume may change when the caller names them (``allow_changes``).
LOOP_FIELDS = ("max_epochs", "time_budget_s")
RESUMABLE_FIELDS = LOOP_FIELDS + ("learning_rate",)


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Pre-training hyperparameters (defaults: the paper's SchNet/MD17 recipe,
    docs/method.md §10.1).

    Attributes:
      loss: energy/force weights (see :class:`QMLossConfig`).
      learning_rate: Adam base learning rate.
      weight_decay: decoupled weight decay (AdamW; 0: plain Adam).
      amsgrad: use AMSGrad's running maximum of the second moment.
      batch_size: frames per step.
      max_epochs: epoch limit.
      warmup_steps: linear warm-up from ``warmup_factor * lr`` to ``lr`` over this many steps.
      warmup_factor: initial learning-rate factor of the warm-up.
      plateau_factor, plateau_patience: reduce-on-plateau on the validation loss (per epoch).
      min_learning_rate: floor of the plateau reductions.
      early_stopping_patience: stop after this many epochs without a better validation loss
        (None: never).
      ema_decay: exponential moving average of the parameters used for validation and the
        best model (None: off; NequIP uses 0.99).
      time_budget_s: stop after this much training wall time, summed over resumed runs.
      grad_clip_norm: clip the global gradient norm (None: off).
      seed: parameter initialisation and batch order.
      eval_batch_size: frames per evaluation batch.
      dtype: 'float32' or 'float64' computation.
    """

    loss: QMLossConfig = QMLossConfig()
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    amsgrad: bool = False
    batch_size: int = 100
    max_epochs: int = 10_000
    warmup_steps: int = 5000
    warmup_factor: float = 0.2
    plateau_factor: float = 0.8
    plateau_patience: int = 5
    min_learning_rate: float = 1e-6
    early_stopping_patience: int | None = 50
    ema_decay: float | None = None
    time_budget_s: float | None = None
    grad_clip_norm: float | None = None
    seed: int = 0
    eval_batch_size: int = 128
    dtype: str = "float32"

    def __post_init__(self):
        check_types(self)

        def need(field: str, ok: bool, rule: str):
            if not ok:
                raise ValueError(f"PretrainConfig.{field} must be {rule}, got "
                                 f"{getattr(self, field)!r}")

        need("learning_rate", self.learning_rate > 0, "> 0")
        need("weight_decay", self.weight_decay >= 0, ">= 0")
        need("batch_size", self.batch_size >= 1, ">= 1")
        need("max_epochs", self.max_epochs >= 1, ">= 1")
        need("warmup_steps", self.warmup_steps >= 0, ">= 0")
        need("warmup_factor", 0 < self.warmup_factor <= 1, "in (0, 1]")
        need("plateau_factor", 0 < self.plateau_factor < 1, "in (0, 1)")
        need("plateau_patience", self.plateau_patience >= 0, ">= 0")
        need("min_learning_rate", 0 <= self.min_learning_rate <= self.learning_rate,
             "in [0, learning_rate]")
        need("early_stopping_patience", self.early_stopping_patience is None
             or self.early_stopping_patience >= 1, "None or >= 1")
        need("ema_decay", self.ema_decay is None or 0 < self.ema_decay < 1, "None or in (0, 1)")
        need("grad_clip_norm", self.grad_clip_norm is None or self.grad_clip_norm > 0,
             "None or > 0")
        need("eval_batch_size", self.eval_batch_size >= 1, ">= 1")
        need("dtype", self.dtype in ("float32", "float64"), "'float32' or 'float64'")
        need("time_budget_s", self.time_budget_s is None or self.time_budget_s > 0,
             "None or > 0")

    @classmethod
    def schnet(cls, **overrides) -> "PretrainConfig":
        """SchNet on MD17 (docs/method.md §10.1): Adam 1e-3, batch 100, 5000 warm-up steps (x0.2),
        plateau 0.8 / 5, energy/force weights 0.05 / 0.95 on raw eV and eV/Angstrom errors."""
        return cls(**overrides)

    @classmethod
    def schnet_liquid(cls, **overrides) -> "PretrainConfig":
        """SchNet on a periodic liquid (water): the SchNet recipe with the paper's water loss
        weights, energy 0.001 / forces 0.999 (normalised as in :class:`QMLossConfig`).

        The energy of a liquid box fluctuates little for its size (64-molecule SPC/Fw water:
        std 0.33 eV over 192 atoms, while per-atom forces have an RMS of 0.77 eV/Angstrom), so
        the std-normalised energy term with the MD17 weight 0.05 outweighs the forces and a
        model never leaves the zero-force solution (measured: validation force MAE stuck at
        the zero-force 567 meV/Angstrom for 8 epochs, and for 1,880 steps in a longer run).
        NequIP's preset (per-atom energy 1 / forces 1000) already weights the two alike.
        """
        return cls(**{"loss": QMLossConfig(0.001, 0.999, normalization="std"), **overrides})

    @classmethod
    def gemnet(cls, **overrides) -> "PretrainConfig":
        """GemNet-T (the paper's water recipe): normalised energy (squared error) / force (L2-MAE)
        weights 0.001 / 0.999, AdamW with AMSGrad and weight decay 2e-6, lr 1e-3, batch 1,
        EMA 0.999, gradient clip 10, reduce-on-plateau, no warm-up."""
        base = dict(loss=QMLossConfig(0.001, 0.999, force_loss="l2mae", normalization="std"),
                    learning_rate=1e-3,
                    weight_decay=2e-6, amsgrad=True, batch_size=1, warmup_steps=0,
                    ema_decay=0.999, grad_clip_norm=10.0)
        return cls(**{**base, **overrides})

    @classmethod
    def nequip(cls, **overrides) -> "PretrainConfig":
        """NequIP on MD22 (docs/method.md §10.2): Adam 5e-3, batch 5, per-atom energy 1 / forces
        1000 with both divided by the training force RMS, plateau 0.8 / 5, EMA 0.99, early
        stopping patience 50, no warm-up."""
        base = dict(loss=QMLossConfig(1.0, 1000.0, per_atom_energy=True,
                                      normalization="force_rms"), learning_rate=5e-3,
                    batch_size=5, max_epochs=2000, warmup_steps=0, ema_decay=0.99)
        return cls(**{**base, **overrides})


@struct.dataclass
class PretrainState:
    """Everything that evolves during pre-training (a pytree; ``model`` is static).

    Create with :meth:`PretrainState.create`.
    """

    params: Params  # model parameters
    opt_state: optax.OptState  # Adam moments, warm-up count, plateau (learning-rate scale)
    ema_params: Params  # EMA of params (== params when EMA is off)
    best_params: Params  # parameters with the best validation loss so far
    step: Array  # () i32, optimizer steps taken
    epoch: Array  # () i32, epochs completed
    best_val_loss: Array  # () f32
    best_epoch: Array  # () i32
    elapsed_s: Array  # () f64-ish f32, training wall time so far, s
    key: Array  # [2] u32 PRNG key (raw, checkpointable)
    model: Model = struct.field(pytree_node=False)

    @classmethod
    def create(cls, model: Model, key: Array, example_positions: np.ndarray,
               cfg: PretrainConfig) -> "PretrainState":
        """Initialise parameters with ``model.init(key, example_positions)``.

        Args:
          model: a :class:`stablejax.models.Model`.
          key: PRNG key (``jax.random.PRNGKey(seed)``).
          example_positions: [n_atoms, 3] Angstrom, e.g. the first training frame.
          cfg: the pre-training config.
        """
        k_init, k_run = jax.random.split(key)
        R0 = jnp.asarray(example_positions, jnp.dtype(cfg.dtype))
        params = model.init(k_init, R0)
        tx = _optimizer(cfg)
        return cls(params=params, opt_state=tx.init(params), ema_params=params,
                   best_params=params, step=jnp.asarray(0, jnp.int32),
                   epoch=jnp.asarray(0, jnp.int32),
                   best_val_loss=jnp.asarray(jnp.inf, jnp.float32),
                   best_epoch=jnp.asarray(-1, jnp.int32),
                   elapsed_s=jnp.asarray(0.0, jnp.float32), key=k_run, model=model)

    @property
    def eval_params(self) -> Params:
        return self.ema_params


def _optimizer(cfg: PretrainConfig) -> optax.GradientTransformation:
    return pretrain_optimizer(cfg.learning_rate, warmup_steps=cfg.warmup_steps,
                              warmup_factor=cfg.warmup_factor, grad_clip_norm=cfg.grad_clip_norm,
                              plateau_factor=cfg.plateau_factor,
                              plateau_patience=cfg.plateau_patience,
                              min_learning_rate=cfg.min_learning_rate,
                              weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)


def _make_epoch_fn(energy_fn, cfg: PretrainConfig, scales: LossScales, mesh=None):
    """``energy_fn``: the model's frame energy (:func:`stablejax.models.frame_energy_fn`);
    ``mesh``: the devices each batch's frames are split over (data parallel)."""
    tx = _optimizer(cfg)
    loss_fn = lambda p, b: qm_loss(p, b, energy_fn=energy_fn, cfg=cfg.loss,  # noqa: E731
                                   scales=scales)

    @jax.jit
    def epoch_fn(params, opt_state, ema, step, batches: Batch):
        def one(carry, batch):
            params, opt_state, ema, step = carry
            (loss, metrics), grads = qm_value_and_grad(params, batch, energy_fn=energy_fn,
                                                       cfg=cfg.loss, scales=scales, mesh=mesh)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            if cfg.ema_decay is not None:
                ema = optax.incremental_update(params, ema, step_size=1 - cfg.ema_decay)
            else:
                ema = params
            finite = jnp.isfinite(loss)
            return (params, opt_state, ema, step + 1), (loss, finite)

        carry, (losses, finite) = jax.lax.scan(one, (params, opt_state, ema, step), batches)
        return carry, jnp.mean(losses), jnp.all(finite)

    @jax.jit
    def eval_fn(params, batches: Batch):
        def one(acc, batch):
            loss, m = loss_fn(params, batch)
            return jax.tree.map(jnp.add, acc, {**m, "loss_sum": loss * m["n_frames"]}), None

        zero = {"energy_abs_sum_ev": 0.0, "force_abs_sum_ev_per_a": 0.0, "n_frames": 0.0,
                "loss_sum": 0.0}
        zero = jax.tree.map(lambda x: jnp.asarray(x, batches.energies.dtype), zero)
        acc, _ = jax.lax.scan(one, zero, batches)
        return acc

    return epoch_fn, eval_fn


def _summarise(acc: dict, n_atoms: int) -> dict:
    n = float(acc["n_frames"])
    return {"loss": float(acc["loss_sum"]) / n,
            "energy_mae_mev": 1000 * float(acc["energy_abs_sum_ev"]) / n,
            "force_mae_mev_per_angstrom": 1000 * float(acc["force_abs_sum_ev_per_a"])
            / (n * n_atoms * 3)}


def pretrain(
    state: PretrainState,
    cfg: PretrainConfig,
    train: Frames,
    val: Frames,
    *,
    run_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    allow_changes: tuple[str, ...] = (),
    mesh: Any = "all",
) -> PretrainState:
    """Fit ``state.model`` to the energies and forces of ``train``; select on ``val``.

    With ``run_dir``, an orbax checkpoint (``run_dir/checkpoints``) is written every epoch with
    the metrics log ``run_dir/metrics.jsonl`` (one JSON record per epoch), and the best
    parameters under ``run_dir/best``. If ``run_dir`` already holds a checkpoint, training
    resumes from it and continues exactly as the uninterrupted run would have. The directory
    records the config it was made with (``inputs.json``, see :mod:`stablejax.io.inputs`);
    resuming with another config is refused, except for ``max_epochs``/``time_budget_s`` and the
    fields named in ``allow_changes`` (from ``RESUMABLE_FIELDS``: ``"learning_rate"``).

    Returns:
      The final state; ``state.best_params`` are the selected parameters.

    ``mesh``: the devices every batch's frames are split over, each taking the gradient of
    its frames and the gradients added across devices (:func:`stablejax.sharding.resolve_mesh`:
    a mesh, ``"all"`` devices, or None). The result equals the one-device run's up to the
    order of floating-point sums; checkpoints hold whole arrays and resume on any count.
    """
    from stablejax import sharding

    mesh = sharding.resolve_mesh(mesh)
    for name, fr in (("train", train), ("val", val)):
        if not fr.has_labels:
            raise ValueError(f"pretrain: the {name} frames have no energy/force labels")
        if not np.array_equal(fr.atomic_numbers, train.atomic_numbers):
            raise ValueError(f"pretrain: the {name} frames are a different system than train")
    dtype = jnp.dtype(cfg.dtype)
    scales = loss_scales(train, cfg.loss)
    epoch_fn, eval_fn = _make_epoch_fn(frame_energy_fn(state.model, train.positions[0]), cfg,
                                       scales, mesh)
    # Periodic models: one neighbour list per frame, built once (frames never move here).
    train_idx = frames_neighbor_idx(state.model, train.positions)
    val_idx = frames_neighbor_idx(state.model, val.positions)
    val_batches = stack_batches(make_batches(val, eval_batch_size(cfg.eval_batch_size, val_idx),
                                             dtype=dtype, neighbor_idx=val_idx))
    rd = RunDir(run_dir) if run_dir is not None else None
    if rd is not None:
        from stablejax.config import to_dict
        from stablejax.io.inputs import allow_paths, check_inputs

        allow = allow_paths(LOOP_FIELDS + tuple(allow_changes), RESUMABLE_FIELDS)
        check_inputs(rd.path, {"config": to_dict(cfg)}, allow=allow,
                     resumable=[f"config.{k}" for k in RESUMABLE_FIELDS],
                     defaults={"config": to_dict(PretrainConfig())})
        arrays = rd.resume(like=_arrays(state))
        if arrays is not None:
            state = state.replace(**arrays)
            log.info("resumed pre-training from epoch %d", int(state.epoch))

    while True:
        epoch = int(state.epoch)
        stop = _stop_reason(state, cfg)
        if stop:
            log.info("pre-training stops: %s", stop)
            break
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])  # batch order: function of seed and epoch
        batches = stack_batches(make_batches(train, cfg.batch_size,
                                             rng.permutation(train.n_frames), dtype, train_idx))
        (params, opt_state, ema, step), train_loss, finite = epoch_fn(
            state.params, state.opt_state, state.ema_params, state.step, batches)
        if not bool(finite):
            raise FloatingPointError(
                f"pre-training loss became non-finite in epoch {epoch}; lower the learning "
                "rate (PretrainConfig.learning_rate) or check the data for outliers")
        val_m = _summarise(eval_fn(ema, val_batches), val.n_atoms)
        # The rate of the next step: the optimizer's own warm-up schedule x the plateau scale.
        schedule = warmup_schedule(cfg.learning_rate, warmup_steps=cfg.warmup_steps,
                                   warmup_factor=cfg.warmup_factor)
        lr_now = float(schedule(step)) * float(plateau_of(opt_state).scale)
        opt_state = observe_plateau(opt_state, val_m["loss"], factor=cfg.plateau_factor,
                                    patience=cfg.plateau_patience,
                                    min_scale=cfg.min_learning_rate / cfg.learning_rate)
        better = val_m["loss"] < float(state.best_val_loss)
        state = state.replace(
            params=params, opt_state=opt_state, ema_params=ema, step=step,
            epoch=jnp.asarray(epoch + 1, jnp.int32),
            best_params=ema if better else state.best_params,
            best_val_loss=jnp.asarray(val_m["loss"] if better else state.best_val_loss,
                                      jnp.float32),
            best_epoch=jnp.asarray(epoch if better else state.best_epoch, jnp.int32),
            elapsed_s=jnp.asarray(float(state.elapsed_s) + time.perf_counter() - t0,
                                  jnp.float32))
        record = {"epoch": epoch, "step": int(step), "learning_rate": lr_now,
                  "train_loss": float(train_loss), "val_loss": val_m["loss"],
                  "val_energy_mae_mev": val_m["energy_mae_mev"],
                  "val_force_mae_mev_per_angstrom": val_m["force_mae_mev_per_angstrom"],
                  "best_epoch": int(state.best_epoch), "elapsed_s": float(state.elapsed_s)}
        if rd is not None:
            if better:
                rd.save_params(BEST, epoch + 1, state.best_params,
                               {"epoch": int(state.best_epoch),
                                "val_loss": float(state.best_val_loss)})
            rd.save_epoch(epoch + 1, _arrays(state), record)
        if progress:
            progress(epoch + 1, cfg.max_epochs, record)
    return state


def _stop_reason(state: PretrainState, cfg: PretrainConfig) -> str | None:
    epoch = int(state.epoch)
    if epoch >= cfg.max_epochs:
        return f"max_epochs {cfg.max_epochs} reached"
    if cfg.time_budget_s is not None and float(state.elapsed_s) >= cfg.time_budget_s:
        return f"time budget {cfg.time_budget_s:.0f} s used"
    patience = cfg.early_stopping_patience
    if patience is not None and int(state.best_epoch) >= 0 and \
            epoch - 1 - int(state.best_epoch) >= patience:
        return f"early stopping: no better validation loss for {patience} epochs"
    return None


def _arrays(state: PretrainState):
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
            if f.name != "model"}


def load_best_params(run_dir: str | Path, like: Params) -> Params:
    """The best parameters saved by :func:`pretrain` in ``run_dir/best``."""
    return RunDir(run_dir).load_params(BEST, like)
