"""relation_fit: the estimator against brute-force oracles, exclusions, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats as sps

from varprinciple.errors import InputError
from varprinciple.stats import (ExclusionReason, RelationFit, exclusion_reasons, relation_fit,
                                spearman)


def draws(rng, lam, b=1.0, K=200, corr=0.0):
    k = len(lam)
    z = rng.standard_normal((K, k))
    if corr:
        z = np.sqrt(1 - corr) * z + np.sqrt(corr) * rng.standard_normal((K, 1))
    return z * np.asarray(lam, float) ** (b / 2)


def brute_force(X, lam, confidence=0.95):
    """The estimator written out with explicit loops and matrices (no shortcuts): jackknife
    sampling covariance, HC2 scatter, Satterthwaite df (Bell-McCaffrey df of the scatter part:
    the smaller of those under the residual-based and the design-based working covariance)."""
    K, n = X.shape
    x = np.log(lam)
    s2 = X.var(axis=0, ddof=1)
    loo = np.array([np.log(np.delete(X, k, axis=0).var(axis=0, ddof=1)) for k in range(K)])  # (K, n)
    lbar = loo.mean(axis=0)
    y = K * np.log(s2) - (K - 1) * lbar
    Sigma = (K - 1) / K * (loo - lbar).T @ (loo - lbar)
    D = np.column_stack([np.ones(n), x])
    A = np.linalg.solve(D.T @ D, D.T)        # (2, n): coef = A y
    coef = A @ y
    H = D @ A
    h = np.diag(H)
    M = np.eye(n) - H                        # residual maker
    r = M @ y
    samp = A @ Sigma @ A.T
    var = []
    for j in range(2):
        W = np.diag(A[j] ** 2 / (1 - h))
        G = M @ W @ M
        v1 = r @ W @ r
        v2 = samp[j, j] - np.trace(G @ Sigma)
        var.append((max(v1 + v2, 0.5 * samp[j, j]), v1, v2, G))
    vb, v1, v2, G = var[1]
    def bell_mccaffrey(Omega):
        return np.trace(G @ Omega) ** 2 / np.trace(G @ Omega @ G @ Omega)

    # residual-based (HC2 scatter per direction) and design-based (pooled scatter / (1 - h_i))
    # working covariances
    Omega = np.diag(np.maximum((r**2 - np.diag(M @ Sigma @ M)) / (1 - h), 0) + np.diag(Sigma))
    tau2_pooled = max((r @ r - np.trace(M @ Sigma)) / (n - 2), 0.0)
    Omega_design = np.diag([tau2_pooled / (1 - h[i]) + Sigma[i, i] for i in range(n)])
    nu1 = min(bell_mccaffrey(Omega), bell_mccaffrey(Omega_design))
    u = (loo - lbar) @ A[1]
    kurt = K * np.sum((u - u.mean()) ** 4) / np.sum((u - u.mean()) ** 2) ** 2
    nu2 = min(max(2 * (K - 1) / (kurt - 1), 1), K - 1)
    p2 = max(v2, 0)
    df = (v1 + p2) ** 2 / (v1**2 / nu1 + p2**2 / nu2)
    se = np.sqrt(vb)
    tq = sps.t.ppf(0.5 + confidence / 2, df)
    tau2 = (r @ r - np.trace(M @ Sigma)) / (n - 2)
    return dict(intercept=coef[0], slope=coef[1], se_slope=se, se_intercept=np.sqrt(var[0][0]),
                ci_low=coef[1] - tq * se, ci_high=coef[1] + tq * se, df=df,
                p_value=sps.t.sf(coef[1] / se, df), scatter_var=max(tau2, 0.0),
                sampling_se=np.sqrt(samp[1, 1]))


SPECTRA = {"geometric": np.geomspace(20, 0.1, 15),  # symmetric in log lambda
           "harmonic": 8.0 / np.arange(1, 16),  # skewed
           "two-outliers": np.r_[np.logspace(1, 0, 13), 1e-2, 8e-3]}  # two high-leverage directions


# the min of the two Bell-McCaffrey df binds on either side across these cases
@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("corr", [0.0, 0.5])
@pytest.mark.parametrize("scatter", [0.0, 0.4])
def test_relation_fit_matches_brute_force(corr, scatter, spectrum):
    rng = np.random.default_rng(3)
    lam = SPECTRA[spectrum]
    X = draws(rng, lam, b=0.7, K=120, corr=corr) * np.exp(rng.normal(0, scatter, 15) / 2)
    fit = relation_fit(X, lam, confidence=0.9)
    ref = brute_force(X, lam, confidence=0.9)
    for k, v in ref.items():
        assert_allclose(getattr(fit, k), v, rtol=1e-9, atol=1e-12, err_msg=k)
    assert fit.n_directions == 15 and fit.n_excluded == 0 and fit.n_samples == 120


def test_slope_equals_ols_of_bias_corrected_logs():
    rng = np.random.default_rng(0)
    lam = np.geomspace(5, 0.5, 10)
    X = draws(rng, lam)
    fit = relation_fit(X, lam)
    # Gaussian: the bias correction is nearly constant, so the slope is close to plain OLS
    plain = np.polyfit(np.log(lam), np.log(X.var(axis=0, ddof=1)), 1)[0]
    assert abs(fit.slope - plain) < 0.02


def test_exclusions_are_counted_by_reason_and_left_out_of_the_fit():
    rng = np.random.default_rng(1)
    lam = np.array([10.0, 5.0, 2.0, 1.0, 0.5, 1e-8, -0.3, 0.0, 0.4])
    res = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0.5])
    X = draws(rng, np.abs(lam) + 0.1)
    fit = relation_fit(X, lam, residuals=res)
    assert fit.excluded == {"nonpositive": 2, "below_floor": 1, "residual": 1}
    assert fit.n_directions == 5 and fit.n_excluded == 4
    ref = relation_fit(X[:, :5], lam[:5])
    assert_allclose(fit.slope, ref.slope)
    assert_allclose(fit.ci_low, ref.ci_low)


def test_exclusion_reasons_floors():
    lam = np.array([1.0, 2e-6, 1e-6, 0.5])
    out = exclusion_reasons(lam, residuals=[np.nan, 0, 0, 0.5], floor_rel=1e-6)
    assert out.tolist() == [None, None, ExclusionReason.BELOW_FLOOR.value, ExclusionReason.RESIDUAL.value]
    # residual factor 0 switches the residual floor off
    out = exclusion_reasons(lam, residuals=[0, 0, 0, 0.5], residual_factor=0.0)
    assert out.tolist()[3] is None


def test_too_few_directions_give_undefined_values():
    rng = np.random.default_rng(0)
    X = draws(rng, [2.0, 1.0])
    fit = relation_fit(X, [2.0, 1.0])
    assert np.isfinite(fit.slope) and np.isnan(fit.ci_low) and np.isnan(fit.p_value)
    fit = relation_fit(X, [2.0, -1.0])
    assert np.isnan(fit.slope) and fit.n_directions == 1 and fit.excluded["nonpositive"] == 1
    fit = relation_fit(X, [1.0, 1.0])  # equal eigenvalues: no slope
    assert np.isnan(fit.slope)


def test_to_frame_has_reason_columns():
    rng = np.random.default_rng(0)
    fit = relation_fit(draws(rng, [3.0, 2.0, 1.0, 1.0]), [3.0, 2.0, 1.0, -1.0])
    df = fit.to_frame()
    assert isinstance(fit, RelationFit)
    assert df.loc[0, "n_excluded_nonpositive"] == 1 and df.loc[0, "slope"] == fit.slope
    assert "excluded" not in df.columns


def test_spearman_uses_every_direction_and_handles_constants():
    lam, v = [3.0, 2.0, -1.0, -2.0, 0.5], [4.0, 3.0, 2.0, 1.0, 0.1]
    r, p = spearman(lam, v)
    ref = sps.spearmanr(lam, v)
    assert_allclose([r, p], [ref.statistic, ref.pvalue])
    assert r == 0.7
    assert np.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])[0])
    assert np.isnan(spearman([1.0, 2.0], [1.0, 2.0])[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(values=np.ones(5), eigenvalues=[1.0]), "`values` must be a 2-D"),
    (dict(values=np.ones((5, 2)), eigenvalues=[1.0]), "`eigenvalues` must have one entry"),
    (dict(values=np.ones((1, 2)), eigenvalues=[1.0, 2.0]), "at least 2 samples"),
    (dict(values=np.full((3, 2), np.nan), eigenvalues=[1.0, 2.0]), "`values` must be finite"),
    (dict(values=np.ones((3, 2)), eigenvalues=[1.0, np.nan]), "`eigenvalues` must be finite; got NaN or Inf"),
    (dict(values=np.ones((3, 2)), eigenvalues=[1.0, np.inf]), "`eigenvalues` must be finite; got NaN or Inf"),
    (dict(values=np.full((3, 2), 1e160), eigenvalues=[1.0, 2.0]),
     r"`values` too large \(max \|x\| = 1e\+160 > 1e150\)"),
    (dict(values=np.ones((3, 2)), eigenvalues=[1.0, 2.0], residuals=[1.0]), "`residuals` must have"),
    (dict(values=np.ones((3, 2)), eigenvalues=[1.0, 2.0], confidence=1.5), r"`confidence` must be in \(0, 1\)"),
    (dict(values=np.ones((3, 2)), eigenvalues=[1.0, 2.0], floor_rel=2.0), "`floor_rel` must be in"),
    (dict(values=np.ones((3, 2)), eigenvalues=[1.0, 2.0], residual_factor=-1.0), "`residual_factor` must be"),
])
def test_relation_fit_argument_errors(kwargs, match):
    values = kwargs.pop("values")
    eig = kwargs.pop("eigenvalues")
    with pytest.raises(InputError, match=match):
        relation_fit(values, eig, **kwargs)


def test_variance_floor_binds_when_the_power_law_is_exact():
    """Variances exactly on the power law (RSS ~ 0): the slope variance is floored at half its
    sampling part instead of collapsing to zero."""
    rng = np.random.default_rng(4)
    K, k = 50, 10
    lam = np.geomspace(10, 0.1, k)
    Z = rng.standard_normal((K, k))
    Z -= Z.mean(axis=0)
    Q, _ = np.linalg.qr(Z)  # orthonormal, zero-mean columns: every s^2 equal
    X = Q * np.sqrt(K - 1) * lam ** 0.5
    fit = relation_fit(X, lam)
    assert_allclose(X.var(axis=0, ddof=1), lam)
    assert fit.se_slope >= np.sqrt(0.5) * fit.sampling_se * (1 - 1e-12)
    ref = brute_force(X, lam)
    assert_allclose(fit.se_slope, ref["se_slope"], rtol=1e-9)


def test_three_directions_give_a_slope_without_interval():
    """One residual df: coverage 0.92-0.99 over designs (docs/statistics.md), so no interval."""
    rng = np.random.default_rng(1)
    fit = relation_fit(draws(rng, [4.0, 2.0, 1.0]), [4.0, 2.0, 1.0])
    assert np.isfinite(fit.slope) and np.isnan(fit.ci_low) and np.isnan(fit.p_value) and fit.n_directions == 3
    assert np.isfinite(relation_fit(draws(rng, [4.0, 2.0, 1.0, 0.5]), [4.0, 2.0, 1.0, 0.5]).ci_low)


def test_fewer_than_three_draws_give_a_slope_without_interval():
    lam = np.geomspace(5, 1, 6)
    X = np.random.default_rng(0).normal(size=(2, 6)) * np.sqrt(lam)
    fit = relation_fit(X, lam)
    assert np.isfinite(fit.slope) and np.isnan(fit.ci_low) and np.isnan(fit.p_value)


def test_default_floor_excludes_tiny_high_leverage_directions():
    """Two directions at 5e-6 lambda_max with off-law variances (issue 7): excluded by default."""
    rng = np.random.default_rng(2)
    lam = np.r_[np.geomspace(1.0, 0.01, 18), 5e-6, 4e-6]
    sd = np.sqrt(np.r_[np.geomspace(1.0, 0.01, 18), 0.1, 0.1])
    X = rng.normal(size=(200, 20)) * sd
    fit = relation_fit(X, lam)
    assert fit.excluded["below_floor"] == 2 and fit.n_directions == 18
    assert fit.ci_low < 1.0 < fit.ci_high
    old = relation_fit(X, lam, floor_rel=1e-6)
    assert old.n_directions == 20 and old.slope < 0.5


def test_interval_is_invariant_to_the_noise_scale_and_the_listing_order():
    rng = np.random.default_rng(5)
    lam = np.geomspace(10, 0.1, 12)
    X = rng.standard_t(5, (80, 12)) * lam ** 0.3
    a = relation_fit(X, lam)
    b = relation_fit(3.0 * X, lam)
    idx = rng.permutation(12)
    c = relation_fit(X[:, idx], lam[idx])
    for f in (b, c):
        assert_allclose([f.slope, f.ci_low, f.ci_high, f.df], [a.slope, a.ci_low, a.ci_high, a.df], rtol=1e-9)


def test_numerically_equal_eigenvalues_give_no_slope():
    # an MSE output layer's Hessian block is I_outputs (x) feature covariance: its top
    # eigenvalue repeats, and eigsh returns copies that differ by round-off only
    rng = np.random.default_rng(0)
    lam = 1.247398 * (1 + 1e-15 * np.arange(4))
    x = rng.normal(size=(200, 4)) * np.sqrt([1.0, 1.3, 0.8, 1.1])
    fit = relation_fit(x, lam)
    assert np.isnan(fit.slope) and np.isnan(fit.ci_low) and fit.n_directions == 4
    # two distinct levels (multiplicities 3 and 2) are enough for a slope
    lam2 = np.r_[np.full(3, 2.0) * (1 + 1e-15 * np.arange(3)), np.full(2, 0.5)]
    x2 = rng.normal(size=(400, 5)) * np.sqrt(lam2)
    fit2 = relation_fit(x2, lam2)
    assert 0.7 < fit2.slope < 1.3 and fit2.ci_low < 1 < fit2.ci_high
    # one direction alone at its level (leverage 1): it fixes the slope, its scatter cannot be
    # estimated, so the slope has no interval (and the curvature test no p)
    lam3 = np.r_[np.full(3, 2.0) * (1 + 1e-15 * np.arange(3)), 0.5]
    x3 = rng.normal(size=(400, 4)) * np.sqrt(lam3)
    with np.errstate(all="raise"):
        fit3 = relation_fit(x3, lam3)
        from varprinciple.stats import curvature_test
        ct = curvature_test(x3, lam3, resamples=9)
    assert np.isfinite(fit3.slope) and np.isnan(fit3.ci_low) and np.isnan(ct.p_value)


def test_near_degenerate_designs_give_clean_results():
    # independent review: one eigenvalue level beside a nearly repeated one (jitter 3e-3 ->
    # 1 - h ~ 1.5e-5) broke the Bell-McCaffrey traces (negative df, NaN or 1e146 intervals), and
    # curvature_test then reported its smallest p on white noise
    from varprinciple.stats import curvature_test
    rng = np.random.default_rng(1)
    lam = np.r_[2.0 * (1 + 3e-3 * np.arange(3)), 0.5]
    with np.errstate(all="raise"):
        for _ in range(20):
            x = rng.normal(size=(100, 4))  # b = 0
            fit = relation_fit(x, lam)
            ct = curvature_test(x, lam, resamples=49, rng=rng)
            assert np.isfinite(fit.slope) and np.isnan(fit.ci_low) and np.isnan(ct.p_value)
    # a constant (non-zero) column is constant whatever its value: no slope, no test
    x = rng.normal(size=(100, 6)) * np.sqrt(np.geomspace(4, 0.1, 6))
    for c in (0.0, 0.7, 3.0):
        xc = x.copy()
        xc[:, 2] = c
        assert np.isnan(relation_fit(xc, np.geomspace(4, 0.1, 6)).slope)
        assert np.isnan(curvature_test(xc, np.geomspace(4, 0.1, 6), resamples=9).p_value)
