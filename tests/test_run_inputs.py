"""Run directories record what they were made from (``stablejax.io.inputs``); re-runs and
resumes with other inputs are refused; models are bound to their molecule's atom order."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from stablejax.cli.main import main
from stablejax.errors import InputError
from stablejax.io.inputs import check_inputs
from stablejax.train.model_spec import ModelSpec


def test_check_inputs_records_compares_and_accepts_only_allowed_changes(tmp_path, caplog):
    first = {"config": {"lr": 0.1, "md": {"dt_fs": 0.5}}, "data": {"z": (6, 1)}}
    assert check_inputs(tmp_path, first) == []
    assert check_inputs(tmp_path, first) == []  # the same inputs: nothing to say
    with pytest.raises(InputError, match=r"config\.md\.dt_fs: 0\.5 -> 1\.0") as e:
        check_inputs(tmp_path, {"config": {"lr": 0.1, "md": {"dt_fs": 1.0}}})
    assert "\n" not in str(e.value)
    changed = {"config": {"lr": 0.2, "md": {"dt_fs": 0.5}}}
    with pytest.raises(InputError, match="--allow-change lr"):
        check_inputs(tmp_path, changed, resumable=["config.lr"])
    assert check_inputs(tmp_path, changed, allow=["config.lr"]) == ["config.lr"]
    assert check_inputs(tmp_path, changed) == []  # the accepted value is the new record
    with pytest.raises(InputError, match="finished run made with other settings"):
        check_inputs(tmp_path, first, allow=["config.lr"], finished=True)
    record = json.loads((tmp_path / "inputs.json").read_text())
    assert record["data"] == {"z": [6, 1]} and record["changes"] == [{"config.lr": [0.1, 0.2]}]
    record["code_version"] = "0.0.1"
    (tmp_path / "inputs.json").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="stablejax.io.inputs"):
        assert check_inputs(tmp_path, changed) == []  # another code version only warns
    assert "0.0.1" in caplog.text


def test_fields_added_later_compare_to_their_defaults(tmp_path):
    """A record made before a config gained a field still resumes when the field has its
    default value, and refuses another value."""
    check_inputs(tmp_path, {"config": {"lr": 0.1, "loss": {"w": 1.0}}})
    defaults = {"config": {"lr": 0.001, "amsgrad": False, "loss": {"w": 0.5, "kind": "mse"}}}
    now = {"config": {"lr": 0.1, "amsgrad": False, "loss": {"w": 1.0, "kind": "mse"}}}
    assert check_inputs(tmp_path, now, defaults=defaults) == []
    with pytest.raises(InputError, match=r"config\.loss\.kind: \"mse\" -> \"l2mae\""):
        check_inputs(tmp_path, {"config": {**now["config"], "loss": {"w": 1.0, "kind": "l2mae"}}},
                     defaults=defaults)
    with pytest.raises(InputError, match=r"config\.amsgrad"):  # without defaults: refused
        check_inputs(tmp_path, now)


def test_model_is_bound_to_its_atom_order():
    spec = ModelSpec(kind="schnet", config={}, atomic_numbers=(6, 6, 8, 1, 1), energy_shift={},
                     energy_scale=1.0)
    spec.check_species([6, 6, 8, 1, 1], "frames")
    with pytest.raises(InputError, match=r"frames: atom 1 is O but the model expects C"):
        spec.check_species([6, 8, 6, 1, 1], "frames")
    with pytest.raises(InputError, match="has 4 atoms"):
        spec.check_species([6, 6, 8, 1], "frames")
    periodic = ModelSpec(kind="schnet", config={}, atomic_numbers=(8, 1, 1), energy_shift={},
                         energy_scale=1.0, box=[[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    periodic.check_species([8, 1, 1] * 4, "water box")  # more molecules: fine
    with pytest.raises(InputError, match=r"elements \['C'\] are not in the model"):
        periodic.check_species([8, 1, 1, 6], "box")


def _permuted_copy(data, dest):
    """A copy of a data set directory with atoms 0 and 1 (C and O in ethanol) swapped."""
    from stablejax.data import load_dataset

    shutil.copytree(data, dest)
    ds = load_dataset(dest)
    order = np.arange(ds.system.n_atoms)
    order[[0, 2]] = order[[2, 0]]
    assert ds.system.atomic_numbers[0] != ds.system.atomic_numbers[2]
    for name in ("train", "val", "test", "reference"):
        with np.load(dest / f"{name}.npz") as f:
            arrays = {k: f[k] for k in f.files}
        for k in ("R", "F"):
            arrays[k] = arrays[k][:, order]
        arrays["z"] = arrays["z"][..., order]
        np.savez(dest / f"{name}.npz", **arrays)
    system = json.loads((dest / "system.json").read_text())
    inverse = np.argsort(order)
    system["atomic_numbers"] = [system["atomic_numbers"][i] for i in order]
    key = "equilibrium_positions_angstrom"
    system[key] = [system[key][i] for i in order]
    system["bonds"] = [[int(inverse[i]), int(inverse[j])] for i, j in system["bonds"]]
    (dest / "system.json").write_text(json.dumps(system))
    return dest


def test_pretrain_run_directory_refuses_other_inputs(ethanol_model_dirs, tmp_path, capsys):
    """A finished pre-training re-run: the same command returns its results; other flags,
    another architecture or a data set of another atom order are refused with rc 1 and
    nothing written."""
    _, data = ethanol_model_dirs
    run = tmp_path / "pre"
    base = ["pretrain", "--data", str(data), "--run-dir", str(run), "--max-epochs", "1",
            "--batch-size", "3", "--features", "8", "--n-interactions", "1"]
    assert main(base) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["data"] == str(data.resolve())
    model_json = (run / "model.json").read_text()
    capsys.readouterr()
    assert main(base) == 0  # the same: the finished results
    assert main(base[:-4] + ["--features", "16", "--n-interactions", "1"]) == 1
    err = capsys.readouterr().err
    assert "model.overrides.hidden_features: 8 -> 16" in err and "finished run" in err
    assert main(base + ["--learning-rate", "0.01"]) == 1
    assert "config.learning_rate" in capsys.readouterr().err
    permuted = _permuted_copy(data, tmp_path / "permuted")
    assert main([*base[:2], str(permuted), *base[3:]]) == 1
    assert "data.atomic_numbers" in capsys.readouterr().err
    assert (run / "model.json").read_text() == model_json
    assert json.loads((run / "results.json").read_text()) == results


def test_train_and_evaluate_refuse_data_of_another_atom_order(ethanol_model_dirs, tmp_path,
                                                              capsys):
    model_dir, data = ethanol_model_dirs
    permuted = _permuted_copy(data, tmp_path / "permuted")
    assert main(["train", "--pretrained", str(model_dir), "--data", str(permuted),
                 "--run-dir", str(tmp_path / "stable")]) == 1
    err = capsys.readouterr().err
    assert "atom 0 is O but the model expects C" in err, err
    assert not (tmp_path / "stable").exists()


def test_a_cutoff_below_the_shortest_bond_warns(ethanol_model_dirs):
    from stablejax.data import load_dataset
    from stablejax.train.model_spec import spec_from_data

    train = load_dataset(ethanol_model_dirs[1]).train
    with pytest.warns(UserWarning, match="sees no neighbours"):
        spec_from_data("schnet", train, cutoff_angstrom=0.5)
