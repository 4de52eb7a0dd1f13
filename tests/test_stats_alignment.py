"""alignment_test and variance_ratio against brute-force oracles; argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats as sps

from varprinciple.errors import InputError
from varprinciple.stats import (AlignmentTest, CurvatureTest, IsotropyTest, alignment_test, curvature_test,
                                isotropy_test, relation_fit, variance_ratio)
from varprinciple.stats._resampling import Resampler, haar_rotations
from varprinciple.stats.alignment import _alignment_from_cov


def test_haar_rotations_are_orthogonal_and_uniform():
    Q = haar_rotations(4000, 3, rng=np.random.default_rng(0))
    assert_allclose(Q @ Q.transpose(0, 2, 1), np.broadcast_to(np.eye(3), Q.shape), atol=1e-12)
    # Haar: every entry has mean 0 and variance 1/k; determinants +-1 equally often
    assert abs(Q.mean()) < 0.01
    assert_allclose((Q**2).mean(axis=0), np.full((3, 3), 1 / 3), atol=0.02)
    det = np.linalg.det(Q)
    assert abs(np.mean(det > 0) - 0.5) < 3 * np.sqrt(0.25 / 4000)


def test_alignment_estimate_formula():
    rng = np.random.default_rng(1)
    lam = np.array([4.0, 2.0, 1.0])
    X = rng.normal(size=(50, 3)) * [2.0, 1.0, 0.5]
    s2 = X.var(axis=0, ddof=1)
    res = alignment_test(X, lam, resamples=0)
    assert_allclose(res.estimate, 3 * (lam @ s2) / (lam.sum() * s2.sum()))
    assert np.isnan(res.p_value) and res.n_directions == 3 and res.n_samples == 50


def test_rotation_reference_equals_explicit_rotations():
    """The (R o R) D shortcut gives exactly the statistics of explicitly rotated covariances."""
    rng = np.random.default_rng(2)
    k, N = 5, 299
    lam = np.geomspace(5, 1, k)
    X = rng.normal(size=(40, k)) * np.sqrt(lam)
    S = np.cov(X, rowvar=False)
    resampler = Resampler(N, seed=7)
    fast = _alignment_from_cov(S, lam, 40, N, resampler=resampler)
    # explicit: rotate S by Q_n U^T where S = U D U^T and Q_n are the same Haar matrices
    Q = haar_rotations(N, k, rng=resampler._rng(3, k))
    D, U = np.linalg.eigh(S)
    t_obs = k * lam @ np.diag(S) / (lam.sum() * np.trace(S))
    t_rot = []
    for q in Q:
        R = q @ U.T
        Srot = R @ S @ R.T
        t_rot.append(k * lam @ np.diag(Srot) / (lam.sum() * np.trace(Srot)))
    p = (1 + np.sum(np.array(t_rot) >= t_obs - 1e-12)) / (1 + N)
    assert_allclose(fast.estimate, t_obs)
    assert_allclose(fast.p_value, p)


def test_alignment_detects_aligned_noise():
    rng = np.random.default_rng(3)
    lam = np.geomspace(10, 1, 8)
    res = alignment_test(rng.normal(size=(300, 8)) * np.sqrt(lam), lam, resamples=199, rng=rng)
    assert res.estimate > 1.3 and res.p_value == 1 / 200


def test_variance_ratio_interval_matches_loop():
    """The vectorised interval equals one computed with explicit leave-one-draw-out loops and
    explicit sampling variances of every covariance entry."""
    from scipy import stats as sps
    rng = np.random.default_rng(4)
    K, h, m = 60, 4, 3
    H = rng.normal(size=(K, h)) * 2.0 + rng.normal(size=(K, 1))
    R = rng.normal(size=(K, m)) * [1.0, 1.5, 0.7] + 0.3 * rng.normal(size=(K, 1))
    res = variance_ratio(H, R, confidence=0.9)
    X = np.hstack([H, R])
    v0 = X.var(axis=0, ddof=1)
    assert_allclose(res.estimate, v0[:h].mean() / v0[h:].mean())
    L = []
    for k in range(K):
        v = np.delete(X, k, axis=0).var(axis=0, ddof=1)
        L.append(np.log(v[:h].mean() / v[h:].mean()))
    L = np.array(L)
    v_s = (K - 1) / K * np.sum((L - L.mean()) ** 2)
    kurt = K * np.sum((L - L.mean()) ** 4) / np.sum((L - L.mean()) ** 2) ** 2
    nu_s = min(max(2 * (K - 1) / (kurt - 1), 1), K - 1)
    Rc = R - R.mean(axis=0)
    C = np.cov(R, rowvar=False)
    svar = np.zeros((m, m))  # sampling variance of each covariance entry (delta method)
    for i in range(m):
        for j in range(m):
            p = Rc[:, i] * Rc[:, j]
            svar[i, j] = np.var(p, ddof=1) / K
    diag = np.diag(C)
    Sv = np.cov((Rc**2).T) / K  # sampling covariance of the variances
    spread = np.sum((diag - diag.mean()) ** 2) - np.trace((np.eye(m) - 1 / m) @ Sv)
    offd = sum(C[i, j] ** 2 - svar[i, j] for i in range(m) for j in range(i + 1, m))
    var_dir = max(0.0, 2 * (spread / 2 + offd) / ((m - 1) * (m + 2) / 2))
    v_d = var_dir / (m * v0[h:].mean() ** 2)
    satterthwaite = (v_s + v_d) ** 2 / (v_s**2 / nu_s + v_d**2 / (m - 1))
    df = min(satterthwaite, (m - 1) * (v_s + v_d) / v_d)  # basis df in proportion to its share
    se = np.sqrt(v_s + v_d)
    tq = sps.t.ppf(0.95, df)
    assert_allclose([res.se_log, res.se_log_sampling, res.se_log_directions, res.df],
                    [se, np.sqrt(v_s), np.sqrt(v_d), df], rtol=1e-8)
    assert_allclose([res.ci_low, res.ci_high], res.estimate * np.exp([-tq * se, tq * se]), rtol=1e-8)


def test_variance_ratio_needs_two_random_directions_for_an_interval():
    rng = np.random.default_rng(0)
    res = variance_ratio(rng.normal(size=(20, 2)), rng.normal(size=(20, 1)))
    assert np.isfinite(res.estimate) and np.isnan(res.ci_low) and np.isnan(res.ci_high)
    assert res.to_frame().shape == (1, 11)


def test_isotropy_test_is_the_rotation_test_under_its_honest_name():
    assert isotropy_test is alignment_test and IsotropyTest is AlignmentTest
    rng = np.random.default_rng(0)
    lam = np.geomspace(5, 1, 6)
    X = rng.normal(size=(80, 6)) * np.exp(rng.normal(0, 0.5, 6))
    a = isotropy_test(X, lam, resamples=99, rng=np.random.default_rng(1))
    b = alignment_test(X, lam, resamples=99, rng=np.random.default_rng(1))
    assert a == b and isinstance(a, IsotropyTest)


def _curvature_data(seed, b=0.0, n=12, K=60, scatter=0.5):
    rng = np.random.default_rng(seed)
    lam = np.geomspace(20, 0.05, n)
    return rng.standard_t(6, (K, n)) * np.sqrt(lam ** b * np.exp(rng.normal(0, scatter, n))), lam


def test_curvature_test_statistic_and_parametric_p_are_relation_fits():
    X, lam = _curvature_data(1, b=0.4)
    res = curvature_test(X, lam, resamples=99, rng=np.random.default_rng(0))
    fit = relation_fit(X, lam)
    assert isinstance(res, CurvatureTest)
    assert_allclose([res.estimate, res.statistic, res.df, res.p_parametric],
                    [fit.slope, fit.slope / fit.se_slope, fit.df, fit.p_value], rtol=1e-10)
    assert res.p_value == max(res.p_permutation, res.p_parametric)
    assert res.n_directions == 12 and res.n_samples == 60 and res.resamples == 99


def test_curvature_permutation_p_matches_a_loop_over_relation_fit():
    """The vectorised reference equals relation_fit refitted on every permuted eigenvalue vector."""
    X, lam = _curvature_data(2, b=0.1)
    N = 60
    perms = np.argsort(np.random.default_rng(5).random((N, lam.size)), axis=1)
    res = curvature_test(X, lam, resamples=N, _permutations=perms)
    p_obs = relation_fit(X, lam).p_value
    order = np.argsort(-lam)
    fits = [relation_fit(X[:, order], lam[order][pi]) for pi in perms]
    # each permuted fit, with the sampling part's df (nu2) of the observed fit: recover nu1
    # from the fit's own Satterthwaite df and recombine
    from varprinciple.stats.relation import _jackknife_log_variances, _slope_rows
    y, infl = _jackknife_log_variances(X[:, order])
    nu2_obs = _slope_rows(y, infl, np.log(lam[order])[None, :])[4][0]
    p_perm = []
    for pi, f in zip(perms, fits):
        b, var, df, vs, nu2 = (v[0] for v in _slope_rows(y, infl, np.log(lam[order][pi])[None, :]))
        assert_allclose([b, np.sqrt(var), df], [f.slope, f.se_slope, f.df], rtol=1e-9)
        _, _, df_fixed, _, _ = (v[0] for v in _slope_rows(y, infl, np.log(lam[order][pi])[None, :], nu2=nu2_obs))
        p_perm.append(sps.t.sf(f.slope / f.se_slope, df_fixed))
    # the statistic is -log sf, monotone in the one-sided p (ties within rounding count as hits)
    expected = (1 + np.sum(np.array(p_perm) <= p_obs * (1 + 1e-9))) / (1 + N)
    assert_allclose(res.p_permutation, expected)


def test_curvature_test_does_not_depend_on_the_listing_order():
    X, lam = _curvature_data(3, b=0.2)
    idx = np.random.default_rng(0).permutation(lam.size)
    a = curvature_test(X, lam, resamples=199, rng=np.random.default_rng(4))
    b = curvature_test(X[:, idx], lam[idx], resamples=199, rng=np.random.default_rng(4))
    assert_allclose([a.p_value, a.p_permutation, a.estimate, a.statistic],
                    [b.p_value, b.p_permutation, b.estimate, b.statistic], rtol=1e-9)


def test_curvature_test_detects_curvature_and_not_mere_anisotropy():
    X, lam = _curvature_data(4, b=1.0, n=20, K=100)
    assert curvature_test(X, lam, resamples=199, rng=np.random.default_rng(0)).p_value == 1 / 200
    X, lam = _curvature_data(5, b=0.0, n=20, K=100, scatter=1.0)  # strongly anisotropic, unrelated
    assert isotropy_test(X, lam, resamples=199, rng=np.random.default_rng(0)).p_value < 0.05
    assert curvature_test(X, lam, resamples=199, rng=np.random.default_rng(0)).p_value > 0.05


def test_curvature_test_undefined_cases():
    X, lam = _curvature_data(6)
    res = curvature_test(X, lam, resamples=0)
    assert np.isnan(res.p_value) and np.isnan(res.p_permutation) and np.isfinite(res.p_parametric)
    res = curvature_test(X[:, :2], lam[:2], resamples=99)
    assert np.isnan(res.estimate) and np.isnan(res.p_value) and res.n_directions == 2
    assert curvature_test(X, lam, resamples=99).to_frame().shape == (1, 9)


@pytest.mark.parametrize("call, match", [
    (lambda: curvature_test(np.ones((5, 3)), [1.0, 2.0]), "`values` must be"),
    (lambda: curvature_test(np.ones((5, 2)), [1.0, 0.0]), "must all be positive"),
    (lambda: curvature_test(np.ones((5, 2)), [1.0, 2.0], resamples=2.5), "`resamples` must be"),
    (lambda: curvature_test(np.full((5, 2), np.inf), [1.0, 2.0]), "`values` must be finite"),
])
def test_curvature_argument_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: alignment_test(np.ones((5, 2)), [1.0]), "`values` must be"),
    (lambda: alignment_test(np.ones((1, 2)), [1.0, 2.0]), "at least 2 samples"),
    (lambda: alignment_test(np.ones((5, 2)), [1.0, -2.0]), "must all be positive"),
    (lambda: alignment_test(np.ones((5, 2)), [1.0, 2.0], resamples=-1), "`resamples` must be"),
    (lambda: variance_ratio(np.ones((5, 2)), np.ones((4, 2))), "same number of rows"),
    (lambda: variance_ratio(np.ones((5, 0)), np.ones((5, 2))), "at least one direction"),
    (lambda: variance_ratio(np.ones((1, 2)), np.ones((1, 2))), "at least 2 draws"),
    (lambda: variance_ratio(np.ones((5, 2)), np.ones((5, 2)), confidence=0), r"`confidence` must be"),
    (lambda: variance_ratio(np.full((5, 2), np.nan), np.ones((5, 2))), "must be finite"),
])
def test_argument_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_variance_ratio_needs_three_random_directions_for_an_interval():
    from varprinciple.stats import variance_ratio
    from varprinciple.stats.alignment import MIN_RANDOM_CI
    rng = np.random.default_rng(0)
    H = rng.normal(size=(50, 5)) * 2.0
    two = variance_ratio(H, rng.normal(size=(50, 2)))
    three = variance_ratio(H, rng.normal(size=(50, MIN_RANDOM_CI)))
    assert np.isfinite(two.estimate) and np.isnan(two.ci_low) and np.isfinite(three.ci_low)
