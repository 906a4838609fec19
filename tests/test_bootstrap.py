"""Bootstrap confidence intervals (stablejax.evaluate.stability_run.bootstrap_interval) and
how the report flags an interval that excludes its point estimate."""

import json

import numpy as np
import pytest

from stablejax.evaluate.report import MARK, excludes_estimate, write_report
from stablejax.evaluate.stability_run import bootstrap_ci, bootstrap_interval


def _histogram_mae_problem():
    """An h(r)-like biased statistic with a known value: 10 x mean |h - h_ref| of the pooled
    histogram of replicas (each 300 draws from ``p``), against a reference that differs from
    ``p``; ``true`` is the value at infinite sampling."""
    x = np.linspace(0, 1, 60)
    p = np.exp(-((x - 0.4) / 0.1) ** 2) + 0.5 * np.exp(-((x - 0.7) / 0.05) ** 2)
    p /= p.sum()
    ref = p * (1 + 0.15 * np.sin(20 * x))
    ref /= ref.sum()

    def mae(h):
        return 10 * np.mean(np.abs(100 * h / h.sum() - 100 * ref))

    def sample(seed, n_replicas=8, draws=300):
        hists = np.random.default_rng(seed).multinomial(draws, p, size=n_replicas).astype(float)
        return lambda idx: mae(hists[idx].sum(0))

    return sample, mae(p)


def _excl(ci):
    return not ci.low <= ci.estimate <= ci.high


def test_biased_statistic_percentile_misses_basic_covers():
    """(a) On the h(r)-like MAE the percentile interval can lie wholly above its estimate
    (0.344 [0.358, 0.588] in a demo report). It carries the upward bias twice and misses the
    value at infinite sampling. The basic interval subtracts the bias and covers it.

    No bias-corrected interval can contain the estimate in that case: basic and BCa exclude
    it exactly when the percentile interval does (fewer than 2.5% of the resamples below it),
    but from the other side. That is why the report flags such intervals.
    """
    sample, true = _histogram_mae_problem()
    seed = next(s for s in range(20)
                if _excl(bootstrap_interval(np.arange(8), sample(s), 400, s,
                                            method="percentile")))
    stat = sample(seed)
    pct, basic, bca = (bootstrap_interval(np.arange(8), stat, 400, seed, method=m)
                       for m in ("percentile", "basic", "bca"))
    assert pct.estimate < pct.low and true < pct.low  # the reported failure
    assert pct.bias > 0 and pct.z0 < -1.96
    assert basic.low <= true <= basic.high  # bias-corrected: covers the true value
    assert basic.high < basic.estimate  # and lies below the estimate
    assert bca.high <= bca.estimate and bca.at_edge  # BCa: levels beyond the resamples
    assert bootstrap_ci(np.arange(8), stat, 400, seed) == [pct.low, pct.high]


def test_biased_statistic_coverage_of_the_true_value():
    """Over seeded repetitions the basic interval covers the h(r)-like MAE's value at infinite
    sampling about as often as it should. The percentile interval almost never does. BCa does
    little better, because its levels fall beyond the resamples. So the evaluation uses the
    basic interval for the h(r) MAE."""
    sample, true = _histogram_mae_problem()
    n_trials = 60
    covered = {"percentile": 0, "basic": 0, "bca": 0}
    for s in range(n_trials):
        stat = sample(s)
        for m in covered:
            ci = bootstrap_interval(np.arange(8), stat, 400, s, method=m)
            covered[m] += ci.low <= true <= ci.high
            if m == "basic":
                assert _excl(ci) == _excl(bootstrap_interval(np.arange(8), stat, 400, s,
                                                             method="percentile"))
    assert covered["basic"] >= 0.8 * n_trials
    assert covered["percentile"] <= 0.1 * n_trials
    assert covered["bca"] < covered["basic"]


def test_bca_mean_of_normal_samples_is_close_to_the_t_interval():
    """(b) For the mean of normal samples BCa ~ the textbook t interval: z0 and a near 0,
    ends within a quarter standard error, and about 95% coverage over repetitions."""
    from scipy import stats

    x = np.random.default_rng(0).normal(3.0, 2.0, 40)
    se = x.std(ddof=1) / np.sqrt(len(x))
    t_lo, t_hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=se)
    ci = bootstrap_interval(x, np.mean, 4000, 1, method="bca")
    assert abs(ci.z0) < 0.15 and abs(ci.acceleration) < 0.05
    assert abs(ci.low - t_lo) < 0.25 * se and abs(ci.high - t_hi) < 0.25 * se
    assert 0.85 < (ci.high - ci.low) / (t_hi - t_lo) < 1.05
    covered = 0
    for s in range(200):
        y = np.random.default_rng(100 + s).normal(0.0, 1.0, 30)
        c = bootstrap_interval(y, np.mean, 500, s, method="bca")
        covered += c.low <= 0.0 <= c.high
    assert 0.88 * 200 <= covered <= 0.99 * 200


def test_bca_matches_scipy_on_a_skewed_sample():
    """The bias correction and acceleration have the right signs: on a skewed sample BCa agrees
    with scipy's BCa and moves both ends up compared with the percentile interval."""
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(3).exponential(1.0, 25)
    se = x.std(ddof=1) / 5
    ours = bootstrap_interval(x, np.mean, 20000, 0, method="bca")
    pct = bootstrap_interval(x, np.mean, 20000, 0, method="percentile")
    ref = stats.bootstrap((x,), np.mean, n_resamples=20000, method="BCa",
                          rng=np.random.default_rng(1)).confidence_interval
    assert abs(ours.low - ref.low) < 0.1 * se and abs(ours.high - ref.high) < 0.1 * se
    assert ours.low - pct.low > 0.1 * se and ours.high - pct.high > 0.2 * se
    assert ours.acceleration > 0.02


def test_degenerate_and_invalid_inputs():
    same = bootstrap_interval(np.full(10, 5.0), np.median, 100, 0, method="bca")
    assert (same.low, same.high, same.estimate, same.z0, same.acceleration) == (5, 5, 5, 0, 0)
    one = bootstrap_interval(np.array([2.0]), np.mean, 50, 0, method="bca")
    assert one.low == one.high == 2.0
    # resamples whose statistic is not finite are dropped
    def spread_inverse(v):  # inf for a resample of one repeated value (4 of 256)
        return 1.0 / np.ptp(v) if np.ptp(v) > 0 else np.inf

    for m in ("percentile", "basic", "bca"):
        ci = bootstrap_interval(np.array([0.0, 1.0, 2.0, 3.0]), spread_inverse, 400, 0, method=m)
        assert np.isfinite(ci.low) and np.isfinite(ci.high) and ci.estimate == 1 / 3
    with pytest.raises(ValueError, match="method"):
        bootstrap_interval(np.ones(3), np.mean, 10, 0, method="bc")
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(np.ones(3), np.mean, 10, 0, level=95)


def _summary(hr_mae, hr_ci, **extra):
    return dict(n_replicas=8, window_ps=2.0, integrator="langevin", temperature_k=500.0,
                tolerance_angstrom=0.5, stability_time_ps_median=1.5,
                stability_time_ps_median_ci95=[1.0, 2.0], stability_time_ps_mean=1.4,
                stability_time_ps_mean_ci95=[1.1, 1.7], fraction_stable_whole_window=0.25,
                n_stable_frames=100, hr_mae=hr_mae, hr_mae_ci95=hr_ci, hr_mean_abs_error=0.03,
                bond_length_distribution_mae=0.01, test_force_mae_mev_per_angstrom=100.0,
                test_energy_mae_mev=40.0, **extra)


def test_report_flags_an_interval_that_excludes_its_estimate(tmp_path):
    """(c) The report marks the interval that leaves out its estimate, explains it, and names
    the interval method of each metric (also for a summary that records none)."""
    methods = {"stability_time_ps_median_ci95": "percentile bootstrap, 1000 resamples",
               "stability_time_ps_mean_ci95": "BCa bootstrap, 1000 resamples",
               "hr_mae_ci95": "basic (reverse-percentile) bootstrap, 1000 resamples"}
    for name, summary in (("eval_pretrained", _summary(0.344, [0.358, 0.588])),
                          ("eval_stable", _summary(0.2, [0.1, 0.25], ci_method=methods,
                                                   hr_mae_bootstrap_bias=0.04))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    text = write_report(tmp_path).read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| pre-trained") or line.startswith("| StABlE")}
    assert f"0.344 [0.358, 0.588]{MARK}" in rows["pre-trained"]
    assert rows["pre-trained"].count(MARK) == 1 and MARK not in rows["StABlE"]
    assert "1.40 [1.10, 1.70]" in rows["pre-trained"]  # mean with its interval
    assert f"{MARK} The interval excludes its point estimate: h(r) MAE (pre-trained)." in text
    assert "BCa bootstrap, 1000 resamples" in text
    assert "percentile bootstrap over replicas (method not recorded in the summary)" in text

    (tmp_path / "eval_pretrained" / "summary.json").write_text(
        json.dumps(_summary(0.344, [0.30, 0.40], ci_method=methods)))
    text = write_report(tmp_path).read_text()
    assert MARK not in text and "95% confidence intervals:" in text


def test_excludes_estimate_tolerates_rounding_and_missing_values():
    assert excludes_estimate(0.344, [0.358, 0.588])
    assert excludes_estimate(0.7, [0.358, 0.588])
    assert not excludes_estimate(0.3440000001, [0.1, 0.344])
    assert not excludes_estimate(None, [0.1, 0.2])
    assert not excludes_estimate(0.5, None)
    assert not excludes_estimate(0.5, [float("nan"), float("nan")])


def test_report_names_the_resampling_unit(tmp_path):
    """The interval list says what was resampled when the summary records it (start frames
    shared by several replicas, or one replica per start frame); older summaries have none."""
    shared = dict(resample_unit="start frame", n_start_frames=3)
    for name, extra in (("eval_pretrained", shared), ("eval_stable", shared)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(_summary(0.2, [0.1, 0.3],
                                                                          **extra)))
    text = write_report(tmp_path).read_text()
    assert ("95% confidence intervals (resampling unit: start frame, 8 replicas from 3 start "
            "frames):") in text
    (tmp_path / "eval_stable" / "summary.json").write_text(json.dumps(_summary(
        0.2, [0.1, 0.3], resample_unit="replica", n_start_frames=8)))
    text = write_report(tmp_path).read_text()
    assert ("(resampling unit: pre-trained: start frame, 8 replicas from 3 start frames; "
            "StABlE: replica, 8 replicas from 8 start frames):") in text
    for name in ("eval_pretrained", "eval_stable"):
        (tmp_path / name / "summary.json").write_text(json.dumps(_summary(0.2, [0.1, 0.3])))
    assert "95% confidence intervals:" in write_report(tmp_path).read_text()
