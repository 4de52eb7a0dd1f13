"""Data-chunked probes equal the unchunked path (float64) and keep the dropout law."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple.collect._model import ProbedModel  # noqa: E402
from varprinciple.collect.curvature import HessianOperator, hessian_chunk, top_eigenpairs  # noqa: E402
from varprinciple.collect.losses import Loss  # noqa: E402
from varprinciple.collect.noise import DropoutSites, dropout_data_chunk, dropout_gradients, dropout_noise, random_directions  # noqa: E402
from _budget import smallest_budget_mb  # noqa: E402
from varprinciple.collect.probe import ProbeSettings, probe  # noqa: E402
from varprinciple.errors import ConfigError  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]
F64 = torch.float64


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6), nn.ReLU(), nn.Dropout(0.2), nn.Linear(6, 3))


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    return X, (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()


def test_chunked_hessian_operator_equals_graph_reuse():
    X, y = _data(37)
    pm = ProbedModel(_net(), Loss.CROSS_ENTROPY, X, y, dtype=F64)
    a, b = HessianOperator(pm), HessianOperator(pm, chunk=5)
    assert a.chunk is None and b.chunk == 5
    np.testing.assert_allclose(b.gradient.numpy(), a.gradient.numpy(), rtol=1e-10, atol=1e-14)
    assert b.loss_value == pytest.approx(a.loss_value, rel=1e-12)
    V = torch.randn(pm.n_params, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    np.testing.assert_allclose(b.matmat(V).numpy(), a.matmat(V).numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(b.matvec(V[:, 0]).numpy(), a.matvec(V[:, 0]).numpy(), rtol=1e-10, atol=1e-13)
    assert b.n_hvp == a.n_hvp == 4
    ea = top_eigenpairs(a, k=3, generator=torch.Generator().manual_seed(1))
    eb = top_eigenpairs(b, k=3, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(eb.eigenvalues, ea.eigenvalues, rtol=1e-10)
    assert hessian_chunk(pm, 2048) is None and hessian_chunk(pm, 1e-3) == 1
    with pytest.raises(ConfigError, match=r"`chunk` must be a positive integer or None; got 0"):
        HessianOperator(pm, chunk=0)


def test_probe_with_a_tiny_budget_equals_the_unchunked_probe():
    X, y = _data(40)
    kw = dict(top_k=4, n_samples=30, batch_size=8, n_random=2, hutchinson_probes=6, tr_hc_samples=5)
    big = probe(_net(), "cross_entropy", X, y, settings=ProbeSettings(**kw), step=0,
                generator=torch.Generator().manual_seed(0))
    tight = smallest_budget_mb(  # the smallest budget the probe accepts: every stage chunked
        _net(), "cross_entropy", X, y, ProbeSettings(**kw))
    small = probe(_net(), "cross_entropy", X, y, settings=ProbeSettings(memory_budget_mb=tight, **kw), step=0,
                  generator=torch.Generator().manual_seed(0))
    assert big.info["plan"]["hessian_chunk"] is None and small.info["plan"]["hessian_chunk"] < 40
    assert small.info["plan"]["dropout_data_chunk"] < 40 and small.info["plan"]["dropout_pair_chunk"] < 40
    np.testing.assert_allclose(small.eigen["eigenvalue"], big.eigen["eigenvalue"], rtol=1e-10)
    for src in ("sgd", "isotropic"):  # the dropout draws' masks are assigned in another order
        a = big.noise[big.noise.source == src]["value"].to_numpy()
        b = small.noise[small.noise.source == src]["value"].to_numpy()
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(small.exact_variance["variance"], big.exact_variance["variance"], rtol=1e-10)
    np.testing.assert_allclose(small.flatness["estimate"], big.flatness["estimate"], rtol=1e-10)
    assert big.info["dropout_sites"] == [{"name": "4", "kind": "module", "call": "F.dropout", "drop_prob": 0.2,
                                          "where": "call"}]


def test_data_chunked_dropout_draws_keep_the_exact_law():
    # 2 samples x 3 units, data chunks of one sample: covariance of the draws vs all 64 masks
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Dropout(0.4), nn.Linear(3, 2))
    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(2, 2, generator=g, dtype=F64), torch.randn(2, 2, generator=g, dtype=F64)
    pm = ProbedModel(net, Loss.MSE, X, y, dtype=F64)
    sites = DropoutSites(pm)
    gS = HessianOperator(pm).gradient
    V = random_directions(pm.n_params, 3, generator=torch.Generator().manual_seed(4))
    Ms, ws = [], []
    for bits in itertools.product([0.0, 1.0], repeat=6):
        m = torch.tensor(bits, dtype=F64).reshape(2, 3)
        Ms.append(m / 0.6)
        ws.append(0.6 ** int(m.sum()) * 0.4 ** (6 - int(m.sum())))
    Xi = ((dropout_gradients(sites, (torch.stack(Ms),), method="loop") - gS) @ V).numpy()
    w = np.array(ws)
    mu = w @ Xi
    C = (Xi - mu).T @ (w[:, None] * (Xi - mu))
    budget = 8 * (3 * pm.n_params + 1.5 * (6 * pm.activation_numel() + 2 * sites.unit_numel)) / 2**20
    assert dropout_data_chunk(sites, budget) == 1
    K = 6000
    nd = dropout_noise(sites, V, gradient=gS, n_samples=K, generator=torch.Generator().manual_seed(5),
                       memory_budget_mb=budget, n_full=4)
    assert nd.extra["data_chunk"] == 1 and nd.full.shape == (4, pm.n_params)
    np.testing.assert_allclose((nd.full @ V).numpy(), nd.values[:4], atol=1e-13)
    Z = Xi - mu
    prod = Z[:, :, None] * Z[:, None, :]
    se = np.sqrt((w[:, None, None] * (prod - C) ** 2).sum(0) / K)
    assert np.all(np.abs(np.cov(nd.values, rowvar=False) - C) < 5 * se + 1e-15)
    assert np.all(np.abs(nd.values.mean(0) - mu) < 5 * np.sqrt(np.diag(C) / K))
    sites.remove()
