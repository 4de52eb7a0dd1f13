"""Issue 17: statistics that survive heavy tails, small K and unequal groups.

The draws come from the independent generator (tests/_realistic_generator.py: TailDesign,
tail_draws, spiky_isotropic_draws; no varprinciple.simulate). Bands: the project's 0.92-0.985
for coverage and <= 0.075 for type-I, checked with enough replicates that a calibrated
statistic fails with probability < 1 %; the larger Monte Carlo is
scripts/calib_heavy_tails.py (docs/statistics.md §5.3).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from _realistic_generator import TailDesign, spiky_isotropic_draws, tail_draws, write_run
from varprinciple.stats import analyze
from varprinciple.stats.alignment import isotropy_jackknife_p, isotropy_tail_reason
from varprinciple.stats.inference import robust_location
from varprinciple.stats.per_probe import (heavy_tail_sources, rare_draw_sources, refuse_heavy_tail_isotropy,
                                          refuse_rare_draw_probes)
from varprinciple.stats.relation import MIN_DRAWS_RARE, draw_share, relation_fit


def test_tail_generator_has_exact_variances_and_the_event_share():
    d = TailDesign(K=4000, b=1.0)
    lam, X, nev = tail_draws(d, 2, np.random.default_rng(0))
    law = lam[: d.n_law]
    assert lam.size == 60 and (lam[d.n_law:d.n_law + 2] == 1e-7).all() and (lam[-3:] < 0).all()
    assert np.ptp(np.log10(law)) == pytest.approx(3.5)
    v = X[:, :, : d.n_law].var(axis=1).mean(axis=0)
    # top direction Gaussian (share 0): tight; bottom ones heavy (kurtosis ~50): loose
    assert v[0] == pytest.approx(law[0], rel=0.06)
    assert np.median(v / law) == pytest.approx(1.0, rel=0.2)
    assert nev.mean() == pytest.approx(0.05 * 4000, rel=0.15)
    kurt = stats.kurtosis(X[0][:, [0, d.n_law - 1]], axis=0, fisher=False)
    assert kurt[0] < 3.5 and kurt[1] > 20


def test_draw_share_p_is_the_beta_tail_bound():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 3))
    share, p = draw_share(x)
    e = x - x.mean(axis=0)
    sh = (e * e / (e * e).sum(axis=0)).max()
    assert share == pytest.approx(sh)
    assert p == pytest.approx(min(1.0, 36 * stats.beta.sf(sh * 12 / 11, 0.5, 5.0)))
    # the bound holds for Gaussian draws: the max share's p is rarely small
    ps = np.array([draw_share(rng.normal(size=(20, 30)))[1] for _ in range(400)])
    assert np.mean(ps < 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 400)
    assert np.isnan(draw_share(x[:3])[0])


def _probe_frame(d: TailDesign, n: int, rng, group_size: int) -> pd.DataFrame:
    lam, X, _ = tail_draws(d, n, rng)
    rows = []
    for r in range(n):
        f = relation_fit(X[r], lam)
        rows.append({"group": f"g{r // group_size}", "source": "sgd", "n_samples": d.K, "ci_low": f.ci_low,
                     "ci_high": f.ci_high, "p_value": f.p_value, "curvature_p": 0.5, "note": None,
                     "max_draw_share": f.max_draw_share, "draw_share_p": f.draw_share_p})
    return pd.DataFrame(rows)


def test_rare_draw_sources_are_refused_below_min_k_and_gaussian_ones_are_not():
    rng = np.random.default_rng(2)
    heavy, flagged = refuse_rare_draw_probes(_probe_frame(TailDesign(K=20), 80, rng, 10))
    # a probe is flagged w.p. ~0.6; a source of 10 needs 3 flagged: P = 0.988 per source
    assert len(flagged) >= 7
    ref = heavy[heavy["rare_draw_source"]]
    assert ref["ci_low"].isna().all() and ref["p_value"].isna().all() and ref["curvature_p"].isna().all()
    assert ref["note"].str.contains("rare large draws dominate").all()
    assert ref["note"].str.contains(f"< {MIN_DRAWS_RARE} draws").all()
    # Gaussian draws: a probe is flagged with probability <= 0.001, a source of 5 probes almost
    # never (2 flagged needed)
    gauss, flagged = refuse_rare_draw_probes(_probe_frame(TailDesign(K=20, p_event=0.0), 40, rng, 5))
    assert not flagged and gauss["ci_low"].notna().all()
    # one source probed with K = 20 and K = 100 draws: flagged; the K = 100 probes keep their interval
    mixed = pd.concat([_probe_frame(TailDesign(K=20), 10, rng, 10),
                       _probe_frame(TailDesign(K=MIN_DRAWS_RARE), 5, rng, 5)], ignore_index=True)
    out, flagged = refuse_rare_draw_probes(mixed)
    big = out[out["n_samples"] == MIN_DRAWS_RARE]
    assert flagged and big["rare_draw_source"].all() and big["ci_low"].notna().all()
    assert big["note"].str.contains("intervals hold from").all()
    assert rare_draw_sources(pd.DataFrame()) == {}


@pytest.mark.slow
def test_k100_under_rare_draws_intervals_are_given_and_hold():
    rng = np.random.default_rng(3)
    d = TailDesign(K=100, b=1.0)
    lam, X, _ = tail_draws(d, 300, rng)
    fits = [relation_fit(X[r], lam) for r in range(300)]
    cover = np.mean([f.ci_low <= 1.0 <= f.ci_high for f in fits])
    assert 0.92 <= cover <= 0.985, cover


def test_analyze_refuses_per_run_group_and_curvature_alignment_rows(tmp_path):
    rng = np.random.default_rng(4)
    d = TailDesign(K=20, b=0.0)
    lam, X, nev = tail_draws(d, 6, rng)
    root = tmp_path / "logs"
    for i in range(6):
        write_run(root / f"r{i}", f"r{i}", "sgd", lam, X[i], seed=i)
    res = analyze(root, resamples=99)
    rel = res.relations
    assert rel["rare_draw_source"].all() and rel["ci_low"].isna().all() and rel["curvature_p"].isna().all()
    assert rel["slope"].notna().all() and rel["note"].str.contains("rare large draws").all()
    g = res.groups.iloc[0]
    assert np.isnan(g["ci_low"]) and np.isnan(g["p_value"]) and np.isnan(g["signrank_p"])
    assert "rare large draws" in g["note"] and np.isfinite(g["slope"])
    ca = res.flatness.query("quantity == 'curvature_alignment'").iloc[0]
    assert np.isnan(ca["p_value"]) and "Spearman" in ca["note"]
    js = res.to_json_dict()
    assert js["relations"][0]["note"] and js["groups"][0]["note"]


def test_robust_location_against_brute_force():
    rng = np.random.default_rng(5)
    for n in (6, 9, 14):
        v = rng.normal(0.2, 1.0, n)
        r = robust_location(v, confidence=0.9)
        # order-statistic interval: the widest-to-narrowest search by enumeration
        best = None
        for j in range(1, n // 2 + 1):
            cov = 1 - 2 * stats.binom.cdf(j - 1, n, 0.5)
            if cov >= 0.9:
                best = (j, cov)
        s = np.sort(v)
        assert (r.median_ci_low, r.median_ci_high) == (s[best[0] - 1], s[n - best[0]])
        assert r.median_coverage == pytest.approx(best[1])
        assert r.signrank_p == pytest.approx(stats.wilcoxon(v, alternative="greater").pvalue)
        assert r.sign_p == pytest.approx(stats.binomtest(int((v > 0).sum()), n, alternative="greater").pvalue)
    r = robust_location([0.3, 0.31, 0.29, 0.33, 2.0])
    assert np.isnan(r.median_ci_low) and r.outliers == (4,) and r.signrank_p == pytest.approx(1 / 32)


def test_one_outlier_network_does_not_hide_b_above_zero():
    """The issue's design: five networks, one at b = 2, the others b ~ 0.3: "b > 0" must be
    declared in >= 80 % of groups by the t test or the signed-rank test beside it."""
    from varprinciple.stats.inference import group_test
    rng = np.random.default_rng(6)
    declared = []
    for _ in range(300):
        v = np.r_[rng.normal(0.3, 0.1, 4), 2.0]
        declared.append(group_test(v).p_value < 0.05 or robust_location(v).signrank_p < 0.05)
    assert np.mean(declared) >= 0.8


def test_group_rows_carry_the_robust_fields_and_the_outlier_note(tmp_path):
    from _realistic_generator import Design, draws
    rng = np.random.default_rng(7)
    root = tmp_path / "logs"
    for i, b in enumerate((0.3, 0.32, 0.28, 0.31, 2.0)):
        lam, X, _, _ = draws(Design(K=200, k=12, b=b), 1, rng)
        write_run(root / f"r{i}", f"r{i}", "sgd", lam, X[0], seed=i)
    lam, X, _, _ = draws(Design(K=200, k=4, b=0.3), 1, rng)  # few directions beside 12
    write_run(root / "r5", "r5", "sgd", lam, X[0], seed=5)
    g = analyze(root, resamples=0).groups.iloc[0]
    assert g["signrank_p"] == pytest.approx(1 / 64) and g["sign_p"] == pytest.approx(1 / 64)
    assert g["median_ci_low"] <= g["median"] <= g["median_ci_high"]
    assert g["outlier_networks"] == ["r4"]
    assert "outlying network(s) r4" in g["note"] and "pools runs with 4 to 12 included directions" in g["note"]


@pytest.mark.parametrize("where", ["top", "random", "bottom"])
def test_isotropy_p_refused_or_holds_for_an_isotropic_covariance_with_spiky_directions(where):
    # isotropy_p as a probe reports it is null where isotropy_tail_reason refuses it, else
    # max(rotation p, jackknife p) >= the jackknife p: its false rejections over all probes
    # are at most those of the jackknife p among the probes it does not refuse
    rng = np.random.default_rng(8)
    lam, X = spiky_isotropic_draws(200, 100, rng, where=where)
    refused = np.array([isotropy_tail_reason(X[r]) is not None for r in range(200)])
    jk = np.array([isotropy_jackknife_p(X[r], lam) for r in range(200)])
    assert refused.mean() >= 0.8, refused.mean()  # 0.90-0.94 in scripts/calib_heavy_tails.py
    assert np.mean(~refused & (jk < 0.05)) <= 0.075


def test_isotropy_tail_reason_spares_gaussian_draws():
    rng = np.random.default_rng(11)
    refused = [isotropy_tail_reason(rng.standard_normal((100, 20))) is not None for _ in range(300)]
    assert np.mean(refused) <= 0.01


def test_isotropy_p_refused_through_analyze_per_probe_and_per_source(tmp_path):
    rng = np.random.default_rng(12)
    root = tmp_path / "logs"
    lam, X = spiky_isotropic_draws(1, 100, rng, where="bottom")
    x = X[0].copy()
    x[7, -1] = 40.0  # one dominating draw in the flattest direction
    write_run(root / "spiky", "spiky", "sgd", lam, x, seed=0)
    write_run(root / "gauss", "gauss", "gd", lam, rng.standard_normal((100, 20)), seed=1)
    rel = analyze(root, resamples=99).relations.set_index("run_id")
    assert np.isnan(rel.loc["spiky", "isotropy_p"]) and np.isnan(rel.loc["spiky", "alignment_p"])
    assert np.isnan(rel.loc["spiky", "isotropy_p_rotation"]) and np.isfinite(rel.loc["spiky", "alignment_k"])
    assert rel.loc["spiky", "note"].startswith("no isotropy_p: one draw carries")
    assert np.isfinite(rel.loc["gauss", "isotropy_p"]) and pd.isna(rel.loc["gauss", "note"])
    # the source rule: 2 of 5 probes with a dominating draw refuse the other three too
    frame = pd.DataFrame({"group": "g", "source": ["a"] * 5 + ["b"] * 5, "isotropy_p": 0.01, "alignment_p": 0.01,
                          "isotropy_p_rotation": 0.01, "draw_share_p": [1e-5, 1e-4, 0.5, 0.3, 0.9] + [0.5] * 5,
                          "note": None})
    out = refuse_heavy_tail_isotropy(frame)
    assert out["isotropy_p"].iloc[:5].isna().all() and (out["isotropy_p"].iloc[5:] == 0.01).all()
    assert "2 of 5 probes of g:a" in out["note"].iloc[2] and pd.isna(out["note"].iloc[7])
    assert heavy_tail_sources(frame) == {("g", "a"): (2, 5)}


def test_isotropy_jackknife_p_level_and_power_on_gaussian_draws():
    rng = np.random.default_rng(9)
    lam = np.geomspace(1, 1e-2, 20)
    X = rng.standard_normal((300, 20, 20))
    p0 = np.array([isotropy_jackknife_p(X[r], lam) for r in range(300)])
    p1 = np.array([isotropy_jackknife_p(X[r] * lam ** 0.25, lam) for r in range(300)])
    assert np.mean(p0 < 0.05) <= 0.075 and np.mean(p1 < 0.05) >= 0.9
    assert np.isnan(isotropy_jackknife_p(X[0][:3], lam))


def test_slope_comparisons_of_refused_groups_carry_a_note(tmp_path):
    rng = np.random.default_rng(10)
    root = tmp_path / "logs"
    lam, X, _ = tail_draws(TailDesign(K=20), 6, rng)
    for i in range(6):
        write_run(root / f"a{i}", f"a{i}", "sgd", lam, X[i], seed=i)
    lam, X, _ = tail_draws(TailDesign(K=20, p_event=0.0), 3, rng)
    for i in range(3):
        write_run(root / f"b{i}", f"b{i}", "gd", lam, X[i], seed=10 + i)
    c = analyze(root, resamples=0).comparisons
    row = c.query("quantity == 'slope'").iloc[0]
    assert "rare-draw source" in row["note"] and np.isfinite(row["ci_low"])


def test_curvature_alignment_refused_only_where_flat_directions_have_heavier_tails():
    from varprinciple.stats.group_level import curvature_alignment_rows
    base = pd.DataFrame({"run_id": [f"r{i}" for i in range(5)], "group": "g", "source": "sgd", "block": None,
                         "step": 100, "spearman_r": [0.3, 0.5, 0.4, 0.6, 0.2], "rare_draw_source": False})
    flat_heavy = curvature_alignment_rows(base.assign(kurtosis_spearman_r=[-0.5, -0.6, -0.4, -0.7, -0.5]),
                                          {"g": {}}, 0.95)[0]
    assert np.isnan(flat_heavy["p_value"]) and "heavier in the flat directions" in flat_heavy["note"]
    sharp_heavy = curvature_alignment_rows(base.assign(kurtosis_spearman_r=[0.5, 0.6, 0.4, 0.7, 0.5]),
                                           {"g": {}}, 0.95)[0]
    assert sharp_heavy["p_value"] < 0.05 and "conservative" in sharp_heavy["note"]
    none = curvature_alignment_rows(base.assign(kurtosis_spearman_r=[0.1, -0.2, 0.05, -0.1, 0.1]),
                                    {"g": {}}, 0.95)[0]
    assert none["p_value"] < 0.05 and none["note"] is None


def test_robust_location_errors():
    from varprinciple.errors import InputError
    with pytest.raises(InputError, match="`values` needs at least 1 value"):
        robust_location([])
    with pytest.raises(InputError, match=r"`confidence` must be in \(0, 1\); got 2"):
        robust_location([1.0, 2.0], confidence=2)
