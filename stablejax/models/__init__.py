"""Force fields following the stablejax energy protocol.

``energy_fn(params, R, **kwargs) -> scalar`` in eV with R [n_atoms, 3] in Angstrom; forces are
``-jax.grad(energy_fn, argnums=1)``. Build a model with :func:`make_model` (SchNet, NequIP, GemNet-T) or an
adapter (:func:`lennard_jones_model`, :func:`jax_md_model`); see :mod:`stablejax.models.core`.
"""

from stablejax.models.config import GemNetTConfig, ModelConfig, NequIPConfig, SchNetConfig
from stablejax.models.core import Model, bind, make_model, per_species_values, species_index
from stablejax.models.gemnet import GemNetT, gemnet_parameter_count
from stablejax.models.neighbors import Edges, all_pairs_edges, neighbor_list_edges
from stablejax.models.nequip import NequIP
from stablejax.models.normalisation import (
    EnergyStatistics,
    average_num_neighbors,
    energy_statistics,
)
from stablejax.models.pair import jax_md_model, lennard_jones_model
from stablejax.models.schnet import SchNet

__all__ = [
    "Edges",
    "EnergyStatistics",
    "GemNetT",
    "GemNetTConfig",
    "Model",
    "ModelConfig",
    "NequIP",
    "NequIPConfig",
    "SchNet",
    "SchNetConfig",
    "all_pairs_edges",
    "average_num_neighbors",
    "bind",
    "energy_statistics",
    "gemnet_parameter_count",
    "jax_md_model",
    "lennard_jones_model",
    "make_model",
    "neighbor_list_edges",
    "per_species_values",
    "species_index",
]
