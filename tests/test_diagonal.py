"""Per-parameter diagonals h_ii and c_ii ([probe] diag_params; varprinciple.collect.diagonal):
exact against a dense Hessian and a per-sample gradient loop, chunked or not (collect writing
diagonal.parquet: tests/test_gamma.py's end-to-end test)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple import schema  # noqa: E402
from varprinciple.collect.blocks import resolve_blocks  # noqa: E402
from varprinciple.collect.curvature import dense_hessian  # noqa: E402
from varprinciple.collect.diagonal import diagonal_frame  # noqa: E402
from varprinciple.collect.noise import sgd_variance_factor  # noqa: E402
from varprinciple.collect.probe import ProbeSettings  # noqa: E402
from varprinciple.errors import ConfigError  # noqa: E402


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _data(loss, n=30, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g) if loss == "cross_entropy" else torch.randn(n, 3, generator=g,
                                                                                        dtype=torch.float64)
    return X, y


def _per_sample_loop(net, loss, X, y):
    """Per-sample gradients one sample at a time (plain autograd): the oracle of c_ii."""
    out = []
    for i in range(len(X)):
        net.zero_grad()
        o = net(X[i:i + 1])
        li = (nn.functional.cross_entropy(o, y[i:i + 1]) if loss == "cross_entropy"
              else 0.5 * ((o - y[i:i + 1]) ** 2).sum())
        g = torch.autograd.grad(li, list(net.parameters()))
        out.append(torch.cat([x.reshape(-1) for x in g]))
    return torch.stack(out).numpy()


@pytest.mark.parametrize("loss,budget", [("cross_entropy", 2048), ("mse", 2048), ("cross_entropy", 0.001)])
def test_diagonals_equal_dense_hessian_and_per_sample_loop(loss, budget):
    net = _net()
    X, y = _data(loss)
    B = 8
    s = ProbeSettings(sources=("sgd",), batch_size=B, diag_params=7, memory_budget_mb=budget)
    d = diagonal_frame(net, loss, X, y, step=3, settings=s, generator=torch.Generator().manual_seed(5))
    H = dense_hessian(net, loss, X, y)
    G = _per_sample_loop(net, loss, X, y)
    C = sgd_variance_factor(len(X), B) * ((G - G.mean(0)) ** 2).mean(0)
    idx = d["param"].to_numpy()
    np.testing.assert_allclose(d["h_ii"].to_numpy(), np.diag(H)[idx], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d["c_ii"].to_numpy(), C[idx], rtol=1e-10, atol=1e-14)
    # per layer min(7, D_b) distinct coordinates inside the layer
    names = [n for n, _ in net.named_parameters()]
    blocks = resolve_blocks("layers", names, [p.numel() for p in net.parameters()])
    for b in blocks:
        got = d.loc[d["block"] == b.name, "param"].to_numpy()
        assert len(got) == min(7, b.size) and len(set(got)) == len(got) and set(got) <= set(b.index)
    assert (d["step"] == 3).all()
    assert list(d.columns) == list(schema.DIAGONAL.names)


def test_small_blocks_are_taken_whole_and_the_sample_is_uniform():
    net = _net()
    X, y = _data("mse")
    s = ProbeSettings(sources=("sgd",), batch_size=8, diag_params=1000, blocks=("2",))
    d = diagonal_frame(net, "mse", X, y, step=0, settings=s, generator=torch.Generator().manual_seed(0))
    assert d["block"].unique().tolist() == ["2"] and len(d) == 6 * 5 + 5
    # uniform sample without replacement: each coordinate of a 35-parameter block picked w.p. 4/35
    from varprinciple.collect.blocks import ParameterBlock
    from varprinciple.collect.diagonal import sample_coordinates
    blk = [ParameterBlock("2", ("2.weight", "2.bias"), np.arange(30, 65))]
    hits = np.zeros(35)
    g = torch.Generator().manual_seed(1)
    for _ in range(2000):
        (_, p), = sample_coordinates(blk, 4, generator=g)
        assert len(set(p)) == 4
        hits[p - 30] += 1
    expected = 2000 * 4 / 35
    assert abs(hits - expected).max() < 4.5 * np.sqrt(expected)


def test_diag_params_is_validated():
    with pytest.raises(ConfigError, match="`diag_params` must be an integer >= 0"):
        ProbeSettings(diag_params=-1)
    with pytest.raises(ConfigError, match=r"`batch_size` \(the SGD noise of `diag_params`\): must be < the number"):
        diagonal_frame(_net(), "mse", *_data("mse", n=6), step=0,
                       settings=ProbeSettings(sources=("sgd",), batch_size=8, diag_params=3),
                       generator=torch.Generator())


def test_diag_params_batch_is_checked_at_the_boundary_without_the_sgd_source(tmp_path):
    """diag_params needs batch_size < n even when no SGD source is probed: refused by the
    own-model API before anything runs or is written (not after the probe)."""
    from varprinciple.collect import probe_model
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Dropout(0.2), nn.Linear(6, 3)).double()
    s = ProbeSettings(top_k=2, n_samples=4, sources=("dropout",), drop_prob=0.2, batch_size=50,
                      n_random=1, hutchinson_probes=2, tr_hc_samples=0, diag_params=3)
    with pytest.raises(ConfigError, match=r"`batch_size`: must be < the number of training samples \(30\)"):
        probe_model(net, "mse", *_data("mse"), settings=s, out=tmp_path / "r", run_id="r", method="dropout")
    assert not (tmp_path / "r").exists()


def test_a_direct_probe_call_adds_the_diagonal_it_is_asked_for():
    from varprinciple.collect.probe import probe
    X, y = _data("mse")
    s = ProbeSettings(top_k=2, n_samples=4, sources=("sgd",), batch_size=8, n_random=1, hutchinson_probes=2,
                      tr_hc_samples=0, diag_params=3)
    res = probe(_net(), "mse", X, y, settings=s, step=0, generator=torch.Generator().manual_seed(0))
    assert res.diagonal is not None and len(res.diagonal) == 3 * 3 and "diagonal" in res.timings
    assert schema.DIAGONAL.file in res.tables()


def test_recorder_keeps_the_diagonals_across_a_resume(tmp_path):
    from varprinciple import io
    from varprinciple.collect.recorder import Recorder
    X, y = _data("mse")
    s = ProbeSettings(top_k=2, n_samples=4, sources=("sgd",), batch_size=8, n_random=1, hutchinson_probes=2,
                      tr_hc_samples=0, diag_params=3)
    rec = Recorder(_net(), "mse", X, y, out=tmp_path / "r", every=1, settings=s, checkpoints=False)
    rec.step(0)
    rec = Recorder(_net(), "mse", X, y, out=tmp_path / "r", every=1, settings=s, checkpoints=False)  # resumes
    rec.step(1)
    d = io.read_run(tmp_path / "r").optional_table(schema.DIAGONAL.file)
    assert sorted(d["step"].unique()) == [0, 1] and len(d) == 2 * 3 * 3  # 3 layers x 3 parameters per step
