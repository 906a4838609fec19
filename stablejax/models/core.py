"""The model protocol: ``make_model(cfg, atomic_numbers, ...) -> Model`` and ``bind``.

Every potential in stablejax is a :class:`Model`, a NamedTuple of pure functions
whose energy follows the protocol ``energy_fn(params, R, **kwargs) -> scalar`` in eV, with
forces ``-jax.grad(energy_fn, argnums=1)``::

    model = make_model(SchNetConfig(), frames.atomic_numbers,
                       energy_shift=stats.shift, energy_scale=stats.scale)
    params = model.init(key, R)
    E = model.energy_fn(params, R)                     # scalar, eV
    F = -jax.grad(model.energy_fn, argnums=1)(params, R)  # [n_atoms, 3], eV/Angstrom
    batch = jax.vmap(jax.value_and_grad(model.energy_fn, argnums=1), in_axes=(None, 0))

Free molecules (``box=None``) use all atom pairs (a static dense table; masked beyond the cutoff)
and need no neighbour list. Periodic boxes use ``jax_md.space.periodic_general`` and a JAX-MD
neighbour list: ``nbrs = model.neighbor_fn.allocate(R)``, ``model.energy_fn(params, R,
neighbor=nbrs)``, ``nbrs = nbrs.update(R)`` inside jitted loops. Overflow is NOT raised inside
``jit``: after each jitted chunk the caller checks ``nbrs.did_buffer_overflow`` and, if set,
reallocates (``model.neighbor_fn.allocate(R)``) and redoes the chunk.

Per-atom energies are ``E_i = scale[s_i] * y_i + shift[s_i]`` with ``y_i`` the network output;
the total energy is their sum. Scale and shift are constants closed over by the model (not
parameters): store them with the experiment (see ``stablejax.models.normalisation``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import chemical_symbols
from jax_md import partition

from stablejax._types import Array, EnergyFn, Params
from stablejax.models import neighbors as nb
from stablejax.models.config import GemNetTConfig, ModelConfig, NequIPConfig, SchNetConfig
from stablejax.models.gemnet import GemNetT
from stablejax.models.nequip import NequIP
from stablejax.models.schnet import SchNet

logger = logging.getLogger(__name__)


class Model(NamedTuple):
    """A potential following the stablejax protocol.

    Attributes:
      init: ``init(key, R, **kwargs) -> params``; R [n_atoms, 3] Angstrom (only its shape and
        dtype matter; no neighbour list needed).
      energy_fn: ``energy_fn(params, R, **kwargs) -> []`` total energy, eV. Periodic models need
        ``neighbor=``; other kwargs go to the displacement function (e.g. ``box=``).
      per_atom_energy_fn: ``(params, R, **kwargs) -> [n_atoms]`` eV; sums to ``energy_fn``.
        ``None`` for adapters of potentials without a per-atom form.
      neighbor_fn: ``jax_md.partition.NeighborListFns`` for periodic boxes, None for free
        molecules. The caller checks ``nbrs.did_buffer_overflow`` and reallocates.
      displacement_fn: JAX-MD displacement ``d(Ra, Rb) = Ra - Rb`` (minimum image if periodic).
      shift_fn: JAX-MD shift ``shift(R, dR)`` (wraps into the box if periodic).
      edges_fn: ``edges_fn(R, neighbor=None) -> Edges`` the graph the model sees (None for
        adapters).
    """

    init: Callable[..., Params]
    energy_fn: EnergyFn
    per_atom_energy_fn: Callable[..., Array] | None
    neighbor_fn: partition.NeighborListFns | None
    displacement_fn: Callable[..., Array]
    shift_fn: Callable[..., Array]
    edges_fn: Callable[..., Any] | None = None


def bind(energy_fn: EnergyFn, params: Params) -> Callable[..., Array]:
    """JAX-MD's energy signature ``f(R, **kwargs) -> scalar`` with ``params`` fixed."""
    return functools.partial(energy_fn, params)


def species_index(atomic_numbers: Any, species: tuple[int, ...] | None = None
                  ) -> tuple[tuple[int, ...], np.ndarray]:
    """Map atomic numbers to model species indices.

    Args:
      atomic_numbers: [n_atoms] int atomic numbers.
      species: the model's species list (order = embedding rows); ``None`` = sorted unique
        atomic numbers of the system.

    Returns:
      ``(species, index)`` with ``index`` [n_atoms] int32 in ``0..len(species)-1``.

    Raises:
      ValueError: for a bad shape or atomic numbers not in ``species`` (named).
    """
    z = np.asarray(atomic_numbers)
    if z.ndim != 1 or z.size == 0 or not np.issubdtype(z.dtype, np.integer):
        raise ValueError(f"atomic_numbers must be a non-empty 1-D integer array, "
                         f"got shape {z.shape} dtype {z.dtype}")
    if species is None:
        species = tuple(int(v) for v in np.unique(z))
    missing = sorted(set(int(v) for v in z) - set(species))
    if missing:
        names = [chemical_symbols[v] if 0 < v < len(chemical_symbols) else "?" for v in missing]
        raise ValueError(f"atomic numbers {missing} ({names}) are not in the model's species "
                         f"list {list(species)}; add them to the config's species")
    lookup = {s: i for i, s in enumerate(species)}
    return tuple(species), np.array([lookup[int(v)] for v in z], dtype=np.int32)


def per_species_values(value: Any, species: tuple[int, ...], name: str) -> np.ndarray:
    """A per-species constant from a scalar, a ``{Z: value}`` mapping or a [n_species] array.

    Raises:
      ValueError: for missing/unknown species in a mapping, a wrong length or non-finite values.
    """
    if isinstance(value, Mapping):
        keys = {int(k) for k in value}
        unknown, missing = sorted(keys - set(species)), sorted(set(species) - keys)
        if unknown or missing:
            raise ValueError(f"{name}: mapping keys must be the model species {list(species)}; "
                             f"unknown {unknown}, missing {missing}")
        out = np.array([float(value[k]) for k in species])
    else:
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            out = np.full(len(species), float(arr))
        elif arr.shape == (len(species),):
            out = arr.copy()
        else:
            raise ValueError(f"{name} must be a scalar, a {{Z: value}} mapping or an array of "
                             f"shape [{len(species)}] (species {list(species)}), got {arr.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} has non-finite values: {out.tolist()}")
    return out


def _module(cfg: ModelConfig, n_species: int, avg_num_neighbors: float | None):
    dtype = jnp.dtype(cfg.param_dtype)
    if isinstance(cfg, SchNetConfig):
        return SchNet(n_species=n_species, cutoff=cfg.cutoff, hidden_features=cfg.hidden_features,
                      n_filters=cfg.n_filters, n_interactions=cfg.n_interactions,
                      n_gaussians=cfg.n_gaussians, param_dtype=dtype)
    if isinstance(cfg, (NequIPConfig, GemNetTConfig)):
        what = "NequIP" if isinstance(cfg, NequIPConfig) else "GemNet-T"
        if avg_num_neighbors is None:
            raise ValueError(f"{what} needs avg_num_neighbors: compute it from the training data "
                             "with stablejax.models.average_num_neighbors(frames, "
                             "cfg.cutoff_angstrom)")
        if not (np.isfinite(avg_num_neighbors) and avg_num_neighbors > 0):
            raise ValueError(
                f"avg_num_neighbors must be a positive number, got {avg_num_neighbors}")
    if isinstance(cfg, NequIPConfig):
        return NequIP(n_species=n_species, avg_num_neighbors=float(avg_num_neighbors),
                      r_max=cfg.cutoff, n_layers=cfg.n_layers, l_max=cfg.l_max,
                      parity=cfg.parity, hidden_irreps=cfg.hidden_irreps, n_bessel=cfg.n_bessel,
                      poly_p=cfg.poly_p, radial_hidden=cfg.radial_hidden,
                      radial_layers=cfg.radial_layers, param_dtype=dtype)
    if isinstance(cfg, GemNetTConfig):
        return GemNetT(n_species=n_species, avg_num_neighbors=float(avg_num_neighbors),
                       cutoff=cfg.cutoff, n_blocks=cfg.n_blocks, emb_size_atom=cfg.emb_size_atom,
                       emb_size_edge=cfg.emb_size_edge, emb_size_rbf=cfg.emb_size_rbf,
                       emb_size_cbf=cfg.emb_size_cbf, emb_size_trip=cfg.emb_size_trip,
                       emb_size_bil_trip=cfg.emb_size_bil_trip, num_radial=cfg.num_radial,
                       num_spherical=cfg.num_spherical, envelope_exponent=cfg.envelope_exponent,
                       num_before_skip=cfg.num_before_skip, num_after_skip=cfg.num_after_skip,
                       num_concat=cfg.num_concat, num_atom=cfg.num_atom,
                       max_neighbors=cfg.max_neighbors, output_init=cfg.output_init,
                       trainable_scales=cfg.trainable_scales, param_dtype=dtype)
    raise TypeError(f"cfg must be a SchNetConfig, NequIPConfig or GemNetTConfig, got "
                    f"{type(cfg).__name__}")


def make_model(
    cfg: ModelConfig,
    atomic_numbers: Any,
    *,
    box: Any = None,
    energy_shift: Any = 0.0,
    energy_scale: Any = 1.0,
    avg_num_neighbors: float | None = None,
    neighbor_format: Any = "dense",
    dr_threshold_angstrom: float | None = None,
    capacity_multiplier: float | None = None,
) -> Model:
    """Build a SchNet, NequIP or GemNet-T potential for one system (fixed atoms and species).

    Args:
      cfg: :class:`SchNetConfig`, :class:`NequIPConfig` or :class:`GemNetTConfig`.
      atomic_numbers: [n_atoms] int, the system's atoms in position order.
      box: None for a free molecule; else the periodic box in JAX-MD's convention (scalar, [3]
        or [3, 3] with lattice vectors as COLUMNS, i.e. ``frames.cell.T``), Angstrom. Each box
        width must be >= 2 x cutoff.
      energy_shift: per-atom energy shift, eV: scalar, ``{Z: eV}`` or [n_species] array.
      energy_scale: per-atom energy scale, eV: scalar, ``{Z: eV}`` or [n_species] array.
      avg_num_neighbors: mean neighbour count within the cutoff (NequIP and GemNet-T only,
        required there);
        see :func:`stablejax.models.average_num_neighbors`.
      neighbor_format: ``'dense'`` or ``'sparse'`` neighbour lists (periodic boxes only).
      dr_threshold_angstrom: neighbour-list skin, Angstrom (periodic boxes only; None: 0.5, or
        0.2 for GemNet-T, whose triplets cost the square of the list's slots per atom: on the
        64-water box a 0.2 A skin halves the energy+force time of the 0.5 A one at the price of
        a list rebuild every few MD steps).
      capacity_multiplier: neighbour-list spare capacity (periodic boxes only; None: 1.25, or
        1.15 for GemNet-T). A list that overflows in MD is reallocated larger, never truncated.

    Returns:
      A :class:`Model`. Parameters are a Flax variables dict in ``cfg.param_dtype``; the energy
      is computed in the dtype of ``R``.

    Raises:
      ValueError: for unknown species, bad normalisation constants, a bad box, or a missing
        ``avg_num_neighbors`` for NequIP or GemNet-T.
    """
    species, index = species_index(atomic_numbers, cfg.species)
    n_atoms = int(index.shape[0])
    shift = per_species_values(energy_shift, species, "energy_shift")
    scale = per_species_values(energy_scale, species, "energy_scale")
    module = _module(cfg, len(species), avg_num_neighbors)
    if (isinstance(cfg, GemNetTConfig) and box is not None
            and nb.neighbor_format(neighbor_format) is not partition.NeighborListFormat.Dense):
        raise ValueError(f"GemNet-T needs neighbor_format='dense' (its triplets and reverse edges "
                         f"use the dense layout), got {neighbor_format!r}")
    triplets = isinstance(cfg, GemNetTConfig)
    if dr_threshold_angstrom is None:
        dr_threshold_angstrom = 0.2 if triplets else 0.5
    if capacity_multiplier is None:
        capacity_multiplier = 1.15 if triplets else 1.25
    cutoff = cfg.cutoff
    displacement_fn, shift_fn, b = nb.make_space(box, cutoff)
    periodic = b is not None
    neighbor_fn = None
    if periodic:
        neighbor_fn = nb.make_neighbor_fn(displacement_fn, b, cutoff, fmt=neighbor_format,
                                          dr_threshold_angstrom=dr_threshold_angstrom,
                                          capacity_multiplier=capacity_multiplier)
    shift_atoms, scale_atoms = shift[index], scale[index]  # [n_atoms] float64 numpy
    param_dtype = jnp.dtype(cfg.param_dtype)

    def check_positions(R: Array) -> None:
        if R.shape != (n_atoms, 3):
            raise ValueError(f"R must have shape [{n_atoms}, 3] (this model's atoms), got "
                             f"{R.shape}; use jax.vmap for batches of replicas")
        if not jnp.issubdtype(R.dtype, jnp.floating):
            raise ValueError(f"R must be floating point (Angstrom), got dtype {R.dtype}")

    def edges_of(R: Array, neighbor: partition.NeighborList | None, kwargs: dict) -> nb.Edges:
        if neighbor is not None:
            return nb.neighbor_list_edges(R, neighbor, cutoff, displacement_fn, **kwargs)
        if periodic:
            raise ValueError("this model is periodic: pass neighbor=nbrs with "
                             "nbrs = model.neighbor_fn.allocate(R) (then nbrs.update(R))")
        return nb.all_pairs_edges(R, cutoff)

    def init(key: Array, R: Array, **kwargs: Any) -> Params:
        """Initialise parameters (``kwargs`` are ignored; no neighbour list needed)."""
        del kwargs
        R = jnp.asarray(R)
        check_positions(R)
        disp = displacement_fn if periodic else None
        variables = module.init(key, jnp.asarray(index), nb.all_pairs_edges(R, cutoff, disp))
        return jax.tree.map(lambda x: jnp.asarray(x, param_dtype), variables)

    def per_atom_energy_fn(params: Params, R: Array, neighbor=None, **kwargs: Any) -> Array:
        """[n_atoms] per-atom energies, eV, in the dtype of R."""
        check_positions(R)
        y = module.apply(params, jnp.asarray(index), edges_of(R, neighbor, kwargs))
        return (jnp.asarray(scale_atoms, R.dtype) * y.astype(R.dtype)
                + jnp.asarray(shift_atoms, R.dtype))

    def energy_fn(params: Params, R: Array, **kwargs: Any) -> Array:
        """Total energy, eV (scalar in the dtype of R)."""
        return jnp.sum(per_atom_energy_fn(params, R, **kwargs))

    logger.debug("built %s for %d atoms, species %s, periodic=%s", type(module).__name__,
                 n_atoms, species, periodic)
    return Model(init, energy_fn, per_atom_energy_fn, neighbor_fn, displacement_fn, shift_fn,
                 lambda R, neighbor=None, **kwargs: edges_of(R, neighbor, kwargs))
