"""``simulate`` and ``evaluate`` keep finished chunks and resume after an interrupt or a kill,
bit for bit; finished results are returned, not redone; other settings are named and refused;
``--overwrite`` replaces an old result only once the new one is complete."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stablejax.cli.main import main
from stablejax.io import read_frames

REPO = Path(__file__).resolve().parents[1]

# The child process makes the uninterrupted reference runs, then a simulate run whose commit
# (checkpoint) of chunk 1, the second, hangs once the chunk's frames are written and runs an
# evaluate run there that hangs the same way; a marker file says both are stuck, and the test
# kills the child with SIGKILL. Compilations go to a persistent cache, so the runs after the
# references do not compile again.
CHILD = """
import json, sys, time
from pathlib import Path
import stablejax.evaluate.stability_run as run_mod
import stablejax.evaluate.stream as stream_mod
from stablejax.cli.main import main
ref_sim, ref_ev, sim, ev = json.loads(sys.argv[1])
assert main(ref_sim) == 0 and main(ref_ev) == 0
save = stream_mod.save_stream_checkpoint
def hang_simulate(directory, chunk, meta=None):
    if chunk.index == 1:
        run_mod.save_stream_checkpoint = hang_evaluate
        main(ev)
    save(directory, chunk, meta)
def hang_evaluate(directory, chunk, meta=None):
    if chunk.index == 1:
        Path(sys.argv[2]).touch()
        time.sleep(600)
    save(directory, chunk, meta)
stream_mod.save_stream_checkpoint = hang_simulate
main(sim)
"""


def _simulate_argv(model_dir, data, out, *extra):
    return ["simulate", "--model", str(model_dir), "--data", str(data), "--n-replicas", "3",
            "--time-ps", "0.03", "--dt-fs", "0.5", "--frame-interval-fs", "5",
            "--frames-per-chunk", "2", "--out", str(out), *extra]  # 3 chunks of 2 frames


def _evaluate_argv(model_dir, data, out, *extra):
    return ["evaluate", "--model", str(model_dir), "--data", str(data), "--n-replicas", "2",
            "--time-ps", "0.03", "--dt-fs", "0.5", "--frame-interval-fs", "1",
            "--n-bootstrap", "20", "--out", str(out), *extra]  # 3 chunks of 10 frames


def _cached_env(root):
    return dict(os.environ, OMP_NUM_THREADS="1", JAX_COMPILATION_CACHE_DIR=str(root / "jax"),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


@pytest.fixture(scope="module")
def runs(ethanol_model_dirs, tmp_path_factory):
    """(model_dir, data, root): in ``root``, uninterrupted reference runs ``ref_sim`` (extxyz)
    and ``ref_ev``, and runs ``sim`` and ``ev`` killed (SIGKILL) while committing their second
    chunk, so that the first chunk is kept and the second's frames are on disk too."""
    model_dir, data = ethanol_model_dirs
    root = tmp_path_factory.mktemp("resume")
    argv = [_simulate_argv(model_dir, data, root / "ref_sim"),
            _evaluate_argv(model_dir, data, root / "ref_ev"),
            _simulate_argv(model_dir, data, root / "sim"),
            _evaluate_argv(model_dir, data, root / "ev")]
    marker = root / "stuck"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(argv), str(marker)],
                            cwd=REPO, env=_cached_env(root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    t_end = time.monotonic() + 300
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > t_end:
            proc.kill()
            pytest.fail(f"the child never got stuck: {proc.communicate()[1]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return model_dir, data, root


def _summary(out):
    s = json.loads((out / "summary.json").read_text())
    s.pop("wall_s", None)
    return s


def _same_npz(a, b):
    with np.load(a) as x, np.load(b) as y:
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            if k != "metadata":  # the summary, with its wall time
                np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_killed_runs_resume_bit_for_bit(runs):
    model_dir, data, root = runs
    sim, ev = root / "sim", root / "ev"
    for out in (sim, ev):  # the first chunk is kept, nothing is finished
        assert (out / "partial" / "checkpoints" / "1").is_dir()
        assert not (out / "summary.json").exists()
    # The same commands again, in a process of their own.
    resume = ("import json, sys; from stablejax.cli.main import main; "
              "sys.exit(max(main(a) for a in json.loads(sys.argv[1])))")
    argv = [_simulate_argv(model_dir, data, sim), _evaluate_argv(model_dir, data, ev)]
    proc = subprocess.run([sys.executable, "-c", resume, json.dumps(argv)], cwd=REPO,
                          env=_cached_env(root), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "resuming at 0.01 ps" in proc.stdout
    assert not (sim / "partial").exists() and not (ev / "partial").exists()

    ref_sim, ref_ev = root / "ref_sim", root / "ref_ev"
    assert _summary(sim) == _summary(ref_sim)
    assert _summary(sim)["finished"] and _summary(sim)["simulated_ps"] == 0.03
    assert (sim / "stability.csv").read_bytes() == (ref_sim / "stability.csv").read_bytes()
    names = sorted(p.name for p in (ref_sim / "trajectories").iterdir())
    assert names and names == sorted(p.name for p in (sim / "trajectories").iterdir())
    for name in names:  # the killed chunk's extra frames were cut
        assert (sim / "trajectories" / name).read_bytes() == \
            (ref_sim / "trajectories" / name).read_bytes()
    assert _summary(ev) == _summary(ref_ev)
    _same_npz(ev / "arrays.npz", ref_ev / "arrays.npz")
    record = json.loads((ev / "inputs.json").read_text())
    assert record["model"]["dir"] == str(model_dir.resolve())
    assert record["settings"]["md"]["frame_interval_fs"] == 1.0
    assert record["data"]["path"] == str(Path(data).resolve())


def test_finished_result_is_returned_and_other_settings_refused(runs, tmp_path, capsys):
    model_dir, data, root = runs
    out = tmp_path / "ev"
    shutil.copytree(root / "ref_ev", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(_evaluate_argv(model_dir, data, out)) == 0
    assert "already holds this evaluation (same settings)" in capsys.readouterr().out
    assert main(_evaluate_argv(model_dir, data, out, "--seed", "1", "--n-replicas", "3")) == 1
    err = capsys.readouterr().err
    assert "--n-replicas: 2 -> 3" in err and "--seed: 0 -> 1" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_interrupted_overwrite_keeps_the_old_result_until_the_new_one_is_done(
        runs, tmp_path, monkeypatch, capsys):
    """Ctrl-C says which chunks it kept; the old result stays until the new run (npz) is
    resumed by the same command and finished."""
    import stablejax.cli.simulate as cli_simulate

    model_dir, data, root = runs
    out = tmp_path / "sim"
    shutil.copytree(root / "ref_sim", out)
    old = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    Bar = cli_simulate.ProgressBar

    class InterruptingBar(Bar):
        def __call__(self, done, total, info=None):
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_simulate, "ProgressBar", InterruptingBar)
    argv = _simulate_argv(model_dir, data, out, "--format", "npz", "--overwrite")
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert (f"interrupted: 1 of 3 chunks (0.01 ps per replica) are kept in {out / 'partial'}; "
            "run the same command to resume") in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == old
    assert len(list((out / "trajectories").iterdir())) == 3
    part = json.loads((out / "partial" / "summary.json").read_text())
    assert part["interrupted"] and not part["finished"] and part["simulated_ps"] == 0.01
    with np.load(out / "partial" / "trajectories.npz") as z:
        assert z["positions"].shape[:2] == (3, 2)
    monkeypatch.setattr(cli_simulate, "ProgressBar", Bar)
    assert main(argv[:-1]) == 1  # without --overwrite: the old result's settings differ
    assert "--format: \"extxyz\" -> \"npz\"" in capsys.readouterr().err
    assert main(argv) == 0
    assert not (out / "trajectories").exists() and not (out / "partial").exists()
    ref = root / "ref_sim"
    assert _summary(out) == _summary(ref)
    assert (out / "stability.csv").read_bytes() == (ref / "stability.csv").read_bytes()
    with np.load(out / "trajectories.npz") as z:
        assert z["positions"].shape[:2] == (3, 6)
        for i in range(3):  # the extxyz reference holds the same frames (8 decimals)
            frames = read_frames(ref / "trajectories" / f"replica_{i:04d}.extxyz")
            np.testing.assert_allclose(z["positions"][i][z["valid"][i]], frames.positions,
                                       atol=1e-6)


def test_flags_are_checked_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "ev"
    with pytest.raises(SystemExit) as e:
        main(_evaluate_argv(tmp_path, tmp_path, out, "--dt-fs", "0"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --dt-fs: MDConfig.dt_fs must be > 0, got 0.0") and "\n" not in err
    # Legal but implausible settings warn, in one line each naming the flag.
    assert main(_evaluate_argv(tmp_path / "nomodel", tmp_path, out, "--dt-fs", "6",
                               "--frame-interval-fs", "6", "--temperature-k", "20000")) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert any(s.startswith("warning: --dt-fs: ") and "5 fs" in s for s in lines), lines
    assert any(s.startswith("warning: --temperature-k: ") and "10,000 K" in s for s in lines)
    assert lines[-1].startswith(f"error: --model {tmp_path / 'nomodel'}: no such model directory")
    assert not out.exists()


def test_replica_state_round_trips_exactly_with_resized_neighbor_lists():
    """A state whose neighbour lists were reallocated (another static capacity than a fresh
    ``init``'s) is restored on a fresh state's structure and continues bit for bit."""
    import jax
    import jax.numpy as jnp
    from jax_md import energy, partition, space

    from stablejax.simulate import make_simulator
    from stablejax.simulate.snapshot import state_from_arrays, state_to_arrays

    L = 11.4  # 27 argon atoms, cutoff 5.45 A < L / 2
    disp, shift = space.periodic_general(jnp.eye(3) * L, fractional_coordinates=False)
    nbr_fn, lj = energy.lennard_jones_neighbor_list(
        disp, L, sigma=3.405, epsilon=0.0104, r_onset=1.3, r_cutoff=1.6, dr_threshold=0.5,
        format=partition.Dense)
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * L / 3
    R = jnp.asarray(grid[None] + 0.1 * np.random.default_rng(0).normal(size=(2, 27, 3)))
    sim = make_simulator(lambda p, R, **k: lj(R, **k), displacement_fn=disp, shift_fn=shift,
                         neighbor_fn=nbr_fn, masses=np.full(27, 39.95), dt_fs=5.0, n_dump=2,
                         frames_per_chunk=1, integrator="langevin", temperature_k=120.0)
    state = sim.reallocate_neighbors(sim.init({}, R, jax.random.key(4)), extra_capacity=3)
    arrays, static = state_to_arrays(state)
    back = state_from_arrays(sim.init({}, R, jax.random.key(4)), arrays, static)
    assert back.neighbor.max_occupancy == state.neighbor.max_occupancy == static["max_occupancy"]
    for x, y in zip(jax.tree.leaves(sim.run_chunk({}, state)),
                    jax.tree.leaves(sim.run_chunk({}, back))):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="saved state array"):
        state_from_arrays(sim.init({}, R[:1], jax.random.key(4)), arrays, static)
