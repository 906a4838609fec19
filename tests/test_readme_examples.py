"""The README's quickstart examples (examples/quickstart_cli.sh, examples/quickstart.py): the
README shows each file verbatim, and each file runs end to end at a reduced size.

The reduction is a table of textual substitutions per file; every one must match the file's
text, so an edit of an example that breaks a substitution fails here instead of running the
example at full size.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CLI_EXAMPLE = EXAMPLES / "quickstart_cli.sh"
PY_EXAMPLE = EXAMPLES / "quickstart.py"

#: The tiny data set both examples run on (the CLI's `data generate` flags). A 1 fs time step
#: halves the GFN2-xTB equilibration steps, most of the generation time; the examples' StABlE
#: epochs are then 0.05 ps: one frame of 50 steps.
TINY_DATA_FLAGS = "--n-train 20 --n-val 5 --n-test 10 --reference-ps 0.2 --timestep-fs 1"
TINY_DATA_KWARGS = "n_train=20, n_val=5, n_test=10, reference_ps=0.2, timestep_fs=1.0"

#: (old, new, count): each `old` must occur exactly `count` times. {python} and {data} are
#: filled in at run time (the interpreter, and the tiny data set's directory).
CLI_SUBSTITUTIONS = [
    ("python -m stablejax", "{python} -m stablejax", 6),
    ("data generate ethanol", f"data generate ethanol {TINY_DATA_FLAGS}", 1),
    # `pretrain --system` would generate the demo-sized data set; use the tiny one instead
    ("pretrain --system ethanol", "pretrain --data {data}", 1),
    ("--max-epochs 10", "--max-epochs 2", 1),
    ("--cfg.n-replicas 8 --cfg.epoch-ps 0.25 --cfg.n-epochs 4",
     "--cfg.n-replicas 2 --cfg.epoch-ps 0.05 --cfg.n-epochs 1", 1),
    ("--n-replicas 8 --time-ps 1 ", "--n-replicas 2 --time-ps 0.2 --n-bootstrap 20 ", 2),
]
PY_SUBSTITUTIONS = [
    ('scale_config("ethanol", "demo")', f'scale_config("ethanol", "demo", {TINY_DATA_KWARGS})',
     1),
    ("max_epochs=10", "max_epochs=2", 1),
    ("n_replicas=8, epoch_ps=0.25, n_epochs=4", "n_replicas=2, epoch_ps=0.05, n_epochs=2", 1),
    ("fori_loop(0, 1000,", "fori_loop(0, 100,", 1),
]


def _fenced_blocks(markdown: str) -> list[str]:
    """The contents of the README's fenced code blocks."""
    return [m.group(1) for m in re.finditer(r"^```[^\n]*\n(.*?)^```", markdown, re.M | re.S)]


@pytest.mark.parametrize("example", [CLI_EXAMPLE, PY_EXAMPLE], ids=lambda p: p.name)
def test_readme_shows_example_verbatim(example):
    text = example.read_text()
    blocks = _fenced_blocks((ROOT / "README.md").read_text())
    assert any(text.strip() in block for block in blocks), (
        f"README.md has no fenced code block containing {example.relative_to(ROOT)} verbatim; "
        "paste the file's text into the README")


def _reduced(text: str, substitutions, **fill) -> str:
    for old, new, count in substitutions:
        found = text.count(old)
        assert found == count, (
            f"substitution {old!r} matches {found} times, expected {count}: the example changed; "
            "update the table in tests/test_readme_examples.py")
        text = text.replace(old, new.format(**fill))
    return text


def _env(tmp_path: Path) -> dict:
    # Compilation is most of the run time at these sizes: compile without XLA's optimisations,
    # into a persistent cache shared by the commands (the stages compile many of the same
    # functions: same model, same shapes).
    return {**os.environ, "STABLEJAX_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1",
            "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
            "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _run(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    """(working directory, data set directory): the tiny ethanol data set, generated once for
    both examples, cached under <working directory>/data."""
    tmp = tmp_path_factory.mktemp("examples")
    proc = _run([sys.executable, "-m", "stablejax", "data", "generate", "ethanol",
                 *TINY_DATA_FLAGS.split()], tmp)
    found = re.search(r"^data set: (.+)$", proc.stdout, re.M)
    assert found, proc.stdout
    return tmp, Path(found.group(1))


@pytest.mark.slow  # make test-slow (default-suite time); the Python quickstart stays
def test_cli_example_runs(tiny_data):
    tmp, data = tiny_data
    script = _reduced(CLI_EXAMPLE.read_text(), CLI_SUBSTITUTIONS,
                      python=shlex.quote(sys.executable), data=shlex.quote(str(data)))
    (tmp / "quickstart_cli.sh").write_text(script)
    _run(["bash", "quickstart_cli.sh"], tmp)
    runs = tmp / "runs"
    for path in ("eth/model.json", "eth/eval/summary.json", "eth-stable/results.json",
                 "eth-stable/eval/summary.json", "eth-stable/report.md"):
        assert (runs / path).is_file(), f"missing runs/{path}"


def test_python_example_runs(tiny_data):
    tmp, data = tiny_data
    script = _reduced(PY_EXAMPLE.read_text(), PY_SUBSTITUTIONS)
    (tmp / "quickstart.py").write_text(script)
    proc = _run([sys.executable, "quickstart.py"], tmp)
    assert f"in {data}\n" in proc.stdout, "not the fixture's (cached) data set:\n" + proc.stdout
    for line in ("data:", "pre-training:", "StABlE:", "JAX-MD:", "ASE:"):
        assert line in proc.stdout, proc.stdout
    assert (tmp / "runs" / "quickstart-stable" / "metrics.jsonl").is_file()
