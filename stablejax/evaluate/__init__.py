"""Evaluation: long stability simulations and the paper's metrics; reports."""

from stablejax.evaluate.intervals import BootstrapInterval, bootstrap_ci, bootstrap_interval
from stablejax.evaluate.qm import evaluate_qm
from stablejax.evaluate.stability_run import EvalConfig, EvalResult, evaluate_model
from stablejax.evaluate.stream import (
    Chunk,
    Stream,
    StreamAcc,
    StreamMetrics,
    make_stream,
    run_stream,
)

__all__ = ["BootstrapInterval", "Chunk", "EvalConfig", "EvalResult", "Stream", "StreamAcc",
           "StreamMetrics", "bootstrap_ci", "bootstrap_interval", "evaluate_model", "evaluate_qm",
           "make_stream", "run_stream"]
