"""Gradient estimators through or around MD: the Boltzmann estimator and frame reweighting.

* :func:`boltzmann_loss`: loss of an ensemble-averaged observable whose ``jax.grad`` is the
  Boltzmann estimator -beta Cov(O, dU/dtheta) (custom VJP; one chunked backward pass through a
  weighted energy sum, memory independent of the number of frames). ``scaling="reference"``
  reproduces the reference implementation's blocked, beta-free estimator.
* :func:`importance_weights`, :func:`effective_sample_size`, :func:`needs_resimulation`:
  reuse of frames sampled under older parameters.
* :func:`per_frame_gradient_baseline`: the dense per-frame-gradient version, for tests and
  benchmarks only.
* :func:`localized_boltzmann_loss` (:mod:`stablejax.estimator.localized`): the localized
  estimator of liquids, one molecule per environment, with :func:`stratified_environments`.
"""

from stablejax.estimator._common import mse_loss
from stablejax.estimator.baseline import per_frame_gradient_baseline
from stablejax.estimator.boltzmann import EstimatorAux, boltzmann_loss
from stablejax.estimator.localized import (
    Environments,
    LocalizedAux,
    localized_boltzmann_loss,
    stratified_environments,
)
from stablejax.estimator.reweighting import (
    DEFAULT_MIN_ESS_FRACTION,
    ImportanceWeights,
    effective_sample_size,
    frame_energies,
    importance_weights,
    log_importance_weights,
    needs_resimulation,
)

__all__ = [
    "DEFAULT_MIN_ESS_FRACTION",
    "Environments",
    "EstimatorAux",
    "LocalizedAux",
    "ImportanceWeights",
    "boltzmann_loss",
    "effective_sample_size",
    "frame_energies",
    "importance_weights",
    "localized_boltzmann_loss",
    "log_importance_weights",
    "mse_loss",
    "needs_resimulation",
    "per_frame_gradient_baseline",
    "stratified_environments",
]
