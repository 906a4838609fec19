"""The Python quickstart on ethanol (a small built-in molecule): data, pre-training, StABlE,
then the trained potential in JAX-MD and ASE. About a minute on 2 CPU cores; it writes
runs/quickstart-stable under the current directory and caches the data in $STABLEJAX_DATA."""
import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from jax_md import simulate

import stablejax
from stablejax.data import generate_dataset, load_dataset, scale_config
from stablejax.train import (spec_from_data, PretrainConfig, PretrainState, TrainConfig,
                             make_problem, TrainState, Phase)
from stablejax.units import FS, kT_ev

if __name__ == "__main__":  # data generation starts worker processes, which re-import this file
    # 1. GFN2-xTB reference data (cached, resumable)
    ds = load_dataset(generate_dataset(scale_config("ethanol", "demo")))
    print(f"data: {ds.train.n_frames} training frames of {ds.system.name} in {ds.path}")

    # 2. A small SchNet normalised on the training data, pre-trained on energies + forces
    spec = spec_from_data("schnet", ds.train, n_interactions=1, hidden_features=32, n_filters=32)
    model = spec.build()
    pcfg = PretrainConfig.schnet(max_epochs=10, batch_size=10, warmup_steps=50)
    pstate = PretrainState.create(model, jax.random.PRNGKey(0), ds.train.positions[0], pcfg)
    pstate = stablejax.pretrain(pstate, pcfg, ds.train, ds.val)
    print(f"pre-training: best epoch {int(pstate.best_epoch)}, "
          f"validation loss {float(pstate.best_val_loss):.3f}")

    # 3. StABlE training: the paper's settings for a molecule at the data's temperature and
    #    time step, made small (8 replicas, epochs of 500 steps with a frame every 50);
    #    nested configs are given as dicts.
    cfg = TrainConfig.molecule(ds.system.temperature_k, ds.system.timestep_fs,
                               n_replicas=8, epoch_ps=0.25, n_epochs=4,
                               md={"frame_interval_fs": 50 * ds.system.timestep_fs})
    problem = make_problem(model, ds.system, ds.train, ds.reference.positions, cfg)
    state = TrainState.create(problem, pstate.best_params, cfg)
    state = stablejax.train(state, cfg, run_dir="runs/quickstart-stable")  # checkpointed, resumable
    print(f"StABlE: {int(state.epoch)} epochs, ends in the {Phase(int(state.phase)).name.lower()} "
          f"phase, unstable fraction {state.unstable_fraction:.2f}")

    # 4. The trained potential in JAX-MD: 0.5 ps of NVT Langevin dynamics
    pot = stablejax.bind_model(spec, state.params)  # pot.energy_fn(R) -> eV
    init_fn, step_fn = simulate.nvt_langevin(pot.energy_fn, pot.shift_fn, dt=0.5 * FS,
                                             kT=kT_ev(ds.system.temperature_k), gamma=1e-3 / FS)
    R0 = jnp.asarray(ds.system.equilibrium_positions, pot.dtype)
    md = init_fn(jax.random.PRNGKey(1), R0, mass=pot.masses)
    md = jax.lax.fori_loop(0, 1000, lambda i, s: step_fn(s), md)
    R, (i, j) = np.asarray(md.position), ds.system.bonds.T
    bond_error = np.abs(np.linalg.norm(R[i] - R[j], axis=1) - ds.system.reference_bond_lengths)
    print(f"JAX-MD: after 0.5 ps at {ds.system.temperature_k:g} K, energy "
          f"{float(pot.energy_fn(md.position)):.3f} eV, largest bond-length error "
          f"{bond_error.max():.2f} A")

    # 5. ... and as an ASE calculator
    atoms = Atoms(numbers=ds.system.atomic_numbers, positions=ds.system.equilibrium_positions)
    atoms.calc = stablejax.Calculator.from_model(spec, state.params)
    print(f"ASE: energy {atoms.get_potential_energy():.3f} eV, "
          f"max |force| {abs(atoms.get_forces()).max():.3f} eV/A")
