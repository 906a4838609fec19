"""Fuzzing the config loaders (hypothesis, the ``ci`` profile of conftest.py): nested JSON
overrides of every stage's config, ``--config`` files of ``stablejax train`` and command-line
flags. Every input either gives a valid config or raises ``ValueError`` (the project's
``InputError`` included) with a one-line message; a tyro parse error exits with status 2. No
other exception, no NaN or inf accepted."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from stablejax.config import from_dict, replace, to_dict  # noqa: E402
from stablejax.evaluate import EvalConfig  # noqa: E402
from stablejax.train import PretrainConfig  # noqa: E402
from stablejax.train.stable_config import TrainConfig  # noqa: E402

pytestmark = pytest.mark.fuzz

CONFIGS = {"train": TrainConfig.aspirin(), "eval": EvalConfig(), "pretrain": PretrainConfig()}


def _paths(d: dict, prefix=()) -> list[tuple[str, ...]]:
    out = []
    for k, v in d.items():
        out.append(prefix + (k,))
        if isinstance(v, dict):
            out.extend(_paths(v, prefix + (k,)))
    return out


PATHS = {name: _paths(to_dict(cfg)) for name, cfg in CONFIGS.items()}
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["nose_hoover", "langevin", "nve", "reference", "physical", "float32",
                     "float64", "four", ""]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


@st.composite
def overrides(draw, name: str) -> dict:
    """A nested override dict: real field paths (mostly) or made-up names, any JSON value."""
    out: dict = {}
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.one_of(st.sampled_from(PATHS[name]),
                              st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=2)
                              .map(tuple)))
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else {}
        node[path[-1]] = draw(values)
    return out


def _finite_numbers(d) -> bool:
    if isinstance(d, dict):
        return all(_finite_numbers(v) for v in d.values())
    if isinstance(d, (list, tuple)):
        return all(_finite_numbers(v) for v in d)
    return not isinstance(d, float) or math.isfinite(d)


def _accepted_or_one_line_error(build) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # absurd-but-legal values warn; that is allowed
        try:
            cfg = build()
        except ValueError as e:
            assert str(e) and "\n" not in str(e), repr(e)
            return
    assert _finite_numbers(to_dict(cfg)), cfg
    # a config that was accepted round-trips through its JSON form
    assert from_dict(type(cfg), json.loads(json.dumps(to_dict(cfg)))) == cfg


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_nested_overrides_give_a_config_or_a_one_line_error(name):
    @settings(max_examples=60)
    @given(over=overrides(name))
    def check(over):
        _accepted_or_one_line_error(lambda: replace(CONFIGS[name], over))

    check()


@given(text=st.one_of(st.text(max_size=40), st.binary(max_size=40).map(
    lambda b: b.decode("latin-1")),
    overrides("train").map(lambda d: json.dumps(d, allow_nan=True))))
@settings(max_examples=60)
def test_train_config_files_load_or_fail_in_one_line(tmp_path_factory, text):
    from stablejax.cli.train import load_config

    path = tmp_path_factory.mktemp("cfg") / "cfg.json"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")

    def build():
        try:
            return load_config(path, "aspirin")
        except ValueError as e:
            assert str(path) in str(e), e  # the message names the file
            raise

    _accepted_or_one_line_error(build)


FLAGS = ["--cfg.n-replicas", "--cfg.epoch-ps", "--cfg.md.dt-fs", "--cfg.md.temperature-k",
         "--cfg.md.integrator", "--cfg.optimizer.learning-rate", "--cfg.seed",
         "--cfg.estimator.chunk-size", "--cfg.hr.r-max-angstrom", "--cfg.stable-epochs"]


@given(args=st.lists(st.tuples(st.sampled_from(FLAGS), st.one_of(
    st.sampled_from(["0", "-1", "1e-3", "nan", "inf", "four", "2.7", "None", "", "1e400",
                     "langevin", "10"]),
    st.integers(-1000, 10**9).map(str), st.floats().map(str))), min_size=1, max_size=3))
@settings(max_examples=60)
def test_train_flags_parse_or_fail_cleanly(args):
    """``stablejax train`` flags: tyro refuses what it cannot parse (SystemExit 2); every
    parsed value is validated by the config (one-line ValueError) before anything runs."""
    import contextlib
    import io

    import tyro

    from stablejax.cli.train import TrainArgs

    argv = [x for pair in args for x in pair]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            _accepted_or_one_line_error(lambda: tyro.cli(
                TrainArgs, args=argv, default=TrainArgs(cfg=TrainConfig.aspirin())).cfg)
        except SystemExit as e:
            assert e.code == 2


def test_accepted_configs_are_dataclasses():
    assert all(dataclasses.is_dataclass(c) for c in CONFIGS.values())
