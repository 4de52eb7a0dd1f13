"""Per-layer probes (issue 8 item 4): block Hessians H_bb, block-projected noise, `block` rows end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from _tiny_config import tiny_toml  # noqa: E402
from varprinciple import io  # noqa: E402
from varprinciple.collect.blocks import block_random_directions, resolve_blocks  # noqa: E402
from varprinciple.collect.config import load_config, validate_config  # noqa: E402
from varprinciple.collect.curvature import BlockHessianOperator, dense_hessian, hessian_operator  # noqa: E402
from varprinciple.collect.noise import sgd_variance_factor  # noqa: E402
from _budget import smallest_budget_mb  # noqa: E402
from varprinciple.collect.probe import ProbeSettings, probe  # noqa: E402
from varprinciple.errors import ConfigError, InputError  # noqa: E402

pytestmark = pytest.mark.torch


def _data(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return X, y


def _net(seed=0, dropout=False):
    torch.manual_seed(seed)  # the test's own model initialisation
    layers = [nn.Linear(4, 6), nn.Tanh()] + ([nn.Dropout(0.2)] if dropout else []) + [nn.Linear(6, 3)]
    return nn.Sequential(*layers).double()  # 30 + 21 = 51 parameters


SET = dict(top_k=3, n_samples=40, batch_size=8, n_random=2, hutchinson_probes=4, tr_hc_samples=5,
           sources=("sgd", "isotropic"))
ALL = {**SET, "sources": ("sgd", "dropout", "isotropic")}


def _vectors(eigen: pd.DataFrame, block) -> np.ndarray:
    rows = eigen[eigen["block"].map(lambda b: b == block)].sort_values("rank")
    return np.stack([np.asarray(v, dtype=np.float64) for v in rows["vector"]], axis=1)


def _param_index(model, block: str) -> np.ndarray:
    named = list(model.named_parameters())
    return resolve_blocks([block], [n for n, _ in named], [p.numel() for _, p in named])[0].index


@pytest.mark.parametrize("blocks", ["layers", ("0.weight", "2.bias", "2")])
def test_block_eigenpairs_equal_dense_eigh_of_the_hessian_sub_block(blocks):
    X, y = _data()
    net = _net()
    H = dense_hessian(net, "cross_entropy", X, y)
    res = probe(net, "cross_entropy", X, y, settings=ProbeSettings(**SET, blocks=blocks), step=0,
                generator=torch.Generator().manual_seed(1))
    names = ["0", "2"] if blocks == "layers" else list(blocks)
    assert list(dict.fromkeys(res.eigen["block"].dropna())) == names
    for name in names:
        idx = _param_index(net, name)
        w, U = np.linalg.eigh(H[np.ix_(idx, idx)])
        k = min(3, len(idx))  # "2.bias" has 3 parameters: k = 3 = D_b, the dense path
        rows = res.eigen[res.eigen["block"] == name].sort_values("rank")
        np.testing.assert_allclose(rows["eigenvalue"], w[::-1][:k], rtol=1e-8, atol=1e-12)
        # Cauchy interlacing: the i-th eigenvalue of a principal sub-block is <= the i-th of H
        assert (rows["eigenvalue"].to_numpy() <= np.linalg.eigvalsh(H)[::-1][:k] + 1e-12).all()
        assert (rows["residual"] < 1e-8).all()
        V = _vectors(res.eigen, name)
        outside = np.setdiff1d(np.arange(H.shape[0]), idx)
        assert np.abs(V[outside]).max() == 0  # embedded: zero outside the block
        overlap = np.abs(np.sum(V[idx] * U[:, ::-1][:, :k], axis=0))
        np.testing.assert_allclose(overlap, 1.0, atol=1e-6)  # float32-stored vectors, up to sign


def test_block_operator_is_the_sub_block_and_counts_hvps():
    X, y = _data()
    net = _net()
    H = dense_hessian(net, "cross_entropy", X, y)
    op = hessian_operator(net, "cross_entropy", X, y)
    idx = _param_index(net, "2")
    bop = BlockHessianOperator(op, idx)
    E = torch.eye(len(idx), dtype=torch.float64)
    np.testing.assert_allclose(bop.matmat(E).numpy(), H[np.ix_(idx, idx)], atol=1e-12)
    assert op.n_hvp == len(idx) and bop.n_hvp == op.n_hvp
    with pytest.raises(InputError, match=r"`index` must be distinct coordinates in \[0, 51\)"):
        BlockHessianOperator(op, np.array([0, 0]))


def _per_sample_gradients(net, X, y):
    params = list(net.parameters())
    rows = []
    for i in range(len(X)):
        li = nn.functional.cross_entropy(net(X[i:i + 1]), y[i:i + 1])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(li, params)]))
    return torch.stack(rows).detach().numpy()


def test_block_projected_sgd_variance_equals_the_exact_per_sample_formula():
    X, y = _data()
    net = _net()
    H = dense_hessian(net, "cross_entropy", X, y)
    s = ProbeSettings(**{**SET, "n_samples": 4000}, blocks="layers")
    res = probe(net, "cross_entropy", X, y, settings=s, step=0, generator=torch.Generator().manual_seed(2))
    G = _per_sample_gradients(net, X, y)
    Gc = G - G.mean(0)
    n, B = len(X), s.batch_size
    fac = sgd_variance_factor(n, B)
    ev = res.exact_variance
    tr_c = fac * (Gc ** 2).sum() / n
    for name in ("0", "2"):
        idx = _param_index(net, name)
        w, U = np.linalg.eigh(H[np.ix_(idx, idx)])
        V = np.zeros((G.shape[1], 3))
        V[idx] = U[:, ::-1][:, :3]  # the dense oracle's eigenvectors, embedded in R^D
        exact = fac * ((Gc @ V) ** 2).mean(0)  # DESIGN.md: v'C_B v = (n-B)/(B(n-1)) (1/n) sum (v'(g_i-g))^2
        rows = ev[(ev["source"] == "sgd") & (ev["block"] == name) & (ev["basis"] == "hessian")].sort_values("direction")
        np.testing.assert_allclose(rows["variance"], exact, rtol=1e-7)
        # the K sampled draws agree with it (K = 4000: relative SE of a Gaussian variance sqrt(2/K) = 2.2%)
        noise = res.noise[(res.noise["source"] == "sgd") & (res.noise["block"] == name)
                          & (res.noise["basis"] == "hessian")]
        sampled = noise.pivot(index="sample", columns="direction", values="value").var(ddof=1).to_numpy()
        np.testing.assert_allclose(sampled / exact, 1.0, atol=5 * np.sqrt(2 / 4000))  # measured within 3%
        # random block directions are unit vectors: the isotropic control's exact variance is tr C / D
        iso = ev[(ev["source"] == "isotropic") & (ev["block"] == name)]
        assert len(iso) == 5
        np.testing.assert_allclose(iso["variance"], tr_c / G.shape[1], rtol=1e-9)


def test_blocks_off_leaves_the_whole_network_probe_unchanged_and_on_adds_block_rows(tmp_path):
    X, y = _data()
    net = _net(dropout=True)
    off = probe(net, "cross_entropy", X, y, settings=ProbeSettings(**ALL), step=5,
                generator=torch.Generator().manual_seed(3))
    on = probe(net, "cross_entropy", X, y, settings=ProbeSettings(**ALL, blocks="layers"), step=5,
               generator=torch.Generator().manual_seed(3))
    for t in (off.eigen, off.noise, off.exact_variance, off.flatness):
        assert "block" not in t.columns
    whole = {name: t[t["block"].isna()].drop(columns="block").reset_index(drop=True)
             for name, t in (("eigen", on.eigen), ("noise", on.noise), ("ev", on.exact_variance))}
    pd.testing.assert_frame_equal(whole["eigen"].drop(columns="vector"), off.eigen.drop(columns="vector"),
                                  check_exact=True)
    # the same draws projected on more directions: equal to rounding of the wider products
    pd.testing.assert_frame_equal(whole["noise"], off.noise, check_exact=False, rtol=1e-12, atol=1e-15)
    pd.testing.assert_frame_equal(whole["ev"], off.exact_variance, check_exact=False, rtol=1e-9, atol=1e-15)
    pd.testing.assert_frame_equal(on.flatness, off.flatness, check_exact=True)
    got = on.noise.groupby(["source", "block"]).size()
    assert set(got.index) == {(s, b) for s in ("sgd", "dropout", "isotropic") for b in ("0", "3")}
    assert (got == 40 * 5).all()  # K draws x (3 Hessian + 2 random) directions per block
    assert set(on.exact_variance["block"].dropna()) == {"0", "3"}
    assert [b["name"] for b in on.info["blocks"]] == ["0", "3"] and "blocks" in on.timings
    # the log set holds whole-network (null block) and per-block probes side by side
    io.write_run(tmp_path / "r", {"run_id": "r", "method": "gd"}, eigen=on.eigen, noise=on.noise, tables=on.tables())
    run = io.read_run(tmp_path / "r")
    assert sorted((b.source, str(b.block)) for b in run.blocks) == sorted(
        (s, b) for s in ("sgd", "dropout", "isotropic") for b in ("0", "3", "None"))


def test_block_settings_and_names_are_validated_up_front():
    with pytest.raises(ConfigError, match=r'`blocks` must be "layers", a list'):
        ProbeSettings(blocks="layer")
    with pytest.raises(ConfigError, match=r'`blocks` must be "layers" or a non-empty list'):
        ProbeSettings(blocks=())
    with pytest.raises(ConfigError, match=r'`blocks` must be "layers" or a non-empty list'):
        ProbeSettings(blocks=[1])
    with pytest.raises(ConfigError, match=r"`blocks` has duplicates"):
        ProbeSettings(blocks=["0", "0"])
    assert ProbeSettings(blocks=["0"]).blocks == ("0",) and ProbeSettings(blocks=["0"]).to_dict()["blocks"] == ["0"]
    assert "blocks" not in ProbeSettings().to_dict()
    X, y = _data()
    with pytest.raises(ConfigError, match=r"^`blocks`: unknown block 'fc9'; allowed: '0', '2', '0.weight', "
                                          r"'0.bias', '2.weight', '2.bias' \(or \"layers\"\)\.$"):
        probe(_net(), "cross_entropy", X, y, settings=ProbeSettings(**SET, blocks=["fc9"]), step=0,
              generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match=r"^\[probe\] blocks: must be a list or one of 'layers'; got 'layer'$"):
        validate_config({"probe": {"blocks": "layer"}})
    with pytest.raises(ConfigError, match=r"^\[probe\] blocks: give at least one block name"):
        validate_config({"probe": {"blocks": []}})
    with pytest.raises(ConfigError, match=r"^\[probe\] blocks: duplicate values"):
        validate_config({"probe": {"blocks": ["fc0", "fc0"]}})
    R = block_random_directions(np.array([1, 2]), 5, 4, generator=torch.Generator().manual_seed(0))
    assert R[[0, 3, 4]].abs().max() == 0 and torch.allclose(R.norm(dim=0), torch.ones(4, dtype=R.dtype))


def test_collect_unknown_block_fails_before_training(tmp_path):
    from varprinciple.collect.run import collect
    p = tmp_path / "c.toml"
    p.write_text(tiny_toml(methods='["gd", "sgd"]', seeds="[0, 1]", steps=10, log_every=10,
                           probe_extra='sources = ["sgd", "isotropic"]\nblocks = ["fc0", "fc7.weight"]'))
    with pytest.raises(ConfigError, match=r"^\[probe\] blocks: unknown block 'fc7.weight'; allowed: 'fc0', 'out', "):
        collect(load_config(p), tmp_path / "logs")
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def test_collect_test_and_report_give_per_layer_b(tmp_path):
    """End to end: collect with blocks = "layers" -> `varprinciple test` relations and group rows per
    block (and the whole network, block null) -> the report's tables and log-log figures per block."""
    from varprinciple.collect.run import collect
    from varprinciple.report.build import build_report
    from varprinciple.stats.analysis import analyze
    p = tmp_path / "c.toml"
    p.write_text(tiny_toml(methods='["gd", "sgd"]', seeds="[0, 1]", steps=10, log_every=10,
                           probe_extra='sources = ["sgd", "isotropic"]\nblocks = "layers"'))
    collect(load_config(p), tmp_path / "logs")
    run = io.read_run(tmp_path / "logs" / "gd-lr0.1-seed0")
    assert {b.block for b in run.blocks} == {None, "fc0", "out"}
    assert [b["name"] for b in run.meta["probes"][-1]["blocks"]] == ["fc0", "out"]  # run.json provenance
    a = analyze(tmp_path / "logs", resamples=0)
    rel = a.relations
    keys = set(zip(rel["run_id"], rel["source"], [None if pd.isna(b) else b for b in rel["block"]]))
    runs = ["gd-lr0.1-seed0", "gd-lr0.1-seed1", "sgd-lr0.1-bs8-seed0", "sgd-lr0.1-bs8-seed1"]
    assert keys == {(r, s, b) for r in runs for s in ("sgd", "isotropic") for b in (None, "fc0", "out")}
    assert np.isfinite(rel["slope"]).all()
    grp = a.groups
    gkeys = set(zip(grp["source"], [None if pd.isna(b) else b for b in grp["block"]]))
    assert gkeys == {(s, b) for s in ("sgd", "isotropic") for b in (None, "fc0", "out")}
    assert (grp["n_runs"] == 2).all() and len(grp) == 2 * 2 * 3
    json_path, _ = a.write(tmp_path / "results.json")
    rep = build_report(json_path, tmp_path / "out", formats="md", dpi=30)
    text = rep.path("table", "groups", "md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Group"))
    assert "| Block |" in header
    assert all(f"| {b} |" in text for b in ("fc0", "out", "all"))
    for name in ("loglog_runs", "loglog_pooled"):  # one panel per block, the whole network's too
        png = tmp_path / "out" / "figures" / f"{name}.png"
        assert png.exists() and png.stat().st_size > 0, name


def test_blocks_with_data_chunked_hvps_equal_the_graph_kept_path():
    X, y = _data()
    kw = dict(SET, blocks="layers")
    big = probe(_net(), "cross_entropy", X, y, settings=ProbeSettings(**kw), step=0,
                generator=torch.Generator().manual_seed(4))
    tight = smallest_budget_mb(_net(), "cross_entropy", X, y, ProbeSettings(**kw))
    small = probe(_net(), "cross_entropy", X, y, settings=ProbeSettings(**kw, memory_budget_mb=tight), step=0,
                  generator=torch.Generator().manual_seed(4))
    assert small.info["plan"]["hessian_chunk"] is not None and big.info["plan"]["hessian_chunk"] is None
    np.testing.assert_allclose(small.eigen["eigenvalue"], big.eigen["eigenvalue"], rtol=1e-9)
    ev_s, ev_b = small.exact_variance, big.exact_variance
    np.testing.assert_allclose(ev_s["variance"], ev_b["variance"], rtol=1e-6)
