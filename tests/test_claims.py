"""The claims table (study/claims.py): verdict rules on synthetic results JSONs with known answers."""

from __future__ import annotations


import numpy as np
import pytest
from scipy import stats as sps

from varprinciple.errors import InputError
from varprinciple.study.claims import (ClaimSpec, Verdict, claims_frame, claims_table,
                                       label_fields, verdict_of)


def _group(label, source, est, se, n=6, method=None):
    df = n - 1
    h = sps.t.ppf(0.975, df) * se
    row = {"group_label": label, "group": {"group": label}, "source": source, "slope": est, "se": se, "df": df,
           "ci_low": est - h, "ci_high": est + h, "n_runs": n, "block": None}
    return row


def _res(groups=(), comparisons=(), flatness=(), relations=()):
    return {"schema_version": 1, "relations": list(relations), "groups": list(groups),
            "comparisons": list(comparisons), "flatness": list(flatness)}


def _spec(**kw):
    base = dict(id="b_sgd", family="b", text="SGD b > 0", quantity="b", table="groups", kind="greater",
                select={"source": "sgd"})
    base.update(kw)
    return ClaimSpec(**base)


@pytest.mark.parametrize("est,se,verdict", [
    (1.0, 0.05, Verdict.SUPPORTED),         # far above 0
    (-0.8, 0.05, Verdict.NOT_SUPPORTED),    # CI entirely below the null
    (0.05, 0.5, Verdict.INCONCLUSIVE),      # wide CI straddling 0
])
def test_directional_verdicts_reachable(est, se, verdict):
    rows = claims_table({"e": _res([_group("sgd-lr0.1-bs32", "sgd", est, se)])}, [_spec()])
    assert len(rows) == 1 and rows[0].verdict == verdict.value
    # the one-sided p is the t test's
    assert rows[0].p_value == pytest.approx(sps.t.sf(est / se, 5), rel=1e-9)


@pytest.mark.parametrize("est,se,verdict", [
    (0.02, 0.03, Verdict.EQUIVALENT),       # narrow CI inside ±0.3
    (0.9, 0.05, Verdict.DIFFERENT),         # CI entirely beyond +0.3: different, not "inconclusive"
    (0.1, 0.4, Verdict.INCONCLUSIVE),       # CI wider than the band
])
def test_equivalence_verdicts_reachable(est, se, verdict):
    spec = _spec(kind="equivalent", margin=0.3, null=0.0, select={"source": "isotropic"})
    rows = claims_table({"e": _res([_group("gd-lr0.1", "isotropic", est, se)])}, [spec])
    assert rows[0].verdict == verdict.value
    if verdict is Verdict.EQUIVALENT:
        assert rows[0].verdict_text == "equivalent within ±0.3"
    if verdict is Verdict.DIFFERENT:
        assert rows[0].verdict_text == "different (outside ±0.3)"


def test_ci_beyond_margin_below_is_different_and_tost_p_is_the_stats_layers():
    # the audit's MNIST-1D case: −0.33 [−0.41, −0.24] against ±0.3 is "different", not "inconclusive"
    from varprinciple.stats.inference import tost
    a = np.array([0.61, 0.66, 0.70, 0.64, 0.69, 0.72])
    b = a + np.array([0.38, 0.44, 0.40, 0.47, 0.39, 0.43])
    ref = tost(a, b, margin=0.3, paired=True)
    d = a - b
    se = d.std(ddof=1) / np.sqrt(d.size)
    h = sps.t.ppf(0.975, 5) * se
    comp = {"quantity": "slope", "group_a": {"label": "dropout-lr0.1-drop0.1", "source": "dropout"},
            "group_b": {"label": "dropout-lr0.1-drop0.1", "source": "sgd"}, "difference": d.mean(),
            "ci_low": d.mean() - h, "ci_high": d.mean() + h, "se": se, "df": 5.0, "n_a": 6, "n_b": 6,
            "paired": True}
    spec = ClaimSpec("sim", "sim", "similar b", "b diff", "comparisons", "equivalent", margin=0.3,
                     select={"quantity": "slope", "same_group": True, "source_a": "dropout", "source_b": "sgd"})
    row = claims_table({"e": _res(comparisons=[comp])}, [spec])[0]
    assert row.ci_high < -0.3 and row.verdict == "different"
    assert row.p_value == pytest.approx(ref.p_value, rel=1e-12)  # the statistics layer's TOST, not a copy


def test_inconclusive_when_ci_wide_even_if_estimate_large():
    # estimate 0.5 > 0 but n = 2 runs: a t interval with 1 df is wide -> inconclusive, not supported
    rows = claims_table({"e": _res([_group("sgd", "sgd", 0.5, 0.4, n=2)])}, [_spec()])
    assert rows[0].verdict == Verdict.INCONCLUSIVE.value and rows[0].ci_low < 0


def test_holm_within_family_not_across():
    g = [_group(f"sgd-lr0.1-bs{b}", "sgd", 0.2, 0.1) for b in (16, 32, 64)]
    res = {"e": _res(g + [_group("dropout-lr0.1-drop0.1", "dropout", 0.2, 0.1)])}
    one = _spec(select={"source": "sgd"})
    other = _spec(id="b_drop", family="other", select={"source": "dropout"})
    rows = claims_table(res, [one, other])
    p = rows[0].p_value
    assert [r.p_holm for r in rows[:3]] == pytest.approx([min(1, 3 * p)] * 3)
    assert rows[3].p_holm == pytest.approx(rows[3].p_value)  # alone in its family


def test_holm_is_the_statistics_layers_and_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests
    g = [_group(f"sgd-lr0.1-bs{b}", "sgd", est, 0.1) for b, est in zip((8, 16, 32, 64, 128), (0.1, 0.2, 0.3, 0.25, 0.05))]
    rows = claims_table({"e": _res(g)}, [_spec()])
    p = [r.p_value for r in rows]
    assert [r.p_holm for r in rows] == pytest.approx(multipletests(p, method="holm")[1])


def test_comparison_sign_flipped_when_sides_swapped():
    comp = {"quantity": "log_lambda_max", "group_a": {"label": "gd-lr0.1", "source": None},
            "group_b": {"label": "dropout-lr0.1-drop0.1", "source": None}, "difference": 0.7, "ci_low": 0.5,
            "ci_high": 0.9, "se": 0.1, "df": 10.0, "p_value": 1e-5, "n_a": 6, "n_b": 6, "paired": False,
            "loss_note": "training losses differ by 25 %"}
    spec = ClaimSpec("flat", "flatness", "dropout flatter", "log lambda_max", "comparisons", "less",
                     select={"quantity": "log_lambda_max", "methods_a": ["dropout"], "methods_b": ["gd"]})
    row = claims_table({"e": _res(comparisons=[comp])}, [spec])[0]
    assert row.estimate == pytest.approx(-0.7) and (row.ci_low, row.ci_high) == pytest.approx((-0.9, -0.5))
    assert row.verdict == "supported" and row.unit == "dropout-lr0.1-drop0.1 − gd-lr0.1" and row.n_runs == 12
    assert row.note == "training losses differ by 25 %"  # the matched-loss note travels with the row


def test_paired_source_tost_and_scale_half_lr():
    comp = {"quantity": "slope", "group_a": {"label": "dropout-lr0.1-drop0.1", "source": "sgd"},
            "group_b": {"label": "dropout-lr0.1-drop0.1", "source": "dropout"}, "difference": -0.02,
            "ci_low": -0.1, "ci_high": 0.06, "se": 0.03, "df": 5.0, "n_a": 6, "n_b": 6, "paired": True}
    sim = ClaimSpec("sim", "sim", "similar b", "b diff", "comparisons", "equivalent", margin=0.3,
                    select={"quantity": "slope", "same_group": True, "source_a": "dropout", "source_b": "sgd"})
    eos = ClaimSpec("eos", "ctl", "EoS", "ratio", "flatness", "equivalent", null=1.0, margin=0.1,
                    select={"quantity": "lambda_max"}, scale="half_lr")
    flat = {"group_label": "gd-lr0.4", "quantity": "lambda_max", "source": None, "estimate": 5.0, "ci_low": 4.9,
            "ci_high": 5.1, "n_runs": 3, "block": None}
    rows = claims_table({"e": _res(comparisons=[comp], flatness=[flat])}, [sim, eos])
    assert rows[0].estimate == pytest.approx(0.02) and rows[0].n_runs == 6 and rows[0].verdict == "equivalent"
    assert rows[1].estimate == pytest.approx(1.0) and rows[1].ci_high == pytest.approx(1.02)
    assert rows[1].verdict == "equivalent"


def test_not_evaluated_with_pending_reason():
    spec = _spec(select={"quantity": "psi"}, table="flatness", pending="psi not in the results yet")
    rows = claims_table({"e": _res()}, [spec])
    assert rows[0].verdict == "not evaluated" and rows[0].note == "psi not in the results yet"
    assert claims_frame(rows).shape[0] == 1


def test_verdict_of_rules_directly():
    assert verdict_of("less", null=0, p_holm=0.01, ci_low=-1, ci_high=-0.2, alpha=0.05) is Verdict.SUPPORTED
    assert verdict_of("less", null=0, p_holm=0.99, ci_low=0.1, ci_high=1, alpha=0.05) is Verdict.NOT_SUPPORTED
    assert verdict_of("greater", null=0, p_holm=None, ci_low=None, ci_high=None, alpha=0.05) is Verdict.NOT_EVALUATED
    assert verdict_of("equivalent", null=1, p_holm=0.6, ci_low=0.2, ci_high=0.85, alpha=0.05,
                      margin=0.1) is Verdict.DIFFERENT


def test_refused_interval_keeps_its_note():
    row = _group("sgd-lr0.1-bs32", "sgd", 0.5, 0.1)
    row.update(ci_low=None, ci_high=None, se=None, df=None, note="no interval: n_eff 4 < 10")
    rows = claims_table({"e": _res([row])}, [_spec()])
    assert rows[0].verdict == "not evaluated" and rows[0].note.startswith("no interval: n_eff 4 < 10")


def test_interval_withheld_by_the_statistics_is_not_rebuilt_from_se():
    # the statistics layer refuses a group interval (rare large draws) by nulling CI and p but
    # keeps se/df; the claim must not rebuild the interval from them, give it a verdict, or let
    # its p into the Holm family
    refused = _group("sgd-lr0.1-bs32", "sgd", 0.9, 0.1)
    refused.update(ci_low=None, ci_high=None, p_value=None, note="no interval or p: rare large draws")
    sound = _group("dropout-lr0.1-drop0.1", "dropout", 0.5, 0.1)
    specs = [_spec(), _spec(id="b_dropout", text="dropout b > 0", select={"source": "dropout"})]
    rows = {r.claim_id: r for r in claims_table({"e": _res([refused, sound])}, specs)}
    r = rows["b_sgd"]
    assert r.verdict == "not evaluated" and r.ci_low is None and r.ci_high is None and r.p_value is None
    assert r.note.startswith("no interval or p: rare large draws")
    assert rows["b_dropout"].verdict == "supported"
    assert rows["b_dropout"].p_holm == pytest.approx(rows["b_dropout"].p_value)  # a family of one


def test_every_note_field_travels_with_the_claim_row():
    row = _group("sgd-lr0.1-bs32", "sgd", 0.5, 0.1)
    row.update(note="robust location used", psi_note="ψ window short")
    rows = claims_table({"e": _res([row])}, [_spec()])
    assert rows[0].note == "robust location used; ψ window short"


def test_label_fields():
    assert label_fields("dropout-lr0.1-drop0.3") == {"method": "dropout", "lr": 0.1, "batch_size": None,
                                                      "drop_prob": 0.3}


def test_bad_specs_raise():
    with pytest.raises(InputError, match="`table` must be one of"):
        _spec(table="nope")
    with pytest.raises(InputError, match="`kind` must be one of"):
        _spec(kind="bigger")
    with pytest.raises(InputError, match="needs `margin`"):
        _spec(kind="equivalent")
    with pytest.raises(InputError, match="unknown `select` key 'sauce'"):
        _spec(select={"sauce": "sgd"})
    with pytest.raises(InputError, match="`scale` must be"):
        _spec(scale="lr")
    with pytest.raises(InputError, match="`alpha` must be in"):
        claims_table({}, [_spec()], alpha=0.7)
    with pytest.raises(InputError, match="`confidence` must be in"):
        claims_table({}, [_spec()], confidence=1.5)


def test_pooled_summary_truncates_tau2_at_zero_and_is_then_the_fixed_effect_one():
    """Units that agree more closely than their standard errors imply (Q < df): statsmodels' 'dl'
    returns a negative tau^2 and I^2, which would narrow the interval; DerSimonian-Laird truncates
    at 0, where the pooled estimate is the inverse-variance (fixed-effect) mean. Oracle by hand."""
    from varprinciple.report.study_page import summarize_claims
    from varprinciple.study.claims import ClaimRow
    est, se = np.array([1.030, 1.031, 1.032]), np.array([0.010, 0.014, 0.012])
    rows = [ClaimRow("c", "f", "text", "q", "e", f"u{i}", "greater", 1.0, None, float(e), None, None, float(s),
                     5.0, 6, None, None, "supported", "supported") for i, (e, s) in enumerate(zip(est, se))]
    (s,) = summarize_claims(rows, confidence=0.95)
    w = 1 / se ** 2
    mean, sd = float((w * est).sum() / w.sum()), float(np.sqrt(1 / w.sum()))
    z = sps.norm.ppf(0.975)
    assert s.tau2 == 0.0 and s.i2 == 0.0
    assert s.pooled == pytest.approx(mean, rel=1e-12)
    assert (s.ci_low, s.ci_high) == pytest.approx((mean - z * sd, mean + z * sd), rel=1e-12)
