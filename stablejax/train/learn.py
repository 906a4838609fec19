"""StABlE's learning step: g = g_obs + qm_weight * g_QM through the optax step of
:func:`stablejax.train.optim.stable_optimizer`, and the frame reuse of a learning epoch.

The step is compiled once; everything it reads that is an array (parameters, optimizer state,
the h(r) target, the QM batches, the frames) is an argument, never a compiled-in constant, so new
data or new targets reuse the compiled code.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from stablejax._types import Array, Params
from stablejax.estimator import boltzmann_loss, frame_energies, importance_weights
from stablejax.models.frames import frame_energy_fn
from stablejax.train.losses import Batch, qm_value_and_grad
from stablejax.train.problem import Problem
from stablejax.train.stable_config import TrainConfig

log = logging.getLogger(__name__)


class StableData(NamedTuple):
    """The arrays StABlE training reads (pytree leaves of the training state, passed to the
    compiled step as arguments).

    Attributes:
      target: [n_obs] reference value of the observable (h(r)).
      qm_batches: the QM training set as stacked padded batches ([n_batches, B, ...]), or None
        when ``qm_weight`` is 0.
    """

    target: Array
    qm_batches: Batch | None


def frame_functions(problem: Problem) -> tuple[Callable, Callable, Callable]:
    """``(energy_fn(params, frame), observable_fn(frame), qm_energy_fn)`` of learning frames.

    A frame is the positions [n_atoms, 3], or for a periodic model with a neighbour list
    ``{"R": positions, "neighbor_idx": the list the simulator used at that frame}`` (see
    :func:`learning_frames`); ``qm_energy_fn(params, R, neighbor_idx=None)`` is the frame
    energy of the QM batches (``stablejax.models.frame_energy_fn``).
    """
    model = problem.model
    frame_energy = frame_energy_fn(model, problem.initial_positions[0])
    if model.neighbor_fn is None:
        return (lambda p, R: model.energy_fn(p, R)), problem.observable_fn, frame_energy
    return ((lambda p, f: frame_energy(p, f["R"], neighbor_idx=f["neighbor_idx"])),
            (lambda f: problem.observable_fn(f["R"])), frame_energy)


def localized_obs_loss(problem: Problem, cfg: TrainConfig) -> Callable:
    """``obs_loss(params, target, frames, mask, key, log_weights) -> (loss, aux)`` of the
    localized estimator: every (frame, molecule) of the masked frames is a candidate; candidates
    are stratified by their largest bond deviation from the target and subsampled
    (:func:`stablejax.estimator.localized.stratified_environments`), then
    :func:`stablejax.estimator.localized.localized_boltzmann_loss` (its aux has no per-frame
    energies: frame reuse is off for this estimator)."""
    from stablejax.estimator.localized import localized_boltzmann_loss, stratified_environments

    model, est = problem.model, cfg.estimator
    eps = frame_energy_fn(model, problem.initial_positions[0], per_atom=True)
    local_fn = problem.local_observable_fn
    mol = problem.molecule_index
    n_mol = int(mol.max()) + 1
    per_bin = est.stratify_per_bin or 5 * cfg.n_replicas
    if model.neighbor_fn is None:
        positions = lambda f: f  # noqa: E731
        per_atom = eps
    else:
        positions = lambda f: f["R"]  # noqa: E731
        per_atom = lambda p, f: eps(p, f["R"], neighbor_idx=f["neighbor_idx"])  # noqa: E731

    def observable(frame, molecule):
        return local_fn(positions(frame), molecule)

    def obs_loss(params, target, frames, mask, key, log_weights):
        del log_weights  # no frame reuse with environments
        k_draw, k_blocks = jax.random.split(key)
        R = positions(frames)
        local = jax.vmap(lambda x: jax.vmap(local_fn, in_axes=(None, 0))(
            x, jnp.arange(n_mol)))(R)  # [n_frames, n_mol, k]
        dev = jnp.max(jnp.abs(local - target), axis=-1)
        ok = mask[:, None] & jnp.all(jnp.isfinite(local), axis=-1)
        env = stratified_environments(dev, ok, k_draw, n_bins=est.stratify_bins,
                                      per_bin=per_bin)
        loss, aux = localized_boltzmann_loss(
            params, frames, env, per_atom_energy_fn=per_atom, observable_fn=observable,
            molecule_index=mol, target=target, kT=problem.kT_ev, scaling=est.scaling,
            block_size=est.block_size, chunk_size=est.chunk_size, key=k_blocks, has_aux=True,
            forward_energies=est.forward_energies, mesh=problem.mesh)
        return loss, aux

    return obs_loss


def learning_frames(traj) -> Any:
    """The recorded frames of an epoch, flattened over replicas: positions
    [n_replicas * n_frames, n_atoms, 3], with their neighbour lists when the simulator kept
    them (``{"R": ..., "neighbor_idx": ...}``)."""
    R = traj.positions.reshape((-1,) + traj.positions.shape[2:])
    if traj.neighbor_idx is None:
        return R
    idx = traj.neighbor_idx
    return {"R": R, "neighbor_idx": idx.reshape((-1,) + idx.shape[2:])}


def make_learn_step(problem: Problem, cfg: TrainConfig, tx: optax.GradientTransformation):
    """Jitted ``learn_step(params, opt_state, data, frames, mask, key, log_weights=None)
    -> (params, opt_state, info)``: one optax step (``tx``) on g_obs + qm_weight * g_QM.

    ``log_weights``: importance weights of frames sampled under older parameters (frame
    reuse). ``info`` holds scalars (losses, norms, frames used, ``finite``) and ``energies``
    [n_frames], the frames' energies under the input parameters (NaN with
    ``cfg.estimator.forward_energies=False``).

    Raises:
      ValueError: ``cfg.optimizer.qm_weight > 0`` but ``problem.qm_batches`` is None.
    """
    if cfg.optimizer.qm_weight > 0 and problem.qm_batches is None:
        raise ValueError(
            f"TrainConfig.optimizer.qm_weight is {cfg.optimizer.qm_weight} but the problem has "
            "no QM batches (Problem.qm_batches is None): set optimizer.qm_weight=0 or give "
            "labelled frames")
    use_qm = cfg.optimizer.qm_weight > 0
    energy_fn, observable_fn, qm_energy_fn = frame_functions(problem)

    def obs_loss(params, target, frames, mask, key, log_weights):
        return boltzmann_loss(params, frames, energy_fn=energy_fn, observable_fn=observable_fn,
                              target=target, kT=problem.kT_ev, mask=mask,
                              log_weights=log_weights, scaling=cfg.estimator.scaling,
                              block_size=cfg.estimator.block_size,
                              chunk_size=cfg.estimator.chunk_size, key=key, has_aux=True,
                              forward_energies=cfg.estimator.forward_energies,
                              mesh=problem.mesh)

    if cfg.estimator.environment == "molecule":
        if problem.local_observable_fn is None or problem.molecule_index is None:
            raise ValueError("estimator.environment='molecule' needs a problem built with it "
                             "(make_problem gives local_observable_fn and molecule_index)")
        obs_loss = localized_obs_loss(problem, cfg)  # noqa: F811

    def qm_grad(params, batches: Batch, key):
        n = batches.energies.shape[0]
        if cfg.optimizer.qm_max_batches is not None and cfg.optimizer.qm_max_batches < n:
            idx = jax.random.choice(key, n, (cfg.optimizer.qm_max_batches,), replace=False)
            batches = jax.tree.map(lambda x: x[idx], batches)

        def one(acc, b):
            (l, _), g = qm_value_and_grad(params, b, energy_fn=qm_energy_fn,
                                          cfg=cfg.optimizer.qm_loss, scales=problem.qm_scales,
                                          mesh=problem.mesh)
            return jax.tree.map(jnp.add, acc, (l, g)), None

        zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
        (l, g), _ = jax.lax.scan(one, zero, batches)
        m = batches.energies.shape[0]
        return l / m, jax.tree.map(lambda x: x / m, g)

    @jax.jit
    def learn_step(params, opt_state, data: StableData, frames, mask, key, log_weights=None):
        k_est, k_qm = jax.random.split(key)
        (l_obs, aux), g_obs = jax.value_and_grad(obs_loss, has_aux=True)(
            params, data.target, frames, mask, k_est, log_weights)
        if use_qm:
            l_qm, g_qm = qm_grad(params, data.qm_batches, k_qm)
            g = jax.tree.map(lambda a, b: a + cfg.optimizer.qm_weight * b, g_obs, g_qm)
        else:
            l_qm, g = jnp.zeros(()), g_obs
        norm = optax.tree.norm(g)
        updates, opt_state = tx.update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
        info = {"obs_loss": l_obs, "qm_loss": l_qm, "grad_norm": norm,
                "obs_grad_norm": optax.tree.norm(g_obs), "n_frames_used": aux.n_valid,
                "finite": jnp.isfinite(norm),
                "energies": (aux.energies if hasattr(aux, "energies")
                             else jnp.full(mask.shape, jnp.nan))}
        return params, opt_state, info

    return learn_step


def make_frame_reweighting(problem: Problem, cfg: TrainConfig):
    """Jitted ``(energies, weights)`` for reusing a learning epoch's frames (docs/method.md §5):
    ``energies(params, frames) -> [n]`` eV, stored at sampling time, and
    ``weights(params, frames, mask, ref_energies) -> ImportanceWeights`` under newer parameters,
    at the sampling temperature (beta is physical whatever the estimator's scaling)."""
    energy_fn = frame_functions(problem)[0]
    chunk = cfg.estimator.chunk_size
    energies = jax.jit(lambda p, f: frame_energies(p, f, energy_fn, chunk_size=chunk))
    weights = jax.jit(lambda p, f, m, e0: importance_weights(
        p, f, energy_fn, e0, problem.kT_ev, m, chunk_size=chunk))
    return energies, weights


def learn_epoch(params: Params, opt_state: Any, data: StableData, frames, mask: Array,
                key: Array, cfg: TrainConfig, learn_step, reweighting, epoch: int
                ) -> tuple[Params, Any, dict]:
    """The optimizer steps of one learning epoch: the first on the fresh frames, then up to
    ``cfg.estimator.max_steps_per_epoch - 1`` more on the same frames, importance-reweighted,
    while their ESS stays >= ``cfg.estimator.reuse_min_ess_fraction`` of the usable frames.
    The record carries the first step's losses and norms (those of the fresh frames)."""
    params0 = params
    params, opt_state, info = learn_step(params, opt_state, data, frames, mask, key)
    e_fresh = info.pop("energies")
    record = {k: (bool(v) if k == "finite" else float(v))
              for k, v in jax.device_get(info).items()}
    if not record["finite"]:
        log.warning("epoch %d: non-finite gradient, update skipped", epoch)
    n_steps, ess_fraction = 1, None
    if cfg.estimator.max_steps_per_epoch > 1 and record["finite"]:
        energies_fn, weights_fn = reweighting
        # The estimator's forward pass already evaluated the fresh frames' energies.
        e0 = e_fresh if cfg.estimator.forward_energies else energies_fn(params0, frames)
        usable = mask & jnp.isfinite(e0)
        n_usable = int(jnp.sum(usable))
        for k in jax.random.split(jax.random.fold_in(key, 1),
                                  cfg.estimator.max_steps_per_epoch - 1):
            w = weights_fn(params, frames, usable, e0)
            ess_fraction = float(w.ess) / max(n_usable, 1)
            if n_usable == 0 or ess_fraction < cfg.estimator.reuse_min_ess_fraction:
                break
            new, new_opt, info_k = learn_step(params, opt_state, data, frames, usable, k,
                                              jnp.log(w.weights))
            info_k = jax.device_get({k2: info_k[k2] for k2 in ("finite", "obs_loss",
                                                                "qm_loss")})
            if not bool(info_k["finite"]):
                break
            params, opt_state, n_steps = new, new_opt, n_steps + 1
            record["obs_loss_last_step"] = float(info_k["obs_loss"])
            record["qm_loss_last_step"] = float(info_k["qm_loss"])
    record["learning_steps"] = n_steps
    record["reuse_ess_fraction"] = ess_fraction
    return params, opt_state, record
