"""alignment_test and variance_ratio against brute-force oracles; argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from varprinciple.errors import InputError
from varprinciple.stats import alignment_test, variance_ratio
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
    """The vectorised interval equals one computed replicate by replicate with explicit
    sampling covariances."""
    from scipy import stats as sps
    rng = np.random.default_rng(4)
    H = rng.normal(size=(60, 4)) * 2.0 + rng.normal(size=(60, 1))
    R = rng.normal(size=(60, 3))
    B = 199
    res = variance_ratio(H, R, resamples=B, confidence=0.9, rng=np.random.default_rng(5))
    assert_allclose(res.estimate, H.var(axis=0, ddof=1).mean() / R.var(axis=0, ddof=1).mean())
    seed = int(np.random.default_rng(5).integers(2**63 - 1))
    rs = Resampler(B, seed)
    W = rs.draw_weights(60)
    ch, cr = rs.direction_counts(4, 0), rs.direction_counts(3, 1)
    X = np.hstack([H, R])
    v0 = X.var(axis=0, ddof=1)
    l_draw, l_dir = [], []
    for b in range(B):
        w = W[b]
        m = (w @ X) / w.sum()
        v = (w @ (X - m) ** 2) / (w.sum() - 1)
        l_draw.append(np.log(v[:4].mean() / v[4:].mean()))
        l_dir.append(np.log((ch[b] @ v0[:4]) / 4 / ((cr[b] @ v0[4:]) / 3)))
    sq = (X - X.mean(axis=0)) ** 2
    Sigma = np.cov(sq, rowvar=False) / 60  # sampling covariance of the column variances
    v_ind = 0.0
    for cols, n in ((slice(0, 4), 4), (slice(4, 7), 3)):
        S = Sigma[cols, cols]
        C = np.eye(n) - 1.0 / n
        v_ind += np.trace(C @ S) / (n * n * v0[cols].mean() ** 2)
    var = max(np.var(l_draw, ddof=1) + np.var(l_dir, ddof=1) - v_ind,
              0.5 * max(np.var(l_draw, ddof=1), np.var(l_dir, ddof=1)))
    tq = sps.t.ppf(0.95, 5)
    assert_allclose(res.se_log, np.sqrt(var), rtol=1e-8)
    assert_allclose([res.ci_low, res.ci_high], res.estimate * np.exp([-tq * np.sqrt(var), tq * np.sqrt(var)]),
                    rtol=1e-8)


def test_variance_ratio_without_resamples_has_no_interval():
    rng = np.random.default_rng(0)
    res = variance_ratio(rng.normal(size=(20, 2)), rng.normal(size=(20, 2)), resamples=0)
    assert np.isfinite(res.estimate) and np.isnan(res.ci_low) and np.isnan(res.ci_high)
    assert res.to_frame().shape == (1, 9)


RATIO_SCENARIOS = [  # (directions per basis, draws, sd of log direction scatter, common-factor weight)
    (6, 200, 0.0, 0.8), (20, 200, 0.0, 0.8), (6, 200, 0.5, 0.8), (20, 100, 0.5, 0.8),
    (10, 100, 0.3, 0.0), (30, 300, 0.2, 0.3),
]


def measure_ratio_coverage(nd, K, het, cf, n_rep=400, seed=11):
    """Coverage of the 95% ratio interval for the population ratio 4 (Student t6 noise)."""
    rng = np.random.default_rng(seed)
    cover = 0
    for _ in range(n_rep):
        common = rng.standard_normal((K, 1))
        sh = np.exp(het * rng.standard_normal(nd) / 2)
        sr = np.exp(het * rng.standard_normal(nd) / 2)
        H = (np.sqrt(1 - cf**2) * rng.standard_t(6, (K, nd)) + cf * common) * 2.0 * sh
        R = (np.sqrt(1 - cf**2) * rng.standard_t(6, (K, nd)) + cf * common) * sr
        res = variance_ratio(H, R, resamples=199, rng=rng)
        cover += res.ci_low <= 4.0 <= res.ci_high
    return cover / n_rep


@pytest.mark.slow
@pytest.mark.parametrize("nd, K, het, cf", RATIO_SCENARIOS)
def test_variance_ratio_ci_coverage(nd, K, het, cf):
    """The interval covers the population ratio (directions as a sample) near the nominal
    rate; with few heterogeneous directions it may undercover slightly (t approximation)."""
    rate = measure_ratio_coverage(nd, K, het, cf)
    n_rep = 400
    assert 0.95 - 3 * np.sqrt(0.95 * 0.05 / n_rep) - 0.02 <= rate <= 0.99, rate


@pytest.mark.parametrize("call, match", [
    (lambda: alignment_test(np.ones((5, 2)), [1.0]), "`values` must be"),
    (lambda: alignment_test(np.ones((1, 2)), [1.0, 2.0]), "at least 2 samples"),
    (lambda: alignment_test(np.ones((5, 2)), [1.0, -2.0]), "must all be positive"),
    (lambda: alignment_test(np.ones((5, 2)), [1.0, 2.0], resamples=-1), "`resamples` must be"),
    (lambda: variance_ratio(np.ones((5, 2)), np.ones((4, 2))), "same number of rows"),
    (lambda: variance_ratio(np.ones((5, 0)), np.ones((5, 2))), "at least one direction"),
    (lambda: variance_ratio(np.ones((1, 2)), np.ones((1, 2))), "at least 2 draws"),
    (lambda: variance_ratio(np.ones((5, 2)), np.ones((5, 2)), confidence=0), r"`confidence` must be"),
])
def test_argument_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()
