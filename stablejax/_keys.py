"""PRNG key normalisation shared by the simulator and the training loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stablejax._types import Array


def raw_key(key: Array) -> Array:
    """Raw uint32 key data ``[..., 2]`` of a typed (``jax.random.key``) or raw key.

    Raw keys are plain arrays: they stack, select and checkpoint like any other leaf.
    """
    key = jnp.asarray(key)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return key
