"""Building blocks of GemNet-T (:mod:`stablejax.models.gemnet`): initialisers, the bias-free
dense and residual layers, and the scale factors.

Initialisation as in the authors' code (``gemnet_pytorch``/OCP ``initializers.py``): He-
orthogonal kernels (a random orthogonal matrix, standardised to mean 0 and variance 1 over the
fan-in of each output, times ``1/sqrt(fan_in)``: He variance with decorrelated columns) and a
uniform atom embedding of unit variance.

Scale factors (:func:`scale_factor`): the authors multiply every neighbour or triplet sum and
every radial Hadamard product by a scalar ``ScalingFactor``; StABlE trains them with the rest
of the network (the reference simulator sets ``requires_grad`` on every parameter). Here each is
a scalar parameter named ``scale_<what>`` in its block (``trainable=True``), initialised to the
constant the block used before (not fitted on data), or that constant itself
(``trainable=False``, the parameterisation of models saved before scale factors existed).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Array

INV_SQRT2 = 1.0 / math.sqrt(2.0)


def scaled_silu(x: Array) -> Array:
    """``silu(x) / 0.6`` (roughly variance preserving for unit-normal inputs)."""
    return jax.nn.silu(x) * (1.0 / 0.6)


def he_orthogonal_init(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """Orthogonal matrix over (fan-in, out), standardised per output column, times 1/sqrt(fan_in).

    The last axis of ``shape`` is the output axis; all leading axes form the fan-in. For one
    output (an energy head ``[fan_in, 1]``) this is a random unit direction, centred and
    rescaled to norm ~1.
    """
    fan_in = int(np.prod(shape[:-1]))
    w = nn.initializers.orthogonal()(key, (fan_in, shape[-1]), jnp.float32)
    if fan_in > 1:
        w = (w - w.mean(axis=0)) / jnp.sqrt(w.var(axis=0, ddof=1) + 1e-6)
    return (w / math.sqrt(fan_in)).reshape(shape).astype(dtype)


def uniform_sqrt3(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """Uniform on [-sqrt 3, sqrt 3] (unit variance), the authors' atom embedding init."""
    return jax.random.uniform(key, shape, dtype, -math.sqrt(3.0), math.sqrt(3.0))


def zeros_init(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    del key
    return jnp.zeros(shape, dtype)


#: Output-layer initialisers by ``GemNetTConfig.output_init``.
OUTPUT_INITS = {"heorthogonal": he_orthogonal_init, "zeros": zeros_init}


def scale_factor(module: nn.Module, name: str, y: Array, value: float, trainable: bool,
                 param_dtype) -> Array:
    """``y * s``: with ``trainable`` a scalar parameter ``name`` of ``module`` (initialised to
    ``value``), else the constant ``value``. Call from inside ``module``'s compact method."""
    if not trainable:
        return y * value
    s = module.param(name, lambda _key: jnp.asarray(value, param_dtype))
    return y * s.astype(y.dtype)


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


class Dense(nn.Module):
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


class Residual(nn.Module):
    """``(x + act(W2 act(W1 x))) / sqrt(2)``."""

    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        y = Dense(x.shape[-1], param_dtype=self.param_dtype, name="dense_0")(x)
        y = Dense(x.shape[-1], param_dtype=self.param_dtype, name="dense_1")(y)
        return (x + y) * INV_SQRT2
