"""Models as people write them: attention, dict outputs, custom losses, functional dropout,
frozen BatchNorm -- each against a brute-force oracle or refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple.collect import load_checkpoint, reprobe_run  # noqa: E402,F401  (importable here)
from varprinciple.collect._model import ProbedModel  # noqa: E402
from varprinciple.collect.curvature import HessianOperator, dense_hessian, top_eigenpairs  # noqa: E402
from varprinciple.collect.losses import Loss, parse_loss  # noqa: E402
from varprinciple.collect.noise import DropoutSites  # noqa: E402
from _budget import smallest_budget_mb  # noqa: E402
from varprinciple.collect.probe import ProbeSettings, probe  # noqa: E402
from varprinciple.errors import ConfigError  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]
F64 = torch.float64


class _Attn(nn.Module):
    """Embedding + one TransformerEncoderLayer + linear head, dict output (< 1,000 parameters)."""

    def __init__(self, attn_dropout=0.0, drop=0.1):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=drop, batch_first=True)
        self.layer.self_attn.dropout = attn_dropout
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return {"logits": self.head(self.layer(self.emb(x)).mean(1)), "aux": torch.zeros(())}


def _tokens(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 7, (n, 4), generator=g)
    return x, (x[:, 0] % 3)


def _dense_h(model, loss, X, y):
    pm = ProbedModel(model, parse_loss(loss), X, y, dtype=F64)
    op = HessianOperator(pm)
    D = pm.n_params
    return op.matmat(torch.eye(D, dtype=F64)).numpy(), pm


def test_attention_model_hessian_matches_dense_oracle():
    torch.manual_seed(0)
    model = _Attn()
    X, y = _tokens()
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        H, pm = _dense_h(model, "cross_entropy", X, y)
        # oracle: torch.autograd.functional.hessian of the flat-parameter loss
        def f(theta):
            return pm.batch_loss(pm.unflatten(theta), pm.X, pm.y)
        Href = torch.autograd.functional.hessian(f, pm.theta.clone()).numpy()
    assert pm.n_params < 1000
    np.testing.assert_allclose(0.5 * (H + H.T), Href, atol=1e-10)
    res = probe(model, "cross_entropy", X, y, step=0, generator=torch.Generator().manual_seed(0),
                settings=ProbeSettings(top_k=3, n_samples=20, batch_size=5, n_random=1, hutchinson_probes=2,
                                       tr_hc_samples=3))
    np.testing.assert_allclose(res.eigen["eigenvalue"], np.linalg.eigvalsh(Href)[::-1][:3], rtol=1e-8)
    # the layer's nn.Dropout modules, in the order the forward calls them; the attention's
    # dropout is 0 here: no dropout call, nothing skipped
    assert res.info["dropout_sites"] == [{"name": f"layer.{d}", "kind": "module", "call": "F.dropout",
                                          "drop_prob": 0.1, "where": "call"} for d in ("dropout1", "dropout", "dropout2")]
    assert res.info["dropout_skipped"] == []


def test_attention_dropout_is_a_site_and_zero_dropout_is_skipped():
    torch.manual_seed(0)
    X, y = _tokens()
    pm = ProbedModel(_Attn(attn_dropout=0.2), Loss.CROSS_ENTROPY, X, y, dtype=F64)
    sites = DropoutSites(pm)
    assert [(s.name, s.kind, s.call, s.drop_prob) for s in sites.sites] == [
        ("layer.self_attn", "attention", "scaled_dot_product_attention", 0.2),
        ("layer.dropout1", "module", "F.dropout", 0.1), ("layer.dropout", "module", "F.dropout", 0.1),
        ("layer.dropout2", "module", "F.dropout", 0.1)]
    # per-sample masks: (heads, L, S) for the attention weights, (L, E) and (L, F) for the rest
    assert sites.shapes == [(2, 4, 4), (4, 4), (4, 6), (4, 4)] and sites.cut == 0
    # need_weights=True (nn.MultiheadAttention called directly): dropout on (bsz * heads, L, S)

    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.att, self.head = nn.Embedding(7, 4), nn.MultiheadAttention(4, 2, dropout=0.3), nn.Linear(4, 3)

        def forward(self, x):
            h = self.emb(x).transpose(0, 1)  # (L, n, E): samples in dimension 1
            return self.head(self.att(h, h, h)[0].mean(0))

    s2 = DropoutSites(ProbedModel(Direct(), Loss.CROSS_ENTROPY, X, y, dtype=F64))
    assert [(s.name, s.kind) for s in s2.sites] == [("att", "attention")]
    assert s2.shapes == [(2, 4, 4)] and s2.merged == [True]
    # nn.Dropout(p=0) and zero attention dropout are skipped, not refused
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.0), nn.Linear(4, 2), nn.Dropout(0.2))
    g = torch.Generator().manual_seed(0)
    Xr, yr = torch.randn(10, 3, generator=g), torch.randn(10, 2, generator=g)
    s3 = DropoutSites(ProbedModel(net, Loss.MSE, Xr, yr, dtype=F64))
    assert [s.name for s in s3.sites] == ["4"] and s3.skipped == ["2"]


class _FunctionalDrop(nn.Module):
    def __init__(self, always=False):
        super().__init__()
        self.a, self.b = nn.Linear(3, 5), nn.Linear(5, 2)
        self.always = always

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(nn.functional.dropout(h, 0.3, training=True if self.always else self.training))


class _Noisy(nn.Module):
    """Gaussian noise injection in train mode: random, but not a dropout call."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 2)

    def forward(self, x):
        h = self.a(x)
        return h + 0.1 * torch.randn_like(h) if self.training else h


def test_functional_dropout_is_a_site_and_other_randomness_is_refused():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(10, 3, generator=g), torch.randn(10, 2, generator=g)
    pm = ProbedModel(_FunctionalDrop(), Loss.MSE, X, y, dtype=F64)
    s = DropoutSites(pm)
    assert s.describe() == [{"name": "<root>", "kind": "functional", "call": "F.dropout", "drop_prob": 0.3,
                             "where": "call"}]
    assert DropoutSites(pm, drop_prob=0.2).drop_probs == [0.2]  # drop_prob overrides the model's p
    with pytest.raises(ConfigError, match=r"^the model draws random numbers in eval mode \(aten\.\S+ in '<root>'"):
        ProbedModel(_FunctionalDrop(always=True), Loss.MSE, X, y, dtype=F64)
    with pytest.raises(ConfigError, match=r"^dropout source: the model draws random numbers in train mode outside any "
                                          r"dropout call the probe can mask: aten\.\S+ in '<root>' \(_Noisy\); switch "
                                          r"them off for the probe or remove 'dropout' from `sources`\.$"):
        DropoutSites(ProbedModel(_Noisy(), Loss.MSE, X, y, dtype=F64))
    # an nn.Dropout left out by dropout_layers is named, with what to do
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.2), nn.Linear(4, 2))
    pm2 = ProbedModel(net, Loss.MSE, X, y, dtype=F64)
    with pytest.raises(ConfigError, match=r"^dropout source: the model applies dropout in train mode outside "
                                          r"`dropout_layers`: F\.dropout in '2' \(Dropout, p=0\.2\); set its p to 0, "
                                          r"name it in `dropout_layers`, or leave `dropout_layers` unset"):
        DropoutSites(pm2, drop_prob=0.1, layers=("0",))
    # channel dropout cannot be drawn elementwise
    img = torch.randn(10, 2, 3, 3, generator=g)
    cnn = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Dropout2d(0.2), nn.Flatten(), nn.Linear(18, 2))
    with pytest.raises(ConfigError, match=r"^dropout source: F\.dropout2d in '1' \(Dropout2d\) is channel or alpha "
                                          r"dropout, which the probe cannot draw"):
        DropoutSites(ProbedModel(cnn, Loss.MSE, img, y, dtype=F64))


def test_dict_output_and_custom_losses_equal_the_builtin_path():
    torch.manual_seed(1)
    base = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3))

    class Dict(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = base

        def forward(self, x):
            return {"logits": self.net(x)}

    g = torch.Generator().manual_seed(2)
    X = torch.randn(30, 3, generator=g, dtype=F64)
    y = torch.randint(0, 3, (30,), generator=g)
    H0, _ = _dense_h(base, "cross_entropy", X, y)
    Hd, _ = _dense_h(Dict(), "cross_entropy", X, y)
    Hc, _ = _dense_h(Dict(), lambda out, t: nn.functional.cross_entropy(out["logits"], t, reduction="none"), X, y)
    np.testing.assert_allclose(Hd, H0, atol=1e-13)
    np.testing.assert_allclose(Hc, H0, atol=1e-12)
    # label smoothing changes H; the oracle is the dense Hessian of the smoothed mean loss
    ls = nn.CrossEntropyLoss(reduction="none", label_smoothing=0.2)
    Hs, pm = _dense_h(base, ls, X, y)

    def f(theta):
        return nn.functional.cross_entropy(pm.forward(pm.unflatten(theta), pm.X), pm.y, label_smoothing=0.2)
    np.testing.assert_allclose(0.5 * (Hs + Hs.T), torch.autograd.functional.hessian(f, pm.theta.clone()).numpy(),
                               atol=1e-12)
    # nn.MSELoss normalisation (mean over outputs, no 1/2) = 2/m x the toolkit's MSE
    Yr = torch.randn(30, 3, generator=g, dtype=F64)
    Hm, _ = _dense_h(base, "mse", X, Yr)
    Hmse, _ = _dense_h(base, lambda o, t: ((o - t) ** 2).mean(1), X, Yr)
    np.testing.assert_allclose(Hmse, 2 / 3 * Hm, atol=1e-12)
    # the probe runs end to end with a custom loss, per-sample paths included
    res = probe(base, ls, X, y, step=0, generator=torch.Generator().manual_seed(0),
                settings=ProbeSettings(top_k=2, n_samples=10, batch_size=5, n_random=1, hutchinson_probes=2,
                                       tr_hc_samples=3, sources=("sgd", "isotropic")))
    np.testing.assert_allclose(res.eigen["eigenvalue"], np.linalg.eigvalsh(0.5 * (Hs + Hs.T))[::-1][:2], rtol=1e-8)


def test_bad_outputs_and_losses_are_refused():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return {"p": self.a(x), "q": self.b(x)}

    class Tup(Two):
        def forward(self, x):
            return self.a(x), self.b(x)

    with pytest.raises(ConfigError, match=r"returns a dict with keys \['p', 'q'\] and no 'logits'"):
        ProbedModel(Two(), Loss.CROSS_ENTROPY, X, y, dtype=F64)
    with pytest.raises(ConfigError, match="the model returns a tuple; the built-in losses need a tensor"):
        ProbedModel(Tup(), Loss.CROSS_ENTROPY, X, y, dtype=F64)
    with pytest.raises(ConfigError, match=r"custom loss 'CrossEntropyLoss' must return one loss per sample, "
                                          r"shape \(n,\) \(e\.g\. reduction='none'\); got \(\) for 2 samples"):
        ProbedModel(nn.Linear(3, 2), parse_loss(nn.CrossEntropyLoss()), X, y, dtype=F64)
    with pytest.raises(ConfigError, match=r"custom loss 'boom' failed on the model's output: no"):
        def boom(o, t):
            raise ValueError("no")
        ProbedModel(nn.Linear(3, 2), parse_loss(boom), X, y, dtype=F64)


def test_batchnorm_frozen_statistics_option():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(24, 3, generator=g), torch.randint(0, 2, (24,), generator=g)
    net.train()
    net(X)  # running statistics move away from their init
    net, X = net.double(), X.double()
    s = dict(top_k=2, n_samples=10, batch_size=5, n_random=1, hutchinson_probes=2, tr_hc_samples=3,
             sources=("sgd",))
    with pytest.raises(ConfigError, match=r"model layer '1' \(BatchNorm1d\) depends on the batch; .*set "
                                          r"`frozen_batchnorm`"):
        probe(net, "cross_entropy", X, y, step=0, generator=torch.Generator(), settings=ProbeSettings(**s))
    res = probe(net, "cross_entropy", X, y, step=0, generator=torch.Generator().manual_seed(0),
                settings=ProbeSettings(frozen_batchnorm=True, **s))
    # oracle: the same network with BatchNorm replaced by its frozen affine map
    bn = net[1]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    aff = nn.Linear(4, 4).double()
    with torch.no_grad():
        aff.weight.copy_(torch.diag(scale))
        aff.bias.copy_(bn.bias - bn.running_mean * scale)
    aff.requires_grad_(False)
    bn_params = ProbedModel(net, Loss.CROSS_ENTROPY, X, y, dtype=F64, frozen_batchnorm=True)
    assert "1.weight" in bn_params.names  # BN's affine parameters are probed parameters too
    assert np.isfinite(res.eigen["eigenvalue"]).all()
    nobn = nn.Sequential(net[0], aff, nn.Tanh(), net[3])
    H = dense_hessian(nobn, "cross_entropy", X, y)  # Hessian w.r.t. layers 0 and 3 only
    op = HessianOperator(bn_params)
    idx = np.concatenate([np.arange(0, 16), np.arange(24, 34)])  # 0.weight/bias, 3.weight/bias
    E = torch.zeros(bn_params.n_params, len(idx), dtype=F64)
    E[idx, np.arange(len(idx))] = 1.0
    Hsub = op.matmat(E).numpy()[idx]
    np.testing.assert_allclose(0.5 * (Hsub + Hsub.T), H, atol=1e-10)
    with pytest.raises(ConfigError, match=r"it has no running statistics to freeze"):
        ProbedModel(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False)),
                    Loss.MSE, X, torch.zeros(24, 4), dtype=F64, frozen_batchnorm=True)


def test_top_eigenpairs_with_chunked_attention_hvps():
    torch.manual_seed(3)
    X, y = _tokens(17, seed=1)
    pm = ProbedModel(_Attn(), Loss.CROSS_ENTROPY, X, y, dtype=F64)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        a = top_eigenpairs(HessianOperator(pm), k=2, generator=torch.Generator().manual_seed(0))
        b = top_eigenpairs(HessianOperator(pm, chunk=4), k=2, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(b.eigenvalues, a.eigenvalues, rtol=1e-10)


def test_attention_model_under_a_budget_that_forces_forward_mode_per_sample_jvps():
    # fewer than 8 per-sample gradients fit: the SGD pass uses forward-mode JVPs, which cannot
    # differentiate MultiheadAttention's fused inference kernel; the probe keeps it off (and restores it)
    torch.manual_seed(0)
    model = _Attn(drop=0.0)
    X, y = _tokens(16)
    kw = dict(top_k=1, n_samples=6, batch_size=4, n_random=1, hutchinson_probes=2, tr_hc_samples=0, sources=("sgd",))
    tight = smallest_budget_mb(model, "cross_entropy", X, y, ProbeSettings(**kw))
    small = probe(model, "cross_entropy", X, y, step=0, generator=torch.Generator().manual_seed(0),
                  settings=ProbeSettings(memory_budget_mb=tight, **kw))
    big = probe(model, "cross_entropy", X, y, step=0, generator=torch.Generator().manual_seed(0),
                settings=ProbeSettings(**kw))
    assert small.info["plan"]["hessian_chunk"] < 16
    np.testing.assert_allclose(small.noise["value"], big.noise["value"], rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(small.exact_variance["variance"], big.exact_variance["variance"], rtol=1e-9)
    assert torch.backends.mha.get_fastpath_enabled()


def test_attention_sites_batched_and_cut_site_paths_equal_the_loop():
    """Masks in every layout (attention weights, samples merged with heads, samples in dim 1):
    batched draws and the cut-site shortcut equal one backward pass per draw."""
    from varprinciple.collect.noise import dropout_cut_tangents, dropout_gradients, dropout_projections
    from varprinciple.collect.noise import random_directions

    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.att, self.head = nn.Embedding(7, 4), nn.MultiheadAttention(4, 2, dropout=0.3), nn.Linear(4, 3)
            self.drop = nn.Dropout(0.2)

        def forward(self, x):
            h = self.emb(x).transpose(0, 1)
            return self.head(self.drop(self.att(h, h, h)[0]).mean(0))

    X, y = _tokens(n=12)
    for model in (_Attn(attn_dropout=0.2), Direct()):
        pm = ProbedModel(model, Loss.CROSS_ENTROPY, X, y, dtype=F64)
        sites = DropoutSites(pm)
        V = random_directions(pm.n_params, 3, generator=torch.Generator().manual_seed(0))
        masks = sites.draw_masks(4, generator=torch.Generator().manual_seed(1))
        loop = dropout_gradients(sites, masks, method="loop")
        np.testing.assert_allclose(dropout_gradients(sites, masks, method="vmap").numpy(), loop.numpy(), atol=1e-13)
        h0, T = dropout_cut_tangents(sites, V)
        fast = dropout_projections(sites, masks, V, h0=h0, T=T)
        np.testing.assert_allclose(fast.numpy(), (loop @ V).numpy(), atol=1e-12)
        assert not torch.allclose(loop[0], loop[1])  # the masks matter
        sites.remove()
