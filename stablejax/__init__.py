"""stablejax: StABlE training (Stability-Aware Boltzmann Estimator) of ML interatomic potentials
in JAX and JAX-MD.

Units everywhere: eV, Angstrom, fs, K, amu (kT in eV).

Entry points (imported on first use, so ``import stablejax`` stays light):

* ``stablejax.train(state, cfg)`` with ``stablejax.TrainState.create(...)`` (or
  ``stablejax.make_stable(problem, cfg).init(params)``) / ``stablejax.TrainConfig``: StABlE
  training.
* ``stablejax.MDConfig`` / ``stablejax.EvalConfig``: the simulation settings shared by training,
  evaluation and the CLI, and the evaluation settings (``stablejax.config``: JSON round trip,
  nested overrides).
* ``stablejax.pretrain(state, cfg, train, val)`` with ``stablejax.PretrainState.create(...)``:
  QM energy/force pre-training.
* ``stablejax.Calculator(run_dir)``: a trained model as an ASE calculator;
  ``stablejax.load_model(run_dir)`` (-> ``stablejax.LoadedModel``): as a JAX-MD energy function
  ``energy_fn(R)``; ``stablejax.bind_model(spec, params)``: the same for a model in memory.
* ``stablejax.pipeline``: the data -> pre-training -> StABlE stages the CLI and experiments run.
* ``stablejax.data``, ``stablejax.models``, ``stablejax.simulate``, ``stablejax.observables``,
  ``stablejax.stability``, ``stablejax.estimator``, ``stablejax.io``: the building blocks.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "pretrain": "stablejax.train.pretrain",
    "PretrainState": "stablejax.train.pretrain",
    "PretrainConfig": "stablejax.train.pretrain",
    "TrainState": "stablejax.train.stable",
    "TrainConfig": "stablejax.train.stable_config",
    "make_problem": "stablejax.train.problem",
    "make_stable": "stablejax.train.stable",
    "MDConfig": "stablejax.config",
    "HRConfig": "stablejax.config",
    "EvalConfig": "stablejax.evaluate.stability_run",
    "Calculator": "stablejax.calculator",
    "load_model": "stablejax.loading",
    "bind_model": "stablejax.loading",
    "LoadedModel": "stablejax.loading",
}
_SUBMODULES = {"config", "data", "io", "models", "simulate", "observables", "stability",
               "estimator", "train", "evaluate", "pipeline", "units", "calculator",
               "loading"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"stablejax.{name}")
    raise AttributeError(f"module 'stablejax' has no attribute {name!r}")
