"""compare's statistics (bench/regress/stats.py): the bootstrap interval of a ratio of medians,
pairs and runs resampled as such, Student's t, and the verdict rule. The comparing, bad-input and
encoder speed-up tests are in tests/test_compare.py."""
from __future__ import annotations

import numpy as np
import pytest

from bench.regress.stats import (IMPROVEMENT, REGRESSION, UNCHANGED, paired_ratio_ci, ratio_ci, student_t_quantile,
                                 verdict)


def bootstrap_ratio_ci(base, cand, **kw):
    """One run per side: the hierarchical bootstrap reduces to resampling iterations."""
    return ratio_ci([base], [cand], **kw)


# ---------------------------------------------------------------------------------------- statistics
def test_bootstrap_identical_samples_interval_straddles_one():
    x = np.random.default_rng(1).normal(10, 0.5, 40)
    point, lo, hi = bootstrap_ratio_ci(x, x)
    assert point == pytest.approx(1.0)
    assert lo < 1.0 < hi and hi - lo < 0.1


def test_bootstrap_known_ratio_seeded_and_deterministic():
    rng = np.random.default_rng(2)
    base = rng.normal(10, 0.1, 50)
    cand = rng.normal(12, 0.12, 50)
    a = bootstrap_ratio_ci(base, cand, n_resamples=500, seed=7)
    assert a == bootstrap_ratio_ci(base, cand, n_resamples=500, seed=7)
    assert a != bootstrap_ratio_ci(base, cand, n_resamples=500, seed=8)
    point, lo, hi = a
    assert point == pytest.approx(np.median(cand) / np.median(base))
    assert 1.18 < lo <= point <= hi < 1.22
    # a wider confidence gives a wider interval
    _, lo99, hi99 = bootstrap_ratio_ci(base, cand, n_resamples=500, seed=7, confidence=0.99)
    assert lo99 <= lo and hi99 >= hi


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        bootstrap_ratio_ci([], [1.0])
    with pytest.raises(ValueError):
        bootstrap_ratio_ci([0.0, 0.0], [1.0])
    with pytest.raises(ValueError):
        bootstrap_ratio_ci([1.0], [1.0], confidence=1.5)


def _aa_pairs(rng, k, process_sd=0.02, n=200, iteration_sd=0.03):
    """k pairs of runs of one configuration: each process has its own speed factor (sd
    ``process_sd``, as measured between processes on the project's VMs), iterations their own
    noise."""
    return [tuple(10 * np.exp(rng.normal(0, process_sd)) * rng.lognormal(0, iteration_sd, n) for _ in range(2))
            for _ in range(k)]


def test_student_t_quantiles_match_the_printed_table():
    """Two-sided 95 % and 99 % critical values of Student's t (any statistics textbook's table)."""
    table = {(0.975, 1): 12.706, (0.975, 2): 4.303, (0.975, 5): 2.571, (0.975, 10): 2.228, (0.975, 30): 2.042,
             (0.995, 1): 63.657, (0.995, 3): 5.841, (0.995, 20): 2.845, (0.975, 1000): 1.962}
    for (p, df), want in table.items():
        assert student_t_quantile(p, df) == pytest.approx(want, abs=0.0015), (p, df)
    with pytest.raises(ValueError):
        student_t_quantile(1.0, 3)


def test_one_pair_interval_is_the_bootstrap_of_its_iterations():
    rng = np.random.default_rng(3)
    x, y = rng.normal(10, 0.1, 100), rng.normal(11, 0.11, 100)
    point, lo, hi = paired_ratio_ci([(x, y)], n_resamples=500)
    assert point == pytest.approx(np.median(y) / np.median(x))
    assert 1.08 < lo < point < hi < 1.12
    assert (point, lo, hi) == paired_ratio_ci([(x, y)], n_resamples=500)  # seeded


def test_several_pairs_interval_holds_the_spread_between_pairs():
    """Three pairs whose ratios differ by 3 % each, with tight iterations: the interval is
    Student's t over the pairs (t(2) = 4.30), far wider than the pairs' own range, which is all
    a bootstrap over three pairs could draw."""
    rng = np.random.default_rng(4)
    pairs = [(rng.normal(10, 0.01, 100), r * rng.normal(10, 0.01, 100)) for r in (0.97, 1.0, 1.03)]
    point, lo, hi = paired_ratio_ci(pairs, n_resamples=500)
    assert point == pytest.approx(1.0, abs=0.002)
    logs = np.log([0.97, 1.0, 1.03])
    assert lo == pytest.approx(np.exp(logs.mean() - 4.303 * logs.std(ddof=1) / np.sqrt(3)), rel=0.003)
    assert lo < 0.93 and hi > 1.07


def test_several_pairs_of_one_configuration_rarely_exclude_one():
    """A/A: 200 sets of 3 pairs, each process with its own speed (sd 2 %): a 95 % interval must
    exclude 1 about 5 % of the time. Within-pair resampling alone excluded it in most sets."""
    rng = np.random.default_rng(5)
    out = sum(not (lo <= 1.0 <= hi) for lo, hi in
              (paired_ratio_ci(_aa_pairs(rng, 3), n_resamples=300)[1:] for _ in range(200)))
    assert out <= 20, out  # binomial(200, 0.05): mean 10, P(> 20) < 0.2 %


def test_several_pairs_find_a_real_5_percent_slowdown():
    rng = np.random.default_rng(6)
    found = 0
    for _ in range(50):
        pairs = [(x, 1.05 * y) for x, y in _aa_pairs(rng, 6)]
        _, lo, _ = paired_ratio_ci(pairs, n_resamples=300)
        found += lo > 1.01
    assert found >= 35, found


def test_verdict_needs_an_effect_beyond_the_threshold_and_an_interval_beyond_the_noise_floor():
    assert verdict(1.05, 1.03, 1.07, 0.03, 0.01) == REGRESSION
    assert verdict(1.02, 1.015, 1.025, 0.03, 0.01) == UNCHANGED  # real but below the threshold
    assert verdict(1.05, 1.005, 1.09, 0.03, 0.01) == UNCHANGED  # interval reaches into the noise floor
    assert verdict(0.95, 0.93, 0.97, 0.03, 0.01) == IMPROVEMENT
    assert verdict(1.2, 1.2, 1.2, 0.25, 0.0) == UNCHANGED
    # the old rule (whole interval above 1 + 5 %) missed a clean 5 % slowdown: this one does not
    assert verdict(1.05, 1.04, 1.06, 0.03, 0.01) == REGRESSION


def test_runs_are_resampled_so_run_to_run_drift_widens_the_interval():
    rng = np.random.default_rng(3)
    runs_b = [rng.normal(10.0 * shift, 0.05, 40) for shift in (1.0, 1.03, 0.97)]
    runs_c = [rng.normal(10.0 * shift, 0.05, 40) for shift in (1.02, 0.98, 1.0)]
    point, lo, hi = ratio_ci(runs_b, runs_c)
    _, lo1, hi1 = ratio_ci([np.concatenate(runs_b)], [np.concatenate(runs_c)])
    assert lo < 1.0 < hi and (hi - lo) > 2 * (hi1 - lo1)  # pooled iterations would hide the drift
