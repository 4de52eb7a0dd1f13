"""The probe() entry point: schema-valid tables, oracles end to end, settings validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple import io  # noqa: E402
from varprinciple.collect.curvature import dense_hessian  # noqa: E402
from varprinciple.collect.probe import NoiseSource, ProbeResult, ProbeSettings, probe  # noqa: E402
from varprinciple.errors import ConfigError, InputError  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]
F64 = torch.float64



def _net(seed=0, drop=0.2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 6), nn.ReLU(), nn.Dropout(drop), nn.Linear(6, 3))


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()
    return X, y


def _small(**kw):
    base = dict(top_k=4, n_samples=60, batch_size=8, n_random=3, hutchinson_probes=8, tr_hc_samples=10)
    base.update(kw)
    return ProbeSettings(**base)


def test_probe_tables_are_schema_valid_and_match_dense(tmp_path):
    model = _net()
    X, y = _data()
    res = probe(model, "cross_entropy", X, y, settings=_small(), step=7, generator=torch.Generator().manual_seed(0))
    assert isinstance(res, ProbeResult)
    k, m, K = 4, 3, 60
    H = dense_hessian(model, "cross_entropy", X, y)
    w = np.linalg.eigvalsh(H)[::-1]
    np.testing.assert_allclose(res.eigen["eigenvalue"].to_numpy(), w[:k], rtol=1e-9, atol=1e-12)
    assert res.eigen["residual"].max() < 1e-8
    assert len(res.eigen["vector"].iloc[0]) == H.shape[0]
    n = res.noise
    assert len(n) == 3 * K * (k + m) and set(n["step"]) == {7}
    assert sorted(n["source"].unique()) == ["dropout", "isotropic", "sgd"]
    one = n[(n.source == "sgd") & (n["sample"] == 0)]
    assert one["basis"].tolist() == ["hessian"] * k + ["random"] * m
    assert one["direction"].tolist() == [0, 1, 2, 3, 0, 1, 2]
    ev = res.exact_variance
    assert sorted(ev["source"].unique()) == ["dropout", "isotropic", "sgd"] and len(ev) == 3 * (k + m)
    f = res.flatness.set_index(["quantity", res.flatness["source"].fillna("")])["estimate"]
    assert f[("lambda_max", "")] == pytest.approx(w[0], rel=1e-9)
    assert abs(f[("hessian_trace", "")] - np.trace(H)) < 5 * res.flatness.query("quantity == 'hessian_trace'")[
        "se"].iloc[0] + 1e-9
    assert {("rho", s) for s in ("sgd", "dropout", "isotropic")} <= set(f.index)
    assert f[("tr_c_exact", "sgd")] == pytest.approx(res.info["traces"]["sgd"])
    # dropout: exact moments from two masks per sample (estimated, with an SE)
    assert f[("tr_c_exact", "dropout")] == pytest.approx(res.info["traces"]["dropout"])
    assert f[("tr_c", "dropout")] == pytest.approx(res.info["traces"]["dropout"])
    assert res.flatness.query("quantity == 'tr_c_exact' and source == 'dropout'")["se"].iloc[0] > 0
    np.testing.assert_allclose(res.top_vector, np.asarray(res.eigen["vector"].iloc[0], dtype=np.float64),
                               atol=1e-6)
    assert res.n_hvp >= res.info["n_hvp_eigensolver"] + k + 8 + 3 * 10
    assert set(res.timings) >= {"hessian", "sgd", "dropout", "isotropic", "flatness", "total"}
    # io accepts the tables unchanged, and reads them back into noise blocks
    run = io.write_run(tmp_path / "r", {"run_id": "r", "method": "sgd"}, eigen=res.eigen, noise=res.noise,
                       tables=res.tables())
    log = io.read_run(run)
    assert {b.source for b in log.blocks} == {"sgd", "dropout", "isotropic"}
    assert log.optional_table("flatness.parquet") is not None
    assert log.optional_table("exact_variance.parquet") is not None
    s = res.to_frame()
    assert s["lambda_max"].iloc[0] == pytest.approx(w[0], rel=1e-9) and s["step"].iloc[0] == 7


def test_probe_linear_least_squares_against_closed_forms():
    g = torch.Generator().manual_seed(1)
    n, d, B, K = 60, 5, 6, 4000
    X = torch.randn(n, d, generator=g, dtype=F64) * torch.tensor([2.5, 1.5, 1.0, 0.6, 0.3], dtype=F64)
    y = X @ torch.randn(d, generator=g, dtype=F64) + 0.3 * torch.randn(n, generator=g, dtype=F64)
    torch.manual_seed(1)
    model = nn.Linear(d, 1, bias=False)
    s = ProbeSettings(top_k=3, n_samples=K, sources=("sgd",), batch_size=B, n_random=2, hutchinson_probes=4,
                      tr_hc_samples=0)
    res = probe(model, "mse", X, y, settings=s, step=0, generator=torch.Generator().manual_seed(2))
    Xn, yn = X.numpy(), y.numpy()
    lam, U = np.linalg.eigh(Xn.T @ Xn / n)
    lam, U = lam[::-1], U[:, ::-1]
    np.testing.assert_allclose(res.eigen["eigenvalue"].to_numpy(), lam[:3], rtol=1e-10)
    # closed form along each logged eigenvector: g_i = r_i x_i, r_i = w^T x_i - y_i
    w = model.weight.detach().double().numpy().ravel()
    r = Xn @ w - yn
    G = r[:, None] * Xn
    V = np.stack([np.asarray(v, dtype=np.float64) for v in res.eigen["vector"]], axis=1)
    V /= np.linalg.norm(V, axis=0)  # vectors are stored as float32
    Vt = U[:, :3] * np.sign(np.sum(U[:, :3] * V, axis=0))
    P = G @ Vt
    closed = (n - B) / (B * (n - 1)) * np.mean((P - P.mean(0)) ** 2, axis=0)
    ev = res.exact_variance.query("basis == 'hessian'").sort_values("direction")["variance"].to_numpy()
    np.testing.assert_allclose(ev, closed, rtol=1e-10)
    vals = res.noise.query("basis == 'hessian'").pivot(index="sample", columns="direction", values="value").to_numpy()
    s2 = vals.var(axis=0, ddof=1)
    se = np.sqrt(np.var((vals - vals.mean(0)) ** 2, axis=0, ddof=1) / K)
    assert np.all(np.abs(s2 - closed) < 5 * se)


def test_probe_is_reproducible_and_leaves_the_model_alone():
    model = _net(3).float().train()
    before = [p.detach().clone() for p in model.parameters()]
    X, y = _data()
    a = probe(model, "cross_entropy", X, y, settings=_small(), step=1, generator=torch.Generator().manual_seed(5))
    b = probe(model, "cross_entropy", X, y, settings=_small(), step=1, generator=torch.Generator().manual_seed(5))
    pd.testing.assert_frame_equal(a.noise, b.noise)
    pd.testing.assert_frame_equal(a.eigen.drop(columns="vector"), b.eigen.drop(columns="vector"))
    pd.testing.assert_frame_equal(a.flatness, b.flatness)
    assert model.training and all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    assert all(len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0 for m in model.modules())
    # warm start from the previous probe's top vector gives the same eigenvalues
    c = probe(model, "cross_entropy", X, y, settings=_small(), step=2, generator=torch.Generator().manual_seed(6),
              v0=a.top_vector)
    np.testing.assert_allclose(c.eigen["eigenvalue"], a.eigen["eigenvalue"], rtol=1e-9)


def test_probe_options_float32_mse_drop_prob_layers_no_vectors(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    X, _ = _data()
    y = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    s = _small(dtype="float32", drop_prob=0.3, dropout_layers=["1"], isotropic_of="dropout",
               store_vectors_max_params=10, sources=["dropout", "isotropic", "sgd"])
    import logging
    with caplog.at_level(logging.INFO, logger="varprinciple.collect.probe"):
        res = probe(model, "mse", X, y, settings=s, step=0, generator=torch.Generator().manual_seed(0))
    assert "probe step 0" in caplog.text
    assert "vector" not in res.eigen.columns
    assert res.info["noise_extra"]["dropout"]["sites"] == ["1"]
    assert res.info["traces"]["isotropic"] == res.info["traces"]["dropout"]
    assert res.noise["source"].unique().tolist() == ["dropout", "isotropic", "sgd"]
    res2 = probe(model, "mse", X, y, settings=_small(sources=("sgd",)), step=0,
                 generator=torch.Generator().manual_seed(0), progress=True)
    assert res2.noise["source"].unique().tolist() == ["sgd"]
    assert res2.flatness["quantity"].tolist() == ["lambda_max", "hessian_trace", "tr_hc", "tr_c", "rho",
                                                  "tr_c_exact"]


def test_probe_refusals():
    X, y = _data()
    g = torch.Generator()
    bn = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
    with pytest.raises(ConfigError, match=r"model layer '1' \(BatchNorm1d\) depends on the batch"):
        probe(bn, "cross_entropy", X, y, settings=_small(), step=0, generator=g)
    with pytest.raises(ConfigError, match=r"^`batch_size`: must be < the number of training samples \(40\); got 40$"):
        probe(_net(), "cross_entropy", X, y, settings=_small(batch_size=40), step=0, generator=g)
    with pytest.raises(ConfigError, match=r"^`top_k`: must be <= the number of parameters \(115\); got 500$"):
        probe(_net(), "cross_entropy", X, y, settings=_small(top_k=500), step=0, generator=g)
    nodrop = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ConfigError, match="the model applies no dropout in train mode .*; set `drop_prob`"):
        probe(nodrop, "cross_entropy", X, y, settings=_small(), step=0, generator=g)
    with pytest.raises(InputError, match="`settings` must be a ProbeSettings; got dict"):
        probe(_net(), "cross_entropy", X, y, settings={}, step=0, generator=g)
    with pytest.raises(InputError, match="`step` must be an integer >= 0; got -1"):
        probe(_net(), "cross_entropy", X, y, settings=_small(), step=-1, generator=g)
    with pytest.raises(InputError, match="`generator` must be a torch.Generator; got int"):
        probe(_net(), "cross_entropy", X, y, settings=_small(), step=0, generator=0)
    with pytest.raises(InputError, match="`model` must be a torch.nn.Module; got str"):
        probe("m", "cross_entropy", X, y, settings=_small(), step=0, generator=g)
    with pytest.raises(InputError, match="`X` must be a torch tensor or NpyRows"):
        probe(_net(), "cross_entropy", X.numpy(), y, settings=_small(), step=0, generator=g)
    with pytest.raises(InputError, match="`v0` must be a numpy array or None; got list"):
        probe(_net(), "cross_entropy", X, y, settings=_small(), step=0, generator=g, v0=[1.0])
    with pytest.raises(ConfigError, match="`loss` must be one of"):
        probe(_net(), "nll", X, y, settings=_small(), step=0, generator=g)


@pytest.mark.parametrize("kw, msg", [
    (dict(top_k=0), r"`top_k` must be an integer >= 1; got 0"),
    (dict(top_k=2.5), r"`top_k` must be an integer >= 1; got 2.5"),
    (dict(n_samples=1), r"`n_samples` must be an integer >= 2; got 1"),
    (dict(batch_size=0), r"`batch_size` must be an integer >= 1; got 0"),
    (dict(n_random=-1), r"`n_random` must be an integer >= 0; got -1"),
    (dict(hutchinson_probes=1), r"`hutchinson_probes` must be an integer >= 2; got 1"),
    (dict(tr_hc_samples=-1), r"`tr_hc_samples` must be an integer >= 0; got -1"),
    (dict(tr_hc_samples=2), r"`tr_hc_samples` must be 0 or in \[3, n_samples=1000\]; got 2"),
    (dict(store_vectors_max_params=True), r"`store_vectors_max_params` must be an integer >= 0; got True"),
    (dict(memory_budget_mb=0), r"`memory_budget_mb` must be a positive number; got 0"),
    (dict(sources="sgd"), r"`sources` must be a list of source names; got 'sgd'"),
    (dict(sources=("sgd", "adam")), r"`sources` entry 'adam' is not one of \['sgd', 'dropout', 'isotropic'\]"),
    (dict(sources=()), r"`sources` must name at least one of"),
    (dict(sources=("sgd", "sgd")), r"`sources` has duplicates: \['sgd', 'sgd'\]"),
    (dict(isotropic_of="isotropic"), r"`isotropic_of` must be 'sgd' or 'dropout'; got 'isotropic'"),
    (dict(sources=("dropout", "isotropic")), r"`isotropic_of` = 'sgd' must also be in `sources`"),
    (dict(drop_prob=1.0), r"`drop_prob` \(the DROP probability\) must be in \(0, 1\); got 1.0"),
    (dict(drop_prob=0.1, dropout_layers="fc"), r"`dropout_layers` must be a list of module names; got 'fc'"),
    (dict(drop_prob=0.1, dropout_layers=()), r"`dropout_layers` must name at least one module"),
    (dict(dropout_layers=("fc",)), r"`dropout_layers` needs `drop_prob`"),
    (dict(dtype="float16"), r"`dtype` must be one of \['float32', 'float64'\]; got 'float16'"),
    (dict(eig_tol=0), r"`eig_tol` must be in \(0, 1\); got 0"),
    (dict(exact_variance=1), r"`exact_variance` must be true or false; got 1"),
])
def test_settings_validation(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        ProbeSettings(**kw)


def test_settings_to_dict_and_sources_enum():
    s = ProbeSettings(sources=["sgd", "isotropic"], drop_prob=0.2, dropout_layers=["a"])
    d = s.to_dict()
    assert d["sources"] == ["sgd", "isotropic"] and d["dropout_layers"] == ["a"] and d["top_k"] == 20
    assert ProbeSettings(**d) == s
    assert [x.value for x in NoiseSource] == ["sgd", "dropout", "isotropic"]


@pytest.mark.slow
def test_isotropic_control_group_exponent_ci_contains_zero(tmp_path):
    """End to end: probes of 4 seeds -> log set -> `varprinciple test`; the isotropic control
    must give a group exponent b whose CI contains 0."""
    from varprinciple.stats.analysis import analyze
    X, y = _data(n=80)
    for seed in range(4):
        model = _net(seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.3)
        for _ in range(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(X), y).backward()
            opt.step()
        s = ProbeSettings(top_k=8, n_samples=200, batch_size=8, n_random=4, hutchinson_probes=8, tr_hc_samples=20,
                          sources=("sgd", "isotropic"))
        res = probe(model, "cross_entropy", X, y, settings=s, step=100,
                    generator=torch.Generator().manual_seed(100 + seed))
        io.write_run(tmp_path / f"r{seed}", {"run_id": f"r{seed}", "method": "gd", "seed": seed},
                     eigen=res.eigen, noise=res.noise, tables=res.tables())
    out = analyze(tmp_path, resamples=0)
    g = out.groups.set_index("source")
    assert g.loc["isotropic", "ci_low"] <= 0 <= g.loc["isotropic", "ci_high"], g
    assert g.loc["sgd", "slope"] > g.loc["isotropic", "slope"]


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("tr_hc", [0, 4])
@pytest.mark.parametrize("sources", [("sgd",), ("dropout",), ("sgd", "isotropic"), ("dropout", "isotropic"),
                                     ("sgd", "dropout"), ("sgd", "dropout", "isotropic")])
def test_every_source_and_flatness_combination_writes(tmp_path, sources, tr_hc, exact):
    iso_of = "dropout" if sources == ("dropout", "isotropic") else "sgd"
    s = ProbeSettings(top_k=2, n_samples=8, batch_size=4, n_random=1, hutchinson_probes=2, tr_hc_samples=tr_hc,
                      sources=sources, exact_variance=exact, isotropic_of=iso_of, dropout_samples=5)
    X, y = _data(n=12)
    res = probe(_net(), "cross_entropy", X, y, settings=s, step=0, generator=torch.Generator().manual_seed(0))
    run = io.write_run(tmp_path / "r", {"run_id": "r", "method": "gd"}, eigen=res.eigen, noise=res.noise,
                       tables=res.tables())
    log = io.read_run(run)
    assert {b.source for b in log.blocks} == set(sources)
    f = log.optional_table("flatness.parquet")
    assert ({"rho"} <= set(f["quantity"])) == (tr_hc > 0)
    if "dropout" in sources:
        assert (res.noise.source == "dropout").sum() == 5 * 3  # dropout_samples draws x 3 directions
