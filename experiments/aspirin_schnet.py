"""Aspirin / SchNet: data -> QM pre-training -> evaluation -> StABlE -> evaluation -> report.

    python -m experiments.aspirin_schnet --scale demo     # ~10 min on 2 cores
    python -m experiments.aspirin_schnet --scale cpu      # <= 100 min on 2 cores
    python -m experiments.aspirin_schnet --scale paper    # the paper's numbers (GPU)

Every stage resumes from what is on disk (see experiments/common.py).
"""

from __future__ import annotations

from experiments.common import Plan, main as run_main


def make_plan(scale: str, seed: int = 0) -> Plan:
    from stablejax.evaluate import EvalConfig
    from stablejax.train import PretrainConfig, TrainConfig

    if scale == "demo":
        return Plan(
            system="aspirin", model="schnet",
            pretrain=PretrainConfig.schnet(max_epochs=40, batch_size=10, warmup_steps=50,
                                           seed=seed),
            model_overrides={},
            train=TrainConfig.aspirin(n_replicas=8, epoch_ps=0.25,
                                      md={"frame_interval_fs": 25.0}, n_epochs=6,
                                      optimizer={"plateau_patience": 1, "qm_max_batches": 2},
                                      stable_epochs=1, phases={"max_frac_unstable": 0.5},
                                      seed=seed),
            evaluation=EvalConfig(n_replicas=8, time_ps=2.0, seed=seed),
            notes=("Demo scale: 2.5-minute pre-training (batch 10 instead of the paper's 100, "
                   "for more updates per second on a CPU), 6 StABlE epochs, learning from 50% "
                   "unstable replicas (paper 75%) so that the 6 epochs reach a learning phase; "
                   "it shows the pipeline, not converged models.",))
    if scale == "cpu":
        return Plan(
            system="aspirin", model="schnet",
            pretrain=PretrainConfig.schnet(max_epochs=400, batch_size=10, warmup_steps=500,
                                           seed=seed),
            model_overrides={},
            train_frames=250,
            train=TrainConfig.aspirin(n_replicas=32, n_epochs=80,
                                      optimizer={"learning_rate": 3e-3, "qm_weight": 30.0},
                                      stable_epochs=20, seed=seed),
            evaluation=EvalConfig(n_replicas=32, time_ps=25.0, seed=seed),
            notes=("CPU scale: a data-limited SchNet as in the paper's recipe - 250 of the 950 "
                   "training frames (seeded subset; validation/test unchanged), pre-trained "
                   "for 400 epochs in the reference's units (0.05 MSE(E) + 0.95 MSE(F) in eV, "
                   "eV/A; a fixed epoch count, so a seed gives the same model on any machine: "
                   "an 8-minute budget gave 396 epochs on an idle machine and 226 on a loaded "
                   "one). With all 950 frames the pre-trained model survived a median 8.75 ps of "
                   "a 10 ps window with the earlier recipe (energy-weighted loss). StABlE "
                   "runs up to 80 epochs instead of the paper's 500 with the reference's phase "
                   "machine (learning from 75% unstable replicas that replay their failures, "
                   "clip 1, plateau 0.2 / patience 10 on the previous epoch's fraction) and "
                   "the ethanol demo's measured departures from the reference's SGD 1e-3 and "
                   "QM weight 10: SGD 3e-3 and QM weight 30 (on the ethanol demo, 1e-3 / 10 "
                   "barely helped in 100 epochs and let the energy MAE drift; "
                   "experiments/ethanol_schnet.py). stable_epochs 20: with 5 an earlier-recipe "
                   "run stopped at epoch 49 while the unstable fraction was still rising. "
                   "Evaluation 32 replicas x 25 ps, a window long "
                   "enough to measure a median stability time 10x the pre-trained model's "
                   "(2.30 ps before the loss-unit change).",))
    if scale == "paper":
        return Plan(
            system="aspirin", model="schnet", pretrain=PretrainConfig.schnet(seed=seed),
            model_overrides={}, train=TrainConfig.aspirin(seed=seed),
            evaluation=EvalConfig(seed=seed))
    raise ValueError(f"unknown scale {scale!r}")


if __name__ == "__main__":
    raise SystemExit(run_main(make_plan, "aspirin_schnet"))
