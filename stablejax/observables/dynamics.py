"""Velocity autocorrelation, mean-squared displacement and diffusivity.

Inputs are time series of one trajectory: positions [n_frames, n_atoms, 3] Angstrom (unwrapped:
use ``Trajectory.unwrapped_positions`` or ``unwrap_positions``) and velocities
[n_frames, n_atoms, 3] Angstrom/fs, frames ``frame_dt_fs`` apart. Averages run over all time
origins t with t + lag inside the trajectory and over the selected atoms. ``jax.vmap`` over
replicas.

Diffusivity D from the Einstein relation MSD(t) -> 6 D t, in Angstrom^2/fs; multiply by
``ANGSTROM2_PER_FS_IN_1E9_M2_PER_S`` (= 1e4) for 10^-9 m^2/s (1 Angstrom^2/fs = 1e-5 m^2/s).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stablejax._types import Array
from stablejax.observables.distances import minimum_image

#: 1 Angstrom^2/fs = 1e-20 m^2 / 1e-15 s = 1e-5 m^2/s = 1e4 * (1e-9 m^2/s).
ANGSTROM2_PER_FS_IN_1E9_M2_PER_S: float = 1.0e4


def _check_series(x: Array, max_lag: int, name: str) -> None:
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [n_frames, n_atoms, 3], got {x.shape}")
    if not 0 <= max_lag < x.shape[0]:
        raise ValueError(
            f"max_lag must lie in [0, n_frames - 1] = [0, {x.shape[0] - 1}], got {max_lag}"
        )


def _lag_average(x: Array, max_lag: int, pair_fn, atom_mask: Array | None) -> Array:
    """mean over origins t and atoms of pair_fn(x[t], x[t + lag]) for lag = 0..max_lag."""
    x = jnp.asarray(x)  # numpy input: indexed by traced lags below
    T = x.shape[0]
    t = jnp.arange(T)
    w_atom = jnp.ones(x.shape[1], x.dtype) if atom_mask is None else jnp.asarray(atom_mask, x.dtype)

    def one_lag(lag):
        later = x[jnp.minimum(t + lag, T - 1)]
        val = pair_fn(x, later)  # [T, n_atoms]
        w = (t + lag < T).astype(x.dtype)[:, None] * w_atom[None, :]
        return jnp.sum(val * w) / jnp.sum(w)

    return jax.lax.map(one_lag, jnp.arange(max_lag + 1))


def msd(positions: Array, max_lag: int, *, atom_mask: Array | None = None) -> Array:
    """Mean-squared displacement [max_lag + 1] (Angstrom^2) at lags 0..max_lag frames.

    Args:
      positions: [n_frames, n_atoms, 3] unwrapped positions, Angstrom.
      max_lag: largest lag in frames (< n_frames).
      atom_mask: optional [n_atoms] bool/float, atoms to include (e.g. oxygens).
    """
    _check_series(positions, max_lag, "positions")
    return _lag_average(
        positions, max_lag, lambda a, b: jnp.sum((b - a) ** 2, axis=-1), atom_mask
    )


def vacf(
    velocities: Array, max_lag: int, *, atom_mask: Array | None = None, normalize: bool = False
) -> Array:
    """Velocity autocorrelation <v(t) . v(t + lag)> [max_lag + 1] in (Angstrom/fs)^2, or divided by
    its lag-0 value with ``normalize``."""
    _check_series(velocities, max_lag, "velocities")
    c = _lag_average(velocities, max_lag, lambda a, b: jnp.sum(a * b, axis=-1), atom_mask)
    return c / c[0] if normalize else c


def diffusivity(
    positions: Array,
    frame_dt_fs: float,
    *,
    max_lag: int | None = None,
    atom_mask: Array | None = None,
    method: str = "last_lag",
    fit_start_lag: int | None = None,
) -> Array:
    """Self-diffusion coefficient D in Angstrom^2/fs from the Einstein relation.

    Args:
      positions: [n_frames, n_atoms, 3] unwrapped positions, Angstrom.
      frame_dt_fs: time between frames, fs.
      max_lag: largest lag in frames (default n_frames - 1).
      atom_mask: optional [n_atoms] atoms to include.
      method: ``"last_lag"``: MSD(t_max) / (6 t_max), averaged over time origins (the reference
        implementation's water evaluation; water is planned, docs/method.md §10.3);
        ``"fit"``: least-squares slope of MSD(t) over lags [fit_start_lag, max_lag] divided by 6
        (removes the ballistic offset).
      fit_start_lag: first lag of the fit (default max_lag // 5).

    Returns:
      scalar D, Angstrom^2/fs.
    """
    if max_lag is None:
        max_lag = positions.shape[0] - 1
    if max_lag < 1:
        raise ValueError(f"diffusivity needs max_lag >= 1, got {max_lag}")
    m = msd(positions, max_lag, atom_mask=atom_mask)
    t = jnp.arange(max_lag + 1, dtype=m.dtype) * frame_dt_fs
    if method == "last_lag":
        return m[-1] / (6.0 * t[-1])
    if method == "fit":
        start = max_lag // 5 if fit_start_lag is None else int(fit_start_lag)
        if not 0 <= start < max_lag:
            raise ValueError(f"fit_start_lag must lie in [0, {max_lag - 1}], got {start}")
        tt, mm = t[start:], m[start:]
        slope = jnp.sum((tt - tt.mean()) * (mm - mm.mean())) / jnp.sum((tt - tt.mean()) ** 2)
        return slope / 6.0
    raise ValueError(f"method must be 'last_lag' or 'fit', got {method!r}")


def unwrap_positions(positions: Array, cell: Array) -> Array:
    """Unwrap periodic frames [n_frames, n_atoms, 3] by summing minimum-image displacements
    between consecutive frames (valid while no atom moves more than half a box between frames)."""
    steps = minimum_image(positions[1:] - positions[:-1], cell)
    return jnp.concatenate(
        [positions[:1], positions[:1] + jnp.cumsum(steps, axis=0)], axis=0
    )
