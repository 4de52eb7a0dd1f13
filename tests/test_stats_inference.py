"""Inference over runs against scipy/statsmodels references; argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from varprinciple.errors import InputError
from varprinciple.stats import compare_groups, group_test, holm, tost


def brute_force_holm(p):
    """Holm by definition: adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))."""
    p = np.asarray(p, float)
    m = p.size
    order = np.argsort(p, kind="stable")
    out = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


@pytest.mark.parametrize("seed", range(5))
def test_holm_matches_statsmodels_and_definition(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, size=rng.integers(1, 12))
    p[0] = p[-1]  # a tie
    assert_allclose(holm(p), multipletests(p, method="holm")[1])
    assert_allclose(holm(p), brute_force_holm(p))


def test_holm_ignores_nan():
    out = holm([0.01, np.nan, 0.04])
    assert np.isnan(out[1])
    assert_allclose(out[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])
    assert np.all(np.isnan(holm([np.nan])))
    with pytest.raises(InputError, match=r"`p_values` must lie in \[0, 1\]"):
        holm([0.5, 1.5])


@pytest.mark.parametrize("seed", range(4))
def test_tost_matches_statsmodels_ind(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.1, 0.3, 5)
    b = rng.normal(0.0, 0.6, 7)
    res = tost(a, b, margin=0.4)
    p, lo, up = ttost_ind(a, b, -0.4, 0.4, usevar="unequal")
    assert_allclose([res.p_value, res.p_lower, res.p_upper], [p, lo[1], up[1]], rtol=1e-10)
    assert res.equivalent == (p < 0.05)


@pytest.mark.parametrize("seed", range(4))
def test_tost_matches_statsmodels_paired(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 0.3, 6)
    b = a + rng.normal(0.05, 0.1, 6)
    res = tost(a, b, margin=0.2, paired=True, alpha=0.1)
    p, lo, up = ttost_paired(a, b, -0.2, 0.2)
    assert_allclose([res.p_value, res.p_lower, res.p_upper], [p, lo[1], up[1]], rtol=1e-10)
    # equivalence at alpha <=> the (1 - 2 alpha) CI inside the margins
    assert res.equivalent == (res.ci_low > -0.2 and res.ci_high < 0.2)


def test_compare_groups_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 0.3, 5), rng.normal(0.6, 0.5, 6)
    res = compare_groups(a, b, confidence=0.9)
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert_allclose([res.p_value, res.ci_low, res.ci_high, res.df], [ref.pvalue, ci.low, ci.high, ref.df])
    assert not res.paired and res.equivalent is None and np.isnan(res.tost_p)
    b6 = b[:5]
    res = compare_groups(a, b6, paired=True)
    ref = sps.ttest_rel(a, b6)
    ci = ref.confidence_interval(0.95)
    assert_allclose([res.p_value, res.ci_low, res.ci_high], [ref.pvalue, ci.low, ci.high])
    assert res.to_frame().loc[0, "n_a"] == 5


def test_compare_groups_tost_fields():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 0.1, 8), rng.normal(0, 0.1, 8)
    res = compare_groups(a, b, margin=0.3, alpha=0.05)
    t = tost(a, b, margin=0.3)
    assert_allclose([res.tost_p, res.tost_ci_low, res.tost_ci_high], [t.p_value, t.ci_low, t.ci_high])
    assert res.equivalent is True and res.margin == 0.3


def test_group_test_matches_scipy():
    x = np.array([0.2, 0.5, -0.1, 0.4, 0.3])
    res = group_test(x, confidence=0.9)
    ref = sps.ttest_1samp(x, 0.0, alternative="greater")
    ci = sps.ttest_1samp(x, 0.0).confidence_interval(0.9)
    assert_allclose([res.p_value, res.ci_low, res.ci_high], [ref.pvalue, ci.low, ci.high])
    one = group_test([0.3])
    assert one.estimate == 0.3 and np.isnan(one.ci_low) and one.n_runs == 1
    assert group_test([1.0, 1.0]).p_value == 0.0
    assert group_test([1.0, 1.0], null=2.0).p_value == 1.0
    assert group_test([0.9, 1.3, 1.1], null=1.0).p_value < 0.5


def test_small_samples_give_undefined_comparisons():
    res = compare_groups([1.0], [0.5, 0.7])
    assert np.isnan(res.p_value) and res.difference == pytest.approx(0.4)
    t = tost([1.0], [0.5], margin=0.2)
    assert np.isnan(t.p_value) and t.equivalent is False


@pytest.mark.parametrize("call, match", [
    (lambda: group_test([]), "`values` needs at least 1"),
    (lambda: group_test([1.0, np.nan]), "`values` must be finite"),
    (lambda: group_test([1.0, 2.0], confidence=1.0), r"`confidence` must be in \(0, 1\)"),
    (lambda: compare_groups([1.0, 2.0], [1.0], paired=True), "paired samples need equal lengths"),
    (lambda: compare_groups([1.0, 2.0], [1.0, 3.0], alpha=0.7), r"`alpha` must be in \(0, 0.5\)"),
    (lambda: compare_groups([1.0, 2.0], [1.0, 3.0], margin=-1), "`margin` must be a positive number"),
    (lambda: tost([1.0, 2.0], [1.0, 3.0], margin=None), "`margin` must be a positive number"),
])
def test_argument_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_comparisons_share_one_estimate_type_whose_intervals_match_scipy():
    from varprinciple.stats.estimate import DifferenceEstimate
    from varprinciple.stats.inference import Comparison
    from varprinciple.stats.matched import LossAdjustedComparison, MatchedComparison

    assert all(issubclass(c, DifferenceEstimate) for c in (Comparison, MatchedComparison, LossAdjustedComparison))
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1.0, 9), rng.normal(0.2, 2.0, 13)
    res = compare_groups(a, b, confidence=0.95)
    assert res.conf_int() == (res.ci_low, res.ci_high)
    for level in (0.8, 0.95, 0.99):  # oracle: scipy's Welch interval at that level
        ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(level)
        np.testing.assert_allclose(res.conf_int(level), (ci.low, ci.high), rtol=1e-10)
    row = res.summary_frame().iloc[0]
    assert (row["estimate"], row["se"], row["df"], row["p_value"]) == (res.difference, res.se, res.df, res.p_value)
