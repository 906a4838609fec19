import numpy as np
import pytest

from stablejax.data import make_frames, random_split
from stablejax.io import read_ase, read_frames, read_npz, write_extxyz, write_npz
from stablejax.units import KCAL_PER_MOL_EV


def _frames(n=5, seed=0, labels=True):
    rng = np.random.default_rng(seed)
    R = rng.normal(size=(n, 4, 3)) * 2
    z = np.array([6, 1, 1, 8])
    E = rng.normal(size=n) if labels else None
    F = rng.normal(size=(n, 4, 3)) if labels else None
    return make_frames(R, z, E, F)


def test_kcal_conversion_constant():
    # 1 kcal/mol = 0.0433641 eV (docs/reference-data.md); equivalently, eV = kcal/mol / 23.06052.
    assert KCAL_PER_MOL_EV == pytest.approx(0.0433641, rel=1e-5)
    assert 1 / KCAL_PER_MOL_EV == pytest.approx(23.06052, rel=1e-5)


def test_md17_npz_units_converted(tmp_path):
    fr = _frames()
    path = tmp_path / "md17_like.npz"
    # sGDML layout: E as [n, 1], units stated in the file.
    np.savez(path, R=fr.positions, z=fr.atomic_numbers, E=fr.energies[:, None] / KCAL_PER_MOL_EV,
             F=fr.forces / KCAL_PER_MOL_EV, e_unit="kcal/mol", r_unit="Ang")
    out = read_npz(path)
    np.testing.assert_allclose(out.energies, fr.energies, rtol=1e-12)
    np.testing.assert_allclose(out.forces, fr.forces, rtol=1e-12)
    # Without metadata the unit must be given; with it, it is converted.
    path2 = tmp_path / "no_units.npz"
    np.savez(path2, R=fr.positions, z=fr.atomic_numbers, E=fr.energies / KCAL_PER_MOL_EV,
             F=fr.forces / KCAL_PER_MOL_EV)
    with pytest.raises(ValueError, match="energy unit.*kcal/mol"):
        read_npz(path2)
    out2 = read_npz(path2, energy_unit="kcal/mol")
    np.testing.assert_allclose(out2.energies, fr.energies, rtol=1e-12)
    with pytest.raises(ValueError, match="file says energy unit"):
        read_npz(path, energy_unit="eV")


def test_rmd17_key_names(tmp_path):
    fr = _frames()
    path = tmp_path / "rmd17.npz"
    np.savez(path, coords=fr.positions, nuclear_charges=fr.atomic_numbers,
             energies=fr.energies, forces=fr.forces)
    out = read_npz(path, energy_unit="eV")
    np.testing.assert_allclose(out.positions, fr.positions)


def test_npz_extxyz_round_trip(tmp_path):
    fr = _frames(7)
    npz = write_npz(tmp_path / "a.npz", fr, {"note": "x"})
    back = read_npz(npz)
    xyz = write_extxyz(tmp_path / "a.extxyz", back)
    again = read_ase(xyz)
    npz2 = write_npz(tmp_path / "b.npz", again)
    final = read_frames(npz2)
    # npz is exact; extxyz writes 8 decimals.
    for a, b, tol in ((fr, back, 0), (fr, again, 1e-7), (fr, final, 1e-7)):
        np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=tol)
        np.testing.assert_allclose(b.energies, a.energies, rtol=0, atol=tol)
        np.testing.assert_allclose(b.forces, a.forces, rtol=0, atol=tol)
        np.testing.assert_array_equal(b.atomic_numbers, a.atomic_numbers)


def test_periodic_round_trip(tmp_path):
    fr = _frames(3)
    fr = make_frames(fr.positions, fr.atomic_numbers, fr.energies, fr.forces,
                     cell=np.eye(3) * 9.0, pbc=True)
    back = read_ase(write_extxyz(tmp_path / "p.extxyz", fr))
    assert back.pbc == (True, True, True)
    np.testing.assert_allclose(back.cell, np.eye(3) * 9.0)
    back2 = read_npz(write_npz(tmp_path / "p.npz", fr))
    assert back2.pbc == (True, True, True)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("R"), "missing positions"),
        (lambda d: d.pop("z"), "missing atomic numbers"),
        (lambda d: d.pop("F"), "no forces"),
        (lambda d: d.update(E=d["E"][:-1]), "energies have 4 values but there are 5 frames"),
        (lambda d: d.update(F=d["F"][:, :3]), "forces have shape"),
        (lambda d: d.update(z=np.array([6, 1, 1])), "atomic numbers have shape"),
        (lambda d: d.update(z=np.array([6, 1, 1, 150])), "unknown element.*150"),
        (lambda d: d["R"].__setitem__((2, 1, 0), np.nan), "positions contain 1 non-finite"),
        (lambda d: d["E"].__setitem__(0, np.inf), "energies contain 1 non-finite"),
    ],
)
def test_bad_npz_errors_name_file_and_problem(tmp_path, mutate, match):
    fr = _frames()
    d = dict(R=fr.positions.copy(), z=fr.atomic_numbers.copy(), E=fr.energies.copy(),
             F=fr.forces.copy(), energy_unit="eV")
    mutate(d)
    path = tmp_path / "bad.npz"
    np.savez(path, **d)
    with pytest.raises(ValueError, match=match) as err:
        read_npz(path)
    assert "bad.npz" in str(err.value)


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "junk.npz"
    bad.write_text("not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a readable"):
        read_npz(bad)
    with pytest.raises(FileNotFoundError, match="nope.extxyz"):
        read_ase(tmp_path / "nope.extxyz")
    junk = tmp_path / "junk.extxyz"
    junk.write_text("3\nhello\nXx 0 0\n")
    with pytest.raises(ValueError, match="junk.extxyz"):
        read_ase(junk)


def test_random_split_disjoint_and_seeded():
    fr = _frames(20)
    s1 = random_split(fr, 10, 5, 5, seed=3)
    s2 = random_split(fr, 10, 5, 5, seed=3)
    np.testing.assert_array_equal(s1.train.positions, s2.train.positions)
    all_R = np.concatenate([s1.train.positions, s1.val.positions, s1.test.positions])
    assert len(np.unique(all_R.reshape(20, -1), axis=0)) == 20
    with pytest.raises(ValueError, match="cannot split 20 frames"):
        random_split(fr, 15, 5, 5)
