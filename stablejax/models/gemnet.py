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
initialisation (orthogonal, standardised per output, times ``1/sqrt(fan_in)``), except the last
layer of each output block, zero by default (``output_init``): the model starts at the
per-species energy shifts with zero forces.

``max_neighbors`` (off by default) applies the paper's neighbour cap as mutual k-nearest
neighbours (:func:`cap_neighbors`).

Scaling factors: the authors fit one factor per neighbour sum and per radial Hadamard product on
data (``fit_scaling.py``). Here, instead: every sum over neighbours (atom update, output block)
and over triplets (bilinear layer) is divided by ``sqrt(avg_num_neighbors)`` (a constant from the
training data, as in NequIP); and the two bases are divided by constants that give them unit
second moment over a uniform gas inside the cutoff (``rbf``; radial part times ``Y_l0`` for the
spherical basis; computed by quadrature at trace time, frequencies at their initial ``n pi``), so
that the Hadamard products with the (He-initialised, variance-preserving) basis projections keep
the scale of the messages. Without this, the triplet branch is ~1e-4 of the signal at
initialisation.

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
from stablejax.models.neighbors import Edges

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def scaled_silu(x: Array) -> Array:
    """``silu(x) / 0.6`` (roughly variance preserving for unit-normal inputs)."""
    return jax.nn.silu(x) * (1.0 / 0.6)


def he_orthogonal_init(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """Orthogonal matrix over (fan-in, out), standardised per output column, times 1/sqrt(fan_in).

    The last axis of ``shape`` is the output axis; all leading axes form the fan-in.
    """
    fan_in = int(np.prod(shape[:-1]))
    w = nn.initializers.orthogonal()(key, (fan_in, shape[-1]), jnp.float32)
    if fan_in > 1:
        w = (w - w.mean(axis=0)) / jnp.sqrt(w.var(axis=0, ddof=1) + 1e-6)
    return (w / math.sqrt(fan_in)).reshape(shape).astype(dtype)


def _uniform_sqrt3(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """Uniform on [-sqrt 3, sqrt 3] (unit variance), the authors' atom embedding init."""
    return jax.random.uniform(key, shape, dtype, -math.sqrt(3.0), math.sqrt(3.0))


def _zeros(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    del key
    return jnp.zeros(shape, dtype)


@jax.custom_vjp
def dense_product(x: Array, kernel: Array) -> Array:
    """``x @ kernel`` ([..., in] x [in, out]) whose kernel gradient reads stored activations.

    The same value and gradients as ``jnp.dot``. The kernel gradient sums ``x^T dy`` over every
    leading position (frames x atoms x neighbour slots on the edge tensors), which needs ``x``
    transposed; left to itself XLA's CPU backend fuses the elementwise ops that produced ``x``
    (activations, residual sums, masks) into that transpose and recomputes them in transposed
    order, and those fusions took 60% of the parameter gradient's time on the water box
    (``benchmarks/bench_localized.py --profile``). Here the backward pass takes ``x`` and ``dy``
    as stored (``lax.optimization_barrier``), which made the parameter gradient of the cpu-sized
    GemNet-T 2.4x faster (about one energy+force pass). The input gradient is the plain
    ``dy @ kernel^T``.
    """
    return jnp.dot(x, kernel)


def _dense_product_fwd(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _dense_product_bwd(res, dy):
    x, kernel = res
    dx = jnp.dot(dy, kernel.T)
    xs, dys = jax.lax.optimization_barrier((x, dy))
    lead = "".join(chr(ord("a") + i) for i in range(x.ndim - 1))
    dk = jnp.einsum(f"{lead}i,{lead}o->io", xs, dys)
    return dx, dk.astype(kernel.dtype)


dense_product.defvjp(_dense_product_fwd, _dense_product_bwd)


class _Dense(nn.Module):
    """Bias-free dense layer with the scaled SiLU (or none)."""

    features: int
    activation: bool = True
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", he_orthogonal_init, (x.shape[-1], self.features),
                            self.param_dtype)
        y = dense_product(x, kernel.astype(x.dtype))
        return scaled_silu(y) if self.activation else y


class _Residual(nn.Module):
    """``(x + act(W2 act(W1 x))) / sqrt(2)``."""

    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = _Dense(x.shape[-1], param_dtype=self.param_dtype, name="dense_0")(x)
        y = _Dense(x.shape[-1], param_dtype=self.param_dtype, name="dense_1")(y)
        return (x + y) * _INV_SQRT2


class _AtomUpdate(nn.Module):
    """Sum of ``m * (W rbf)`` over incoming edges, dense to ``emb_size_atom``, residual layers;
    with ``output=True`` a final bias-free ``Dense(1)``: [n_atoms, 1]."""

    emb_size_atom: int
    num_atom: int
    inv_sqrt_neighbors: float
    output: bool = False
    output_init: str = "heorthogonal"
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, m: Array, rbf: Array, mask: Array) -> Array:
        pd = self.param_dtype
        x = m * _Dense(m.shape[-1], activation=False, param_dtype=pd, name="dense_rbf")(rbf)
        x = jnp.sum(jnp.where(mask[..., None], x, 0.0), axis=1) * self.inv_sqrt_neighbors
        x = _Dense(self.emb_size_atom, param_dtype=pd, name="dense_atom")(x)
        for k in range(self.num_atom):
            x = _Residual(pd, name=f"residual_{k}")(x)
        if self.output:
            init = he_orthogonal_init if self.output_init == "heorthogonal" else _zeros
            kernel = self.param("out_energy", init, (x.shape[-1], 1), pd)
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
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: Array, m: Array, rbf3: Array, cbf3: Array, sph: Array,
                 rbf_h: Array, edges: Edges, reverse_slot: Array) -> tuple[Array, Array]:
        pd = self.param_dtype
        dense = lambda f, name, act=True: _Dense(f, act, pd, name=name)  # noqa: E731
        # triplet interaction: b -> a messages, summed into the edges c -> a of the same centre a
        x_ba = dense(self.emb_size_edge, "dense_ba")(m)
        x_ba = x_ba * dense(self.emb_size_edge, "mlp_rbf3", act=False)(rbf3)
        x_ba = dense(self.emb_size_trip, "down_projection")(x_ba)  # [N, S, T]
        sum_k = jnp.einsum("astl,atf->aslf", sph, x_ba)  # [N, S, L, T]
        w_bil = self.param("bilinear", he_orthogonal_init,
                           (self.emb_size_trip, cbf3.shape[-1], self.emb_size_bil_trip), pd)
        x = jnp.einsum("aslc,aslf->ascf", cbf3, sum_k)  # [N, S, C, T]
        x = jnp.einsum("ascf,fco->aso", x, w_bil.astype(m.dtype)) * self.inv_sqrt_neighbors
        x_ca = dense(self.emb_size_edge, "up_projection_ca")(x)
        x_ac = dense(self.emb_size_edge, "up_projection_ac")(x)
        x_ac = x_ac[edges.senders, reverse_slot]  # value on the reverse edge a -> c
        x3 = (x_ca + x_ac) * _INV_SQRT2
        # skip connection and residual layers
        x = (dense(self.emb_size_edge, "dense_ca")(m) + x3) * _INV_SQRT2
        for k in range(self.num_before_skip):
            x = _Residual(pd, name=f"before_skip_{k}")(x)
        m = (m + x) * _INV_SQRT2
        for k in range(self.num_after_skip):
            m = _Residual(pd, name=f"after_skip_{k}")(m)
        # atom update
        h2 = _AtomUpdate(self.emb_size_atom, self.num_atom, self.inv_sqrt_neighbors,
                         param_dtype=pd, name="atom_update")(m, rbf_h, edges.mask)
        h = (h + h2) * _INV_SQRT2
        # edge update from the new atom embeddings
        m2 = jnp.concatenate([h[edges.senders], jnp.broadcast_to(h[:, None], m.shape[:2]
                                                                  + h.shape[-1:]), m], axis=-1)
        m2 = dense(self.emb_size_edge, "concat")(m2)
        for k in range(self.num_concat):
            m2 = _Residual(pd, name=f"concat_residual_{k}")(m2)
        return h, (m + m2) * _INV_SQRT2


def gemnet_parameter_count(cfg, n_species: int) -> int:
    """Number of scalar parameters of a :class:`GemNetT` built from a ``GemNetTConfig``.

    Shapes only (``jax.eval_shape``): nothing is computed.
    """
    from stablejax.models.core import _module

    module = _module(cfg, n_species, 1.0)
    edges = Edges(senders=jnp.array([[1], [0]]), receivers=jnp.array([[0], [1]]),
                  vectors=jnp.array([[[1.0, 0.0, 0.0]], [[-1.0, 0.0, 0.0]]]),
                  mask=jnp.ones((2, 1), bool))
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(2, jnp.int32), edges)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)))


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
    output_init: str = "zeros"
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
            return _Dense(features, activation=False, param_dtype=pd, name=name)(x)
        rbf3 = project(rbf, self.emb_size_rbf, "mlp_rbf3")
        rbf_h = project(rbf, self.emb_size_rbf, "mlp_rbf_h")
        rbf_out = project(rbf, self.emb_size_rbf, "mlp_rbf_out")
        w_cbf = self.param("mlp_cbf3", he_orthogonal_init,
                           (self.num_spherical, self.num_radial, self.emb_size_cbf), pd)
        cbf3 = jnp.einsum("aslr,lrc->aslc", rad, w_cbf.astype(dtype))  # [N, S, L, C]

        # embeddings
        h = nn.Embed(self.n_species, self.emb_size_atom, dtype=dtype, param_dtype=pd,
                     embedding_init=_uniform_sqrt3, name="atom_embedding")(species)  # [N, A]
        h_c = h[edges.senders]
        h_a = jnp.broadcast_to(h[:, None], h_c.shape)
        m = _Dense(self.emb_size_edge, param_dtype=pd, name="edge_embedding")(
            jnp.concatenate([h_c, h_a, rbf], axis=-1))  # [N, S, E]

        reverse_slot = reverse_edge_slot(edges)
        out_kw = dict(emb_size_atom=self.emb_size_atom, num_atom=self.num_atom,
                      inv_sqrt_neighbors=inv_sqrt_nb, output=True, output_init=self.output_init,
                      param_dtype=pd)
        energy = _AtomUpdate(**out_kw, name="output_0")(m, rbf_out, mask)
        for t in range(self.n_blocks):
            h, m = _Interaction(
                emb_size_atom=self.emb_size_atom, emb_size_edge=self.emb_size_edge,
                emb_size_trip=self.emb_size_trip, emb_size_bil_trip=self.emb_size_bil_trip,
                num_before_skip=self.num_before_skip, num_after_skip=self.num_after_skip,
                num_concat=self.num_concat, num_atom=self.num_atom,
                inv_sqrt_neighbors=inv_sqrt_nb, param_dtype=pd, name=f"interaction_{t}",
            )(h, m, rbf3, cbf3, sph, rbf_h, edges, reverse_slot)
            energy = energy + _AtomUpdate(**out_kw, name=f"output_{t + 1}")(m, rbf_out, mask)
        return energy[:, 0]
