"""SchNet (Schuett et al., J. Chem. Phys. 148, 241722, 2018) as a Flax linen module.

Layout as in the reference's SchNet (the PyTorch-Geometric variant used by OCP):

* species embedding -> ``hidden_features``;
* ``n_interactions`` residual interaction blocks: filter network
  ``Dense(n_filters) -> ssp -> Dense(n_filters)`` on a Gaussian expansion of the distance
  (``n_gaussians`` centres on linspace(0, cutoff), width = centre spacing), times the cosine
  cutoff ``0.5 (cos(pi r / r_c) + 1)``; continuous-filter convolution
  ``sum_j W(r_ij) * Dense(n_filters, no bias)(h_j)``; then ``Dense(hidden) -> ssp -> Dense(hidden)``
  and ``h <- h + v``;
* readout ``Dense(hidden/2) -> ssp -> Dense(1)``: one (normalised) energy per atom.

``ssp(x) = softplus(x) - log 2`` is the shifted softplus. The per-species scale and shift to eV
are applied outside the module (``stablejax.models.core``).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from stablejax._types import Array
from stablejax.models.neighbors import Edges, aggregate


def shifted_softplus(x: Array) -> Array:
    """``softplus(x) - log(2)``: zero at the origin."""
    return jax.nn.softplus(x) - math.log(2.0)


def gaussian_rbf(r: Array, cutoff: float, n_gaussians: int) -> Array:
    """Gaussian expansion of distances.

    Args:
      r: [...] distances, Angstrom.
      cutoff: last centre, Angstrom.
      n_gaussians: number of centres on linspace(0, cutoff).

    Returns:
      [..., n_gaussians] values ``exp(-(r - mu_k)^2 / (2 delta^2))``, delta the centre spacing.
    """
    centres = jnp.linspace(0.0, cutoff, n_gaussians, dtype=r.dtype)
    delta = cutoff / (n_gaussians - 1)
    return jnp.exp(-0.5 / delta**2 * (r[..., None] - centres) ** 2)


def cosine_cutoff(r: Array, cutoff: float) -> Array:
    """``0.5 (cos(pi r / cutoff) + 1)`` for ``r < cutoff``, else 0 (smooth to first order)."""
    return jnp.where(r < cutoff, 0.5 * (jnp.cos(jnp.pi * r / cutoff) + 1.0), 0.0)


class SchNet(nn.Module):
    """SchNet per-atom energies (normalised units; scaled to eV by the caller).

    Attributes:
      n_species: number of embedding rows (species indices are ``0..n_species-1``).
      cutoff: cutoff, Angstrom.
      hidden_features: atom feature width.
      n_filters: filter width.
      n_interactions: number of interaction blocks.
      n_gaussians: number of radial Gaussians.
      param_dtype: parameter dtype.
    """

    n_species: int
    cutoff: float = 5.0
    hidden_features: int = 64
    n_filters: int = 64
    n_interactions: int = 6
    n_gaussians: int = 25
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
        dense = lambda f, name, bias=True: nn.Dense(  # noqa: E731
            f, use_bias=bias, dtype=dtype, param_dtype=self.param_dtype, name=name)
        n_atoms = species.shape[0]
        r = jnp.linalg.norm(edges.vectors, axis=-1)  # [*E], vectors are never zero
        rbf = gaussian_rbf(r, self.cutoff, self.n_gaussians)  # [*E, G]
        fcut = cosine_cutoff(r, self.cutoff) * edges.mask  # [*E]

        h = nn.Embed(self.n_species, self.hidden_features, dtype=dtype,
                     param_dtype=self.param_dtype, name="embedding")(species)  # [N, H]
        for t in range(self.n_interactions):
            w = dense(self.n_filters, f"filter_{t}_0")(rbf)
            w = dense(self.n_filters, f"filter_{t}_1")(shifted_softplus(w))
            w = w * fcut[..., None]  # [*E, F]
            x = dense(self.n_filters, f"cfconv_{t}_in", bias=False)(h)  # [N, F]
            x = aggregate(x[edges.senders] * w, edges, n_atoms)  # [N, F]
            v = dense(self.hidden_features, f"cfconv_{t}_out")(x)
            v = dense(self.hidden_features, f"interaction_{t}_out")(shifted_softplus(v))
            h = h + v
        h = shifted_softplus(dense(self.hidden_features // 2, "readout_0")(h))
        return dense(1, "readout_1")(h)[:, 0]
