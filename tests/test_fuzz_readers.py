"""Fuzzing of the data readers: every input either loads (finite arrays, consistent shapes) or
raises InputError (FileNotFoundError for a missing file) with a one-line message naming the file.

The CI profile of tests/conftest.py draws a fixed set of examples; HYPOTHESIS_PROFILE=long draws
many more at random.
"""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from stablejax.data import make_frames, make_system  # noqa: E402
from stablejax.data.dataset import dataset_info, load_dataset  # noqa: E402
from stablejax.errors import InputError  # noqa: E402
from stablejax.io import read_ase, read_metadata, read_npz, write_npz  # noqa: E402

# A hang fails the test (pytest-timeout) instead of blocking the run.
pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(300)]

FLOATS = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
ODD_FLOATS = st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308, 0.0])
# The data set reader reads seven files per example: it gets half the profile's examples.
DATASET_EXAMPLES = max(10, settings.default.max_examples // 2)


def _outcome(label, read, names):
    """Run ``read()``; return its result, or None after checking the error it raised (that it
    is an InputError or FileNotFoundError, one line, naming one of ``names``)."""
    try:
        out = read()
    except (InputError, FileNotFoundError) as e:
        msg = str(e)
        assert "\n" not in msg, msg
        assert any(str(n) in msg for n in names), msg
        event(f"{label}: {type(e).__name__}")
        return None
    event(f"{label}: loaded")
    return out


def _check_frames(fr):
    n_frames, n_atoms = fr.n_frames, fr.n_atoms
    assert n_frames > 0 and n_atoms > 0
    assert fr.positions.shape == (n_frames, n_atoms, 3)
    assert fr.atomic_numbers.shape == (n_atoms,)
    assert ((fr.atomic_numbers >= 1) & (fr.atomic_numbers <= 118)).all()
    assert (fr.energies is None) == (fr.forces is None)
    assert np.isfinite(fr.positions).all()
    if fr.energies is not None:
        assert fr.energies.shape == (n_frames,) and np.isfinite(fr.energies).all()
        assert fr.forces.shape == fr.positions.shape and np.isfinite(fr.forces).all()
    if fr.cell is not None:
        assert fr.cell.shape in ((3, 3), (n_frames, 3, 3)) and np.isfinite(fr.cell).all()
    assert len(fr.pbc) == 3


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --- npz: generated dicts of arrays ---------------------------------------------------------

NPZ_KEYS = ["R", "z", "E", "F", "cell", "pbc", "energy_unit", "length_unit", "metadata"]
MUTATIONS = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(NPZ_KEYS)),
    st.tuples(st.just("rename"), st.sampled_from(NPZ_KEYS),
              st.sampled_from(["coords", "positions", "nuclear_charges", "energies", "forces",
                               "lattice", "e_unit", "r_unit", "junk"])),
    st.tuples(st.just("dtype"), st.sampled_from(NPZ_KEYS),
              st.sampled_from(["f4", "i8", "u1", "bool", "c16", "U3", "S3", "f2"])),
    st.tuples(st.just("shape"), st.sampled_from(NPZ_KEYS),
              st.sampled_from([(), (0,), (1,), (2, 1), (3, 3), (1, 2, 3), (2, 2, 2, 3)])),
    st.tuples(st.just("value"), st.sampled_from(["R", "E", "F", "cell"]), ODD_FLOATS,
              st.integers(0, 50)),
    st.tuples(st.just("value"), st.just("z"), st.sampled_from([0, -1, 119, 1000, 2**40, 1.5]),
              st.integers(0, 50)),
    st.tuples(st.just("text"), st.sampled_from(["energy_unit", "length_unit", "metadata"]),
              st.sampled_from(["eV", "kcal/mol", "Hartree", "bohr", "nm", "parsec", "", "{",
                               "[1]", '{"a": 1}', "\u00e9\n", b"eV", b"\xff"])),
)


@st.composite
def npz_arrays(draw):
    n, a = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    grid = lambda *shape: np.array(draw(st.lists(FLOATS, min_size=int(np.prod(shape)),  # noqa: E731
                                                 max_size=int(np.prod(shape))))).reshape(shape)
    d = {"R": grid(n, a, 3), "z": np.array(draw(st.lists(st.integers(1, 118), min_size=a,
                                                          max_size=a))),
         "E": grid(n), "F": grid(n, a, 3), "energy_unit": np.array("eV")}
    if draw(st.booleans()):
        d.update(cell=np.eye(3) * 10.0, pbc=np.array([True, True, draw(st.booleans())]))
    for m in draw(st.lists(MUTATIONS, max_size=3)):
        key = m[1]
        if key not in d and m[0] != "text":
            continue
        if m[0] == "drop":
            d.pop(key)
        elif m[0] == "rename":
            d[m[2]] = d.pop(key)
        elif m[0] == "dtype":
            d[key] = d[key].astype(m[2]) if d[key].dtype.kind != "U" else d[key]
        elif m[0] == "shape":
            d[key] = np.resize(d[key], m[2])
        elif m[0] == "value" and d[key].size and d[key].dtype.kind in "biuf":
            d[key] = d[key].astype(type(m[2]) if key == "z" else np.float64)
            d[key].reshape(-1)[m[3] % d[key].size] = m[2]
        elif m[0] == "text":
            d[key] = np.array(m[2])
    return d


@given(npz_arrays(), st.sampled_from([None, "eV", "kcal/mol", "parsec"]))
def test_fuzz_npz_arrays(tmp_dir, arrays, energy_unit):
    path = tmp_dir / "gen.npz"
    np.savez(path, **arrays)
    fr = _outcome("read_npz", lambda: read_npz(path, energy_unit=energy_unit), [path])
    if fr is not None:
        _check_frames(fr)
    _outcome("read_metadata", lambda: read_metadata(path), [path])


# --- npz: byte-level corruption of a valid file ---------------------------------------------


@pytest.fixture(scope="module")
def valid_npz_bytes(tmp_dir):
    rng = np.random.default_rng(0)
    fr = make_frames(rng.normal(size=(3, 4, 3)), [6, 1, 1, 8], rng.normal(size=3),
                     rng.normal(size=(3, 4, 3)))
    return write_npz(tmp_dir / "valid.npz", fr, {"frame_interval_fs": 2.5}).read_bytes()


CORRUPTIONS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)),
                                        min_size=1, max_size=4)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("random"), st.binary(max_size=64)),
)


def _corrupt(raw: bytes, c) -> bytes:
    at = lambda x: min(int(x * len(raw)), len(raw) - 1)  # noqa: E731
    if c[0] == "truncate":
        return raw[: at(c[1])]
    if c[0] == "flip":
        b = bytearray(raw)
        for x, mask in c[1]:
            b[at(x)] ^= mask
        return bytes(b)
    if c[0] == "insert":
        return raw[: at(c[1])] + c[2] + raw[at(c[1]):]
    return (b"PK\x03\x04" if c[1][:1] == b"P" else b"") + c[1]


@given(CORRUPTIONS)
def test_fuzz_npz_bytes(tmp_dir, valid_npz_bytes, corruption):
    path = tmp_dir / "corrupt.npz"
    path.write_bytes(_corrupt(valid_npz_bytes, corruption))
    fr = _outcome("read_npz", lambda: read_npz(path), [path])
    if fr is not None:
        _check_frames(fr)
    _outcome("read_metadata", lambda: read_metadata(path), [path])


# --- extxyz: generated and mutated text -----------------------------------------------------

NUMBERS = FLOATS.map(lambda x: f"{x:.6f}")


@st.composite
def extxyz_text(draw):
    n_frames, n_atoms = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    species = draw(st.lists(st.sampled_from(["H", "C", "O"]), min_size=n_atoms,
                            max_size=n_atoms))
    e_key = draw(st.sampled_from(["energy", "REF_energy"]))
    f_key = draw(st.sampled_from(["forces", "REF_forces"]))
    # Labels in all frames, in none, or per frame.
    mode = draw(st.sampled_from(["all", "none", "energy only", "forces only", "mixed"]))
    box = draw(st.sampled_from(['pbc="F F F"', 'Lattice="9 0 0 0 9 0 0 0 9" pbc="T T T"',
                                'Lattice="9 0 0 0 9 0 0 0 0" pbc="T T F"']))
    lines = []
    for _ in range(n_frames):
        has_e = mode in ("all", "energy only") or (mode == "mixed" and draw(st.booleans()))
        has_f = mode in ("all", "forces only") or (mode == "mixed" and draw(st.booleans()))
        props = "species:S:1:pos:R:3" + (f":{f_key}:R:3" if has_f else "")
        energy = f" {e_key}={draw(NUMBERS)}" if has_e else ""
        lines += [str(n_atoms), f"Properties={props}{energy} {box}"]
        for s in species:
            cols = [draw(NUMBERS) for _ in range(6 if has_f else 3)]
            lines.append(" ".join([s, *cols]))
    edits = st.tuples(
        st.sampled_from(["cut", "drop line", "dup line", "token", "drop column"]), st.floats(0, 1),
        st.sampled_from(["abc", "", "nan", "inf", "1e999", "-", "2", "T", "X", "Zz"]),
    )
    for kind, x, token in draw(st.lists(edits, max_size=2)):
        i = min(int(x * len(lines)), len(lines) - 1)
        if kind == "cut":
            lines[i] = lines[i][: len(lines[i]) // 2]
        elif kind == "drop line":
            del lines[i]
        elif kind == "dup line":
            lines.insert(i, lines[i])
        elif lines[i].split():
            words = lines[i].split()
            j = int(x * 97) % len(words)
            words[j: j + 1] = [] if kind == "drop column" else [token]
            lines[i] = " ".join(words)
        if not lines:
            break
    return "\n".join(lines) + "\n"


@given(extxyz_text(), st.sampled_from([None, "REF_energy", "bogus"]),
       st.sampled_from([None, "REF_forces"]))
def test_fuzz_extxyz(tmp_dir, text, energy_key, forces_key):
    path = tmp_dir / "gen.extxyz"
    path.write_text(text)
    fr = _outcome("read_ase", lambda: read_ase(path, energy_key=energy_key,
                                               forces_key=forces_key), [path])
    if fr is not None:
        _check_frames(fr)


# --- data set directory ---------------------------------------------------------------------

DATASET_FILES = ["system.json", "train.npz", "val.npz", "test.npz", "reference.npz",
                 "settings.json", "complete.json"]


@pytest.fixture(scope="module")
def valid_dataset(tmp_dir):
    """A small data set written by the project's own writers (as the generator does)."""
    root = tmp_dir / "dataset"
    rng = np.random.default_rng(1)
    z = np.array([8, 1, 1])
    eq = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])

    def frames(n):
        return make_frames(eq + 0.05 * rng.normal(size=(n, 3, 3)), z, rng.normal(size=n),
                           rng.normal(size=(n, 3, 3)))

    train = frames(4)
    for name, fr in (("train", train), ("val", frames(2)), ("test", frames(2))):
        write_npz(root / f"{name}.npz", fr, {"split": name})
    write_npz(root / "reference.npz", frames(5), {"split": "reference", "frame_interval_fs": 2.5})
    make_system("water", z, eq, train.positions, temperature_k=300.0,
                timestep_fs=0.5).save(root / "system.json")
    (root / "settings.json").write_text(json.dumps({"system": "water"}, indent=1))
    (root / "complete.json").write_text(json.dumps({"wall_s": 1.0}, indent=1))
    assert load_dataset(root).train.n_frames == 4
    return root


SYSTEM_FIELDS = ["name", "temperature_k", "timestep_fs", "atomic_numbers", "bonds",
                 "equilibrium_positions_angstrom", "reference_bond_lengths_angstrom"]
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 200), st.floats(allow_nan=True),
              st.text(max_size=4)),
    lambda inner: st.lists(inner, max_size=4), max_leaves=12,
)
DATASET_MUTATIONS = st.one_of(
    st.tuples(st.just("remove"), st.sampled_from(DATASET_FILES)),
    st.tuples(st.just("bytes"), st.sampled_from(DATASET_FILES), CORRUPTIONS),
    st.tuples(st.just("replace"), st.sampled_from(DATASET_FILES), st.sampled_from(DATASET_FILES)),
    st.tuples(st.just("field"), st.sampled_from(SYSTEM_FIELDS), JSON_VALUES),
    st.tuples(st.just("other atoms"), st.sampled_from(DATASET_FILES[1:5])),
    st.tuples(st.just("no interval"), st.just("reference.npz")),
)


def _mutate_dataset(root, m):
    path = root / m[1]
    if m[0] == "remove":
        path.unlink(missing_ok=True)
    elif m[0] == "bytes" and path.exists():
        path.write_bytes(_corrupt(path.read_bytes(), m[2]))
    elif m[0] == "replace" and (root / m[2]).exists():
        path.write_bytes((root / m[2]).read_bytes())
    elif m[0] == "field" and path.exists():
        try:
            d = json.loads(path.read_bytes())
        except ValueError:  # an earlier mutation damaged it
            return
        if isinstance(d, dict):
            d[m[2]] = m[3]
            path.write_text(json.dumps(d))
    elif m[0] == "other atoms":
        fr = make_frames(np.zeros((2, 2, 3)) + np.arange(2.0)[:, None], [1, 1], np.zeros(2),
                         np.zeros((2, 2, 3)))
        write_npz(path, fr, {"frame_interval_fs": 2.5})
    elif m[0] == "no interval" and path.exists():
        write_npz(path, read_npz(path))


@settings(max_examples=DATASET_EXAMPLES)
@given(st.lists(DATASET_MUTATIONS, max_size=3))
def test_fuzz_dataset_directory(tmp_dir, valid_dataset, mutations):
    root = tmp_dir / "mutated"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(valid_dataset, root)
    for m in mutations:
        if m[0] == "field":
            m = (m[0], "system.json", m[1], m[2])
        try:
            _mutate_dataset(root, m)
        except InputError:  # "no interval" on a file an earlier mutation damaged
            pass
    ds = _outcome("load_dataset", lambda: load_dataset(root), [root])
    if ds is not None:
        for k in ("train", "val", "test", "reference"):
            fr = getattr(ds, k)
            _check_frames(fr)
            assert fr.n_atoms == ds.system.n_atoms
        assert np.isfinite(ds.reference_interval_fs) and ds.reference_interval_fs > 0
        assert np.isfinite(ds.system.equilibrium_positions).all()
        assert ((ds.system.bonds >= 0) & (ds.system.bonds < ds.system.n_atoms)).all()
    _outcome("dataset_info", lambda: dataset_info(root), [root])
