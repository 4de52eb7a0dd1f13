"""Tr(H), Tr(HC) and rho against dense computations (float64)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple.collect._model import ProbedModel  # noqa: E402
from varprinciple.collect.curvature import HessianOperator, dense_hessian, top_eigenpairs  # noqa: E402
from varprinciple.collect.flatness import (  # noqa: E402
    NoiseAlignment, TraceEstimate, flatness_frame, hutchinson_trace, noise_alignment)
from varprinciple.collect.losses import Loss  # noqa: E402
from varprinciple.collect.noise import isotropic_noise, per_sample_projections, sgd_noise  # noqa: E402
from varprinciple.errors import ConfigError  # noqa: E402
from varprinciple.schema import FLATNESS, normalize_table  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]

F64 = torch.float64


def _setup(seed=0, n=30, loss="cross_entropy"):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 3))
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=F64)
    y = torch.randint(0, 3, (n,), generator=g) if loss == "cross_entropy" else torch.randn(n, 3, generator=g,
                                                                                          dtype=F64)
    pm = ProbedModel(model, Loss(loss), X, y, dtype=F64)
    return model, X, y, pm, HessianOperator(pm), dense_hessian(model, loss, X, y)


@pytest.mark.parametrize("deflate", [0, 5])
def test_hutchinson_trace_within_its_se_of_the_dense_trace(deflate):
    _, _, _, pm, op, H = _setup()
    tr = float(np.trace(H))
    hits = 0
    for rep in range(12):
        kw = {}
        if deflate:
            e = top_eigenpairs(op, k=deflate, generator=torch.Generator().manual_seed(rep))
            kw = dict(eigenvalues=e.eigenvalues, eigenvectors=e.eigenvectors)
        te = hutchinson_trace(op, n_probes=30, generator=torch.Generator().manual_seed(100 + rep), **kw)
        assert te.se > 0 and te.n_probes == 30 and te.n_hvp == 30
        hits += abs(te.estimate - tr) < 2 * te.se
    # ~95% coverage of +-2 SE; 12 reps: P(hits < 9) is about 0.2% under correct calibration
    assert hits >= 9


def test_deflation_reduces_the_se_and_full_deflation_is_exact():
    _, _, _, pm, op, H = _setup(1)
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    plain = hutchinson_trace(op, n_probes=40, generator=g())
    e = top_eigenpairs(op, k=8, generator=g())
    defl = hutchinson_trace(op, n_probes=40, generator=g(), eigenvalues=e.eigenvalues, eigenvectors=e.eigenvectors)
    assert defl.se < plain.se
    assert defl.exact_part == pytest.approx(e.eigenvalues.sum())
    D = op.n_params
    w, U = np.linalg.eigh(H)
    full = hutchinson_trace(op, n_probes=4, generator=g(), eigenvalues=w, eigenvectors=U)
    assert full.estimate == pytest.approx(np.trace(H), rel=1e-12) and full.se == 0 and full.n_hvp == 0
    assert isinstance(full, TraceEstimate) and list(full.to_frame().columns)[:2] == ["estimate", "se"]
    with pytest.raises(ConfigError, match="`hutchinson_probes` must be >= 2; got 1"):
        hutchinson_trace(op, n_probes=1, generator=g())
    assert D == 59


def test_noise_alignment_equals_dense_formula_on_the_same_draws():
    _, _, _, pm, op, H = _setup(2)
    te = hutchinson_trace(op, n_probes=8, generator=torch.Generator().manual_seed(0))
    Xi = torch.randn(25, op.n_params, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.1 + 0.05
    na = noise_alignment(op, Xi, source="x", trace_h=te)
    x = Xi.numpy()
    K = len(x)
    xbar = x.mean(0)
    tr_hc = (np.einsum("kd,de,ke->", x, H, x) - K * xbar @ H @ xbar) / (K - 1)  # DESIGN.md, ddof = 1
    C = np.cov(x, rowvar=False)
    assert na.tr_hc == pytest.approx(tr_hc, rel=1e-10)
    assert na.tr_hc == pytest.approx(np.trace(H @ C), rel=1e-10)
    assert na.tr_c == pytest.approx(np.trace(C), rel=1e-10)
    D = op.n_params
    assert na.rho == pytest.approx(D * np.trace(H @ C) / (te.estimate * np.trace(C)), rel=1e-10)
    # jackknife SEs against a brute-force delete-one loop
    loo = []
    for i in range(K):
        xi = np.delete(x, i, axis=0)
        Ci = np.cov(xi, rowvar=False)
        loo.append((np.trace(H @ Ci), np.trace(Ci)))
    loo = np.array(loo)
    jk = lambda v: np.sqrt((K - 1) / K * np.sum((v - v.mean()) ** 2))  # noqa: E731
    assert na.tr_hc_se == pytest.approx(jk(loo[:, 0]), rel=1e-8)
    assert na.tr_c_se == pytest.approx(jk(loo[:, 1]), rel=1e-8)
    ratio = loo[:, 0] / loo[:, 1]
    rel = np.sqrt((jk(ratio) / (na.tr_hc / na.tr_c)) ** 2 + (te.se / te.estimate) ** 2)
    assert na.rho_se == pytest.approx(na.rho * rel, rel=1e-8)
    assert isinstance(na, NoiseAlignment) and na.n_hvp == K
    with pytest.raises(ConfigError, match="`tr_hc_samples` must be >= 3; got 2"):
        noise_alignment(op, Xi[:2], source="x", trace_h=te)


def test_sgd_rho_matches_the_exact_value_within_its_se():
    _, _, _, pm, op, H = _setup(3, n=24)
    B = 4
    e = top_eigenpairs(op, k=4, generator=torch.Generator().manual_seed(0))
    # exact Tr(H C_B) from per-sample gradients: fac * (1/n) sum_i (g_i - g)^T H (g_i - g)
    Dm = torch.eye(op.n_params, dtype=F64)
    G = per_sample_projections(pm, Dm, gradient=op.gradient, method="loop").P.numpy()  # rows g_i
    Z = G - G.mean(0)
    fac = (pm.n - B) / (B * (pm.n - 1))
    C = fac * Z.T @ Z / pm.n
    rho_exact = op.n_params * np.trace(H @ C) / (np.trace(H) * np.trace(C))
    te = TraceEstimate(float(np.trace(H)), 0.0, float(np.trace(H)), 0, 0)  # exact Tr(H)
    hits = 0
    for rep in range(10):
        nd = sgd_noise(pm, torch.from_numpy(e.eigenvectors), gradient=op.gradient, batch_size=B, n_samples=150,
                       generator=torch.Generator().manual_seed(rep), n_full=150)
        na = noise_alignment(op, nd.full, source="sgd", trace_h=te)
        assert nd.trace == pytest.approx(np.trace(C), rel=1e-10)
        hits += abs(na.rho - rho_exact) < 2.5 * na.rho_se
    assert hits >= 8
    assert rho_exact > 1  # SGD noise is curvature-aligned here


def test_isotropic_rho_is_one_within_se():
    _, _, _, pm, op, H = _setup(4)
    te = TraceEstimate(float(np.trace(H)), 0.0, float(np.trace(H)), 0, 0)
    V = torch.eye(op.n_params, dtype=F64)[:, :2]
    nd = isotropic_noise(op.n_params, V, trace=3.0, n_samples=400, n_full=400,
                         generator=torch.Generator().manual_seed(0))
    na = noise_alignment(op, nd.full, source="isotropic", trace_h=te)
    assert abs(na.rho - 1) < 3 * na.rho_se


def test_flatness_frame_validates_against_schema():
    te = TraceEstimate(5.0, 0.1, 4.0, 10, 10)
    na = NoiseAlignment("sgd", 1.0, 0.1, 2.0, 0.2, 3.0, 0.3, 10, 10)
    df = flatness_frame(step=3, lambda_max=2.0, trace_h=te, alignments=[na], exact_traces={"sgd": 2.1})
    assert df["quantity"].tolist() == ["lambda_max", "hessian_trace", "tr_hc", "tr_c", "rho", "tr_c_exact"]
    assert df["source"].isna().tolist()[:3] == [True, True, False] and df["source"].iloc[2] == "sgd"
    import pyarrow as pa
    table, problems = normalize_table(pa.Table.from_pandas(df, preserve_index=False), FLATNESS)
    assert problems == [] and table is not None
