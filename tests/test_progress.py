"""Progress of a probe: per stage its units of work (HVPs, per-sample passes, draws) with a live
count and the probe's ETA, as log lines (default) or tqdm bars (``progress=True``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from varprinciple.collect import progress as P  # noqa: E402
from varprinciple.collect.probe import ProbeSettings, probe  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("one_torch_thread")]


def _problem():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(60, 4, generator=g), torch.randint(0, 3, (60,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 3))
    s = ProbeSettings(top_k=3, n_samples=40, batch_size=8, n_random=2, hutchinson_probes=4, tr_hc_samples=4)
    return net, X, y, s


def test_log_lines_name_units_counts_and_eta(caplog, monkeypatch):
    monkeypatch.setattr(P, "LOG_EVERY", 0.0)  # every tick logs
    net, X, y, s = _problem()
    with caplog.at_level(logging.INFO, logger="varprinciple.collect.probe"):
        res = probe(net, "cross_entropy", X, y, settings=s, step=3, generator=torch.Generator().manual_seed(1))
    text = caplog.text
    stages = res.info["plan"]["stages"]
    # Tr(H) right after the Hessian; each source's Tr(HC) products right after its draws
    assert list(stages) == ["hessian", "flatness", "sgd", "dropout", "isotropic"]
    assert [p[1] for p in stages["dropout"]] == ["samples", "draws", "HVPs"]
    # each stage announced with its planned units and the probe's ETA, closed with what it did
    assert f"probe step 3: hessian: ~{stages['hessian'][0][0]} HVPs, probe ETA " in text
    n_hess = res.info["n_hvp_eigensolver"] + 3  # eigsh's products and the 3 residuals
    assert "probe step 3: hessian done in " in text and f"({n_hess} HVPs)" in text
    assert "probe step 3: flatness done in 0" in text and "(4 HVPs)" in text  # 4 Hutchinson probes
    assert "probe step 3: sgd done in " in text and "(60 samples, 4 HVPs)" in text
    assert "(60 samples, 40 draws, 4 HVPs)" in text and "(40 draws, 4 HVPs)" in text
    assert "probe step 3: dropout: 40/40 draws, probe ETA " in text  # a live count
    assert res.n_hvp == n_hess + 4 + 3 * 4  # Hutchinson + Tr(HC) of three sources


def test_long_probe_says_so_up_front_with_cheaper_settings(caplog, monkeypatch):
    """A probe planned beyond LONG_PROBE_SECONDS logs its plan per stage (units, seconds) and
    cheaper settings at WARNING before the Hessian starts; a short one does not."""
    net, X, y, s = _problem()
    with caplog.at_level(logging.WARNING, logger="varprinciple.collect.probe"):
        res = probe(net, "cross_entropy", X, y, settings=s, step=3, generator=torch.Generator().manual_seed(1))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    plan = res.info["plan"]
    assert plan["seconds_total"] == pytest.approx(sum(plan["seconds_estimate"].values()))
    msg = P.cost_message(3, plan, threshold=0.0)
    assert msg.startswith("probe step 3 will take about ")
    assert "hessian " in msg and " HVPs)" in msg and "sgd " in msg and "60 samples" in msg
    # the cheaper settings are priced from the same timings, each at most 80% of the total
    assert all(c["seconds"] <= 0.8 * plan["seconds_total"] for c in plan["cheaper"])
    for c in plan["cheaper"]:
        assert f"{c['settings']} (~" in msg
    monkeypatch.setattr(P, "LONG_PROBE_SECONDS", 0.0)  # every probe is "long"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="varprinciple.collect.probe"):
        res = probe(net, "cross_entropy", X, y, settings=s, step=3, generator=torch.Generator().manual_seed(1))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0] == P.cost_message(3, res.info["plan"])
    caplog.clear()  # the next probe of the same model and settings (a series): at INFO, not again
    with caplog.at_level(logging.INFO, logger="varprinciple.collect.probe"):
        probe(net, "cross_entropy", X, y, settings=s, step=4, generator=torch.Generator().manual_seed(1))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "probe step 4 will take about " in caplog.text


def test_bars_show_units_and_change_nothing(capsys):
    net, X, y, s = _problem()
    a = probe(net, "cross_entropy", X, y, settings=s, step=0, generator=torch.Generator().manual_seed(1))
    b = probe(net, "cross_entropy", X, y, settings=s, step=0, generator=torch.Generator().manual_seed(1),
              progress=True)
    err = capsys.readouterr().err
    for unit in ("HVPs", "samples", "draws", "probe ETA"):
        assert unit in err
    np.testing.assert_array_equal(a.noise["value"].to_numpy(), b.noise["value"].to_numpy())
    np.testing.assert_array_equal(a.eigen["eigenvalue"].to_numpy(), b.eigen["eigenvalue"].to_numpy())
