"""GemNet-T (Gasteiger, Becker, Guennemann, NeurIPS 2021) as a Flax linen module.

Layout as in the authors' ``gemnet_pytorch`` (``triplets_only=True``, energy only, forces by
``-grad``); a directed edge ``c -> a`` carries the message ``m_ca``:

* bases (:mod:`stablejax.models.gemnet_basis`): sine Bessel ``rbf(d)`` with trainable frequencies
  and the polynomial envelope (p = ``envelope_exponent``); for triplets the spherical
  Fourier-Bessel basis ``j_l(z_ln d_ca / c) Y_l0(angle_cab)`` (radial part on the edge being
  updated, angle between ``r_c - r_a`` and ``r_b - r_a``);
* shared projections of the bases (no bias): ``rbf -> emb_size_rbf`` for the triplets, the atom
  updates and the outputs, and ``(l, n) -> emb_size_cbf`` for the spherical basis;
* embeddings: species -> ``h`` (uniform +-sqrt 3); ``m_ca = act(W [h_c, h_a, rbf_ca])``;
* ``n_blocks`` interaction blocks: triplet interaction ``x_ba = act(W m_ba) * (W rbf_ba)``,
  down-projection (``emb_size_trip``), bilinear layer summing over the triplets ``b -> a <- c``
  (``emb_size_bil_trip``), up-projections ``x_ca`` and ``x_ac`` (the latter read on the reverse
  edge ``a -> c``); skip ``act(W m_ca)``; residual layers (``num_before_skip``, then
  ``num_after_skip`` after the skip); atom update (sum over incoming edges of
  ``m * (W rbf)``, a dense layer and ``num_atom`` residual layers); ``m_ca = act(W [h_c, h_a,
  m_ca])`` plus ``num_concat`` residual layers; every sum of two branches scaled by 1/sqrt(2);
* ``n_blocks + 1`` output blocks (after the embedding and after each interaction) shaped like the
  atom update plus a final ``Dense(1)``; their outputs are summed: one normalised energy per atom.

Activation ``silu(x) / 0.6`` (the authors' scaled SiLU). Weights use the authors' He-orthogonal
initialisation (orthogonal, standardised per output, times ``1/sqrt(fan_in)``;
:mod:`stablejax.models.gemnet_layers`), the last layer of each output block included
(``output_init='heorthogonal'``, the reference's ``output_init: HeOrthogonal``); with
``'zeros'`` the model starts at the per-species energy shifts with zero forces, but the output
kernels then stay small in training (norms 0.05-0.12 after the cpu-scale pre-training) and every
other layer's gradient, which passes through them, is scaled down with them.

``max_neighbors`` (off by default) applies the paper's neighbour cap as mutual k-nearest
neighbours (:func:`cap_neighbors`).

Scale factors, one per neighbour sum and per radial Hadamard product as in the authors' code
(``TripInteraction_t_had_rbf``, ``TripInteraction_t_sum_cbf``, ``AtomUpdate_t_sum`` per
interaction, ``OutBlock_t_sum`` per output block: ``4 n_blocks + 1`` scalars, 17 for the paper's
4 blocks). The authors fit them on data (``fit_scaling.py``); here they start from constants:
every sum over neighbours (``scale_sum`` of atom updates and output blocks) and over triplets
(``scale_cbf_sum`` of the bilinear layer) from ``1/sqrt(avg_num_neighbors)`` (a constant from the
training data, as in NequIP), the radial Hadamard product of the triplet interaction
(``scale_rbf``) from 1, because the two bases are divided by constants that give them unit
second moment over a uniform gas inside the cutoff (``rbf``; radial part times ``Y_l0`` for the
spherical basis; computed by quadrature at trace time, frequencies at their initial ``n pi``), so
that the Hadamard products with the (He-initialised, variance-preserving) basis projections keep
the scale of the messages (without this the triplet branch is ~1e-4 of the signal at
initialisation). With ``trainable_scales=True`` (default) they are scalar parameters trained
with the rest (StABlE trains the reference's too); with False they are the fixed constants of
models saved before they existed (no ``scale_rbf`` then).

Dense layout only (``Edges.senders`` [n_atoms, n_slots]): row ``a`` holds the edges ``c -> a``.
The triplets of centre ``a`` are all ordered pairs of its slots ``(s, t)``, ``s != t``, masked by
both edge masks: [n_atoms, n_slots, n_slots]; the messages ``x_ba`` are read from row ``a`` (no
per-triplet copies). The reverse edge of slot ``s`` of row ``a`` is the slot of ``a`` in the row of
``c = senders[a, s]``, found by comparing indices ([n_atoms, n_slots, n_slots] int compare); a
neighbour list must therefore hold each neighbour at most once per row (true for minimum-image
lists) and be symmetric within the cutoff.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Array
from stablejax.models import gemnet_basis as gb
from stablejax.models.gemnet_layers import (  # noqa: F401  (dense_product: public here too)
    INV_SQRT2,
    OUTPUT_INITS,
    Dense,
    Residual,
    dense_product,
    he_orthogonal_init,
    scale_factor,
    uniform_sqrt3,
)
from stablejax.models.neighbors import Edges


class _AtomUpdate(nn.Module):
    """Sum of ``m * (W rbf)`` over incoming edges times the scale factor ``scale_sum``, dense to
    ``emb_size_atom``, residual layers; with ``output=True`` a final bias-free ``Dense(1)``
    (``out_energy``): [n_atoms, 1]."""

    emb_size_atom: int
    num_atom: int
    inv_sqrt_neighbors: float
    trainable_scales: bool
    output: bool = False
    output_init: str = "heorthogonal"
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, m: Array, rbf: Array, mask: Array) -> Array:
        pd = self.param_dtype
        x = m * Dense(m.shape[-1], activation=False, param_dtype=pd, name="dense_rbf")(rbf)
        x = jnp.sum(jnp.where(mask[..., None], x, 0.0), axis=1)
        x = scale_factor(self, "scale_sum", x, self.inv_sqrt_neighbors, self.trainable_scales, pd)
        x = Dense(self.emb_size_atom, param_dtype=pd, name="dense_atom")(x)
        for k in range(self.num_atom):
            x = Residual(pd, name=f"residual_{k}")(x)
        if self.output:
            kernel = self.param("out_energy", OUTPUT_INITS[self.output_init], (x.shape[-1], 1), pd)
            x = jnp.dot(x, kernel.astype(x.dtype))
        return x


class _Interaction(nn.Module):
    """One GemNet-T interaction block (triplet interaction, skips, atom update, concat)."""

    emb_size_atom: int
    emb_size_edge: int
    emb_size_trip: int
    emb_size_bil_trip: int
    num_before_skip: int
    num_after_skip: int
    num_concat: int
    num_atom: int
    inv_sqrt_neighbors: float
    trainable_scales: bool
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array, m: Array, rbf3: Array, cbf3: Array, sph: Array,
                 rbf_h: Array, edges: Edges, reverse_slot: Array) -> tuple[Array, Array]:
        pd = self.param_dtype
        dense = lambda f, name, act=True: Dense(f, act, pd, name=name)  # noqa: E731
        # triplet interaction: b -> a messages, summed into the edges c -> a of the same centre a
        x_ba = dense(self.emb_size_edge, "dense_ba")(m)
        x_ba = x_ba * dense(self.emb_size_edge, "mlp_rbf3", act=False)(rbf3)
        if self.trainable_scales:  # constant 1 before (the basis has unit second moment)
            x_ba = scale_factor(self, "scale_rbf", x_ba, 1.0, True, pd)
        x_ba = dense(self.emb_size_trip, "down_projection")(x_ba)  # [N, S, T]
        sum_k = jnp.einsum("astl,atf->aslf", sph, x_ba)  # [N, S, L, T]
        w_bil = self.param("bilinear", he_orthogonal_init,
                           (self.emb_size_trip, cbf3.shape[-1], self.emb_size_bil_trip), pd)
        x = jnp.einsum("aslc,aslf->ascf", cbf3, sum_k)  # [N, S, C, T]
        x = jnp.einsum("ascf,fco->aso", x, w_bil.astype(m.dtype))
        x = scale_factor(self, "scale_cbf_sum", x, self.inv_sqrt_neighbors,
                         self.trainable_scales, pd)
        x_ca = dense(self.emb_size_edge, "up_projection_ca")(x)
        x_ac = dense(self.emb_size_edge, "up_projection_ac")(x)
        x_ac = x_ac[edges.senders, reverse_slot]  # value on the reverse edge a -> c
        x3 = (x_ca + x_ac) * INV_SQRT2
        # skip connection and residual layers
        x = (dense(self.emb_size_edge, "dense_ca")(m) + x3) * INV_SQRT2
        for k in range(self.num_before_skip):
            x = Residual(pd, name=f"before_skip_{k}")(x)
        m = (m + x) * INV_SQRT2
        for k in range(self.num_after_skip):
            m = Residual(pd, name=f"after_skip_{k}")(m)
        # atom update
        h2 = _AtomUpdate(self.emb_size_atom, self.num_atom, self.inv_sqrt_neighbors,
                         self.trainable_scales, param_dtype=pd, name="atom_update")(
            m, rbf_h, edges.mask)
        h = (h + h2) * INV_SQRT2
        # edge update from the new atom embeddings
        m2 = jnp.concatenate([h[edges.senders], jnp.broadcast_to(h[:, None], m.shape[:2]
                                                                  + h.shape[-1:]), m], axis=-1)
        m2 = dense(self.emb_size_edge, "concat")(m2)
        for k in range(self.num_concat):
            m2 = Residual(pd, name=f"concat_residual_{k}")(m2)
        return h, (m + m2) * INV_SQRT2


def _parameter_shapes(cfg, n_species: int):
    """The parameter pytree of a :class:`GemNetT` for a ``GemNetTConfig``, as shapes
    (``jax.eval_shape``: nothing is computed)."""
    from stablejax.models.core import _module

    module = _module(cfg, n_species, 1.0)
    edges = Edges(senders=jnp.array([[1], [0]]), receivers=jnp.array([[0], [1]]),
                  vectors=jnp.array([[[1.0, 0.0, 0.0]], [[-1.0, 0.0, 0.0]]]),
                  mask=jnp.ones((2, 1), bool))
    return jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(2, jnp.int32), edges)


def gemnet_parameter_count(cfg, n_species: int) -> int:
    """Number of scalar parameters of a :class:`GemNetT` built from a ``GemNetTConfig``."""
    shapes = _parameter_shapes(cfg, n_species)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)))


def gemnet_scale_factor_count(cfg, n_species: int = 2) -> int:
    """Number of trainable scale factors (parameters named ``scale_*``) of a ``GemNetTConfig``:
    ``4 n_blocks + 1`` with ``trainable_scales``, else 0."""
    leaves = jax.tree_util.tree_leaves_with_path(_parameter_shapes(cfg, n_species))
    return sum(str(getattr(path[-1], "key", "")).startswith("scale_") for path, _ in leaves)


def cap_neighbors(edges: Edges, max_neighbors: int) -> tuple[Edges, Array]:
    """Keep an edge only when each of its atoms is among the other's ``max_neighbors`` nearest
    (mutual k-nearest: the capped list stays symmetric). Ties in distance go to the lower slot.

    Returns:
      (the edges with the dropped ones masked out, the number of edges dropped: () int).
    """
    d = jnp.where(edges.mask, jnp.linalg.norm(edges.vectors, axis=-1), jnp.inf)
    rank = jnp.argsort(jnp.argsort(d, axis=1, stable=True), axis=1, stable=True)
    near = edges.mask & (rank < max_neighbors)
    reverse = reverse_edge_slot(edges)
    mask = near & near[edges.senders, reverse]
    dropped = jnp.sum(edges.mask) - jnp.sum(mask)
    return edges._replace(mask=mask), dropped


def count_capped_edges(model, max_neighbors: int, R: Array, neighbor=None) -> Array:
    """How many directed edges within the cutoff the ``max_neighbors`` cap drops at positions
    ``R`` (() int; jit- and vmap-able). ``model``: a :class:`stablejax.models.Model` (its
    ``edges_fn``); ``neighbor``: its neighbour list for periodic systems."""
    return cap_neighbors(model.edges_fn(R, neighbor), max_neighbors)[1]


def reverse_edge_slot(edges: Edges) -> Array:
    """[n_atoms, n_slots] int: for slot ``s`` of row ``a`` (edge ``c -> a``, ``c =
    senders[a, s]``), the slot of ``a`` in row ``c`` (edge ``a -> c``); 0 where there is none
    (only for masked edges of a symmetric list)."""
    n_atoms = edges.senders.shape[0]
    rows = edges.senders  # [N, S] = c
    match = (edges.senders[rows] == jnp.arange(n_atoms)[:, None, None]) & edges.mask[rows]
    return jnp.argmax(match, axis=-1)


class GemNetT(nn.Module):
    """GemNet-T per-atom energies (normalised units; scaled to eV by the caller).

    Attributes:
      n_species: number of embedding rows (species indices are ``0..n_species-1``).
      avg_num_neighbors: mean neighbour count within the cutoff; neighbour and triplet sums are
        divided by its square root.
      cutoff: cutoff, Angstrom.
      n_blocks: number of interaction blocks.
      emb_size_atom, emb_size_edge: atom and edge embedding widths.
      emb_size_rbf, emb_size_cbf: widths of the projected radial and spherical bases.
      emb_size_trip: down-projected edge width in the triplet interaction.
      emb_size_bil_trip: output width of the bilinear layer.
      num_radial, num_spherical: basis sizes.
      envelope_exponent: exponent p of the polynomial envelope.
      num_before_skip, num_after_skip, num_concat, num_atom: residual layer counts.
      max_neighbors: None, or the mutual k-nearest cap (:func:`cap_neighbors`).
      output_init: ``'heorthogonal'`` or ``'zeros'`` for the output blocks' last layer.
      trainable_scales: the ``4 n_blocks + 1`` scale factors are scalar parameters (True) or
        constants (False, the parameterisation before they existed).
      param_dtype: parameter dtype.
    """

    n_species: int
    avg_num_neighbors: float
    cutoff: float = 5.0
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
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, species: Array, edges: Edges) -> Array:
        """Per-atom outputs.

        Args:
          species: [n_atoms] int species indices.
          edges: dense-layout :class:`Edges` ([n_atoms, n_slots]), vectors in Angstrom.

        Returns:
          [n_atoms] per-atom outputs, dtype of ``edges.vectors``.

        Raises:
          ValueError: for sparse-layout edges.
        """
        if edges.senders.ndim != 2:
            raise ValueError("GemNetT needs dense-layout edges ([n_atoms, n_slots]); build the "
                             "model with neighbor_format='dense'")
        dtype = edges.vectors.dtype
        pd = self.param_dtype
        p = self.envelope_exponent
        inv_sqrt_nb = 1.0 / math.sqrt(self.avg_num_neighbors)
        if self.max_neighbors is not None:
            edges = cap_neighbors(edges, self.max_neighbors)[0]
        n_slots = edges.senders.shape[1]
        mask = edges.mask

        # bases
        d = jnp.linalg.norm(edges.vectors, axis=-1)  # [N, S]; vectors are never zero
        freq = self.param("rbf_frequencies", lambda _k, n: jnp.pi * jnp.arange(1, n + 1, dtype=pd),
                          self.num_radial).astype(dtype)
        rbf_scale = 1.0 / gb.bessel_rbf_rms(self.cutoff, self.num_radial, p)
        rbf = gb.bessel_rbf(d, freq, self.cutoff, p) * rbf_scale  # [N, S, R]
        zeros = gb.spherical_bessel_zeros(self.num_spherical, self.num_radial)
        # unit second moment of radial x Y_l0 (Y_l0 has mean square 1/(4 pi) over angles)
        rad_scale = math.sqrt(4.0 * math.pi) / gb.spherical_bessel_rbf_rms(self.cutoff, zeros, p)
        rad = gb.spherical_bessel_rbf(d, self.cutoff, zeros, p) * rad_scale  # [N, S, L, R]
        unit = edges.vectors / d[..., None]
        cos = jnp.clip(jnp.einsum("asx,atx->ast", unit, unit), -1.0, 1.0)  # [N, S, S]
        pair = mask[:, :, None] & mask[:, None, :] & ~jnp.eye(n_slots, dtype=bool)
        sph = jnp.where(pair[..., None], gb.zonal_harmonics(cos, self.num_spherical), 0.0)

        # shared projections of the bases
        def project(x, features, name):
            return Dense(features, activation=False, param_dtype=pd, name=name)(x)
        rbf3 = project(rbf, self.emb_size_rbf, "mlp_rbf3")
        rbf_h = project(rbf, self.emb_size_rbf, "mlp_rbf_h")
        rbf_out = project(rbf, self.emb_size_rbf, "mlp_rbf_out")
        w_cbf = self.param("mlp_cbf3", he_orthogonal_init,
                           (self.num_spherical, self.num_radial, self.emb_size_cbf), pd)
        cbf3 = jnp.einsum("aslr,lrc->aslc", rad, w_cbf.astype(dtype))  # [N, S, L, C]

        # embeddings
        h = nn.Embed(self.n_species, self.emb_size_atom, dtype=dtype, param_dtype=pd,
                     embedding_init=uniform_sqrt3, name="atom_embedding")(species)  # [N, A]
        h_c = h[edges.senders]
        h_a = jnp.broadcast_to(h[:, None], h_c.shape)
        m = Dense(self.emb_size_edge, param_dtype=pd, name="edge_embedding")(
            jnp.concatenate([h_c, h_a, rbf], axis=-1))  # [N, S, E]

        reverse_slot = reverse_edge_slot(edges)
        out_kw = dict(emb_size_atom=self.emb_size_atom, num_atom=self.num_atom,
                      inv_sqrt_neighbors=inv_sqrt_nb, trainable_scales=self.trainable_scales,
                      output=True, output_init=self.output_init, param_dtype=pd)
        energy = _AtomUpdate(**out_kw, name="output_0")(m, rbf_out, mask)
        for t in range(self.n_blocks):
            h, m = _Interaction(
                emb_size_atom=self.emb_size_atom, emb_size_edge=self.emb_size_edge,
                emb_size_trip=self.emb_size_trip, emb_size_bil_trip=self.emb_size_bil_trip,
                num_before_skip=self.num_before_skip, num_after_skip=self.num_after_skip,
                num_concat=self.num_concat, num_atom=self.num_atom,
                inv_sqrt_neighbors=inv_sqrt_nb, trainable_scales=self.trainable_scales,
                param_dtype=pd, name=f"interaction_{t}",
            )(h, m, rbf3, cbf3, sph, rbf_h, edges, reverse_slot)
            energy = energy + _AtomUpdate(**out_kw, name=f"output_{t + 1}")(m, rbf_out, mask)
        return energy[:, 0]
