"""The ASE calculator and the JAX-MD binding of a trained model (stablejax.calculator, .loading)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import units
from ase.build import bulk, molecule
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from jax_md import simulate, space

from stablejax import Calculator, bind_model, load_model
from stablejax.errors import InputError
from stablejax.io.run_dir import RunDir
from stablejax.models import SchNetConfig, lennard_jones_model
from stablejax.train.model_spec import ModelSpec
from stablejax.units import FS, kT_ev

TINY = SchNetConfig(cutoff_angstrom=4.0, hidden_features=8, n_filters=8, n_interactions=1,
                    n_gaussians=8)


def ethanol():
    return molecule("CH3CH2OH")  # C C O H H H H H H


def ethanol_spec(param_dtype="float32"):
    return ModelSpec(kind="schnet", config=dataclasses.asdict(TINY) | {"param_dtype": param_dtype},
                     atomic_numbers=tuple(int(z) for z in ethanol().numbers),
                     energy_shift={1: -0.5, 6: -1.0, 8: -2.0}, energy_scale=0.2)


def init_params(spec, atoms):
    return spec.build().init(jax.random.PRNGKey(0), jnp.asarray(atoms.positions, jnp.float32))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A pre-training run directory (model.json + best/) of an untrained tiny SchNet."""
    spec = ethanol_spec()
    rd = RunDir(tmp_path_factory.mktemp("calc") / "run").mkdir()
    spec.save(rd.model_spec_path)
    rd.save_params("best", 0, init_params(spec, ethanol()))
    return rd.path


def rattled(seed=1):
    atoms = ethanol()
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_calculator_matches_the_model(run_dir):
    from stablejax.pipeline import load_model_dir

    atoms = rattled()
    atoms.calc = Calculator(run_dir)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    _, model, params = load_model_dir(run_dir)
    R = jnp.asarray(atoms.positions, jnp.float32)
    assert forces.dtype == np.float64
    np.testing.assert_allclose(energy, float(model.energy_fn(params, R)), rtol=1e-6)
    np.testing.assert_allclose(forces, -jax.grad(model.energy_fn, argnums=1)(params, R),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), energy, rtol=1e-6)
    atoms.rattle(0.01, seed=2)
    atoms.get_forces()  # new positions: same compiled function
    assert atoms.calc._evaluate._cache_size() == 1
    other = rattled()
    other.calc = Calculator.from_model(ModelSpec.load(run_dir / "model.json"), params)
    np.testing.assert_allclose(other.get_potential_energy(), energy, rtol=1e-6)


def test_relative_run_directory(run_dir, monkeypatch):
    monkeypatch.chdir(run_dir.parent)
    atoms = rattled()
    atoms.calc = Calculator(run_dir.name)
    m = load_model(run_dir.name)
    R = jnp.asarray(atoms.positions, m.dtype)
    np.testing.assert_allclose(atoms.get_potential_energy(), float(m.energy_fn(R)), rtol=1e-6)


def test_forces_are_central_differences_of_the_energy(x64):
    spec = ethanol_spec("float64")
    atoms = rattled()
    atoms.calc = Calculator(model=spec, params=init_params(spec, atoms))
    forces = atoms.get_forces()
    h = 1e-4
    numeric = np.zeros_like(forces)
    for i, k in np.ndindex(forces.shape):
        e = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = atoms.calc
            moved.positions[i, k] += sign * h
            e.append(moved.get_potential_energy())
        numeric[i, k] = -(e[0] - e[1]) / (2 * h)
    assert np.abs(forces).max() > 1e-3
    np.testing.assert_allclose(forces, numeric, atol=1e-7)


def test_ase_nve_conserves_energy(run_dir):
    atoms = ethanol()
    atoms.calc = Calculator(run_dir)
    thermalize_momenta(atoms, temperature_K=300.0, rng=np.random.default_rng(0))
    total = []
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.attach(lambda: total.append(atoms.get_total_energy()), interval=1)
    dyn.run(50)
    assert np.all(np.isfinite(total))
    assert np.ptp(total) < 1e-4, np.ptp(total)


def test_atoms_in_another_order_are_refused(run_dir):
    reversed_atoms = rattled()[::-1]
    reversed_atoms.calc = Calculator(run_dir)
    with pytest.raises(InputError, match=r"atoms: atom 0 is H but the model expects C .*"
                                         r"atom_order='by_species'"):
        reversed_atoms.get_potential_energy()
    with pytest.raises(InputError, match="atom 0 is H but the model expects C"):
        load_model(run_dir, atomic_numbers=reversed_atoms.numbers)
    other = rattled()
    other.numbers[3] = 6
    other.calc = Calculator(run_dir, atom_order="by_species")
    with pytest.raises(InputError, match=r"composition .*H 5 \(model 6\), C 3 \(model 2\)"):
        other.get_potential_energy()
    periodic = rattled()
    periodic.cell, periodic.pbc = [12.0, 12.0, 12.0], True
    periodic.calc = Calculator(run_dir)
    with pytest.raises(InputError, match="model is for a free molecule"):
        periodic.get_potential_energy()
    with pytest.raises(InputError, match="atom_order must be one of"):
        Calculator(run_dir, atom_order="sorted")


def test_by_species_maps_atoms_in_another_order(run_dir):
    atoms = rattled()
    atoms.calc = Calculator(run_dir)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    per_atom = atoms.get_potential_energies()
    shuffled = np.random.default_rng(3).permutation(len(atoms))
    for order in (np.arange(len(atoms))[::-1], shuffled):
        moved = atoms[order]
        moved.calc = Calculator(run_dir, atom_order="by_species")
        np.testing.assert_allclose(moved.get_potential_energy(), energy, rtol=1e-6)
        np.testing.assert_allclose(moved.get_forces(), forces[order], atol=1e-5)
        np.testing.assert_allclose(moved.get_potential_energies(), per_atom[order], atol=1e-5)
        m = load_model(run_dir, atomic_numbers=moved.numbers, atom_order="by_species")
        np.testing.assert_array_equal(moved.numbers[m.permutation], atoms.numbers)
        R = jnp.asarray(moved.positions, m.dtype)
        np.testing.assert_allclose(float(jax.jit(m.energy_fn)(R)), energy, rtol=1e-6)
        np.testing.assert_allclose(-jax.grad(m.energy_fn)(R), forces[order], atol=1e-5)


def test_jax_md_langevin_with_the_loaded_model(run_dir):
    m = load_model(run_dir)
    assert m.permutation is None and not m.periodic and m.species == (1, 6, 8)
    np.testing.assert_allclose(m.masses[:3], [12.011, 12.011, 15.999], rtol=1e-4)
    R0 = jnp.asarray(ethanol().positions, m.dtype)
    _, shift_fn = space.free()
    init_fn, step_fn = simulate.nvt_langevin(m.energy_fn, shift_fn, dt=0.5 * FS,
                                             kT=kT_ev(300.0), gamma=1e-3 / FS)
    state = init_fn(jax.random.PRNGKey(0), R0, mass=m.masses)
    state = jax.jit(lambda s: jax.lax.fori_loop(0, 300, lambda i, s: step_fn(s), s))(state)
    assert np.all(np.isfinite(state.position))
    assert np.isfinite(float(m.energy_fn(state.position)))
    assert float(jnp.abs(state.position - R0).max()) > 1e-3  # it moved


def test_periodic_model_uses_the_atoms_cell():
    cell = bulk("Ar", "fcc", a=3.4, cubic=True).repeat(2)  # 32 atoms, 6.8 Angstrom cube
    cell.rattle(0.1, seed=0)
    config = dataclasses.asdict(TINY) | {"cutoff_angstrom": 3.0}
    spec = ModelSpec(kind="schnet", config=config, atomic_numbers=(18,) * 32,
                     energy_shift={18: -0.1}, energy_scale=0.1, box=cell.cell.array.T.tolist())
    params = init_params(spec, cell)
    cell.calc = Calculator(model=spec, params=params)
    energy, forces = cell.get_potential_energy(), cell.get_forces()
    m = bind_model(spec, params)
    R = jnp.asarray(cell.positions, jnp.float32)
    nbrs = m.neighbor_fn.allocate(R)
    np.testing.assert_allclose(energy, float(m.energy_fn(R, neighbor=nbrs)), rtol=1e-6)
    assert np.abs(forces).max() > 1e-4
    supercell = cell.repeat((2, 1, 1))
    supercell.calc = Calculator(model=spec, params=params)
    np.testing.assert_allclose(supercell.get_potential_energy(), 2 * energy, rtol=1e-5)
    np.testing.assert_allclose(supercell.get_forces(), np.tile(forces, (2, 1)), atol=1e-5)
    free = cell.copy()
    free.pbc = False
    free.calc = Calculator(model=spec, params=params)
    with pytest.raises(InputError, match="model is for a periodic box"):
        free.get_potential_energy()


def test_bare_model_with_its_atoms():
    model = lennard_jones_model(sigma=3.4, epsilon=0.01)
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True)
    atoms.pbc = False
    params = model.init(None, None)
    atoms.calc = Calculator.from_model(model, params, atomic_numbers=[18] * 4)
    R = jnp.asarray(atoms.positions, jnp.float32)
    np.testing.assert_allclose(atoms.get_potential_energy(), float(model.energy_fn(params, R)),
                               rtol=1e-6)
    np.testing.assert_allclose(atoms.get_potential_energies().sum(),
                               atoms.get_potential_energy(), rtol=1e-6)
    with pytest.raises(InputError, match="a bare Model needs atomic_numbers"):
        Calculator.from_model(model, params)
    with pytest.raises(InputError, match="by_species' needs the model's ModelSpec"):
        Calculator.from_model(model, params, atomic_numbers=[18] * 4, atom_order="by_species")
    atoms.numbers[0] = 36
    with pytest.raises(InputError, match="atom 0 is Kr but the model expects Ar"):
        atoms.get_potential_energy()
