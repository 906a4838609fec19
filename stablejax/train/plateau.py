"""Reduce-on-plateau learning-rate control as a pure function on a small pytree.

Semantics of PyTorch's ``ReduceLROnPlateau`` in 'min' mode with a relative threshold: a value
improves when it is below ``best * (1 - rel_threshold)``; after more than ``patience`` epochs
without improvement the scale is multiplied by ``factor`` and the count restarts. Works inside
and outside ``jit``.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from stablejax._types import Array


@struct.dataclass
class PlateauState:
    best: Array  # () f32, best value so far (inf before the first)
    bad_epochs: Array  # () i32, epochs since the last improvement
    scale: Array  # () f32, multiplier of the base learning rate
    n_reductions: Array  # () i32, reductions so far

    @classmethod
    def create(cls) -> "PlateauState":
        return cls(best=jnp.asarray(jnp.inf, jnp.float32), bad_epochs=jnp.asarray(0, jnp.int32),
                   scale=jnp.asarray(1.0, jnp.float32), n_reductions=jnp.asarray(0, jnp.int32))


def plateau_update(
    state: PlateauState,
    value: Array,
    *,
    factor: float,
    patience: int,
    rel_threshold: float = 1e-4,
    min_scale: float = 0.0,
) -> PlateauState:
    """One epoch of reduce-on-plateau with the monitored ``value`` (lower is better)."""
    if not 0 < factor < 1:
        raise ValueError(f"plateau factor must be in (0, 1), got {factor}")
    if patience < 0:
        raise ValueError(f"plateau patience must be >= 0, got {patience}")
    value = jnp.asarray(value, jnp.float32)
    improved = value < state.best * (1 - rel_threshold)
    improved = improved | jnp.isinf(state.best)
    best = jnp.where(improved, value, state.best)
    bad = jnp.where(improved, 0, state.bad_epochs + 1)
    reduce = bad > patience
    new_scale = jnp.maximum(state.scale * factor, min_scale)
    did_reduce = reduce & (new_scale < state.scale)
    return PlateauState(
        best=best,
        bad_epochs=jnp.where(reduce, 0, bad).astype(jnp.int32),
        scale=jnp.where(did_reduce, new_scale, state.scale).astype(jnp.float32),
        n_reductions=(state.n_reductions + did_reduce).astype(jnp.int32),
    )
