"""Streaming reduction of replica simulations to the evaluation's observables.

A :class:`Stream` is three pure functions in the style of optax: ``init() -> StreamAcc``,
``update(acc, state, traj, n_steps) -> StreamAcc`` for each simulated chunk, and
``finalize(acc) -> StreamMetrics``. The accumulator holds running sums only (per replica), so
memory does not grow with the simulated time. :func:`run_stream` drives a simulator chunk by
chunk through a stream, with an ``on_chunk`` callback for writers (trajectory files, tables,
progress); ``evaluate_model`` and the ``simulate`` command both use it.

Resuming: :func:`save_stream_checkpoint` keeps the state and sums after a chunk on disk (an
orbax step per chunk, finalised only when complete) and :func:`load_stream_checkpoint` turns
the newest one into a :class:`Resume` for ``run_stream(..., resume=...)``. A run continued from
a checkpoint produces the same states, frames and sums, bit for bit, as an uninterrupted run
with the same simulator, parameters and chunks.

A frame counts as stable when it is finite (``Trajectory.valid``) and recorded before its
replica's ``first_unstable_step``. h(r) (``observables.distance_distribution``) and the
bond-length distribution (``observables.bond_length_distribution``, 0.5-2.5 A, 0.01 A bins and
smearing) of every stable frame are summed per replica.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stablejax._types import Params
from stablejax.config import HRConfig
from stablejax.data.systems import System
from stablejax.observables.bonds import bond_length_distribution
from stablejax.observables.distances import (
    distance_distribution,
    distance_distribution_target,
    hr_mae,
    make_bins,
    mean_abs_error,
)
from stablejax.simulate.snapshot import state_from_arrays, state_to_arrays
from stablejax.simulate.state import ReplicaState, Simulator, Trajectory
from stablejax.stability.criteria import stability_time_fs

log = logging.getLogger(__name__)

BOND_BINS = make_bins(2.5, 0.01, 0.5)  # the defaults of bond_length_distribution


class StreamAcc(NamedTuple):
    """Running sums over the simulated chunks (host numpy arrays)."""

    h_sum: np.ndarray  # [n_rep, n_hr_bins] f64: sum of h(r) over stable frames
    b_sum: np.ndarray  # [n_rep, n_bond_bins] f64: sum of bond-length distributions
    n_stable_frames: np.ndarray  # [n_rep] f64
    n_frames: np.ndarray  # [n_rep] int64: finite (valid) frames
    max_deviation: np.ndarray  # [n_rep] f64, Angstrom: worst criterion value of valid frames
    # (molecules: the largest bond deviation; periodic liquids: the smallest distance between
    # atoms of different molecules)
    first_unstable_step: np.ndarray  # [n_rep] int, -1 = never
    steps_done: int  # steps simulated per replica


class StreamMetrics(NamedTuple):
    """What :meth:`Stream.finalize` derives from the sums.

    Attributes:
      times_ps: [n_rep] f64 stability time of every replica, ps (censored at ``window_ps``).
      censored: [n_rep] bool, stable over the whole window.
      window_ps: simulated time per replica, ps.
      n_stable_frames: stable frames of all replicas together.
      h_mean, b_mean: [n_bins] f64 h(r) and bond-length distribution pooled over the stable
        frames; None without stable frames (as are the three MAEs).
      hr_mae: h(r) MAE, MDsim convention (dimensionless).
      hr_mean_abs_error: plain mean |h - h_ref|.
      bond_length_distribution_mae: mean |p - p_ref|.
    """

    times_ps: np.ndarray
    censored: np.ndarray
    window_ps: float
    n_stable_frames: int
    h_mean: np.ndarray | None
    b_mean: np.ndarray | None
    hr_mae: float | None
    hr_mean_abs_error: float | None
    bond_length_distribution_mae: float | None


class Stream(NamedTuple):
    """Reducer of simulated chunks; ``h_ref``/``b_ref`` [n_bins] f64 are the reference
    trajectory's distributions and ``hr_centres``/``bond_centres`` the bin centres (Angstrom)."""

    init: Callable[[], StreamAcc]
    update: Callable[[StreamAcc, ReplicaState, Trajectory, int], StreamAcc]
    finalize: Callable[[StreamAcc], StreamMetrics]
    h_ref: np.ndarray
    b_ref: np.ndarray
    hr_centres: np.ndarray
    bond_centres: np.ndarray


def masked_frame_sum(x, mask):
    """Sum of ``x`` [n_rep, n_frames, d] over frames where ``mask`` [n_rep, n_frames].

    ``where``, not a product: a frame that flew apart after its replica failed has no distance
    in the histogram range, so its normalised histogram is NaN, and NaN * 0 is NaN.
    """
    return jnp.where(mask[..., None], x, 0.0).sum(1)


def stable_frames(state: ReplicaState, traj: Trajectory):
    """[n_rep, n_frames] bool: finite frames recorded before the replica's first failure
    (``state`` is the state after the chunk ``traj``)."""
    fus = state.first_unstable_step[:, None]
    return traj.valid & ((fus < 0) | (traj.step < fus))


def make_stream(system: System, reference_positions, *, n_replicas: int, dt_fs: float,
                hr: HRConfig) -> Stream:
    """The evaluation's reducer for ``n_replicas`` replicas of ``system``.

    Args:
      system: bonds of the molecule.
      reference_positions: [n_frames, n_atoms, 3] reference trajectory, Angstrom.
      n_replicas: replicas of the simulation.
      dt_fs: time step, fs (stability times).
      hr: the h(r) settings (range, bin width, smearing).
    """
    from stablejax.evaluate.water import is_periodic_liquid

    if is_periodic_liquid(system):
        return _liquid_stream(n_replicas, dt_fs)
    bonds = np.asarray(system.bonds)
    hr_fn = lambda R: distance_distribution(R, **hr.kwargs())  # noqa: E731

    def bond_hist(R):  # one frame [n_atoms, 3] -> [n_bond_bins], sum 100
        return bond_length_distribution(R, bonds)

    ref = jnp.asarray(reference_positions)
    h_ref = np.asarray(distance_distribution_target(ref, **hr.kwargs()), np.float64)
    b_ref = np.asarray(jax.vmap(bond_hist)(ref).mean(0), np.float64)
    hr_bins = make_bins(hr.r_max_angstrom, hr.dr_angstrom)

    @jax.jit
    def reduce_chunk(positions, stable):
        # positions [n_rep, n_fr, n_atoms, 3]; stable [n_rep, n_fr] -> per-replica sums
        h = jax.vmap(jax.vmap(hr_fn))(positions)
        b = jax.vmap(jax.vmap(bond_hist))(positions)
        return masked_frame_sum(h, stable), masked_frame_sum(b, stable), stable.sum(1)

    def init() -> StreamAcc:
        return StreamAcc(np.zeros((n_replicas, hr_bins.n_bins)),
                         np.zeros((n_replicas, BOND_BINS.n_bins)), np.zeros(n_replicas),
                         np.zeros(n_replicas, np.int64), np.zeros(n_replicas),
                         np.full(n_replicas, -1), 0)

    def update(acc: StreamAcc, state: ReplicaState, traj: Trajectory, n_steps: int) -> StreamAcc:
        hs, bs, ns = reduce_chunk(traj.positions, stable_frames(state, traj))
        valid = np.asarray(traj.valid)
        metric = np.where(valid, np.asarray(traj.metric), 0.0)
        return StreamAcc(acc.h_sum + np.asarray(hs, np.float64),
                         acc.b_sum + np.asarray(bs, np.float64),
                         acc.n_stable_frames + np.asarray(ns),
                         acc.n_frames + valid.sum(1),
                         np.maximum(acc.max_deviation, metric.max(1)),
                         np.asarray(state.first_unstable_step), acc.steps_done + n_steps)

    def finalize(acc: StreamAcc) -> StreamMetrics:
        times_fs, censored = stability_time_fs(jnp.asarray(acc.first_unstable_step), dt_fs,
                                               acc.steps_done)
        total = acc.n_stable_frames.sum()
        h_mean = b_mean = mae = mean_err = b_mae = None
        if total > 0:
            h_mean = acc.h_sum.sum(0) / total
            b_mean = acc.b_sum.sum(0) / total
            mae = float(hr_mae(jnp.asarray(h_mean), jnp.asarray(h_ref)))
            mean_err = float(mean_abs_error(jnp.asarray(h_mean), jnp.asarray(h_ref)))
            b_mae = float(mean_abs_error(jnp.asarray(b_mean), jnp.asarray(b_ref)))
        return StreamMetrics(np.asarray(times_fs, np.float64) / 1000, np.asarray(censored),
                             acc.steps_done * dt_fs / 1000, int(total), h_mean, b_mean, mae,
                             mean_err, b_mae)

    return Stream(init, update, finalize, h_ref, b_ref, hr_bins.centres, BOND_BINS.centres)


class Chunk(NamedTuple):
    """What :func:`run_stream` passes to ``on_chunk`` after each chunk."""

    index: int  # chunk number, from 0
    n_chunks: int  # chunks requested
    state: ReplicaState  # after the chunk
    traj: Trajectory  # the chunk's frames
    acc: StreamAcc  # sums including the chunk
    n_unstable: int  # replicas unstable so far
    stopped: bool  # the run stops early after this chunk


class Resume(NamedTuple):
    """Where a :func:`run_stream` run continues: the state and sums after ``chunks_done``
    chunks, and whether the run had stopped early there."""

    chunks_done: int
    state: ReplicaState
    acc: StreamAcc
    stopped: bool


def run_stream(sim: Simulator, params: Params, state: ReplicaState, stream: Stream, *,
               n_chunks: int, stop_fraction: float = 1.0,
               on_chunk: Callable[[Chunk], None] | None = None, resume: Resume | None = None
               ) -> tuple[ReplicaState, StreamAcc, bool]:
    """Simulate up to ``n_chunks`` chunks, reducing each through ``stream``.

    The next chunk is dispatched before ``on_chunk`` runs, so writers overlap with simulation.
    The run stops early once ``stop_fraction`` of the replicas are unstable. With ``resume``
    the run continues after its ``chunks_done`` chunks (``state`` is then ignored) and calls
    ``on_chunk`` only for the chunks it simulates; a resumed run that had stopped, or had done
    every chunk, returns the resumed state and sums as they are.

    Returns:
      (state after the last chunk, accumulated sums, whether it stopped early).
    """
    acc, stopped, first = stream.init(), False, 0
    if resume is not None:
        state, acc, stopped, first = resume.state, resume.acc, resume.stopped, resume.chunks_done
        if stopped or first >= n_chunks:
            return state, acc, stopped
    n_rep = state.first_unstable_step.shape[0]
    pending = sim.run_chunk_safe(params, state)  # dispatched asynchronously
    for c in range(first, n_chunks):
        state, traj = pending
        acc = stream.update(acc, state, traj, sim.settings.steps_per_chunk)
        n_unstable = int(jnp.sum(state.unstable))
        stopped = n_unstable >= stop_fraction * n_rep and c + 1 < n_chunks
        if c + 1 < n_chunks and not stopped:
            pending = sim.run_chunk_safe(params, state)
        if on_chunk is not None:
            on_chunk(Chunk(c, n_chunks, state, traj, acc, n_unstable, stopped))
        if stopped:
            log.info("simulation stops after %d steps: %d/%d replicas unstable",
                     acc.steps_done, n_unstable, n_rep)
            break
    return state, acc, stopped


def _liquid_stream(n_replicas: int, dt_fs: float) -> Stream:
    """The reducer of a periodic liquid's simulation (``simulate``): stability times, frame
    counts and the smallest intermolecular distance (the per-frame criterion's value); no
    h(r) or bond-length distributions (the water evaluation has RDFs and diffusivity)."""

    def init() -> StreamAcc:
        # h_sum, b_sum: unused placeholders of one bin (orbax keeps no zero-size arrays)
        return StreamAcc(np.zeros((n_replicas, 1)), np.zeros((n_replicas, 1)),
                         np.zeros(n_replicas), np.zeros(n_replicas, np.int64),
                         np.full(n_replicas, np.inf), np.full(n_replicas, -1), 0)

    def update(acc: StreamAcc, state: ReplicaState, traj: Trajectory, n_steps: int) -> StreamAcc:
        valid = np.asarray(traj.valid)
        metric = np.where(valid, np.asarray(traj.metric), np.inf)
        stable = np.asarray(stable_frames(state, traj))
        return StreamAcc(acc.h_sum, acc.b_sum, acc.n_stable_frames + stable.sum(1),
                         acc.n_frames + valid.sum(1), np.minimum(acc.max_deviation,
                                                                 metric.min(1)),
                         np.asarray(state.first_unstable_step), acc.steps_done + n_steps)

    def finalize(acc: StreamAcc) -> StreamMetrics:
        times_fs, censored = stability_time_fs(jnp.asarray(acc.first_unstable_step), dt_fs,
                                               acc.steps_done)
        return StreamMetrics(np.asarray(times_fs, np.float64) / 1000, np.asarray(censored),
                             acc.steps_done * dt_fs / 1000, int(acc.n_stable_frames.sum()),
                             None, None, None, None, None)

    return Stream(init, update, finalize, None, None, None, None)


def save_stream_checkpoint(directory: str | Path, chunk: Chunk, meta: dict | None = None) -> None:
    """Keep the state and sums after ``chunk`` as orbax step ``chunk.index + 1`` of
    ``directory`` (the last two steps are kept). ``meta`` (JSON-able) is stored with it and
    returned by :func:`load_stream_checkpoint`. The step becomes visible only when complete.
    """
    from stablejax.io.checkpoint import save_checkpoint

    arrays, static = state_to_arrays(chunk.state)
    acc = {k: np.asarray(v) for k, v in chunk.acc._asdict().items() if k != "steps_done"}
    info = {"chunks_done": chunk.index + 1, "steps_done": int(chunk.acc.steps_done),
            "stopped": bool(chunk.stopped), "neighbor": static, "extra": meta or {}}
    save_checkpoint(directory, chunk.index + 1, {"state": arrays, "acc": acc}, info,
                    max_to_keep=2)


def load_stream_checkpoint(directory: str | Path, template: ReplicaState, acc_type=None
                           ) -> tuple[Resume, dict] | None:
    """The newest checkpoint of ``directory`` as a :class:`Resume` and its ``meta``; None when
    there is none.

    Args:
      template: a state of the run's simulator (``Simulator.init``'s), for the tree structure.
      acc_type: the stream's sums (a NamedTuple of arrays and ``steps_done``; default
        :class:`StreamAcc`).

    Raises:
      ValueError: the checkpoint does not fit ``template`` (another simulator or replica count).
    """
    from stablejax.io.checkpoint import latest_step, restore_checkpoint

    if latest_step(directory) is None:
        return None
    tree, info = restore_checkpoint(directory)
    state = state_from_arrays(template, tree["state"], info["neighbor"])
    acc = (acc_type or StreamAcc)(**{k: np.asarray(v) for k, v in tree["acc"].items()},
                                  steps_done=int(info["steps_done"]))
    return Resume(int(info["chunks_done"]), state, acc, bool(info["stopped"])), info["extra"]
