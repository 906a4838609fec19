"""Periodic molecular liquids: cell checks, minimum image, molecules, whole/wrapped frames,
periodic readers."""

import itertools

import numpy as np
import pytest

from stablejax.data.periodic import (
    bonds_periodic,
    cell_heights,
    check_cell,
    check_water,
    make_whole,
    minimum_image,
    molecule_index,
    unwrap_trajectory,
    wrap_by_molecule,
)
from stablejax.errors import InputError
from stablejax.io.ase_io import read_ase
from stablejax.io.npz import read_npz

TRICLINIC = np.array([[9.3, 0.0, 0.0], [2.0, 9.3, 0.0], [1.0, 1.5, 9.3]])
SKEWED = np.array([[10.0, 0.0, 0.0], [4.9, 10.0, 0.0], [-4.5, 4.0, 10.0]])


def _rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def water_box(cell, seed=0, n_side=3):
    """(wrapped positions, atomic numbers, true molecule of each atom), atoms shuffled.

    Oxygens sit on the faces of the cell (fractional 0), so most molecules are split by the
    atom-wise wrap; atom order is shuffled across molecules."""
    rng = np.random.default_rng(seed)
    theta = np.deg2rad(104.5)
    local = 0.98 * np.array([[0, 0, 0], [1, 0, 0], [np.cos(theta), np.sin(theta), 0]])
    R, z, mol = [], [], []
    for m, ijk in enumerate(itertools.product(range(n_side), repeat=3)):
        centre = (np.array(ijk) / n_side) @ cell
        R.append(centre + local @ _rotation(rng).T)
        z += [8, 1, 1]
        mol += [m] * 3
    R = np.concatenate(R)
    s = R @ np.linalg.inv(cell)
    R = (s - np.floor(s)) @ cell  # wrapped by atom
    order = rng.permutation(len(R))
    return R[order], np.array(z)[order], np.array(mol)[order]


def test_minimum_image_matches_brute_force_triclinic():
    rng = np.random.default_rng(1)
    for cell in (TRICLINIC, SKEWED):
        d = rng.uniform(-25, 25, size=(400, 3))
        shifts = np.array(list(itertools.product(range(-7, 8), repeat=3))) @ cell
        brute = d[:, None] + shifts[None]
        want = np.linalg.norm(brute, axis=-1).min(axis=1)
        got = minimum_image(d, cell)
        np.testing.assert_allclose(np.linalg.norm(got, axis=-1), want, rtol=1e-12)
        # the image differs from d by a lattice vector
        n = (got - d) @ np.linalg.inv(cell)
        np.testing.assert_allclose(n, np.round(n), atol=1e-9)
    # plain rounding of fractional coordinates is not enough for the skewed cell
    s = d @ np.linalg.inv(SKEWED)
    naive = np.linalg.norm((s - np.round(s)) @ SKEWED, axis=-1)
    assert (naive > np.linalg.norm(minimum_image(d, SKEWED), axis=-1) + 1e-6).any()
    # one cell per frame
    cells = np.stack([TRICLINIC, SKEWED])
    dd = d[:10].reshape(2, 5, 3)
    np.testing.assert_allclose(minimum_image(dd, cells)[1], minimum_image(dd[1], SKEWED))


def test_cell_heights():
    np.testing.assert_allclose(cell_heights(np.diag([3.0, 4.0, 5.0])), [3, 4, 5])
    h = cell_heights(TRICLINIC)
    vol = abs(np.linalg.det(TRICLINIC))
    np.testing.assert_allclose(h[2], vol / np.linalg.norm(np.cross(*TRICLINIC[:2])))


@pytest.mark.parametrize("cell", [np.eye(3) * 9.3, TRICLINIC])
def test_molecules_found_across_boundary_and_made_whole(cell):
    R, z, true = water_box(cell)
    mol = molecule_index(R, z, cell)
    # numbered in order of each molecule's first atom
    firsts = [int(np.nonzero(mol == m)[0][0]) for m in range(mol.max() + 1)]
    assert firsts == sorted(firsts) and mol[0] == 0
    # same partition as the constructed molecules
    assert mol.max() + 1 == 27
    pairs = {(int(a), int(b)) for a, b in zip(mol, true)}
    assert len(pairs) == 27
    check_water(z, "box.extxyz", molecule_index=mol)
    # the box really has split molecules
    o = np.nonzero(z == 8)[0]

    def oh(P):
        return np.array([np.linalg.norm(P[(mol == mol[i]) & (z == 1)] - P[i], axis=-1)
                         for i in o])

    assert (oh(R) > 2.0).any()
    for whole in (make_whole(R, cell, mol),
                  make_whole(R, cell, mol, bonds=bonds_periodic(R, z, cell))):
        np.testing.assert_allclose(oh(whole), 0.98, atol=1e-9)
        n = (whole - R) @ np.linalg.inv(cell)  # moved by lattice vectors only
        np.testing.assert_allclose(n, np.round(n), atol=1e-9)
    # frames with one cell per frame
    frames = np.stack([R, R + 0.1])
    whole2 = make_whole(frames, np.stack([cell, cell]), mol)
    np.testing.assert_allclose(whole2[1] - whole2[0], 0.1, atol=1e-9)

    wrapped = wrap_by_molecule(R, cell, mol)
    np.testing.assert_allclose(oh(wrapped), 0.98, atol=1e-9)
    centres = np.stack([wrapped[mol == m].mean(0) for m in range(27)])
    s = centres @ np.linalg.inv(cell)
    assert (s >= -1e-12).all() and (s < 1).all()


def test_make_whole_chain_longer_than_half_box():
    cell = np.eye(3) * 6.0
    R = np.stack([np.arange(8) * 1.5, np.zeros(8), np.zeros(8)], axis=1) + 0.1  # 10.5 A chain
    z = np.full(8, 6)
    Rw = R % 6.0
    bonds = np.stack([np.arange(7), np.arange(1, 8)], axis=1)
    mol = np.zeros(8, int)
    np.testing.assert_allclose(make_whole(Rw, cell, mol, bonds=bonds), R, atol=1e-12)
    with pytest.raises(InputError, match="longer than half the box"):
        bonds_periodic(Rw, z, np.eye(3) * 3.0, source="chain.xyz")


def test_unwrap_trajectory():
    cell = TRICLINIC
    rng = np.random.default_rng(2)
    R0 = rng.uniform(0, 9, size=(6, 3))
    v = rng.normal(scale=0.5, size=(6, 3))
    true = R0 + np.arange(40)[:, None, None] * v  # crosses the boundary several times
    s = true @ np.linalg.inv(cell)
    wrapped = (s - np.floor(s)) @ cell
    got = unwrap_trajectory(wrapped, cell)
    np.testing.assert_allclose(got - got[0], true - true[0], atol=1e-3)


def test_check_cell_errors():
    assert check_cell(TRICLINIC, cutoff_angstrom=4.0).dtype == np.float64
    with pytest.raises(InputError, match=r"box\.npz: the cell is singular"):
        check_cell([[1, 0, 0], [2, 0, 0], [0, 0, 1]], source="box.npz")
    with pytest.raises(InputError, match="singular"):
        check_cell(np.zeros((3, 3)))
    with pytest.raises(InputError, match="non-finite"):
        check_cell(np.diag([1.0, np.nan, 1.0]))
    with pytest.raises(InputError, match=r"shape \(3,\)"):
        check_cell(np.ones(3))
    with pytest.raises(InputError, match=r"water\.xyz: cutoff 6 Angstrom is larger than half "
                                         r"the shortest cell height 4\.5 .*heights 9, 10, 11"):
        check_cell(np.diag([9.0, 10.0, 11.0]), cutoff_angstrom=6.0, source="water.xyz")
    with pytest.raises(InputError, match=r"\(frame 1\)"):
        check_cell(np.stack([np.eye(3) * 20, np.eye(3) * 9]), cutoff_angstrom=6.0)


def test_check_water_errors():
    with pytest.raises(InputError, match=r"w\.xyz: .*4 atoms is not a multiple of 3"):
        check_water([8, 1, 1, 1], "w.xyz")
    with pytest.raises(InputError, match=r"w\.xyz: .*composition 1 O and 1 H .*\[6\]"):
        check_water([8, 1, 6], "w.xyz")
    with pytest.raises(InputError, match="molecule 0 .* 1 O and 1 H"):
        check_water([8, 1, 8, 1, 1, 1], "w.xyz", molecule_index=[0, 0, 1, 1, 1, 2])


def test_periodic_extxyz_round_trip_and_missing_cell(tmp_path):
    import ase.io
    from ase import Atoms

    R, z, _ = water_box(TRICLINIC)
    path = tmp_path / "box.extxyz"
    ase.io.write(path, [Atoms(numbers=z, positions=R + 0.01 * i, cell=TRICLINIC, pbc=True)
                        for i in range(2)], format="extxyz")
    fr = read_ase(path)
    assert fr.pbc == (True, True, True)
    cells = np.broadcast_to(fr.cell, (2, 3, 3))
    np.testing.assert_allclose(cells, np.stack([TRICLINIC] * 2), atol=1e-10)
    np.testing.assert_allclose(fr.positions[0], R, atol=1e-6)
    assert molecule_index(fr.positions[0], fr.atomic_numbers, cells[0]).max() == 26

    bad = tmp_path / "nocell.extxyz"
    bad.write_text('3\npbc="T T T"\nO 0 0 0\nH 0.96 0 0\nH 0 0.96 0\n')
    with pytest.raises(InputError, match=r"nocell\.extxyz: periodic .* but no cell"):
        read_ase(bad)
    flat = tmp_path / "flat.extxyz"
    flat.write_text('3\nLattice="9 0 0 9 0 0 0 0 9" pbc="T T T"\nO 0 0 0\nH 0.96 0 0\n'
                    'H 0 0.96 0\n')
    with pytest.raises(InputError, match=r"flat\.extxyz: the cell is singular"):
        read_ase(flat)


def test_npz_with_cell_and_missing_cell(tmp_path):
    R, z, _ = water_box(TRICLINIC)
    path = tmp_path / "box.npz"
    np.savez(path, R=R[None], z=z, lattice=TRICLINIC)
    fr = read_npz(path)
    assert fr.pbc == (True, True, True)
    np.testing.assert_allclose(fr.cell, TRICLINIC)
    bad = tmp_path / "nocell.npz"
    np.savez(bad, R=R[None], z=z, pbc=np.array(True))
    with pytest.raises(InputError, match=r"nocell\.npz: .*need a cell"):
        read_npz(bad)
    zero = tmp_path / "zero.npz"
    np.savez(zero, R=R[None], z=z, cell=np.zeros((3, 3)))
    with pytest.raises(InputError, match=r"zero\.npz: periodic .* but no cell"):
        read_npz(zero)


def test_make_whole_fragment_without_bond_path():
    cell = np.eye(3) * 6.0
    R = np.array([[0.2, 0, 0], [5.9, 0, 0], [5.9, 1.0, 0]])  # atoms 1-2 bonded, no bond to 0
    whole = make_whole(R, cell, np.zeros(3, int), bonds=[[1, 2]])
    np.testing.assert_allclose(whole, [[0.2, 0, 0], [-0.1, 0, 0], [-0.1, 1.0, 0]], atol=1e-12)
