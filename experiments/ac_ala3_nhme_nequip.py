"""Ac-Ala3-NHMe / NequIP: data -> QM pre-training -> evaluation -> StABlE -> evaluation -> report.

    python -m experiments.ac_ala3_nhme_nequip --scale demo
    python -m experiments.ac_ala3_nhme_nequip --scale cpu      # <= 100 min on 2 cores
    python -m experiments.ac_ala3_nhme_nequip --scale paper    # the paper's numbers (GPU)

Evaluation follows the paper's MD22 protocol: Nose-Hoover at 500 K, tolerance 0.5 A, h(r) to 15 A.
"""

from __future__ import annotations

import dataclasses

from experiments.common import Plan, main as run_main

SYSTEM = "ac-ala3-nhme"


def make_plan(scale: str, seed: int = 0) -> Plan:
    from stablejax.config import HRConfig
    from stablejax.evaluate import EvalConfig
    from stablejax.evaluate.stability_run import EVAL_MD
    from stablejax.models import NequIPConfig
    from stablejax.train import PretrainConfig, TrainConfig

    ev = dict(md=dataclasses.replace(EVAL_MD, integrator="nose_hoover"),
              hr=HRConfig(r_max_angstrom=15.0), seed=seed)
    if scale == "demo":
        return Plan(
            system=SYSTEM, model="nequip",
            pretrain=PretrainConfig.nequip(max_epochs=20, seed=seed),
            model_overrides={},
            train=TrainConfig.ac_ala3_nhme(n_replicas=4, epoch_ps=0.2,
                                           md={"frame_interval_fs": 25.0}, n_epochs=4,
                                           optimizer={"plateau_patience": 1,
                                                      "qm_max_batches": 4},
                                           stable_epochs=1, seed=seed),
            evaluation=EvalConfig(n_replicas=4, time_ps=1.0, **ev),
            notes=("Demo scale: 2.5-minute pre-training and 4 StABlE epochs; shows the "
                   "pipeline, not converged models.",))
    if scale == "cpu":
        return Plan(
            system=SYSTEM, model="nequip",
            pretrain=PretrainConfig.nequip(max_epochs=150, seed=seed),
            model_overrides=dict(NequIPConfig.CPU_SCALE),
            train_frames=50,
            train=TrainConfig.ac_ala3_nhme(n_replicas=16, epoch_ps=0.5, n_epochs=60,
                                           md={"frame_interval_fs": 25.0},
                                           optimizer={"learning_rate": 5e-3,
                                                      "plateau_patience": 4,
                                                      "qm_max_batches": 20},
                                           phases={"max_frac_unstable": 0.5},
                                           estimator={"max_steps_per_epoch": 5},
                                           stable_epochs=4, seed=seed),
            evaluation=EvalConfig(n_replicas=16, time_ps=5.0, **ev),
            notes=("CPU scale: a smaller NequIP (16 channels per irrep, 2 layers, radial MLP "
                   "2x32; 16k parameters instead of 121k) because the paper's model runs ~27 "
                   "replica-steps/s on one core here. Data-limited as in the paper's recipe: "
                   "50 of the 1,000 training frames (seeded subset), pre-trained for 150 epochs "
                   "(per-atom energy 1 / forces 1000 over the force RMS, the reference's units; "
                   "a fixed epoch count: a 4-minute budget gave 153 epochs). With the earlier "
                   "recipe (energy-weighted loss, fresh velocities on reset) less data-limited "
                   "models were too stable for a CPU-sized StABlE run (1,000 frames: every "
                   "replica survived 16 x 4 ps; 200 frames: 81% survived 16 x 10 ps). "
                   "Evaluation 16 x 5 ps for both models. SGD rate 5e-3 (paper 1e-3) for the "
                   "few learning epochs a CPU affords. Learning starts once 50% of the "
                   "replicas have failed (paper 75%): at 75% with the earlier recipe learning "
                   "began only at epoch 52 of 60. Frames every 50 steps and up to 5 SGD steps "
                   "per learning epoch, steps 2-5 on the same frames importance-reweighted "
                   "while their ESS stays >= 90% (docs/method.md §5). QM weight 10, as the "
                   "paper. These departures were measured with the earlier recipe and are not "
                   "yet re-tuned with the reference's loss units and replayed failures.",))
    if scale == "paper":
        return Plan(
            system=SYSTEM, model="nequip", pretrain=PretrainConfig.nequip(seed=seed),
            model_overrides={}, train=TrainConfig.ac_ala3_nhme(seed=seed),
            evaluation=EvalConfig(n_replicas=48, time_ps=300.0, **ev))
    raise ValueError(f"unknown scale {scale!r}")


if __name__ == "__main__":
    raise SystemExit(run_main(make_plan, "ac_ala3_nhme_nequip"))
