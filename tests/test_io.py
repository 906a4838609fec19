import json
import logging
import zipfile

import numpy as np
import pytest

from stablejax.cli.main import main
from stablejax.data import (
    System, dataset_info, load_dataset, make_frames, make_system, random_split,
)
from stablejax.errors import InputError
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
        (lambda d: d.pop("E"), "has forces .* but no energies"),
        (lambda d: d.update(z=np.array([6, 1, 1, 150])), r"integers in 1\.\.118, got \[150\]"),
        (lambda d: d.update(z=np.array([6, 1, 0, 8])), r"integers in 1\.\.118, got \[0\]"),
        (lambda d: d.update(z=np.array([6.0, 1.5, 1, 8])), r"integers in 1\.\.118, got \[1\.5\]"),
        (lambda d: d.update(z=np.array(["C", "H", "H", "O"])), "atomic numbers must be integers"),
        (lambda d: d["R"].__setitem__((2, 1, 0), np.nan),
         r"positions contain 1 non-finite .* \(frame 2\)"),
        (lambda d: d["E"].__setitem__(3, np.inf), r"energies contain 1 non-finite .*\(frame 3\)"),
        (lambda d: d["F"].__setitem__((4, 0, 1), -np.inf),
         r"forces contain 1 non-finite .*\(frame 4\)"),
        (lambda d: d.update(cell=np.full((5, 3, 3), 9.0), pbc=True)
         or d["cell"].__setitem__((1, 2, 2), np.nan), r"cell contain 1 non-finite .*\(frame 1\)"),
        (lambda d: d.update(R=np.zeros((0, 4, 3)), E=np.zeros(0), F=np.zeros((0, 4, 3))),
         "no frames"),
        (lambda d: d.update(R=d["R"].astype(complex)), "positions must hold real numbers"),
        (lambda d: d.update(energy_unit=np.array([], dtype=str)), "energy_unit must be one string"),
        (lambda d: d.update(energy_unit="furlong"), "unknown energy unit 'furlong'"),
        (lambda d: d.update(pbc=np.ones(5)), "pbc must be one or three booleans"),
    ],
)
def test_bad_npz_errors_name_file_and_problem(tmp_path, mutate, match):
    fr = _frames()
    d = dict(R=fr.positions.copy(), z=fr.atomic_numbers.copy(), E=fr.energies.copy(),
             F=fr.forces.copy(), energy_unit="eV")
    mutate(d)
    path = tmp_path / "bad.npz"
    np.savez(path, **d)
    with pytest.raises(InputError, match=match) as err:
        read_npz(path)
    assert "bad.npz" in str(err.value) and "\n" not in str(err.value)


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "junk.npz"
    bad.write_text("not a zip")
    with pytest.raises(InputError, match="junk.npz: not an .npz file"):
        read_npz(bad)
    with pytest.raises(FileNotFoundError, match="nope.extxyz"):
        read_ase(tmp_path / "nope.extxyz")
    junk = tmp_path / "junk.extxyz"
    junk.write_text("3\nhello\nXx 0 0\n")
    with pytest.raises(InputError, match="junk.extxyz"):
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


# --- damaged npz files --------------------------------------------------------------------


def _damaged_npz(tmp_path, kind):
    raw = write_npz(tmp_path / "ok.npz", _frames()).read_bytes()
    path = tmp_path / f"{kind}.npz"
    if kind == "bad_crc":  # a flipped byte inside the stored R.npy member
        with zipfile.ZipFile(tmp_path / "ok.npz") as z:
            info = z.getinfo("R.npy")
        at = info.header_offset + 30 + len(info.filename) + 200
        path.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
    elif kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "not_npy":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("R.npy", b"\x93NUMPY garbage")
            z.writestr("z.npy", b"not an array")
    elif kind == "pickled":
        np.savez(path, R=np.array([None, 1.0], dtype=object), z=np.array([1, 1]))
    elif kind == "empty":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    "kind, match",
    [
        ("bad_crc", "not a readable .npz file .*BadZipFile.*CRC"),
        ("truncated", "not a readable .npz file"),
        ("not_npy", "not a readable .npz file|not a .npy array"),
        ("pickled", "not a readable .npz file .*Object arrays"),
        ("empty", "empty file"),
    ],
)
def test_damaged_npz_is_an_input_error(tmp_path, kind, match):
    path = _damaged_npz(tmp_path, kind)
    with pytest.raises(InputError, match=match) as err:
        read_npz(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# --- extxyz labels and units --------------------------------------------------------------


def _xyz(tmp_path, frames, name="f.extxyz"):
    """Write extxyz text: ``frames`` is a list of (comment keys, per-atom extra columns or
    None); two H atoms."""
    lines = []
    for i, (keys, forces) in enumerate(frames):
        props = "species:S:1:pos:R:3" + ("" if forces is None else f":{forces}:R:3")
        lines += ["2", f'Properties={props} {keys} pbc="F F F"'.replace("  ", " ")]
        for a in range(2):
            cols = f"0 0 {0.74 * a + 0.01 * i}" + ("" if forces is None else f" {a} {i} 0.5")
            lines.append(f"H {cols}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_extxyz_label_keys(tmp_path, caplog):
    path = _xyz(tmp_path, [("REF_energy=-1.5", "REF_forces"), ("REF_energy=-1.25", "REF_forces")])
    fr = read_ase(path, energy_key="REF_energy", forces_key="REF_forces")
    np.testing.assert_allclose(fr.energies, [-1.5, -1.25])
    np.testing.assert_allclose(fr.forces[1], [[0, 1, 0.5], [1, 1, 0.5]])
    # Without the keys: unlabelled, with a warning naming the keys found.
    with caplog.at_level(logging.WARNING, logger="stablejax.io.ase_io"):
        assert not read_ase(path).has_labels
    assert "REF_energy" in caplog.text and "energy_key" in caplog.text
    with pytest.raises(InputError, match="no frame has the key 'bogus'.*REF_energy"):
        read_ase(path, energy_key="bogus")
    # The default keys: extxyz energy= and forces, as ASE calculator results.
    plain = _xyz(tmp_path, [("energy=2.0", "forces")], "plain.extxyz")
    assert read_frames(plain).energies.tolist() == [2.0]


@pytest.mark.parametrize(
    "frames, match",
    [
        ([("energy=1", "forces"), ("", None), ("", None)],
         r"2 of 3 frames have no energies \('energy'\), first: frames \[1, 2\]"),
        ([("energy=1", None), ("energy=2", None)],
         r"has energies \('energy'\) but no forces \('forces'\) in any frame.*forces_key="),
        ([("", "forces"), ("", "forces")], r"has forces \('forces'\) but no energies"),
        ([("energy=1", "forces"), ("energy=2", None)],
         r"1 of 2 frames have no forces \('forces'\), first: frames \[1\]"),
        ([("energy=nan", "forces")], r"energies contain 1 non-finite.*\(frame 0\)"),
        ([("energy=abc", "forces")], "frame 0: energy 'energy' is not a number"),
    ],
)
def test_extxyz_partial_or_bad_labels(tmp_path, frames, match):
    path = _xyz(tmp_path, frames)
    with pytest.raises(InputError, match=match) as err:
        read_ase(path)
    assert str(path) in str(err.value)


def test_extxyz_bad_values(tmp_path):
    path = tmp_path / "nan.extxyz"
    path.write_text('2\npbc="F F F"\nH 0 0 0\nH 0 0 nan\n')
    with pytest.raises(InputError, match=r"nan.extxyz: positions contain 1 non-finite.*frame 0"):
        read_ase(path)
    path.write_text('2\npbc="F F F"\nH 0 0 0\nX 0 0 1\n')
    with pytest.raises(InputError, match=r"integers in 1\.\.118, got \[0\]"):
        read_ase(path)
    path.write_text('2\npbc="F F F"\nH 0 0 0\nH 0 0 1\n1\npbc="F F F"\nH 0 0 0\n')
    with pytest.raises(InputError, match="frame 1 has different atoms"):
        read_ase(path)
    path.write_text("")
    with pytest.raises(InputError, match="nan.extxyz: empty file"):
        read_ase(path)


def test_extxyz_energy_unit(tmp_path):
    fr = _frames(3)
    path = write_extxyz(tmp_path / "kcal.extxyz", fr)
    out = read_frames(path, energy_unit="kcal/mol")
    np.testing.assert_allclose(out.energies, fr.energies * KCAL_PER_MOL_EV, rtol=1e-7)
    np.testing.assert_allclose(out.forces, fr.forces * KCAL_PER_MOL_EV, rtol=1e-6, atol=1e-9)
    with pytest.raises(InputError, match="kcal.extxyz: unknown energy unit 'furlong'"):
        read_frames(path, energy_unit="furlong")


def test_cli_data_info_reader_options(tmp_path, capsys):
    fr = _frames(3)
    path = write_extxyz(tmp_path / "x.extxyz", fr)
    assert main(["data", "info", str(path), "--energy-unit", "kcal/mol"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["energy_mean_ev"] == pytest.approx(fr.energies.mean() * KCAL_PER_MOL_EV)
    ref = _xyz(tmp_path, [("REF_energy=-1.5", "REF_forces")], "ref.extxyz")
    assert main(["data", "info", str(ref), "--energy-key", "REF_energy",
                 "--forces-key", "REF_forces"]) == 0
    assert json.loads(capsys.readouterr().out)["labels"] is True
    assert main(["data", "info", str(ref), "--energy-key", "REF_energy"]) == 1
    assert "but no forces ('forces')" in capsys.readouterr().err


# --- data set directories and JSON files --------------------------------------------------


def _dataset(tmp_path):
    """A small data set directory written with the project's writers."""
    root = tmp_path / "ds"
    z = np.array([8, 1, 1])
    eq = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    rng = np.random.default_rng(0)
    fr = make_frames(eq + 0.05 * rng.normal(size=(4, 3, 3)), z, rng.normal(size=4),
                     rng.normal(size=(4, 3, 3)))
    for name in ("train", "val", "test"):
        write_npz(root / f"{name}.npz", fr)
    write_npz(root / "reference.npz", fr, {"frame_interval_fs": 2.5})
    make_system("water", z, eq, fr.positions, temperature_k=300.0,
                timestep_fs=0.5).save(root / "system.json")
    (root / "settings.json").write_text(json.dumps({"system": "water"}))
    (root / "complete.json").write_text(json.dumps({"wall_s": 1.0}))
    return root


def test_malformed_json_names_file_line_and_column(tmp_path, capsys):
    root = _dataset(tmp_path)
    assert load_dataset(root).reference_interval_fs == 2.5
    (root / "settings.json").write_text('{\n "system": "water",\n}')
    with pytest.raises(InputError, match=r"settings.json: invalid JSON at line 3 column 1"):
        dataset_info(root)
    text = (root / "system.json").read_text()
    (root / "system.json").write_text(text[:-3])
    with pytest.raises(InputError, match=r"system.json: invalid JSON at line \d+ column \d+"):
        load_dataset(root)
    assert main(["data", "info", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "system.json: invalid JSON" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("temperature_k", "hot", "temperature_k must be a finite number > 0, got 'hot'"),
        ("atomic_numbers", [8, 1, 119], r"atomic_numbers must be .* in 1\.\.118"),
        ("bonds", [[0, 7]], r"bonds must be pairs of atom indices in 0\.\.2"),
        ("equilibrium_positions_angstrom", [[0, 0]], r"must be numbers of shape \(3, 3\)"),
        ("reference_bond_lengths_angstrom", [1.0], r"must be numbers of shape \(2,\)"),
    ],
)
def test_invalid_system_json_field(tmp_path, field, value, match):
    root = _dataset(tmp_path)
    d = json.loads((root / "system.json").read_text())
    d[field] = value
    (root / "system.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match=match) as err:
        System.load(root / "system.json")
    assert "system.json" in str(err.value)


def test_inconsistent_dataset_directory(tmp_path):
    root = _dataset(tmp_path)
    write_npz(root / "test.npz", _frames(2))  # other atoms than system.json
    with pytest.raises(InputError, match=r"test.npz: atomic numbers \[6, 1, 1, 8\] differ"):
        load_dataset(root)
    root = _dataset(tmp_path / "b")
    write_npz(root / "reference.npz", read_npz(root / "reference.npz"))  # no metadata
    with pytest.raises(InputError, match="reference.npz: metadata frame_interval_fs"):
        load_dataset(root)
    write_npz(root / "val.npz", load_dataset(_dataset(tmp_path / "c")).val.replace(
        energies=None, forces=None))
    with pytest.raises(InputError, match="val.npz: no energies and forces"):
        load_dataset(root)
    with pytest.raises(InputError, match=r"reader options \['energy_unit'\] are for a frames file"):
        dataset_info(_dataset(tmp_path / "d"), energy_unit="kcal/mol")
