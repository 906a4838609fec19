"""Evaluation of a periodic molecular liquid (water), the paper's criterion and metrics.

Chosen by :func:`stablejax.evaluate.stability_run.evaluate_model` for a periodic system with
molecules. Replicas run with two criteria:

* per frame (a guard): the minimum distance between atoms of different molecules <= 1.2 A
  (``min_intermolecular_distance_criterion``, the training criterion);
* per window (the evaluation criterion): the worst of the O-O, O-H, H-H RDF MAEs of the
  window's frames against the reference g(r) of the whole reference trajectory >= 3.0
  (``rdf_criterion``; MAE = r_max x mean |g - g_ref| over [0, r_max) with dr 0.012 A). A window
  is one simulated chunk (``EvalConfig.chunks``: up to 10 frames). r_max is 6 A, or half the
  shortest cell height rounded down to the bin width when the box is smaller; the MAE is then
  scaled over that range (r_max x mean).

A window with a non-finite frame fails. A replica's stability time is the end of its first
failing window (or the first frame the guard fires on). Its RDF and O diffusivity use the
frames of the windows before its first failure. O diffusivity: unwrapped O positions, MSD
averaged over time origins, least-squares slope over lags [lag_fit_start, max_lag] / 6,
in 1e-9 m2/s; the reference's from its whole trajectory with the same lag range.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stablejax.data.cell import cell_heights
from stablejax.data.systems import System
from stablejax.observables.dynamics import diffusivity, msd
from stablejax.observables.rdf import (
    RDF_DR_ANGSTROM,
    RDF_R_MAX_ANGSTROM,
    WATER_PAIRS,
    partial_rdfs,
    rdf_mae,
)
from stablejax.simulate.state import ReplicaState, Trajectory
from stablejax.stability.criteria import (
    RDF_MAE_THRESHOLD,
    min_intermolecular_distance_criterion,
    rdf_criterion,
    stability_time_fs,
)

#: Angstrom^2/fs -> 1e-9 m^2/s.
A2_PER_FS_TO_1E9_M2_PER_S = 1e-20 / 1e-15 / 1e-9


def is_periodic_liquid(system: System) -> bool:
    """A periodic system of several molecules (water): evaluated by this module."""
    cell, mol = getattr(system, "cell", None), getattr(system, "molecule_index", None)
    return (cell is not None and any(getattr(system, "pbc", ())) and mol is not None
            and np.unique(mol).size > 1)


def rdf_range(cell) -> float:
    """6 A, or half the shortest cell height rounded down to the bin width if smaller."""
    half = 0.5 * float(np.min(cell_heights(np.asarray(cell, dtype=np.float64))))
    r_max = min(RDF_R_MAX_ANGSTROM, math.floor(half / RDF_DR_ANGSTROM) * RDF_DR_ANGSTROM)
    return round(r_max, 6)


def reference_rdfs(positions, species, cell, r_max: float, batch: int = 100) -> np.ndarray:
    """[3, n_bins] partial RDFs of all reference frames (averaged in batches)."""
    R = np.asarray(positions)
    total, n = 0.0, 0
    for s in range(0, len(R), batch):
        part = R[s:s + batch]
        total = total + np.asarray(partial_rdfs(jnp.asarray(part), species, cell, r_max=r_max),
                                   np.float64) * len(part)
        n += len(part)
    return total / n


def water_criteria(system: System, g_ref: np.ndarray, r_max: float):
    """(per-frame guard, window criterion) for the simulator."""
    cell = jnp.asarray(system.cell)
    guard = min_intermolecular_distance_criterion(system.molecule_index, cell=cell)
    rdf = rdf_criterion(system.atomic_numbers, cell, g_ref, r_max=r_max)

    def window(R, valid):
        res = rdf(R)
        return res.unstable | ~jnp.all(valid), res.value

    return guard, window


class WaterAcc(NamedTuple):
    """Running sums of the water evaluation (host numpy arrays: checkpointed as they are)."""

    g_sum: np.ndarray  # [n_rep, 3, n_bins] f64: sum of window RDFs over stable windows
    n_windows: np.ndarray  # [n_rep] int: stable windows
    o_unwrapped: np.ndarray  # [n_rep, n_frames so far, n_O, 3] f64 Angstrom
    stable_window: np.ndarray  # [n_rep, n_windows so far] bool
    first_unstable_step: np.ndarray  # [n_rep] int, -1 = never
    steps_done: int


class WaterMetrics(NamedTuple):
    times_ps: np.ndarray
    censored: np.ndarray
    window_ps: float
    n_stable_frames: int
    g_model: np.ndarray | None  # [3, n_bins] pooled over stable windows
    rdf_mae: dict | None  # {"O-O": .., "O-H": .., "H-H": .., "max": ..}
    diffusivity_per_replica: np.ndarray  # [n_rep] 1e-9 m2/s (NaN: too few stable frames)
    msd_lag_ps: np.ndarray  # [n_lags] lags of the MSD curve, ps (0 first)
    msd: np.ndarray  # [n_lags] O MSD, Angstrom^2, averaged over replicas with frames that long


def make_water_stream(system: System, g_ref: np.ndarray, r_max: float, *, n_replicas: int,
                      dt_fs: float, frame_interval_fs: float, lag_fit_ps: tuple[float, float]):
    """init / update / finalize of the water evaluation (same protocol as ``Stream``)."""
    species = np.asarray(system.atomic_numbers)
    o_atoms = np.flatnonzero(species == 8)
    cell = jnp.asarray(system.cell)
    n_bins = g_ref.shape[1]

    @jax.jit
    def window_rdfs(positions):  # [n_rep, n_fr, n_atoms, 3] -> [n_rep, 3, n_bins]
        return jax.vmap(lambda R: partial_rdfs(R, species, cell, r_max=r_max))(positions)

    def init() -> WaterAcc:
        return WaterAcc(np.zeros((n_replicas, len(WATER_PAIRS), n_bins)),
                        np.zeros(n_replicas, np.int64),
                        np.zeros((n_replicas, 0, len(o_atoms), 3)),
                        np.zeros((n_replicas, 0), bool), np.full(n_replicas, -1), 0)

    def update(acc: WaterAcc, state: ReplicaState, traj: Trajectory, n_steps: int) -> WaterAcc:
        fus = np.asarray(state.first_unstable_step)
        last = np.asarray(traj.step)[:, -1]
        ok = ((fus < 0) | (fus > last)) & np.asarray(traj.valid).all(1)
        g = np.asarray(window_rdfs(traj.positions), np.float64)
        g_sum = acc.g_sum + np.where(ok[:, None, None], g, 0.0)
        o = np.asarray(traj.unwrapped_positions, np.float64)[:, :, o_atoms]
        return WaterAcc(g_sum, acc.n_windows + ok, np.concatenate([acc.o_unwrapped, o], 1),
                        np.concatenate([acc.stable_window, ok[:, None]], 1), fus,
                        acc.steps_done + n_steps)

    def finalize(acc: WaterAcc) -> WaterMetrics:
        times_fs, censored = stability_time_fs(jnp.asarray(acc.first_unstable_step), dt_fs,
                                               acc.steps_done)
        n_win = acc.stable_window.shape[1]
        n_fr = acc.o_unwrapped.shape[1] // n_win if n_win else 0  # frames per window
        total = int(acc.n_windows.sum())
        g_model = maes = None
        if total > 0:
            g_model = acc.g_sum.sum(0) / total
            per = np.asarray(rdf_mae(jnp.asarray(g_model), jnp.asarray(g_ref), r_max))
            maes = {"O-O": float(per[0]), "O-H": float(per[1]), "H-H": float(per[2]),
                    "max": float(per.max())}
        d = np.full(n_replicas, np.nan)
        max_lag = min(lag_frames(lag_fit_ps[1], frame_interval_fs), acc.o_unwrapped.shape[1] - 1)
        msd_sum, msd_n = np.zeros(max(max_lag, 0) + 1), np.zeros(max(max_lag, 0) + 1)
        if n_win:
            O = acc.o_unwrapped  # [n_rep, T, n_O, 3]
            stable = np.repeat(acc.stable_window, n_fr, axis=1)
            for r in range(n_replicas):
                n_ok = int(np.argmin(stable[r])) if not stable[r].all() else stable.shape[1]
                d[r] = fitted_diffusivity(O[r, :n_ok], frame_interval_fs, lag_fit_ps)
                lags = min(max_lag, n_ok - 1)
                if lags >= 1:
                    msd_sum[:lags + 1] += np.asarray(msd(jnp.asarray(O[r, :n_ok]), lags))
                    msd_n[:lags + 1] += 1
        keep = msd_n > 0
        return WaterMetrics(np.asarray(times_fs, np.float64) / 1000, np.asarray(censored),
                            acc.steps_done * dt_fs / 1000, total * n_fr, g_model, maes, d,
                            np.arange(len(msd_n))[keep] * frame_interval_fs / 1000,
                            msd_sum[keep] / msd_n[keep])

    return init, update, finalize


def lag_frames(lag_ps: float, frame_interval_fs: float) -> int:
    """A lag in ps as a whole number of frames."""
    return int(round(lag_ps * 1000 / frame_interval_fs))


def fitted_diffusivity(unwrapped, frame_interval_fs: float,
                       lag_fit_ps: tuple[float, float]) -> float:
    """D (1e-9 m2/s) of unwrapped frames [T, n_atoms, 3]: slope of the MSD over lags
    [lag_fit_ps[0], lag_fit_ps[1]] (clipped to the frames available) / 6; NaN when fewer than
    two lags fit."""
    T = len(unwrapped)
    max_lag = min(lag_frames(lag_fit_ps[1], frame_interval_fs), T - 1)
    start = lag_frames(lag_fit_ps[0], frame_interval_fs)
    if max_lag < 1 or start >= max_lag:
        return float("nan")
    d = diffusivity(jnp.asarray(unwrapped), frame_interval_fs, max_lag=max_lag, method="fit",
                    fit_start_lag=start)
    return float(d) * A2_PER_FS_TO_1E9_M2_PER_S


def evaluate_water(model, params, dataset, cfg, *, progress=None, lag_fit_ps=None,
                   checkpoint_dir=None, mesh=None):
    """The water evaluation of ``params`` (see the module docstring); returns an
    ``EvalResult``. ``lag_fit_ps`` (default: 10 %-50 % of the run length):
    the MSD fit range, ps. ``checkpoint_dir``: keep the state and sums after every chunk and
    resume from the newest (as :func:`stablejax.evaluate.evaluate_model`)."""
    from stablejax.evaluate.qm import evaluate_qm
    from stablejax.evaluate.stability_run import (
        EvalResult,
        resample_unit,
        run_eval_stream,
        spread_indices,
    )
    from stablejax.simulate.rollout import make_simulator

    system = dataset.system
    frames_per_chunk = cfg.chunks[0]
    r_max = rdf_range(system.cell)
    species = np.asarray(system.atomic_numbers)
    g_ref = reference_rdfs(dataset.reference.positions, species, system.cell, r_max)
    guard, window = water_criteria(system, g_ref, r_max)
    sim = make_simulator(model.energy_fn, masses=system.masses_amu, dt_fs=cfg.md.dt_fs,
                         n_dump=cfg.md.n_dump, integrator=cfg.md.integrator,
                         temperature_k=cfg.md.temperature_k,
                         displacement_fn=model.displacement_fn, shift_fn=model.shift_fn,
                         neighbor_fn=model.neighbor_fn, criterion=guard,
                         window_criterion=window, frames_per_chunk=frames_per_chunk,
                         nh_tau_steps=cfg.md.nh_tau_steps, gamma_per_ps=cfg.md.gamma_per_ps,
                         record_unwrapped=True, mesh=mesh)
    if lag_fit_ps is None:
        lag_fit_ps = (0.2 * cfg.time_ps / 2, cfg.time_ps / 2)
    frame_fs = cfg.md.frame_interval_fs
    init, update, finalize = make_water_stream(system, g_ref, r_max, n_replicas=cfg.n_replicas,
                                               dt_fs=cfg.md.dt_fs, frame_interval_fs=frame_fs,
                                               lag_fit_ps=lag_fit_ps)
    stream = _StreamLike(init, update)
    dtype = jax.tree.leaves(params)[0].dtype
    start_idx = spread_indices(dataset.test.n_frames, cfg.n_replicas)
    R0 = jnp.asarray(dataset.test.positions[start_idx], dtype)
    state = sim.init(params, R0, jax.random.PRNGKey(cfg.seed))
    acc = run_eval_stream(sim, params, state, stream, cfg, progress=progress,
                          checkpoint_dir=checkpoint_dir, acc_type=WaterAcc)
    m = finalize(acc)
    ref_O = reference_unwrapped_oxygens(dataset)
    d_ref = fitted_diffusivity(ref_O, dataset.reference_interval_fs, lag_fit_ps)
    ref_lag = lag_frames(lag_fit_ps[1], dataset.reference_interval_fs)
    ref_lag = min(ref_lag, len(ref_O) - 1)
    d_rep = m.diffusivity_per_replica
    d_model = float(np.nanmean(d_rep)) if np.isfinite(d_rep).any() else None
    summary = {
        "criterion": "water: max over O-O, O-H, H-H of RDF MAE >= "
                     f"{RDF_MAE_THRESHOLD:g} per window; per frame min intermolecular "
                     "distance <= 1.2 A",
        "n_replicas": cfg.n_replicas,
        **resample_unit(start_idx),
        "window_ps": m.window_ps,
        "rdf_window_frames": frames_per_chunk,
        "rdf_window_ps": frames_per_chunk * frame_fs / 1000,
        "frame_interval_fs": frame_fs,
        "rdf_r_max_angstrom": r_max,
        "rdf_dr_angstrom": RDF_DR_ANGSTROM,
        "reference_frames": int(dataset.reference.n_frames),
        "integrator": cfg.md.integrator,
        "temperature_k": cfg.md.temperature_k,
        "dt_fs": cfg.md.dt_fs,
        "stability_time_ps_median": float(np.median(m.times_ps)),
        "stability_time_ps_mean": float(m.times_ps.mean()),
        "fraction_stable_whole_window": float(m.censored.mean()),
        "n_stable_frames": m.n_stable_frames,
        "rdf_mae": m.rdf_mae,
        "diffusivity_lag_fit_ps": list(lag_fit_ps),
        "o_diffusivity_1e-9_m2_per_s": d_model,
        "o_diffusivity_per_replica_1e-9_m2_per_s": [None if not np.isfinite(x) else float(x)
                                                    for x in d_rep],
        "o_diffusivity_reference_1e-9_m2_per_s": d_ref,
        "o_diffusivity_error": (None if d_model is None or not np.isfinite(d_ref)
                                else abs(d_model - d_ref) / d_ref),
    }
    qm = evaluate_qm(model, params, dataset.test, dtype=str(dtype))
    summary["test_force_mae_mev_per_angstrom"] = float(qm["force_mae_mev_per_angstrom"])
    summary["test_energy_mae_mev"] = float(qm["energy_mae_mev"])
    t_grid = np.linspace(0, m.window_ps, 201)
    arrays = {"stability_time_ps": m.times_ps, "censored": m.censored,
              "start_frame": start_idx, "g_ref": g_ref,
              "survival_t_ps": t_grid,
              "survival_fraction": np.array([(m.times_ps > t) | m.censored
                                             for t in t_grid]).mean(1)}
    if m.g_model is not None:
        arrays["g_model"] = m.g_model
    arrays.update(rdf_r=(np.arange(g_ref.shape[1]) + 0.5) * RDF_DR_ANGSTROM,
                  msd_lag_ps=m.msd_lag_ps, msd_model=m.msd,
                  msd_ref_lag_ps=np.arange(ref_lag + 1) * dataset.reference_interval_fs / 1000,
                  msd_ref=np.asarray(msd(jnp.asarray(ref_O), ref_lag)) if ref_lag >= 1
                  else np.zeros(1))
    return EvalResult(summary, arrays)


def reference_unwrapped_oxygens(dataset) -> np.ndarray:
    """[n_frames, n_O, 3] unwrapped O positions of the reference trajectory, Angstrom."""
    species = np.asarray(dataset.system.atomic_numbers)
    return np.asarray(dataset.reference.positions)[:, species == 8]


class _StreamLike(NamedTuple):
    init: object
    update: object
