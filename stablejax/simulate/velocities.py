"""Maxwell-Boltzmann velocities, kinetic energy and kinetic temperature.

Units: velocities in Angstrom/fs, masses in amu, energies and kT in eV. JAX-MD integrators work
in the time unit of (eV, Angstrom, amu), sqrt(amu * Angstrom^2 / eV) ~ 10.18 fs; momenta inside
a JAX-MD state are in amu * Angstrom / that unit. The two helpers ``velocities_to_momenta`` and
``momenta_to_velocities`` are the only places where that conversion happens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stablejax._types import Array
from stablejax.units import FS, KB_EV_PER_K


def degrees_of_freedom(n_atoms: int, *, remove_com: bool) -> int:
    """Kinetic degrees of freedom: 3N, or 3N - 3 with the centre-of-mass momentum removed."""
    return 3 * int(n_atoms) - (3 if remove_com else 0)


def velocities_to_momenta(velocities: Array, masses_amu: Array) -> Array:
    """Velocities [..., n_atoms, 3] Angstrom/fs, masses [n_atoms] amu -> JAX-MD momenta
    (amu * Angstrom / ~10.18 fs)."""
    return velocities * (jnp.asarray(masses_amu)[:, None] / FS)


def momenta_to_velocities(momenta: Array, masses_amu: Array) -> Array:
    """JAX-MD momenta [..., n_atoms, 3] and masses [n_atoms] amu -> velocities in Angstrom/fs."""
    return momenta * (FS / jnp.asarray(masses_amu)[:, None])


def kinetic_energy_ev(velocities: Array, masses_amu: Array) -> Array:
    """Kinetic energy in eV of velocities [..., n_atoms, 3] (Angstrom/fs); returns shape [...]."""
    v_internal = velocities / FS
    m = jnp.asarray(masses_amu)[:, None]
    return 0.5 * jnp.sum(m * v_internal**2, axis=(-2, -1))


def kinetic_temperature_k(kinetic_energy: Array, n_dof: int) -> Array:
    """Instantaneous kinetic temperature in K, T = 2 KE / (n_dof k_B), KE in eV."""
    return 2.0 * kinetic_energy / (n_dof * KB_EV_PER_K)


def maxwell_boltzmann_velocities(
    key: Array,
    masses_amu: Array,
    kT_ev: float,
    *,
    remove_com: bool = True,
    rescale: bool = False,
    dtype=None,
) -> Array:
    """Draw velocities from the Maxwell-Boltzmann distribution (Gaussian components).

    Each Cartesian component of atom i is N(0, kT/m_i). The centre-of-mass momentum is then
    removed (``remove_com``); with ``rescale`` the velocities are scaled so that the kinetic
    energy equals exactly n_dof * kT / 2 (n_dof = 3N - 3 or 3N).

    Args:
      key: PRNG key.
      masses_amu: [n_atoms] masses in amu.
      kT_ev: thermal energy in eV.
      remove_com: remove the centre-of-mass momentum.
      rescale: rescale to the exact target kinetic energy.
      dtype: float dtype of the result (default: the dtype of ``masses_amu``).

    Returns:
      [n_atoms, 3] velocities in Angstrom/fs.

    Raises:
      ValueError: for masses that are not a 1-D array, or one atom with ``remove_com``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> v = maxwell_boltzmann_velocities(jax.random.key(0), jnp.array([16.0, 1.0, 1.0]), 0.0431)
      >>> v.shape
      (3, 3)
    """
    m = jnp.asarray(masses_amu)
    if m.ndim != 1:
        raise ValueError(f"masses_amu must have shape [n_atoms], got {m.shape}")
    if remove_com and m.shape[0] < 2:
        raise ValueError("remove_com=True needs at least 2 atoms (1 atom would keep no momentum)")
    dtype = dtype or (m.dtype if jnp.issubdtype(m.dtype, jnp.floating) else jnp.float32)
    m = m.astype(dtype)
    # Velocity components in the internal time unit have variance kT/m.
    v_int = jax.random.normal(key, (m.shape[0], 3), dtype=dtype) * jnp.sqrt(kT_ev / m)[:, None]
    if remove_com:
        v_com = jnp.sum(m[:, None] * v_int, axis=0) / jnp.sum(m)
        v_int = v_int - v_com
    if rescale:
        ke = 0.5 * jnp.sum(m[:, None] * v_int**2)
        target = 0.5 * degrees_of_freedom(m.shape[0], remove_com=remove_com) * kT_ev
        v_int = v_int * jnp.sqrt(target / ke)
    return v_int * FS
