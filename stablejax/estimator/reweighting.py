"""Importance reweighting of frames sampled under older parameters (docs/method.md §5).

Frames x_i sampled from p_theta0 ~ exp(-beta U_theta0) estimate averages under p_theta with the
weights w_i ~ exp(-beta (U_theta(x_i) - U_theta0(x_i))), normalised to sum 1. They are uniform at
theta = theta0. The effective sample size ESS = exp(-sum_i w_i log w_i) (entropy form, as in
chemtrain's DiffTRe) or (sum w)^2 / sum w^2 (Kish) measures how many frames still count; the
policy of :func:`needs_resimulation` reuses frames while ESS >= 0.9 n_frames.

Use with :func:`stablejax.estimator.boltzmann_loss` through ``log_weights=jnp.log(weights)``:
the gradient of the reweighted average is -beta Cov_w(O, dU/dtheta), which the estimator
computes with these weights; the weights themselves are treated as constants there.

Typical loop::

    weights, ess = importance_weights(params, frames, energy_fn, ref_energies, kT)
    if needs_resimulation(ess, n_frames):
        ...  # run MD with the current params, store ref_energies = U_theta(x_i)
    grads = jax.grad(boltzmann_loss)(params, frames, ..., log_weights=jnp.log(weights))

The energies stored at sampling time are returned by ``boltzmann_loss(..., has_aux=True)`` as
``aux.energies``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp

from stablejax._types import Array, Params, PyTree
from stablejax.estimator import _common as C

#: Reuse frames while ESS >= this fraction of the frames (chemtrain's DiffTRe default).
DEFAULT_MIN_ESS_FRACTION = 0.9


class ImportanceWeights(NamedTuple):
    """Normalised importance weights and their effective sample size (unpacks as a pair)."""

    weights: Array  # [n_frames] float, sum 1 over valid frames, 0 for excluded frames
    ess: Array  # [] float, exp(-sum w log w); n_valid for uniform weights


def importance_weights(
    params: Params,
    frames: PyTree,
    energy_fn: Callable[[Params, PyTree], Array],
    ref_energies: Array,
    kT: float | Array,
    mask: Array | None = None,
    *,
    chunk_size: int | None = 64,
) -> ImportanceWeights:
    """Weights w_i ~ exp(-beta (U_theta(x_i) - U_theta0(x_i))) of frames sampled under theta0.

    Args:
      params: current parameters theta.
      frames: positions [n_frames, n_atoms, 3] in Angstrom (or a pytree with a leading frame
        axis), sampled under theta0.
      energy_fn: ``energy_fn(params, frame) -> scalar`` in eV.
      ref_energies: [n_frames] U_theta0(x_i) in eV, stored when the frames were sampled.
      kT: thermal energy in eV of the sampling ensemble.
      mask: [n_frames] bool; False excludes a frame (weight 0). Frames with a non-finite
        position, energy or reference energy are excluded too.
      chunk_size: frames evaluated at once; None = all.

    Returns:
      ``ImportanceWeights(weights [n_frames], ess [])``. With no usable frame, all weights and
      the ESS are 0.

    Raises:
      ValueError: on mismatched shapes or a non-positive kT.
    """
    C.check_kT(kT, required=True)
    C.check_chunk_size(chunk_size)
    frames, n = C.as_frames(frames)
    C.check_energy(energy_fn, params, frames)
    ref = C.check_per_frame(ref_energies, n, "ref_energies", None)
    mask = C.check_per_frame(mask, n, "mask", bool)
    energies = frame_energies(params, frames, energy_fn, chunk_size=chunk_size)
    log_w = log_importance_weights(energies, ref, kT)
    valid = jnp.isfinite(log_w) & C.frames_finite(frames)
    if mask is not None:
        valid = valid & mask
    wt, wsum = C.normalised_log_weights(valid, log_w, log_w.dtype)
    w = wt / jnp.where(wsum > 0, wsum, 1.0)
    return ImportanceWeights(w, C.entropy_ess(w))


def frame_energies(params: Params, frames: PyTree, energy_fn: Callable[[Params, PyTree], Array],
                   *, chunk_size: int | None = 64) -> Array:
    """U_theta(x_i) of every frame, [n_frames] in eV, ``chunk_size`` frames at a time: what to
    store as ``ref_energies`` when frames are sampled (non-finite frames give non-finite values).
    """
    C.check_chunk_size(chunk_size)
    frames, _ = C.as_frames(frames)
    return C.map_frames(lambda x: energy_fn(params, x), frames, chunk_size)


def log_importance_weights(energies: Array, ref_energies: Array, kT: float | Array) -> Array:
    """Unnormalised log-weights -beta (U_theta - U_theta0), [n_frames]; energies in eV, kT in eV."""
    energies = jnp.asarray(energies)
    return -(energies - jnp.asarray(ref_energies, energies.dtype)) / kT


def effective_sample_size(weights: Array, kind: str = "entropy") -> Array:
    """Effective sample size of normalised weights [n_frames].

    Args:
      weights: non-negative weights summing to 1 (zeros allowed).
      kind: ``"entropy"``: exp(-sum w log w); ``"kish"``: (sum w)^2 / sum w^2. Both equal N for
        N uniform weights and 1 when one frame carries all the weight.

    Raises:
      ValueError: unknown ``kind``.
    """
    w = jnp.asarray(weights)
    if kind == "entropy":
        return C.entropy_ess(w)
    if kind == "kish":
        return C.kish_ess(w)
    raise ValueError(f"kind must be 'entropy' or 'kish', got {kind!r}")


def needs_resimulation(
    ess: Array, n_frames: int | Array, min_ess_fraction: float = DEFAULT_MIN_ESS_FRACTION
) -> Array:
    """Frame-reuse policy: True when ESS < ``min_ess_fraction`` * ``n_frames`` (re-simulate).

    Args:
      ess: effective sample size from :func:`importance_weights`.
      n_frames: number of frames sampled (the usable ones, e.g. ``aux.n_valid``).
      min_ess_fraction: reuse frames while ESS >= this fraction (default 0.9).

    Returns:
      [] bool array (jit-friendly); also True when there are no frames.
    """
    if not 0.0 < min_ess_fraction <= 1.0:
        raise ValueError(f"min_ess_fraction must be in (0, 1], got {min_ess_fraction}")
    n = jnp.asarray(n_frames)
    return (n <= 0) | (jnp.asarray(ess) < min_ess_fraction * n)
