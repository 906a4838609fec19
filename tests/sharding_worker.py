"""Runs in a subprocess started by tests/test_sharding.py with several host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before JAX starts): the same
computations on meshes of 1 and the given device counts in one dtype, printed as one JSON object:
``<name>_<k>`` = largest difference between the k-device and the 1-device result, relative to
the largest entry of the 1-device result. ``SHARDING_RESUME=0`` skips the StABlE checkpoint
saved on one device count and resumed on another.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/sharding_worker.py float32 1,2,4
"""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

warnings.filterwarnings("ignore")
DTYPE = sys.argv[1] if len(sys.argv) > 1 else "float64"
if DTYPE == "float64":
    jax.config.update("jax_enable_x64", True)

from stablejax.estimator import boltzmann_loss  # noqa: E402
from stablejax.estimator.localized import (  # noqa: E402
    all_environments,
    bond_length_observable,
    localized_boltzmann_loss,
    molecule_bonds,
)
from stablejax.models import GemNetTConfig, SchNetConfig, lennard_jones_model, make_model  # noqa: E402
from stablejax.sharding import make_mesh  # noqa: E402
from stablejax.simulate import make_simulator  # noqa: E402

COUNTS = [int(k) for k in (sys.argv[2] if len(sys.argv) > 2 else "1,2,4").split(",")]
MESHES = {k: make_mesh(k) for k in sorted(set(COUNTS) | {1})}


def rel(a, b) -> float:
    a = np.asarray(jax.flatten_util.ravel_pytree(a)[0], np.float64)
    b = np.asarray(jax.flatten_util.ravel_pytree(b)[0], np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def lj_trajectories() -> dict:
    """6 Langevin replicas (not a multiple of 4: padded) of a periodic LJ fluid, 40 steps."""
    k = 3
    cell = np.array([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
    grid = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    n = 4 * k**3
    box = (n / 0.8) ** (1 / 3) * 3.405
    R = ((grid + cell[None]).reshape(-1, 3) + 0.25) * (box / k)
    model = lennard_jones_model(box=box, sigma=3.405, epsilon=0.0104, capacity_multiplier=1.5,
                                dtype=DTYPE)
    params = model.init(None, R)
    out = {}
    for k, mesh in MESHES.items():
        sim = make_simulator(model.energy_fn, masses=np.full(n, 39.948), dt_fs=5.0, n_dump=5,
                             integrator="langevin", temperature_k=120.0,
                             displacement_fn=model.displacement_fn, shift_fn=model.shift_fn,
                             neighbor_fn=model.neighbor_fn, frames_per_chunk=4, mesh=mesh)
        R0 = jnp.broadcast_to(jnp.asarray(R, DTYPE), (6, n, 3))
        state = sim.init(params, R0, jax.random.PRNGKey(0))
        state, traj = sim.run(params, state, 40)
        out[k] = (traj.positions, traj.kinetic_energy, state.md.momentum)
        assert traj.positions.shape[0] == 6 and state.n_replicas == 6
    return {f"trajectory_{k}": out[k] for k in MESHES}


def global_estimator() -> dict:
    """Forces, energies and both scalings' gradients on 13 random frames of a tiny SchNet
    molecule (13: not a multiple of 2 or 4)."""
    cfg = SchNetConfig(cutoff_angstrom=4.0, hidden_features=8, n_filters=8, n_interactions=1,
                       n_gaussians=8, param_dtype=DTYPE)
    z = np.array([6, 6, 8, 1, 1, 1])
    rng = np.random.default_rng(0)
    R0 = rng.normal(scale=1.0, size=(6, 3))
    model = make_model(cfg, z)
    params = model.init(jax.random.PRNGKey(1), jnp.asarray(R0, DTYPE))
    X = jnp.asarray(R0[None] + 0.1 * rng.normal(size=(13, 6, 3)), DTYPE)

    def obs(R):
        d = jnp.linalg.norm(R[:, None] - R[None] + jnp.eye(6)[..., None], axis=-1)
        return jnp.stack([jnp.mean(d), jnp.max(d)])

    out = {}
    for k, mesh in MESHES.items():
        res = {}
        for scaling in ("physical", "reference"):
            def loss(p, scaling=scaling, mesh=mesh):
                return boltzmann_loss(p, X, energy_fn=model.energy_fn, observable_fn=obs,
                                      target=jnp.array([1.5, 3.0], DTYPE), kT=0.0431,
                                      scaling=scaling, block_size=4, chunk_size=3,
                                      key=jax.random.PRNGKey(3), mesh=mesh)
            res[scaling] = jax.jit(jax.value_and_grad(loss))(params)
        ef = jax.vmap(jax.value_and_grad(model.energy_fn, argnums=1), (None, 0))
        from stablejax._frames import map_frames

        res["energy_forces"] = jax.jit(lambda p, mesh=mesh: map_frames(
            lambda R: ef(p, R[None]), X, 4, mesh))(params)
        out[k] = res
    return {f"{name}_{k}": out[k][name] for k in MESHES
            for name in ("physical", "reference", "energy_forces")}


def localized_estimator() -> dict:
    """The localized estimator's gradient (both scalings) on 3 frames of a 4-molecule periodic
    box with a tiny GemNet-T."""
    cfg = GemNetTConfig(cutoff_angstrom=2.5, n_blocks=1, emb_size_atom=8, emb_size_edge=8,
                        emb_size_rbf=4, emb_size_cbf=4, emb_size_trip=4, emb_size_bil_trip=4,
                        num_radial=3, num_spherical=3, num_atom=1, num_after_skip=1,
                        output_init="heorthogonal", param_dtype=DTYPE)
    side = 5.2
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 1.0, 1.0], [3.6, 1.2, 3.5], [1.3, 3.7, 3.2], [3.8, 3.9, 1.4]])
    z, R = [], []
    for c in centres:
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        w = np.cross(u, rng.normal(size=3))
        w /= np.linalg.norm(w)
        a = np.deg2rad(52.25)
        z += [8, 1, 1]
        R += [c, c + 0.96 * (np.cos(a) * u + np.sin(a) * w),
              c + 0.96 * (np.cos(a) * u - np.sin(a) * w)]
    z, R = np.array(z), np.array(R)
    mol = np.repeat(np.arange(4), 3)
    bonds = np.array([(3 * m, 3 * m + h) for m in range(4) for h in (1, 2)])
    model = make_model(cfg, z, box=side, avg_num_neighbors=4.0, capacity_multiplier=2.0)
    X = jnp.asarray(np.mod(R[None] + 0.06 * rng.normal(size=(3,) + R.shape), side), DTYPE)
    params = model.init(jax.random.PRNGKey(0), X[0])
    nbrs = model.neighbor_fn.allocate(X[0])

    def per_atom(p, R):
        return model.per_atom_energy_fn(p, R, neighbor=nbrs.update(R))

    obs = bond_length_observable(molecule_bonds(bonds, mol), side)
    env = all_environments(3, 4)
    out = {}
    for k, mesh in MESHES.items():
        res = {}
        for scaling in ("physical", "reference"):
            def loss(p, scaling=scaling, mesh=mesh):
                return localized_boltzmann_loss(
                    p, X, env, per_atom_energy_fn=per_atom, observable_fn=obs,
                    molecule_index=mol, target=jnp.array([0.97, 0.99], DTYPE), kT=0.0259,
                    scaling=scaling, chunk_size=1, key=jax.random.PRNGKey(2), mesh=mesh)
            res[scaling] = jax.jit(jax.value_and_grad(loss))(params)
        out[k] = res
    return {f"localized_{name}_{k}": out[k][name] for k in MESHES
            for name in ("physical", "reference")}


def qm_gradient() -> dict:
    """The energy/force loss and its gradient (pre-training, StABlE's QM term) on a batch of
    5 labelled frames (padded to the device count with weight-0 frames)."""
    from stablejax.models.frames import Batch
    from stablejax.train.losses import LossScales, QMLossConfig, qm_value_and_grad

    cfg = SchNetConfig(cutoff_angstrom=4.0, hidden_features=8, n_filters=8, n_interactions=1,
                       n_gaussians=8, param_dtype=DTYPE)
    z = np.array([6, 6, 8, 1, 1, 1])
    rng = np.random.default_rng(5)
    R = jnp.asarray(rng.normal(size=(6, 3))[None] + 0.1 * rng.normal(size=(5, 6, 3)), DTYPE)
    model = make_model(cfg, z)
    params = model.init(jax.random.PRNGKey(1), R[0])
    other = model.init(jax.random.PRNGKey(2), R[0])
    e, g = jax.vmap(jax.value_and_grad(model.energy_fn, argnums=1), (None, 0))(other, R)
    batch = Batch(R, e, -g, jnp.asarray([1, 1, 1, 1, 0], DTYPE))  # last frame: padding
    out = {}
    for k, mesh in MESHES.items():
        for loss in ("mse", "l2mae"):
            qcfg = QMLossConfig(0.1, 0.9, force_loss=loss)
            out[f"qm_{loss}_{k}"] = jax.jit(lambda p, mesh=mesh, qcfg=qcfg: qm_value_and_grad(
                p, batch, energy_fn=model.energy_fn, cfg=qcfg, scales=LossScales(1.0, 2.0),
                mesh=mesh))(params)
    return out


def stable_run() -> dict:
    """Three StABlE epochs (simulation, then learning) of the LJ fluid of tests/lj_fluid.py
    with 6 replicas (padded on 4 devices): the phase decisions must be the same on every
    device count ("phases_<k>" is 0.0 when they are) and the parameters equal."""
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import lj_fluid as L
    from jax_md import space

    from stablejax.stability.criteria import min_intermolecular_distance_criterion
    from stablejax.train import TrainState, train

    import tempfile

    lj = L.make_lj()
    disp, shift = space.periodic(L.BOX)
    criterion = min_intermolecular_distance_criterion(np.arange(L.N_ATOMS),
                                                      threshold_angstrom=L.THRESHOLD, cell=L.BOX)
    cfg = L.base_cfg(n_replicas=6, n_epochs=3, stable_epochs=None)

    @functools.cache
    def problem_on(mesh):
        sim = make_simulator(L.lj_energy, masses=np.full(L.N_ATOMS, L.MASS), dt_fs=L.DT_FS,
                             n_dump=L.N_DUMP, integrator="nose_hoover",
                             temperature_k=L.TEMPERATURE_K, displacement_fn=disp,
                             shift_fn=shift, criterion=criterion,
                             frames_per_chunk=L.FRAMES_PER_CHUNK, mesh=mesh)
        return lj.problem._replace(simulator=sim, mesh=mesh)

    def run(mesh, cfg, records, run_dir=None):
        state = TrainState.create(problem_on(mesh), {"sigma": jnp.asarray(2.2, DTYPE)}, cfg)
        return train(state, cfg, run_dir=run_dir, progress=lambda d, t, i: records.append(
            (i["phase"], i["unstable_fraction"])) if "phase" in i else None)

    out, phases = {}, {}
    for k, mesh in MESHES.items():
        phases[k] = []
        out[f"stable_params_{k}"] = run(mesh, cfg, phases[k]).params
    assert [p for p, _ in phases[1]][:2] == ["simulation", "learning"], phases[1]
    for k in MESHES:
        out[f"phases_{k}"] = jnp.asarray(0.0 if phases[k] == phases[1] else 1.0)
    if os.environ.get("SHARDING_RESUME", "1") == "0":
        return out
    # checkpoints: 2 epochs on k devices, resumed for the third on 1 device, and the reverse
    two = L.base_cfg(n_replicas=6, n_epochs=2, stable_epochs=None)
    for k, mesh in MESHES.items():
        if k == 1:
            continue
        for first, then, name in ((mesh, MESHES[1], f"saved_on_k_resumed_on_1_{k}"),
                                  (MESHES[1], mesh, f"saved_on_1_resumed_on_k_{k}")):
            with tempfile.TemporaryDirectory() as d:
                run(first, two, [], run_dir=d)
                out[name] = run(then, cfg, [], run_dir=d).params
    out["saved_on_k_resumed_on_1_1"] = out["stable_params_1"]
    out["saved_on_1_resumed_on_k_1"] = out["stable_params_1"]
    return out


def main() -> None:
    assert len(jax.devices()) >= 4, "start with XLA_FLAGS=--xla_force_host_platform_device_count=4"
    out = {}
    # trajectories in float64 only: MD is chaotic, float32 rounding differences grow
    parts = (lj_trajectories, stable_run) if DTYPE == "float64" else ()
    for part in parts + (global_estimator, localized_estimator, qm_gradient):
        out.update(part())
    result = {"dtype": DTYPE, "devices": len(jax.devices())}
    for key, value in out.items():
        name, k = key.rsplit("_", 1)
        if k != "1":
            result[key] = rel(value, out[f"{name}_1"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
