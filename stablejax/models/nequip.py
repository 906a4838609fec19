"""NequIP (Batzner et al., Nat. Commun. 13, 2453, 2022) as a Flax module on e3nn-jax.

Follows the NequIP 0.5 default model (as in the reference's Ac-Ala3-NHMe checkpoint), written
with the modern e3nn-jax API (ideas from ``jax_md._nn.nequip``):

* one-hot species -> equivariant linear -> ``n0e x 0e`` node features (chemical embedding);
* edges: spherical harmonics ``Y^l(r_hat)`` up to ``l_max`` (``component`` normalisation, parity
  ``(-1)^l`` when ``parity``), radial embedding = ``n_bessel`` Bessel functions
  ``(2 / r_max) sin(w_n r / r_max) / r`` with trainable ``w_n`` (initialised ``n pi``) times the
  polynomial cutoff ``u_p(r / r_max)``;
* ``n_layers`` interaction layers: self-connection (species-indexed linear, the one-hot tensor
  product of NequIP), linear, ``uvu`` tensor product of the neighbour features with ``Y(r_ij)``
  weighted per channel and path by a bias-free radial MLP (``radial_layers x radial_hidden``,
  SiLU), sum over neighbours divided by ``sqrt(avg_num_neighbors)``, linear, plus
  self-connection, then a gate (SiLU / tanh on even / odd scalars; SiLU / abs on even / odd
  gates of the non-scalars), as NequIP's defaults; no residual connection (``resnet: false``);
* readout: linear to ``n0e/2 x 0e`` then to ``1x0e``: one (normalised) energy per atom.

The per-species scale and shift to eV are applied outside the module (``stablejax.models.core``).
"""

from __future__ import annotations

import math

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp

from stablejax._types import Array
from stablejax.models.neighbors import Edges, aggregate


def polynomial_cutoff(x: Array, p: int) -> Array:
    """NequIP's polynomial envelope ``u_p(x)`` (x = r / r_max), 0 for ``x >= 1``.

    ``1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``: value 1 at 0, and value,
    first and second derivative 0 at ``x = 1``.
    """
    u = (1.0 - (p + 1.0) * (p + 2.0) / 2.0 * x**p + p * (p + 2.0) * x ** (p + 1)
         - p * (p + 1.0) / 2.0 * x ** (p + 2))
    return jnp.where(x < 1.0, u, 0.0)


def _reachable(irreps_in: e3nn.Irreps, irreps_sh: e3nn.Irreps, ir: e3nn.Irrep) -> bool:
    return any(ir in ir1 * ir2 for _, ir1 in irreps_in for _, ir2 in irreps_sh)


class NequIPLayer(nn.Module):
    """One NequIP interaction layer (convolution + self-connection + gate).

    Attributes:
      hidden_irreps: target node irreps (those reachable from the input are kept).
      n_species: number of species (self-connection weights are indexed by species).
      avg_num_neighbors: normalisation of the neighbour sum (divided by its square root).
      radial_hidden: hidden width of the radial MLP.
      radial_layers: number of hidden layers of the radial MLP.
    """

    hidden_irreps: e3nn.Irreps
    n_species: int
    avg_num_neighbors: float
    radial_hidden: int = 64
    radial_layers: int = 2

    @nn.compact
    def __call__(self, h: e3nn.IrrepsArray, species: Array, sh: e3nn.IrrepsArray,
                 radial: Array, edges: Edges) -> e3nn.IrrepsArray:
        """Update node features.

        Args:
          h: [n_atoms, irreps] node features.
          species: [n_atoms] int species indices.
          sh: [*edge_shape, irreps_sh] edge spherical harmonics.
          radial: [*edge_shape, n_bessel] radial embedding (zero beyond the cutoff).
          edges: the edges.

        Returns:
          [n_atoms, irreps_out] updated features.
        """
        n_atoms = species.shape[0]
        target = e3nn.Irreps(self.hidden_irreps)
        scalars = e3nn.Irreps([(m, ir) for m, ir in target
                               if ir.l == 0 and _reachable(h.irreps, sh.irreps, ir)])
        vectors = e3nn.Irreps([(m, ir) for m, ir in target
                               if ir.l > 0 and _reachable(h.irreps, sh.irreps, ir)])
        gate_ir = "0e" if _reachable(h.irreps, sh.irreps, e3nn.Irrep("0e")) else "0o"
        gates = e3nn.Irreps([(m, gate_ir) for m, _ in vectors])
        irreps_out = (scalars + gates + vectors).simplify()

        linear = lambda irreps, name, **kw: e3nn.flax.Linear(  # noqa: E731
            irreps, force_irreps_out=True, name=name, **kw)
        self_connection = linear(irreps_out, "self_connection",
                                 num_indexed_weights=self.n_species)(species, h)

        x = linear(h.irreps, "linear_in")(h)
        x_j = x[edges.senders]  # [*E, irreps]
        messages = e3nn.tensor_product(x_j, sh, filter_ir_out=irreps_out)  # uvu paths
        mix = e3nn.flax.MultiLayerPerceptron(
            (self.radial_hidden,) * self.radial_layers + (messages.irreps.num_irreps,),
            act=jax.nn.silu, output_activation=False, with_bias=False, name="radial_mlp",
        )(radial)  # [*E, num_paths], zero where radial is zero (no bias, silu(0) = 0)
        messages = messages * mix
        summed = aggregate(messages.array, edges, n_atoms) / math.sqrt(self.avg_num_neighbors)
        x = e3nn.IrrepsArray(messages.irreps, summed)
        x = linear(irreps_out, "linear_out")(x) + self_connection
        out = e3nn.gate(x, even_act=jax.nn.silu, odd_act=jnp.tanh,
                        even_gate_act=jax.nn.silu, odd_gate_act=jnp.abs)
        return out.astype(h.dtype)


class NequIP(nn.Module):
    """NequIP per-atom energies (normalised units; scaled to eV by the caller).

    Attributes:
      n_species: number of species (indices ``0..n_species-1``).
      avg_num_neighbors: mean number of neighbours within ``r_max`` (from the data).
      r_max: cutoff, Angstrom.
      n_layers: number of interaction layers.
      l_max: maximal spherical-harmonic degree.
      parity: O(3) (True) or SO(3) (False) irreps.
      hidden_irreps: node feature irreps string.
      n_bessel: number of Bessel functions.
      poly_p: polynomial cutoff exponent.
      radial_hidden: radial MLP width.
      radial_layers: radial MLP hidden layers.
      param_dtype: parameter dtype.
    """

    n_species: int
    avg_num_neighbors: float
    r_max: float = 5.0
    n_layers: int = 3
    l_max: int = 1
    parity: bool = True
    hidden_irreps: str = "32x0e+32x1e+32x0o+32x1o"
    n_bessel: int = 8
    poly_p: int = 6
    radial_hidden: int = 64
    radial_layers: int = 2
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, species: Array, edges: Edges) -> Array:
        """Per-atom outputs.

        Args:
          species: [n_atoms] int species indices.
          edges: :class:`Edges` (dense or sparse layout), vectors in Angstrom.

        Returns:
          [n_atoms] per-atom outputs, dtype of ``edges.vectors``.
        """
        dtype = edges.vectors.dtype
        hidden = e3nn.Irreps(self.hidden_irreps)
        irreps_sh = e3nn.Irreps.spherical_harmonics(self.l_max, p=-1 if self.parity else 1)
        sh = e3nn.spherical_harmonics(irreps_sh, edges.vectors, normalize=True,
                                      normalization="component")  # [*E, sh]
        r = jnp.linalg.norm(edges.vectors, axis=-1)  # [*E], vectors are never zero

        freqs = self.param("bessel_weights",
                           lambda key, n: jnp.pi * jnp.arange(1, n + 1, dtype=self.param_dtype),
                           self.n_bessel)
        bessel = (2.0 / self.r_max) * jnp.sin(freqs * r[..., None] / self.r_max) / r[..., None]
        envelope = polynomial_cutoff(r / self.r_max, self.poly_p) * edges.mask
        radial = (bessel * envelope[..., None]).astype(dtype)  # [*E, n_bessel]

        one_hot = jax.nn.one_hot(species, self.n_species, dtype=dtype)
        n0e = sum(m for m, ir in hidden if ir == e3nn.Irrep("0e"))
        h = e3nn.flax.Linear(f"{n0e}x0e", name="embedding")(
            e3nn.IrrepsArray(f"{self.n_species}x0e", one_hot))
        for t in range(self.n_layers):
            h = NequIPLayer(hidden, self.n_species, self.avg_num_neighbors, self.radial_hidden,
                            self.radial_layers, name=f"layer_{t}")(
                                h, species, sh, radial, edges)
        h = e3nn.flax.Linear(f"{max(n0e // 2, 1)}x0e", name="readout_0")(h)
        out = e3nn.flax.Linear("1x0e", name="readout_1")(h)
        return out.array[:, 0].astype(dtype)
