"""Evaluation: long stability simulations and the paper's metrics; reports."""

from stablejax.evaluate.stability_run import EvalConfig, EvalResult, bootstrap_ci, evaluate_model

__all__ = ["EvalConfig", "EvalResult", "bootstrap_ci", "evaluate_model"]
