"""Long evaluation simulations of a potential and the paper's metrics (method.md §4, §6.8, §6.9).

Replicas start from test structures spread evenly over the test split (never consecutive
frames) with fresh Maxwell-Boltzmann velocities, and run with the evaluation thermostat
(aspirin: Langevin, gamma 0.1/ps, 500 K, 0.5 fs) and the evaluation tolerance (0.5 A). Frames
are reduced to running sums chunk by chunk, so memory does not grow with simulated time.

Metrics (each with its unit):
  * stability time of every replica = time to the first failure of the criterion (ps),
    right-censored at the run length; median (percentile bootstrap 95 % interval over
    replicas) and mean (BCa bootstrap interval); the survival curve (fraction of replicas
    stable vs time).
  * h(r) MAE (MDsim convention, 10 x mean over bins |h - h_ref|, dimensionless; h normalised to
    sum 100) of the stable frames against the reference trajectory, with a basic bootstrap
    interval over replicas (the statistic is biased upward; ``bootstrap_interval``), and the
    plain mean. ``summary["ci_method"]`` names the method of each interval.
  * bond-length distribution MAE (mean over bins |p - p_ref| of distributions normalised to
    sum 100, same smearing) of the stable frames.
  * test force / energy MAE (meV/A, meV).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
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


CI_METHODS = ("percentile", "basic", "bca")
_CI_NAMES = {"percentile": "percentile bootstrap", "basic": "basic (reverse-percentile) bootstrap",
             "bca": "BCa bootstrap"}


class BootstrapInterval(NamedTuple):
    """A bootstrap confidence interval of ``stat(values)`` and its diagnostics.

    Attributes:
      low, high: the interval (same unit as the statistic).
      estimate: ``stat(values)``, the point estimate.
      bias: mean of the resampled statistics minus ``estimate`` (the bootstrap estimate of the
        statistic's bias; the h(r) MAE has a positive one).
      z0: bias correction, ``Phi^-1`` of the fraction of resampled statistics below
        ``estimate`` (ties count half); computed for every method.
      acceleration: BCa acceleration from the jackknife (0 for the other methods).
      levels: quantile levels of the resampled statistics that give the interval.
      at_edge: a level lies beyond the resolution of the resamples (below 1/n or above 1 - 1/n),
        so that end is the smallest or largest resampled value: more resamples, or a
        statistic with less bias, are needed for that end to mean much.
      method: description for reports, e.g. ``"BCa bootstrap, 1000 resamples"``.
    """

    low: float
    high: float
    estimate: float
    bias: float
    z0: float
    acceleration: float
    levels: tuple[float, float]
    at_edge: bool
    method: str


def _normal_cdf_ppf():
    """(cdf, ppf) of the standard normal: scipy when installed, else the standard library."""
    try:
        from scipy.stats import norm
    except ImportError:
        nd = statistics.NormalDist()
        return np.vectorize(nd.cdf, otypes=[float]), np.vectorize(nd.inv_cdf, otypes=[float])
    return norm.cdf, norm.ppf


def _jackknife_acceleration(values: np.ndarray, stat) -> float:
    """BCa acceleration ``sum d^3 / (6 (sum d^2)^1.5)``, ``d_i = mean_j theta_(j) - theta_(i)``
    over the leave-one-out statistics ``theta_(i)`` (non-finite ones dropped); 0 when fewer than
    3 values or all ``theta_(i)`` are equal."""
    if len(values) < 3:
        return 0.0
    jack = np.array([stat(np.delete(values, i, axis=0)) for i in range(len(values))], np.float64)
    d = jack[np.isfinite(jack)]
    d = d.mean() - d if len(d) else d
    s2 = float(np.sum(d**2))
    return float(np.sum(d**3) / (6 * s2**1.5)) if s2 > 0 else 0.0


def bootstrap_interval(values: np.ndarray, stat, n: int, seed: int, *, method: str = "bca",
                       level: float = 0.95) -> BootstrapInterval:
    """Bootstrap confidence interval of ``stat(values)``, resampling the rows of ``values``.

    ``n`` resamples of ``len(values)`` rows are drawn with replacement (``numpy`` generator
    seeded with ``seed``); resampled statistics that are not finite are dropped. With the
    ``(1 - level) / 2`` tail level alpha and the sorted resampled statistics ``theta*``:

      * ``"percentile"``: the alpha and 1 - alpha quantiles of ``theta*``. Right for a statistic
        without bias; it carries a bias twice (once in the estimate, once in the resamples).
      * ``"basic"`` (reverse percentile): ``2 theta - q(1 - alpha)``, ``2 theta - q(alpha)``:
        the spread of ``theta* - theta`` reflected about the estimate, so a bias seen in the
        resamples is subtracted. It needs no extreme quantile however large the bias.
      * ``"bca"`` (bias-corrected and accelerated; Efron 1987): the quantiles of ``theta*`` at
        ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for ``z = Phi^-1(alpha), Phi^-1(1 - alpha)``,
        with ``z0 = Phi^-1(fraction of theta* below theta)`` (ties count half; the fraction is
        kept within [0.5/n, 1 - 0.5/n]) and the acceleration ``a`` from the jackknife over the
        rows. Second-order accurate for smooth statistics such as a mean.

    Every method whose interval corrects for bias excludes the estimate exactly when the
    percentile interval does (when fewer than alpha of the resamples fall on one side of it):
    the bootstrap then finds the estimate biased by more than its spread, and the interval lies
    on the other side of it. Check ``at_edge`` for BCa: with a large ``|z0|`` its levels fall
    beyond the resamples and that end is only the smallest or largest resampled value.

    Args:
      values: array whose first axis is resampled (e.g. [n_replicas] stability times, ps, or
        replica indices for a pooled statistic).
      stat: maps a resampled array (same layout as ``values``) to a float.
      n: number of resamples (>= 1).
      seed: seed of the resampling.
      method: one of ``CI_METHODS``.
      level: confidence level in (0, 1).

    Returns:
      A ``BootstrapInterval``; ``low``/``high`` are NaN when no resampled statistic is finite
      (or, for basic and BCa, when the estimate is not).

    Raises:
      ValueError: unknown method, level outside (0, 1), n < 1 or empty ``values``.
    """
    if method not in CI_METHODS:
        raise ValueError(f"bootstrap method must be one of {CI_METHODS}, got {method!r}")
    if not 0 < level < 1 or n < 1:
        raise ValueError(f"bootstrap needs 0 < level < 1 and n >= 1, got {level} and {n}")
    values = np.asarray(values)
    if not len(values):
        raise ValueError("bootstrap of an empty array")
    cdf, ppf = _normal_cdf_ppf()
    desc = f"{_CI_NAMES[method]}, {n} resamples"
    estimate = float(stat(values))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), (n, len(values)))
    stats = np.array([stat(values[i]) for i in idx], np.float64)
    stats = stats[np.isfinite(stats)]
    if not len(stats) or (method != "percentile" and not np.isfinite(estimate)):
        nan = float("nan")
        return BootstrapInterval(nan, nan, estimate, nan, nan, 0.0, (nan, nan), False, desc)
    n_ok = len(stats)
    below = (np.sum(stats < estimate) + 0.5 * np.sum(stats == estimate)) / n_ok
    z0 = float(ppf(np.clip(below, 0.5 / n_ok, 1 - 0.5 / n_ok)))
    alpha = (1 - level) / 2
    accel = 0.0
    if method == "bca":
        accel = _jackknife_acceleration(values, stat)
        w = z0 + ppf(np.array([alpha, 1 - alpha]))
        den = 1 - accel * w
        # den <= 0 (|a| far beyond the usual < 0.2): the BCa map fails; take the widest end.
        levels = np.where(den > 0, cdf(z0 + w / np.where(den > 0, den, 1.0)), [0.0, 1.0])
    else:
        levels = np.array([alpha, 1 - alpha])
    q = np.quantile(stats, levels)
    low, high = (2 * estimate - q[1], 2 * estimate - q[0]) if method == "basic" else q
    at_edge = bool(levels[0] < 1 / n_ok or levels[1] > 1 - 1 / n_ok)
    return BootstrapInterval(float(low), float(high), estimate, float(stats.mean() - estimate),
                             z0, accel, (float(levels[0]), float(levels[1])), at_edge, desc)


def bootstrap_ci(values: np.ndarray, stat, n: int, seed: int, *, method: str = "percentile",
                 level: float = 0.95) -> list[float]:
    """``[low, high]`` of ``bootstrap_interval`` (default: the percentile method)."""
    ci = bootstrap_interval(values, stat, n, seed, method=method, level=level)
    return [ci.low, ci.high]


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
    # Interval methods (docs/method.md, "Confidence intervals"): percentile for the median (a
    # quantile: no smooth jackknife, so no BCa), BCa for the mean, basic for the h(r) MAE.
    median_ci = bootstrap_interval(times_ps, np.median, cfg.n_bootstrap, cfg.seed,
                                   method="percentile")
    mean_ci = bootstrap_interval(times_ps, np.mean, cfg.n_bootstrap, cfg.seed, method="bca")
    summary = {
        "n_replicas": cfg.n_replicas,
        "window_ps": window_ps,
        "integrator": cfg.integrator,
        "temperature_k": cfg.temperature_k,
        "tolerance_angstrom": cfg.tolerance_angstrom,
        "stability_time_ps_median": float(np.median(times_ps)),
        "stability_time_ps_median_ci95": [median_ci.low, median_ci.high],
        "stability_time_ps_mean": float(times_ps.mean()),
        "stability_time_ps_mean_ci95": [mean_ci.low, mean_ci.high],
        "ci_method": {"stability_time_ps_median_ci95": f"{median_ci.method} of the replicas",
                      "stability_time_ps_mean_ci95": f"{mean_ci.method} of the replicas"},
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
            return float(hr_mae(h, h_ref))

        # The MAE of a noisy histogram is biased upward, and a resample (duplicated replicas)
        # is noisier still: the basic interval subtracts that bias, clipped at 0.
        hr_ci = bootstrap_interval(np.arange(len(h_rep)), pooled_hr_mae, cfg.n_bootstrap,
                                   cfg.seed, method="basic")
        summary["ci_method"]["hr_mae_ci95"] = (f"{hr_ci.method} of the replicas (stable frames "
                                               "pooled), lower end clipped at 0")
        summary.update({
            "hr_mae": float(hr_mae(jnp.asarray(h_mean), jnp.asarray(h_ref))),
            "hr_mae_ci95": [max(hr_ci.low, 0.0), max(hr_ci.high, 0.0)],
            "hr_mae_bootstrap_bias": hr_ci.bias,
            "hr_mean_abs_error": float(mean_abs_error(jnp.asarray(h_mean), jnp.asarray(h_ref))),
            "bond_length_distribution_mae": float(mean_abs_error(jnp.asarray(b_mean),
                                                                 jnp.asarray(b_ref))),
        })
        arrays.update({"h_model": h_mean, "bond_model": b_mean})
    else:
        summary.update({"hr_mae": None, "hr_mae_ci95": None, "hr_mae_bootstrap_bias": None,
                        "hr_mean_abs_error": None,
                        "bond_length_distribution_mae": None})
    qm = evaluate_qm(model, params, dataset.test, dtype=str(dtype))
    summary["test_force_mae_mev_per_angstrom"] = float(qm["force_mae_mev_per_angstrom"])
    summary["test_energy_mae_mev"] = float(qm["energy_mae_mev"])
    t_grid = np.linspace(0, window_ps, 201)
    arrays["survival_t_ps"] = t_grid
    arrays["survival_fraction"] = np.array([(times_ps > t) | censored for t in t_grid]).mean(1)
    return EvalResult(summary, arrays)
