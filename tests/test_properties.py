"""Invariances of the statistics, checked with hypothesis."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from varprinciple.stats import alignment_test, compare_groups, relation_fit, spearman, tost

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def probes(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    K = draw(st.integers(8, 80))
    k = draw(st.integers(3, 12))
    b = draw(st.floats(-2, 2))
    rng = np.random.default_rng(seed)
    lam = np.exp(rng.uniform(np.log(0.01), np.log(100), k))
    if np.ptp(lam) == 0:  # pragma: no cover - measure zero
        lam[0] *= 2
    corr = draw(st.floats(0, 0.9))
    z = np.sqrt(1 - corr) * rng.standard_t(5, (K, k)) + np.sqrt(corr) * rng.standard_normal((K, 1))
    X = z * lam ** (b / 2) * np.exp(rng.normal(0, 0.3, k) / 2) + rng.normal(0, 1, k)  # non-zero mean too
    return X, lam, rng


FIELDS = ("slope", "se_slope", "ci_low", "ci_high", "p_value", "scatter_var", "sampling_se", "df")


@SETTINGS
@given(probes(), st.floats(1e-3, 1e3))
def test_scaling_the_noise_changes_only_the_intercept(probe, c):
    X, lam, _ = probe
    a, b = relation_fit(X, lam), relation_fit(X * c, lam)
    for f in FIELDS + ("se_intercept", "cov_intercept_slope"):
        assert_allclose(getattr(b, f), getattr(a, f), rtol=1e-7, atol=1e-10, err_msg=f)
    assert_allclose(b.intercept, a.intercept + 2 * np.log(c), rtol=1e-9, atol=1e-9)
    assert_allclose(alignment_test(X * c, lam, resamples=0).estimate, alignment_test(X, lam, resamples=0).estimate)
    assert_allclose(spearman(lam, (X * c).var(axis=0)), spearman(lam, X.var(axis=0)))


@SETTINGS
@given(probes())
def test_permuting_directions_changes_nothing(probe):
    X, lam, rng = probe
    perm = rng.permutation(len(lam))
    a, b = relation_fit(X, lam), relation_fit(X[:, perm], lam[perm])
    for f in FIELDS + ("intercept", "se_intercept", "cov_intercept_slope"):
        assert_allclose(getattr(b, f), getattr(a, f), rtol=1e-8, atol=1e-10, err_msg=f)
    r1 = alignment_test(X, lam, resamples=99, rng=np.random.default_rng(1))
    r2 = alignment_test(X[:, perm], lam[perm], resamples=99, rng=np.random.default_rng(1))
    assert_allclose([r1.estimate, r1.p_value], [r2.estimate, r2.p_value], rtol=1e-9)


@SETTINGS
@given(probes())
def test_inverting_eigenvalues_flips_the_slope(probe):
    X, lam, _ = probe
    a, b = relation_fit(X, lam), relation_fit(X, 1 / lam)
    assert_allclose(b.slope, -a.slope, rtol=1e-8, atol=1e-10)
    assert_allclose([b.ci_low, b.ci_high], [-a.ci_high, -a.ci_low], rtol=1e-8, atol=1e-10)
    assert_allclose(b.se_slope, a.se_slope, rtol=1e-8)
    assert_allclose(b.p_value, 1 - a.p_value, rtol=1e-7, atol=1e-10)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(2, 10), st.integers(2, 10), st.booleans(),
       st.floats(0.05, 2.0))
def test_swapping_groups_flips_the_difference_and_keeps_p(seed, na, nb, paired, margin):
    rng = np.random.default_rng(seed)
    if paired:
        nb = na
    a = rng.normal(0.5, 0.4, na)
    b = rng.normal(0.3, 0.7, nb)
    ab = compare_groups(a, b, paired=paired, margin=margin)
    ba = compare_groups(b, a, paired=paired, margin=margin)
    assert_allclose(ba.difference, -ab.difference, atol=1e-12)
    assert_allclose([ba.ci_low, ba.ci_high], [-ab.ci_high, -ab.ci_low], atol=1e-12)
    assert_allclose([ba.p_value, ba.tost_p], [ab.p_value, ab.tost_p], rtol=1e-9)
    assert ba.equivalent == ab.equivalent
    t1, t2 = tost(a, b, margin=margin, paired=paired), tost(b, a, margin=margin, paired=paired)
    assert_allclose([t2.p_lower, t2.p_upper], [t1.p_upper, t1.p_lower], rtol=1e-9)
