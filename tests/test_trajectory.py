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


def test_collect_trajectory_streams_when_snapshots_exceed_memory():
    import torch

    from varprinciple.collect.trajectory import collect_trajectory

    out = []
    for mb in (1024, 0):  # 0 MB: every window exceeds it -> incremental PCA
        g = torch.Generator().manual_seed(0)
        X = torch.randn(64, 4, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5, 0.2],
                                                                                 dtype=torch.float64)
        y = X @ torch.ones(4, 1, dtype=torch.float64) + 0.3 * torch.randn(64, 1, generator=g, dtype=torch.float64)
        model = torch.nn.Linear(4, 1, bias=False).double()
        torch.nn.init.ones_(model.weight)
        out.append(collect_trajectory(model, "mse", X, y, method="sgd", lr=0.02, batch_size=8, generator=g,
                                      window=2000, every=5, n_components=3, profile_points=3, max_memory_mb=mb))
    exact, inc = (r.pcs for r in out)
    # the incremental PCA keeps k < D components between batches, so it is approximate: the
    # variances agree, the widths along the leading PCs too (the last PC mixes the most)
    np.testing.assert_allclose(inc["variance"], exact["variance"], rtol=0.05)
    np.testing.assert_allclose(inc["width"][:2], exact["width"][:2], rtol=0.05)


def test_matched_walk_sd_equals_the_sgd_noise_trace_by_brute_force():
    import torch

    from varprinciple.collect.trajectory import matched_walk_sd

    g = torch.Generator().manual_seed(3)
    n, B, lr = 30, 7, 0.05
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = X @ torch.ones(4, 1, dtype=torch.float64) + 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(4, 1).double()
    # brute force: Tr C_B = E ||g_B - g||^2 over every B-subset would be C(30, 7); use the
    # closed form of the per-sample gradients of 0.5 * (w.x + b - y)^2 instead
    w, b = model.weight.detach()[0], model.bias.detach()[0]
    r = X @ w + b - y[:, 0]
    G = torch.cat([X * r[:, None], r[:, None]], dim=1)  # per-sample gradients (n, D)
    ss = ((G - G.mean(0)) ** 2).sum()
    trace = (n - B) / (B * (n - 1)) * ss / n
    expected = lr * math.sqrt(float(trace) / 5)
    assert math.isclose(matched_walk_sd(model, "mse", X, y, lr=lr, batch_size=B), expected, rel_tol=1e-10)
    with pytest.raises(ConfigError, match=r"\[trajectory\] walk_sd: the default matches the SGD noise of batch "
                                          r"size 30, which must be in \[1, 30\)"):
        matched_walk_sd(model, "mse", X, y, lr=lr, batch_size=n)


def test_random_walk_window_is_a_random_walk():
    import torch

    from varprinciple.collect.trajectory import collect_trajectory

    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 40, generator=g, dtype=torch.float64)
    y = torch.randn(64, 1, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(40, 1, bias=False).double()
    w0 = model.weight.detach().clone()
    res = collect_trajectory(model, "mse", X, y, method="sgd", lr=0.1, batch_size=8, generator=g, window=800,
                             every=1, n_components=6, profile_points=3, dynamics="random_walk", walk_sd=0.01)
    # 800 steps of sd 0.01 per coordinate: displacement ~ 0.01 * sqrt(800) per coordinate
    moved = float((model.weight.detach() - w0).std())
    assert 0.7 * 0.01 * math.sqrt(800) < moved < 1.3 * 0.01 * math.sqrt(800)
    # PCA variances of a walk fall as i^-2 (Antognini & Sohl-Dickstein; first-half PCA), and
    # the walk diffuses: the second half's variance is about twice its first half's
    v = res.pcs["variance_fit"].to_numpy()
    slope = np.polyfit(np.log(np.arange(1, len(v) + 1)), np.log(v), 1)[0]
    assert -2.6 < slope < -1.4, slope
    assert 1.4 < float(res.pcs["variance_ratio"].median()) < 3.0
    with pytest.raises(ConfigError, match=r"\[trajectory\] walk_sd: the random walk needs a step sd > 0; got None"):
        collect_trajectory(model, "mse", X, y, method="sgd", lr=0.1, batch_size=8, generator=g, window=40,
                           every=1, n_components=3, dynamics="random_walk")
    from varprinciple.collect.config import CONFIG_KEYS
    from varprinciple.collect.trajectory import DYNAMICS
    assert CONFIG_KEYS["trajectory"]["dynamics"].choices == DYNAMICS  # config.py cannot import torch's side
    with pytest.raises(ConfigError,
                       match=r"\[trajectory\] dynamics: must be one of \['train', 'random_walk'\]; got 'levy'"):
        collect_trajectory(model, "mse", X, y, method="sgd", lr=0.1, batch_size=8, generator=g, window=40,
                           every=1, n_components=3, dynamics="levy")


def _linreg(seed=0, n=200):
    import torch
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = X @ torch.ones(5, 1, dtype=torch.float64) + 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    return g, X, y, torch.nn.Linear(5, 1).double()


def test_window_starts_after_the_plateau_and_records_its_loss_trend(caplog):
    pytest.importorskip("torch")
    from varprinciple.collect.trajectory import collect_trajectory
    kw = dict(method="sgd", lr=0.02, batch_size=10, window=400, every=5, n_components=3, profile_points=3)
    # from the initialisation, without settling, the loss falls across the window: flagged
    g, X, y, model = _linreg()
    raw = collect_trajectory(model, "mse", X, y, generator=g, **kw)
    assert raw.window["settle_steps"] == 0 and raw.window["plateau_reached"] is None
    assert raw.window["loss_change"] < -0.1 and raw.window["loss_level"] is False
    # the plateau rule trains on in blocks of 200 steps until the loss moves < 5 % per block
    g, X, y, model = _linreg()
    res = collect_trajectory(model, "mse", X, y, generator=g, settle_steps=100, plateau_tol=0.05,
                             plateau_steps=200, **kw)
    w = res.window
    assert w["plateau_reached"] is True and w["settle_steps"] >= 300 and (w["settle_steps"] - 100) % 200 == 0
    assert abs(w["loss_change"]) < 0.1 and w["loss_level"] is True
    assert int(res.projections["step"].min()) >= w["settle_steps"] == w["window_start_step"]
    # an unreachable tolerance stops at max_settle_steps, logged and recorded
    g, X, y, model = _linreg()
    with caplog.at_level("WARNING"):
        res = collect_trajectory(model, "mse", X, y, generator=g, plateau_tol=1e-12, plateau_steps=100,
                                 max_settle_steps=300, **kw)
    assert res.window["plateau_reached"] is False and res.window["settle_steps"] == 300
    assert "did not level" in caplog.text


def test_window_notes_reach_the_psi_row():
    from varprinciple.stats.psi_analysis import _window_notes
    meta = {"trajectory": {"loss_change": -0.35, "loss_level": False, "plateau_reached": False}}
    out = _window_notes(meta, "no interval: n_eff 4.0 < 10 along PC 7 (docs/flatness.md)")
    assert out["note"].startswith("no interval") and "trends by -35% across it" in out["note"]
    assert "had not levelled" in out["note"] and out["loss_change"] == -0.35
    assert _window_notes({"trajectory": {"loss_change": 0.01, "loss_level": True}}, None)["note"] is None
    assert _window_notes({}, None) == {"loss_change": None, "plateau_reached": None, "note": None}


def test_settle_steps_above_the_cap_are_refused():
    from varprinciple.collect.config import validate_config
    with pytest.raises(ConfigError, match=r"\[trajectory\] settle_steps: must be <= max_settle_steps \(100\)"):
        validate_config({"trajectory": {"window": 2000, "settle_steps": 500, "max_settle_steps": 100}})


def test_window_length_follows_the_measured_relaxation_time():
    pytest.importorskip("torch")
    from varprinciple.collect.trajectory import collect_trajectory, window_n_eff_min
    g, X, y, model = _linreg(seed=1)
    kw = dict(method="sgd", lr=0.03, batch_size=10, every=2, n_components=3, profile_points=3, sampler="independent")
    # settle first; a 100-step window is short against the flat directions' relaxation (~1/(lr lambda))
    res = collect_trajectory(model, "mse", X, y, generator=g, window=100, settle_steps=500, window_n_eff=15,
                             max_window=6000, **kw)
    w = res.window
    assert w["window_tries"][0] == 100 and len(w["window_tries"]) >= 2 and w["window_used"] == w["window_tries"][-1]
    assert w["window_n_eff_min"] == pytest.approx(window_n_eff_min(res))
    assert w["window_n_eff_min"] >= 15 or w["window_used"] == 6000
    assert w["window_start_step"] == 500 + sum(w["window_tries"][:-1])
    half = w["window_start_step"] + w["window_used"] // 2      # the measuring half of the last window
    assert half <= int(res.projections["step"].min()) <= half + 2
