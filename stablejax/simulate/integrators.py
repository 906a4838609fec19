"""JAX-MD integrators in stablejax units (eV, Angstrom, fs, amu).

JAX-MD integrators assume consistent units. With energies in eV, lengths in Angstrom and masses in
amu, their time unit is sqrt(amu * Angstrom^2 / eV) ~ 10.18 fs, so a time step of ``dt_fs`` fs is
``dt_fs * stablejax.units.FS`` internal units and a friction of ``gamma`` 1/ps is
``gamma * 1e-3 / FS`` per internal unit. This module does those conversions once.

Integrators (all from ``jax_md.simulate``):
  * ``"nose_hoover"``: Nose-Hoover chain, tau = ``nh_tau_steps`` * dt (20 by default, the
    reference's "ttime 20"; docs/method.md §10). The chain couples to ``n_dof`` degrees of
    freedom; the simulator uses 3N - 3 when the centre-of-mass momentum is removed (it stays zero
    under Nose-Hoover), so that the kinetic temperature computed with 3N - 3 degrees of freedom
    matches the target. (The reference uses 3N, which runs hot by 3N / (3N - 3).)
  * ``"langevin"``: BAOAB Langevin with friction ``gamma_per_ps`` in 1/ps.
  * ``"nve"``: velocity Verlet.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
from jax_md import simulate as jmd_simulate

from stablejax._types import Array
from stablejax.config import INTEGRATORS
from stablejax.units import FS



@dataclasses.dataclass(frozen=True)
class IntegratorSettings:
    """Static integrator settings (validated at construction).

    Attributes:
      name: one of ``INTEGRATORS``.
      dt_fs: time step in fs.
      kT_ev: target thermal energy in eV (required for the thermostats; NVE ignores it).
      n_dof: degrees of freedom the Nose-Hoover chain couples to.
      gamma_per_ps: Langevin friction in 1/ps.
      nh_tau_steps: Nose-Hoover period tau in units of dt.
      nh_chain_length: number of thermostats in the chain.
      nh_chain_steps: outer substeps of the chain integration.
      nh_sy_steps: Suzuki-Yoshida steps (1, 3, 5 or 7).
    """

    name: str
    dt_fs: float
    kT_ev: float | None
    n_dof: int
    gamma_per_ps: float = 0.1
    nh_tau_steps: float = 20.0
    nh_chain_length: int = 5
    nh_chain_steps: int = 2
    nh_sy_steps: int = 3

    def __post_init__(self):
        if self.name not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}, got {self.name!r}")
        if not self.dt_fs > 0:
            raise ValueError(f"dt_fs must be > 0, got {self.dt_fs}")
        if self.name != "nve" and (self.kT_ev is None or not self.kT_ev > 0):
            raise ValueError(
                f"integrator {self.name!r} needs a temperature kT_ev > 0, got {self.kT_ev}"
            )
        if self.name == "langevin" and not self.gamma_per_ps > 0:
            raise ValueError(f"gamma_per_ps must be > 0, got {self.gamma_per_ps}")
        if self.name == "nose_hoover":
            if not self.nh_tau_steps > 0:
                raise ValueError(f"nh_tau_steps must be > 0, got {self.nh_tau_steps}")
            if self.nh_chain_length < 2:
                raise ValueError(f"nh_chain_length must be >= 2, got {self.nh_chain_length}")
            if self.nh_sy_steps not in (1, 3, 5, 7):
                raise ValueError(f"nh_sy_steps must be 1, 3, 5 or 7, got {self.nh_sy_steps}")
            if self.n_dof < 1:
                raise ValueError(f"n_dof must be >= 1, got {self.n_dof}")

    @property
    def dt_internal(self) -> float:
        """Time step in JAX-MD's internal time unit (~10.18 fs)."""
        return float(self.dt_fs) * FS

    @property
    def gamma_internal(self) -> float:
        """Langevin friction per internal time unit."""
        return float(self.gamma_per_ps) * 1e-3 / FS


class IntegratorFns(NamedTuple):
    """A JAX-MD integrator for one replica.

    Attributes:
      init: ``init(key, R, masses, momenta, **energy_kwargs) -> md_state``; ``masses``
        [n_atoms] amu, ``momenta`` [n_atoms, 3] in JAX-MD units
        (see ``velocities.velocities_to_momenta``).
      step: ``step(md_state, **energy_kwargs) -> md_state``, one time step.
    """

    init: Callable[..., Any]
    step: Callable[..., Any]


def _quiet_x32_sums(fn: Callable) -> Callable:
    """Run ``fn`` without JAX's "Explicitly requested dtype float64" warning.

    JAX-MD's kinetic energy uses a "high precision" sum that asks for float64; without x64
    JAX truncates it to float32 and warns every time the Nose-Hoover step is traced. The sum
    is in the state's dtype either way; the warning says nothing to our users.
    """
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Explicitly requested dtype float64",
                                    category=UserWarning)
            return fn(*args, **kwargs)

    return wrapped


#: ``jax_md.simulate.kinetic_energy(state)`` (eV) without the float64-sum warning.
kinetic_energy = _quiet_x32_sums(jmd_simulate.kinetic_energy)


def build_integrator(
    energy_fn: Callable[..., Array], shift_fn: Callable, settings: IntegratorSettings
) -> IntegratorFns:
    """Build the JAX-MD integrator for a bound energy function ``energy_fn(R, **kwargs)`` (eV).

    Cheap (no compilation); the simulator calls it inside its jitted functions so that model
    parameters are traced arguments, not constants.
    """
    fns = _build_integrator(energy_fn, shift_fn, settings)
    return IntegratorFns(_quiet_x32_sums(fns.init), _quiet_x32_sums(fns.step))


def _build_integrator(
    energy_fn: Callable[..., Array], shift_fn: Callable, settings: IntegratorSettings
) -> IntegratorFns:
    s = settings
    dt = s.dt_internal
    if s.name == "nose_hoover":
        init_fn, step_fn = jmd_simulate.nvt_nose_hoover(
            energy_fn,
            shift_fn,
            dt,
            s.kT_ev,
            chain_length=s.nh_chain_length,
            chain_steps=s.nh_chain_steps,
            sy_steps=s.nh_sy_steps,
            tau=s.nh_tau_steps * dt,
        )

        def init(key, R, masses, momenta, **kwargs):
            state = init_fn(key, R, mass=masses, momenta=momenta, **kwargs)
            return state.set(chain=state.chain.set(degrees_of_freedom=s.n_dof))

        return IntegratorFns(init, step_fn)
    if s.name == "langevin":
        init_fn, step_fn = jmd_simulate.nvt_langevin(
            energy_fn, shift_fn, dt, s.kT_ev, gamma=s.gamma_internal
        )

        def init(key, R, masses, momenta, **kwargs):
            return init_fn(key, R, mass=masses, momenta=momenta, **kwargs)

        return IntegratorFns(init, step_fn)
    init_fn, step_fn = jmd_simulate.nve(energy_fn, shift_fn, dt)

    def init(key, R, masses, momenta, **kwargs):
        return init_fn(key, R, 0.0, mass=masses, momenta=momenta, **kwargs)

    return IntegratorFns(init, step_fn)


def set_momenta(md_state: Any, momenta: Array) -> Any:
    """Replace the momenta of one replica's JAX-MD state (vmap for many).

    Keeps a Nose-Hoover chain's stored kinetic energy consistent with the new momenta.
    """
    md_state = md_state.set(momentum=momenta)
    chain = getattr(md_state, "chain", None)
    if chain is not None:
        ke = 0.5 * jnp.sum(momenta**2 / md_state.mass)
        md_state = md_state.set(chain=chain.set(kinetic_energy=ke))
    return md_state
