"""End to end: a gd/sgd/dropout sweep stopped at a common training loss, with trajectories,
through psi_analysis and the matched-loss annotation of the flatness comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from varprinciple.collect.config import validate_config
from varprinciple.collect.run import collect
from varprinciple.errors import InputError
from varprinciple.io import read_logset
from varprinciple.stats.analysis import analyze
from varprinciple.stats.grouping import group_keys, unique_labels
from varprinciple.stats.matched import LOSS_COLUMNS, annotate_flatness_comparisons, training_loss_at
from varprinciple.stats.psi_analysis import psi_analysis

CFG = {"data": {"n_train": 150, "n_test": 20}, "model": {"widths": [8]},
       "train": {"method": ["gd", "sgd", "dropout"], "seed": [0, 1, 2], "steps": 1500, "batch_size": 16,
                 "lr": 0.2, "log_every": 100, "target_loss": 0.25, "target_check_every": 5},
       "probe": {"top_k": 3, "n_samples": 8, "n_random": 2, "hutchinson_probes": 4, "tr_hc_samples": 4,
                 "sources": ["sgd"], "isotropic_of": "sgd"},
       "trajectory": {"window": 160, "every": 4, "n_components": 5, "profile_points": 5, "random_profiles": 2}}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("flat") / "logs"
    collect(validate_config(CFG), out)
    return out


def _labels(ls):
    return unique_labels(group_keys([r.meta for r in ls.runs]))


@pytest.mark.slow
def test_psi_analysis_of_a_sweep(logs):
    ls = read_logset(logs)
    labels = _labels(ls)
    res = psi_analysis(ls.runs, labels, margin=1.0, resamples=200, seed=1)
    assert len(res.per_run) == 9 and res.per_run["psi"].notna().all()
    assert {g["group"] for g in res.groups} == set(labels) and all(g["n_runs"] == 3 for g in res.groups)
    assert len(res.comparisons) == 3 and all(np.isfinite(c["p_adjusted"]) for c in res.comparisons)
    assert all(c["margin"] == 1.0 and c["tost_p"] is not None for c in res.comparisons)
    rec = res.records[0]
    assert rec["sensitivity_threshold"] == "width_2" and rec["psi_sensitivity"] is not None
    assert res.per_run["psi_sensitivity"].notna().all()
    assert len(rec["components"]) == 5 and rec["components"][0]["drift"] is True
    # PC profiles of every run (and the filter-normalised random ones, `random_profiles`)
    assert {p["kind"] for p in res.profiles} == {"pc", "random"}
    assert sum(p["kind"] == "pc" for p in res.profiles) == 9 * 5
    # order-independent per-run streams
    again = psi_analysis(ls.runs[::-1], labels[::-1], margin=1.0, resamples=200, seed=1)
    pd.testing.assert_frame_equal(res.per_run.set_index("run_id").sort_index(),
                                  again.per_run.set_index("run_id").sort_index())
    with pytest.raises(InputError, match="`labels` must have one label per run"):
        psi_analysis(ls.runs, labels[:2])


@pytest.mark.slow
def test_flatness_comparisons_carry_training_losses(logs):
    ls = read_logset(logs)
    labels = _labels(ls)
    sel = {r.run_id: max(r.steps) for r in ls.runs}
    for r in ls.runs:
        assert r.meta["target"]["reached"] and training_loss_at(r, sel[r.run_id]) <= 0.25
    comps = analyze(logs, resamples=200).comparisons
    flat = comps[comps["quantity"].isin(["log_lambda_max", "log_hessian_trace"])]
    assert len(flat)
    out = annotate_flatness_comparisons(comps, ls.runs, labels, sel)
    assert set(LOSS_COLUMNS) <= set(out.columns)
    f = out.loc[flat.index]
    assert f["loss_a"].notna().all() and (f["loss_a"].astype(float) <= 0.25).all()
    # all runs stopped at the target (checked every 5 steps): the losses are matched
    assert (f["loss_log_ratio"].astype(float).abs() < np.log(1.1)).all() and not f["loss_mismatch"].any()
    assert out.loc[~out.index.isin(flat.index), "loss_a"].isna().all()


@pytest.mark.slow
def test_outcomes_are_summarised_and_compared_between_groups(logs):
    """Test accuracy, generalisation gap and profile width: one flatness row per group and
    comparisons of every pair (raw scale, log scale for the width), from the runs' own logs."""
    ls = read_logset(logs)
    res = analyze(logs, resamples=0)
    flat = res.flatness
    for q in ("test_accuracy", "generalisation_gap", "filter_width"):
        rows = flat[flat["quantity"] == q]
        assert len(rows) == 3 and (rows["n_runs"] == 3).all(), q
    acc = flat[flat["quantity"] == "test_accuracy"].set_index("group")["estimate"]
    for label in acc.index:
        finals = [r.meta["final"]["test_accuracy"] for r in ls.runs if _labels(ls)[ls.runs.index(r)] == label]
        assert acc[label] == pytest.approx(np.mean(finals), rel=1e-9)
    comps = res.comparisons
    for q in ("test_accuracy", "generalisation_gap", "log_filter_width"):
        c = comps[comps["quantity"] == q]
        assert len(c) == 3 and c["ci_low"].notna().all(), q
    gap = flat[flat["quantity"] == "generalisation_gap"].set_index("group")["estimate"]
    c = comps[comps["quantity"] == "generalisation_gap"].iloc[0]
    assert c["difference"] == pytest.approx(gap[c["label_a"]] - gap[c["label_b"]], rel=1e-9, abs=1e-12)


@pytest.mark.slow
def test_varprinciple_test_reports_psi_losses_and_report_draws_them(logs, tmp_path):
    from varprinciple.report.build import build_report

    res = analyze(logs, resamples=199, equivalence_margin=1.0)
    d = res.to_json_dict()
    psi_rows = [r for r in d["flatness"] if r["quantity"] == "psi"]
    assert len(psi_rows) == 3 and all(r["n_runs"] == 3 and r["null"] == 0.0 for r in psi_rows)
    psi_cmp = [c for c in d["comparisons"] if c["quantity"] == "psi"]
    assert len(psi_cmp) == 3 and all(c["tost_p"] is not None and c["p_adjusted"] is not None for c in psi_cmp)
    lam = [c for c in d["comparisons"] if c["quantity"] == "log_lambda_max"]
    assert lam and all(c["loss_a"] is not None and c["loss_mismatch"] is False for c in lam)
    assert all(c["loss_a"] is None for c in d["comparisons"] if c["quantity"] == "slope")
    assert len(d["variance_flatness"]) == 9 and len(d["loss_profiles"]) == 9 * (5 + 2)
    path = tmp_path / "r.json"
    res.write(path)
    rep = build_report(path, tmp_path / "rep", dpi=40)
    drawn = {f.name for f in rep.files if f.kind == "figure"}
    assert {"variance_flatness", "loss_profiles", "flatness"} <= drawn
