"""Long evaluation simulations of a potential and the paper's metrics (method.md §4, §6.8, §6.9).

Replicas start from test structures spread evenly over the test split (never consecutive
frames) with fresh Maxwell-Boltzmann velocities, and run with the evaluation thermostat
(aspirin: Langevin, gamma 0.1/ps, 500 K, 0.5 fs) and the evaluation tolerance (0.5 A). Frames
are reduced to running sums chunk by chunk, so memory does not grow with simulated time.

Metrics (each with its unit):
  * stability time of every replica = time to the first failure of the criterion (ps),
    right-censored at the run length; median and mean with bootstrap 95 % intervals over
    replicas; the survival curve (fraction of replicas stable vs time).
  * h(r) MAE (MDsim convention, 10 x mean over bins |h - h_ref|, dimensionless; h normalised to
    sum 100) of the stable frames against the reference trajectory, and the plain mean.
  * bond-length distribution MAE (mean over bins |p - p_ref| of distributions normalised to
    sum 100, same smearing) of the stable frames.
  * test force / energy MAE (meV/A, meV).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Params, ProgressFn
from stablejax.data.dataset import Dataset
from stablejax.models import Model
from stablejax.observables.bonds import bond_lengths
from stablejax.observables.distances import (
    distance_distribution,
    distance_distribution_target,
    gaussian_smeared_histogram,
    hr_mae,
    make_bins,
    mean_abs_error,
    normalise_to,
)
from stablejax.stability.criteria import stability_time_fs
from stablejax.train.pretrain import evaluate_qm
from stablejax.train.problem import make_simulator_for

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings (defaults: the paper's aspirin evaluation, method.md §4).

    Attributes:
      temperature_k, dt_fs: K, fs.
      integrator: 'langevin' (aspirin), 'nose_hoover' (Ac-Ala3-NHMe) or 'nve'.
      gamma_per_ps: Langevin friction, 1/ps.
      n_replicas: replicas.
      time_ps: simulated time per replica, ps.
      tolerance_angstrom: bond-length deviation that counts as unstable (0.5 A).
      frame_interval_fs: time between analysed frames, fs.
      stop_fraction: stop early once this fraction of replicas is unstable.
      hr_r_max_angstrom: h(r) range (10 A aspirin, 15 A Ac-Ala3-NHMe).
      n_bootstrap: bootstrap resamples for the intervals.
      seed: PRNG seed (start structures are deterministic; velocities and noise use it).
    """

    temperature_k: float = 500.0
    dt_fs: float = 0.5
    integrator: str = "langevin"
    gamma_per_ps: float = 0.1
    n_replicas: int = 256
    time_ps: float = 1000.0
    tolerance_angstrom: float = 0.5
    frame_interval_fs: float = 100.0
    stop_fraction: float = 0.99
    hr_r_max_angstrom: float = 10.0
    n_bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self):
        n_dump = self.frame_interval_fs / self.dt_fs
        if not self.dt_fs > 0 or abs(n_dump - round(n_dump)) > 1e-9 or n_dump < 1:
            raise ValueError("EvalConfig.frame_interval_fs must be a positive multiple of dt_fs, "
                             f"got {self.frame_interval_fs} and {self.dt_fs}")
        if self.n_replicas < 1 or not self.time_ps > 0:
            raise ValueError(f"EvalConfig needs n_replicas >= 1 and time_ps > 0, got "
                             f"{self.n_replicas}, {self.time_ps}")

    @property
    def n_dump(self) -> int:
        return round(self.frame_interval_fs / self.dt_fs)


class EvalResult(NamedTuple):
    """Summary (JSON-able dict) and arrays (for plots) of one evaluation."""

    summary: dict
    arrays: dict


def spread_indices(n_available: int, n: int) -> np.ndarray:
    """``n`` indices spread evenly over ``range(n_available)`` (repeats only when n > n_available)."""
    return np.floor(np.arange(n) * n_available / n).astype(int) % n_available


def bootstrap_ci(values: np.ndarray, stat, n: int, seed: int) -> list[float]:
    """95 % percentile bootstrap interval of ``stat(values)`` over resampled replicas."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), (n, len(values)))
    stats = np.array([stat(values[i]) for i in idx])
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        return [float("nan"), float("nan")]
    return [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]


def masked_frame_sum(x, mask):
    """Sum of ``x`` [n_rep, n_frames, d] over frames where ``mask`` [n_rep, n_frames].

    ``where``, not a product: a frame that flew apart after its replica failed has no distance
    in the histogram range, so its normalised histogram is NaN, and NaN * 0 is NaN.
    """
    return jnp.where(mask[..., None], x, 0.0).sum(1)


def evaluate_model(model: Model, params: Params, dataset: Dataset, cfg: EvalConfig, *,
                   progress: ProgressFn | None = None) -> EvalResult:
    """Run the evaluation simulations of ``params`` and compute every metric."""
    system = dataset.system
    n_dump = cfg.n_dump
    n_steps_total = round(cfg.time_ps * 1000 / cfg.dt_fs)
    frames_per_chunk = max(1, min(10, n_steps_total // n_dump))  # progress every 10 frames
    spc = n_dump * frames_per_chunk
    n_chunks = math.ceil(n_steps_total / spc)
    sim = make_simulator_for(model, system, cfg, integrator=cfg.integrator,
                             tolerance_angstrom=cfg.tolerance_angstrom, n_dump=n_dump,
                             frames_per_chunk=frames_per_chunk, gamma_per_ps=cfg.gamma_per_ps)
    dtype = jax.tree.leaves(params)[0].dtype
    start_idx = spread_indices(dataset.test.n_frames, cfg.n_replicas)
    R0 = jnp.asarray(dataset.test.positions[start_idx], dtype)
    state = sim.init(params, R0, jax.random.PRNGKey(cfg.seed))

    hr_fn = lambda R: distance_distribution(R, r_max=cfg.hr_r_max_angstrom)  # noqa: E731
    b_bins = make_bins(2.5, 0.01, 0.5)
    bonds = np.asarray(system.bonds)

    def bond_hist(R):
        return normalise_to(gaussian_smeared_histogram(bond_lengths(R, bonds), b_bins.centres,
                                                       0.01))

    @jax.jit
    def reduce_chunk(positions, stable):
        # positions [n_rep, n_fr, n_atoms, 3]; stable [n_rep, n_fr] -> per-replica sums
        h = jax.vmap(jax.vmap(hr_fn))(positions)
        b = jax.vmap(jax.vmap(bond_hist))(positions)
        return masked_frame_sum(h, stable), masked_frame_sum(b, stable), stable.sum(1)

    h_sum = np.zeros((cfg.n_replicas, make_bins(cfg.hr_r_max_angstrom, 0.02).n_bins))
    b_sum = np.zeros((cfg.n_replicas, b_bins.n_bins))
    n_stable_frames = np.zeros(cfg.n_replicas)
    steps_done = 0
    for c in range(n_chunks):
        state, traj = sim.run_chunk_safe(params, state)
        steps_done += spc
        fus = state.first_unstable_step[:, None]
        stable = traj.valid & ((fus < 0) | (traj.step < fus))
        hs, bs, ns = reduce_chunk(traj.positions, stable)
        h_sum += np.asarray(hs, np.float64)
        b_sum += np.asarray(bs, np.float64)
        n_stable_frames += np.asarray(ns)
        n_unstable = int(jnp.sum(state.unstable))
        if progress is not None:
            progress(steps_done, n_chunks * spc, {"n_unstable": n_unstable,
                                                 "n_replicas": cfg.n_replicas,
                                                 "simulated_ps": steps_done * cfg.dt_fs / 1000})
        if n_unstable >= cfg.stop_fraction * cfg.n_replicas:
            log.info("evaluation stops after %.1f ps: %d/%d replicas unstable",
                     steps_done * cfg.dt_fs / 1000, n_unstable, cfg.n_replicas)
            break

    times_fs, censored = stability_time_fs(state.first_unstable_step, cfg.dt_fs, steps_done)
    times_ps = np.asarray(times_fs, np.float64) / 1000
    censored = np.asarray(censored)
    window_ps = steps_done * cfg.dt_fs / 1000
    h_ref = np.asarray(distance_distribution_target(jnp.asarray(dataset.reference.positions),
                                                    r_max=cfg.hr_r_max_angstrom), np.float64)
    b_ref = np.asarray(jax.vmap(bond_hist)(jnp.asarray(dataset.reference.positions)).mean(0),
                       np.float64)
    total = n_stable_frames.sum()
    summary = {
        "n_replicas": cfg.n_replicas,
        "window_ps": window_ps,
        "integrator": cfg.integrator,
        "temperature_k": cfg.temperature_k,
        "tolerance_angstrom": cfg.tolerance_angstrom,
        "stability_time_ps_median": float(np.median(times_ps)),
        "stability_time_ps_median_ci95": bootstrap_ci(times_ps, np.median, cfg.n_bootstrap,
                                                      cfg.seed),
        "stability_time_ps_mean": float(times_ps.mean()),
        "stability_time_ps_mean_ci95": bootstrap_ci(times_ps, np.mean, cfg.n_bootstrap,
                                                    cfg.seed),
        "fraction_stable_whole_window": float(censored.mean()),
        "n_stable_frames": int(total),
    }
    arrays = {"stability_time_ps": times_ps, "censored": censored, "h_ref": h_ref,
              "hr_centres": make_bins(cfg.hr_r_max_angstrom, 0.02).centres,
              "bond_centres": b_bins.centres, "bond_ref": b_ref}
    if total > 0:
        h_mean = h_sum.sum(0) / total
        b_mean = b_sum.sum(0) / total
        per_rep = n_stable_frames > 0
        h_rep = h_sum[per_rep] / n_stable_frames[per_rep, None]

        def pooled_hr_mae(idx):
            h = h_sum[per_rep][idx].sum(0) / n_stable_frames[per_rep][idx].sum()
            return float(hr_mae(jnp.asarray(h), jnp.asarray(h_ref)))

        summary.update({
            "hr_mae": float(hr_mae(jnp.asarray(h_mean), jnp.asarray(h_ref))),
            "hr_mae_ci95": bootstrap_ci(np.arange(len(h_rep)), pooled_hr_mae,
                                        min(cfg.n_bootstrap, 200), cfg.seed),
            "hr_mean_abs_error": float(mean_abs_error(jnp.asarray(h_mean), jnp.asarray(h_ref))),
            "bond_length_distribution_mae": float(mean_abs_error(jnp.asarray(b_mean),
                                                                 jnp.asarray(b_ref))),
        })
        arrays.update({"h_model": h_mean, "bond_model": b_mean})
    else:
        summary.update({"hr_mae": None, "hr_mae_ci95": None, "hr_mean_abs_error": None,
                        "bond_length_distribution_mae": None})
    qm = evaluate_qm(model, params, dataset.test, dtype=str(dtype))
    summary["test_force_mae_mev_per_angstrom"] = float(qm["force_mae_mev_per_angstrom"])
    summary["test_energy_mae_mev"] = float(qm["energy_mae_mev"])
    t_grid = np.linspace(0, window_ps, 201)
    arrays["survival_t_ps"] = t_grid
    arrays["survival_fraction"] = np.array([(times_ps > t) | censored for t in t_grid]).mean(1)
    return EvalResult(summary, arrays)
