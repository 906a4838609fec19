"""Training: QM losses, pre-training, and the StABlE loop.

``stablejax.train`` is both this package and the StABlE entry point: the package module is
callable, so ``stablejax.train(state, cfg, run_dir=...)`` runs :func:`stablejax.train.stable.train`
while ``stablejax.train.TrainState`` etc. stay importable.
"""

import sys
import types

from stablejax.evaluate.qm import evaluate_qm
from stablejax.train.losses import QMLossConfig, qm_loss
from stablejax.train.model_spec import ModelSpec, spec_from_data
from stablejax.train.learn import StableData, learning_frames, make_learn_step
from stablejax.train.optim import (
    PlateauState,
    observe_plateau,
    plateau_of,
    pretrain_optimizer,
    scale_by_plateau,
    stable_optimizer,
)
from stablejax.train.pretrain import (
    PretrainConfig,
    PretrainState,
    load_best_params,
    pretrain,
)
from stablejax.train.problem import Problem, make_problem
from stablejax.train.stable import StableFns, TrainState, make_stable, train, train_epoch
from stablejax.train.stable_config import Phase, TrainConfig

__all__ = ["ModelSpec", "Phase", "PlateauState", "PretrainConfig", "PretrainState", "Problem",
           "QMLossConfig", "StableData", "StableFns", "TrainConfig", "TrainState", "evaluate_qm",
           "learning_frames", "load_best_params", "make_learn_step", "make_problem",
           "make_stable", "observe_plateau", "plateau_of", "pretrain", "pretrain_optimizer",
           "qm_loss", "scale_by_plateau", "spec_from_data", "stable_optimizer", "train",
           "train_epoch"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
