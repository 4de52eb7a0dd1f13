"""Per-run outcomes (stats.outcomes): the filter-normalised profile width against analytic
profiles and under a ReLU rescaling that changes the Hessian but not the function."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from varprinciple.collect.profiles import random_profiles
from varprinciple.stats.outcomes import profile_width


def _profiles(ts, fns):
    return pd.DataFrame([{"kind": "random", "direction": j, "t": float(t), "loss": float(f(t))}
                         for j, f in enumerate(fns) for t in ts])


@pytest.mark.parametrize("points", [401, 41])
def test_width_of_quadratic_and_asymmetric_profiles_matches_the_analytic_edges(points):
    ts = np.linspace(-1, 1, points)
    a, b, c = 0.4, 1.6, 0.9
    df = _profiles(ts, [lambda t: 0.01 + a * t * t,                       # edges ±sqrt(0.1/a)
                        lambda t: 0.01 + (b if t > 0 else c) * t * t])   # sqrt(0.1/b) + sqrt(0.1/c)
    w, cens, n = profile_width(df, rise=0.1)
    truth = np.mean([2 * np.sqrt(0.1 / a), np.sqrt(0.1 / b) + np.sqrt(0.1 / c)])
    # the chord of a convex profile lies above it: interpolation puts each edge at most one
    # grid step too close to the centre, never beyond it
    step = ts[1] - ts[0]
    assert cens == 0 and n == 2
    assert truth - 2 * step <= w <= truth + 1e-12
    if points == 401:
        assert w == pytest.approx(truth, abs=1e-3)


def test_a_side_that_never_rises_counts_as_the_radius_and_is_reported():
    ts = np.linspace(-0.5, 0.5, 21)
    df = _profiles(ts, [lambda t: 0.01 + (0.01 * t * t if t < 0 else 1.0 * t * t)])
    w, cens, n = profile_width(df, rise=0.1)
    assert cens == 1 and n == 1
    assert w == pytest.approx(0.5 + np.sqrt(0.1), abs=0.03)
    # no centre point: nothing to measure
    assert np.isnan(profile_width(_profiles(np.linspace(-1, 1, 4), [lambda t: t * t]))[0])


def test_width_is_invariant_to_a_relu_rescaling_that_changes_the_curvature():
    torch.manual_seed(0)
    X = torch.randn(64, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    m = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    m2 = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    with torch.no_grad():
        for p, q in zip(m.parameters(), m2.parameters()):
            q.copy_(p)
        m2[0].weight.mul_(4.0)
        m2[0].bias.mul_(4.0)
        m2[2].weight.div_(4.0)
    assert torch.allclose(m(X), m2(X))
    p1 = random_profiles(m, "cross_entropy", X, y, n_directions=3, points=41, radius=2.0,
                         generator=torch.Generator().manual_seed(1))
    p2 = random_profiles(m2, "cross_entropy", X, y, n_directions=3, points=41, radius=2.0,
                         generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(p1["loss"], p2["loss"], rtol=1e-9)
    w1, w2 = profile_width(p1, rise=0.1)[0], profile_width(p2, rise=0.1)[0]
    assert np.isfinite(w1) and w1 == pytest.approx(w2, rel=1e-9)
    # the plain-parameter curvature along the first layer is not invariant: 16x apart
    w_in = m[0].weight.detach().clone().requires_grad_(True)
    def loss_of(w, mm):
        h = torch.relu(X @ w.T + mm[0].bias)
        return nn.functional.cross_entropy(h @ mm[2].weight.T + mm[2].bias, y)
    h1 = torch.autograd.functional.hessian(lambda w: loss_of(w, m), w_in).reshape(35, 35)
    h2 = torch.autograd.functional.hessian(lambda w: loss_of(w, m2), m2[0].weight.detach().clone()).reshape(35, 35)
    assert torch.trace(h1) / torch.trace(h2) == pytest.approx(16.0, rel=1e-6)


def test_a_units_caveat_travels_to_its_comparison_row():
    """A censored width (the group's note) must reach the dropout - GD row a claim reads."""
    from varprinciple.stats.comparisons import Unit, compare_units
    rng = np.random.default_rng(0)
    why = "2 of 6 profile sides never rose by 0.1 within the profile radius: the width is a lower bound"
    a = Unit("dropout", {"method": "dropout"}, None, None, {f"s{i}": float(v) for i, v in enumerate(rng.normal(0, 1, 6))},
             note=why)
    b = Unit("gd", {"method": "gd"}, None, None, {f"s{i}": float(v) for i, v in enumerate(rng.normal(0, 1, 6))})
    row = compare_units(a, b, "log_filter_width", conf=0.95, alpha=0.05, margin=None, step=None)
    assert row["note"] is not None and f"dropout: {why}" in row["note"]
    plain = compare_units(Unit("x", {}, None, None, a.values), b, "log_filter_width", conf=0.95, alpha=0.05,
                          margin=None, step=None)
    assert plain["note"] is None or why not in plain["note"]


def test_an_even_profile_grid_is_refused_at_config_load():
    from varprinciple.collect.config import validate_config
    from varprinciple.errors import ConfigError
    with pytest.raises(ConfigError, match=r"\[trajectory\] profile_points: must be odd"):
        validate_config({"trajectory": {"profile_points": 20}})
