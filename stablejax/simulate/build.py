"""Simulator of a model for a system, with its per-frame stability criterion: bond lengths for a
molecule, the smallest intermolecular distance for a periodic liquid."""

from __future__ import annotations

import jax.numpy as jnp

from stablejax.config import MDConfig
from stablejax.data.systems import System
from stablejax.models import Model
from stablejax.simulate.rollout import make_simulator
from stablejax.simulate.state import Simulator
from stablejax.stability.criteria import (
    bond_length_criterion,
    min_intermolecular_distance_criterion,
)


def make_simulator_for(model: Model, system: System, md: MDConfig, *,
                       frames_per_chunk: int, mesh=None) -> Simulator:
    """A replica simulator of ``model`` for the molecule ``system`` with the settings ``md``.

    The model's ``displacement_fn``, ``shift_fn`` and ``neighbor_fn`` are passed on; a replica
    is unstable once a bond deviates from its reference length by more than
    ``md.tolerance_angstrom`` (a periodic liquid: once atoms of different molecules come within
    1.2 Angstrom, the paper's water training criterion).

    Args:
      model: the potential (energy eV).
      system: masses (amu), bonds and reference bond lengths (Angstrom).
      md: integrator, temperature, time step, friction / Nose-Hoover period, frame interval,
        tolerance (:class:`stablejax.config.MDConfig`).
      frames_per_chunk: frames per compiled chunk.
      mesh: devices the replicas are split over (:mod:`stablejax.sharding`); None: one.
    """
    from stablejax.evaluate.water import is_periodic_liquid

    if is_periodic_liquid(system):
        criterion = min_intermolecular_distance_criterion(system.molecule_index,
                                                          cell=jnp.asarray(system.cell))
    else:
        criterion = bond_length_criterion(system.bonds, system.reference_bond_lengths,
                                          threshold_angstrom=md.tolerance_angstrom)
    return make_simulator(model.energy_fn, masses=system.masses_amu, dt_fs=md.dt_fs,
                          n_dump=md.n_dump, integrator=md.integrator,
                          temperature_k=md.temperature_k,
                          displacement_fn=model.displacement_fn, shift_fn=model.shift_fn,
                          neighbor_fn=model.neighbor_fn, criterion=criterion,
                          frames_per_chunk=frames_per_chunk, nh_tau_steps=md.nh_tau_steps,
                          gamma_per_ps=md.gamma_per_ps, mesh=mesh)
