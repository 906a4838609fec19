"""``data generate`` for the user's own molecule: SMILES or structure file (xyz, sdf), through
the GFN2-xTB pipeline, with the input checks (parse, elements, charge, spin, bond topology)."""

import json

import numpy as np
import pytest

from stablejax.cli.data import GenerateArgs, generation_config
from stablejax.cli.main import main
from stablejax.data import (
    System,
    generate_dataset,
    load_dataset,
    read_structure_file,
    scale_config,
)
from stablejax.data.structures import smiles_bonds
from stablejax.errors import InputError

WATER_XYZ = "3\nwater\nO 0.0 0.0 0.0\nH 0.96 0.0 0.0\nH -0.24 0.93 0.0\n"
TINY = dict(n_train=4, n_val=1, n_test=2, reference_ps=0.005, equilibration_ps=0.002,
            chunk_frames=2, sample_every=2, reference_sample_every=2)


def _methane_sdf(path, hydrogens=True):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("C"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    if not hydrogens:
        mol = Chem.RemoveHs(mol)
    with Chem.SDWriter(str(path)) as w:
        w.write(mol)
    return path


@pytest.fixture(scope="module")
def water_dir(tmp_path_factory):
    cfg = scale_config("water", smiles="O", **TINY)
    return generate_dataset(cfg, tmp_path_factory.mktemp("data"), n_workers=1)


def test_smiles_generation(water_dir):
    ds = load_dataset(water_dir)
    assert (ds.train.n_frames, ds.val.n_frames, ds.test.n_frames) == (4, 1, 2)
    assert ds.system.name == "water" and ds.system.smiles == "O"
    assert (ds.system.charge, ds.system.multiplicity) == (0, 1)
    np.testing.assert_array_equal(ds.system.bonds, smiles_bonds("O"))
    assert ds.system.temperature_k == 500.0 and ds.system.timestep_fs == 0.5
    settings = json.loads((water_dir / "settings.json").read_text())
    assert settings["smiles"] == "O" and settings["charge"] == 0
    assert water_dir.name == f"water-{settings['digest']}"
    assert np.isfinite(ds.train.energies).all() and np.ptp(ds.train.energies) > 0


def test_structure_files_xyz_and_sdf(tmp_path):
    xyz = tmp_path / "h2o.xyz"
    xyz.write_text(WATER_XYZ)
    s = read_structure_file(xyz)
    assert s.bonds_from == "covalent radii" and s.bonds == ((0, 1), (0, 2))
    path = generate_dataset(scale_config("h2o", structure=s, **TINY), tmp_path, n_workers=1)
    ds = load_dataset(path)
    assert ds.system.structure_sha256 == s.sha256() and ds.system.smiles == ""
    settings = json.loads((path / "settings.json").read_text())
    assert settings["structure_sha256"] == s.sha256()
    assert settings["structure"]["source"] == str(xyz)
    # The same structure from a renamed file: the same data set (the hash ignores the path).
    xyz.rename(tmp_path / "other.xyz")
    same = read_structure_file(tmp_path / "other.xyz")
    assert scale_config("h2o", structure=same, **TINY).digest() == path.name.split("-")[-1]

    sdf = _methane_sdf(tmp_path / "methane.sdf")
    m = read_structure_file(sdf)
    assert m.bonds_from == "file" and m.formal_charge == 0 and len(m.bonds) == 4
    cfg = generation_config(GenerateArgs(structure=sdf, **{k: TINY[k] for k in
                                                           ("n_train", "n_val", "n_test")}))
    assert cfg.system == "methane" and cfg.structure == m
    cfg = scale_config("methane", structure=m, **TINY)
    ds = load_dataset(generate_dataset(cfg, tmp_path, n_workers=1))
    assert ds.system.atomic_numbers.tolist() == [6, 1, 1, 1, 1]
    assert ds.system.bonds.tolist() == [[0, 1], [0, 2], [0, 3], [0, 4]]


@pytest.mark.parametrize("smiles, kw, match", [
    ("C1CC", {}, r"SMILES 'C1CC': RDKit cannot parse it"),
    ("C(C)(C)(C)(C)C", {}, r"RDKit cannot parse it \(Explicit valence"),
    ("[Og]", {}, r"element Og \(Z=118\) is not covered by GFN2-xTB"),
    ("[NH4+]", {}, r"formal charge \+1 but the charge is 0; pass --charge 1"),
    ("[NH4+]", {"charge": 2}, r"formal charge \+1 but the charge is 2"),
    ("[CH3]", {}, r"1 radical electron\(s\) but multiplicity 1; pass --multiplicity 2"),
    ("[CH3]", {"multiplicity": 3}, r"9 electrons .* odd, which does not fit multiplicity 3"),
    ("O", {"multiplicity": 2}, r"10 electrons .* even, which does not fit multiplicity 2"),
    ("[Na]", {"multiplicity": 2}, r"1 atom\(s\); a molecule needs at least 2"),
])
def test_smiles_errors(smiles, kw, match):
    with pytest.raises(InputError, match=match):
        scale_config("mol", smiles=smiles, **kw)


def test_charged_and_open_shell_molecules_reach_tblite():
    from stablejax.data.structures import embed_smiles
    from stablejax.data.xtb import ase_calculator, energy_forces

    assert scale_config("ammonium", smiles="[NH4+]", charge=1).charge == 1
    cfg = scale_config("methyl", smiles="[CH3]", multiplicity=2)
    assert cfg.record()["multiplicity"] == 2 and cfg.digest() != scale_config(
        "methyl", smiles="[CH3]", multiplicity=4).digest()
    z, R = embed_smiles("[NH4+]")
    e1, f1 = energy_forces(z, R, charge=1)
    e0, _ = energy_forces(z, R, charge=0)
    assert np.isfinite(f1).all() and abs(e1 - e0) > 1.0  # an electron more or less: eV apart
    calc = ase_calculator(charge=1, multiplicity=1)
    assert (calc.parameters["charge"], calc.parameters["multiplicity"]) == (1, 1)
    z, R = embed_smiles("[CH3]")
    assert np.isfinite(energy_forces(z, R, multiplicity=2)[0])


def test_structure_file_errors(tmp_path):
    bad = tmp_path / "u.xyz"
    bad.write_text("2\n\nU 0 0 0\nO 0 0 1.8\n")
    with pytest.raises(InputError, match=r"u.xyz: element U \(Z=92\) is not covered"):
        read_structure_file(bad)
    per = tmp_path / "p.extxyz"
    per.write_text('3\nLattice="5 0 0 0 5 0 0 0 5" pbc="T T T"\nO 0 0 0\nH 0.96 0 0\n'
                   "H -0.24 0.93 0\n")
    with pytest.raises(InputError, match="periodic structure"):
        read_structure_file(per)
    with pytest.raises(InputError, match=r"implicit hydrogens"):
        read_structure_file(_methane_sdf(tmp_path / "noh.sdf", hydrogens=False))
    flat = tmp_path / "flat.mol"
    from rdkit import Chem

    mol = Chem.AddHs(Chem.MolFromSmiles("O"))
    Chem.rdDepictor.Compute2DCoords(mol)
    Chem.MolToMolFile(mol, str(flat))
    with pytest.raises(InputError, match=r"2-D coordinates"):
        read_structure_file(flat)
    odd = tmp_path / "oh.xyz"
    odd.write_text("2\n\nO 0 0 0\nH 0.97 0 0\n")
    with pytest.raises(InputError, match=r"oh.xyz: 9 electrons .* --multiplicity 2"):
        read_structure_file(odd)
    assert read_structure_file(odd, multiplicity=2).atomic_numbers == (8, 1)
    with pytest.raises(FileNotFoundError):
        read_structure_file(tmp_path / "missing.sdf")


def test_topology_mismatch_is_an_error_and_leaves_nothing(tmp_path):
    """An O-H at 1.3 A is no bond for covalent radii (cutoff 1.16 A); GFN2 forms it."""
    xyz = tmp_path / "stretched.xyz"
    xyz.write_text("3\n\nO 0 0 0\nH 1.3 0 0\nH -0.24 0.93 0\n")
    s = read_structure_file(xyz)
    assert s.bonds == ((0, 2),)
    with pytest.raises(InputError, match=r"stretched.xyz .*differ from the input's: it formed "
                                         r"O0-H1 \(0\.9\d A\)"):
        generate_dataset(scale_config("stretched", structure=s, **TINY), tmp_path / "d",
                         n_workers=1)
    assert list((tmp_path / "d").iterdir()) == []


def test_builtin_names_digests_and_workers(tmp_path):
    # The hash of a built-in molecule's settings is as before (cached data sets stay valid).
    assert scale_config("aspirin", "cpu").digest() == "f4bc156b3ed5"
    assert scale_config("ethanol", "demo").digest() == "6ce790ad9840"
    assert scale_config("ac-ala3-nhme", "paper").digest() == "361d7f38c15a"
    assert scale_config("ethanol", "demo", seed=3, n_train=7).digest() == "adc8ac620e84"
    assert scale_config("Aspirin", smiles="CC(=O)Oc1ccccc1C(=O)O").digest() == "2e405b5bc1cc"
    with pytest.raises(InputError, match="'aspirin' is a built-in molecule"):
        scale_config("aspirin", smiles="CCO")
    with pytest.raises(InputError, match="system 'a/b' must be 1-64 characters"):
        scale_config("a/b", smiles="CCO")
    with pytest.raises(InputError, match=r"n_workers \(--workers\) must be >= 1"):
        generate_dataset(scale_config("ethanol"), tmp_path, n_workers=0)


def test_old_system_json_loads(tmp_path, water_dir):
    d = json.loads((water_dir / "system.json").read_text())
    for key in ("charge", "multiplicity", "structure_sha256"):
        d.pop(key)
    (tmp_path / "system.json").write_text(json.dumps(d))
    s = System.load(tmp_path / "system.json")
    assert (s.charge, s.multiplicity, s.structure_sha256) == (0, 1, "")
    d["multiplicity"] = 0
    (tmp_path / "system.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="multiplicity must be an integer >= 1, got 0"):
        System.load(tmp_path / "system.json")


@pytest.mark.parametrize("argv, match", [
    ([], "give exactly one of SYSTEM"),
    (["aspirin", "--smiles", "CCO"], r"got \['SYSTEM', '--smiles'\]"),
    (["--smiles", "O"], "--smiles needs --name"),
    (["--smiles", "O", "--name", "my water"], "--name 'my water' must be 1-64 characters"),
    (["aspirin", "--charge", "1"], "--charge 1 is for your own molecule"),
    (["ethanol", "--workers", "0"], "--workers must be >= 1"),
    (["--smiles", "[NH4+]", "--name", "nh4"], "pass --charge 1"),
    (["--structure", "nope.xyz"], "nope.xyz: structure file not found"),
])
def test_cli_generate_errors(argv, match, tmp_path, capsys):
    assert main(["data", "generate", *argv, "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert __import__("re").search(match, err), err
    assert list(tmp_path.iterdir()) == []


def test_cli_generate_success_path(water_dir, monkeypatch, capsys):
    """The CLI's plumbing to generate_dataset (stubbed: the MD itself is tested above)."""
    import stablejax.data

    seen = {}

    def fake(cfg, data_dir, *, n_workers, progress):
        seen.update(cfg=cfg, n_workers=n_workers)
        return water_dir

    monkeypatch.setattr(stablejax.data, "generate_dataset", fake)
    assert main(["data", "generate", "--smiles", "[CH3]", "--name", "methyl",
                 "--multiplicity", "2", "--temperature-k", "300", "--n-train", "4",
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "methyl: CH3, 4 atoms from SMILES [CH3]; charge 0, multiplicity 2; 300 K" in out
    assert f"data set: {water_dir}" in out
    cfg = seen["cfg"]
    assert (cfg.multiplicity, cfg.temperature_k, cfg.n_train, seen["n_workers"]) == (2, 300.0, 4, 1)
    with pytest.raises(SystemExit) as e:
        main(["data", "generate", "--smiles", "O", "--bogus"])
    assert e.value.code == 2
