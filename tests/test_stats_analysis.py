"""analyze(): JSON output v1, the per-direction table, steps, groups, comparisons, flatness."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from numpy.testing import assert_allclose

from varprinciple.errors import DuplicateRunWarning, InputError, LogValidationError
from varprinciple.io import read_logset, write_run
from varprinciple.stats import (AnalysisResult, analyze, curvature_test, directions_path, exclusion_reasons,
                                relation_fit, variance_ratio)
from varprinciple.stats.analysis import DIRECTION_COLUMNS


def write_logset(root, *, methods=None, runs=3, sources=("sgd", "isotropic"), k=8, K=60, n_random=2,
                 steps=(0, 10), seed=0, flatness=False, blocks=None, extra_meta=None):
    """A small log set with known slopes (method -> b), written with io.write_run."""
    methods = methods or {"sgd": 1.0, "dropout": 0.5}
    rng = np.random.default_rng(seed)
    for method, b in methods.items():
        for r in range(runs):
            lam = np.r_[np.geomspace(10.0, 0.1, k - 1), -0.05]  # one non-positive eigenvalue
            eig, noise = [], []
            for step in steps:
                for blk in (blocks or [None]):
                    e = pd.DataFrame({"step": step, "rank": np.arange(k), "eigenvalue": lam,
                                      "residual": np.full(k, 1e-8)})
                    if blk is not None:
                        e["block"] = blk
                    eig.append(e)
                    for src in sources:
                        slope = 0.0 if src == "isotropic" else b + 0.1 * rng.standard_normal()
                        sd = np.r_[np.abs(lam) ** (slope / 2), np.full(n_random, 0.1)]
                        x = rng.standard_normal((K, k + n_random)) * sd
                        basis = np.r_[["hessian"] * k, ["random"] * n_random]
                        direction = np.r_[np.arange(k), np.arange(n_random)]
                        d = pd.DataFrame({"step": step, "source": src, "basis": np.tile(basis, K),
                                          "direction": np.tile(direction, K),
                                          "sample": np.repeat(np.arange(K), k + n_random), "value": x.ravel()})
                        if blk is not None:
                            d["block"] = blk
                        noise.append(d)
            tables = None
            if flatness:
                tables = {"flatness.parquet": pd.DataFrame({
                    "step": [steps[-1]] * 3, "quantity": ["lambda_max", "hessian_trace", "rho"],
                    "source": [None, None, "sgd"],
                    "estimate": [10.0 * (1 + b) * np.exp(0.05 * rng.standard_normal()),
                                 30.0 * np.exp(0.05 * rng.standard_normal()), 2.0 + 0.1 * rng.standard_normal()]})}
            meta = {"run_id": f"{method}-{r}", "method": method, "seed": r, "hyperparameters": {"lr": 0.1}}
            meta.update(extra_meta or {})
            write_run(root / f"{method}-{r}", meta, eigen=pd.concat(eig), noise=pd.concat(noise), tables=tables)
    return root


@pytest.fixture(scope="module")
def logset_dir(tmp_path_factory):
    return write_logset(tmp_path_factory.mktemp("logs"), flatness=True)


@pytest.fixture(scope="module")
def result(logset_dir):
    return analyze(logset_dir, resamples=199, equivalence_margin=0.5)


def test_json_output_v1_keys_and_no_nan(result):
    d = result.to_json_dict()
    json.dumps(d, allow_nan=False)  # NaN would raise
    assert d["schema_version"] == 1
    for key in ("confidence", "alpha", "equivalence_margin", "seed", "resamples"):
        assert key in d["settings"]
    for key in ("package_version", "input", "created"):
        assert key in d["provenance"]
    rel_keys = {"run_id", "method", "source", "basis", "step", "slope", "ci_low", "ci_high", "p_value",
                "spearman_r", "spearman_p", "n_directions", "n_excluded", "n_samples", "intercept", "se_slope",
                "se_intercept", "cov_intercept_slope", "block", "group"}
    assert rel_keys <= set(d["relations"][0])
    grp_keys = {"group", "source", "step", "slope", "ci_low", "ci_high", "p_value", "n_runs"}
    assert grp_keys <= set(d["groups"][0]) and isinstance(d["groups"][0]["group"], dict)
    cmp_keys = {"quantity", "group_a", "group_b", "paired", "difference", "ci_low", "ci_high", "p_value",
                "p_adjusted", "margin", "tost_p", "equivalent", "tost_ci_low", "tost_ci_high"}
    assert cmp_keys <= set(d["comparisons"][0])
    assert d["relations"][0]["excluded"] == {"nonpositive": 1, "below_floor": 0, "residual": 0}
    assert d["relations"][0]["block"] is None


def test_relations_match_the_building_blocks(logset_dir, result):
    ls = read_logset(logset_dir)
    run = ls.runs[0]
    blk = run.blocks[0]
    H = blk.is_hessian
    fit = relation_fit(blk.values[:, H], blk.eigenvalue[H], residuals=blk.residual[H])
    row = result.relations.query("run_id == @run.run_id and step == @blk.step and source == @blk.source").iloc[0]
    for k in ("slope", "ci_low", "ci_high", "p_value", "intercept", "se_slope", "n_directions", "n_excluded"):
        assert_allclose(row[k], getattr(fit, k), err_msg=k)
    vr = variance_ratio(blk.values[:, H], blk.values[:, ~H])
    assert_allclose([row["ratio"], row["ratio_ci_low"], row["ratio_ci_high"], row["ratio_df"]],
                    [vr.estimate, vr.ci_low, vr.ci_high, vr.df])
    inc = exclusion_reasons(blk.eigenvalue[H], residuals=blk.residual[H]) == None  # noqa: E711
    ct = curvature_test(blk.values[:, H][:, inc], blk.eigenvalue[H][inc], resamples=0)
    assert ct.n_directions == fit.n_directions
    assert row["isotropy_p"] == row["alignment_p"] and 0 < row["curvature_p"] <= 1
    assert row["curvature_p"] >= ct.p_parametric  # max(permutation p, t p)
    assert len(result.relations) == 6 * 2 * 2  # runs x steps x sources


def test_directions_table_contract(tmp_path, result):
    jp, dp = result.write(tmp_path / "out.json")
    assert dp == tmp_path / "out.directions.parquet" == directions_path(jp)
    t = pq.read_table(dp)
    assert t.column_names == list(DIRECTION_COLUMNS)
    types = {f.name: str(f.type) for f in t.schema}
    assert types == {"run_id": "string", "method": "string", "group": "string", "source": "string",
                     "basis": "string", "step": "int64", "block": "string", "direction": "int64",
                     "eigenvalue": "double", "residual": "double", "variance": "double", "n_samples": "int64",
                     "included": "bool", "reason": "string"}
    df = t.to_pandas()
    assert len(df) == 6 * 2 * 2 * (8 + 2)
    rnd = df[df["basis"] == "random"]
    assert rnd["eigenvalue"].isna().all() and (~rnd["included"]).all() and (rnd["reason"] == "random").all()
    hes = df[df["basis"] == "hessian"]
    assert (hes["included"] == hes["reason"].isna()).all()
    assert set(hes["reason"].dropna()) == {"nonpositive"}
    # included counts agree with the relations
    n_inc = hes.groupby(["run_id", "step", "source"])["included"].sum()
    rel = result.relations.set_index(["run_id", "step", "source"])["n_directions"]
    assert (n_inc.sort_index() == rel.sort_index()).all()
    d = json.loads(jp.read_text())
    assert d.pop("directions_file") == dp.name  # the JSON names its table
    assert d == json.loads(json.dumps(result.to_json_dict()))


def test_variances_in_table_are_ddof1(logset_dir, result):
    run = read_logset(logset_dir).runs[1]
    blk = run.blocks[-1]
    sub = result.directions.query("run_id == @run.run_id and step == @blk.step and source == @blk.source")
    assert_allclose(sub["variance"].to_numpy(), blk.values.var(axis=0, ddof=1))


def test_groups_use_last_step_and_runs_as_replicates(result):
    g = result.groups
    assert set(g["step"]) == {10}
    assert set(g["n_runs"]) == {3}
    sgd = g.query("group == 'sgd' and source == 'sgd'").iloc[0]
    assert sgd["ci_low"] < 1.0 < sgd["ci_high"] + 0.3 and sgd["p_value"] < 0.01
    iso = g.query("group == 'sgd' and source == 'isotropic'").iloc[0]
    assert iso["ci_low"] < 0.0 < iso["ci_high"]
    assert sgd["group_key"] == {"method": "sgd"}


def test_step_option(logset_dir):
    res = analyze(logset_dir, resamples=0, step=0)
    assert set(res.groups["step"]) == {0}
    with pytest.raises(InputError, match=r"`step` 5 was probed in no run; probed steps: \[0, 10\]"):
        analyze(logset_dir, resamples=0, step=5)


def test_default_family_and_controls(result):
    c = result.comparisons
    slope = c[c["quantity"] == "slope"]
    conf = slope[slope["confirmatory"]]
    # 4 non-control units (2 groups x sgd source ... ) -> here 2 units: sgd:sgd, dropout:sgd
    assert len(conf) == 1 and not conf.iloc[0]["paired"]
    ctrl = slope[~slope["confirmatory"]]
    assert len(ctrl) == 2 and ctrl["paired"].all() and ctrl["p_adjusted"].isna().all()
    assert (ctrl["source_b"] == "isotropic").all()
    row = conf.iloc[0]
    assert row["difference"] == pytest.approx(
        result.groups.query("group == 'dropout' and source == 'sgd'")["slope"].iloc[0]
        - result.groups.query("group == 'sgd' and source == 'sgd'")["slope"].iloc[0])
    assert row["margin"] == 0.5 and row["equivalent"] in (True, False)


def test_flatness_summary_and_comparisons(result):
    f = result.flatness
    assert set(f["quantity"]) == {"lambda_max", "hessian_trace", "rho", "curvature_alignment"}
    rho = f.query("quantity == 'rho'").iloc[0]
    assert rho["null"] == 1.0 and rho["p_value"] < 0.01 and rho["source"] == "sgd"
    lm = result.comparisons.query("quantity == 'log_lambda_max'")
    assert len(lm) == 1 and lm.iloc[0]["confirmatory"]
    # truth: lambda_max 20 (sgd) vs 15 (dropout)
    a_is_dropout = lm.iloc[0]["label_a"] == "dropout"
    diff = lm.iloc[0]["difference"] * (1 if a_is_dropout else -1)
    assert lm.iloc[0]["ci_low"] < (np.log(15) - np.log(20)) * (1 if a_is_dropout else -1) < lm.iloc[0]["ci_high"]
    assert diff < 0


def test_compare_declared_pairs_and_errors(logset_dir):
    res = analyze(logset_dir, resamples=0, compare=["sgd:sgd vs sgd:isotropic"])
    slope = res.comparisons.query("quantity == 'slope'")
    assert len(slope) == 1 and slope.iloc[0]["confirmatory"] and slope.iloc[0]["paired"]
    assert slope.iloc[0]["p_adjusted"] == slope.iloc[0]["p_value"]
    res = analyze(logset_dir, resamples=0, compare="sgd vs dropout")  # group level: matching sources,
    slope = res.comparisons.query("quantity == 'slope'")                 # never the isotropic control
    assert sorted(slope["source_a"]) == ["sgd"] and slope["confirmatory"].all()
    assert len(res.comparisons.query("quantity == 'log_lambda_max'")) == 1
    # two slope pairs between the same groups give one flatness comparison
    res = analyze(logset_dir, resamples=0, compare=["sgd:sgd vs dropout:sgd", "sgd:isotropic vs dropout:isotropic"])
    assert len(res.comparisons.query("quantity == 'slope'")) == 2
    assert len(res.comparisons.query("quantity == 'log_lambda_max'")) == 1
    with pytest.raises(InputError, match="`compare`: no unit 'gd:sgd' for quantity slope; units are"):
        analyze(logset_dir, resamples=0, compare="gd:sgd vs sgd:sgd")
    with pytest.raises(InputError, match="`compare`: 'sgd' vs 'sgd' gives no comparison for quantity slope"):
        analyze(logset_dir, resamples=0, compare="sgd vs sgd")


def test_default_family_pairs_groups_within_a_source_and_sources_within_a_group(tmp_path):
    root = write_logset(tmp_path, methods={f"m{i}": 0.5 for i in range(4)}, runs=2,
                        sources=("sgd", "dropout", "isotropic"), steps=(0,), n_random=0, K=30)
    cmp = analyze(root, resamples=0).comparisons.query("quantity == 'slope'")
    conf = cmp[cmp["confirmatory"]]
    # 4 groups x 2 sources: C(4,2) group pairs per source + one source pair per group
    assert len(conf) == 2 * 6 + 4
    assert ((conf["source_a"] == conf["source_b"]) | (conf["label_a"] == conf["label_b"])).all()
    assert not ((conf["source_a"] == "isotropic") | (conf["source_b"] == "isotropic")).any()
    assert conf["p_adjusted"].notna().all() and cmp[~cmp["confirmatory"]]["p_adjusted"].isna().all()


def test_more_than_six_groups_need_compare(tmp_path):
    root = write_logset(tmp_path, methods={f"m{i}": 0.5 for i in range(7)}, runs=2, sources=("sgd",),
                        steps=(0,), n_random=0, K=30)
    res = analyze(root, resamples=0)
    assert res.comparisons.query("quantity == 'slope'").empty
    assert any("declare the confirmatory pairs with --compare" in n for n in res.notes)
    assert "NOTE slope: 7 groups" in res.summary()


def test_resamples_zero_switches_resampling_off(logset_dir, result):
    r0 = analyze(logset_dir, resamples=0)
    for col in ("isotropy_p", "alignment_p", "curvature_p"):
        assert r0.relations[col].isna().all() and result.relations[col].notna().all()
    # the slope and variance-ratio intervals are analytic: the same without resamples
    for col in ("slope", "ci_low", "ci_high", "p_value", "ratio", "ratio_ci_low", "ratio_ci_high", "alignment_k",
                "spearman_r"):
        assert_allclose(r0.relations[col], result.relations[col])
    d = r0.to_json_dict()
    assert d["relations"][0]["isotropy_p"] is None and d["relations"][0]["curvature_p"] is None


def test_seeded_and_order_independent(logset_dir, tmp_path):
    a = analyze(logset_dir, resamples=199, seed=3)
    b = analyze(logset_dir, resamples=199, seed=3)
    pd.testing.assert_frame_equal(a.relations, b.relations)
    c = analyze(logset_dir, resamples=199, seed=4)
    assert not np.allclose(a.relations["isotropy_p"], c.relations["isotropy_p"])
    # a subset of the runs gives the same per-run results
    ls = read_logset(logset_dir)
    ls.runs = ls.runs[::-1][:3]
    sub = analyze(ls, resamples=199, seed=3)
    merged = sub.relations.merge(a.relations, on=["run_id", "step", "source"], suffixes=("", "_all"))
    assert len(merged) == len(sub.relations)
    assert_allclose(merged["ratio_ci_low"], merged["ratio_ci_low_all"])
    assert_allclose(merged["alignment_p"], merged["alignment_p_all"])
    assert_allclose(merged["curvature_p"], merged["curvature_p_all"])


def test_blocks_are_analysed_separately(tmp_path):
    root = write_logset(tmp_path, methods={"sgd": 1.0}, runs=2, sources=("sgd",), steps=(0,),
                        blocks=["fc1", "fc2"])
    res = analyze(root, resamples=0)
    assert sorted(res.relations["block"].unique()) == ["fc1", "fc2"]
    assert sorted(res.groups["block"]) == ["fc1", "fc2"]
    assert "block" in res.summary()


def test_skip_invalid_and_identical_runs(tmp_path):
    root = write_logset(tmp_path, methods={"sgd": 1.0}, runs=2, sources=("sgd",), steps=(0,))
    (root / "sgd-0" / "noise.parquet").write_bytes(b"not parquet")
    with pytest.raises(LogValidationError, match="unreadable Parquet"):
        analyze(root, resamples=0)
    res = analyze(root, resamples=0, skip_invalid=True)
    assert len(res.skipped) == 1 and res.skipped[0]["run_id"] == "sgd-0"
    assert "SKIPPED 1 invalid run" in res.summary()
    # identical noise tables are flagged
    root2 = write_logset(tmp_path / "b", methods={"sgd": 1.0}, runs=1, sources=("sgd",), steps=(0,))
    import shutil
    shutil.copytree(root2 / "sgd-0", root2 / "copy")
    meta = json.loads((root2 / "copy" / "run.json").read_text())
    meta["run_id"] = "copy"
    (root2 / "copy" / "run.json").write_text(json.dumps(meta))
    with pytest.warns(DuplicateRunWarning):
        res = analyze(root2, resamples=0)
    assert res.identical == [["sgd-0", "copy"]] or res.identical == [["copy", "sgd-0"]]
    assert "identical noise tables" in res.summary()
    assert res.to_json_dict()["identical"] == res.identical


def test_accepts_logset_objects(logset_dir):
    res = analyze(read_logset(logset_dir), resamples=0)
    assert isinstance(res, AnalysisResult) and len(res.relations) == 24
    assert res.relations["group"].tolist()[0] in ("sgd", "dropout")


@pytest.mark.parametrize("kwargs, match", [
    (dict(confidence=1.0), r"`confidence` must be in \(0, 1\); got 1.0"),
    (dict(alpha=0.6), r"`alpha` must be in \(0, 0.5\)"),
    (dict(equivalence_margin=-0.1), "`equivalence_margin` must be a positive number"),
    (dict(seed=-1), "`seed` must be an integer >= 0"),
    (dict(resamples=1.5), "`resamples` must be an integer >= 0"),
    (dict(resamples=10), "`resamples` must be 0 \\(off\\) or at least 99"),
    (dict(step=-2), "`step` must be an integer >= 0"),
    (dict(floor_rel=1.0), r"`floor_rel` must be in \[0, 1\)"),
    (dict(residual_factor=-1.0), "`residual_factor` must be >= 0"),
    (dict(group_by=""), "`group_by` must be run.json keys"),
])
def test_analyze_argument_errors(logset_dir, kwargs, match):
    with pytest.raises(InputError, match=match):
        analyze(logset_dir, **kwargs)


def test_source_errors(tmp_path):
    with pytest.raises(InputError, match="`source` must be a log-set path or a LogSet"):
        analyze(42)
    with pytest.raises(InputError, match="no run found"):
        analyze(tmp_path)
    ls = read_logset(write_logset(tmp_path / "x", methods={"sgd": 1.0}, runs=1, sources=("sgd",), steps=(0,)))
    ls.runs = []
    with pytest.raises(InputError, match="no valid run to analyse"):
        analyze(ls)


def test_group_by_option(logset_dir):
    res = analyze(logset_dir, resamples=0, group_by="hyperparameters.lr")
    assert set(res.groups["group"]) == {"hyperparameters.lr=0.1"}
    assert set(res.groups["n_runs"]) == {6}
    assert math.isfinite(res.groups["slope"].iloc[0])


def test_meta_analysis_sensitivity_matches_statsmodels(result):
    from statsmodels.stats.meta_analysis import combine_effects
    g = result.groups.query("group == 'sgd' and source == 'sgd'").iloc[0]
    rel = result.relations.query("group == 'sgd' and source == 'sgd' and step == 10")
    ref = combine_effects(rel["slope"].to_numpy(), rel["se_slope"].to_numpy() ** 2, method_re="pm")
    assert_allclose(g["meta_slope"], ref.mean_effect_re)
    assert_allclose(g["meta_tau2"], ref.tau2)
    assert g["meta_ci_low"] < g["meta_slope"] < g["meta_ci_high"]


def test_group_step_is_null_not_float_when_runs_last_steps_differ(tmp_path):
    from tests.test_io import make_tables

    for i, steps in enumerate([(0,), (0, 10), (0,)]):
        eig, noise = make_tables(k=6, K=40, m=0, steps=steps, seed=i)
        write_run(tmp_path / f"r{i}", {"run_id": f"r{i}", "method": "sgd"}, eigen=eig, noise=noise)
    res = analyze(tmp_path, resamples=0)
    g = res.to_json_dict()["groups"][0]
    assert g["step"] is None and g["steps"] == [0, 10] and g["n_runs"] == 3
    assert res.groups["step"].dtype == "Int64"
    assert "last" in res.summary()


def _own_source_logs(root, n_runs=4, seed=0):
    """Dropout runs logged with dropout noise only, SGD runs with SGD noise only."""
    rng = np.random.default_rng(seed)
    for method, b in (("sgd", 1.0), ("dropout", 0.6)):
        for r in range(n_runs):
            lam = np.geomspace(10.0, 0.1, 8) * (1 + 0.05 * r)
            slope = b + 0.1 * rng.standard_normal()
            x = rng.standard_normal((50, 8)) * lam ** (slope / 2)
            noise = pd.DataFrame({"step": 0, "source": method, "basis": "hessian", "direction": np.tile(np.arange(8), 50),
                                  "sample": np.repeat(np.arange(50), 8), "value": x.ravel()})
            write_run(root / f"{method}-{r}", {"run_id": f"{method}-{r}", "method": method, "seed": r},
                      eigen=pd.DataFrame({"step": 0, "rank": np.arange(8), "eigenvalue": lam}), noise=noise)
    return root


def test_groups_logging_only_their_own_source_get_the_cross_pair(tmp_path):
    from varprinciple.stats.inference import compare_groups
    root = _own_source_logs(tmp_path / "logs")
    res = analyze(root, resamples=0)
    conf = res.comparisons[res.comparisons["confirmatory"]]
    assert len(conf) == 1
    row = conf.iloc[0]
    assert {f"{row['label_a']}:{row['source_a']}", f"{row['label_b']}:{row['source_b']}"} == {
        "sgd:sgd", "dropout:dropout"}
    note = [n for n in res.notes if "cross pairs" in n]
    assert len(note) == 1 and "no two groups share a noise source and no group logs two" in note[0]
    compare = note[0].split("to declare them yourself: ")[1]
    assert compare == "--compare 'dropout:dropout vs sgd:sgd'"
    # the printed option declares exactly the same comparison
    declared = analyze(root, resamples=0, compare="dropout:dropout vs sgd:sgd").comparisons
    cols = ["difference", "ci_low", "ci_high", "p_value", "p_adjusted", "effect_size", "prob_superiority"]
    assert_allclose(declared[cols].to_numpy(float), conf[cols].to_numpy(float))
    g = res.groups.set_index("group")["slope"]
    a = res.relations.query("group == @row.label_a")["slope"].to_numpy()
    b = res.relations.query("group == @row.label_b")["slope"].to_numpy()
    assert row["difference"] == pytest.approx(compare_groups(a, b).difference)
    assert row["difference"] == pytest.approx(g[row["label_a"]] - g[row["label_b"]])
    assert "Comparisons" in res.summary() and "NOTE slope: no two groups share" in res.summary()


def test_a_single_unit_says_why_there_is_no_comparison(tmp_path):
    root = write_logset(tmp_path, methods={"sgd": 1.0}, runs=3, sources=("sgd",), steps=(0,), n_random=0)
    res = analyze(root, resamples=0)
    assert res.comparisons.empty
    assert any("slope: no comparison in the default family (only sgd:sgd" in n for n in res.notes)


def test_effect_sizes_beside_every_comparison(result, logset_dir):
    from varprinciple.stats.effect_size import prob_superiority, standardized_difference
    c = result.comparisons
    assert c["effect_size"].notna().all() and c["prob_superiority"].notna().all()
    assert ((c["effect_size_ci_low"] < c["effect_size"]) & (c["effect_size"] < c["effect_size_ci_high"])).all()
    assert set(c["effect_size_kind"]) == {"bonett_d", "d_z"}
    assert (c["effect_size_kind"].eq("d_z") == c["paired"]).all()
    row = c.query("quantity == 'slope' and confirmatory").iloc[0]
    rel = result.relations[result.relations["step"] == 10]
    a = rel.query("group == @row.label_a and source == @row.source_a")["slope"].to_numpy()
    b = rel.query("group == @row.label_b and source == @row.source_b")["slope"].to_numpy()
    es = standardized_difference(a, b, paired=bool(row["paired"]))
    ps = prob_superiority(a, b, paired=bool(row["paired"]))
    assert (row["effect_size"], row["effect_size_ci_low"], row["effect_size_ci_high"]) == pytest.approx(
        (es.estimate, es.ci_low, es.ci_high), rel=1e-10)
    assert (row["prob_superiority"], row["prob_superiority_ci_low"], row["prob_superiority_empirical"]) == \
        pytest.approx((ps.estimate, ps.ci_low, ps.empirical), rel=1e-10)
    d = result.to_json_dict()["comparisons"][0]
    assert {"effect_size", "effect_size_ci_low", "effect_size_ci_high", "prob_superiority",
            "prob_superiority_ci_low", "prob_superiority_ci_high", "tost_p_adjusted"} <= set(d)
    assert "effect" in result.summary() and "P(a>b)" in result.summary()


def test_tost_verdicts_per_comparison_and_holm_adjusted(tmp_path):
    from varprinciple.stats import holm
    root = write_logset(tmp_path, methods={f"m{i}": 0.5 + 0.05 * i for i in range(3)}, runs=3,
                        sources=("sgd",), steps=(0,), n_random=0, K=40)
    res = analyze(root, resamples=0, equivalence_margin=0.3)
    assert "NOT adjusted" in res.settings["tost_multiplicity"]
    conf = res.comparisons[res.comparisons["confirmatory"] & res.comparisons["quantity"].eq("slope")]
    assert len(conf) == 3
    assert_allclose(conf["tost_p_adjusted"].to_numpy(float), holm(conf["tost_p"].to_numpy(float)))
    assert (conf["equivalent_adjusted"] == (conf["tost_p_adjusted"] < 0.05)).all()
    assert (conf["tost_p_adjusted"] >= conf["tost_p"]).all()


@pytest.mark.slow
def test_holm_adjusted_tost_controls_the_familywise_false_equivalence():
    """4 groups whose means are spaced exactly one margin apart: every pair is non-equivalent
    (three at the boundary). Unadjusted TOST declares some pair "equivalent" in about
    1 - 0.95^3 = 0.14 of studies; Holm over the family keeps it at <= alpha."""
    from varprinciple.stats.comparisons import Unit, comparison_rows
    rng = np.random.default_rng(21)
    R, n, margin, sd = 600, 5, 0.3, 0.05
    any_raw = any_adj = 0
    for _ in range(R):
        units = [Unit(f"g{i}", {}, "sgd", None, {f"g{i}-{r}": v for r, v in
                                               enumerate(margin * i + sd * rng.standard_normal(n))})
                 for i in range(4)]
        rows = comparison_rows({"slope": units}, None, conf=0.95, alpha=0.05, margin=margin, step_label=0,
                               notes=[])
        assert len(rows) == 6
        any_raw += any(r["equivalent"] for r in rows)
        any_adj += any(r["equivalent_adjusted"] for r in rows)
    se = math.sqrt(0.05 * 0.95 / R)
    assert any_adj / R <= 0.05 + 3 * se, any_adj / R
    assert any_raw / R > 0.10, any_raw / R


def test_group_curvature_alignment_rows_detect_alignment_and_not_the_isotropic_control():
    from varprinciple.simulate import simulate_logset
    logset, _ = simulate_logset(methods={"sgd": 1.0}, runs_per_method=5, sources=("sgd", "isotropic"),
                                n_directions=12, n_samples=100, rng=np.random.default_rng(11))
    res = analyze(logset, resamples=0)
    ca = res.flatness[res.flatness["quantity"] == "curvature_alignment"].set_index("source")
    assert set(ca.index) == {"sgd", "isotropic"}
    assert ca.loc["sgd", "estimate"] > 0.5 and ca.loc["sgd", "p_value"] < 0.01
    assert ca.loc["sgd", "ci_low"] <= ca.loc["sgd", "estimate"] <= ca.loc["sgd", "ci_high"]
    assert abs(ca.loc["isotropic", "estimate"]) < 0.4 and ca.loc["isotropic", "n_runs"] == 5
    # the estimate is the mean of the runs' Spearman r at the analysed step
    rel = res.relations[res.relations["source"] == "sgd"]
    assert np.isclose(ca.loc["sgd", "estimate"], rel["spearman_r"].mean())
