"""Stability criteria: factories returning pure, ``vmap``-able ``criterion(R) -> CriterionResult``.

``R`` is one frame [n_atoms, 3] Angstrom or frames [..., n_atoms, 3]; the value is reduced over
all given frames (worst case). A non-finite value always counts as unstable. The simulator
(``stablejax.simulate``) calls a criterion on each dumped frame.

* Molecules: max over bonds of |bond length - reference mean length| > threshold
  (0.25 Angstrom during training, 0.5 Angstrom in evaluation; docs/method.md §6).
* Condensed phase (training): minimum distance between atoms of different molecules
  <= 1.2 Angstrom.
* Condensed phase (evaluation): max over partial RDFs of ``rdf_mae`` against a reference >= 3.0.
  An RDF needs several frames (10 per epoch in the reference), so apply this criterion to a
  window of frames, e.g. ``traj.positions[i]`` after a chunk, rather than frame by frame.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

from stablejax._types import Array, Criterion, CriterionResult
from stablejax.observables.bonds import bond_lengths, check_bonds
from stablejax.observables.distances import minimum_image
from stablejax.observables.rdf import (
    RDF_DR_ANGSTROM,
    RDF_R_MAX_ANGSTROM,
    WATER_PAIRS,
    partial_rdfs,
    rdf_mae,
)

BOND_TOLERANCE_TRAIN_ANGSTROM: float = 0.25
BOND_TOLERANCE_EVAL_ANGSTROM: float = 0.5
MIN_INTERMOLECULAR_DISTANCE_ANGSTROM: float = 1.2
RDF_MAE_THRESHOLD: float = 3.0


def _check_threshold(threshold: float, name: str) -> float:
    t = float(threshold)
    if not np.isfinite(t) or t <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {threshold}")
    return t


def bond_length_criterion(
    bonds, reference_lengths, *, threshold_angstrom: float, cell: Array | None = None
) -> Criterion:
    """Unstable when max over bonds |d - d_ref| > ``threshold_angstrom``.

    Args:
      bonds: [n_bonds, 2] atom indices (concrete).
      reference_lengths: [n_bonds] Angstrom, e.g. ``observables.reference_bond_lengths`` of the
        training frames (docs/method.md §6).
      threshold_angstrom: tolerance (``BOND_TOLERANCE_TRAIN_ANGSTROM`` = 0.25 or
        ``BOND_TOLERANCE_EVAL_ANGSTROM`` = 0.5).
      cell: periodic cell for the minimum image, or None.

    Raises:
      ValueError: bad bond list, mismatched reference lengths or threshold.
    """
    b = check_bonds(bonds)
    ref = np.asarray(reference_lengths, dtype=np.float64)
    if ref.shape != (b.shape[0],):
        raise ValueError(f"reference_lengths must have shape [{b.shape[0]}], got {ref.shape}")
    thr = _check_threshold(threshold_angstrom, "threshold_angstrom")

    def criterion(R: Array) -> CriterionResult:
        if R.shape[-2] <= b.max():
            raise ValueError(f"bond index {b.max()} out of range for {R.shape[-2]} atoms")
        dev = jnp.abs(bond_lengths(R, b, cell=cell) - jnp.asarray(ref, R.dtype))
        value = jnp.max(dev)
        return CriterionResult(unstable=~(value <= thr), value=value)

    return criterion


def min_intermolecular_distance_criterion(
    molecule_index,
    *,
    threshold_angstrom: float = MIN_INTERMOLECULAR_DISTANCE_ANGSTROM,
    cell: Array | None = None,
) -> Criterion:
    """Unstable when the smallest distance between atoms of different molecules is
    <= ``threshold_angstrom`` (1.2 Angstrom by default; water training, docs/method.md §6
    and §10.3).

    Args:
      molecule_index: [n_atoms] int molecule of each atom (concrete; e.g. ``arange(n) // 3``
        for water ordered O, H, H).
      threshold_angstrom: distance threshold.
      cell: periodic cell (minimum image), or None.

    Raises:
      ValueError: a 1-D molecule index with at least two molecules is required.
    """
    mol = np.asarray(molecule_index)
    if mol.ndim != 1 or np.unique(mol).size < 2:
        raise ValueError(
            f"molecule_index must be [n_atoms] with >= 2 molecules, got shape {mol.shape}"
        )
    thr = _check_threshold(threshold_angstrom, "threshold_angstrom")
    i, j = np.triu_indices(mol.shape[0], k=1)
    keep = mol[i] != mol[j]
    i, j = i[keep].astype(np.int32), j[keep].astype(np.int32)

    def criterion(R: Array) -> CriterionResult:
        if R.shape[-2] != mol.shape[0]:
            raise ValueError(f"molecule_index has {mol.shape[0]} atoms, positions {R.shape[-2]}")
        dR = minimum_image(R[..., i, :] - R[..., j, :], cell)
        value = jnp.sqrt(jnp.min(jnp.sum(dR**2, axis=-1)))
        return CriterionResult(unstable=~(value > thr), value=value)

    return criterion


def rdf_criterion(
    species,
    cell: Array,
    reference_rdfs: Array,
    *,
    pairs: Sequence[tuple[int, int]] = WATER_PAIRS,
    r_max: float = RDF_R_MAX_ANGSTROM,
    dr: float = RDF_DR_ANGSTROM,
    threshold: float = RDF_MAE_THRESHOLD,
) -> Criterion:
    """Unstable when max over pair types of ``rdf_mae(g, g_ref)`` >= ``threshold`` (3.0).

    Args:
      species: [n_atoms] int (concrete), e.g. atomic numbers.
      cell: [3, 3], [3] or scalar periodic cell, Angstrom.
      reference_rdfs: [n_pair_types, n_bins] g_ref(r) from ``observables.partial_rdfs`` of
        reference frames with the same ``pairs``, ``r_max`` and ``dr``.
      pairs, r_max, dr: RDF settings.
      threshold: RDF error threshold.

    The returned criterion takes frames [n_frames, n_atoms, 3] (a window; one frame works too).
    """
    g_ref = jnp.asarray(reference_rdfs)
    n_bins = int(round(r_max / dr))
    if g_ref.shape != (len(pairs), n_bins):
        raise ValueError(
            f"reference_rdfs must have shape [{len(pairs)}, {n_bins}] for {len(pairs)} pair types, "
            f"got {g_ref.shape}"
        )
    thr = _check_threshold(threshold, "threshold")

    def criterion(R: Array) -> CriterionResult:
        g = partial_rdfs(R, species, cell, pairs=pairs, r_max=r_max, dr=dr)
        value = jnp.max(rdf_mae(g, g_ref.astype(g.dtype), r_max))
        return CriterionResult(unstable=~(value < thr), value=value)

    return criterion


def stability_time_fs(
    first_unstable_step: Array, dt_fs: float, n_steps: int
) -> tuple[Array, Array]:
    """Time to first failure per replica (docs/method.md §6), right-censored at the run length.

    Args:
      first_unstable_step: [n_replicas] int, -1 where never unstable (``ReplicaState``).
      dt_fs: time step, fs.
      n_steps: steps simulated (the censoring time is n_steps * dt_fs).

    Returns:
      (times [n_replicas] fs, censored [n_replicas] bool: True where the replica never failed).
    """
    s = jnp.asarray(first_unstable_step)
    censored = s < 0
    return jnp.where(censored, n_steps, s) * dt_fs, censored
