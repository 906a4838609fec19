"""Damaged and foreign checkpoints: fall back to the previous intact step or refuse in one line."""

import logging
import shutil

import jax
import numpy as np
import pytest

from stablejax.errors import InputError
from stablejax.io.checkpoint import (
    CheckpointDamagedError, CheckpointMismatchError, latest_step, restore_checkpoint,
    save_checkpoint)
from stablejax.io.run_dir import RunDir

LOGGER = "stablejax.io.checkpoint"


def _tree(seed):
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "interaction_2": {"Dense_0": {"kernel": rng.normal(size=(8, 16)).astype(np.float32)}},
            # Incompressible: orbax stores these bytes verbatim, so one bit can be flipped.
            "noise": rng.integers(0, 2**31, size=1024).astype(np.int32),
        },
        "epoch": np.int32(seed),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint directory with intact steps 1 and 2 (trees ``_tree(1)``, ``_tree(2)``)."""
    root = tmp_path_factory.mktemp("ckpt") / "ck"
    for step in (1, 2):
        save_checkpoint(root, step, _tree(step), {"epoch": step}, max_to_keep=2)
    return root


@pytest.fixture
def ck(saved, tmp_path):
    out = tmp_path / "ck"
    shutil.copytree(saved, out)
    return out


def _same(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.asarray(x).tobytes() ==
        np.asarray(y).tobytes() for x, y in zip(la, lb))


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


def _assert_fell_back(ck, caplog, capfd):
    """Step 2 is reported damaged (one line naming its directory); step 1 comes back intact."""
    state, meta = restore_checkpoint(ck, like=_tree(0))
    assert meta == {"epoch": 1} and _same(state, _tree(1))
    (msg,) = _warnings(caplog)
    assert str(ck / "2") in msg and "damaged" in msg and "\n" not in msg
    assert "Traceback" not in capfd.readouterr().err
    return msg


def _data_files(step_dir):
    return [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]


def _damage(path, how):
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif how == "flip":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x04
        path.write_bytes(bytes(flipped))


def test_intact_restore_is_bit_identical(ck, caplog):
    tree = _tree(2)
    state, meta = restore_checkpoint(ck, like=tree)
    assert meta == {"epoch": 2} and _same(state, tree)
    raw, _ = restore_checkpoint(ck, step=1)  # no template: the raw nested dict
    assert _same(raw, _tree(1))
    x64 = {"a": np.random.default_rng(0).normal(size=5)}  # float64 kept without a template
    save_checkpoint(ck, 3, x64)
    assert _same(restore_checkpoint(ck)[0], x64)
    assert not _warnings(caplog)


def test_truncated_array_data_falls_back(ck, caplog, capfd):
    for path in _data_files(ck / "2"):
        _damage(path, "truncate")
    assert "unreadable" in _assert_fell_back(ck, caplog, capfd)
    assert latest_step(ck) == 2


@pytest.mark.parametrize("name", ["meta/metadata", "state/_METADATA", "state/manifest.ocdbt"])
@pytest.mark.parametrize("how", ["delete", "empty"])
def test_metadata_file_damage_falls_back(ck, caplog, capfd, name, how):
    _damage(ck / "2" / name, how)
    assert latest_step(ck) == 2  # listing steps reads no metadata
    _assert_fell_back(ck, caplog, capfd)


def test_every_file_every_fault_is_intact_or_falls_back(saved, tmp_path, caplog, capfd):
    """Files orbax does not need (commit markers, _CHECKPOINT_METADATA, unreferenced
    per-process files) may be damaged harmlessly; anything else must fall back."""
    files = sorted(p.relative_to(saved / "2") for p in (saved / "2").rglob("*") if p.is_file())
    fell_back = set()
    for i, rel in enumerate(files):
        for how in ("delete", "empty", "truncate", "flip"):
            ck = tmp_path / f"{i}{how}"
            shutil.copytree(saved, ck)
            _damage(ck / "2" / rel, how)
            caplog.clear()
            state, meta = restore_checkpoint(ck, like=_tree(0))
            if meta == {"epoch": 2}:
                assert _same(state, _tree(2)) and not _warnings(caplog), (rel, how)
            else:
                assert meta == {"epoch": 1} and _same(state, _tree(1)), (rel, how)
                assert str(ck / "2") in _warnings(caplog)[0], (rel, how)
                fell_back.add(str(rel))
    assert {"meta/metadata", "state/_METADATA", "state/manifest.ocdbt"} <= fell_back
    assert "Traceback" not in capfd.readouterr().err


def test_single_flipped_bit_fails_the_checksum(ck, caplog, capfd):
    needle = _tree(2)["params"]["noise"].tobytes()[2000:2032]
    (path,) = [p for p in _data_files(ck / "2") if needle in p.read_bytes()]
    data = bytearray(path.read_bytes())
    data[data.index(needle) + 7] ^= 0x10
    path.write_bytes(bytes(data))
    assert "checksum mismatch" in _assert_fell_back(ck, caplog, capfd)


def test_flipped_bits_in_compressed_data_never_restore_silently(saved, tmp_path, caplog):
    for i, path in enumerate(_data_files(saved / "2")):
        size = path.stat().st_size
        for pos in range(0, size, max(1, size // 6)):
            ck = tmp_path / f"{i}_{pos}"
            shutil.copytree(saved, ck)
            target = ck / path.relative_to(saved)
            data = bytearray(target.read_bytes())
            data[pos] ^= 0x01
            target.write_bytes(bytes(data))
            caplog.clear()
            state, meta = restore_checkpoint(ck, like=_tree(0))
            assert (meta == {"epoch": 2} and _same(state, _tree(2))) or (
                meta == {"epoch": 1} and _same(state, _tree(1)) and _warnings(caplog))


@pytest.mark.parametrize("change, match", [
    (lambda t: t["params"]["interaction_2"]["Dense_0"].update(kernel=np.zeros((8, 32))),
     r"params/interaction_2/Dense_0/kernel has shape \(8, 16\) in the checkpoint but "
     r"\(8, 32\) expected"),
    (lambda t: t["params"].pop("noise"), "params/noise is in the checkpoint but not expected"),
    (lambda t: t["params"].update(bias=np.zeros(3)), "params/bias is missing from the checkpoint"),
])
def test_another_models_checkpoint_is_refused_in_one_line(ck, caplog, change, match):
    like = _tree(0)
    change(like)
    with pytest.raises(CheckpointMismatchError, match=match) as err:
        restore_checkpoint(ck, like=like)
    assert isinstance(err.value, InputError) and "\n" not in str(err.value)
    assert str(ck / "2") in str(err.value) and not _warnings(caplog)  # no fallback


def test_explicit_or_all_damaged_steps_raise_one_line(ck, caplog):
    _damage(ck / "2" / "state" / "manifest.ocdbt", "empty")
    with pytest.raises(CheckpointDamagedError, match="damaged checkpoint") as err:
        restore_checkpoint(ck, like=_tree(0), step=2)
    assert str(ck / "2") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="no checkpoint step 7"):
        restore_checkpoint(ck, step=7)
    _damage(ck / "1" / "meta" / "metadata", "delete")
    with pytest.raises(CheckpointDamagedError, match="no intact checkpoint") as err:
        restore_checkpoint(ck, like=_tree(0))
    assert "step 2:" in str(err.value) and "step 1:" in str(err.value)
    assert "\n" not in str(err.value)


def test_checkpoint_without_checksum_restores(tmp_path, caplog):
    import orbax.checkpoint as ocp

    mngr = ocp.CheckpointManager(tmp_path.resolve(),
                                 options=ocp.CheckpointManagerOptions(create=True))
    mngr.save(4, args=ocp.args.Composite(state=ocp.args.StandardSave(_tree(4)),
                                         meta=ocp.args.JsonSave({"epoch": 4})))
    mngr.wait_until_finished()
    mngr.close()
    state, meta = restore_checkpoint(tmp_path, like=_tree(0))
    assert meta == {"epoch": 4} and _same(state, _tree(4)) and not _warnings(caplog)


def test_run_dir_resumes_from_previous_epoch_and_cuts_the_log(tmp_path, caplog, capfd):
    rd = RunDir(tmp_path / "run")

    def arrays(n):
        return {"epoch": np.int32(n), "w": np.full(4, n, np.float32)}

    for epoch in range(3):
        rd.save_epoch(epoch + 1, arrays(epoch + 1), {"epoch": epoch})
    assert sorted(p.name for p in (rd / "checkpoints").iterdir()) == ["2", "3"]
    for path in _data_files(rd / "checkpoints" / "3"):
        _damage(path, "truncate")
    state = rd.resume(like=arrays(0))
    assert int(state["epoch"]) == 2 and _same(state, arrays(2))
    assert [r["epoch"] for r in rd.records()] == [0, 1]
    (msg,) = _warnings(caplog)
    assert str(rd / "checkpoints" / "3") in msg and "Traceback" not in capfd.readouterr().err
    # The resumed run writes epoch 3 again over the damaged step.
    rd.save_epoch(3, arrays(3), {"epoch": 2})
    assert int(rd.resume(like=arrays(0))["epoch"]) == 3
    assert [r["epoch"] for r in rd.records()] == [0, 1, 2]


def test_load_params_damage_and_mismatch_are_one_line(tmp_path):
    rd = RunDir(tmp_path / "run")
    params = _tree(1)["params"]
    rd.save_params("best", 5, params)
    assert _same(rd.load_params("best", params), params)
    with pytest.raises(CheckpointMismatchError, match="params/noise is in the checkpoint"):
        rd.load_params("best", {"interaction_2": params["interaction_2"]})
    _damage(rd / "best" / "5" / "state" / "_METADATA", "empty")
    assert rd.has_params("best")
    with pytest.raises(CheckpointDamagedError, match="no intact checkpoint") as err:
        rd.load_params("best", params)
    assert str(rd / "best") in str(err.value) and "\n" not in str(err.value)
