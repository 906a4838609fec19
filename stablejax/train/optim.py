"""The optimisers of stablejax, built from optax.

* :func:`stable_optimizer`: StABlE's step (docs/method.md §3, §4): clip the global norm of the
  combined gradient, one plain SGD step, skip (and count) non-finite gradients, and
  reduce-on-plateau of the learning rate on the unstable fraction.
* :func:`pretrain_optimizer`: QM pre-training: Adam with a linear warm-up and reduce-on-plateau on
  the validation loss (the parameter EMA is ``optax.incremental_update``).
* :func:`scale_by_plateau`: reduce-on-plateau with the paper's rule (PyTorch's
  ``ReduceLROnPlateau``, 'min' mode): the reference's schedulers count a reduction after MORE than
  ``patience`` epochs without improvement, and the step of an epoch is taken at the rate before
  that epoch's value is seen (``scheduler.step(f)`` after ``optimizer.step()``).
  ``optax.contrib.reduce_on_plateau`` reduces after ``patience`` epochs and scales the current
  update by the new scale, so it is one epoch earlier on both counts; it also keeps no count of
  reductions, which ends a learning phase.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from stablejax._types import Array

# A non-finite gradient is never applied, however many come in a row.
_NEVER = 2**31 - 1


class PlateauState(NamedTuple):
    """State of :func:`scale_by_plateau`."""

    best: Array  # () f32, best value so far (inf before the first)
    bad_epochs: Array  # () i32, values since the last improvement
    scale: Array  # () f32, multiplier of the updates (of the base learning rate)
    n_reductions: Array  # () i32, reductions so far


def scale_by_plateau(factor: float, patience: int, *, rel_threshold: float = 1e-4,
                     min_scale: float = 0.0) -> optax.GradientTransformationExtraArgs:
    """Scale updates by a factor that shrinks when a monitored value stops improving.

    ``update(updates, state, params, value=v)`` scales ``updates`` by the current scale, then
    observes ``v`` (lower is better): ``v`` improves when below ``best * (1 - rel_threshold)``;
    after more than ``patience`` values without improvement the scale is multiplied by
    ``factor`` (not below ``min_scale``) and the count restarts. ``value=None`` only scales
    (e.g. per-batch steps, with the value observed once per epoch by :func:`observe_plateau`).

    Args:
      factor: reduction factor in (0, 1).
      patience: values without improvement tolerated before a reduction (>= 0).
      rel_threshold: relative improvement that counts.
      min_scale: floor of the scale.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: factor outside (0, 1) or negative patience.
    """
    if not 0 < factor < 1:
        raise ValueError(f"plateau factor must be in (0, 1), got {factor}")
    if patience < 0:
        raise ValueError(f"plateau patience must be >= 0, got {patience}")

    def init_fn(params: Any) -> PlateauState:
        del params
        return PlateauState(best=jnp.asarray(jnp.inf, jnp.float32),
                            bad_epochs=jnp.asarray(0, jnp.int32),
                            scale=jnp.asarray(1.0, jnp.float32),
                            n_reductions=jnp.asarray(0, jnp.int32))

    def update_fn(updates, state: PlateauState, params=None, *, value=None, **extra_args):
        del params, extra_args
        updates = jax.tree.map(lambda u: (state.scale * u).astype(u.dtype), updates)
        if value is not None:
            state = _observe(state, value, factor, patience, rel_threshold, min_scale)
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _observe(state: PlateauState, value: Array, factor: float, patience: int,
             rel_threshold: float, min_scale: float) -> PlateauState:
    value = jnp.asarray(value, jnp.float32)
    improved = (value < state.best * (1 - rel_threshold)) | jnp.isinf(state.best)
    bad = jnp.where(improved, 0, state.bad_epochs + 1)
    reduce = bad > patience
    new_scale = jnp.maximum(state.scale * factor, min_scale)
    did_reduce = reduce & (new_scale < state.scale)
    return PlateauState(
        best=jnp.where(improved, value, state.best),
        bad_epochs=jnp.where(reduce, 0, bad).astype(jnp.int32),
        scale=jnp.where(did_reduce, new_scale, state.scale).astype(jnp.float32),
        n_reductions=(state.n_reductions + did_reduce).astype(jnp.int32),
    )


def observe_plateau(opt_state: Any, value: Array, *, factor: float, patience: int,
                    rel_threshold: float = 1e-4, min_scale: float = 0.0) -> Any:
    """``opt_state`` with its (single) :class:`PlateauState` having observed ``value``."""
    return _replace_plateau(opt_state, lambda s: _observe(s, value, factor, patience,
                                                          rel_threshold, min_scale))


def plateau_of(opt_state: Any) -> PlateauState:
    """The :class:`PlateauState` inside an optimizer state (exactly one must be there)."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(s)]
    if len(found) != 1:
        raise ValueError(f"expected one PlateauState in the optimizer state, found {len(found)}")
    return found[0]


def _is_plateau(x: Any) -> bool:
    return isinstance(x, PlateauState)


def _replace_plateau(opt_state: Any, fn) -> Any:
    return jax.tree.map(lambda s: fn(s) if _is_plateau(s) else s, opt_state, is_leaf=_is_plateau)


def stable_optimizer(learning_rate: float, *, grad_clip_norm: float, plateau_factor: float,
                     plateau_patience: int, method: str = "sgd"
                     ) -> optax.GradientTransformationExtraArgs:
    """StABlE's learning-phase step: ``optax.chain(apply_if_finite(chain(clip_by_global_norm,
    sgd)), scale_by_plateau)`` (``method='adam'``: ``optax.adam`` in place of ``sgd``).

    ``update(grads, state, params)`` takes a step at the current rate; the epoch's unstable
    fraction ``f`` (measured before the step, docs/method.md §4, learning phase, step 3) is
    observed once per epoch with :func:`observe_plateau` (or ``update(..., value=f)``). A
    non-finite gradient gives a zero update and is counted
    (``optax.ApplyIfFiniteState.total_notfinite``); the plateau still observes ``f``.
    """
    if method not in ("sgd", "adam"):
        raise ValueError(f"StABlE optimizer method must be 'sgd' or 'adam', got {method!r}")
    rule = optax.sgd(learning_rate) if method == "sgd" else optax.adam(learning_rate)
    step = optax.chain(optax.clip_by_global_norm(grad_clip_norm), rule)
    return optax.chain(optax.apply_if_finite(step, max_consecutive_errors=_NEVER),
                       scale_by_plateau(plateau_factor, plateau_patience))


def warmup_schedule(learning_rate: float, *, warmup_steps: int,
                    warmup_factor: float) -> optax.Schedule:
    """Linear warm-up from ``warmup_factor * learning_rate`` to ``learning_rate`` over
    ``warmup_steps`` optimizer steps, then constant."""
    if warmup_steps > 0:
        return optax.linear_schedule(warmup_factor * learning_rate, learning_rate, warmup_steps)
    return optax.constant_schedule(learning_rate)


def pretrain_optimizer(learning_rate: float, *, warmup_steps: int, warmup_factor: float,
                       grad_clip_norm: float | None, plateau_factor: float, plateau_patience: int,
                       min_learning_rate: float, weight_decay: float = 0.0,
                       amsgrad: bool = False) -> optax.GradientTransformationExtraArgs:
    """Adam (``amsgrad``: AMSGrad's running maximum of the second moment) with a linear warm-up
    from ``warmup_factor * lr`` to ``lr`` over ``warmup_steps``, times a reduce-on-plateau scale
    observed once per epoch on the validation loss (:func:`observe_plateau`), floored at
    ``min_learning_rate``. ``weight_decay > 0`` makes it AdamW: the decay ``weight_decay * p``
    is added to the Adam direction before the learning rate scales both (decoupled, as in
    PyTorch's ``AdamW``)."""
    schedule = warmup_schedule(learning_rate, warmup_steps=warmup_steps,
                               warmup_factor=warmup_factor)
    parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
    parts.append(optax.scale_by_amsgrad() if amsgrad else optax.scale_by_adam())
    if weight_decay > 0:
        parts.append(optax.add_decayed_weights(weight_decay))
    return optax.chain(*parts, optax.scale_by_learning_rate(schedule),
                       scale_by_plateau(plateau_factor, plateau_patience,
                                        min_scale=min_learning_rate / learning_rate))
