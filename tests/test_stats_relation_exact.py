"""b from exact (two-mask) dropout variances: the group jackknife, its calibration on the
independent generator of scripts/calib_dropout_exact.py, the torch path end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from varprinciple.errors import ConfigError, InputError
from varprinciple.stats.relation_exact import MIN_GROUPS, exact_jackknife, exact_relation_fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from calib_dropout_exact import draw_groups  # noqa: E402


def test_jackknife_of_equal_groups_has_no_spread():
    G = np.ones((10, 3))
    y, infl = exact_jackknife(G)
    np.testing.assert_allclose(y, np.log(10.0))
    np.testing.assert_allclose(infl, 0.0, atol=1e-12)


def test_common_scale_changes_only_the_intercept():
    rng = np.random.default_rng(0)
    G, lam, _, _ = draw_groups(rng, n=200, k=8, b=1.0, tau=0.3)
    f1, f2 = exact_relation_fit(G, lam).fit, exact_relation_fit(G * 7.0, lam).fit
    assert f1.slope == pytest.approx(f2.slope, rel=1e-10)
    assert f1.ci_low == pytest.approx(f2.ci_low, rel=1e-8)
    assert f2.intercept - f1.intercept == pytest.approx(np.log(7.0), rel=1e-8)


def test_few_groups_refused_with_a_reason():
    rng = np.random.default_rng(1)
    G, lam, _, _ = draw_groups(rng, n=MIN_GROUPS - 1, k=6, b=1.0, tau=0.0)
    ef = exact_relation_fit(G, lam)
    assert np.isfinite(ef.fit.slope) and np.isnan(ef.fit.ci_low) and np.isnan(ef.fit.p_value)
    assert f"{MIN_GROUPS - 1} groups of samples < {MIN_GROUPS}" in ef.note


def test_bad_groups_raise():
    with pytest.raises(InputError, match="`groups` must be finite and >= 0"):
        exact_relation_fit(-np.ones((10, 4)), [4.0, 3.0, 2.0, 1.0])
    with pytest.raises(InputError, match="`eigenvalues` must have one entry per column"):
        exact_relation_fit(np.ones((10, 4)), [4.0, 3.0])


@pytest.mark.slow
@pytest.mark.parametrize("n, b", [(24, 0.0), (100, 1.0)])
def test_coverage_and_type1_on_the_independent_generator(n, b):
    """Heavy tails (t3, rare 10x samples), two mask sites, AR(0.7) loadings, k = 10, scatter 0.3.
    docs/statistics.md, "b from exact variances" has the 1,000-replicate table; 300 here: coverage within 3 MC SEs
    of 0.95 (0.013), type-I of the one-sided p below 0.05 + 3 MC SEs."""
    rng = np.random.default_rng(20261206 + n)
    R = 300
    cover = rej = 0
    for _ in range(R):
        G, lam, _, _ = draw_groups(rng, n=n, k=10, b=b, tau=0.3)
        f = exact_relation_fit(G, lam).fit
        cover += f.ci_low <= b <= f.ci_high
        rej += f.p_value < 0.05
    assert cover / R >= 0.95 - 3 * np.sqrt(0.95 * 0.05 / R)
    if b == 0.0:
        assert rej / R <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / R)


def test_dropout_samples_zero_needs_exact_variance():
    pytest.importorskip("torch")
    from varprinciple.collect.probe_settings import ProbeSettings
    assert ProbeSettings(dropout_samples=0).n_dropout == 0
    with pytest.raises(ConfigError, match="`dropout_samples` = 0 .* needs `exact_variance` = true"):
        ProbeSettings(dropout_samples=0, exact_variance=False)
    with pytest.raises(ConfigError, match="`dropout_samples` must be 0 or an integer >= 2"):
        ProbeSettings(dropout_samples=1)
    from varprinciple.collect.config import validate_config
    assert validate_config({"probe": {"dropout_samples": 0}}) is not None
    with pytest.raises(ConfigError, match=r"\[probe\] dropout_samples: = 0 .* needs `exact_variance` = true"):
        validate_config({"probe": {"dropout_samples": 0, "exact_variance": False}})
    with pytest.raises(ConfigError, match=r"\[probe\] dropout_samples: must be 0 or an integer >= 2"):
        validate_config({"probe": {"dropout_samples": 1}})
    with pytest.raises(ConfigError, match=r"dropout_samples` = 0 .* needs `tr_hc_samples` >= 8.*got 0"):
        ProbeSettings(dropout_samples=0, tr_hc_samples=0)


@pytest.mark.torch
@pytest.mark.usefixtures("one_torch_thread")
def test_group_jackknife_matches_a_monte_carlo_over_masks():
    """On a small torch model, the spread of log vhat over independent two-mask estimates (own
    Monte Carlo over masks) agrees with the group jackknife's SE, and the groups sum to vhat."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from varprinciple.collect._model import ProbedModel
    from varprinciple.collect.losses import Loss
    from varprinciple.collect.noise import DropoutSites, random_directions
    from varprinciple.collect.noise.dropout_exact import dropout_pair_moments
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 8), nn.Tanh(), nn.Dropout(0.5),
                        nn.Linear(8, 2)).double()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(200, 3, generator=g, dtype=torch.float64)
    y = torch.randn(200, 2, generator=g, dtype=torch.float64)
    pm = ProbedModel(net, Loss.MSE, X, y, dtype=torch.float64)
    sites = DropoutSites(pm)
    V = random_directions(pm.n_params, 4, generator=g)
    logs, ses = [], []
    for r in range(150):
        m = dropout_pair_moments(sites, V, generator=torch.Generator().manual_seed(100 + r), n_groups=32)
        np.testing.assert_allclose(m.group_variance.sum(0), m.variance, rtol=1e-12)
        _, infl = exact_jackknife(m.group_variance)
        logs.append(np.log(m.variance))
        ses.append(np.sqrt((infl * infl).sum(0)))
    sites.remove()
    ratio = np.std(logs, axis=0, ddof=1) / np.sqrt(np.mean(np.square(ses), axis=0))
    # measured 0.79-0.90 (the jackknife variance is mildly conservative); the ratio's own MC
    # error is ~0.06 at 150 replicates
    assert np.all((ratio > 0.7) & (ratio < 1.3)), ratio


@pytest.mark.torch
@pytest.mark.usefixtures("one_torch_thread")
def test_exact_only_probe_end_to_end(tmp_path):
    """[probe] dropout_samples = 0: no dropout draws are logged, the analysis fits b from the exact
    variances (variance_input "exact") with an interval, the draws' sources stay "draws"."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from varprinciple.collect.api import probe_model
    from varprinciple.collect.probe_settings import ProbeSettings
    from varprinciple.stats import analyze
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Dropout(0.3), nn.Linear(12, 3)).double()
    X = torch.randn(120, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (120,))
    s = ProbeSettings(top_k=8, n_samples=32, tr_hc_samples=32, sources=("sgd", "dropout"), batch_size=16,
                      dropout_samples=0, n_random=2)
    run = probe_model(net, "cross_entropy", X, y, out=tmp_path / "r", run_id="r", method="dropout", settings=s,
                      seed=1)
    import pandas as pd
    assert "dropout" not in set(pd.read_parquet(run / "noise.parquet")["source"])
    rel = analyze(tmp_path, resamples=0).relations.set_index("source")
    assert rel.loc["dropout", "variance_input"] == "exact" and rel.loc["dropout", "exact_groups"] == 32
    assert rel.loc["dropout", "n_samples"] == 0
    assert np.isfinite(rel.loc["dropout", "ci_low"]) and "no sampled draws" in rel.loc["dropout", "note"]
    assert rel.loc["sgd", "variance_input"] == "draws"


def test_rare_draw_refusal_spares_exact_rows():
    """A rare-draw source refuses its draws' intervals below K = 100, not those of its exact fits."""
    import pandas as pd
    from varprinciple.stats.per_probe import refuse_rare_draw_probes
    rows = [{"group": "g", "source": "dropout", "n_samples": 20, "ci_low": 0.1, "ci_high": 0.9, "p_value": 0.01,
             "curvature_p": 0.02, "max_draw_share": 0.95, "draw_share_p": 1e-9, "note": None,
             "variance_input": vi} for vi in ("draws", "exact")]
    rel, flagged = refuse_rare_draw_probes(pd.DataFrame(rows))
    assert ("g", "dropout") in flagged
    assert np.isnan(rel.loc[0, "ci_low"]) and "rare large draws" in rel.loc[0, "note"]
    assert rel.loc[1, "ci_low"] == 0.1 and pd.isna(rel.loc[1, "note"])


def test_a_non_finite_or_negative_group_entry_is_refused_by_the_schema_naming_the_column():
    """group_variance (list<float64>): every element finite and >= 0, checked where the log is
    read (one line naming the column), not deep inside the analysis."""
    import pyarrow as pa

    from varprinciple import schema
    base = {"step": [0, 0], "source": ["dropout"] * 2, "basis": ["hessian"] * 2, "direction": [0, 1],
            "variance": [1.0, 2.0]}
    ok, problems = schema.normalize_table(pa.table({**base, "group_variance": [[0.5, 0.5], [1.0, 1.0]]}),
                                          schema.EXACT_VARIANCE)
    assert ok is not None and not problems
    for bad, what in (([0.5, float("nan")], "NaN/Inf list element"), ([1.5, -0.5], "negative list elements")):
        _, problems = schema.normalize_table(pa.table({**base, "group_variance": [[0.5, 0.5], bad]}),
                                             schema.EXACT_VARIANCE)
        assert any(col == "column 'group_variance'" and what in msg for col, msg in problems), problems
