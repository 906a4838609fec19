"""The localized Boltzmann estimator: one molecule per environment (docs: README, "Localized
estimator").

In a liquid, a global ensemble average barely moves when one molecule is about to break. The
localized estimator treats every (frame, molecule) pair as a sample: its *local energy* is the
sum of the per-atom energies of the molecule's atoms, each computed on the full (periodic)
frame, and its *local observable* a function of the frame and the molecule (default: its bond
lengths, minimum image). With environments e sampled from the frames of an epoch,

    d<O>/dtheta = -beta Cov_e(O_e, dU_e/dtheta)

and :func:`localized_boltzmann_loss` returns ``loss_fn(<O>, target)`` whose ``jax.grad`` is
that estimator (a ``jax.custom_vjp``, ``jit``-compatible).

How the gradient is computed: the estimator is ``grad_theta sum_e c_e U_e`` with constant
coefficients ``c_e``. Since ``U_e = sum_{a in molecule(e)} eps_a(x_frame(e))``, this equals
``grad_theta sum_f sum_a C[f, a] eps_a(x_f)`` with per-atom cotangents ``C[f, a] = sum of c_e
over the environments of frame f whose molecule holds atom a``. So the backward pass is ONE
reverse pass per chunk of frames through a weighted sum of per-atom energies: never a Jacobian
per environment, never per-sample gradients, and its memory does not depend on the number of
environments (only the [n_frames, n_molecules] coefficient table does).

Scalings, as for the global estimator (:func:`stablejax.estimator.boltzmann_loss`):

* ``"physical"``: beta = 1/kT kept; one covariance over all sampled environments, each
  weighted by ``environments.weight`` (the inverse of its inclusion probability in a stratified
  subsample, :func:`stratified_environments`), so that it estimates the covariance over all
  candidate environments;
* ``"reference"``: the reference implementation's water estimator: no beta, unweighted,
  environments shuffled into blocks of ``block_size`` (4 for water), v = 2 (block mean -
  target) per block, the biased block covariance, the plain mean over blocks.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Array, Params, PyTree
from stablejax.estimator import _common as C
from stablejax.sharding import check_mesh
from stablejax.estimator.boltzmann import estimator_constants


class Environments(NamedTuple):
    """Sampled environments, carried by index (a fixed capacity; ``mask`` marks the used rows).

    Attributes:
      frame: [n_env] int32, index of the environment's frame.
      molecule: [n_env] int32, index of its molecule (``molecule_index`` values).
      weight: [n_env] float, inverse inclusion probability (1 for a full census).
      mask: [n_env] bool, False for unused rows.
    """

    frame: Array
    molecule: Array
    weight: Array
    mask: Array


class LocalizedAux(NamedTuple):
    """Diagnostics of :func:`localized_boltzmann_loss` with ``has_aux=True``."""

    average: Array  # observable shape: weighted mean of the local observable
    local_energies: Array  # [n_env] eV, U_e (NaN with forward_energies=False)
    observables: Array  # [n_env, *obs_shape] local observables (constants)
    valid: Array  # [n_env] bool, environments in the average and the gradient
    n_valid: Array  # [] int32; 0 means loss and gradient were set to 0
    ess: Array  # [] float, exp(-sum w log w) of the normalised environment weights


def all_environments(n_frames: int, n_molecules: int) -> Environments:
    """Every (frame, molecule) pair, weight 1: frame-major order."""
    f, m = np.meshgrid(np.arange(n_frames), np.arange(n_molecules), indexing="ij")
    n = n_frames * n_molecules
    return Environments(jnp.asarray(f.reshape(-1), jnp.int32),
                        jnp.asarray(m.reshape(-1), jnp.int32), jnp.ones((n,), jnp.float32),
                        jnp.ones((n,), bool))


def stratified_environments(deviation: Array, valid: Array, key: Array, *, n_bins: int = 100,
                            per_bin: int) -> Environments:
    """Stratified subsample of the candidate environments of an epoch (the reference's water
    recipe): candidates are binned by ``deviation`` (100 equal-width bins over its range among
    valid candidates); up to ``per_bin`` candidates are drawn at random without replacement per
    bin (all of a bin with fewer). Rare, strongly deviating environments are thus
    over-sampled; each chosen one carries the inverse of its inclusion probability,
    ``max(1, count_bin / per_bin)``, so weighted averages estimate the census.

    Args:
      deviation: [n_frames, n_molecules] per-candidate deviation (e.g. the largest |bond length
        - reference| of the molecule).
      valid: [n_frames, n_molecules] bool, candidates that may be drawn (finite, from frames in
        the learning set).
      key: PRNG key.
      n_bins: number of equal-width bins.
      per_bin: most candidates drawn per bin (the reference: 5 x n_replicas).

    Returns:
      :class:`Environments` with capacity ``min(n_frames * n_molecules, n_bins * per_bin)``;
      rows beyond the drawn count have ``mask`` False. Jit-compatible (static sizes).

    Raises:
      ValueError: non-positive ``n_bins``/``per_bin`` or mismatched shapes.
    """
    if not (isinstance(n_bins, (int, np.integer)) and n_bins >= 1):
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    if not (isinstance(per_bin, (int, np.integer)) and per_bin >= 1):
        raise ValueError(f"per_bin must be a positive int, got {per_bin!r}")
    deviation = jnp.asarray(deviation)
    valid = jnp.asarray(valid, bool)
    if deviation.ndim != 2 or valid.shape != deviation.shape:
        raise ValueError(f"deviation and valid must both be [n_frames, n_molecules], got "
                         f"{deviation.shape} and {valid.shape}")
    n_frames, n_mol = deviation.shape
    n = n_frames * n_mol
    d = deviation.reshape(-1)
    ok = valid.reshape(-1) & jnp.isfinite(d)
    lo = jnp.min(jnp.where(ok, d, jnp.inf))
    hi = jnp.max(jnp.where(ok, d, -jnp.inf))
    width = jnp.where(hi > lo, hi - lo, 1.0)
    b = jnp.clip(jnp.floor((d - lo) / width * n_bins), 0, n_bins - 1).astype(jnp.int32)
    b = jnp.where(ok, b, n_bins)  # invalid candidates: a dummy bin, never drawn
    count = jax.ops.segment_sum(ok.astype(jnp.int32), b, n_bins + 1)
    # random order within bins: sort by (bin, uniform key)
    u = jax.random.uniform(key, (n,))
    order = jnp.lexsort((u, b))
    b_sorted = b[order]
    first = jnp.searchsorted(b_sorted, jnp.arange(n_bins + 1), side="left")
    rank = jnp.arange(n) - first[b_sorted]
    chosen_sorted = (b_sorted < n_bins) & (rank < per_bin)
    capacity = int(min(n, n_bins * per_bin))
    (pos,) = jnp.nonzero(chosen_sorted, size=capacity, fill_value=0)
    cand = order[pos]
    mask = jnp.arange(capacity) < jnp.sum(chosen_sorted)
    bins_of = b[cand]
    weight = jnp.maximum(1.0, count[jnp.minimum(bins_of, n_bins)] / per_bin)
    return Environments(frame=(cand // n_mol).astype(jnp.int32),
                        molecule=(cand % n_mol).astype(jnp.int32),
                        weight=jnp.where(mask, weight, 0.0).astype(jnp.float32), mask=mask)


def molecule_bonds(bonds: np.ndarray, molecule_index: np.ndarray) -> np.ndarray:
    """[n_molecules, k, 2] atom pairs of each molecule's bonds (every molecule must have the
    same number k of bonds, in the order they appear in ``bonds``), from the system's bond list
    and molecule index (never from atom order).

    Raises:
      ValueError: a bond between two molecules, or molecules with different bond counts.
    """
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    mol = np.asarray(molecule_index, dtype=np.int64)
    if bonds.size and np.any(mol[bonds[:, 0]] != mol[bonds[:, 1]]):
        raise ValueError("molecule_bonds: a bond joins atoms of different molecules")
    n_mol = int(mol.max()) + 1 if mol.size else 0
    per = [bonds[mol[bonds[:, 0]] == m] for m in range(n_mol)]
    counts = {len(p) for p in per}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"molecule_bonds: every molecule needs the same positive number of "
                         f"bonds, got counts {sorted(counts)}")
    return np.stack(per).astype(np.int32)


def bond_length_observable(bonds_per_molecule: np.ndarray, cell: Array | None,
                           positions: Callable[[PyTree], Array] = lambda f: f
                           ) -> Callable[[PyTree, Array], Array]:
    """``observable_fn(frame, molecule) -> [k]``: the molecule's bond lengths (minimum image in
    ``cell``, rows are lattice vectors; None for free space). ``positions`` extracts the
    positions [n_atoms, 3] from a frame (e.g. ``lambda f: f["R"]``)."""
    from stablejax.observables.distances import minimum_image

    table = jnp.asarray(bonds_per_molecule)

    def observable(frame, molecule):
        R = positions(frame)
        pairs = table[molecule]  # [k, 2]
        d = minimum_image(R[pairs[:, 0]] - R[pairs[:, 1]], cell)
        return jnp.linalg.norm(d, axis=-1)

    return observable


def _check_environments(env: Environments, n_frames: int, n_mol: int) -> Environments:
    shapes = [tuple(np.shape(x)) for x in env]
    if len(shapes[0]) != 1 or any(sh != shapes[0] for sh in shapes):
        raise ValueError(f"environments: frame, molecule, weight and mask must all be [n_env], "
                         f"got shapes {shapes}")
    if shapes[0][0] == 0:
        raise ValueError("environments: zero environments (nothing was sampled: check the "
                         "candidates' validity and the subsampling settings)")
    for name, x, n in (("frame", env.frame, n_frames), ("molecule", env.molecule, n_mol)):
        if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
            raise ValueError(f"environments.{name} must be integer indices, got "
                             f"{jnp.result_type(x)}")
        if not isinstance(x, jax.core.Tracer):
            a = np.asarray(x)
            if a.min() < 0 or a.max() >= n:
                raise ValueError(f"environments.{name} indices must be in [0, {n}), got "
                                 f"[{int(a.min())}, {int(a.max())}]")
    return Environments(jnp.asarray(env.frame, jnp.int32), jnp.asarray(env.molecule, jnp.int32),
                        jnp.asarray(env.weight), jnp.asarray(env.mask, bool))


def localized_boltzmann_loss(
    params: Params,
    frames: PyTree,
    environments: Environments,
    *,
    per_atom_energy_fn: Callable[[Params, PyTree], Array],
    observable_fn: Callable[[PyTree, Array], Array],
    molecule_index: Array,
    target: Array,
    kT: float | Array | None,
    loss_fn: Callable[[Array, Array], Array] | None = None,
    scaling: str = "physical",
    block_size: int = 4,
    chunk_size: int | None = 8,
    key: Array | None = None,
    has_aux: bool = False,
    forward_energies: bool = True,
    matmul_precision: str | None = "highest",
    mesh=None,
) -> Array | tuple[Array, LocalizedAux]:
    """Loss of the environment-averaged local observable, differentiable by the localized
    Boltzmann estimator (module docstring).

    Value: ``loss_fn(<O>, target)``, <O> the (weighted) mean of the local observable over the
    valid environments.

    Args:
      params: model parameters.
      frames: positions [n_frames, n_atoms, 3] or a pytree with that leading axis (e.g.
        ``{"R": ..., "neighbor_idx": ...}``); one frame goes to the two functions below.
      environments: the sampled (frame, molecule) pairs (:class:`Environments`;
        :func:`all_environments`, :func:`stratified_environments`).
      per_atom_energy_fn: ``(params, frame) -> [n_atoms]`` eV, per-atom energies of the full
        frame (a model's ``per_atom_energy_fn`` with its neighbour list bound).
      observable_fn: ``(frame, molecule) -> array`` (fixed shape), the local observable; e.g.
        :func:`bond_length_observable`.
      molecule_index: [n_atoms] int, the molecule of each atom (the system's, never inferred
        from atom order).
      target: reference value, broadcastable to the local observable's shape.
      kT: thermal energy, eV (``"physical"`` scaling; unused in ``"reference"``).
      loss_fn: ``loss_fn(average, target) -> scalar``; default mean squared error.
      scaling: ``"physical"`` or ``"reference"`` (module docstring).
      block_size: environments per block (``"reference"``; the paper's water runs use 4).
      chunk_size: frames per forward/backward chunk (memory only, not the result).
      key: PRNG key of the block shuffle (``"reference"``; None keeps the given order).
      has_aux: also return :class:`LocalizedAux`.
      forward_energies: evaluate the frames' per-atom energies in the forward pass to exclude
        environments with a non-finite local energy (and return ``aux.local_energies``);
        False skips that pass (the gradient then costs one chunked reverse pass over the
        frames; a chunk with a non-finite energy where a cotangent is non-zero is dropped).
      matmul_precision, mesh: as :func:`stablejax.estimator.boltzmann_loss` (with a mesh the
        frames' per-atom energies and the backward pass's chunks are split over its devices).

    Returns:
      The scalar loss, or ``(loss, aux)``.

    Raises:
      ValueError: a missing or malformed molecule index, an observable whose shape does not
        match the target or that is not one array per environment, zero environments, bad
        indices, per-atom energies of the wrong shape, or bad scaling/block/chunk/kT.
    """
    C.check_settings(scaling, block_size, chunk_size, kT, matmul_precision)
    mesh = check_mesh(mesh)
    frames, n_frames = C.as_frames(frames)
    if molecule_index is None:
        raise ValueError("the localized estimator needs the system's molecule index "
                         "(System.molecule_index, the molecule of every atom); this system has "
                         "none")
    if np.ndim(molecule_index) != 1 or not jnp.issubdtype(jnp.result_type(molecule_index),
                                                           jnp.integer):
        raise ValueError(f"molecule_index must be [n_atoms] integers, got shape "
                         f"{np.shape(molecule_index)} dtype {jnp.result_type(molecule_index)}")
    n_atoms = int(np.shape(molecule_index)[0])
    # the molecule count sizes the coefficient table: concrete indices give it exactly, traced
    # ones an upper bound (one molecule per atom)
    n_mol = (n_atoms if isinstance(molecule_index, jax.core.Tracer)
             else int(np.max(np.asarray(molecule_index))) + 1)
    molecule_index = jnp.asarray(molecule_index, jnp.int32)
    env = _check_environments(environments, n_frames, n_mol)
    one = C.one_frame_struct(frames)
    out = jax.eval_shape(observable_fn, one, jax.ShapeDtypeStruct((), jnp.int32))
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError("observable_fn(frame, molecule) must return one array per environment, "
                         f"got a pytree {jax.tree.structure(out)}")
    obs_shape, obs_dtype = tuple(out.shape), out.dtype
    target = jnp.asarray(target)
    try:
        ok_shape = np.broadcast_shapes(target.shape, obs_shape) == obs_shape
    except ValueError:
        ok_shape = False
    if not ok_shape:
        raise ValueError(f"observable_fn(frame, molecule) returns shape {obs_shape} per "
                         f"environment, which the target of shape {target.shape} does not "
                         "broadcast to")
    e_out = jax.eval_shape(per_atom_energy_fn, params, one)
    if not isinstance(e_out, jax.ShapeDtypeStruct) or e_out.shape != (n_atoms,):
        raise ValueError(f"per_atom_energy_fn(params, frame) must return [n_atoms] = "
                         f"[{n_atoms}] per-atom energies, got {getattr(e_out, 'shape', e_out)}")
    default_loss = loss_fn is None
    loss_fn = C.mse_loss if default_loss else loss_fn
    C.check_loss(loss_fn, obs_shape, obs_dtype, target)
    perm = (C.permutation(key, env.frame.shape[0]) if scaling == "reference"
            else jnp.arange(env.frame.shape[0]))
    kT = jnp.asarray(1.0 if kT is None else kT)
    core = _make_core(per_atom_energy_fn, observable_fn, loss_fn, default_loss, scaling,
                      block_size, chunk_size, obs_shape, forward_energies, e_out.dtype,
                      matmul_precision, n_mol, mesh)
    loss, aux = core(params, frames, env, molecule_index, target, kT, perm)
    return (loss, aux) if has_aux else loss


def _make_core(per_atom_energy_fn, observable_fn, loss_fn, default_loss, scaling, block_size,
               chunk_size, obs_shape, forward_energies, energy_dtype, matmul_precision, n_mol,
               mesh=None):

    def env_observables(frames, env):
        def one(inp):
            f, m = inp
            frame = jax.tree.map(lambda x: x[f], frames)
            return observable_fn(frame, m)

        return C.map_frames(one, (env.frame, env.molecule), chunk_size)

    def forward(params, frames, env, molecule_index, target, kT, perm):
        with C.precision_scope(matmul_precision):
            n_env = env.frame.shape[0]
            frame_ok = C.frames_finite(frames)
            obs = env_observables(frames, env).reshape(n_env, -1)
            if forward_energies:
                eps = C.map_frames(lambda x: per_atom_energy_fn(params, x), frames, chunk_size,
                                   mesh)
                per_mol = jax.vmap(lambda e: jax.ops.segment_sum(e, molecule_index, n_mol))(eps)
                local_e = per_mol[env.frame, env.molecule]  # [n_env]
            else:
                local_e = jnp.full((n_env,), jnp.nan, energy_dtype)
            dtype = jnp.result_type(obs.dtype, local_e.dtype, float)
            valid = env.mask & frame_ok[env.frame] & jnp.all(jnp.isfinite(obs), axis=1)
            if forward_energies:
                valid = valid & jnp.isfinite(local_e)
            if scaling == "physical":
                wt = jnp.where(valid, env.weight.astype(dtype), 0.0)
                valid = valid & (wt > 0)
            else:
                wt = valid.astype(dtype)
            avg_s, loss, w, centred, coef, ids, v = estimator_constants(
                obs, wt, jnp.sum(wt), valid, perm, target, kT, loss_fn, default_loss, scaling,
                block_size, obs_shape, dtype)
            obs = jnp.where(valid[:, None], obs, 0.0)
            aux = LocalizedAux(avg_s, local_e, obs.reshape((n_env,) + obs_shape), valid,
                               jnp.sum(valid, dtype=jnp.int32), C.entropy_ess(w))
            res = (params, frames, env, molecule_index, frame_ok, valid, centred,
                   coef.astype(dtype), ids, v.astype(dtype))
            return (loss, aux), res

    @jax.custom_vjp
    def core(params, frames, env, molecule_index, target, kT, perm):
        return forward(params, frames, env, molecule_index, target, kT, perm)[0]

    def core_bwd(res, ct):
        with C.precision_scope(matmul_precision):
            params, frames, env, molecule_index, frame_ok, valid, centred, coef, ids, v = res
            g_loss, g_aux = ct
            vt = g_loss * v[ids] + g_aux.average.reshape(1, -1)
            c = -coef * jnp.sum(centred * vt, axis=1)
            if forward_energies:
                c = c + jnp.where(valid, g_aux.local_energies, 0.0)
            c = jnp.where(valid, c, 0.0)
            n_frames = frame_ok.shape[0]
            table = jnp.zeros((n_frames, n_mol), c.dtype).at[env.frame, env.molecule].add(c)
            atom_ct = table[:, molecule_index]  # [n_frames, n_atoms]
            used = frame_ok & jnp.any(atom_ct != 0, axis=1)
            safe = C.replace_invalid(frames, frame_ok)
            atom_ct = jnp.where(used[:, None], atom_ct, 0.0)
            grad = jax.lax.cond(
                jnp.any(used),
                lambda: C.weighted_energy_grad(per_atom_energy_fn, params, safe, atom_ct,
                                               chunk_size, mesh),
                lambda: jax.tree.map(jnp.zeros_like, params))
            return (grad, None, None, None, None, None, None)

    core.defvjp(lambda *a: forward(*a), core_bwd)
    return core
