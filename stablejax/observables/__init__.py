"""Observables of MD frames: pure, ``vmap``-able functions (units: Angstrom, fs).

* ``distances``: interatomic distance distribution h(r) in the convention of docs/method.md §7
  (dr 0.02 Angstrom over (0, r_max], midpoint centres, Gaussian smearing sigma 0.01 Angstrom for
  simulated and reference frames alike, each frame normalised to sum 100), ``hr_mae``
  (10 * mean |h - h_ref|) and ``mean_abs_error`` (plain mean).
* ``bonds``: bond lengths, deviations from reference lengths (per bond and per molecule),
  smeared bond-length distributions per bond type.
* ``rdf``: partial RDFs g(r) under periodic boundaries (O-O, O-H, H-H by default), ``rdf_mae``.
* ``dynamics``: VACF, MSD, diffusivity (Angstrom^2/fs; x1e4 for 10^-9 m^2/s), unwrapping.

Example (targets from a reference trajectory, then the error of simulated frames)::

    from stablejax.observables import distance_distribution_target, hr_mae
    h_ref = distance_distribution_target(reference_positions)            # [500]
    h_sim = distance_distribution_target(traj.positions, valid=traj.valid)
    err = hr_mae(h_sim, h_ref)
"""

from stablejax.observables.bonds import (
    bond_deviations,
    bond_length_distribution,
    bond_lengths,
    check_bonds,
    max_deviation_per_molecule,
    reference_bond_lengths,
)
from stablejax.observables.distances import (
    HR_DR_ANGSTROM,
    HR_MAE_SCALE,
    HR_R_MAX_ANGSTROM,
    HR_SIGMA_ANGSTROM,
    Bins,
    cell_volume,
    distance_distribution,
    distance_distribution_frames,
    distance_distribution_target,
    gaussian_smeared_histogram,
    hr_mae,
    make_bins,
    map_frames,
    masked_mean,
    mean_abs_error,
    minimum_image,
    normalise_to,
    pair_distances,
    pair_indices,
)
from stablejax.observables.dynamics import (
    ANGSTROM2_PER_FS_IN_1E9_M2_PER_S,
    diffusivity,
    msd,
    unwrap_positions,
    vacf,
)
from stablejax.observables.rdf import (
    RDF_DR_ANGSTROM,
    RDF_R_MAX_ANGSTROM,
    WATER_PAIRS,
    pair_lists,
    partial_rdfs,
    rdf_mae,
)

__all__ = [
    "ANGSTROM2_PER_FS_IN_1E9_M2_PER_S",
    "HR_DR_ANGSTROM",
    "HR_MAE_SCALE",
    "HR_R_MAX_ANGSTROM",
    "HR_SIGMA_ANGSTROM",
    "RDF_DR_ANGSTROM",
    "RDF_R_MAX_ANGSTROM",
    "WATER_PAIRS",
    "Bins",
    "bond_deviations",
    "bond_length_distribution",
    "bond_lengths",
    "cell_volume",
    "check_bonds",
    "diffusivity",
    "distance_distribution",
    "distance_distribution_frames",
    "distance_distribution_target",
    "gaussian_smeared_histogram",
    "hr_mae",
    "make_bins",
    "map_frames",
    "masked_mean",
    "max_deviation_per_molecule",
    "mean_abs_error",
    "minimum_image",
    "msd",
    "normalise_to",
    "pair_distances",
    "pair_indices",
    "pair_lists",
    "partial_rdfs",
    "rdf_mae",
    "reference_bond_lengths",
    "unwrap_positions",
    "vacf",
]
