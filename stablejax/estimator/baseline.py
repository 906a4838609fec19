"""Per-frame-gradient baseline of the Boltzmann estimator (for tests and benchmarks only).

This is the reference implementation's approach (docs/method.md §11, pitfall 1): the gradients
dU(x_i)/dtheta of all frames are materialised as a dense [n_frames, n_params] matrix G, then
contracted with the observables. Memory grows as n_frames x n_params, which is what
:func:`boltzmann_loss` avoids; use this only to check it. It follows the same conventions
(validity rules, weights, blocks from the same ``key``) so that both give the same number, but
computes it with different algebra:
v . Cov(O, G) = sum_i w_i (v . O_i) G_i - (v . Obar)(sum_i w_i G_i).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from stablejax._types import Array, Params, PyTree
from stablejax.estimator import _common as C
from stablejax.estimator.boltzmann import boltzmann_loss


def per_frame_gradient_baseline(params: Params, frames: PyTree, **estimator_args: Any
                                ) -> tuple[Array, Params]:
    """Loss and estimator gradient from materialised per-frame gradients [n_frames, n_params].

    Takes the keyword arguments of :func:`stablejax.estimator.boltzmann_loss`, with the same
    defaults and meaning (bound against its signature); ``chunk_size``, ``has_aux`` and
    ``forward_energies`` are ignored (all frames at once); ``matmul_precision`` applies the same
    way.

    Returns:
      ``(loss, grads)``: the loss value and the estimator gradient (pytree like ``params``).

    Raises:
      TypeError: an argument ``boltzmann_loss`` does not take, or a missing required one.
    """
    bound = inspect.signature(boltzmann_loss).bind(params, frames, **estimator_args)
    bound.apply_defaults()
    a = bound.arguments
    energy_fn, observable_fn, target, kT = (a["energy_fn"], a["observable_fn"], a["target"],
                                            a["kT"])
    loss_fn, mask, scaling, block_size = a["loss_fn"], a["mask"], a["scaling"], a["block_size"]
    key, log_weights = a["key"], a["log_weights"]
    C.check_matmul_precision(a["matmul_precision"])
    with C.precision_scope(a["matmul_precision"]):
        return _baseline(params, frames, energy_fn, observable_fn, target, kT, loss_fn, mask,
                         scaling, block_size, key, log_weights)


def _baseline(params, frames, energy_fn, observable_fn, target, kT, loss_fn, mask, scaling,
              block_size, key, log_weights):
    if scaling not in C.SCALINGS:
        raise ValueError(f"scaling must be one of {C.SCALINGS}, got {scaling!r}")
    C.check_block_size(block_size)
    C.check_kT(kT, required=scaling == "physical")
    frames, n = C.as_frames(frames)
    obs_shape, _, target = C.check_observable(observable_fn, frames, target)
    default_loss = loss_fn is None
    loss_fn = C.mse_loss if default_loss else loss_fn
    mask = C.check_per_frame(mask, n, "mask", bool)
    mask = jnp.ones((n,), bool) if mask is None else mask
    log_weights = C.check_per_frame(log_weights, n, "log_weights", None)

    obs = jax.vmap(observable_fn)(frames).reshape(n, -1)
    energies = jax.vmap(energy_fn, in_axes=(None, 0))(params, frames)
    valid = mask & C.frames_finite(frames) & jnp.all(jnp.isfinite(obs), 1) & jnp.isfinite(energies)
    if log_weights is not None:
        valid = valid & jnp.isfinite(log_weights)
    dtype = jnp.result_type(obs.dtype, energies.dtype, float)
    wt, wsum = C.normalised_log_weights(valid, log_weights, dtype)
    w = wt / jnp.where(wsum > 0, wsum, 1.0)
    obs = jnp.where(valid[:, None], obs, 0.0).astype(dtype)

    # The dense per-frame gradient matrix G [n, P] (rows of invalid frames set to 0).
    flat_params, unravel = ravel_pytree(params)
    safe = C.replace_invalid(frames, valid)
    per_frame = jax.vmap(jax.grad(energy_fn), in_axes=(None, 0))(params, safe)
    G = jax.vmap(lambda g: ravel_pytree(g)[0])(per_frame)
    G = jnp.where(valid[:, None], G, 0.0)

    avg = w @ obs
    loss = jnp.where(wsum > 0, loss_fn(avg.reshape(obs_shape), target), 0.0)
    if scaling == "physical":
        v = jax.grad(lambda a: loss_fn(a.reshape(obs_shape), target))(avg)
        g_bar = w @ G
        vcov = (w * (obs @ v)) @ G - (avg @ v) * g_bar  # v . Cov_w(O, G), [P]
        flat = -vcov / kT
    else:
        perm = C.permutation(key, n)
        ids = C.assign_blocks(perm, valid, block_size)
        n_max = math.ceil(n / block_size)
        member = (ids[None, :] == jnp.arange(n_max)[:, None]) * wt[None, :]  # [n_blocks, n]
        wb = member.sum(1)
        nonempty = wb > 0
        member = member / jnp.where(nonempty, wb, 1.0)[:, None]
        o_b = member @ obs  # block means [n_blocks, d]
        g_b = member @ G  # [n_blocks, P]
        if default_loss:
            v = 2.0 * (o_b - jnp.broadcast_to(target, obs_shape).reshape(1, -1))
        else:
            v = jax.vmap(jax.grad(lambda a: loss_fn(a.reshape(obs_shape), target)))(o_b)
        # reference: J_b = mean(G) mean(O)^T - mean(G O^T) = -Cov_b; block gradient v_b^T J_b
        vo = obs @ v.T  # [n, n_blocks]: v_b . O_i
        mean_vog = jnp.einsum("bi,ib,ip->bp", member, vo, G)
        per_block = jnp.sum(v * o_b, 1)[:, None] * g_b - mean_vog
        per_block = jnp.where(nonempty[:, None], per_block, 0.0)
        flat = per_block.sum(0) / jnp.maximum(nonempty.sum(), 1)
    flat = jnp.where(wsum > 0, flat, 0.0).astype(flat_params.dtype)
    return loss, unravel(flat)
