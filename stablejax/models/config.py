"""Frozen, validated model configurations (one per architecture).

Defaults are the paper's hyperparameters (docs/method.md §10.1, §10.2): SchNet as in
``configs/pretraining/md17/schnet.yml`` and NequIP as in the Ac-Ala3-NHMe checkpoint config
(NequIP 0.5.4). Every field is checked in ``__post_init__`` so that a bad value fails in Python,
before anything is traced, with a message naming the field and the value.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import e3nn_jax as e3nn

_PARAM_DTYPES = ("float32", "float64")


def _check_positive(cls: str, name: str, value: Any, *, integer: bool) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{cls}.{name} must be {what}, got {value!r}")


def _check_species(cls: str, species: tuple[int, ...] | None) -> None:
    if species is None:
        return
    if not isinstance(species, tuple) or not species:
        raise ValueError(f"{cls}.species must be None or a non-empty tuple of atomic numbers, "
                         f"got {species!r}")
    bad = [z for z in species
           if isinstance(z, bool) or not isinstance(z, numbers.Integral) or not 1 <= z <= 118]
    if bad:
        raise ValueError(f"{cls}.species must hold atomic numbers 1..118, got {bad}")
    if len(set(species)) != len(species):
        raise ValueError(f"{cls}.species has duplicates: {species}")


def _check_dtype(cls: str, param_dtype: str) -> None:
    if param_dtype not in _PARAM_DTYPES:
        raise ValueError(f"{cls}.param_dtype must be one of {_PARAM_DTYPES}, got {param_dtype!r}")


@dataclasses.dataclass(frozen=True)
class SchNetConfig:
    """SchNet (Schuett et al. 2018) hyperparameters; defaults follow the StABlE aspirin model.

    Attributes:
      cutoff_angstrom: interaction cutoff (cosine cutoff and edge mask), Angstrom.
      hidden_features: atom feature width.
      n_filters: continuous-filter width.
      n_interactions: number of interaction blocks.
      n_gaussians: Gaussians of the radial basis, centred on linspace(0, cutoff).
      species: atomic numbers the model knows (the embedding rows), sorted as given. ``None``
        means "the species of the system the model is built for".
      param_dtype: dtype of the parameters; computation follows the dtype of the positions.
    """

    cutoff_angstrom: float = 5.0
    hidden_features: int = 64
    n_filters: int = 64
    n_interactions: int = 6
    n_gaussians: int = 25
    species: tuple[int, ...] | None = None
    param_dtype: str = "float32"

    def __post_init__(self):
        name = type(self).__name__
        _check_positive(name, "cutoff_angstrom", self.cutoff_angstrom, integer=False)
        for field in ("hidden_features", "n_filters", "n_interactions"):
            _check_positive(name, field, getattr(self, field), integer=True)
        _check_positive(name, "n_gaussians", self.n_gaussians, integer=True)
        if self.n_gaussians < 2:
            raise ValueError(f"{name}.n_gaussians must be >= 2 (the width is the centre spacing), "
                             f"got {self.n_gaussians}")
        if self.hidden_features < 2:
            raise ValueError(f"{name}.hidden_features must be >= 2 (the readout halves it), "
                             f"got {self.hidden_features}")
        _check_species(name, self.species)
        _check_dtype(name, self.param_dtype)

    @property
    def cutoff(self) -> float:
        """Interaction cutoff in Angstrom (common name for both configs)."""
        return float(self.cutoff_angstrom)


@dataclasses.dataclass(frozen=True)
class NequIPConfig:
    """NequIP (Batzner et al. 2022) hyperparameters; defaults follow the StABlE Ac-Ala3-NHMe model.

    Attributes:
      cutoff_angstrom: radial cutoff (NequIP's r_max), Angstrom.
      n_layers: number of interaction (convolution + gate) layers.
      l_max: maximal degree of the edge spherical harmonics.
      parity: use O(3) (True: spherical harmonics 0e+1o+...) instead of SO(3) irreps.
      hidden_irreps: node feature irreps, e.g. ``"32x0e+32x1e+32x0o+32x1o"``; must hold ``0e``.
      n_bessel: number of (trainable-frequency) Bessel radial functions.
      poly_p: exponent p of the polynomial cutoff envelope.
      radial_hidden: width of each hidden layer of the radial MLP.
      radial_layers: number of hidden layers of the radial MLP.
      species: atomic numbers the model knows; ``None`` = those of the system.
      param_dtype: dtype of the parameters; computation follows the dtype of the positions.
    """

    cutoff_angstrom: float = 5.0
    n_layers: int = 3
    l_max: int = 1
    parity: bool = True
    hidden_irreps: str = "32x0e+32x1e+32x0o+32x1o"
    n_bessel: int = 8
    poly_p: int = 6
    radial_hidden: int = 64
    radial_layers: int = 2
    species: tuple[int, ...] | None = None
    param_dtype: str = "float32"

    def __post_init__(self):
        name = type(self).__name__
        _check_positive(name, "cutoff_angstrom", self.cutoff_angstrom, integer=False)
        for field in ("n_layers", "n_bessel", "poly_p", "radial_hidden", "radial_layers"):
            _check_positive(name, field, getattr(self, field), integer=True)
        if (isinstance(self.l_max, bool) or not isinstance(self.l_max, numbers.Integral)
                or self.l_max < 1):
            raise ValueError(f"{name}.l_max must be an integer >= 1, got {self.l_max!r}")
        if not isinstance(self.parity, bool):
            raise ValueError(f"{name}.parity must be a bool, got {self.parity!r}")
        try:
            irreps = e3nn.Irreps(self.hidden_irreps)
        except Exception as err:  # e3nn raises ValueError/AssertionError on bad strings
            raise ValueError(f"{name}.hidden_irreps is not a valid irreps string, "
                             f"got {self.hidden_irreps!r} ({err})") from None
        mul_0e = sum(mul for mul, ir in irreps if ir == e3nn.Irrep("0e"))
        if mul_0e < 2:
            raise ValueError(f"{name}.hidden_irreps must contain at least 2x0e (the readout "
                             f"uses the even scalars), got {self.hidden_irreps!r}")
        _check_species(name, self.species)
        _check_dtype(name, self.param_dtype)

    #: Overrides of the cpu-scale model (16 channels per irrep, 2 layers, radial MLP 2x32):
    #: ~7x fewer parameters and ~5x the MD throughput of the paper's model on a 2-core CPU.
    CPU_SCALE = dict(hidden_irreps="16x0e+16x1e+16x0o+16x1o", n_layers=2, radial_hidden=32)

    @classmethod
    def cpu_scale(cls, **overrides) -> "NequIPConfig":
        """The smaller NequIP used by the cpu-scale experiments (see ``CPU_SCALE``)."""
        return cls(**{**cls.CPU_SCALE, **overrides})

    @property
    def cutoff(self) -> float:
        """Interaction cutoff in Angstrom (common name for both configs)."""
        return float(self.cutoff_angstrom)


@dataclasses.dataclass(frozen=True)
class GemNetTConfig:
    """GemNet-T (Gasteiger et al. 2021) hyperparameters; defaults are the StABlE water model.

    Attributes:
      cutoff_angstrom: cutoff of edges and triplets (envelope and edge mask), Angstrom.
      n_blocks: number of interaction blocks.
      emb_size_atom: atom embedding width.
      emb_size_edge: edge (message) embedding width.
      emb_size_rbf: width of the projected radial basis.
      emb_size_cbf: width of the projected spherical (triplet) basis.
      emb_size_trip: down-projected edge width in the triplet interaction.
      emb_size_bil_trip: output width of the bilinear triplet layer.
      num_radial: radial basis functions (per angular order in the spherical basis).
      num_spherical: angular orders ``l = 0..num_spherical-1`` of the spherical basis.
      envelope_exponent: exponent p of the polynomial cutoff envelope.
      num_before_skip: residual layers before the first skip connection.
      num_after_skip: residual layers after it.
      num_concat: residual layers after the atom-to-edge concatenation.
      num_atom: residual layers in atom update and output blocks.
      max_neighbors: ``None`` (default): every neighbour inside the cutoff interacts. An integer
        k: the paper's cap, for compatibility: an edge is kept only when each of its atoms is
        among the other's k nearest neighbours (mutual k-nearest, so the graph stays symmetric
        for the reverse-edge messages); the energy is then discontinuous where the k-th
        neighbour changes. :func:`stablejax.models.gemnet.count_capped_edges` counts the edges
        a cap drops.
      output_init: initialisation of the final ``Dense(1)`` of each output block:
        ``'heorthogonal'`` (default; the reference's ``output_init: HeOrthogonal``) or
        ``'zeros'`` (the model starts at the per-species shifts with zero forces). Zero-
        initialised output kernels stay small in training (norms 0.05-0.12 after the cpu-scale
        pre-training), and every other layer's gradient passes through them: StABlE's SGD
        steps then land on the three output kernels (8-13% of their norm per learning cycle,
        < 0.1% for every other layer; ``benchmarks/bench_update_shares.py``). A He-initialised
        model starts with large forces (~60x the data's RMS on water for the cpu scale);
        measured before the scale factors were trainable, on 40 water frames, 3 epochs of the
        GemNet-T recipe: validation force MAE 141 meV/A from zeros, 303 from He.
      trainable_scales: the ``4 n_blocks + 1`` scale factors of the neighbour and triplet sums
        and the triplet radial product (the reference's ``ScalingFactor`` scalars, 17 for the
        paper's 4 blocks, which StABlE trains) are scalar parameters, initialised to the
        constants of ``False``: ``1/sqrt(avg_num_neighbors)`` for the sums, 1 for the product.
        ``False``: fixed constants.
      species: atomic numbers the model knows; ``None`` = those of the system.
      param_dtype: dtype of the parameters; computation follows the dtype of the positions.
    """

    cutoff_angstrom: float = 5.0
    n_blocks: int = 4
    emb_size_atom: int = 128
    emb_size_edge: int = 128
    emb_size_rbf: int = 16
    emb_size_cbf: int = 16
    emb_size_trip: int = 64
    emb_size_bil_trip: int = 64
    num_radial: int = 6
    num_spherical: int = 7
    envelope_exponent: int = 5
    num_before_skip: int = 1
    num_after_skip: int = 2
    num_concat: int = 1
    num_atom: int = 3
    max_neighbors: int | None = None
    output_init: str = "heorthogonal"
    trainable_scales: bool = True
    species: tuple[int, ...] | None = None
    param_dtype: str = "float32"

    #: What a field absent from a stored config (a ``model.json`` written before the field
    #: existed) means: the parameterisation of that time, so its checkpoints still load.
    ABSENT_FIELDS = {"output_init": "zeros", "trainable_scales": False}

    def __post_init__(self):
        name = type(self).__name__
        _check_positive(name, "cutoff_angstrom", self.cutoff_angstrom, integer=False)
        if not isinstance(self.trainable_scales, bool):
            raise ValueError(f"{name}.trainable_scales must be a bool, got "
                             f"{self.trainable_scales!r}")
        if self.max_neighbors is not None:
            _check_positive(name, "max_neighbors", self.max_neighbors, integer=True)
        if self.output_init not in ("heorthogonal", "zeros"):
            raise ValueError(f"{name}.output_init must be 'heorthogonal' or 'zeros', got "
                             f"{self.output_init!r}")
        for field in ("n_blocks", "emb_size_atom", "emb_size_edge", "emb_size_rbf",
                      "emb_size_cbf", "emb_size_trip", "emb_size_bil_trip", "num_radial",
                      "num_spherical", "envelope_exponent"):
            _check_positive(name, field, getattr(self, field), integer=True)
        if self.num_spherical < 2:
            raise ValueError(f"{name}.num_spherical must be >= 2 (an angle-free basis has no "
                             f"triplet information), got {self.num_spherical}")
        for field in ("num_before_skip", "num_after_skip", "num_concat", "num_atom"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name}.{field} must be a non-negative integer, got {value!r}")
        _check_species(name, self.species)
        _check_dtype(name, self.param_dtype)

    #: Overrides of the cpu-scale model (4 A, 2 blocks, embeddings 32, bases 8, triplets 16,
    #: one residual layer per stack).
    CPU_SCALE = dict(cutoff_angstrom=4.0, n_blocks=2, emb_size_atom=32, emb_size_edge=32,
                     emb_size_rbf=8, emb_size_cbf=8, emb_size_trip=16, emb_size_bil_trip=16,
                     num_atom=1, num_after_skip=1)

    @classmethod
    def cpu_scale(cls, **overrides) -> "GemNetTConfig":
        """The smaller GemNet-T of the cpu-scale experiments (see ``CPU_SCALE``)."""
        return cls(**{**cls.CPU_SCALE, **overrides})

    @property
    def cutoff(self) -> float:
        """Interaction cutoff in Angstrom (common name for all configs)."""
        return float(self.cutoff_angstrom)


ModelConfig = SchNetConfig | NequIPConfig | GemNetTConfig
