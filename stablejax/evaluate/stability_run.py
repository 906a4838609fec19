"""Long evaluation simulations of a potential and the paper's metrics (docs/method.md §6, §7, §8).

Replicas start from test structures spread evenly over the test split (never consecutive
frames) with fresh Maxwell-Boltzmann velocities, and run with the evaluation thermostat
(aspirin: Langevin, gamma 0.1/ps, 500 K, 0.5 fs) and the evaluation tolerance (0.5 A). Frames
are reduced to running sums chunk by chunk, so memory does not grow with simulated time.

Metrics (each with its unit):
  * stability time of every replica = time to the first failure of the criterion (ps),
    right-censored at the run length; median (percentile bootstrap 95 % interval) and mean
    (BCa bootstrap interval); the survival curve (fraction of replicas stable vs time).
  * h(r) MAE (MDsim convention, 10 x mean over bins |h - h_ref|, dimensionless; h normalised to
    sum 100) of the stable frames against the reference trajectory, with a basic bootstrap
    interval (the statistic is biased upward; ``bootstrap_interval``), and the plain mean.
    ``summary["ci_method"]`` names the method of each interval.
  * bond-length distribution MAE (mean over bins |p - p_ref| of distributions normalised to
    sum 100, same smearing) of the stable frames.
  * test force / energy MAE (meV/A, meV).

Every interval resamples start frames: the replicas that share one (more replicas than test
frames) are drawn together, since they are not independent (a cluster bootstrap;
``summary["resample_unit"]``). With one replica per start frame that is the bootstrap over
replicas.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Params, ProgressFn
from stablejax.data.dataset import Dataset
from stablejax.evaluate.intervals import (  # noqa: F401  (re-exported)
    CI_METHODS,
    BootstrapInterval,
    bootstrap_ci,
    bootstrap_interval,
)
from stablejax.config import HRConfig, MDConfig, check_types, need
from stablejax.evaluate.qm import evaluate_qm
from stablejax.evaluate.stream import (  # noqa: F401  (masked_frame_sum re-exported)
    Chunk,
    load_stream_checkpoint,
    make_stream,
    masked_frame_sum,
    run_stream,
    save_stream_checkpoint,
)
from stablejax.models import Model
from stablejax.observables.distances import hr_mae
from stablejax.simulate.build import make_simulator_for

log = logging.getLogger(__name__)


EVAL_MD = MDConfig(integrator="langevin", temperature_k=500.0, dt_fs=0.5, gamma_per_ps=0.1,
                   frame_interval_fs=100.0, tolerance_angstrom=0.5)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings (defaults: the paper's aspirin evaluation, docs/method.md §10.1).

    Attributes:
      md: the simulation (Langevin 500 K, 0.5 fs, friction 0.1/ps, a frame every 100 fs, bond
        tolerance 0.5 A; Ac-Ala3-NHMe uses Nose-Hoover).
      n_replicas: replicas.
      time_ps: simulated time per replica, ps.
      stop_fraction: stop early once this fraction of replicas is unstable.
      hr: the h(r) observable (10 A aspirin, 15 A Ac-Ala3-NHMe).
      n_bootstrap: bootstrap resamples for the intervals.
      seed: PRNG seed (start structures are deterministic; velocities and noise use it).
    """

    md: MDConfig = EVAL_MD
    n_replicas: int = 256
    time_ps: float = 1000.0
    stop_fraction: float = 0.99
    hr: HRConfig = HRConfig()
    n_bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        need(self, "n_replicas", self.n_replicas >= 1, ">= 1")
        need(self, "time_ps", self.time_ps * 1000.0 >= self.md.frame_interval_fs,
             f"at least one frame interval ({self.md.frame_interval_fs} fs)")
        need(self, "stop_fraction", 0 < self.stop_fraction <= 1, "in (0, 1]")
        need(self, "n_bootstrap", self.n_bootstrap >= 1, ">= 1")

    @property
    def chunks(self) -> tuple[int, int]:
        """(frames per chunk, chunks): the run is simulated, reported and checkpointed in
        chunks of up to 10 frames."""
        n_steps_total = self.md.steps(self.time_ps)
        frames_per_chunk = max(1, min(10, n_steps_total // self.md.n_dump))
        return frames_per_chunk, math.ceil(n_steps_total / (self.md.n_dump * frames_per_chunk))


class EvalResult(NamedTuple):
    """Summary (JSON-able dict) and arrays (for plots) of one evaluation."""

    summary: dict
    arrays: dict


def spread_indices(n_available: int, n: int) -> np.ndarray:
    """``n`` indices spread evenly over ``range(n_available)`` (repeats only when n > n_available)."""
    return np.floor(np.arange(n) * n_available / n).astype(int) % n_available


def resample_unit(start_idx: np.ndarray) -> dict:
    """Summary entries saying what the intervals resample: ``"start frame"`` when replicas
    share start frames (``start_idx``: [n_replicas] int test-frame index of each), else
    ``"replica"``; and the number of distinct start frames."""
    n_frames = int(np.unique(start_idx).size)
    return {"resample_unit": "start frame" if n_frames < len(start_idx) else "replica",
            "n_start_frames": n_frames}


def hr_mae_interval(h_sum: np.ndarray, n_stable_frames: np.ndarray, h_ref: np.ndarray,
                    start_idx: np.ndarray, cfg: EvalConfig) -> BootstrapInterval:
    """Basic bootstrap interval of the h(r) MAE of the stable frames of all replicas pooled.

    Only replicas with stable frames are resampled, with their start frames as clusters.

    Args:
      h_sum: [n_replicas, n_bins] f64 sum of h(r) over each replica's stable frames.
      n_stable_frames: [n_replicas] stable frames of each replica.
      h_ref: [n_bins] reference h(r) (normalised to sum 100).
      start_idx: [n_replicas] int test-frame index each replica started from.
      cfg: the evaluation (``n_bootstrap``, ``seed``).
    """
    per_rep = n_stable_frames > 0
    h_sum, n_frames = h_sum[per_rep], n_stable_frames[per_rep]

    def pooled_hr_mae(idx):
        return float(hr_mae(h_sum[idx].sum(0) / n_frames[idx].sum(), h_ref))

    # The MAE of a noisy histogram is biased upward, and a resample (duplicated replicas) is
    # noisier still: the basic interval subtracts that bias (the caller clips it at 0).
    return bootstrap_interval(np.arange(len(n_frames)), pooled_hr_mae, cfg.n_bootstrap,
                              cfg.seed, method="basic", clusters=start_idx[per_rep])


def run_eval_stream(sim, params: Params, state, stream, cfg: EvalConfig, *,
                    progress: ProgressFn | None = None,
                    checkpoint_dir: str | Path | None = None, acc_type=None):
    """Simulate the evaluation's chunks through ``stream`` (see :func:`evaluate_model` for
    ``progress`` and ``checkpoint_dir``); returns the accumulated sums. ``acc_type``: the
    stream's sums type when it is not ``StreamAcc``."""
    frames_per_chunk, n_chunks = cfg.chunks
    total_steps = n_chunks * cfg.md.n_dump * frames_per_chunk
    resume = None
    if checkpoint_dir is not None:
        found = load_stream_checkpoint(checkpoint_dir, state, acc_type=acc_type)
        resume = None if found is None else found[0]

    def on_chunk(c: Chunk) -> None:
        if checkpoint_dir is not None:
            save_stream_checkpoint(checkpoint_dir, c)
        if progress is not None:
            done = c.acc.steps_done
            progress(done, total_steps, {"n_unstable": c.n_unstable,
                                         "n_replicas": cfg.n_replicas,
                                         "simulated_ps": done * cfg.md.dt_fs / 1000})

    _, acc, _ = run_stream(sim, params, state, stream, n_chunks=n_chunks,
                           stop_fraction=cfg.stop_fraction, on_chunk=on_chunk, resume=resume)
    return acc


def evaluate_model(model: Model, params: Params, dataset: Dataset, cfg: EvalConfig, *,
                   progress: ProgressFn | None = None,
                   checkpoint_dir: str | Path | None = None, mesh="all") -> EvalResult:
    """Run the evaluation simulations of ``params`` and compute every metric.

    Args:
      progress: ``progress(steps_done, steps_total, info)`` after every chunk.
      checkpoint_dir: keep the state and sums after every chunk there and continue from the
        newest one found (a run killed at any point resumes after its last finished chunk).
        The result equals that of an uninterrupted run bit for bit, provided the directory
        was written with the same model, parameters, data set and ``cfg``; the caller checks
        that (the checkpoints do not record it). Checkpoints hold whole arrays, never a
        device layout: a run resumes on another device count.
      mesh: the devices the replicas are split over (:func:`stablejax.sharding.resolve_mesh`:
        a mesh, ``"all"`` devices, or None for one).
    """
    from stablejax import sharding

    mesh = sharding.resolve_mesh(mesh)
    system = dataset.system
    from stablejax.evaluate.water import evaluate_water, is_periodic_liquid

    if is_periodic_liquid(system):
        return evaluate_water(model, params, dataset, cfg, progress=progress,
                              checkpoint_dir=checkpoint_dir, mesh=mesh)
    frames_per_chunk = cfg.chunks[0]
    sim = make_simulator_for(model, system, cfg.md, frames_per_chunk=frames_per_chunk,
                             mesh=mesh)
    dtype = jax.tree.leaves(params)[0].dtype
    start_idx = spread_indices(dataset.test.n_frames, cfg.n_replicas)
    R0 = jnp.asarray(dataset.test.positions[start_idx], dtype)
    state = sim.init(params, R0, jax.random.PRNGKey(cfg.seed))
    stream = make_stream(system, dataset.reference.positions, n_replicas=cfg.n_replicas,
                         dt_fs=cfg.md.dt_fs, hr=cfg.hr)
    acc = run_eval_stream(sim, params, state, stream, cfg, progress=progress,
                          checkpoint_dir=checkpoint_dir)
    m = stream.finalize(acc)
    times_ps, censored, window_ps = m.times_ps, m.censored, m.window_ps
    h_ref = stream.h_ref
    # Interval methods (docs/method.md §9): percentile for the median (a quantile: no smooth
    # jackknife, so no BCa), BCa for the mean, basic for the h(r) MAE.
    # Replicas that share a start frame are resampled together (clusters=start_idx).
    median_ci = bootstrap_interval(times_ps, np.median, cfg.n_bootstrap, cfg.seed,
                                   method="percentile", clusters=start_idx)
    mean_ci = bootstrap_interval(times_ps, np.mean, cfg.n_bootstrap, cfg.seed, method="bca",
                                 clusters=start_idx)
    summary = {
        "n_replicas": cfg.n_replicas,
        "window_ps": window_ps,
        "integrator": cfg.md.integrator,
        "temperature_k": cfg.md.temperature_k,
        "tolerance_angstrom": cfg.md.tolerance_angstrom,
        "stability_time_ps_median": float(np.median(times_ps)),
        "stability_time_ps_median_ci95": [median_ci.low, median_ci.high],
        "stability_time_ps_mean": float(times_ps.mean()),
        "stability_time_ps_mean_ci95": [mean_ci.low, mean_ci.high],
        "ci_method": {"stability_time_ps_median_ci95": median_ci.method,
                      "stability_time_ps_mean_ci95": mean_ci.method},
        **resample_unit(start_idx),
        "fraction_stable_whole_window": float(censored.mean()),
        "n_stable_frames": m.n_stable_frames,
    }
    arrays = {"stability_time_ps": times_ps, "censored": censored, "start_frame": start_idx,
              "h_ref": h_ref, "hr_centres": stream.hr_centres,
              "bond_centres": stream.bond_centres, "bond_ref": stream.b_ref}
    if m.n_stable_frames > 0:
        hr_ci = hr_mae_interval(acc.h_sum, acc.n_stable_frames, h_ref, start_idx, cfg)
        summary["ci_method"]["hr_mae_ci95"] = (f"{hr_ci.method} with stable frames, their "
                                               "frames pooled; lower end clipped at 0")
        summary.update({
            "hr_mae": m.hr_mae,
            "hr_mae_ci95": [max(hr_ci.low, 0.0), max(hr_ci.high, 0.0)],
            "hr_mae_bootstrap_bias": hr_ci.bias,
            "hr_mean_abs_error": m.hr_mean_abs_error,
            "bond_length_distribution_mae": m.bond_length_distribution_mae,
        })
        arrays.update({"h_model": m.h_mean, "bond_model": m.b_mean})
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
