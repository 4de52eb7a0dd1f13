"""The dropout source on transformers as people train them, against an own Monte Carlo over
every train-mode dropout: ``model.train()`` forward/backward passes of the full batch with
PyTorch's own dropout, the gradient projected on the probe's top Hessian directions.

Checked per model (probe at default ``ProbeSettings()``): the sites and their kinds; the sampled
draws' variance and mean along each direction (z against the Monte Carlo, both with their Monte
Carlo SEs); the exact two-mask variance, averaged over independent replicates (it is unbiased:
its mean must match the Monte Carlo variance). Models: ``nn.TransformerEncoder`` (attention
dropout inside ``nn.MultiheadAttention``), a hand-written GPT (functional dropout and
``scaled_dot_product_attention(dropout_p)``, tied head), and tiny BERT (eager attention:
``F.dropout`` on the attention weights) and GPT-2 (sdpa attention) built from ``transformers``
configs (no download; skipped when ``transformers`` is not installed).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from varprinciple.collect._model import ProbedModel  # noqa: E402
from varprinciple.collect.losses import parse_loss  # noqa: E402
from varprinciple.collect.noise import DropoutSites, dropout_pair_moments  # noqa: E402
from varprinciple.collect.probe import ProbeSettings, probe  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]
F64 = torch.float64
N = 40  # > the default probe batch size 32
Z_MAX = 4.5  # 3 directions x 3 checks per model: a false alarm has probability < 1e-4


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 8)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.2, batch_first=True), 1,
                                         enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.enc(self.emb(x)).mean(1))


class _GPT(nn.Module):
    """One pre-LN block: embedding dropout, causal SDPA with dropout_p, residual dropout, tied head."""

    def __init__(self, vocab=11, emb=8, heads=2, length=6, p=0.2):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, emb), nn.Embedding(length, emb)
        self.ln1, self.ln2, self.lnf = nn.LayerNorm(emb), nn.LayerNorm(emb), nn.LayerNorm(emb)
        self.qkv, self.proj = nn.Linear(emb, 3 * emb), nn.Linear(emb, emb)
        self.fc, self.fc2 = nn.Linear(emb, 2 * emb), nn.Linear(2 * emb, emb)
        self.heads, self.p = heads, p

    def forward(self, x):
        B, T = x.shape
        h = F.dropout(self.wte(x) + self.wpe(torch.arange(T)), self.p, self.training)
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(self.ln1(h)).split(h.shape[-1], -1))
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True)
        h = h + F.dropout(self.proj(a.transpose(1, 2).reshape(B, T, -1)), self.p, self.training)
        h = h + F.dropout(self.fc2(F.gelu(self.fc(self.ln2(h)))), self.p, self.training)
        return self.lnf(h) @ self.wte.weight.T


def lm_loss(out, x):
    """Per-sequence mean next-token cross-entropy (a callable loss: one value per sample)."""
    logits = out.logits if hasattr(out, "logits") else out
    tok = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
    return tok.view(x.shape[0], -1).mean(1)


def _classify_loss(out, t):
    return F.cross_entropy(out.logits, t, reduction="none")


def _tokens(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (N, 6), generator=g)


def _hf():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


def _bert():
    tf = _hf()
    cfg = tf.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                        vocab_size=50, max_position_embeddings=16, num_labels=3, attn_implementation="eager")
    X = _tokens(50)
    return tf.BertForSequenceClassification(cfg), _classify_loss, X, X[:, 1] % 3


def _gpt2():
    tf = _hf()
    cfg = tf.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=16, attn_implementation="sdpa")
    X = _tokens(50)
    return tf.GPT2LMHeadModel(cfg), lm_loss, X, X


def _encoder():
    X = _tokens(7)
    return _Encoder(), "cross_entropy", X, X[:, 0] % 3


def _gpt():
    X = _tokens(11)
    return _GPT(), lm_loss, X, X


def _monte_carlo(model, loss, X, y, V, names, K):
    """K full-batch gradients in train mode (PyTorch's own dropout masks) and the eval-mode
    gradient, projected on V (float64 copy of the model)."""
    m = copy.deepcopy(model).to(F64)
    params = dict(m.named_parameters())
    P = [params[k] for k in names]
    fn = parse_loss(loss)

    def grad_of():
        out = m(X)
        val = fn.fn(out, y).mean() if hasattr(fn, "fn") else F.cross_entropy(out, y)
        return torch.cat([t.reshape(-1) for t in torch.autograd.grad(val, P)]) @ V

    m.eval()
    g0 = grad_of().numpy()
    m.train()
    return np.stack([grad_of().numpy() for _ in range(K)]), g0


def _var_se(x):
    d = (x - x.mean(0)) ** 2
    return x.var(0, ddof=1), np.sqrt(d.var(0, ddof=1) / len(x))


def _check(build, kinds, *, K_mc=1000, reps=60):
    torch.manual_seed(0)
    model, loss, X, y = build()
    res = probe(model, loss, X, y, settings=ProbeSettings(), step=0, generator=torch.Generator().manual_seed(5))
    assert [s["kind"] for s in res.info["dropout_sites"]] == kinds
    ev = res.eigen.sort_values("rank")
    V = torch.tensor(np.stack(ev["vector"].iloc[:3].to_list(), axis=1), dtype=F64)
    nz = res.noise[(res.noise.source == "dropout") & (res.noise.basis == "hessian") & (res.noise.direction < 3)]
    draws = nz.pivot(index="sample", columns="direction", values="value").to_numpy()
    pm = ProbedModel(model, parse_loss(loss), X, y, dtype=F64)
    M, g0 = _monte_carlo(model, loss, X, y, V, pm.names, K_mc)
    mv, mse = _var_se(M)
    dv, dse = _var_se(draws)
    z_var = (dv - mv) / np.hypot(dse, mse)
    z_mean = ((M.mean(0) - g0) - draws.mean(0)) / np.sqrt(mv / len(M) + dv / len(draws))
    sites = DropoutSites(pm)
    pv = np.array([dropout_pair_moments(sites, V, generator=torch.Generator().manual_seed(100 + r),
                                        n_groups=16).variance for r in range(reps)])
    z_pair = (pv.mean(0) - mv) / np.hypot(pv.std(0, ddof=1) / np.sqrt(reps), mse)
    sites.remove()
    assert np.all(np.abs(z_var) < Z_MAX), z_var
    assert np.all(np.abs(z_mean) < Z_MAX), z_mean
    assert np.all(np.abs(z_pair) < Z_MAX), z_pair
    # the exact-variance table carries the two-mask estimate's standard error
    ex = res.exact_variance
    d = ex[ex.source == "dropout"]
    assert len(d) == 30 and (d["se"] > 0).all() and ex[ex.source == "sgd"]["se"].isna().all()
    return res


def test_transformer_encoder_matches_monte_carlo():
    res = _check(_encoder, ["attention", "module", "module", "module"])
    assert res.info["dropout_sites"][0]["name"] == "enc.layers.0.self_attn"


def test_handwritten_gpt_with_sdpa_dropout_matches_monte_carlo():
    res = _check(_gpt, ["functional", "attention", "functional", "functional"])
    assert res.info["dropout_sites"][1]["call"] == "scaled_dot_product_attention"


@pytest.mark.slow
def test_tiny_bert_eager_attention_matches_monte_carlo():
    res = _check(_bert, ["module", "attention", "module", "module", "module"], K_mc=600, reps=40)
    att = res.info["dropout_sites"][1]
    assert att["name"] == "bert.encoder.layer.0.attention.self" and att["call"] == "F.dropout"


@pytest.mark.slow
def test_tiny_gpt2_sdpa_attention_matches_monte_carlo():
    res = _check(_gpt2, ["module", "attention", "module", "module"], K_mc=600, reps=40)
    assert res.info["dropout_sites"][1]["call"] == "scaled_dot_product_attention"
