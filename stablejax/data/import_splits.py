"""Contiguous-block splits of imported trajectories (see :mod:`stablejax.data.importer`).

Frames of an MD trajectory are correlated with their neighbours, so imported frames are never
split at random. A split is a *block*: a list of :class:`Piece` (a contiguous frame range of one
file), and its frames are spread evenly over the block with an integer stride.

With one trajectory of ``N`` frames and no test file::

    [ train block | val block ][ gap ][ test block ]
    |<------ pool: the rest ---->|<-g->|<- t*N ---->|     t = test_fraction, g = gap_fraction * N

(the validation block is the last ``val_fraction`` of the pool). With test files, the pool is all
training files in the given order and the test block all test files. The reference trajectory
(observable targets) is the reference files, else the pool, strided to at most
``max_reference_frames`` frames.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from stablejax.errors import InputError


class Piece(NamedTuple):
    """Frames ``start:stop`` of input file ``file`` (an index into the file list)."""

    file: int
    start: int
    stop: int

    @property
    def n(self) -> int:
        return self.stop - self.start


class Selection(NamedTuple):
    """Chosen frames of one file: ``indices`` [n] int into the file's frames."""

    file: int
    indices: np.ndarray


def block_length(block: list[Piece]) -> int:
    return sum(p.n for p in block)


def cut(block: list[Piece], start: int, stop: int) -> list[Piece]:
    """Frames ``start:stop`` of the concatenated ``block``, as pieces."""
    out, offset = [], 0
    for p in block:
        a, b = max(start - offset, 0), min(stop - offset, p.n)
        if a < b:
            out.append(Piece(p.file, p.start + a, p.start + b))
        offset += p.n
    return out


def plan_blocks(
    pool: list[Piece], test: list[Piece], reference: list[Piece], *,
    test_fraction: float, gap_fraction: float, val_fraction: float, what: str,
) -> dict[str, list[Piece]]:
    """The train / val / test / reference blocks.

    Args:
      pool: the training files (one piece each). With no ``test`` pieces it must be one file,
        cut into pool, gap and test blocks.
      test, reference: the test and reference files (may be empty).
      what: how to name the input in errors (e.g. the file).

    Raises:
      InputError: too few frames for non-empty blocks.
    """
    if not test:
        (p,) = pool
        n_test = max(1, round(p.n * test_fraction))
        n_gap = round(p.n * gap_fraction)
        n_pool = p.n - n_test - n_gap
        if n_pool < 2:
            raise InputError(f"{what}: {p.n} frames are too few to split into training, "
                             f"validation, a gap of {n_gap} and a test block of {n_test}; give "
                             "more frames, or a separate test file (--test)")
        pool = [Piece(p.file, p.start, p.start + n_pool)]
        test = [Piece(p.file, p.stop - n_test, p.stop)]
    n = block_length(pool)
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise InputError(f"{what}: the training files have {n} frame(s); need at least 2 (for "
                         "training and validation blocks)")
    return {
        "train": cut(pool, 0, n - n_val),
        "val": cut(pool, n - n_val, n),
        "test": test,
        "reference": reference or pool,
    }


def spread(block: list[Piece], n: int, *, split: str, option: str, what: str) -> list[Selection]:
    """``n`` frames spread evenly over ``block`` (integer stride ``len // n``), first frame first.

    Raises:
      InputError: ``n`` larger than the block, naming the option to lower.
    """
    total = block_length(block)
    if n > total:
        raise InputError(f"{what}: {option} {n} but the {split} block has only {total} frames "
                         f"({describe(block)}); lower {option}")
    return _take(block, np.arange(n) * (total // n))


def strided(block: list[Piece], max_frames: int) -> tuple[list[Selection], int]:
    """Every ``stride``-th frame of ``block``, ``stride = ceil(len / max_frames)``; returns the
    selections and the stride."""
    stride = max(1, math.ceil(block_length(block) / max_frames))
    return _take(block, np.arange(0, block_length(block), stride)), stride


def _take(block: list[Piece], positions: np.ndarray) -> list[Selection]:
    out, offset = [], 0
    for p in block:
        mine = positions[(positions >= offset) & (positions < offset + p.n)] - offset
        if mine.size:
            out.append(Selection(p.file, p.start + mine))
        offset += p.n
    return out


def describe(block: list[Piece], names: list[str] | None = None) -> str:
    """``file frames a..b`` for each piece (inclusive, 0-based)."""
    def name(p: Piece) -> str:
        return names[p.file] if names else f"file {p.file}"

    return ", ".join(f"{name(p)} frames {p.start}..{p.stop - 1}" for p in block)


def provenance(selections: list[Selection], names: list[str]) -> list[dict]:
    """Per file: the first and last frame chosen, their count and stride (JSON-ready)."""
    out = []
    for s in selections:
        steps = np.unique(np.diff(s.indices))
        out.append({"file": names[s.file], "first": int(s.indices[0]), "last": int(s.indices[-1]),
                    "n_frames": int(s.indices.size),
                    "stride": int(steps[0]) if steps.size == 1 else (None if steps.size else 1)})
    return out
