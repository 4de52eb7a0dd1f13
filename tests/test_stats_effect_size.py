"""Effect sizes: Hedges' g / d_z with noncentral-t intervals, probability of superiority.

Oracles: a brute-force grid inversion of the noncentral t cdf, scipy's mannwhitneyu, and
the large-sample normal approximation of Hedges & Olkin. Calibration by simulation with
known truth, tolerances 3 Monte Carlo SEs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from varprinciple.errors import InputError
from varprinciple.stats.effect_size import hedges_j, prob_superiority, standardized_difference


def _grid_ci(t_obs, df, confidence, scale):
    """Slow oracle: the ncp interval on a fine grid (no root finder)."""
    a = (1 - confidence) / 2
    grid = np.linspace(t_obs - 15, t_obs + 15, 300_001)
    cdf = stats.nct.cdf(t_obs, df, grid)
    lo = grid[np.argmin(np.abs(cdf - (1 - a)))]
    hi = grid[np.argmin(np.abs(cdf - a))]
    return lo / scale, hi / scale


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_interval_equals_brute_force_inversion(paired, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.6, 1.0, 6)
    b = rng.normal(0.0, 1.3, 6 if paired else 8)
    es = standardized_difference(a, b, paired=paired, confidence=0.9, equal_variances=True)
    if paired:
        d = a - b
        n = d.size
        dz = d.mean() / d.std(ddof=1)
        lo, hi = _grid_ci(dz * math.sqrt(n), n - 1, 0.9, math.sqrt(n))
        assert es.kind == "d_z" and es.estimate == pytest.approx(hedges_j(n - 1) * dz, rel=1e-12)
    else:
        na, nb = a.size, b.size
        sp = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
        d = (a.mean() - b.mean()) / sp
        scale = 1 / math.sqrt(1 / na + 1 / nb)
        lo, hi = _grid_ci(d * scale, na + nb - 2, 0.9, scale)
        assert es.kind == "hedges_g" and es.estimate == pytest.approx(hedges_j(na + nb - 2) * d, rel=1e-12)
    grid_step = 1e-4 / (math.sqrt(a.size) if paired else 1 / math.sqrt(1 / a.size + 1 / b.size))
    assert es.ci_low == pytest.approx(lo, abs=2 * grid_step)
    assert es.ci_high == pytest.approx(hi, abs=2 * grid_step)


def test_large_sample_agrees_with_normal_approximation():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.5, 1, 2000), rng.normal(0, 1, 2000)
    es = standardized_difference(a, b)
    d = es.estimate
    se = math.sqrt(1 / 2000 + 1 / 2000 + d * d / (2 * 4000))  # Hedges & Olkin (1985)
    assert es.ci_low == pytest.approx(d - 1.959964 * se, abs=2e-3)
    assert es.ci_high == pytest.approx(d + 1.959964 * se, abs=2e-3)


def test_hedges_j():
    for df in (2, 5, 20, 100):  # Hedges' approximation, error O(1/df^2)
        assert hedges_j(df) == pytest.approx(1 - 3 / (4 * df - 1), abs=0.1 / df**2)
    assert hedges_j(1e4) == pytest.approx(1, abs=1e-4)


def test_degenerate_inputs_give_nan():
    assert math.isnan(standardized_difference([1.0, 1.0], [2.0, 2.0]).estimate)
    assert math.isnan(standardized_difference([1.0], [2.0, 3.0]).ci_low)
    assert math.isnan(standardized_difference([1.0, 2.0], [1.0, 2.0], paired=True).estimate)
    sep = prob_superiority([1.0, 2.0], [3.0, 4.0])  # complete separation: still an interval
    assert sep.empirical == 0.0 and 0 < sep.ci_low < sep.estimate < 0.5 < sep.ci_high < 1
    assert math.isnan(prob_superiority([1.0, 1.0], [2.0, 2.0]).ci_low)  # no spread: undefined


def test_errors():
    with pytest.raises(InputError, match="`a` and `b` must be finite"):
        standardized_difference([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(InputError, match="paired samples need equal lengths; got 2 and 3"):
        prob_superiority([1.0, 2.0], [1.0, 2.0, 3.0], paired=True)
    with pytest.raises(InputError, match=r"`confidence` must be in \(0, 1\); got 1.5"):
        standardized_difference([1.0, 2.0], [1.0, 3.0], confidence=1.5)


def test_superiority_is_the_normal_model_transform_and_empirical_is_mann_whitney():
    rng = np.random.default_rng(4)
    for _ in range(3):
        a = np.round(rng.normal(0.3, 1, 9), 1)  # ties
        b = np.round(rng.normal(0, 2, 7), 1)
        ps = prob_superiority(a, b, confidence=0.9)
        es = standardized_difference(a, b, confidence=0.9)
        assert ps.estimate == pytest.approx(stats.norm.cdf(es.estimate / math.sqrt(2)), rel=1e-12)
        assert (ps.ci_low, ps.ci_high) == pytest.approx(
            tuple(stats.norm.cdf(np.array([es.ci_low, es.ci_high]) / math.sqrt(2))), rel=1e-12)
        u = stats.mannwhitneyu(a, b).statistic
        assert ps.empirical == pytest.approx(u / (a.size * b.size), rel=1e-12)
        assert ps.method == "normal_unequal_var" and es.kind == "bonett_d"
    ps = prob_superiority(a, b, equal_variances=True)
    es = standardized_difference(a, b, equal_variances=True)
    assert ps.method == "normal" and es.kind == "hedges_g"
    assert ps.estimate == pytest.approx(stats.norm.cdf(es.estimate / math.sqrt(2)), rel=1e-12)


def test_paired_superiority():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    b = a - np.array([1, 1.5, 0.5, -1, 1, 0, 1.0])
    ps = prob_superiority(a, b, paired=True)
    es = standardized_difference(a, b, paired=True)
    assert ps.empirical == pytest.approx(5.5 / 7) and ps.method == "normal_paired"
    assert ps.estimate == pytest.approx(stats.norm.cdf(es.estimate), rel=1e-12)
    assert ps.ci_low == pytest.approx(stats.norm.cdf(es.ci_low), rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("paired, n, delta", [(False, 5, 0.8), (True, 6, 0.5)])
def test_standardized_interval_coverage(paired, n, delta):
    rng = np.random.default_rng(11)
    R, hit, est = 800, 0, []
    for _ in range(R):
        if paired:
            b = rng.normal(0, 1, n)
            a = b + rng.normal(delta, 1, n)  # differences ~ N(delta, 1): d_z's delta
        else:
            a, b = rng.normal(delta, 1, n), rng.normal(0, 1, n)
        es = standardized_difference(a, b, paired=paired, equal_variances=True)
        hit += es.ci_low <= delta <= es.ci_high
        est.append(es.estimate)
    se = math.sqrt(0.95 * 0.05 / R)
    assert abs(hit / R - 0.95) <= 3 * se
    # J removes the bias: the mean estimate is delta within 3 MC SEs
    assert abs(np.mean(est) - delta) <= 3 * np.std(est) / math.sqrt(R)


@pytest.mark.slow
@pytest.mark.parametrize("paired, n, shift", [(False, 4, 1.0), (True, 5, 0.6)])
def test_superiority_interval_coverage(paired, n, shift):
    rng = np.random.default_rng(12)
    R = 800 if paired else 400  # the pivotal interval's quadrature costs ~10 ms a call
    truth = stats.norm.cdf(shift if paired else shift / math.sqrt(2))  # P(D > 0) or P(A > B)
    hit = 0
    for _ in range(R):
        b = rng.normal(0, 1, n)
        a = b + rng.normal(shift, 1, n) if paired else rng.normal(shift, 1, n)
        ps = prob_superiority(a, b, paired=paired)
        hit += ps.ci_low <= truth <= ps.ci_high
    se = math.sqrt(0.95 * 0.05 / R)
    if paired:
        assert abs(hit / R - 0.95) <= 3 * se, hit / R
    else:  # the pivotal interval (unequal variances allowed) is conservative at equal variances
        assert 0.95 - 3 * se <= hit / R <= 0.985, hit / R


def _gpq_monte_carlo(a, b, confidence, n_draws, rng):
    """Slow oracle: the generalized pivotal quantity sampled at random (not on a grid)."""
    na, nb = a.size, b.size
    va = (na - 1) * a.var(ddof=1) / rng.chisquare(na - 1, n_draws)
    vb = (nb - 1) * b.var(ddof=1) / rng.chisquare(nb - 1, n_draws)
    t = (a.mean() - b.mean() - rng.standard_normal(n_draws) * np.sqrt(va / na + vb / nb)) / np.sqrt(va + vb)
    al = (1 - confidence) / 2
    return np.sqrt(2) * np.quantile(t, [al, 1 - al])


def test_grid_quadrature_converges():
    import varprinciple.stats.effect_size as es_mod
    a, b = np.array([5.1, 4.9, 5.3]), np.linspace(0, 1, 8)
    coarse = standardized_difference(a, b)
    old = es_mod.GPQ_GRID
    try:
        es_mod.GPQ_GRID = 512
        fine = standardized_difference(a, b)
    finally:
        es_mod.GPQ_GRID = old
    assert (coarse.ci_low, coarse.ci_high) == pytest.approx((fine.ci_low, fine.ci_high), rel=0.01)


@pytest.mark.parametrize("seed", [0, 1])
def test_bonett_d_and_its_pivotal_interval(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.3, 0.3, 3), rng.normal(0.0, 0.1, 8)
    es = standardized_difference(a, b, confidence=0.9)
    sa2, sb2 = a.var(ddof=1), b.var(ddof=1)
    d = (a.mean() - b.mean()) / math.sqrt((sa2 + sb2) / 2)
    df = (sa2 + sb2) ** 2 / (sa2**2 / 2 + sb2**2 / 7)
    assert es.kind == "bonett_d" and es.df == pytest.approx(df, rel=1e-12)
    assert es.estimate == pytest.approx(hedges_j(df) * d, rel=1e-12) and es.note is None
    lo, hi = _gpq_monte_carlo(a, b, 0.9, 400_000, rng)
    width = hi - lo
    assert es.ci_low == pytest.approx(lo, abs=0.02 * width)
    assert es.ci_high == pytest.approx(hi, abs=0.02 * width)


def test_d_z_at_two_pairs_is_reported_uncorrected_with_a_note():
    a, b = np.array([1.0, 2.5]), np.array([0.0, 0.3])  # the case: J(df = 1) = 0
    es = standardized_difference(a, b, paired=True)
    d = a - b
    assert es.estimate == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12) and es.estimate > 1
    assert es.ci_low < es.estimate < es.ci_high
    assert "not bias-corrected" in es.note and "J is 0" in es.note
    ps = prob_superiority(a, b, paired=True)
    assert ps.estimate == pytest.approx(stats.norm.cdf(es.estimate), rel=1e-12) and ps.estimate > 0.8
    assert ps.note == es.note
    assert standardized_difference(np.r_[a, 3.0], np.r_[b, 2.2], paired=True).note is None


@pytest.mark.slow
@pytest.mark.parametrize("delta", [0.2, 0.0])
def test_superiority_interval_with_unequal_groups(delta):
    """The issue's design: A 3 networks with sd 0.30, B 8 with sd 0.10 (the equal-variance
    interval covered 0.77-0.78 here); the band is the project's 0.92-0.985."""
    rng = np.random.default_rng(21)
    R = 400
    truth = stats.norm.cdf(delta / math.hypot(0.3, 0.1))
    hit = 0
    for _ in range(R):
        ps = prob_superiority(rng.normal(delta, 0.3, 3), rng.normal(0.0, 0.1, 8))
        hit += ps.ci_low <= truth <= ps.ci_high
    assert 0.92 <= hit / R <= 0.985, hit / R
