"""Basis functions of GemNet (Gasteiger, Becker, Guennemann, NeurIPS 2021).

* :func:`polynomial_envelope`: ``u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``
  for ``x = d / c < 1``, else 0 (the authors' ``Envelope(p)`` with ``p = envelope_exponent``; zero
  with two vanishing derivatives at the cutoff).
* :func:`bessel_rbf`: ``u(d/c) sqrt(2/c) sin(f_n d/c) / d`` with frequencies ``f_n`` (initialised
  to ``n pi``, trainable as in the authors' code).
* :func:`spherical_bessel_rbf`: the radial part of the 2-D spherical Fourier-Bessel basis,
  ``u(d/c) c^-1.5 j_l(z_ln d/c) / sqrt(j_{l+1}(z_ln)^2 / 2)`` with ``z_ln`` the n-th positive
  zero of the spherical Bessel function ``j_l``.
* :func:`zonal_harmonics`: ``Y_l0(theta) = sqrt((2l+1)/(4 pi)) P_l(cos theta)``, the angular part.

``j_l`` is evaluated by its power series below ``x = l`` and by upward recurrence from
``sin x / x`` above (the recurrence alone, like the authors' closed forms, loses most digits in
float32 for small ``x`` and large ``l``).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from scipy import optimize, special

from stablejax._types import Array

_SERIES_TERMS = 20


def polynomial_envelope(x: Array, p: int) -> Array:
    """Smooth cutoff envelope of the scaled distance ``x = d / cutoff`` (0 for ``x >= 1``)."""
    a = -(p + 1) * (p + 2) / 2.0
    b = float(p * (p + 2))
    c = -p * (p + 1) / 2.0
    xs = jnp.minimum(x, 1.0)  # keeps the unused branch bounded
    env = 1.0 + xs**p * (a + xs * (b + c * xs))
    return jnp.where(x < 1.0, env, 0.0)


def bessel_rbf(d: Array, frequencies: Array, cutoff: float, p: int) -> Array:
    """Radial (sine) Bessel basis times the envelope.

    Args:
      d: [...] distances, Angstrom (> 0).
      frequencies: [num_radial] frequencies (``n pi`` at initialisation).
      cutoff: cutoff, Angstrom.
      p: envelope exponent.

    Returns:
      [..., num_radial] basis values, 1/Angstrom.
    """
    x = (d / cutoff)[..., None]
    norm = math.sqrt(2.0 / cutoff)
    return polynomial_envelope(x, p) * norm * jnp.sin(frequencies * x) / d[..., None]


def spherical_bessel_zeros(num_spherical: int, num_radial: int) -> np.ndarray:
    """[num_spherical, num_radial] float64: the first ``num_radial`` positive zeros of ``j_l``.

    The zeros of ``j_l`` interlace those of ``j_{l-1}``, so each is bracketed by two consecutive
    zeros of the previous order (``j_0``'s are ``n pi``).
    """
    n_total = num_radial + num_spherical
    prev = np.pi * np.arange(1, n_total + 1)
    zeros = [prev[:num_radial]]
    for order in range(1, num_spherical):
        cur = np.array([optimize.brentq(lambda x: special.spherical_jn(order, x), a, b)
                        for a, b in zip(prev[:-1], prev[1:])])
        zeros.append(cur[:num_radial])
        prev = cur
    return np.stack(zeros)


def spherical_jn(order: int, x: Array) -> Array:
    """Spherical Bessel function ``j_order(x)`` for ``x > 0`` (see the module docstring)."""
    if order == 0:
        return jnp.sin(x) / x
    # power series, used below x = order: x^l / (2l+1)!! sum_k (-x^2/2)^k / (k! prod (2l+2i+1))
    xs = jnp.minimum(x, float(order))
    term = jnp.ones_like(xs)
    total = term
    for k in range(1, _SERIES_TERMS):
        term = term * (-0.5 * xs * xs) / (k * (2 * order + 2 * k + 1))
        total = total + term
    double_fact = float(np.prod(np.arange(2 * order + 1, 0, -2)))
    series = xs**order / double_fact * total
    # upward recurrence j_{l+1} = (2l+1)/x j_l - j_{l-1}, used at and above x = order
    xr = jnp.maximum(x, float(order))
    j_prev, j_cur = jnp.sin(xr) / xr, jnp.sin(xr) / xr**2 - jnp.cos(xr) / xr
    for ell in range(1, order):
        j_prev, j_cur = j_cur, (2 * ell + 1) / xr * j_cur - j_prev
    return jnp.where(x < order, series, j_cur)


def spherical_bessel_rbf(d: Array, cutoff: float, zeros: np.ndarray, p: int) -> Array:
    """Normalised spherical Bessel radial functions times the envelope.

    Args:
      d: [...] distances, Angstrom (> 0).
      cutoff: cutoff, Angstrom.
      zeros: [num_spherical, num_radial] from :func:`spherical_bessel_zeros`.
      p: envelope exponent.

    Returns:
      [..., num_spherical, num_radial] values, Angstrom^-1.5.
    """
    num_spherical = zeros.shape[0]
    norm = np.stack([1.0 / np.sqrt(0.5 * special.spherical_jn(ell + 1, zeros[ell]) ** 2)
                     for ell in range(num_spherical)]) * cutoff**-1.5
    x = (d / cutoff)[..., None]  # [..., 1]
    rows = [spherical_jn(ell, jnp.asarray(zeros[ell], d.dtype) * x)
            for ell in range(num_spherical)]
    basis = jnp.stack(rows, axis=-2) * jnp.asarray(norm, d.dtype)  # [..., L, N]
    return basis * polynomial_envelope(x, p)[..., None]


def _uniform_gas_rms(values: np.ndarray, d: np.ndarray) -> float:
    """Root mean square of ``values`` [n_d, ...] over distances uniform in the cutoff sphere
    (density proportional to d^2 on the grid ``d``) and over the trailing axes."""
    w = d**2 / np.sum(d**2)
    return float(np.sqrt(np.sum(w * np.mean(values.reshape(len(d), -1) ** 2, axis=1))))


def _grid(cutoff: float, n: int = 4000) -> np.ndarray:
    return (np.arange(n) + 0.5) * (cutoff / n)


def _envelope_np(x: np.ndarray, p: int) -> np.ndarray:
    env = (1.0 - (p + 1) * (p + 2) / 2.0 * x**p + p * (p + 2) * x ** (p + 1)
           - p * (p + 1) / 2.0 * x ** (p + 2))
    return np.where(x < 1.0, env, 0.0)


def bessel_rbf_rms(cutoff: float, num_radial: int, p: int) -> float:
    """RMS of :func:`bessel_rbf` (frequencies ``n pi``) over a uniform gas inside the cutoff."""
    d = _grid(cutoff)
    x = d / cutoff
    n = np.arange(1, num_radial + 1)
    values = (_envelope_np(x, p) * np.sqrt(2.0 / cutoff))[:, None] * np.sin(n * np.pi * x[:, None])
    return _uniform_gas_rms(values / d[:, None], d)


def spherical_bessel_rbf_rms(cutoff: float, zeros: np.ndarray, p: int) -> float:
    """RMS of :func:`spherical_bessel_rbf` over a uniform gas inside the cutoff."""
    d = _grid(cutoff)
    x = d / cutoff
    rows = []
    for ell in range(zeros.shape[0]):
        norm = 1.0 / np.sqrt(0.5 * special.spherical_jn(ell + 1, zeros[ell]) ** 2)
        rows.append(special.spherical_jn(ell, zeros[ell] * x[:, None]) * norm)
    values = np.stack(rows, axis=1) * cutoff**-1.5 * _envelope_np(x, p)[:, None, None]
    return _uniform_gas_rms(values, d)


def zonal_harmonics(cos_angle: Array, num_spherical: int) -> Array:
    """[..., num_spherical] real spherical harmonics ``Y_l0`` of an angle given by its cosine."""
    legendre = [jnp.ones_like(cos_angle), cos_angle]
    for ell in range(1, num_spherical - 1):
        legendre.append(((2 * ell + 1) * cos_angle * legendre[ell] - ell * legendre[ell - 1])
                        / (ell + 1))
    norms = [math.sqrt((2 * ell + 1) / (4 * math.pi)) for ell in range(num_spherical)]
    return jnp.stack([n * pl for n, pl in zip(norms, legendre[:num_spherical])], axis=-1)
