"""Calibration of the statistics by simulation with known truth (fixed seeds).

Tolerances come from Monte Carlo error: a rate estimated from N replicates has binomial
standard error sqrt(r (1 - r) / N); bounds are the nominal rate +- 3 such errors. The
draws are generated here (vectorised over replicates), independently of
``varprinciple.simulate``. docs/statistics.md lists the rates measured by these tests.

Run alone: ``pytest -m slow tests/test_calibration.py -q``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from _realistic_generator import Design, draws as realistic_draws
from varprinciple.stats import (alignment_test, compare_groups, curvature_test, group_test, holm, isotropy_test,
                                relation_fit, tost, variance_ratio)

pytestmark = pytest.mark.slow

ALPHA = 0.05
LEVEL = 0.95


def mc_se(rate: float, n: int) -> float:
    return float(np.sqrt(rate * (1 - rate) / n))


def spectrum(k: int, n_nonpositive: int = 0) -> np.ndarray:
    lam = np.geomspace(10.0, 0.05, k - n_nonpositive)
    return np.r_[lam, -np.linspace(0.01, 0.1, n_nonpositive)]


def draws(rng, n_rep: int, K: int, lam: np.ndarray, slopes, *, noise: str = "gaussian", corr: float = 0.0,
          scatter: float = 0.0, keep: float = 0.5, units: int = 16) -> np.ndarray:
    """(n_rep, K, k) noise projections with variance |lambda|^slope * exp(scatter e), e ~ N(0, 1).

    noise: "gaussian", "t5" (Student t, nu = 5, unit variance) or "masked" (dropout-like:
    Bernoulli(keep) masks times Gaussians on ``units`` hidden units, projected on the
    directions through random unit vectors, so projections are correlated and heavy-tailed).
    corr: weight of a draw-level common factor shared by all directions (correlated projections).
    """
    k = lam.size
    slopes = np.broadcast_to(np.asarray(slopes, float), (n_rep,))
    if noise == "gaussian":
        z = rng.standard_normal((n_rep, K, k))
    elif noise == "t5":
        z = rng.standard_t(5, (n_rep, K, k)) / np.sqrt(5 / 3)
    elif noise == "masked":
        h = rng.standard_normal((n_rep, K, units)) * (rng.random((n_rep, K, units)) < keep) / np.sqrt(keep)
        A = rng.standard_normal((n_rep, units, k))
        A /= np.linalg.norm(A, axis=1, keepdims=True)
        z = h @ A + 0.3  # dropout noise has a non-zero mean
    else:  # pragma: no cover
        raise ValueError(noise)
    if corr:
        common = rng.standard_normal((n_rep, K, 1))
        if noise == "t5":
            common = rng.standard_t(5, (n_rep, K, 1)) / np.sqrt(5 / 3)
        z = np.sqrt(1 - corr) * z + np.sqrt(corr) * common
    logv = slopes[:, None] * np.log(np.abs(lam))[None, :] + scatter * rng.standard_normal((n_rep, k))
    return z * np.exp(logv / 2)[:, None, :]


def fit_many(X: np.ndarray, lam: np.ndarray, confidence: float = LEVEL):
    fits = [relation_fit(x, lam, confidence=confidence) for x in X]
    return (np.array([f.slope for f in fits]), np.array([f.ci_low for f in fits]),
            np.array([f.ci_high for f in fits]), np.array([f.p_value for f in fits]))


SCENARIOS = {
    # name: (K, k, n_nonpositive, noise, corr, scatter)
    "gaussian": (100, 20, 2, "gaussian", 0.0, 0.0),
    "t5-correlated-scatter": (100, 20, 2, "t5", 0.5, 0.3),
    "masked-scatter": (100, 20, 2, "masked", 0.0, 0.3),
    "t5-small": (30, 10, 1, "t5", 0.3, 0.5),
    "few-directions": (200, 6, 1, "gaussian", 0.0, 0.1),
    "masked-many-draws": (500, 8, 1, "masked", 0.3, 0.0),
    "tiny-K": (10, 10, 1, "t5", 0.3, 0.3),
}
N_REP = 2000


def measure_per_run(name: str, n: int = N_REP) -> dict:
    """Coverage of the 95% CI at b = 0.5, mean estimate, and null rejection rate at b = 0."""
    K, k, nneg, noise, corr, scatter = SCENARIOS[name]
    rng = np.random.default_rng(20261127 + list(SCENARIOS).index(name))
    lam = spectrum(k, nneg)
    b, lo, hi, _ = fit_many(draws(rng, n, K, lam, 0.5, noise=noise, corr=corr, scatter=scatter), lam)
    _, _, _, p = fit_many(draws(rng, n, K, lam, 0.0, noise=noise, corr=corr, scatter=scatter), lam)
    return {"coverage": float(np.mean((lo <= 0.5) & (0.5 <= hi))), "mean_b": float(b.mean()),
            "mc_se_b": float(b.std() / np.sqrt(n)), "type1": float(np.mean(p < ALPHA)), "n": n}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_per_run_ci_coverage_and_type_one_error(name):
    m = measure_per_run(name)
    n = m["n"]
    # with few directions the interval may be conservative (variance floor, Satterthwaite df), never liberal
    assert LEVEL - 3 * mc_se(LEVEL, n) <= m["coverage"] <= 0.985, m
    assert abs(m["mean_b"] - 0.5) < 3 * m["mc_se_b"] + 0.01, m
    assert m["type1"] <= ALPHA + 3 * mc_se(ALPHA, n), m


#: (scenario, true b, minimum power of the one-sided test at alpha); thresholds sit about 4
#: Monte Carlo SEs (n = 400) below the measured power (docs/statistics.md lists it). The
#: jackknife + HC2 interval of issue 7 (calibrated under block-correlated sampling errors and
#: heteroscedastic outliers, where the previous one undercovered) is wider at small K: power at
#: t5-small b = 0.3 fell from 0.73 to 0.58.
POWER_CASES = [("gaussian", 0.05, 0.58), ("gaussian", 0.1, 0.95),
               ("t5-correlated-scatter", 0.1, 0.4), ("t5-correlated-scatter", 0.2, 0.9),
               ("masked-scatter", 0.1, 0.48), ("masked-scatter", 0.2, 0.9),
               ("t5-small", 0.2, 0.25), ("t5-small", 0.3, 0.47)]


def measure_power(name: str, effect: float, n: int = 400) -> float:
    K, k, nneg, noise, corr, scatter = SCENARIOS[name]
    rng = np.random.default_rng(7 + list(SCENARIOS).index(name))
    lam = spectrum(k, nneg)
    _, _, _, p = fit_many(draws(rng, n, K, lam, effect, noise=noise, corr=corr, scatter=scatter), lam)
    return float(np.mean(p < ALPHA))


@pytest.mark.parametrize("name, effect, min_power", POWER_CASES)
def test_per_run_power_at_moderate_effects(name, effect, min_power):
    power = measure_power(name, effect)
    assert power >= min_power, power


def run_slopes(rng, n_groups: int, n_runs: int, means, *, spread: float = 0.2, K: int = 60, k: int = 12,
               noise: str = "t5", shared=None):
    """Per-run estimated slopes: true run slope = mean + spread * N(0,1) (+ shared run effect)."""
    lam = spectrum(k, 1)
    means = np.broadcast_to(np.asarray(means, float), (n_groups,))
    run_effect = spread * rng.standard_normal((n_groups, n_runs)) if shared is None else shared
    truth = means[:, None] + run_effect
    X = draws(rng, n_groups * n_runs, K, lam, truth.ravel(), noise=noise, corr=0.3, scatter=0.3)
    b, _, _, _ = fit_many(X, lam)
    return b.reshape(n_groups, n_runs)


def test_group_test_calibrated_with_five_runs():
    rng = np.random.default_rng(5)
    n = 600
    est = run_slopes(rng, n, 5, 0.0)
    p = np.array([group_test(e).p_value for e in est])
    reject = float(np.mean(p < ALPHA))
    assert reject <= ALPHA + 3 * mc_se(ALPHA, n), reject
    assert reject >= ALPHA - 3 * mc_se(ALPHA, n), reject  # a test that never rejects is not calibrated
    est = run_slopes(rng, n, 5, 0.5)
    res = [group_test(e) for e in est]
    cover = float(np.mean([r.ci_low <= 0.5 <= r.ci_high for r in res]))
    assert abs(cover - LEVEL) <= 3 * mc_se(LEVEL, n), cover
    power = float(np.mean([r.p_value < ALPHA for r in res]))
    assert power >= 0.95, power


def test_welch_comparison_calibrated_with_five_runs_per_group():
    rng = np.random.default_rng(6)
    n = 500
    a = run_slopes(rng, n, 5, 0.8, spread=0.15)
    b = run_slopes(rng, n, 5, 0.8, spread=0.3)  # unequal run-to-run spread
    res = [compare_groups(x, y) for x, y in zip(a, b)]
    reject = float(np.mean([r.p_value < ALPHA for r in res]))
    assert abs(reject - ALPHA) <= 3 * mc_se(ALPHA, n), reject
    cover = float(np.mean([r.ci_low <= 0 <= r.ci_high for r in res]))
    assert abs(cover - LEVEL) <= 3 * mc_se(LEVEL, n), cover
    # power at a difference of 0.5 exponent units
    c = run_slopes(rng, n, 5, 0.3, spread=0.15)
    power = float(np.mean([compare_groups(x, y).p_value < ALPHA for x, y in zip(a, c)]))
    assert power >= 0.8, power


def test_paired_comparison_and_tost_calibrated():
    """Two noise sources probed on the same 5 runs share a run effect: the paired test."""
    rng = np.random.default_rng(8)
    n = 500
    shared = 0.3 * rng.standard_normal((n, 5))
    a = run_slopes(rng, n, 5, 1.0, shared=shared)
    b = run_slopes(rng, n, 5, 1.0, shared=shared)
    res = [compare_groups(x, y, paired=True, margin=0.3) for x, y in zip(a, b)]
    reject = float(np.mean([r.p_value < ALPHA for r in res]))
    assert abs(reject - ALPHA) <= 3 * mc_se(ALPHA, n), reject
    # TOST has power when the truth is equal ...
    eq = float(np.mean([bool(r.equivalent) for r in res]))
    assert eq >= 0.5, eq
    # ... and claims equivalence at most alpha of the time when the truth sits on the margin
    c = run_slopes(rng, n, 5, 1.3, shared=shared)
    wrong = float(np.mean([tost(x, y, margin=0.3, paired=True).equivalent for x, y in zip(a, c)]))
    assert wrong <= ALPHA + 3 * mc_se(ALPHA, n), wrong


def test_welch_tost_at_the_margin_keeps_alpha():
    rng = np.random.default_rng(9)
    n = 500
    a = run_slopes(rng, n, 5, 1.0)
    b = run_slopes(rng, n, 5, 0.6)
    wrong = float(np.mean([tost(x, y, margin=0.4).equivalent for x, y in zip(a, b)]))
    assert wrong <= ALPHA + 3 * mc_se(ALPHA, n), wrong


def test_holm_controls_familywise_error():
    rng = np.random.default_rng(10)
    n, g = 2000, 4
    vals = rng.normal(0.8, 0.3, (n, g, 5))  # 4 groups x 5 runs, all equal means
    fwe = 0
    for v in vals:
        p = [compare_groups(v[i], v[j]).p_value for i in range(g) for j in range(i + 1, g)]
        fwe += bool(np.any(holm(p) < ALPHA))
    rate = fwe / n
    assert rate <= ALPHA + 3 * mc_se(ALPHA, n), rate


def test_alignment_is_one_and_rotation_p_uniform_for_isotropic_noise():
    rng = np.random.default_rng(12)
    n, K, k = 1000, 50, 8
    lam = np.geomspace(10.0, 0.5, k)
    est, p = [], []
    for x in rng.standard_normal((n, K, k)) * 1.7:
        r = alignment_test(x, lam, resamples=199, rng=rng)
        est.append(r.estimate)
        p.append(r.p_value)
    est = np.array(est)
    assert abs(est.mean() - 1.0) < 3 * est.std() / np.sqrt(n) + 1e-3
    ks = sps.kstest(p, "uniform")
    assert ks.pvalue > 0.001, ks
    rej = float(np.mean(np.array(p) <= ALPHA))
    assert rej <= ALPHA + 3 * mc_se(ALPHA, n), rej


# ======================================================================= issue 7: realistic structures
# Draws from tests/_realistic_generator.py (its own model, not varprinciple.simulate): sampling
# errors correlated within blocks of directions along the eigenvalue order, Student t5 tails,
# small K, high-leverage outlier eigenvalues with a larger scatter, few directions, few random
# directions. benchmarks/calibrate_intervals.py measures the same with 2,000 probes per cell.

BASE = Design(K=100, k=20)
REALISTIC = {
    "blocked-t5-K30": BASE.but(K=30, tails="t5", block_corr=0.5),
    "blocked-gauss-K10": BASE.but(K=10, block_corr=0.5),
    "outliers-heteroscedastic": BASE.but(scatter=0.2, n_outliers=3, outlier_scatter=1.0),
    "four-directions": BASE.but(k=4, scatter=0.2),
}
N_REAL = 800


@pytest.mark.parametrize("name", list(REALISTIC))
def test_per_run_ci_on_realistic_structures(name):
    """Coverage in [0.95 - 3 SE, 0.985] at b = 1 and type-I <= 0.05 + 3 SE at b = 0 (SE over 800 probes:
    0.0077 and 0.0077). Before issue 7: 0.914 / 0.898 / 0.690 / 0.981 coverage (docs/statistics.md)."""
    d = REALISTIC[name]
    rng = np.random.default_rng([7, list(REALISTIC).index(name)])
    lam, X, _, _ = realistic_draws(d.but(b=1.0), N_REAL, rng)
    fits = [relation_fit(x, lam) for x in X]
    cover = float(np.mean([f.ci_low <= 1.0 <= f.ci_high for f in fits]))
    lam, X, _, _ = realistic_draws(d.but(b=0.0), N_REAL, rng)
    type1 = float(np.mean([relation_fit(x, lam).p_value < ALPHA for x in X]))
    assert LEVEL - 3 * mc_se(LEVEL, N_REAL) <= cover <= 0.985, (cover, type1)
    assert type1 <= ALPHA + 3 * mc_se(ALPHA, N_REAL), (cover, type1)


def two_outlier_draws(rng, b: float, n: int, K: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The independent review's design: 8 bulk directions (lambda 10..1, log-scatter 0.3) and two
    outliers three decades below (1e-2, 8e-3; scatter 0.9, inside the floor 1e-4) with most of the
    slope's leverage; variance 0.05 lambda^b exp(tau N(0, 1)); K Gaussian draws."""
    lam = np.r_[np.logspace(1, 0, 8), 1e-2, 8e-3]
    tau = np.r_[np.full(8, 0.3), 0.9, 0.9]
    s2 = 0.05 * lam**b * np.exp(tau * rng.standard_normal((n, lam.size)))
    return lam, rng.standard_normal((n, K, lam.size)) * np.sqrt(s2)[:, None, :]


N_TWO = 4000


def test_per_run_ci_with_two_high_leverage_outliers():
    """Coverage within 0.93-0.97 widened by 3 MC SEs (4,000 probes: 0.0040 at 0.93) and type-I
    <= 0.06 + 3 SE (0.0038). Measured here 0.958 / 0.051; scripts/calib_relation_outliers.py
    0.955-0.967 / 0.05-0.06 over draws (residual-based df alone: 0.905-0.912 / 0.07-0.08)."""
    rng = np.random.default_rng(20261201)
    lam, X = two_outlier_draws(rng, 1.0, N_TWO)
    cover = float(np.mean([(f := relation_fit(x, lam)).ci_low <= 1.0 <= f.ci_high for x in X]))
    lam, X = two_outlier_draws(rng, 0.0, N_TWO)
    type1 = float(np.mean([relation_fit(x, lam).p_value < ALPHA for x in X]))
    assert 0.93 - 3 * mc_se(0.93, N_TWO) <= cover <= 0.97 + 3 * mc_se(0.97, N_TWO), (cover, type1)
    assert type1 <= 0.06 + 3 * mc_se(0.06, N_TWO), (cover, type1)


RATIO_CASES = [(b, m) for b in (0.0, 1.0) for m in (3, 10)]
N_RATIO = 500


@pytest.mark.parametrize("b, m", RATIO_CASES)
def test_variance_ratio_ci_with_few_random_directions(b, m):
    """Coverage of the estimand mean_i v_i'Cv_i / (tr C / D) within the issue's band 0.93-0.97 widened
    by 3 MC SEs (500 probes: 0.0114 at 0.93, 0.0076 at 0.97). Before: 0.996-1.000 at b = 1."""
    d = Design(K=100, k=20, D=400, b=b, m_random=m, tails="t5", block_corr=0.3, scatter=0.3)
    rng = np.random.default_rng([8, int(b), m])
    lam, X, R, truth = realistic_draws(d, N_RATIO, rng)
    cover = float(np.mean([(q := variance_ratio(x, r)).ci_low <= t <= q.ci_high for x, r, t in zip(X, R, truth)]))
    assert 0.93 - 3 * mc_se(0.93, N_RATIO) <= cover <= 0.97 + 3 * mc_se(0.97, N_RATIO), cover


def powerlaw_ratio_draws(rng, m: int, n: int, *, D: int = 200, h: int = 20, K: int = 100, alpha: float = 1.0):
    """The independent review's design: C = diag(i^-alpha) in D dimensions, the top h coordinates
    logged as Hessian directions, m uniformly random unit directions, K Gaussian draws; yields
    (Hessian projections, random projections) and returns the exact estimand."""
    lam = np.arange(1, D + 1, dtype=float) ** -alpha
    out = []
    for _ in range(n):
        y = rng.standard_normal((K, D)) * np.sqrt(lam)
        U = rng.standard_normal((D, m))
        U /= np.linalg.norm(U, axis=0)
        out.append((y[:, :h], y @ U))
    return out, lam[:h].mean() / lam.mean()


N_POWER = 3000


def test_variance_ratio_ci_with_three_random_directions_on_a_power_law():
    """m = 3 random directions where the basis part dominates and u'Cu is skewed: coverage within
    0.93-0.97 widened by 3 MC SEs (3,000 probes: 0.0047 at 0.93). Measured 0.943 (before the df cap
    (m - 1) SE^2 / V_d: 0.927, scripts/calib_ratio_powerlaw.py)."""
    data, truth = powerlaw_ratio_draws(np.random.default_rng(20261202), 3, N_POWER)
    cover = float(np.mean([(q := variance_ratio(hv, rv)).ci_low <= truth <= q.ci_high for hv, rv in data]))
    assert 0.93 - 3 * mc_se(0.93, N_POWER) <= cover <= 0.97 + 3 * mc_se(0.97, N_POWER), cover


CURVATURE_NULLS = {
    "anisotropic-gauss": BASE.but(b=0.0, scatter=0.7),
    "anisotropic-t5-blocked": BASE.but(b=0.0, scatter=0.7, tails="t5", block_corr=0.5),
}
N_CURV = 500


@pytest.mark.parametrize("name", list(CURVATURE_NULLS))
def test_curvature_test_keeps_its_level_where_the_isotropy_test_rejects(name):
    """Anisotropic variances unrelated to lambda: curvature_test rejects <= 0.05 + 3 SE (0.0097 over
    500 probes, i.e. <= 0.06 within MC error); the isotropy (rotation) test rejects far more often."""
    rng = np.random.default_rng([9, list(CURVATURE_NULLS).index(name)])
    lam, X, _, _ = realistic_draws(CURVATURE_NULLS[name], N_CURV, rng)
    curv = float(np.mean([curvature_test(x, lam, resamples=199, rng=rng).p_value <= ALPHA for x in X]))
    iso = float(np.mean([isotropy_test(x, lam, resamples=199, rng=rng).p_value <= ALPHA for x in X[:200]]))
    assert curv <= ALPHA + 3 * mc_se(ALPHA, N_CURV), (curv, iso)
    assert iso >= 0.08, (curv, iso)


def test_curvature_test_power_at_b_one_with_20_directions():
    """Power >= 0.8 at b = 1, 20 directions, anisotropic scatter 1.0, t5, K = 30, blocked (measured 1.000)."""
    rng = np.random.default_rng(10)
    d = BASE.but(b=1.0, scatter=1.0, K=30, tails="t5", block_corr=0.5)
    lam, X, _, _ = realistic_draws(d, 200, rng)
    power = float(np.mean([curvature_test(x, lam, resamples=199, rng=rng).p_value <= ALPHA for x in X]))
    assert power >= 0.8, power


if __name__ == "__main__":  # print the measured rates quoted in docs/statistics.md
    for name in SCENARIOS:
        print(name, SCENARIOS[name], measure_per_run(name))
    for name, effect, _ in POWER_CASES:
        print("power", name, "b =", effect, measure_power(name, effect))
