"""Training: QM losses, pre-training, and the StABlE loop.

``stablejax.train`` is both this package and the StABlE entry point: the package module is
callable, so ``stablejax.train(state, cfg, run_dir=...)`` runs :func:`stablejax.train.stable.train`
while ``stablejax.train.TrainState`` etc. stay importable.
"""

import sys
import types

from stablejax.train.losses import QMLossConfig, qm_loss
from stablejax.train.model_spec import ModelSpec, spec_from_data
from stablejax.train.plateau import PlateauState, plateau_update
from stablejax.train.pretrain import (
    PretrainConfig,
    PretrainState,
    evaluate_qm,
    load_best_params,
    pretrain,
)
from stablejax.train.problem import Problem, make_problem
from stablejax.train.stable import TrainState, make_learn_step, train, train_epoch
from stablejax.train.stable_config import Phase, TrainConfig

__all__ = ["ModelSpec", "Phase", "PlateauState", "PretrainConfig", "PretrainState", "Problem",
           "QMLossConfig", "TrainConfig", "TrainState", "evaluate_qm", "load_best_params",
           "make_learn_step", "make_problem", "plateau_update", "pretrain", "qm_loss",
           "spec_from_data", "train", "train_epoch"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
