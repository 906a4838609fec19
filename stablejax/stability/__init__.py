"""Stability criteria for MD replicas (docs/method.md §6).

Factories build pure, ``vmap``-able criteria ``criterion(R) -> CriterionResult(unstable, value)``
that the simulator evaluates at every dump::

    from stablejax.observables import reference_bond_lengths
    from stablejax.stability import bond_length_criterion, BOND_TOLERANCE_TRAIN_ANGSTROM
    crit = bond_length_criterion(bonds, reference_bond_lengths(train_positions, bonds),
                                 threshold_angstrom=BOND_TOLERANCE_TRAIN_ANGSTROM)
    unstable, value = crit(R)        # R [n_atoms, 3]; value = max |d - d_ref| in Angstrom
"""

from stablejax.stability.criteria import (
    BOND_TOLERANCE_EVAL_ANGSTROM,
    BOND_TOLERANCE_TRAIN_ANGSTROM,
    MIN_INTERMOLECULAR_DISTANCE_ANGSTROM,
    RDF_MAE_THRESHOLD,
    Criterion,
    CriterionResult,
    bond_length_criterion,
    min_intermolecular_distance_criterion,
    rdf_criterion,
    stability_time_fs,
)

__all__ = [
    "BOND_TOLERANCE_EVAL_ANGSTROM",
    "BOND_TOLERANCE_TRAIN_ANGSTROM",
    "MIN_INTERMOLECULAR_DISTANCE_ANGSTROM",
    "RDF_MAE_THRESHOLD",
    "Criterion",
    "CriterionResult",
    "bond_length_criterion",
    "min_intermolecular_distance_criterion",
    "rdf_criterion",
    "stability_time_fs",
]
