"""The Boltzmann estimator as a ``jax.custom_vjp`` loss (docs/method.md §2.1-§2.4).

For configurations x_i sampled from p_theta(x) ~ exp(-beta U_theta(x)), the ensemble average of
an observable obeys d<O>/dtheta = -beta Cov(O, dU_theta/dtheta). :func:`boltzmann_loss` returns
Loss(<O>, target) computed from the frames, and its ``jax.grad`` with respect to ``params`` is the
Boltzmann estimator of dLoss/dtheta: -beta (dLoss/d<O>) . Cov(O, dU/dtheta).

How the gradient is computed (and why memory does not grow with the number of frames):
the covariance contracted with v = dLoss/d<O> is rewritten as the gradient of a weighted energy
sum, -beta v . Cov(O, dU) = grad_theta sum_i c_i U_theta(x_i) with constant weights
c_i = -beta w_i (O_i - <O>) . v (w_i = 1/N_valid without reweighting). The backward pass is ONE
reverse-mode pass through sum_i c_i U_theta(x_i), evaluated ``chunk_size`` frames at a time in a
``lax.scan`` that accumulates the parameter cotangent. Per-frame parameter gradients (an
[n_frames, n_params] matrix, what the reference implementation stores) are never formed.

Memory (n = n_frames, d = observable size, P = number of parameters):
  * forward: ``chunk_size`` simultaneous energy + observable evaluations, plus the outputs
    [n, d] observables and [n] energies;
  * backward: one chunk's energy VJP (activations of ``chunk_size`` frames) plus one
    parameter-shaped accumulator, plus O(n d) residuals (centred observables) and a copy of the
    frames with invalid ones replaced. Nothing of size n x P.
Time: one energy evaluation per frame in the forward (also used to detect non-finite energies),
and one energy VJP per frame in the backward.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from stablejax._types import Array, Params, PyTree
from stablejax.estimator import _common as C
from stablejax.sharding import check_mesh


class EstimatorAux(NamedTuple):
    """Diagnostics returned by :func:`boltzmann_loss` with ``has_aux=True``.

    ``average`` and ``energies`` are differentiable (their cotangents go through the same
    estimator: -beta Cov for ``average``, dU/dtheta for the energies of valid frames); the other
    fields are constants.
    """

    average: Array  # observable shape, <O> over the valid frames (weighted); 0 if none
    energies: Array  # [n_frames] eV, U_theta(x_i) as evaluated (non-finite for bad frames)
    valid: Array  # [n_frames] bool, frames that entered the average and the gradient
    n_valid: Array  # [] int32; 0 means loss and gradient were set to 0
    ess: Array  # [] float, exp(-sum w log w) of the frame weights (= n_valid if uniform)


def boltzmann_loss(
    params: Params,
    frames: PyTree,
    *,
    energy_fn: Callable[[Params, PyTree], Array],
    observable_fn: Callable[[PyTree], Array],
    target: Array,
    kT: float | Array | None,
    loss_fn: Callable[[Array, Array], Array] | None = None,
    mask: Array | None = None,
    scaling: str = "physical",
    block_size: int = 40,
    chunk_size: int | None = 64,
    key: Array | None = None,
    log_weights: Array | None = None,
    has_aux: bool = False,
    forward_energies: bool = True,
    matmul_precision: str | None = "highest",
    mesh=None,
) -> Array | tuple[Array, EstimatorAux]:
    """Loss of the ensemble-averaged observable, differentiable by the Boltzmann estimator.

    Value: ``loss_fn(<O>, target)`` with <O> the (weighted) mean of ``observable_fn`` over the
    valid frames, in both scalings (in ``"reference"`` scaling this is the full-average MSE that
    the reference implementation logs).

    Gradient w.r.t. ``params`` (``jax.grad``):
      * ``scaling="physical"`` (default): -beta v . Cov_w(O, dU/dtheta), beta = 1/kT, v =
        dLoss/d<O>, biased covariance (1/N) over all valid frames with weights w (uniform, or
        importance weights from ``log_weights``). With weights this is the exact gradient of the
        reweighted average, whose theta-dependence enters only through the weights.
      * ``scaling="reference"``: the reference implementation's estimator (docs/method.md §2.4): no
        beta; valid frames shuffled with ``key`` (``key=None``: kept in order) and cut into blocks
        of ``block_size`` (the last may be partial); per block b, v_b = 2 (Obar_b - target) from
        the block mean (no 1/d factor; with a custom ``loss_fn``: dloss_fn/d<O> at Obar_b) and
        the biased (1/|b|) block covariance; the result is the plain mean over blocks, a partial
        block counting as one. Still one backward pass: blocks only change the constants c_i.

    No gradient flows to ``frames``, ``target``, ``kT``, ``mask``, ``log_weights`` or ``key``
    (they get zero cotangents): frames are sampled configurations, treated as constants, and the
    theta-dependence of reweighted averages is already the covariance term, so log-weights must
    not be differentiated again (compute them with :func:`importance_weights`, preferably under
    ``jax.lax.stop_gradient``).

    Cost: the forward pass evaluates the observable and the energy of every frame (the energy
    only to exclude frames whose energy is non-finite and to return ``aux.energies``); the
    backward pass is one chunked VJP (forward + reverse) of the weighted energy sum. So a
    gradient costs about one energy evaluation more than a chunked energy+force pass.
    ``forward_energies=False`` skips that forward energy pass (the gradient then costs about one
    chunked energy+force pass plus the observables): validity is decided from the mask, the
    inputs, observables and log-weights only, ``aux.energies`` is NaN (and gets no gradient), and
    a backward chunk in which a frame with non-zero weight has a non-finite energy is dropped
    from the gradient (NaN-free, but that gradient is then not the exact estimator). Use it for
    frames whose energies are known to be finite, e.g. valid frames of ``stablejax.simulate``
    (a replica whose forces turn non-finite is frozen and its frames marked invalid).

    Invalid frames: a frame is used only if ``mask`` is True and its inputs, observable, energy
    and log-weight are all finite. Others get weight exactly 0 and are replaced by a valid frame
    before the energy VJP, so NaN/inf cannot reach the gradient. With no valid frame, loss and
    gradient are 0 and ``aux.n_valid == 0`` (check it; nothing is raised inside ``jit``).

    Args:
      params: model parameters (pytree of float arrays).
      frames: positions [n_frames, n_atoms, 3] in Angstrom, or any pytree whose leaves share the
        leading frame axis; one frame (axis removed) is passed to the two functions below.
      energy_fn: ``energy_fn(params, frame) -> scalar`` in eV (wrap a model's extra keyword
        arguments with a lambda). Must not close over values being differentiated.
      observable_fn: ``observable_fn(frame) -> array`` (any fixed shape, e.g. h(r) bins [d]).
      target: reference observable, broadcastable to the observable shape.
      kT: thermal energy in eV (``stablejax.units.kT_ev``); unused (may be None) in
        ``"reference"`` scaling.
      loss_fn: ``loss_fn(average, target) -> scalar``; default: mean over entries of the
        squared error.
      mask: [n_frames] bool, False excludes a frame.
      scaling: ``"physical"`` or ``"reference"`` (see above).
      block_size: B, frames per block (``"reference"`` scaling only).
      chunk_size: frames evaluated at once (forward and backward); None = all at once. Only
        memory and speed depend on it, not the result.
      key: PRNG key for the block shuffle (``"reference"`` scaling).
      log_weights: [n_frames] unnormalised log importance weights (e.g. -beta (U_theta -
        U_theta0)); None = uniform.
      has_aux: also return :class:`EstimatorAux`.
      forward_energies: evaluate every frame's energy in the forward pass (exact validity
        check, ``aux.energies``); False skips it (see Cost above).
      matmul_precision: precision of the model's float32 matrix products in both passes
        (``jax.default_matmul_precision``); None keeps JAX's default. The default
        ``"highest"`` matters on GPUs, whose default float32 products round their inputs to
        TF32 (10-bit mantissa): the covariance is a small difference of large per-frame
        terms, and on an H200 the aspirin/SchNet gradient of 2,560 frames then differed from
        the per-frame baseline by 57% (0.06% at ``"highest"``; README, GPU figures). CPUs
        compute float32 products in full either way.
      mesh: a :class:`jax.sharding.Mesh` (:func:`stablejax.sharding.make_mesh`): the frames'
        energy and observable evaluations and the backward pass's chunks are split over its
        devices and the parameter cotangent is added across them (the block shuffle and all
        weights are computed on the whole set of frames, so the result does not depend on the
        device count beyond the order of floating-point sums). None: one device.

    Returns:
      The scalar loss, or ``(loss, aux)`` with ``has_aux=True``.

    Raises:
      ValueError: bad shapes (frames, mask, log_weights, target vs observable, non-scalar
        energy or loss), unknown scaling, bad block/chunk size, or a non-positive kT.
    """
    C.check_settings(scaling, block_size, chunk_size, kT, matmul_precision)
    mesh = check_mesh(mesh)
    frames, n = C.as_frames(frames)
    obs_shape, obs_dtype, target = C.check_observable(observable_fn, frames, target)
    energy_dtype = C.check_energy(energy_fn, params, frames)
    default_loss = loss_fn is None
    loss_fn = C.mse_loss if default_loss else loss_fn
    C.check_loss(loss_fn, obs_shape, obs_dtype, target)
    mask = C.check_per_frame(mask, n, "mask", bool)
    mask = jnp.ones((n,), bool) if mask is None else mask
    log_weights = C.check_per_frame(log_weights, n, "log_weights", None)
    perm = C.permutation(key, n) if scaling == "reference" else jnp.arange(n)
    kT = jnp.asarray(1.0 if kT is None else kT)

    core = _make_core(
        energy_fn, observable_fn, loss_fn, default_loss, scaling, block_size, chunk_size, obs_shape,
        forward_energies, energy_dtype, matmul_precision, mesh,
    )
    loss, aux = core(params, frames, target, kT, mask, log_weights, perm)
    return (loss, aux) if has_aux else loss


def _make_core(energy_fn, observable_fn, loss_fn, default_loss, scaling, block_size, chunk_size,
               obs_shape, forward_energies, energy_dtype, matmul_precision, mesh=None):
    """The custom-VJP function for one static configuration."""

    def forward(params, frames, target, kT, mask, log_weights, perm):
        with C.precision_scope(matmul_precision):
            return _forward(params, frames, target, kT, mask, log_weights, perm)

    def _forward(params, frames, target, kT, mask, log_weights, perm):
        if forward_energies:
            def eval_frame(x):
                return observable_fn(x), energy_fn(params, x)

            obs, energies = C.map_frames(eval_frame, frames, chunk_size, mesh)
        else:
            obs = C.map_frames(observable_fn, frames, chunk_size)
            energies = jnp.full((obs.shape[0],), jnp.nan, energy_dtype)
        n = energies.shape[0]
        obs = obs.reshape(n, -1)
        dtype = jnp.result_type(obs.dtype, energies.dtype, float)
        valid = mask & C.frames_finite(frames)
        valid = valid & jnp.all(jnp.isfinite(obs), axis=1)
        if forward_energies:
            valid = valid & jnp.isfinite(energies)
        if log_weights is not None:
            valid = valid & jnp.isfinite(log_weights)
        wt, wsum = C.normalised_log_weights(valid, log_weights, dtype)
        avg_s, loss, w, centred, coef, ids, v = estimator_constants(
            obs, wt, wsum, valid, perm, target, kT, loss_fn, default_loss, scaling, block_size,
            obs_shape, dtype)
        aux = EstimatorAux(avg_s, energies, valid, jnp.sum(valid, dtype=jnp.int32),
                           C.entropy_ess(w))
        res = (params, frames, valid, centred, coef.astype(dtype), ids, v.astype(dtype))
        return (loss, aux), res

    @jax.custom_vjp
    def core(params, frames, target, kT, mask, log_weights, perm):
        return forward(params, frames, target, kT, mask, log_weights, perm)[0]

    def core_fwd(params, frames, target, kT, mask, log_weights, perm):
        return forward(params, frames, target, kT, mask, log_weights, perm)

    def core_bwd(res, ct):
        with C.precision_scope(matmul_precision):
            return _core_bwd(res, ct)

    def _core_bwd(res, ct):
        params, frames, valid, centred, coef, ids, v = res
        g_loss, g_aux = ct
        vt = g_loss * v[ids] + g_aux.average.reshape(1, -1)  # [n, d]
        c = -coef * jnp.sum(centred * vt, axis=1)
        if forward_energies:
            c = c + jnp.where(valid, g_aux.energies, 0.0)
        c = jnp.where(valid, c, 0.0)
        safe = C.replace_invalid(frames, valid)
        grad = jax.lax.cond(
            jnp.any(valid),
            lambda: C.weighted_energy_grad(energy_fn, params, safe, c, chunk_size, mesh),
            lambda: jax.tree.map(jnp.zeros_like, params),
        )
        return (grad, None, None, None, None, None, None)

    core.defvjp(core_fwd, core_bwd)
    return core


def estimator_constants(obs, wt, wsum, valid, perm, target, kT, loss_fn, default_loss, scaling,
                        block_size, obs_shape, dtype):
    """The weighted average and the per-sample constants of the estimator's backward pass.

    Args:
      obs: [n, d] observables of the samples (frames or environments); wt [n] their unnormalised
        weights (0 for invalid ones) with sum ``wsum``; valid [n] bool; perm the block shuffle.

    Returns:
      (average [obs_shape], loss, normalised weights [n], centred [n, d], coef [n], block ids
      [n], v [n_blocks, d]) with the gradient ``grad sum_i -coef_i (centred_i . v[ids_i])
      U_i``.
    """
    n = obs.shape[0]
    has = wsum > 0
    w = wt / jnp.where(has, wsum, 1.0)
    obs = jnp.where(valid[:, None], obs, 0.0).astype(dtype)
    avg = w @ obs
    avg_s = avg.reshape(obs_shape)
    loss = jnp.where(has, loss_fn(avg_s, target), 0.0)
    if scaling == "physical":
        v = jax.grad(lambda a: loss_fn(a, target))(avg_s).reshape(1, -1)
        v = jnp.where(has, v, 0.0)
        centred = jnp.where(valid[:, None], obs - avg, 0.0)
        coef = w / kT.astype(dtype)
        ids = jnp.zeros((n,), jnp.int32)
    else:
        centred, coef, ids, v = _reference_blocks(obs, wt, valid, perm, target, loss_fn,
                                                  default_loss, block_size, obs_shape)
    return avg_s, loss, w, centred, coef, ids, v


def _reference_blocks(obs, wt, valid, perm, target, loss_fn, default_loss, block_size, obs_shape):
    """Per-frame constants of the reference (blocked, beta-free) estimator.

    Returns (centred [n, d], coef [n], block ids [n], v [n_blocks, d]) such that the gradient is
    grad_theta sum_i -coef_i (centred_i . v[ids_i]) U_theta(x_i).
    """
    n = obs.shape[0]
    n_max = math.ceil(n / block_size)
    ids = C.assign_blocks(perm, valid, block_size)  # invalid frames -> block n_max (dropped)
    wb = jax.ops.segment_sum(wt, ids, n_max + 1)[:n_max]
    sb = jax.ops.segment_sum(wt[:, None] * obs, ids, n_max + 1)[:n_max]
    nonempty = wb > 0
    block_mean = sb / jnp.where(nonempty, wb, 1.0)[:, None]
    if default_loss:
        t = jnp.broadcast_to(target, obs_shape).reshape(-1)
        v = 2.0 * (block_mean - t)
    else:
        dloss = jax.grad(lambda a: loss_fn(a.reshape(obs_shape), target))
        v = jax.vmap(dloss)(block_mean)
    v = jnp.where(nonempty[:, None], v, 0.0)
    n_blocks = jnp.maximum(jnp.sum(nonempty), 1)
    ids = jnp.minimum(ids, n_max - 1)
    centred = jnp.where(valid[:, None], obs - block_mean[ids], 0.0)
    coef = jnp.where(valid, wt / jnp.where(nonempty, wb, 1.0)[ids] / n_blocks, 0.0)
    return centred, coef, ids, v
