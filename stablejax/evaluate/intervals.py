"""Bootstrap confidence intervals of evaluation statistics (docs/method.md §9): percentile,
basic (reverse-percentile) and BCa intervals over replicas, or over clusters of replicas that
share a start frame (cluster bootstrap)."""

from __future__ import annotations

import statistics
from typing import NamedTuple

import numpy as np

CI_METHODS = ("percentile", "basic", "bca")
_CI_NAMES = {"percentile": "percentile bootstrap", "basic": "basic (reverse-percentile) bootstrap",
             "bca": "BCa bootstrap"}
# Resampling unit of ``bootstrap_interval`` in its method description: rows, or clusters.
REPLICA_UNIT = "the replicas"
CLUSTER_UNIT = "the start frames (clusters of replicas)"


class BootstrapInterval(NamedTuple):
    """A bootstrap confidence interval of ``stat(values)`` and its diagnostics.

    Attributes:
      low, high: the interval (same unit as the statistic).
      estimate: ``stat(values)``, the point estimate.
      bias: mean of the resampled statistics minus ``estimate`` (the bootstrap estimate of the
        statistic's bias; the h(r) MAE has a positive one).
      z0: bias correction, ``Phi^-1`` of the fraction of resampled statistics below
        ``estimate`` (ties count half); computed for every method.
      acceleration: BCa acceleration from the jackknife (0 for the other methods).
      levels: quantile levels of the resampled statistics that give the interval.
      at_edge: a level lies beyond the resolution of the resamples (below 1/n or above 1 - 1/n),
        so that end is the smallest or largest resampled value: more resamples, or a
        statistic with less bias, are needed for that end to mean much.
      method: description for reports naming the resampling unit, e.g. ``"BCa bootstrap,
        1000 resamples of the replicas"`` or ``"... of the start frames (clusters of
        replicas)"``.
    """

    low: float
    high: float
    estimate: float
    bias: float
    z0: float
    acceleration: float
    levels: tuple[float, float]
    at_edge: bool
    method: str


def _normal_cdf_ppf():
    """(cdf, ppf) of the standard normal: scipy when installed, else the standard library."""
    try:
        from scipy.stats import norm
    except ImportError:
        nd = statistics.NormalDist()
        return np.vectorize(nd.cdf, otypes=[float]), np.vectorize(nd.inv_cdf, otypes=[float])
    return norm.cdf, norm.ppf


def _jackknife_acceleration(values: np.ndarray, stat, leave_out) -> float:
    """BCa acceleration ``sum d^3 / (6 (sum d^2)^1.5)``, ``d_i = mean_j theta_(j) - theta_(i)``
    over the leave-one-out statistics ``theta_(i)`` (non-finite ones dropped), where
    ``theta_(i)`` is ``stat`` of ``values`` without the rows ``leave_out[i]`` (a row, or the
    rows of one cluster); 0 when fewer than 3 units or all ``theta_(i)`` are equal."""
    if len(leave_out) < 3:
        return 0.0
    jack = np.array([stat(np.delete(values, rows, axis=0)) for rows in leave_out], np.float64)
    d = jack[np.isfinite(jack)]
    d = d.mean() - d if len(d) else d
    s2 = float(np.sum(d**2))
    return float(np.sum(d**3) / (6 * s2**1.5)) if s2 > 0 else 0.0


class _Clusters(NamedTuple):
    """Rows of each cluster: ``order[starts[c]:starts[c] + sizes[c]]`` are cluster ``c``'s."""

    order: np.ndarray  # [n_rows] int: rows sorted by cluster (stable)
    starts: np.ndarray  # [n_clusters] int
    sizes: np.ndarray  # [n_clusters] int

    def members(self, c: int) -> np.ndarray:
        return self.order[self.starts[c]:self.starts[c] + self.sizes[c]]

    def rows(self, draws: np.ndarray) -> list[np.ndarray]:
        """Rows of each resample ``draws[i]`` ([n, k] int cluster indices, repeats allowed):
        the rows of its clusters, cluster after cluster."""
        sizes = self.sizes[draws].ravel()
        offset = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        flat = self.order[np.repeat(self.starts[draws].ravel(), sizes) + offset]
        return np.split(flat, np.cumsum(self.sizes[draws].sum(1))[:-1])


def _clusters(clusters, n_rows: int) -> _Clusters | None:
    """The clusters of ``clusters`` ([n_rows] int ids), or None when every cluster is a single
    row (the bootstrap is then the one over rows).

    Raises:
      ValueError: ``clusters`` is not a 1-D array of ``n_rows`` integers.
    """
    ids = np.asarray(clusters)
    if ids.shape != (n_rows,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"clusters must be {n_rows} integer ids, one per row of values (e.g. "
                         f"each replica's start frame), got shape {ids.shape} of {ids.dtype}")
    _, inverse, sizes = np.unique(ids, return_inverse=True, return_counts=True)
    if len(sizes) == n_rows:
        return None
    starts = np.cumsum(sizes) - sizes
    return _Clusters(np.argsort(inverse, kind="stable"), starts, sizes)


def _resample(values: np.ndarray, stat, n: int, seed: int, groups: _Clusters | None):
    """(statistics of ``n`` resamples [n] f64, leave-one-out units for the jackknife, unit
    name): rows drawn with replacement, or, with ``groups``, as many clusters as there are,
    each with all its rows."""
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, len(values), (n, len(values)))
        return (np.array([stat(values[i]) for i in idx], np.float64), range(len(values)),
                REPLICA_UNIT)
    n_clusters = len(groups.sizes)
    draws = rng.integers(0, n_clusters, (n, n_clusters))
    stats = np.array([stat(values[rows]) for rows in groups.rows(draws)], np.float64)
    return stats, [groups.members(c) for c in range(n_clusters)], CLUSTER_UNIT


def bootstrap_interval(values: np.ndarray, stat, n: int, seed: int, *, method: str = "bca",
                       level: float = 0.95, clusters=None) -> BootstrapInterval:
    """Bootstrap confidence interval of ``stat(values)``, resampling the rows of ``values``
    (replicas), or the clusters of rows given by ``clusters`` (the start frames they share).

    ``n`` resamples are drawn with replacement (``numpy`` generator seeded with ``seed``):
    ``len(values)`` rows each, or, with ``clusters``, as many clusters as there are, each
    bringing all its rows (a cluster bootstrap: rows of one cluster are not independent, and
    resampling them one by one would make the interval too narrow). Without ``clusters``, or
    when every cluster holds one row, the result is the same as over rows, bit for bit.
    Resampled statistics that are not finite are dropped. With the ``(1 - level) / 2`` tail
    level alpha and the sorted resampled statistics ``theta*``:

      * ``"percentile"``: the alpha and 1 - alpha quantiles of ``theta*``. Right for a statistic
        without bias; it carries a bias twice (once in the estimate, once in the resamples).
      * ``"basic"`` (reverse percentile): ``2 theta - q(1 - alpha)``, ``2 theta - q(alpha)``:
        the spread of ``theta* - theta`` reflected about the estimate, so a bias seen in the
        resamples is subtracted. It needs no extreme quantile however large the bias.
      * ``"bca"`` (bias-corrected and accelerated; Efron 1987): the quantiles of ``theta*`` at
        ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for ``z = Phi^-1(alpha), Phi^-1(1 - alpha)``,
        with ``z0 = Phi^-1(fraction of theta* below theta)`` (ties count half; the fraction is
        kept within [0.5/n, 1 - 0.5/n]) and the acceleration ``a`` from the jackknife over the
        rows (leave one cluster out with ``clusters``). Second-order accurate for smooth
        statistics such as a mean.

    Every method whose interval corrects for bias excludes the estimate exactly when the
    percentile interval does (when fewer than alpha of the resamples fall on one side of it):
    the bootstrap then finds the estimate biased by more than its spread, and the interval lies
    on the other side of it. Check ``at_edge`` for BCa: with a large ``|z0|`` its levels fall
    beyond the resamples and that end is only the smallest or largest resampled value.

    Args:
      values: array whose first axis is resampled (e.g. [n_replicas] stability times, ps, or
        replica indices for a pooled statistic).
      stat: maps a resampled array (same layout as ``values``; with ``clusters``, the rows of
        the drawn clusters, so its length varies) to a float.
      n: number of resamples (>= 1).
      seed: seed of the resampling.
      method: one of ``CI_METHODS``.
      level: confidence level in (0, 1).
      clusters: optional [len(values)] int cluster id of each row (e.g. each replica's start
        frame).

    Returns:
      A ``BootstrapInterval``; ``low``/``high`` are NaN when no resampled statistic is finite
      (or, for basic and BCa, when the estimate is not).

    Raises:
      ValueError: unknown method, level outside (0, 1), n < 1, empty ``values``, or
        ``clusters`` not one integer id per row.
    """
    if method not in CI_METHODS:
        raise ValueError(f"bootstrap method must be one of {CI_METHODS}, got {method!r}")
    if not 0 < level < 1 or n < 1:
        raise ValueError(f"bootstrap needs 0 < level < 1 and n >= 1, got {level} and {n}")
    values = np.asarray(values)
    if not len(values):
        raise ValueError("bootstrap of an empty array")
    groups = None if clusters is None else _clusters(clusters, len(values))
    cdf, ppf = _normal_cdf_ppf()
    estimate = float(stat(values))
    stats, leave_out, unit = _resample(values, stat, n, seed, groups)
    desc = f"{_CI_NAMES[method]}, {n} resamples of {unit}"
    stats = stats[np.isfinite(stats)]
    if not len(stats) or (method != "percentile" and not np.isfinite(estimate)):
        nan = float("nan")
        return BootstrapInterval(nan, nan, estimate, nan, nan, 0.0, (nan, nan), False, desc)
    n_ok = len(stats)
    below = (np.sum(stats < estimate) + 0.5 * np.sum(stats == estimate)) / n_ok
    z0 = float(ppf(np.clip(below, 0.5 / n_ok, 1 - 0.5 / n_ok)))
    alpha = (1 - level) / 2
    accel = 0.0
    if method == "bca":
        accel = _jackknife_acceleration(values, stat, leave_out)
        w = z0 + ppf(np.array([alpha, 1 - alpha]))
        den = 1 - accel * w
        # den <= 0 (|a| far beyond the usual < 0.2): the BCa map fails; take the widest end.
        levels = np.where(den > 0, cdf(z0 + w / np.where(den > 0, den, 1.0)), [0.0, 1.0])
    else:
        levels = np.array([alpha, 1 - alpha])
    q = np.quantile(stats, levels)
    low, high = (2 * estimate - q[1], 2 * estimate - q[0]) if method == "basic" else q
    at_edge = bool(levels[0] < 1 / n_ok or levels[1] > 1 - 1 / n_ok)
    return BootstrapInterval(float(low), float(high), estimate, float(stats.mean() - estimate),
                             z0, accel, (float(levels[0]), float(levels[1])), at_edge, desc)


def bootstrap_ci(values: np.ndarray, stat, n: int, seed: int, *, method: str = "percentile",
                 level: float = 0.95, clusters=None) -> list[float]:
    """``[low, high]`` of ``bootstrap_interval`` (default: the percentile method)."""
    ci = bootstrap_interval(values, stat, n, seed, method=method, level=level,
                            clusters=clusters)
    return [ci.low, ci.high]
