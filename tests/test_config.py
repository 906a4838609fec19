"""The config tree: validation messages, JSON round trip, nested overrides, one MD config."""

import dataclasses
import json

import pytest

from stablejax.cli.train import load_config
from stablejax.config import HRConfig, MDConfig, from_dict, replace, to_dict, to_json
from stablejax.evaluate import EvalConfig
from stablejax.train import PretrainConfig, TrainConfig
from stablejax.train.losses import QMLossConfig


@pytest.mark.parametrize("cfg", [TrainConfig(), TrainConfig.ac_ala3_nhme(), EvalConfig(),
                                 MDConfig(), HRConfig()])
def test_json_round_trip(cfg):
    text = to_json(cfg)
    back = from_dict(type(cfg), json.loads(text))
    assert back == cfg
    assert to_dict(back) == json.loads(text)


def test_nested_overrides_merge_and_name_unknown_fields():
    cfg = replace(TrainConfig(), {"optimizer": {"learning_rate": 3e-3,
                                                "qm_loss": {"energy_weight": 1.0}},
                                  "md": {"dt_fs": 0.25}, "n_epochs": 7})
    assert cfg.optimizer.learning_rate == 3e-3 and cfg.optimizer.qm_weight == 10.0
    assert cfg.optimizer.qm_loss == QMLossConfig(1.0, 0.95)
    assert cfg.md.dt_fs == 0.25 and cfg.md.integrator == "nose_hoover" and cfg.n_epochs == 7
    assert cfg.steps_per_epoch == 4000 and cfg.md.n_dump == 200
    with pytest.raises(ValueError, match=r"TrainConfig\.optimizer\.lr is not a field "
                                         r"\(fields: learning_rate, "):
        replace(TrainConfig(), {"optimizer": {"lr": 1.0}})
    with pytest.raises(ValueError, match=r"TrainConfig\.estimator: expected a JSON object of EstimatorConfig"):
        replace(TrainConfig(), {"estimator": 3})


@pytest.mark.parametrize("build, message", [
    (lambda: MDConfig(dt_fs=-1), "MDConfig.dt_fs must be > 0, got -1"),
    (lambda: MDConfig(integrator="verlet"), "MDConfig.integrator must be one of"),
    (lambda: MDConfig(frame_interval_fs=0.7), "MDConfig.frame_interval_fs must be a positive "
                                              "multiple of dt_fs=0.5, got 0.7"),
    (lambda: TrainConfig(epoch_ps=0.001), "TrainConfig.epoch_ps must be a positive multiple"),
    (lambda: replace(TrainConfig(), {"phases": {"min_frac_unstable": 0.9}}),
     r"PhaseConfig.min_frac_unstable must be in \[0, max_frac_unstable\), got 0.9"),
    (lambda: EvalConfig(n_replicas=0), "EvalConfig.n_replicas must be >= 1, got 0"),
    (lambda: PretrainConfig(warmup_factor=0.0), r"PretrainConfig.warmup_factor must be in "
                                                r"\(0, 1\], got 0.0"),
])
def test_validation_names_field_value_and_rule(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_training_and_evaluation_share_one_md_config():
    names = {f.name for f in dataclasses.fields(MDConfig)}
    assert isinstance(TrainConfig().md, MDConfig) and isinstance(EvalConfig().md, MDConfig)
    for cls in (TrainConfig, EvalConfig):  # no MD field is spelled again beside md
        assert not names & {f.name for f in dataclasses.fields(cls)}, cls


def test_train_cli_config_file(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"optimizer": {"learning_rate": 0.01}, "n_replicas": 4}))
    cfg = load_config(path, "ac-ala3-nhme")
    assert cfg.optimizer.learning_rate == 0.01 and cfg.n_replicas == 4
    assert cfg.hr.r_max_angstrom == 15.0  # the preset's
    path.write_text(json.dumps({"optimizer": {"learning_rat": 0.01}}))
    with pytest.raises(ValueError, match=r"cfg.json: TrainConfig\.optimizer\.learning_rat"):
        load_config(path, "aspirin")


def test_top_level_names():
    import stablejax
    from stablejax.train import make_stable

    assert stablejax.make_stable is make_stable
    assert stablejax.MDConfig is MDConfig and stablejax.EvalConfig is EvalConfig
    assert stablejax.config.replace is replace


@pytest.mark.parametrize("overrides, message", [
    ({"n_replicas": "four"}, "TrainConfig.n_replicas must be int, got 'four'"),
    ({"n_replicas": 2.7}, "TrainConfig.n_replicas must be int, got 2.7"),
    ({"optimizer": {"qm_max_batches": 1.5}}, r"OptimizerConfig.qm_max_batches must be int \| None"),
    ({"estimator": {"forward_energies": 1}}, "EstimatorConfig.forward_energies must be bool"),
    ({"md": {"dt_fs": "0.5"}}, "MDConfig.dt_fs must be float, got '0.5'"),
])
def test_wrong_types_are_named_before_any_rule(overrides, message):
    """A JSON value of the wrong type is one line naming the field (not a TypeError from a
    comparison, nor a traceback from inside JAX later)."""
    with pytest.raises(ValueError, match=message):
        replace(TrainConfig(), overrides)
    assert replace(TrainConfig(), {"optimizer": {"learning_rate": 1}}).optimizer.learning_rate == 1
