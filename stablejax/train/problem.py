"""What StABlE training needs besides its evolving state: model, simulator, observable, target,
QM training batches. Built once by :func:`make_problem`; static during training."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Array
from stablejax.data.frames import Frames
from stablejax.data.systems import System
from stablejax.models import Model
from stablejax.models.frames import frames_neighbor_idx, label_errors
from stablejax.observables.distances import distance_distribution, distance_distribution_target
from stablejax.simulate import Simulator
from stablejax.simulate.build import make_simulator_for
from stablejax.train.losses import Batch, LossScales, loss_scales, make_batches, stack_batches
from stablejax.train.stable_config import TrainConfig
from stablejax.units import kT_ev


class Problem(NamedTuple):
    """Static ingredients of a StABlE run.

    Attributes:
      model: the potential (``model.energy_fn(params, R)``, eV).
      simulator: batched replica simulator (training thermostat and bond criterion).
      observable_fn: ``R [n_atoms, 3] -> h(r) [n_bins]``.
      target: [n_bins] h(r) of the reference trajectory (same convention).
      qm_batches: the QM training set as stacked padded batches ([n_batches, B, ...]), or None
        when ``qm_weight`` is 0.
      qm_scales: normalisation of the QM loss.
      kT_ev: thermal energy, eV.
      system: the molecule (bonds, reference bond lengths) that :func:`make_problem` built the
        simulator and observable from; the training loop never reads it, so a hand-built
        problem (e.g. a periodic fluid with its own criterion) may pass None.
      initial_positions: [n_train, n_atoms, 3] training structures replicas start from.
      local_observable_fn: localized estimator only (``estimator.environment='molecule'``):
        ``(R, molecule) -> [k]`` the molecule's bond lengths; ``observable_fn`` is then their
        mean over the molecules ([k], for the epoch's logged loss) and ``target`` [k] their mean
        over the training frames and molecules.
      molecule_index: [n_atoms] int, the molecule of every atom (localized estimator).
      mesh: the devices replicas and estimator frames are split over
        (:mod:`stablejax.sharding`; the simulator was built with it), or None (one device).
      val_errors: ``params -> {"energy_mae_mev", "force_mae_mev_per_angstrom", ...}`` on the
        validation frames (logged at the first epoch and after every learning epoch), or None.

    A hand-built problem: the simulator's ``steps_per_chunk`` must divide the epoch's steps
    (``TrainConfig.steps_per_epoch``); ``qm_batches=None`` needs ``optimizer.qm_weight=0``
    (``qm_scales`` is then unused). The h(r) target and the QM batches become
    leaves of the training state (``StableData``), never compiled-in constants.
    """

    model: Model
    simulator: Simulator
    observable_fn: Callable[[Array], Array]
    target: np.ndarray
    qm_batches: Batch | None
    qm_scales: LossScales
    kT_ev: float
    system: System | None
    initial_positions: np.ndarray
    local_observable_fn: Callable[[Array, Array], Array] | None = None
    molecule_index: np.ndarray | None = None
    mesh: Any = None
    val_errors: Callable[[Any], dict] | None = None


def local_bond_observables(system: System, train_positions: np.ndarray, dtype=jnp.float32):
    """The localized estimator's observables of a liquid: ``(local_fn(R, molecule) -> [k]`` bond
    lengths (minimum image), ``frame_fn(R) -> [k]`` their mean over molecules, the target [k]
    = the mean over the training frames and molecules)``.

    Raises:
      ValueError: a system without a molecule index, or molecules with different bond counts.
    """
    from stablejax.estimator.localized import bond_length_observable, molecule_bonds

    if system.molecule_index is None:
        raise ValueError(f"estimator.environment='molecule' needs a system with a molecule index "
                         f"(System.molecule_index); {system.name} has none")
    mol = np.asarray(system.molecule_index)
    table = molecule_bonds(system.bonds, mol)
    cell = None if system.cell is None else jnp.asarray(system.cell, dtype)
    local_fn = bond_length_observable(table, cell)
    molecules = jnp.arange(table.shape[0])

    def frame_fn(R):
        return jnp.mean(jax.vmap(local_fn, in_axes=(None, 0))(R, molecules), axis=0)

    target = np.asarray(jax.jit(jax.vmap(frame_fn))(jnp.asarray(train_positions, dtype))
                        ).mean(axis=0)
    return local_fn, frame_fn, target


def make_problem(model: Model, system: System, train: Frames, reference_positions: np.ndarray,
                 cfg: TrainConfig, *, dtype=jnp.float32, mesh: Any = "all",
                 val: Frames | None = None) -> Problem:
    """Build the :class:`Problem` of a molecule (or of a liquid with the localized estimator,
    ``cfg.estimator.environment='molecule'``).

    Args:
      model: the potential to train.
      system: bonds and reference bond lengths (``Dataset.system``).
      train: labelled QM training frames (energy/force gradient, initial replica structures).
      reference_positions: [n_frames, n_atoms, 3] reference trajectory, Angstrom: the h(r)
        target.
      cfg: training config.
      mesh: the devices replicas (simulation) and frames (estimator) are split over: a
        :class:`jax.sharding.Mesh` (:func:`stablejax.sharding.make_mesh`), ``"all"`` (every
        device JAX sees; one device runs the plain single-device code) or None (one device).
      val: labelled validation frames whose energy and force MAE the training log records
        (first epoch and every learning epoch); None: not logged.
    """
    from stablejax import sharding

    mesh = sharding.resolve_mesh(mesh)
    if train.n_atoms != system.n_atoms or reference_positions.shape[1] != system.n_atoms:
        raise ValueError(
            f"atom counts differ: system {system.n_atoms}, train {train.n_atoms}, "
            f"reference {reference_positions.shape[1]}")
    local_fn, mol = None, None
    if cfg.estimator.environment == "molecule":
        local_fn, observable_fn, target = local_bond_observables(system, train.positions, dtype)
        mol = np.asarray(system.molecule_index)
    else:
        hr = cfg.hr.kwargs()
        observable_fn = functools.partial(distance_distribution, **hr)
        target = np.asarray(distance_distribution_target(
            jnp.asarray(reference_positions, dtype), **hr))
    frames_per_chunk = _largest_divisor(cfg.frames_per_epoch, 10)
    simulator = make_simulator_for(model, system, cfg.md, frames_per_chunk=frames_per_chunk,
                                   mesh=mesh)
    qm_batches = None
    if cfg.optimizer.qm_weight > 0:
        if not train.has_labels:
            raise ValueError("qm_weight > 0 needs labelled training frames")
        qm_batches = stack_batches(make_batches(
            train, cfg.optimizer.qm_batch_size, dtype=dtype,
            neighbor_idx=frames_neighbor_idx(model, train.positions)))
    # Unlabelled frames are fine when qm_weight is 0 (they only give the start structures).
    scales = loss_scales(train, cfg.optimizer.qm_loss) if train.has_labels else LossScales(1.0, 1.0)
    val_errors = None
    if val is not None and val.has_labels and val.n_frames > 0:
        val_errors = label_errors(model, val, dtype=jnp.dtype(dtype).name)
    return Problem(model, simulator, observable_fn, target, qm_batches,
                   scales, kT_ev(cfg.md.temperature_k), system,
                   np.asarray(train.positions), local_fn, mol, mesh, val_errors)


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def replica_starts(problem: Problem, n_replicas: int, key: Array) -> np.ndarray:
    """[n_replicas, n_atoms, 3] random training structures (docs/method.md §10: initial
    conditions are random training structures), without repetition when there are enough."""
    n = problem.initial_positions.shape[0]
    idx = jax.random.choice(key, n, (n_replicas,), replace=n_replicas > n)
    return problem.initial_positions[np.asarray(idx)]
