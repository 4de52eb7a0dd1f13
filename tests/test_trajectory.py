"""Known answers of the trajectory analysis (numpy core of varprinciple.collect.trajectory)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from varprinciple.collect.trajectory import SnapshotPCA, analyse_trajectory, landscape_width
from varprinciple.errors import ConfigError


def _rotation(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _check_widths(lam, c, factor, measured):
    expected = 2 * np.sqrt(2 * (factor - 1) * c / lam)
    np.testing.assert_allclose(measured, expected, rtol=1e-3)


def test_widths_match_the_closed_form_on_a_quadratic():
    rng = np.random.default_rng(0)
    lam = np.array([10.0, 3.0, 1.0, 0.2])
    U = _rotation(4, rng)
    H = U @ np.diag(lam) @ U.T
    c, center = 0.7, np.zeros(4)
    loss = lambda th: c + 0.5 * float(th @ H @ th)  # noqa: E731
    for factor in (math.e, 2.0):
        w = [sum(landscape_width(loss, center, U[:, i], factor=factor, t0=1e-3, t_max=1e3)) for i in range(4)]
        _check_widths(lam, c, factor, w)
        with pytest.raises(AssertionError):               # the check can fail: a wrong exponent
            _check_widths(lam ** 0.6, c, factor, w)


def test_width_is_censored_or_undefined():
    flat = lambda th: 1.0  # noqa: E731
    assert all(math.isnan(t) for t in landscape_width(flat, np.zeros(2), np.array([1.0, 0]), t_max=10))
    zero = lambda th: 0.0  # noqa: E731
    assert all(math.isnan(t) for t in landscape_width(zero, np.zeros(2), np.array([1.0, 0])))


def _check_decay(var, expected, tol=0.2):
    i = np.arange(1, len(var) + 1)
    slope = np.polyfit(np.log(i), np.log(var), 1)[0]
    assert abs(slope - expected) < tol, slope


def test_random_walk_control_variance_falls_as_index_squared():
    # Antognini & Sohl-Dickstein (2018): PCA of a high-dimensional random walk, sigma_i^2 ~ i^-2
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=(400, 2000)), axis=0)
    pca = SnapshotPCA(n_first=400, n_components=10)
    for x in walk:
        pca.add(x)
    _check_decay(pca.variance_fit, -2.0)
    with pytest.raises(AssertionError):
        _check_decay(pca.variance_fit, -1.0)


def test_incremental_pca_matches_the_exact_one():
    rng = np.random.default_rng(1)
    scales = np.r_[[8.0, 4.0, 2.0], np.full(37, 0.1)]
    X = rng.normal(size=(600, 40)) * scales
    exact = SnapshotPCA(n_first=300, n_components=3)
    inc = SnapshotPCA(n_first=300, n_components=3, streaming=True, batch=40)
    for x in X:
        exact.add(x)
        inc.add(x)
    np.testing.assert_allclose(np.abs(np.sum(exact.components * inc.components, 1)), 1.0, atol=2e-3)
    np.testing.assert_allclose(inc.variance_fit, exact.variance_fit, rtol=0.02)
    np.testing.assert_allclose(inc.mean_second, exact.mean_second)
    np.testing.assert_allclose(np.abs(inc.projections[:, 0]), np.abs(exact.projections[:, 0]), rtol=0.05,
                               atol=0.05)


def test_snapshot_pca_errors():
    with pytest.raises(ConfigError, match="`n_components` must be < the snapshots of the first half"):
        SnapshotPCA(n_first=5, n_components=5)
    pca = SnapshotPCA(n_first=5, n_components=2)
    for x in np.random.default_rng(0).normal(size=(7, 3)):
        pca.add(x)
    with pytest.raises(ConfigError, match="the second half has 2 snapshots"):
        analyse_trajectory(pca, lambda v: 1.0)


def test_split_half_variance_is_unbiased_where_sample_pca_is_not():
    # isotropic Gaussian snapshots: every direction has variance 1; the first-half PCA's
    # eigenvalues are inflated (they are maxima), the second-half variances are not
    rng = np.random.default_rng(2)
    pca = SnapshotPCA(n_first=60, n_components=10)
    for x in rng.normal(size=(2060, 30)):
        pca.add(x)
    res = analyse_trajectory(pca, lambda v: 1.0 + 0.5 * float(v @ v), profile_points=3)
    assert pca.variance_fit[0] > 1.5
    np.testing.assert_allclose(res.pcs["variance"], 1.0, atol=0.1)
    np.testing.assert_allclose(res.pcs["variance_ratio"], 1.0, atol=0.15)
