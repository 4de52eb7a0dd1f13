"""gamma of C_ii ~ H_ii^gamma (varprinciple.stats.gamma): Theil-Sen against scipy, exclusions and
refusals, the analysis rows end to end from collected diagonals, the claims reading them, and the
group interval's calibration on the independent generator tests/_foreign_gamma.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from _foreign_gamma import networks
from varprinciple.results import GAMMA_FIELDS
from varprinciple.stats.gamma import MIN_GAMMA_NETWORKS, gamma_fit, gamma_group, theil_sen


@pytest.mark.parametrize("seed", [0, 1])
def test_theil_sen_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(0, 2, 300), 1)  # ties in x: pairs with equal x are left out, as scipy does
    y = 1.3 * x + rng.standard_t(2, 300)
    ref = sps.theilslopes(y, x, method="separate")
    s, b = theil_sen(x, y)
    np.testing.assert_allclose([s, b], [ref.slope, ref.intercept], rtol=1e-12, atol=1e-12)


def test_gamma_fit_excludes_nonpositive_h_and_zero_c_and_is_scale_free():
    rng = np.random.default_rng(2)
    h = np.exp(rng.normal(0, 2, 400))
    c = h ** 1.7 * np.exp(0.2 * rng.normal(size=400))
    hh = np.r_[h, -h[:30], np.zeros(10), h[:5]]
    cc = np.r_[c, c[:30], np.zeros(10), np.zeros(5)]
    f = gamma_fit(hh, cc)
    assert (f.n_params, f.n_used, f.n_h_nonpositive, f.n_c_zero) == (445, 400, 40, 5)
    assert f.frac_h_nonpositive == pytest.approx(40 / 445)
    assert f.gamma == pytest.approx(1.7, abs=0.03) and f.gamma_ols == pytest.approx(np.polyfit(
        np.log(h), np.log(c), 1)[0], rel=1e-12)
    g = gamma_fit(hh, 7.5 * cc)  # c x k moves only the intercept
    assert g.gamma == pytest.approx(f.gamma, rel=1e-12) and g.intercept == pytest.approx(f.intercept + np.log(7.5))
    few = gamma_fit(h[:9], c[:9])
    assert np.isnan(few.gamma) and few.note.startswith("no fit: 9 parameters")


def test_group_interval_refused_below_the_calibrated_number_of_networks():
    g, note = gamma_group([1.2, 1.3], confidence=0.95)
    assert g.ci_low is None and g.p_value is None and note.startswith("no interval: 2 networks < 3")
    g, note = gamma_group([1.2, 1.3, 1.5], confidence=0.95)
    ref = sps.ttest_1samp([1.2, 1.3, 1.5], 1.0, alternative="greater")
    assert note is None and g.p_value == pytest.approx(ref.pvalue)
    assert gamma_group([np.nan], confidence=0.95) == (None, "no network with a gamma fit")


@pytest.mark.slow
def test_group_interval_coverage_and_type1_on_the_independent_generator():
    """3 networks (the smallest design allowed), 200 datasets each: coverage of the 95% t interval
    for the group mean (MC SE ~0.015; scripts/calib_gamma.py runs the full study) and type-I of 'gamma > 1' at alpha 0.05 under mean 1."""
    rng = np.random.default_rng(11)
    reps, cover, reject = 200, 0, 0
    for _ in range(reps):
        g, _ = gamma_group([gamma_fit(h, c).gamma for _, h, c in networks(MIN_GAMMA_NETWORKS, 1.4, rng=rng,
                                                                            rows=10, cols=20)], confidence=0.95)
        cover += g.ci_low <= 1.4 <= g.ci_high
        g, _ = gamma_group([gamma_fit(h, c).gamma for _, h, c in networks(MIN_GAMMA_NETWORKS, 1.0, rng=rng,
                                                                            rows=10, cols=20)], confidence=0.95)
        reject += g.p_value < 0.05
    se = np.sqrt(0.95 * 0.05 / reps)
    assert abs(cover / reps - 0.95) < 3.5 * se
    assert reject / reps < 0.05 + 3.5 * se


def test_analysis_gives_gamma_rows_per_layer_and_claims_read_them(tmp_path):
    pytest.importorskip("torch")
    from _tiny_config import tiny_toml
    from varprinciple.collect.config import load_config
    from varprinciple.collect.run import collect
    from varprinciple.stats.analysis import analyze
    from varprinciple.study.claims import ClaimSpec, claims_table
    cfg = tmp_path / "c.toml"
    cfg.write_text(tiny_toml(methods='"sgd"', seeds="[0, 1, 2]", steps=20, log_every=10,
                             probe_extra='sources = ["sgd"]\ndiag_params = 40'))
    collect(load_config(cfg), tmp_path / "logs")
    from varprinciple import io, schema
    run = io.read_logset(tmp_path / "logs").runs[0]
    d = run.optional_table(schema.DIAGONAL.file)  # digits 64-4-10: fc0 (260 parameters) and out (50)
    assert sorted(d["block"].unique()) == ["fc0", "out"] and len(d) == 80 and (d["c_ii"] >= 0).all()
    assert run.meta["config"]["probe"]["diag_params"] == 40 and "diagonal" in run.meta["probes"][0]["timings"]
    a = analyze(tmp_path / "logs", resamples=0)
    f = a.flatness[a.flatness["quantity"] == "gamma"]
    assert sorted(f["block"]) == ["fc0", "out"] and (f["n_runs"] == 3).all() and (f["null"] == 1.0).all()
    assert f["ci_low"].notna().all() and (f["source"] == "sgd").all()
    runs = a.extra["gamma"]
    assert len(runs) == 6 and all(tuple(r) == GAMMA_FIELDS for r in runs)
    assert "γ per layer" in a.summary()
    from varprinciple.report._input import ReportData
    from varprinciple.report.format import to_markdown
    from varprinciple.report.tables import gamma_table
    md = to_markdown(gamma_table(ReportData(a.to_json_dict(), None, "mem")))
    assert "γ per run and layer" in md and sum(line.startswith("| sgd-") for line in md.splitlines()) == 6
    res = {"gamma_ce": a.to_json_dict()}
    spec = ClaimSpec("control_gamma_ce", "controls", "gamma > 1", "gamma", "flatness", "greater", null=1.0,
                     select={"quantity": "gamma", "source": "sgd", "block": "*"})
    rows = claims_table(res, [spec])
    assert sorted(r.unit.split("[")[1] for r in rows) == ["fc0]", "out]"]
    for r, (_, g) in zip(rows, f.sort_values("block").iterrows()):
        assert r.estimate == pytest.approx(g["estimate"]) and r.ci_low == pytest.approx(g["ci_low"])
