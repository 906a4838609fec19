"""Which StABlE epoch's parameters a plan evaluates: a rule fixed before any evaluation, a
pure function of the training log (``metrics.jsonl``), checked by
:func:`stablejax.train.train` after every epoch (``keep_epoch``) so that the parameters of the
chosen epoch are kept."""

from __future__ import annotations

from typing import Mapping, Sequence


def post_cycle_epoch(records: Sequence[Mapping], *, cycle: int = 1,
                     learning_epoch: int = 10) -> int:
    """The StABlE epoch whose parameters are evaluated, from the training log.

    The reference's ``post_cycle{cycle}_epoch{learning_epoch}`` (its ``stable_training.py``
    saves ``cycle{c+1}_epoch{k+1}`` after the k-th learning epoch of cycle c, counting from 0,
    and loads it for ``eval_model: post_cycle1_epoch10``): the ``learning_epoch``-th learning
    epoch of learning cycle ``cycle`` (cycle 1 = the first learning phase: records with
    ``cycle == 0``). Fallbacks, fixed with the rule: a cycle that ends (``end_of_cycle ==
    cycle``) after fewer learning epochs gives its last one, the end-of-cycle parameters (the
    reference has no such file then); a log that ends first gives its last epoch.

    Each answer for a prefix of the log is either its last epoch (undecided) or the final
    answer, so a pipeline may save the parameters of every epoch whose prefix answers that
    epoch (overwriting one slot) and evaluate what the slot holds at the end.

    Args:
      records: the ``metrics.jsonl`` records in order, each with ``"epoch"`` (0-based),
        ``"phase"`` (``"simulation"`` / ``"learning"``), ``"cycle"`` (learning phases
        completed before the epoch) and, on an epoch that ends a learning phase,
        ``"end_of_cycle"`` (the cycle count after it).
      cycle: learning cycle, from 1.
      learning_epoch: learning epoch within the cycle, from 1.

    Returns:
      The record's ``"epoch"``; the parameters after it are the StABlE checkpoint of step
      ``epoch + 1`` (``stable/checkpoints``) and, for an epoch that ends cycle n,
      ``end_of_cycle/`` step n.

    Raises:
      ValueError: an empty log, epochs out of order, or ``cycle``/``learning_epoch`` < 1.
    """
    if cycle < 1 or learning_epoch < 1:
        raise ValueError(f"cycle and learning_epoch count from 1, got {cycle}, {learning_epoch}")
    epochs = [int(r["epoch"]) for r in records]
    if not epochs:
        raise ValueError("an empty training log has no epoch to evaluate")
    if epochs != list(range(epochs[0], epochs[0] + len(epochs))):
        raise ValueError(f"training log epochs are not consecutive: {epochs}")
    seen = 0
    for r in records:
        if r["phase"] == "learning" and int(r["cycle"]) == cycle - 1:
            seen += 1
            if seen == learning_epoch or r.get("end_of_cycle") == cycle:
                return int(r["epoch"])
    return epochs[-1]
