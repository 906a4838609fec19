"""The LJ fluid shared by the training tests (``tests/test_train.py``, ``tests/test_learn.py``,
``tests/test_train_periodic.py``; the fixture ``lj`` in ``conftest.py`` builds it once).

System: a periodic Lennard-Jones fluid of 16 argon-like atoms (mass 39.95 amu, epsilon 0.0104 eV,
true sigma 3.4 Angstrom) at reduced density 0.6 and 180 K (T* ~ 1.5, a dense supercritical
fluid), Nose-Hoover, dt 5 fs. A replica is unstable when two atoms come closer than
0.75 sigma_true = 2.55 Angstrom (``min_intermolecular_distance_criterion``, each atom its own
molecule): with the true sigma no pair gets there (the LJ energy at 0.75 sigma is ~ 50 kT), with
sigma = 2.2 Angstrom every replica crosses it within 100 fs, with 2.8 Angstrom about half do
within 0.5 ps. The StABlE target is the pair-distance distribution h(r) (minimum image) of a
simulation with the true sigma.

The energy is our own LJ over i < j pairs with a smooth cutoff at L/2 (minimum image): its
gradient with respect to sigma is finite (JAX-MD's ``lennard_jones_pair`` currently gives NaN
sigma gradients through the i == i self pair). Everything is float32 and deterministic (fixed
keys).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import space

from stablejax.config import MDConfig, replace
from stablejax.models import Model
from stablejax.observables.distances import distance_distribution, distance_distribution_target
from stablejax.simulate import make_simulator
from stablejax.stability.criteria import min_intermolecular_distance_criterion
from stablejax.train import Problem, TrainConfig, make_stable
from stablejax.train.losses import LossScales
from stablejax.train.stable_config import EstimatorConfig, OptimizerConfig, PhaseConfig
from stablejax.units import kT_ev

SIGMA_TRUE = 3.4  # Angstrom
EPSILON = 0.0104  # eV (argon, 120.7 K)
MASS = 39.95  # amu
N_ATOMS = 16  # bcc 2x2x2
RHO_REDUCED = 0.6  # N sigma^3 / V
BOX = SIGMA_TRUE * (N_ATOMS / RHO_REDUCED) ** (1 / 3)  # 10.16 Angstrom
R_CUT = BOX / 2
TEMPERATURE_K = 180.0
DT_FS = 5.0
N_DUMP = 20
FRAMES_PER_CHUNK = 5  # 100 steps = 0.5 ps per chunk and per epoch
N_REPLICAS = 8
THRESHOLD = 0.75 * SIGMA_TRUE  # 2.55 Angstrom
HR = dict(r_max=5.0, dr=0.1, sigma=0.1, cell=BOX)  # r_max < L/2: minimum image is exact

_I, _J = np.triu_indices(N_ATOMS, k=1)


def lj_energy(params, R, **kwargs):
    """LJ energy (eV) over i < j minimum-image pairs, shifted and smoothly switched to 0 at L/2.

    Pairs beyond the cutoff are evaluated at r = r_cut (finite values) before being masked, so
    neither the force nor d/dsigma can pick up a NaN.
    """
    del kwargs
    d = R[_I] - R[_J]
    d = d - BOX * jnp.round(d / BOX)
    r2 = jnp.sum(d * d, axis=-1)
    inside = r2 < R_CUT**2
    r2 = jnp.where(inside, r2, R_CUT**2)
    s2 = params["sigma"] ** 2
    s6, s6_cut = (s2 / r2) ** 3, (s2 / R_CUT**2) ** 3
    u = 4 * EPSILON * ((s6 * s6 - s6) - (s6_cut * s6_cut - s6_cut))
    switch = (1 - r2 / R_CUT**2) ** 2
    return jnp.sum(jnp.where(inside, u * switch, 0.0))


def bcc_replicas() -> jax.Array:
    """[N_REPLICAS, 16, 3] copies of the 2x2x2 bcc lattice filling the box (float32)."""
    a = BOX / 2
    cube = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], float)
    lattice = np.concatenate([cube * a, (cube + 0.5) * a])
    return jnp.tile(jnp.asarray(lattice, jnp.float32), (N_REPLICAS, 1, 1))


def sig(value: float) -> dict:
    return {"sigma": jnp.asarray(value, jnp.float32)}


def base_cfg(**overrides) -> TrainConfig:
    """Phase-machine settings for the LJ fluid: 8 replicas x 0.5 ps epochs, 5 frames each.

    learning_rate 0.3 with clip norm 1: the one-parameter gradient is (much) larger than 1, so
    each learning step moves sigma by ~0.3 Angstrom in the estimator's direction.
    """
    base = TrainConfig(
        md=MDConfig(integrator="nose_hoover", temperature_k=TEMPERATURE_K, dt_fs=DT_FS,
                    frame_interval_fs=N_DUMP * DT_FS),
        n_replicas=N_REPLICAS, epoch_ps=N_DUMP * FRAMES_PER_CHUNK * DT_FS / 1000,
        estimator=EstimatorConfig(scaling="reference", block_size=8, chunk_size=40),
        optimizer=OptimizerConfig(learning_rate=0.3, qm_weight=0.0, plateau_patience=10),
        phases=PhaseConfig(max_frac_unstable=0.5, min_frac_unstable=0.0, max_lr_reductions=3,
                           reset_probability=0.0, n_checkpoints_kept=4),
        n_epochs=30, stable_epochs=3, seed=0)
    return replace(base, overrides)


@dataclasses.dataclass(frozen=True)
class LJ:
    problem: Problem
    reference_unstable: np.ndarray  # [n_replicas] of the true-sigma reference run
    reference_min_distance: float  # Angstrom, over all reference frames


def make_lj() -> LJ:
    """The fluid, its simulator, the true-sigma reference run and the StABlE problem."""
    warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
    disp, shift = space.periodic(BOX)
    criterion = min_intermolecular_distance_criterion(np.arange(N_ATOMS),
                                                      threshold_angstrom=THRESHOLD, cell=BOX)
    sim = make_simulator(lj_energy, masses=np.full(N_ATOMS, MASS), dt_fs=DT_FS, n_dump=N_DUMP,
                         integrator="nose_hoover", temperature_k=TEMPERATURE_K,
                         displacement_fn=disp, shift_fn=shift, criterion=criterion,
                         frames_per_chunk=FRAMES_PER_CHUNK)
    # Reference: melt a bcc lattice with the true sigma for 3 ps, then record 2 ps (20 frames
    # per replica); the criterion is checked over the whole 5 ps.
    state = sim.init(sig(SIGMA_TRUE), bcc_replicas(), jax.random.PRNGKey(42))
    state, traj = sim.run(sig(SIGMA_TRUE), state, 1000)
    frames = traj.positions[:, 30:]  # [8, 20, 16, 3]
    target = np.asarray(distance_distribution_target(frames, **HR))
    observable_fn = functools.partial(distance_distribution, **HR)
    model = Model(init=lambda key, R, **kw: sig(SIGMA_TRUE), energy_fn=lj_energy,
                  per_atom_energy_fn=None, neighbor_fn=None, displacement_fn=disp,
                  shift_fn=shift)
    starts = np.asarray(frames[:, ::10].reshape(-1, N_ATOMS, 3))  # 16 decorrelated structures
    problem = Problem(model=model, simulator=sim, observable_fn=observable_fn, target=target,
                      qm_batches=None, qm_scales=LossScales(1.0, 1.0),
                      kT_ev=kT_ev(TEMPERATURE_K), system=None, initial_positions=starts)
    return LJ(problem, np.asarray(state.unstable), float(jnp.min(traj.metric)))


def tree_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


_FNS: dict = {}


def fns_for(problem, cfg):
    """make_stable per (problem, config), built once per module (each compiles a learn step)."""
    key = (id(problem), cfg)
    if key not in _FNS:
        _FNS[key] = make_stable(problem, cfg)
    return _FNS[key]


def epoch(state, cfg):
    """One epoch of ``state`` with the functions of ``cfg`` (the state's shapes must fit)."""
    return fns_for(state.fns.problem, cfg).epoch(state)


def run_epochs(state, cfg, n):
    records = []
    for _ in range(n):
        state, rec = epoch(state, cfg)
        records.append(rec)
    return state, records


def force_unstable(state, n_unstable: int):
    """The same state, with the first ``n_unstable`` replicas marked unstable last epoch (and
    in the simulation phase so far)."""
    mask = np.zeros(state.last_unstable.shape[0], bool)
    mask[:n_unstable] = True
    return state.replace(last_unstable=jnp.asarray(mask), phase_unstable=jnp.asarray(mask))
