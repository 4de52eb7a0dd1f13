"""Dropout noise's exact moments from two masks per sample: exact enumeration, K-draw estimate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple.collect._model import ProbedModel  # noqa: E402
from varprinciple.collect.curvature import HessianOperator, dense_hessian  # noqa: E402
from varprinciple.collect.noise.dropout_exact import dropout_pair_moments  # noqa: E402
from varprinciple.collect.flatness import TraceEstimate, pair_alignment  # noqa: E402
from varprinciple.collect.losses import Loss  # noqa: E402
from varprinciple.collect.noise import DropoutSites, dropout_gradients, dropout_noise, random_directions  # noqa: E402
from varprinciple.errors import ConfigError  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]
F64 = torch.float64


def _problem(n, h=3, p_drop=0.4, seed=0, two_sites=False):
    torch.manual_seed(seed)
    if two_sites:
        net = nn.Sequential(nn.Linear(2, h), nn.Tanh(), nn.Dropout(0.3), nn.Linear(h, h), nn.Tanh(),
                            nn.Dropout(p_drop), nn.Linear(h, 2))
    else:
        net = nn.Sequential(nn.Linear(2, h), nn.Tanh(), nn.Dropout(p_drop), nn.Linear(h, 2))
    g = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(n, 2, generator=g, dtype=F64)
    y = torch.randn(n, 2, generator=g, dtype=F64)
    pm = ProbedModel(net, Loss.MSE, X, y, dtype=F64)
    return net, X, y, pm, DropoutSites(pm)


def _sample_masks(sites):
    """Every mask of one sample over all sites, with its probability."""
    units = [int(np.prod(s)) for s in sites.shapes]
    for bits in itertools.product([0.0, 1.0], repeat=sum(units)):
        b = torch.tensor(bits, dtype=F64)
        w, out, o = 1.0, [], 0
        for p, k, s in zip(sites.drop_probs, units, sites.shapes):
            m = b[o:o + k]
            w *= float(np.prod(np.where(m.numpy() > 0, 1 - p, p)))
            out.append((m / (1 - p)).reshape(1, *s))
            o += k
        yield tuple(out), w


def _exact_covariance(pm, sites):
    """C_drop = (1/n^2) sum_i Cov_eta(g_i(eta)) by enumerating every mask of every sample (loop)."""
    leaves = {k: p.detach().clone().requires_grad_(True) for k, p in pm.params.items()}
    C = torch.zeros(pm.n_params, pm.n_params, dtype=F64)
    for i in range(pm.n):
        G, w = [], []
        for masks, wm in _sample_masks(sites):
            with sites.masked(masks):
                li = pm.one_sample_loss(leaves, pm.X[i], pm.y[i])
            gi = torch.autograd.grad(li, list(leaves.values()))
            G.append(torch.cat([t.reshape(-1) for t in gi]))
            w.append(wm)
        G, w = torch.stack(G), torch.tensor(w, dtype=F64)
        mu = w @ G
        C += ((G - mu).T * w) @ (G - mu)
    return C / pm.n ** 2


def test_per_sample_decomposition_equals_full_batch_enumeration():
    # n = 2 samples x 3 units: all 64 full-batch masks vs the per-sample sum of covariances
    _, _, _, pm, sites = _problem(2)
    gS = HessianOperator(pm).gradient
    q = 1 - sites.drop_probs[0]
    Ms, ws = [], []
    for bits in itertools.product([0.0, 1.0], repeat=6):
        m = torch.tensor(bits, dtype=F64).reshape(2, 3)
        k = int(m.sum())
        Ms.append(m / q)
        ws.append(q ** k * (1 - q) ** (6 - k))
    Xi = dropout_gradients(sites, (torch.stack(Ms),), method="loop") - gS
    w = torch.tensor(ws, dtype=F64)
    mu = w @ Xi
    C_full = ((Xi - mu).T * w) @ (Xi - mu)
    np.testing.assert_allclose(_exact_covariance(pm, sites).numpy(), C_full.numpy(), atol=1e-14, rtol=1e-11)
    sites.remove()


@pytest.mark.parametrize("two_sites", [False, True])
def test_pair_estimator_is_unbiased_against_exact_enumeration(two_sites):
    net, X, y, pm, sites = _problem(5, h=2 if two_sites else 3, two_sites=two_sites)
    C = _exact_covariance(pm, sites)
    H = torch.as_tensor(dense_hessian(net, "mse", X, y), dtype=F64)
    V = random_directions(pm.n_params, 3, generator=torch.Generator().manual_seed(2))
    exact_v = torch.einsum("dj,de,ej->j", V, C, V).numpy()
    exact_tr, exact_hc = float(torch.trace(C)), float(torch.trace(H @ C))
    op = HessianOperator(pm)
    te = TraceEstimate(float(torch.trace(H)), 0.0, 0.0, 0, 0)
    R = 300
    gen = torch.Generator().manual_seed(3)
    est = np.array([[*(mom := dropout_pair_moments(sites, V, generator=gen, n_groups=3)).variance, mom.trace,
                     pair_alignment(op, mom, source="dropout", trace_h=te).tr_hc] for _ in range(R)])
    truth = np.array([*exact_v, exact_tr, exact_hc])
    se = est.std(0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(est.mean(0) - truth) < 5 * se), (est.mean(0), truth, se)
    assert np.all(se < 0.2 * np.abs(truth))  # the test has power
    sites.remove()


def test_chunked_equals_unchunked_and_ses():
    _, _, _, pm, sites = _problem(30, seed=4)
    V = random_directions(pm.n_params, 4, generator=torch.Generator().manual_seed(0))
    a = dropout_pair_moments(sites, V, generator=torch.Generator().manual_seed(1), n_groups=6)
    b = dropout_pair_moments(sites, V, generator=torch.Generator().manual_seed(1), n_groups=6, chunk=7)
    c = dropout_pair_moments(sites, V, generator=torch.Generator().manual_seed(1), n_groups=6,
                             memory_budget_mb=1e-3)  # budget-driven chunks of one sample
    assert a.chunk == 30 and b.chunk == 7 and c.chunk == 1
    for o in (b, c):
        np.testing.assert_allclose(o.variance, a.variance, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(o.W.numpy(), a.W.numpy(), rtol=1e-10, atol=1e-14)
        assert o.trace == pytest.approx(a.trace, rel=1e-10)
    assert a.group_trace.sum() == pytest.approx(a.trace, rel=1e-12)
    assert np.all(a.variance_se > 0) and a.trace_se > 0 and a.n_groups == 6
    with pytest.raises(ConfigError, match=r"`n_groups` must be an integer >= 0; got -1"):
        dropout_pair_moments(sites, V, generator=torch.Generator(), n_groups=-1)
    none = dropout_pair_moments(sites, V, generator=torch.Generator(), n_groups=0)
    assert none.W is None
    with pytest.raises(ConfigError, match="must be >= 2 groups"):
        pair_alignment(HessianOperator(pm), none, source="dropout", trace_h=TraceEstimate(1, 0, 1, 0, 0))
    sites.remove()


@pytest.mark.slow
def test_pair_estimator_agrees_with_k_draw_estimate():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 8), nn.Tanh(),
                        nn.Dropout(0.5), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(6)
    X = torch.randn(120, 3, generator=g, dtype=F64)
    y = torch.randint(0, 3, (120,), generator=g)
    pm = ProbedModel(net, Loss.CROSS_ENTROPY, X, y, dtype=F64)
    sites = DropoutSites(pm)
    gS = HessianOperator(pm).gradient
    V = random_directions(pm.n_params, 4, generator=torch.Generator().manual_seed(7))
    K = 3000
    nd = dropout_noise(sites, V, gradient=gS, n_samples=K, generator=torch.Generator().manual_seed(8))
    s2 = nd.values.var(0, ddof=1)
    x = nd.values - nd.values.mean(0)
    se_draws = np.sqrt(((x ** 2 - s2) ** 2).mean(0) / K)  # SE of the sample variance
    mom = dropout_pair_moments(sites, V, generator=torch.Generator().manual_seed(9), n_groups=40)
    diff = np.abs(mom.variance - s2)
    assert np.all(diff < 4 * np.sqrt(se_draws ** 2 + mom.variance_se ** 2)), (mom.variance, s2)
    # and the traces: K-draw centred sample trace (exact draws) vs the pair estimate
    assert abs(nd.trace - mom.trace) < 4 * np.sqrt(mom.trace_se ** 2 + (nd.trace * np.sqrt(2 / 31)) ** 2)
    sites.remove()
