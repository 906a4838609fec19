"""Configuration of StABlE training (the configuration tree at the top of docs/method.md): one
frozen tree of dataclasses, validated at construction, JSON round trip via
:func:`stablejax.config.to_dict` / ``from_dict``, overrides by nested dict via
:func:`stablejax.config.replace`.

``TrainConfig`` = the replicas and epochs, ``md`` (:class:`~stablejax.config.MDConfig`, shared with
evaluation and the ``simulate`` command), ``hr`` (the observable), ``estimator``, ``optimizer``
and ``phases``. Defaults are the paper's aspirin/SchNet run.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Literal

from stablejax.config import HRConfig, MDConfig, check_types, need, replace
from stablejax.train.losses import QMLossConfig


class Phase(enum.IntEnum):
    """Phase of the StABlE phase machine."""

    SIMULATION = 0  # learning rate 0: simulate, reset unstable replicas, count instabilities
    LEARNING = 1  # re-simulate from the saved start states and take estimator steps


TRAIN_MD = MDConfig(integrator="nose_hoover", temperature_k=500.0, dt_fs=0.5,
                    frame_interval_fs=50.0, tolerance_angstrom=0.25)


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    """The Boltzmann estimator of a learning step.

    Attributes:
      scaling: 'reference' (the paper's: no beta, shuffled blocks, v from the block mean; its
        learning rates apply) or 'physical' (beta kept, one average over all frames).
      block_size: B of the 'reference' scaling (40 for molecules).
      chunk_size: frames per energy evaluation (memory), None for all at once.
      forward_energies: evaluate every learning frame's energy in the forward pass (exact
        validity check); False skips it (~20% faster; the simulator already excludes frames of
        replicas whose forces went non-finite).
      stable_frames_only: learn only from frames recorded before a replica went unstable
        (default False: all finite frames, as the reference).
      max_steps_per_epoch: optimizer steps a learning epoch may take on its frames (1: the
        reference); steps after the first reuse the frames with importance weights
        exp(-beta (U_theta - U_theta0)) while their ESS stays >= ``reuse_min_ess_fraction``.
      reuse_min_ess_fraction: ESS fraction below which frames are not reused (0.9).
      environment: ``'frame'`` (the global estimator: one sample per frame, the h(r)
        observable) or ``'molecule'`` (the localized estimator of liquids: one sample per
        (frame, molecule), local energy = the molecule's per-atom energies, local observable =
        its bond lengths, target = their mean over the training frames and molecules; needs
        the system's molecule index; the paper's water runs use ``block_size`` 4).
      stratify_bins, stratify_per_bin: ``'molecule'`` only: the candidate environments are
        binned by their largest bond deviation (``stratify_bins`` equal-width bins) and up to
        ``stratify_per_bin`` drawn per bin (None: 5 x ``n_replicas``, the paper's), each
        weighted by its inverse inclusion probability in the ``'physical'`` scaling.
    """

    scaling: Literal["reference", "physical"] = "reference"
    block_size: int = 40
    chunk_size: int | None = 64
    forward_energies: bool = True
    stable_frames_only: bool = False
    max_steps_per_epoch: int = 1
    reuse_min_ess_fraction: float = 0.9
    environment: Literal["frame", "molecule"] = "frame"
    stratify_bins: int = 100
    stratify_per_bin: int | None = None

    def __post_init__(self):
        check_types(self)
        need(self, "environment", self.environment in ("frame", "molecule"),
             "'frame' or 'molecule'")
        need(self, "stratify_bins", self.stratify_bins >= 1, ">= 1")
        need(self, "stratify_per_bin", self.stratify_per_bin is None or self.stratify_per_bin >= 1,
             "None or >= 1")
        need(self, "max_steps_per_epoch", self.environment == "frame"
             or self.max_steps_per_epoch == 1, "1 with environment='molecule' (frame reuse "
             "reweights whole frames, not environments)")
        need(self, "scaling", self.scaling in ("reference", "physical"),
             "'reference' or 'physical'")
        need(self, "block_size", self.block_size >= 1, ">= 1")
        need(self, "chunk_size", self.chunk_size is None or self.chunk_size >= 1, "None or >= 1")
        need(self, "max_steps_per_epoch", self.max_steps_per_epoch >= 1, ">= 1")
        need(self, "reuse_min_ess_fraction", 0 < self.reuse_min_ess_fraction <= 1, "in (0, 1]")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The learning step: g = g_obs + qm_weight * g_QM, clipped, one SGD step, reduce-on-plateau.

    Attributes:
      learning_rate: SGD rate at the start of a learning phase (lr_0).
      method: ``'sgd'`` (the paper's plain SGD step) or ``'adam'`` (optax's Adam: steps of
        about ``learning_rate`` per parameter whatever the gradient's magnitude; for models
        whose estimator gradients are far smaller than the paper model's, where an SGD rate
        tuned for the paper would not move the parameters within a short run).
      grad_clip_norm: global gradient-norm clip.
      plateau_factor, plateau_patience: reduce-on-plateau of the rate on the unstable fraction
        within a learning phase (PyTorch's rule, as the reference).
      qm_weight: weight w_EF of the energy/force gradient on the QM training set.
      qm_loss: energy/force loss weights and units, the reference's per model (SchNet
        0.05/0.95 on raw eV and eV/Angstrom; NequIP per-atom 1/1000 over the force RMS).
      qm_batch_size: frames per QM batch.
      qm_max_batches: QM batches per step (None: the whole training set, as the reference).
    """

    learning_rate: float = 1e-3
    grad_clip_norm: float = 1.0
    plateau_factor: float = 0.2
    plateau_patience: int = 10
    qm_weight: float = 10.0
    qm_loss: QMLossConfig = QMLossConfig()
    qm_batch_size: int = 40
    qm_max_batches: int | None = None
    method: Literal["sgd", "adam"] = "sgd"

    def __post_init__(self):
        check_types(self)
        need(self, "learning_rate", self.learning_rate > 0, "> 0")
        need(self, "method", self.method in ("sgd", "adam"), "'sgd' or 'adam'")
        need(self, "grad_clip_norm", self.grad_clip_norm > 0, "> 0")
        need(self, "plateau_factor", 0 < self.plateau_factor < 1, "in (0, 1)")
        need(self, "plateau_patience", self.plateau_patience >= 0, ">= 0")
        need(self, "qm_weight", self.qm_weight >= 0, ">= 0")
        need(self, "qm_batch_size", self.qm_batch_size >= 1, ">= 1")
        need(self, "qm_max_batches", self.qm_max_batches is None or self.qm_max_batches >= 1,
             "None or >= 1")


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    """The phase machine (docs/method.md §4).

    Attributes:
      max_frac_unstable: enter learning when this fraction of replicas has gone unstable at
        least once in the current simulation phase.
      min_frac_unstable: leave learning when an epoch's fraction is at most this.
      max_lr_reductions: leave learning after this many plateau reductions.
      reset_probability: in the first epoch of a simulation phase, this fraction of stable
        replicas jumps back to a random older start-of-epoch checkpoint.
      fresh_velocities_on_reset: False (the reference's reset, the default): a failed replica
        returns to its pre-failure state with its own velocities and thermostat state, so with
        the frozen model and deterministic Nose-Hoover it replays its failure and learning
        epochs begin from failing trajectories; True gives reset replicas new
        Maxwell-Boltzmann velocities.
      n_checkpoints_kept: older start-of-epoch states kept for those jumps (a ring buffer).
    """

    max_frac_unstable: float = 0.75
    min_frac_unstable: float = 0.0
    max_lr_reductions: int = 3
    reset_probability: float = 0.05
    fresh_velocities_on_reset: bool = False
    n_checkpoints_kept: int = 16

    def __post_init__(self):
        check_types(self)
        need(self, "max_frac_unstable", 0 < self.max_frac_unstable <= 1, "in (0, 1]")
        need(self, "min_frac_unstable", 0 <= self.min_frac_unstable < self.max_frac_unstable,
             "in [0, max_frac_unstable)")
        need(self, "max_lr_reductions", self.max_lr_reductions >= 1, ">= 1")
        need(self, "reset_probability", 0 <= self.reset_probability <= 1, "in [0, 1]")
        need(self, "n_checkpoints_kept", self.n_checkpoints_kept >= 1, ">= 1")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """StABlE training settings; defaults are the paper's aspirin/SchNet run.

    Attributes:
      md: the training simulation (Nose-Hoover 500 K, 0.5 fs, frames every 50 fs, bond
        tolerance 0.25 A).
      n_replicas: replicas simulated in parallel.
      epoch_ps: simulated time per epoch, ps (a multiple of the frame interval).
      hr: the h(r) observable and its target.
      estimator, optimizer, phases: see their classes.
      n_epochs: epoch limit.
      stable_epochs: stop once, after at least one learning phase, this many consecutive
        simulation epochs keep the phase's unstable fraction below ``max_frac_unstable`` (None:
        run all epochs). Make it longer than the first simulation phase (the epochs the
        pre-trained model takes to reach the threshold), or a model no more stable than the
        pre-trained one is stopped early.
      seed: PRNG seed.
    """

    md: MDConfig = TRAIN_MD
    n_replicas: int = 128
    epoch_ps: float = 1.0
    hr: HRConfig = HRConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    phases: PhaseConfig = PhaseConfig()
    n_epochs: int = 500
    stable_epochs: int | None = 20
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        need(self, "n_replicas", self.n_replicas >= 1, ">= 1")
        frames = self.epoch_ps * 1000.0 / self.md.frame_interval_fs
        need(self, "epoch_ps", self.epoch_ps > 0 and frames >= 1 - 1e-9
             and abs(frames - round(frames)) < 1e-9,
             f"a positive multiple of md.frame_interval_fs={self.md.frame_interval_fs} fs")
        need(self, "n_epochs", self.n_epochs >= 1, ">= 1")
        need(self, "stable_epochs", self.stable_epochs is None or self.stable_epochs >= 1,
             "None or >= 1")

    @property
    def steps_per_epoch(self) -> int:
        return self.md.steps(self.epoch_ps)

    @property
    def frames_per_epoch(self) -> int:
        return self.steps_per_epoch // self.md.n_dump

    @classmethod
    def aspirin(cls, **overrides) -> "TrainConfig":
        """Aspirin / SchNet: 500 K, 0.5 fs, 128 replicas x 1 ps, frames every 50 fs, B 40,
        SGD 1e-3, w_EF 10, tolerance 0.25 A, 500 epochs. ``overrides``: fields, nested ones as
        dicts (``optimizer={"learning_rate": 3e-3}``), see :func:`stablejax.config.replace`."""
        return replace(cls(), overrides)

    @classmethod
    def ac_ala3_nhme(cls, **overrides) -> "TrainConfig":
        """Ac-Ala3-NHMe / NequIP: as aspirin with h(r) to 15 A, NequIP's QM loss weights and
        600 epochs."""
        base = cls(hr=HRConfig(r_max_angstrom=15.0), n_epochs=600,
                   optimizer=OptimizerConfig(qm_loss=QMLossConfig(
                       1.0, 1000.0, per_atom_energy=True, normalization="force_rms")))
        return replace(base, overrides)

    @classmethod
    def water(cls, **overrides) -> "TrainConfig":
        """Liquid water / GemNet-T (the paper's): Nose-Hoover at 300 K, 1 fs, 8 replicas x 1 ps
        with a frame every 100 steps, the localized estimator (one molecule per environment,
        blocks of 4, stratified over 100 bins of the largest O-H deviation, 5 x n_replicas per
        bin), SGD 3e-3, no energy/force term (w_EF 0), 500 epochs. A replica is unstable in
        training once atoms of different molecules come within 1.2 A (the simulator's guard
        for a periodic liquid)."""
        md = dataclasses.replace(TRAIN_MD, temperature_k=300.0, dt_fs=1.0,
                                 frame_interval_fs=100.0)
        base = cls(md=md, n_replicas=8, epoch_ps=1.0,
                   estimator=EstimatorConfig(environment="molecule", block_size=4),
                   optimizer=OptimizerConfig(
                       learning_rate=3e-3, qm_weight=0.0,
                       qm_loss=QMLossConfig(0.001, 0.999, force_loss="l2mae",
                                            normalization="std")))
        return replace(base, overrides)

    @classmethod
    def molecule(cls, temperature_k: float, dt_fs: float, **overrides) -> "TrainConfig":
        """A molecule without a preset of its own: the paper's settings for MD17 molecules
        (Nose-Hoover, 128 replicas, an epoch of 2,000 steps with a frame every 100 steps, bond
        tolerance 0.25 A, h(r) to 10 A, SGD 1e-3, w_EF 10, 500 epochs) at the temperature
        ``temperature_k`` (K) and time step ``dt_fs`` (fs) of the molecule's reference data."""
        md = dataclasses.replace(TRAIN_MD, temperature_k=float(temperature_k),
                                 dt_fs=float(dt_fs), frame_interval_fs=100 * float(dt_fs))
        base = cls(md=md, epoch_ps=2000 * float(dt_fs) / 1000)
        return replace(base, overrides)


#: Presets by system name; any other molecule gets :meth:`TrainConfig.molecule`.
PRESETS = {"aspirin": TrainConfig.aspirin, "ac-ala3-nhme": TrainConfig.ac_ala3_nhme,
           "water": TrainConfig.water}


def preset_for(system: str, temperature_k: float, dt_fs: float, preset: str | None = None,
               **overrides) -> tuple[TrainConfig, str]:
    """(config, preset name) of the StABlE preset for a system: its own preset (``aspirin``,
    ``ac-ala3-nhme``), else ``molecule`` (:meth:`TrainConfig.molecule` at the system's
    ``temperature_k`` and ``dt_fs``). ``preset`` names one explicitly.

    Raises:
      ValueError: an unknown ``preset``.
    """
    if preset is None and system.startswith("water"):  # water32 etc.: other box sizes
        preset = "water"
    name = preset or (system if system in PRESETS else "molecule")
    if name == "molecule":
        return TrainConfig.molecule(temperature_k, dt_fs, **overrides), name
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of "
                         f"{sorted(PRESETS) + ['molecule']}")
    return PRESETS[name](**overrides), name
