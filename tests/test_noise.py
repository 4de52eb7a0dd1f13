"""Noise sources against closed forms, exact enumeration and loop oracles (float64)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple.collect._model import ProbedModel  # noqa: E402
from varprinciple.collect.curvature import HessianOperator  # noqa: E402
from varprinciple.collect.losses import Loss  # noqa: E402
from varprinciple.collect.noise import (  # noqa: E402
    DropoutSites, dropout_cut_tangents, dropout_gradients, dropout_noise, dropout_projections,
    isotropic_noise, per_sample_projections, project, random_directions, sgd_noise, sgd_subsets,
    sgd_variance_factor)
from varprinciple.errors import ConfigError  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]

F64 = torch.float64


def _pm(model, loss, X, y):
    return ProbedModel(model, Loss(loss), X, y, dtype=F64)


def _mlp_data(n=24, seed=0, ce=True):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    X = torch.randn(n, 3, generator=g, dtype=F64)
    y = torch.randint(0, 3, (n,), generator=g) if ce else torch.randn(n, 3, generator=g, dtype=F64)
    return model, X, y


# ============================================================================ SGD


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_per_sample_projection_paths_agree(loss):
    model, X, y = _mlp_data(ce=loss == "cross_entropy")
    pm = _pm(model, loss, X, y)
    g = HessianOperator(pm).gradient
    V = random_directions(pm.n_params, 4, generator=torch.Generator().manual_seed(1))
    loop = per_sample_projections(pm, V, gradient=g, method="loop")
    vm = per_sample_projections(pm, V, gradient=g, method="vmap")
    chunked = per_sample_projections(pm, V, gradient=g, method="vmap", chunk=7)
    jv = per_sample_projections(pm, V, gradient=g, method="jvp", chunk=5)
    for other in (vm, chunked, jv):
        np.testing.assert_allclose(other.P.numpy(), loop.P.numpy(), rtol=1e-12, atol=1e-15)
    assert vm.centred_sq_sum == pytest.approx(loop.centred_sq_sum, rel=1e-12)
    assert chunked.centred_sq_sum == pytest.approx(loop.centred_sq_sum, rel=1e-12)
    assert jv.centred_sq_sum is None and jv.method == "jvp"
    # the per-sample gradients average to the full-batch gradient
    np.testing.assert_allclose(loop.P.mean(0).numpy(), (g @ V).numpy(), atol=1e-14)
    # a tiny budget switches auto to the JVP path
    tiny = per_sample_projections(pm, V, gradient=g, method="auto", memory_budget_mb=1e-4)
    assert tiny.method == "jvp"
    with pytest.raises(ConfigError, match="`method` must be one of 'auto', 'vmap', 'jvp', 'loop'; got 'x'"):
        per_sample_projections(pm, V, gradient=g, method="x")


def test_sgd_subsets_are_uniform_without_replacement():
    n, B, K = 12, 4, 6000
    S = sgd_subsets(n, B, K, generator=torch.Generator().manual_seed(0))
    assert S.shape == (K, B)
    assert all(len(set(r)) == B for r in S.tolist())
    counts = np.bincount(S.numpy().ravel(), minlength=n)
    # each index is included with probability B/n; binomial SE per index
    p = B / n
    se = np.sqrt(K * p * (1 - p))
    assert np.all(np.abs(counts - K * p) < 4.5 * se)
    # pair inclusion probability B(B-1)/(n(n-1)) (uniform subsets, not a sliding window)
    both = np.mean([(0 in r) and (1 in r) for r in S.tolist()])
    q = B * (B - 1) / (n * (n - 1))
    assert abs(both - q) < 4.5 * np.sqrt(q * (1 - q) / K)


def _linear_problem(n=40, d=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64) * torch.tensor([2.0, 1.0, 0.7, 0.3], dtype=F64)
    y = X @ torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=F64) + 0.5 * torch.randn(n, generator=g, dtype=F64)
    torch.manual_seed(seed)
    model = nn.Linear(d, 1, bias=False)
    return model, X, y


def _linear_closed_form(model, X, y, B, V):
    """Closed form for f(x) = w^T x, MSE (1/2n) sum (w^T x_i - y_i)^2.

    g_i = r_i x_i with r_i = w^T x_i - y_i, g = mean_i g_i, and for a unit v
    v^T C_B v = (n - B) / (B (n - 1)) * (1/n) sum_i (r_i x_i^T v - g^T v)^2.
    H = X^T X / n.
    """
    Xn, yn = X.numpy(), y.numpy()
    w = model.weight.detach().double().numpy().ravel()
    r = Xn @ w - yn
    G = r[:, None] * Xn
    P = G @ V
    n = len(yn)
    return (n - B) / (B * (n - 1)) * np.mean((P - P.mean(0)) ** 2, axis=0), Xn.T @ Xn / n, G


def test_sgd_linear_least_squares_closed_form_and_sampling():
    model, X, y = _linear_problem()
    pm = _pm(model, "mse", X, y)
    op = HessianOperator(pm)
    B, K = 5, 6000
    H = pm.X.T @ pm.X / pm.n
    w, U = torch.linalg.eigh(H)
    V = torch.cat([U.flip(1), random_directions(4, 2, generator=torch.Generator().manual_seed(2))], dim=1)
    nd = sgd_noise(pm, V, gradient=op.gradient, batch_size=B, n_samples=K,
                   generator=torch.Generator().manual_seed(7), n_full=5)
    closed, Hn, G = _linear_closed_form(model, X, y, B, V.numpy())
    np.testing.assert_allclose(nd.exact_variance, closed, rtol=1e-10)
    # exact trace: fac * (1/n) sum ||g_i - g||^2
    fac = sgd_variance_factor(pm.n, B)
    assert nd.trace == pytest.approx(fac * np.mean(np.sum((G - G.mean(0)) ** 2, axis=1)), rel=1e-10)
    assert nd.trace_exact
    # sampled variance within Monte Carlo error (SE of s^2 from the sample 4th moment)
    x = nd.values
    s2 = x.var(axis=0, ddof=1)
    se = np.sqrt(np.var((x - x.mean(0)) ** 2, axis=0, ddof=1) / K)
    assert np.all(np.abs(s2 - closed) < 5 * se), (s2, closed, se)
    assert np.all(np.abs(x.mean(0)) < 5 * np.sqrt(closed / K))
    # full vectors of the first draws project onto the same values
    np.testing.assert_allclose(project(nd.full, V).numpy(), x[:5], atol=1e-13)
    idx = nd.extra["subsets"][:5]
    ref = G[idx.numpy()].mean(1) - G.mean(0)
    np.testing.assert_allclose(nd.full.numpy(), ref, atol=1e-13)


def test_sgd_noise_jvp_path_gives_same_draws():
    model, X, y = _mlp_data()
    pm = _pm(model, "cross_entropy", X, y)
    g = HessianOperator(pm).gradient
    V = random_directions(pm.n_params, 3, generator=torch.Generator().manual_seed(0))
    a = sgd_noise(pm, V, gradient=g, batch_size=4, n_samples=50, generator=torch.Generator().manual_seed(1),
                  n_full=4, method="vmap")
    b = sgd_noise(pm, V, gradient=g, batch_size=4, n_samples=50, generator=torch.Generator().manual_seed(1),
                  n_full=4, method="jvp")
    np.testing.assert_allclose(a.values, b.values, atol=1e-14)
    np.testing.assert_allclose(a.exact_variance, b.exact_variance, rtol=1e-12)
    # the JVP path's trace is exact too (one per-sample backward at a time), not a sample trace
    assert a.trace_exact and b.trace_exact
    assert b.trace == pytest.approx(a.trace, rel=1e-12)
    c = sgd_noise(pm, V, gradient=g, batch_size=4, n_samples=50, generator=torch.Generator().manual_seed(1),
                  n_full=0, method="jvp")
    assert c.trace_exact and c.trace == pytest.approx(a.trace, rel=1e-12)


def test_probe_jvp_path_without_full_draws_has_a_finite_isotropic_control():
    # review defect: memory_budget_mb=1 forces the JVP path; with tr_hc_samples=0 the SGD
    # trace used to be the sample trace of zero full draws (NaN) and the isotropic control failed
    from varprinciple.collect.probe import ProbeSettings, probe
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 64, generator=g)
    y = torch.randint(0, 10, (60,), generator=g)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    from dataclasses import replace

    from _budget import smallest_budget_mb
    traces = {}
    s = ProbeSettings(top_k=2, n_samples=20, sources=("sgd", "isotropic"), batch_size=8, n_random=1,
                      hutchinson_probes=4, tr_hc_samples=0)
    tight = smallest_budget_mb(m, "cross_entropy", X, y, s)  # room for fewer than 8 per-sample gradients
    for budget in (tight, 2048):
        r = probe(m, "cross_entropy", X, y, settings=replace(s, memory_budget_mb=budget), step=0,
                  generator=torch.Generator().manual_seed(1))
        assert r.info["noise_extra"]["sgd"]["method"] == ("jvp" if budget == tight else "vmap")
        traces[budget] = r.info["traces"]
    assert np.isfinite(traces[tight]["sgd"]) and traces[tight]["isotropic"] == traces[tight]["sgd"]
    assert traces[tight]["sgd"] == pytest.approx(traces[2048]["sgd"], rel=1e-10)


def test_sgd_batch_size_must_be_below_n():
    model, X, y = _mlp_data(n=10)
    pm = _pm(model, "cross_entropy", X, y)
    V = random_directions(pm.n_params, 1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match=r"`batch_size` must be in \[1, n\) with n=10 training samples; got 10"):
        sgd_noise(pm, V, gradient=torch.zeros(pm.n_params, dtype=F64), batch_size=10, n_samples=5,
                  generator=torch.Generator())


# ============================================================================ dropout


def _last_hidden_dropout_net(h=4, d=2, out=2, p_drop=0.3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Dropout(p_drop), nn.Linear(h, out))


def _all_masks(n, h, p_drop):
    """Every mask of n samples x h units with its probability (keep prob q = 1 - p_drop)."""
    q = 1 - p_drop
    for bits in itertools.product([0.0, 1.0], repeat=n * h):
        m = torch.tensor(bits, dtype=F64).reshape(n, h)
        k = int(m.sum())
        yield m / q, q ** k * p_drop ** (n * h - k)


def test_dropout_expected_loss_is_rs_plus_r1_exactly_and_by_sampling():
    p_drop, n, h = 0.3, 2, 4
    model = _last_hidden_dropout_net(h=h, p_drop=p_drop)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 2, generator=g, dtype=F64)
    y = torch.randn(n, 2, generator=g, dtype=F64)
    pm = _pm(model, "mse", X, y)
    sites = DropoutSites(pm)
    R_S = float(pm.batch_loss(pm.params, pm.X, pm.y))
    # R_1 = (1 - p)/(2 n p) sum_i sum_j (W^L_j f_j(x_i))^2, p = KEEP probability, W^L_j the j-th column
    q = 1 - p_drop
    with torch.no_grad():
        f = torch.tanh(X @ model[0].weight.double().T + model[0].bias.double())
    W = model[3].weight.detach().double()
    R_1 = (1 - q) / (2 * n * q) * float(((W ** 2).sum(0)[None, :] * f ** 2).sum())
    exact = sum(w * float(sites.loss(pm.params, (m,))) for m, w in _all_masks(n, h, p_drop))
    assert exact == pytest.approx(R_S + R_1, rel=1e-12)
    K = 20000
    (M,) = sites.draw_masks(K, generator=torch.Generator().manual_seed(1))
    vals = torch.func.vmap(sites.loss, in_dims=(None, 0))(pm.params, (M,)).numpy()
    assert abs(vals.mean() - (R_S + R_1)) < 4 * vals.std(ddof=1) / np.sqrt(K)
    # masks: iid Bernoulli(keep) scaled by 1/keep, as nn.Dropout in train mode
    assert set(np.unique(M.numpy()).round(12)) == {0.0, round(1 / q, 12)}
    kept = (M > 0).double().mean().item()
    assert abs(kept - q) < 4 * np.sqrt(q * (1 - q) / M.numel())
    sites.remove()


def test_dropout_noise_covariance_matches_enumeration():
    p_drop, n, h = 0.4, 2, 3
    model = _last_hidden_dropout_net(h=h, p_drop=p_drop, seed=2)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(n, 2, generator=g, dtype=F64)
    y = torch.randn(n, 2, generator=g, dtype=F64)
    pm = _pm(model, "mse", X, y)
    sites = DropoutSites(pm)
    gS = HessianOperator(pm).gradient
    V = random_directions(pm.n_params, 3, generator=torch.Generator().manual_seed(4))
    masks, probs = zip(*_all_masks(n, h, p_drop))
    Mall = torch.stack(masks)
    w = np.array(probs)
    Xi = (dropout_gradients(sites, (Mall,), method="loop") - gS) @ V  # every mask, projected
    Xi = Xi.numpy()
    mu = w @ Xi
    C = (Xi - mu).T @ (w[:, None] * (Xi - mu))
    K = 8000
    nd = dropout_noise(sites, V, gradient=gS, n_samples=K, generator=torch.Generator().manual_seed(5), n_full=10,
                       method="fast")  # the cut-site shortcut after 32 exact draws
    assert nd.extra["fast_path"] and not sites.fast_path_pays(3)  # auto would use exact draws here
    x = nd.values
    Cs = np.cov(x, rowvar=False)
    # Monte Carlo SE of each covariance entry from the exact law: Var((a - mu_a)(b - mu_b)) / K
    Z = Xi - mu
    prod = Z[:, :, None] * Z[:, None, :]
    se = np.sqrt((w[:, None, None] * (prod - C) ** 2).sum(0) / K)
    assert np.all(np.abs(Cs - C) < 5 * se + 1e-15), (Cs, C, se)
    assert np.all(np.abs(x.mean(0) - mu) < 5 * np.sqrt(np.diag(C) / K))  # mean grad R_1 != 0
    sites.remove()


def _check_fast_equals_exact(model, X, y, loss, **site_kw):
    pm = _pm(model, loss, X, y)
    sites = DropoutSites(pm, **site_kw)
    V = random_directions(pm.n_params, 4, generator=torch.Generator().manual_seed(0))
    masks = sites.draw_masks(6, generator=torch.Generator().manual_seed(1))
    loop = dropout_gradients(sites, masks, method="loop")
    vm = dropout_gradients(sites, masks, method="vmap")
    np.testing.assert_allclose(vm.numpy(), loop.numpy(), atol=1e-14)
    h0, T = dropout_cut_tangents(sites, V)
    fast = dropout_projections(sites, masks, V, h0=h0, T=T)
    np.testing.assert_allclose(fast.numpy(), (loop @ V).numpy(), atol=1e-13)
    sites.remove()
    return sites


def test_batched_dropout_paths_equal_loop_with_fixed_masks():
    model, X, y = _mlp_data()
    two = nn.Sequential(model[0], model[1], nn.Dropout(0.2), model[2], model[3], nn.Dropout(0.5), model[4])
    s = _check_fast_equals_exact(two, X, y, "cross_entropy")
    assert s.drop_probs == [0.2, 0.5] and s.cut == 0
    # no nn.Dropout: drop_prob at the input of the last Linear (the last hidden layer)
    s = _check_fast_equals_exact(model, X, y, "cross_entropy", drop_prob=0.25)
    assert [x[0] for x in s.sites] == ["4"] and s.sites[0][3] == "input"
    # named layers (outputs of the first Tanh and of the ReLU)
    s = _check_fast_equals_exact(model, X, y, "cross_entropy", drop_prob=0.1, layers=("1", "3"))
    assert s.drop_probs == [0.1, 0.1]


class _Scale(nn.Module):
    """A model with parameters but no nn.Linear."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.w


class _Unused(nn.Module):
    """Holds an nn.Dropout that its forward never calls."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.extra = nn.Dropout(0.2)

    def forward(self, x):
        return self.lin(x)


class _Skip(nn.Module):
    """Dropout on a branch plus a skip connection that bypasses the dropout site."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 5)
        self.drop = nn.Dropout(0.3)
        self.b = nn.Linear(5, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.out(torch.tanh(self.b(self.drop(h))) + h)


def test_fast_dropout_projections_are_exact_with_skip_connections():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    X = torch.randn(15, 3, generator=g, dtype=F64)
    y = torch.randn(15, 2, generator=g, dtype=F64)
    _check_fast_equals_exact(_Skip(), X, y, "mse")


def test_dropout_noise_methods_agree_and_trace():
    model, X, y = _mlp_data()
    net = nn.Sequential(*model[:4], nn.Dropout(0.3), model[4])
    pm = _pm(net, "cross_entropy", X, y)
    sites = DropoutSites(pm)
    gS = HessianOperator(pm).gradient
    V = random_directions(pm.n_params, 3, generator=torch.Generator().manual_seed(0))
    kw = dict(gradient=gS, n_samples=40, n_full=8)
    # single chunk: the same masks whatever the method
    a = dropout_noise(sites, V, generator=torch.Generator().manual_seed(1), method="vmap", **kw)
    b = dropout_noise(sites, V, generator=torch.Generator().manual_seed(1), method="loop", **kw)
    np.testing.assert_allclose(a.values, b.values, atol=1e-14)
    np.testing.assert_allclose(project(a.full, V).numpy(), a.values[:8], atol=1e-14)
    xi = a.full
    assert a.trace > 0 and a.extra["n_exact"] == 40
    one_draw = 8 * (3 * pm.n_params + pm.n * (6 * pm.activation_numel() + 2 * sites.unit_numel)) / 2**20
    c = dropout_noise(sites, V, generator=torch.Generator().manual_seed(1), method="fast", trace_samples=8,
                      memory_budget_mb=1.01 * one_draw, **kw)  # chunks of one draw: exact first 8, fast after
    assert c.extra["chunk"] == 1 and "data_chunk" not in c.extra
    assert c.extra["n_exact"] == 8 and c.extra["fast_path"]
    auto = dropout_noise(sites, V, generator=torch.Generator().manual_seed(1), method="auto", **kw)
    assert auto.extra["fast_path"] == sites.fast_path_pays(3)
    assert c.trace == pytest.approx(float(((xi - xi.mean(0)) ** 2).sum() / 7), rel=1e-10)
    with pytest.raises(ConfigError, match="`method` must be one of 'auto', 'fast', 'vmap', 'loop'"):
        dropout_noise(sites, V, generator=torch.Generator(), method="quick", **kw)
    with pytest.raises(ConfigError, match="`method` must be 'vmap' or 'loop'"):
        dropout_gradients(sites, sites.draw_masks(1, generator=torch.Generator()), method="x")
    sites.remove()


def test_dropout_site_errors():
    model, X, y = _mlp_data()
    pm = _pm(model, "cross_entropy", X, y)
    with pytest.raises(ConfigError, match="the model applies no dropout in train mode .*; set `drop_prob`"):
        DropoutSites(pm)
    with pytest.raises(ConfigError, match=r"^`dropout_layers`: give at least one module name"):
        DropoutSites(pm, drop_prob=0.1, layers=())
    with pytest.raises(ConfigError, match="`dropout_layers` needs `drop_prob`"):
        DropoutSites(pm, layers=("1",))
    with pytest.raises(ConfigError, match=r"`dropout_layers` names unknown module 'fc9'; modules: '0'"):
        DropoutSites(pm, drop_prob=0.1, layers=("fc9",))
    with pytest.raises(ConfigError, match=r"drop probability at '4' must be in \(0, 1\); got 1.0"):
        DropoutSites(pm, drop_prob=1.0)
    d2 = _pm(nn.Sequential(nn.Linear(3, 4), nn.AlphaDropout(0.2), nn.Linear(4, 3)), "cross_entropy", X, y)
    with pytest.raises(ConfigError, match=r"F\.alpha_dropout in '1' \(AlphaDropout\) is channel or alpha dropout, "
                                          r"which the probe cannot draw"):
        DropoutSites(d2)
    nolin = _pm(_Scale(), "mse", X, torch.zeros(24, 3, dtype=F64))
    with pytest.raises(ConfigError, match="the model applies no dropout and has no nn.Linear"):
        DropoutSites(nolin, drop_prob=0.2)
    unused = _Unused()
    with pytest.raises(ConfigError, match="dropout site 'extra' is not used by the model's forward"):
        DropoutSites(_pm(unused, "cross_entropy", X, y), drop_prob=0.2, layers=("extra",))
    # an nn.Dropout the forward never calls applies no dropout: not a site
    with pytest.raises(ConfigError, match="the model applies no dropout in train mode"):
        DropoutSites(_pm(unused, "cross_entropy", X, y))


# ============================================================================ isotropic


def test_isotropic_control_variance_is_trace_over_d():
    D, K, tr = 40, 5000, 8.0
    V = torch.cat([torch.eye(D, dtype=F64)[:, :2],
                   random_directions(D, 3, generator=torch.Generator().manual_seed(0))], dim=1)
    nd = isotropic_noise(D, V, trace=tr, n_samples=K, generator=torch.Generator().manual_seed(1), n_full=16,
                         memory_budget_mb=0.2)  # several chunks
    np.testing.assert_allclose(nd.exact_variance, tr / D, rtol=1e-12)
    s2 = nd.values.var(axis=0, ddof=1)
    assert np.all(np.abs(s2 - tr / D) < 5 * (tr / D) * np.sqrt(2 / (K - 1)))
    assert nd.full.shape == (16, D)
    np.testing.assert_allclose(project(nd.full, V).numpy(), nd.values[:16], atol=1e-14)
    # the trace of the full draws is tr in expectation
    assert abs(float((nd.full ** 2).sum(1).mean()) - tr) < 5 * tr * np.sqrt(2 / D / 16)
    with pytest.raises(ConfigError, match=r"needs a positive finite trace of C \(sgd\); got 0.0"):
        isotropic_noise(D, V, trace=0.0, n_samples=3, generator=torch.Generator())


def test_random_directions_are_unit_and_seeded():
    a = random_directions(30, 4, generator=torch.Generator().manual_seed(3))
    b = random_directions(30, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    np.testing.assert_allclose(a.norm(dim=0).numpy(), 1.0, rtol=1e-14)


def test_fast_path_heuristic_counts_parameters_below_the_first_site():
    torch.manual_seed(0)
    last = nn.Sequential(nn.Linear(10, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(40, 3))
    both = nn.Sequential(nn.Linear(10, 40), nn.ReLU(), nn.Dropout(0.2), nn.Linear(40, 40), nn.ReLU(),
                         nn.Dropout(0.2), nn.Linear(40, 3))
    plain = nn.Sequential(nn.Linear(10, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 3))
    g = torch.Generator().manual_seed(0)
    X = torch.randn(20, 10, generator=g, dtype=F64)
    y = torch.randint(0, 3, (20,), generator=g)
    s1 = DropoutSites(_pm(last, "cross_entropy", X, y))
    assert s1.lower_numel == 440 + 1640 and s1.fast_path_pays(30)
    s2 = DropoutSites(_pm(both, "cross_entropy", X, y))
    assert s2.lower_numel == 440 and not s2.fast_path_pays(30)
    s3 = DropoutSites(_pm(plain, "cross_entropy", X, y), drop_prob=0.1)  # input of the last Linear
    assert s3.lower_numel == 440 + 1640
    s4 = DropoutSites(_pm(plain, "cross_entropy", X, y), drop_prob=0.1, layers=("2",))  # output of a Linear
    assert s4.lower_numel == 440 + 1640
