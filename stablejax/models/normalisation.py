"""Energy normalisation and neighbour statistics computed from OUR training data.

Per-atom energies are ``E_i = scale * y_i + shift[Z_i]`` (see ``stablejax.models.core``); the
constants come from the training frames, never from the paper: our reference data are GFN2-xTB,
not the paper's DFT (docs/reference-data.md, docs/method.md §10.2).

Choice of the shift. A :class:`~stablejax.data.frames.Frames` set holds ONE system, so every frame
has the same composition and a per-species least-squares fit ``E ~ sum_s n_s shift_s`` is
underdetermined (only ``sum_s n_s shift_s`` is identified). We therefore use the mean energy per
atom ``mu = mean(E) / n_atoms`` for every species, which is NequIP's default
(``dataset_per_atom_total_energy_mean``). When several frame sets with different compositions are
given, we solve the least-squares problem for the deviations from ``mu`` with the minimum-norm
solution, ``shift = mu + pinv(C) (E - C mu)``: it reduces to ``mu`` for a single composition and
to ordinary least squares when the compositions determine every species.

Choice of the scale. The root mean square of all force components (NequIP's
``dataset_forces_rms``, one value for all species), so the network outputs, and hence forces,
are O(1) in normalised units.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from stablejax.data.frames import Frames

logger = logging.getLogger(__name__)


class EnergyStatistics(NamedTuple):
    """Normalisation constants for :func:`stablejax.models.make_model`.

    Attributes:
      shift: ``{Z: eV}`` per-atom energy shift per species.
      scale: eV, per-atom energy scale (force RMS in eV/Angstrom times 1 Angstrom).
    """

    shift: dict[int, float]
    scale: float


def _as_list(frames: Frames | Sequence[Frames]) -> list[Frames]:
    sets = [frames] if isinstance(frames, Frames) else list(frames)
    if not sets:
        raise ValueError("energy statistics need at least one frame set")
    for k, f in enumerate(sets):
        if not isinstance(f, Frames):
            raise ValueError(f"frame set {k} is a {type(f).__name__}, expected Frames")
    return sets


def energy_statistics(frames: Frames | Sequence[Frames]) -> EnergyStatistics:
    """Per-species energy shift (eV/atom) and scale (eV) from labelled training frames.

    Args:
      frames: one :class:`Frames` set (one molecule) or several (possibly different systems),
        with energies [n_frames] eV and forces [n_frames, n_atoms, 3] eV/Angstrom.

    Returns:
      :class:`EnergyStatistics`: shift = mean energy per atom for every species (single
      composition) or the minimum-norm least-squares fit around it (several compositions);
      scale = RMS of all force components. See the module docstring.

    Raises:
      ValueError: for unlabelled frames or zero forces.
    """
    sets = _as_list(frames)
    for k, f in enumerate(sets):
        if f.energies is None or f.forces is None:
            raise ValueError(f"frame set {k} has no energy/force labels")
    species = sorted({int(z) for f in sets for z in f.atomic_numbers})
    counts = np.concatenate([
        np.broadcast_to(np.array([np.sum(f.atomic_numbers == s) for s in species], float),
                        (f.n_frames, len(species))) for f in sets])  # [n_frames_total, n_species]
    energies = np.concatenate([f.energies for f in sets])  # [n_frames_total] eV
    mu = float(energies.sum() / counts.sum())
    residual = energies - counts.sum(axis=1) * mu
    # Least squares on the distinct compositions (mean residual of each), with a rank cutoff:
    # many identical rows (one molecule) make a rank-1 matrix whose round-off singular values
    # must not be inverted (np.linalg.pinv's default cutoff does invert them: shifts ~1e11 eV).
    comps, inverse = np.unique(counts, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    mean_residual = np.bincount(inverse, weights=residual) / np.bincount(inverse)
    correction = np.linalg.lstsq(comps, mean_residual, rcond=1e-8)[0]  # ~0 for one composition
    shift = {s: mu + float(c) for s, c in zip(species, correction)}
    sq = sum(float(np.sum(f.forces**2)) for f in sets)
    n = sum(f.forces.size for f in sets)
    scale = float(np.sqrt(sq / n))
    if not scale > 0:
        raise ValueError("all training forces are zero; cannot set the energy scale")
    logger.info("energy statistics: shift %s eV/atom, scale %.4g eV", shift, scale)
    return EnergyStatistics(shift=shift, scale=scale)


def _neighbour_counts_free(R: np.ndarray, cutoff: float) -> np.ndarray:
    d2 = np.sum((R[:, :, None, :] - R[:, None, :, :]) ** 2, axis=-1)  # [F, N, N]
    return np.sum(d2 < cutoff**2, axis=-1) - 1  # [F, N], minus self


def average_num_neighbors(frames: Frames, cutoff_angstrom: float, *,
                          max_frames: int | None = 2000) -> float:
    """Mean number of neighbours within the cutoff per atom (NequIP's ``avg_num_neighbors``).

    Args:
      frames: the training frames (free molecule or periodic; periodic counts include every
        image within the cutoff, via ASE).
      cutoff_angstrom: the model cutoff, Angstrom.
      max_frames: use at most this many frames, evenly spaced (None = all).

    Returns:
      The mean over frames and atoms of ``#{j != i : r_ij < cutoff}``.
    """
    if not isinstance(frames, Frames):
        raise ValueError(f"frames must be a Frames, got {type(frames).__name__}")
    if not cutoff_angstrom > 0:
        raise ValueError(f"cutoff_angstrom must be > 0, got {cutoff_angstrom}")
    sel = np.arange(frames.n_frames)
    if max_frames is not None and frames.n_frames > max_frames:
        sel = np.linspace(0, frames.n_frames - 1, max_frames).round().astype(int)
    if not any(frames.pbc):
        counts = np.concatenate([_neighbour_counts_free(frames.positions[c], cutoff_angstrom)
                                 for c in np.array_split(sel, max(1, len(sel) // 256))])
        return float(counts.mean())
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    total = 0
    for k in sel:
        cell = frames.cell if frames.cell.ndim == 2 else frames.cell[k]
        atoms = Atoms(numbers=frames.atomic_numbers, positions=frames.positions[k], cell=cell,
                      pbc=frames.pbc)
        total += len(neighbor_list("i", atoms, cutoff_angstrom))
    return float(total / (len(sel) * frames.n_atoms))
