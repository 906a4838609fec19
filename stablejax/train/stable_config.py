"""Configuration of StABlE training (method.md §3, §4, §6), one frozen dataclass."""

from __future__ import annotations

import dataclasses
import enum

from stablejax.train.losses import QMLossConfig


class Phase(enum.IntEnum):
    """Phase of the StABlE phase machine."""

    SIMULATION = 0  # learning rate 0: simulate, reset unstable replicas, count instabilities
    LEARNING = 1  # re-simulate from the saved start states and take estimator steps


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """StABlE training settings; defaults are the paper's aspirin/SchNet run (method.md §4).

    Simulation:
      temperature_k, dt_fs: thermostat temperature (K) and timestep (fs).
      n_replicas: replicas simulated in parallel.
      steps_per_epoch: MD steps per epoch (2000 x 0.5 fs = 1 ps).
      n_dump: steps between recorded frames (frames after n_dump, 2 n_dump, ...).
      integrator: 'nose_hoover' (training default), 'langevin' or 'nve'.
      nh_tau_steps: Nose-Hoover period in steps (the reference's ttime 20).
      bond_tolerance_angstrom: a replica is unstable when a bond deviates from its reference
        mean by more than this (0.25 A in training).
    Observable (h(r), method.md §6.9):
      hr_r_max_angstrom, hr_dr_angstrom, hr_sigma_angstrom.
    Learning:
      learning_rate: SGD rate of a learning phase (lr_0).
      qm_weight: weight w_EF of the energy/force gradient on the QM training set.
      qm_loss: energy/force loss weights (SchNet 0.05/0.95; NequIP per-atom 1/1000).
      qm_batch_size: frames per QM batch; qm_max_batches: QM batches per learning epoch (None:
        the whole training set, as the reference; a number: that many random batches).
      grad_clip_norm: global gradient-norm clip.
      scaling: Boltzmann-estimator scaling, 'reference' (default; the paper's learning rates
        apply) or 'physical' (beta kept, one average over all frames).
      block_size: B of the 'reference' scaling; chunk_size: frames per energy evaluation.
      stable_frames_only: learn only from frames recorded before a replica went unstable
        (default False: all finite frames, as the reference).
      max_learning_steps_per_epoch: SGD steps a learning epoch may take on its frames (default
        1, the reference). Steps after the first reuse the epoch's frames with importance
        weights exp(-beta (U_theta - U_theta0)) (method.md 6.12) while their effective sample
        size is at least ``reuse_min_ess_fraction`` of the usable frames; MD dominates an
        epoch's cost, so reused steps are nearly free.
      reuse_min_ess_fraction: ESS fraction below which the frames are not reused (0.9,
        chemtrain's DiffTRe default).
      estimator_forward_energies: evaluate every learning frame's energy in the estimator's
        forward pass (exact validity check, default); False skips it, ~20% faster gradients
        (``boltzmann_loss(forward_energies=False)``; the simulator already excludes frames of
        replicas whose forces went non-finite).
    Phase machine:
      max_frac_unstable: enter learning when this fraction of replicas has gone unstable at
        least once in the current simulation phase.
      min_frac_unstable: leave learning when the fraction is at most this.
      plateau_factor, plateau_patience: reduce-on-plateau of the learning rate on the
        unstable fraction, within a learning phase.
      max_lr_reductions: leave learning after this many reductions.
      reset_probability: in the first epoch of a simulation phase, this fraction of stable
        replicas jumps back to a random older start-of-epoch checkpoint.
      fresh_velocities_on_reset: reset replicas get new Maxwell-Boltzmann velocities
        (stablejax's default); False replays the reference's deterministic reset.
      n_checkpoints_kept: older start-of-epoch states kept for those jumps (a ring buffer).
      n_epochs: epoch limit.
      stable_epochs: stop once, after at least one learning phase, this many consecutive
        simulation epochs keep the phase's unstable fraction below ``max_frac_unstable``
        (None: run all epochs). Make it longer than the first simulation phase (the epochs
        the pre-trained model takes to reach the threshold): a shorter one stops a model that
        is no more stable than the pre-trained one (seen on aspirin: 5 stopped at epoch 49
        while the pre-trained model had needed 13).
      seed: PRNG seed.
    """

    temperature_k: float = 500.0
    dt_fs: float = 0.5
    n_replicas: int = 128
    steps_per_epoch: int = 2000
    n_dump: int = 100
    integrator: str = "nose_hoover"
    nh_tau_steps: float = 20.0
    bond_tolerance_angstrom: float = 0.25
    hr_r_max_angstrom: float = 10.0
    hr_dr_angstrom: float = 0.02
    hr_sigma_angstrom: float = 0.01
    learning_rate: float = 1e-3
    qm_weight: float = 10.0
    qm_loss: QMLossConfig = QMLossConfig()
    qm_batch_size: int = 40
    qm_max_batches: int | None = None
    grad_clip_norm: float = 1.0
    scaling: str = "reference"
    block_size: int = 40
    chunk_size: int | None = 64
    stable_frames_only: bool = False
    max_learning_steps_per_epoch: int = 1
    reuse_min_ess_fraction: float = 0.9
    estimator_forward_energies: bool = True
    max_frac_unstable: float = 0.75
    min_frac_unstable: float = 0.0
    plateau_factor: float = 0.2
    plateau_patience: int = 10
    max_lr_reductions: int = 3
    reset_probability: float = 0.05
    fresh_velocities_on_reset: bool = True
    n_checkpoints_kept: int = 16
    n_epochs: int = 500
    stable_epochs: int | None = 20
    seed: int = 0

    def __post_init__(self):
        def need(field: str, ok: bool, what: str):
            if not ok:
                raise ValueError(f"TrainConfig.{field} must be {what}, got {getattr(self, field)!r}")

        need("temperature_k", self.temperature_k > 0, "> 0")
        need("dt_fs", self.dt_fs > 0, "> 0")
        need("n_replicas", self.n_replicas >= 1, ">= 1")
        need("n_dump", self.n_dump >= 1, ">= 1")
        need("steps_per_epoch", self.steps_per_epoch >= self.n_dump
             and self.steps_per_epoch % self.n_dump == 0, "a positive multiple of n_dump")
        need("integrator", self.integrator in ("nose_hoover", "langevin", "nve"),
             "'nose_hoover', 'langevin' or 'nve'")
        need("bond_tolerance_angstrom", self.bond_tolerance_angstrom > 0, "> 0")
        need("learning_rate", self.learning_rate > 0, "> 0")
        need("qm_weight", self.qm_weight >= 0, ">= 0")
        need("qm_batch_size", self.qm_batch_size >= 1, ">= 1")
        need("qm_max_batches", self.qm_max_batches is None or self.qm_max_batches >= 1,
             "None or >= 1")
        need("grad_clip_norm", self.grad_clip_norm > 0, "> 0")
        need("scaling", self.scaling in ("reference", "physical"), "'reference' or 'physical'")
        need("max_learning_steps_per_epoch", self.max_learning_steps_per_epoch >= 1, ">= 1")
        need("reuse_min_ess_fraction", 0 < self.reuse_min_ess_fraction <= 1, "in (0, 1]")
        need("max_frac_unstable", 0 < self.max_frac_unstable <= 1, "in (0, 1]")
        need("min_frac_unstable", 0 <= self.min_frac_unstable < self.max_frac_unstable,
             "in [0, max_frac_unstable)")
        need("plateau_factor", 0 < self.plateau_factor < 1, "in (0, 1)")
        need("plateau_patience", self.plateau_patience >= 0, ">= 0")
        need("block_size", self.block_size >= 1, ">= 1")
        need("chunk_size", self.chunk_size is None or self.chunk_size >= 1, "None or >= 1")
        need("nh_tau_steps", self.nh_tau_steps > 0, "> 0")
        for f in ("hr_r_max_angstrom", "hr_dr_angstrom", "hr_sigma_angstrom"):
            need(f, getattr(self, f) > 0, "> 0")
        need("max_lr_reductions", self.max_lr_reductions >= 1, ">= 1")
        need("reset_probability", 0 <= self.reset_probability <= 1, "in [0, 1]")
        need("n_checkpoints_kept", self.n_checkpoints_kept >= 1, ">= 1")
        need("n_epochs", self.n_epochs >= 1, ">= 1")
        need("stable_epochs", self.stable_epochs is None or self.stable_epochs >= 1,
             "None or >= 1")

    @property
    def frames_per_epoch(self) -> int:
        return self.steps_per_epoch // self.n_dump

    @classmethod
    def aspirin(cls, **overrides) -> "TrainConfig":
        """Aspirin / SchNet (method.md §4): 500 K, 0.5 fs, 128 replicas x 1 ps, n_dump 100,
        B 40, SGD 1e-3, w_EF 10, tolerance 0.25 A, 500 epochs."""
        return cls(**overrides)

    @classmethod
    def ac_ala3_nhme(cls, **overrides) -> "TrainConfig":
        """Ac-Ala3-NHMe / NequIP (method.md §4): as aspirin with h(r) to 15 A, NequIP's QM loss
        weights and 600 epochs."""
        base = dict(hr_r_max_angstrom=15.0, n_epochs=600,
                    qm_loss=QMLossConfig(1.0, 1000.0, per_atom_energy=True))
        return cls(**{**base, **overrides})
