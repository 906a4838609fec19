"""`data import` of periodic boxes: molecules found across the boundary, frames wrapped by
molecule, the reference unwrapped, the cell and molecule index in system.json."""

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from stablejax.data import load_dataset
from stablejax.data.importer import ImportConfig, import_dataset
from stablejax.data.water_model import box_edge_angstrom, lattice_box, water_numbers
from stablejax.errors import InputError

N_MOL = 16


def _write_box(path, n_frames=40, *, seed=0, triclinic=False, pbc=True):
    """A 16-molecule water box moving slowly, every atom wrapped on its own (molecules split
    across the boundary), atoms written in a shuffled order; labels are arbitrary numbers."""
    rng = np.random.default_rng(seed)
    edge = box_edge_angstrom(N_MOL, 0.997)
    z = water_numbers(N_MOL)[0]
    R0 = lattice_box(N_MOL, edge, seed)
    cell = np.eye(3) * edge
    if triclinic:
        cell[1, 0] = 0.3 * edge
    order = rng.permutation(len(z))
    frames = []
    for t in range(n_frames):
        R = R0 + 0.004 * t * np.repeat(np.sin(np.arange(N_MOL)), 3)[:, None]  # rigid molecules
        frac = np.linalg.solve(cell.T, R.T).T % 1.0
        a = Atoms(numbers=z[order], positions=(frac @ cell)[order], cell=cell, pbc=pbc)
        a.calc = SinglePointCalculator(a, energy=float(-t - rng.random()),
                                       forces=rng.normal(size=(len(z), 3)))
        frames.append(a)
    ase.io.write(path, frames, format="extxyz")
    return z[order], cell


@pytest.mark.parametrize("triclinic", [False, True])
def test_periodic_extxyz_import(tmp_path, triclinic):
    z, cell = _write_box(tmp_path / "box.extxyz", triclinic=triclinic)
    out = import_dataset(ImportConfig(name="wbox", files=(str(tmp_path / "box.extxyz"),),
                                      temperature_k=300.0, timestep_fs=1.0),
                         out=tmp_path / "ds")
    ds = load_dataset(out.path)
    assert out.summary["periodic"]
    sys_ = ds.system
    np.testing.assert_allclose(sys_.cell, cell, atol=1e-8)
    assert tuple(sys_.pbc) == (True, True, True)
    mol = np.asarray(sys_.molecule_index)
    assert mol.max() + 1 == N_MOL and np.all(np.bincount(mol) == 3)
    for m in range(N_MOL):  # one O and two H per molecule, whatever the atom order
        assert sorted(z[mol == m].tolist()) == [1, 1, 8]
    assert len(sys_.bonds) == 2 * N_MOL
    # wrapped by molecule: every bond has its water length within the stored frames
    for split in (ds.train, ds.test, ds.reference):
        R = split.positions
        d = np.linalg.norm(R[:, sys_.bonds[:, 0]] - R[:, sys_.bonds[:, 1]], axis=-1)
        assert d.max() < 1.2 and d.min() > 0.8
    # the reference trajectory is continuous (unwrapped): no jumps between frames
    step = np.abs(np.diff(ds.reference.positions, axis=0)).max()
    assert step < 0.5


def test_periodic_import_refusals(tmp_path):
    _write_box(tmp_path / "part.extxyz", n_frames=10, pbc=(True, True, False))
    with pytest.raises(InputError, match="partly periodic"):
        import_dataset(ImportConfig(name="p", files=(str(tmp_path / "part.extxyz"),)),
                       out=tmp_path / "o1")
