"""Adapters: any JAX-MD potential as a stablejax :class:`~stablejax.models.core.Model`.

A JAX-MD potential is a factory ``make(params) -> f(R, **kwargs)``; the adapter gives the
protocol of :mod:`stablejax.models.core`, ``energy_fn(params, R, **kwargs) =
make(params)(R, **kwargs)``.
Building the JAX-MD closure inside ``energy_fn`` costs nothing at run time: it is traced once.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax_md import energy, partition, smap, space

from stablejax._types import Array, Params
from stablejax.models import neighbors as nb
from stablejax.models.core import Model


def jax_md_model(
    make_energy: Callable[[Params], Callable[..., Array]],
    params: Params,
    *,
    displacement_fn: Callable[..., Array],
    shift_fn: Callable[..., Array],
    neighbor_fn: partition.NeighborListFns | None = None,
    make_per_atom_energy: Callable[[Params], Callable[..., Array]] | None = None,
) -> Model:
    """Wrap a parametrised JAX-MD energy as a :class:`Model`.

    Args:
      make_energy: ``params -> f(R, **kwargs)`` returning the total energy in eV, e.g.
        ``lambda p: jax_md.energy.morse_pair(disp, sigma=p["sigma"], ...)``.
      params: initial parameters (a pytree); ``init`` returns them as arrays.
      displacement_fn: JAX-MD displacement function of the space.
      shift_fn: JAX-MD shift function of the space.
      neighbor_fn: the neighbour-list functions when ``f`` takes ``neighbor=``.
      make_per_atom_energy: optional ``params -> f(R, **kwargs) -> [n_atoms]`` eV.

    Returns:
      A :class:`Model` whose ``init(key, R)`` ignores ``key`` and ``R``.
    """
    params0 = jax.tree.map(jnp.asarray, params)

    def init(key: Array, R: Array, **kwargs: Any) -> Params:
        del key, R, kwargs
        return params0

    def energy_fn(p: Params, R: Array, **kwargs: Any) -> Array:
        return make_energy(p)(R, **kwargs)

    per_atom = None
    if make_per_atom_energy is not None:
        def per_atom(p: Params, R: Array, **kwargs: Any) -> Array:
            return make_per_atom_energy(p)(R, **kwargs)

    return Model(init, energy_fn, per_atom, neighbor_fn, displacement_fn, shift_fn)


def lennard_jones_safe(dr: Array, sigma: Array = 1.0, epsilon: Array = 1.0,
                       **unused_kwargs: Any) -> Array:
    """``4 eps ((sigma/r)^12 - (sigma/r)^6)``, 0 at ``r == 0`` with finite parameter gradients.

    Same values as ``jax_md.energy.lennard_jones`` wherever ``r > 0``. JAX-MD's version evaluates
    ``sigma / 0`` on the (masked) diagonal and padded neighbour slots; its ``nan_to_num`` hides
    the value but not the derivative, so ``d E / d sigma`` and ``d E / d epsilon`` come out NaN.

    Pairs closer than ``1e-2 * sigma`` count as self/padding pairs and contribute 0: JAX-MD's
    empty neighbour slots point at the last atom, whose periodic self-distance under ``jit`` can
    come out as ~1e-6 A instead of 0, and ``(sigma/1e-6)^12`` overflows float32 (inf * 0 = NaN
    after masking). A real pair that close has ~1e22 eV and is unstable long before.
    """
    del unused_kwargs
    ok = dr > 1e-2 * sigma
    idr6 = (sigma / jnp.where(ok, dr, 1.0)) ** 6
    return jnp.where(ok, 4.0 * epsilon * (idr6 * idr6 - idr6), 0.0)


def lennard_jones_model(
    *,
    box: Any = None,
    sigma: Any = 1.0,
    epsilon: Any = 1.0,
    r_onset: float = 2.0,
    r_cutoff: float = 2.5,
    cutoff_angstrom: float | None = None,
    onset_angstrom: float | None = None,
    species: Any = None,
    neighbor_format: Any = "dense",
    dr_threshold_angstrom: float = 0.5,
    capacity_multiplier: float = 1.25,
    dtype: Any = jnp.float32,
) -> Model:
    """Lennard-Jones with learnable ``params = {"sigma": ..., "epsilon": ...}``.

    Equivalent to the literal JAX-MD recipe ``jax_md.energy.lennard_jones_pair(disp,
    sigma=p["sigma"], epsilon=p["epsilon"])(R, **kw)`` (and ``lennard_jones_neighbor_list`` for
    periodic boxes, which need ``neighbor=``): same ``smap`` pair sum and smooth cutoff, but with
    :func:`lennard_jones_safe`, because JAX-MD's pair function gives NaN gradients with respect
    to sigma and epsilon.

    Args:
      box: None (free space) or a periodic box as in :func:`~stablejax.models.make_model`.
      sigma: initial sigma, Angstrom (scalar, or [n_species, n_species] with ``species``).
      epsilon: initial epsilon, eV (same shapes as sigma).
      r_onset: start of the smooth cutoff, in units of max(sigma) (JAX-MD convention).
      r_cutoff: cutoff, in units of max(sigma).
      cutoff_angstrom, onset_angstrom: a fixed cutoff and switching onset in Angstrom instead
        (give both): they do not move with sigma, so a periodic model's neighbour list stays
        exact while sigma is trained.
      species: optional [n_atoms] int species indices for per-pair sigma/epsilon matrices.
      neighbor_format: ``'dense'`` or ``'sparse'`` (periodic boxes only).
      dr_threshold_angstrom: neighbour-list skin, Angstrom (periodic boxes only).
      capacity_multiplier: neighbour-list spare capacity (periodic boxes only).
      dtype: dtype of the initial parameters.

    Returns:
      A :class:`Model`. For periodic boxes the neighbour list is built for the cutoff plus the
      skin; with a cutoff in units of sigma that is the INITIAL ``r_cutoff * max(sigma)``, and
      if training grows sigma past it pairs are missed: train sigma with ``cutoff_angstrom``.
    """
    params = {"sigma": jnp.asarray(sigma, dtype), "epsilon": jnp.asarray(epsilon, dtype)}
    if params["sigma"].shape != params["epsilon"].shape:
        raise ValueError(f"sigma and epsilon must have the same shape, got "
                         f"{params['sigma'].shape} and {params['epsilon'].shape}")
    if species is None and params["sigma"].ndim != 0:
        raise ValueError("per-pair sigma/epsilon matrices need species=[n_atoms] indices")
    if (cutoff_angstrom is None) != (onset_angstrom is None):
        raise ValueError("give both cutoff_angstrom and onset_angstrom, or neither")
    fixed = cutoff_angstrom is not None
    if fixed and not 0 < onset_angstrom < cutoff_angstrom:
        raise ValueError(f"need 0 < onset_angstrom < cutoff_angstrom, got {onset_angstrom} and "
                         f"{cutoff_angstrom}")
    cutoff = float(cutoff_angstrom) if fixed else float(r_cutoff * jnp.max(params["sigma"]))
    displacement_fn, shift_fn, b = nb.make_space(box, cutoff)
    neighbor_fn = None
    if b is not None:
        neighbor_fn = nb.make_neighbor_fn(displacement_fn, b, cutoff, fmt=neighbor_format,
                                          dr_threshold_angstrom=dr_threshold_angstrom,
                                          capacity_multiplier=capacity_multiplier)
    metric = space.canonicalize_displacement_or_metric(displacement_fn)

    def make(p: Params, per_particle: bool = False) -> Callable[..., Array]:
        if fixed:
            r_on, r_off = onset_angstrom, cutoff_angstrom
        else:
            s_max = jnp.max(p["sigma"])
            r_on, r_off = r_onset * s_max, r_cutoff * s_max
        fn = energy.multiplicative_isotropic_cutoff(lennard_jones_safe, r_on, r_off)
        pair = smap.pair if b is None else smap.pair_neighbor_list
        return pair(fn, metric, ignore_unused_parameters=True, species=species,
                    sigma=p["sigma"], epsilon=p["epsilon"],
                    reduce_axis=(1,) if per_particle else None)

    return jax_md_model(make, params, displacement_fn=displacement_fn, shift_fn=shift_fn,
                        neighbor_fn=neighbor_fn,
                        make_per_atom_energy=lambda p: make(p, per_particle=True))
