"""The report's tables, built from the results JSON (v1) without recomputing anything.

Each builder returns a :class:`~varprinciple.report.format.ReportTable` (or None when the
results hold nothing for it): raw JSON values in ``data`` (written to CSV at full precision)
and display columns that format them with :mod:`varprinciple.report.format`.

Tables: ``groups`` (per group x source x step: b [CI], one-sided p, n runs, and the
flatness quantities where present), ``comparisons`` (difference [CI], p, Holm p, TOST),
``relations`` (per run), ``flatness`` (per group and quantity) and ``skipped`` (runs left
out of the analysis).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from ..stats.grouping import group_label as stats_group_label
from ._input import ReportData
from .format import (
    MISSING,
    Column,
    ReportTable,
    format_estimate_ci,
    format_fixed,
    format_int,
    format_p,
    format_percent,
    format_r,
    format_sig,
    is_missing,
)

__all__ = [
    "QUANTITY_LABELS",
    "group_label",
    "flatness_frame",
    "groups_table",
    "relations_table",
    "comparisons_table",
    "flatness_table",
    "gamma_table",
    "skipped_table",
    "build_tables",
]

#: Display names of quantities (JSON name -> label).
QUANTITY_LABELS = {
    "slope": "b",
    "lambda_max": "λ_max",
    "hessian_trace": "Tr(H)",
    "psi": "ψ",
    "rho": "ρ",
    "tr_hc": "Tr(HC)",
    "tr_c": "Tr(C)",
    "log_lambda_max": "log λ_max",
    "log_hessian_trace": "log Tr(H)",
    "curvature_alignment": "mean Spearman r(λ, s²)",
    "gamma": "γ (C_ii ∝ H_ii^γ)",
    "gamma_ols": "γ (C_ii ∝ H_ii^γ, OLS)",
}
#: Flatness quantities shown as columns of the groups table, in this order.
GROUP_FLATNESS_COLUMNS = ("lambda_max", "hessian_trace", "psi")


def group_label(group: Any, row: Mapping[str, Any] | None = None) -> str:
    """A readable label for a group given as a label string or a dict of key fields.

    A ``label``/``group_label`` string in ``row`` (or in the dict) wins; otherwise the dict
    is labelled as the statistics layer labels groups (``varprinciple.stats.grouping``):
    ``{"group": "A"}`` -> ``A``; ``{"method": "sgd", "lr": 0.1}`` -> ``sgd lr=0.1``;
    other keys -> ``k1=v1 k2=v2``.

    Examples
    --------
    >>> group_label("sgd"), group_label({"method": "sgd", "lr": 0.1}), group_label({"group": "A"})
    ('sgd', 'sgd lr=0.1', 'A')
    >>> group_label({"method": "dropout"}, {"label": "dropout p=0.5"})
    'dropout p=0.5'
    """
    if row is not None:
        for key in ("group_label", "label"):
            if isinstance(row.get(key), str):
                return row[key]
    if group is None:
        return MISSING
    if isinstance(group, Mapping):
        if isinstance(group.get("label"), str):
            return group["label"]
        return stats_group_label(group)
    return str(group)


def unit_label(side: Any) -> str:
    """Label of one side of a comparison: ``GROUP`` or ``GROUP:SOURCE`` (the ``--compare`` syntax).

    Examples
    --------
    >>> unit_label({"group": {"method": "sgd"}, "label": "sgd", "source": "dropout", "block": None})
    'sgd:dropout'
    >>> unit_label({"method": "sgd"})
    'sgd'
    """
    if isinstance(side, Mapping) and ("label" in side or "source" in side) and "group" in side:
        lab = side.get("label") if isinstance(side.get("label"), str) else group_label(side.get("group"))
        src = side.get("source")
        return f"{lab}:{src}" if not is_missing(src) else lab
    return group_label(side)


def _setting_note(data: ReportData, key: str, prefix: str) -> str:
    """A sentence quoting the analysis' own description of a method (settings[key]), if any."""
    text = data.settings.get(key)
    return f" {prefix}: {text}." if isinstance(text, str) and text else ""


def quantity_label(q: Any) -> str:
    return QUANTITY_LABELS.get(str(q), str(q))


def _ci_header(name: str, level: float | None) -> str:
    return f"{name} [{format_percent(level)} CI]" if level is not None else f"{name} [CI]"


def _isotropy_p(r: dict):
    """The rotation (isotropy) test's p: ``isotropy_p``, or ``alignment_p`` in older results."""
    v = r.get("isotropy_p")
    return r.get("alignment_p") if v is None else v


def _has(rows: list[dict], key: str) -> bool:
    return any(not is_missing(r.get(key)) for r in rows)


def _flatten(row: Mapping[str, Any], prefix: str = "") -> dict:
    """Scalar fields of a JSON row, nested objects flattened as ``key_subkey``."""
    out: dict = {}
    for k, v in row.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}_"))
        elif isinstance(v, list):
            out[f"{prefix}{k}"] = "; ".join(str(x) for x in v) if all(not isinstance(x, (dict, list)) for x in v) \
                else str(v)
        else:
            out[f"{prefix}{k}"] = v
    return out


def _frame(records: list[dict], first: list[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records)
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return df[cols]


def _text(key: str) -> Callable[[Mapping], str]:
    return lambda r: MISSING if is_missing(r.get(key)) else str(r.get(key))


def _with_caveats(cols: list[Column], rows: list[Mapping]) -> list[Column]:
    """``cols`` plus a "Caveats" column (every ``note``/``problem``/``*_note`` field of the row,
    report.caveats) when any row carries one."""
    from .caveats import row_caveats

    if any(row_caveats(r) for r in rows):
        cols = list(cols) + [Column("Caveats", lambda r: "; ".join(row_caveats(r)) or "")]
    return cols


def _est_ci(key: str, lo: str, hi: str, fmt=format_fixed) -> Callable[[Mapping], str]:
    return lambda r: format_estimate_ci(r.get(key), r.get(lo), r.get(hi), fmt)


# ============================================================================ flatness


def _first(row: Mapping, *keys: str) -> Any:
    for k in keys:
        if k in row and not is_missing(row[k]):
            return row[k]
    return None


def flatness_frame(data: ReportData) -> pd.DataFrame:
    """The JSON's ``flatness`` summaries as a frame: group, quantity, source, step, block,
    estimate, ci_low, ci_high, p_value, n_runs (missing keys are null)."""
    rows = []
    for r in data.rows("flatness"):
        rows.append({
            "group": group_label(r.get("group"), r),
            "quantity": r.get("quantity"),
            "source": r.get("source"),
            "step": r.get("step"),
            "block": r.get("block"),
            "estimate": _first(r, "estimate", "mean", "value"),
            "ci_low": r.get("ci_low"),
            "ci_high": r.get("ci_high"),
            "p_value": r.get("p_value"),
            "null": r.get("null"),
            "n_runs": _first(r, "n_runs", "n"),
        })
    cols = ["group", "quantity", "source", "step", "block", "estimate", "ci_low", "ci_high", "p_value", "null",
            "n_runs"]
    return pd.DataFrame.from_records(rows, columns=cols)


def _match_flatness(flat: pd.DataFrame, label: str, source: Any, step: Any, block: Any, q: str) -> dict | None:
    if flat.empty:
        return None
    m = flat[(flat["group"] == label) & (flat["quantity"] == q)]
    if m.empty:
        return None
    recs = m.to_dict(orient="records")

    def ok(rec, key, val):
        return is_missing(rec[key]) or is_missing(val) or rec[key] == val

    recs = [r for r in recs if ok(r, "step", step) and ok(r, "source", source) and ok(r, "block", block)]
    return recs[0] if len(recs) == 1 else None


# ============================================================================ tables


def groups_table(data: ReportData) -> ReportTable | None:
    """Per group x source x step: b [CI], one-sided p, n runs (+ flatness columns)."""
    rows = data.rows("groups")
    if not rows:
        return None
    flat = flatness_frame(data)
    conf = data.confidence
    recs = []
    for r in rows:
        rec = _flatten({k: v for k, v in r.items() if k != "group"})
        rec["group"] = group_label(r.get("group"), r)
        if isinstance(r.get("group"), Mapping):
            rec.update(_flatten(r["group"], "group_"))
        for q in GROUP_FLATNESS_COLUMNS:
            m = _match_flatness(flat, rec["group"], r.get("source"), r.get("step"), r.get("block"), q)
            if m is not None:
                rec[q] = m["estimate"]
                rec[f"{q}_ci_low"] = m["ci_low"]
                rec[f"{q}_ci_high"] = m["ci_high"]
        recs.append(rec)
    df = _frame(recs, ["group", "source", "step", "block", "slope", "ci_low", "ci_high", "p_value", "n_runs"])
    cols = [Column("Group", _text("group")),
            Column("Source", lambda r: MISSING if is_missing(r.get("source")) else
                   f"{r['source']} (control)" if r.get("control") is True else str(r["source"])),
            Column("Step", lambda r: format_int(r.get("step")), "r")]
    if _has(rows, "block"):
        cols.append(Column("Block", lambda r: "all" if is_missing(r.get("block")) else str(r["block"])))
    cols += [Column(_ci_header("b", conf), _est_ci("slope", "ci_low", "ci_high"), "r"),
             Column("p (one-sided)", lambda r: format_p(r.get("p_value")), "r"),
             Column("n runs", lambda r: format_int(r.get("n_runs")), "r")]
    flat_cols = [q for q in GROUP_FLATNESS_COLUMNS if q in df.columns]
    for q in flat_cols:
        cols.append(Column(_ci_header(quantity_label(q), conf),
                           _est_ci(q, f"{q}_ci_low", f"{q}_ci_high", format_sig), "r"))
    notes = [
        "b: mean over runs of the per-run exponent in s² ∝ λ^b; "
        f"CI two-sided at {format_percent(conf) if conf is not None else 'the analysis’ level'}; "
        "p one-sided for H1: b > 0, not adjusted for multiplicity; n runs: the independent replicates."
        + _setting_note(data, "group_ci", "Interval") + (
            " (control): a control noise source (isotropic noise has b = 0 by construction)."
            if any(r.get("control") is True for r in rows) else ""),
    ]
    if flat_cols:
        notes.append(", ".join(quantity_label(q) for q in flat_cols)
                     + ": group summaries over runs from the flatness probes, with their CI.")
    return ReportTable("groups", "Exponent b per group", df, tuple(_with_caveats(cols, rows)), tuple(notes))


def relations_table(data: ReportData) -> ReportTable | None:
    """Per run x source x step (x block): b [CI], one-sided p, Spearman r, counts."""
    rows = data.rows("relations")
    if not rows:
        return None
    conf = data.confidence
    recs = []
    for r in rows:
        rec = _flatten({k: v for k, v in r.items() if k != "group"})
        rec["group"] = group_label(r.get("group"), r) if "group" in r else None
        recs.append(rec)
    df = _frame(recs, ["run_id", "method", "group", "source", "basis", "step", "block", "slope", "ci_low",
                       "ci_high", "p_value", "spearman_r", "spearman_p", "n_directions", "n_excluded",
                       "n_samples", "intercept", "se_slope", "se_intercept", "cov_intercept_slope"])
    cols = [Column("Run", _text("run_id"))]
    if _has(rows, "group"):
        cols.append(Column("Group", _text("group")))
    else:
        cols.append(Column("Method", _text("method")))
    cols += [Column("Source", _text("source")), Column("Step", lambda r: format_int(r.get("step")), "r")]
    if _has(rows, "block"):
        cols.append(Column("Block", lambda r: "all" if is_missing(r.get("block")) else str(r["block"])))
    cols += [Column(_ci_header("b", conf), _est_ci("slope", "ci_low", "ci_high"), "r"),
             Column("p (one-sided)", lambda r: format_p(r.get("p_value")), "r"),
             Column("Spearman r", lambda r: format_r(r.get("spearman_r")), "r"),
             Column("Spearman p", lambda r: format_p(r.get("spearman_p")), "r"),
             ]
    if _has(rows, "ratio"):
        cols.append(Column(_ci_header("Hess./random var.", conf), _est_ci("ratio", "ratio_ci_low", "ratio_ci_high",
                                                                         format_sig), "r"))
    if _has(rows, "alignment_k"):
        cols += [Column("align. k", lambda r: format_sig(r.get("alignment_k")), "r"),
                 Column("isotropy p", lambda r: format_p(_isotropy_p(r)), "r")]
    if _has(rows, "curvature_p"):
        cols.append(Column("curvature p", lambda r: format_p(r.get("curvature_p")), "r"))
    cols += [Column("n dir.", lambda r: format_int(r.get("n_directions")), "r"),
             Column("n excl.", lambda r: format_int(r.get("n_excluded")), "r"),
             Column("K", lambda r: format_int(r.get("n_samples")), "r")]
    notes = [
        "b: slope of log s² on log λ over the Hessian directions that entered the fit (n dir.); "
        f"CI two-sided at {format_percent(conf) if conf is not None else 'the analysis’ level'}; "
        "p one-sided for H1: b > 0, not adjusted for multiplicity. Spearman r: rank correlation of s² with λ "
        "over every Hessian direction (rank statistics may use non-positive eigenvalues), two-sided p, "
        "unadjusted. n excl.: directions left out of the log fit "
        "(eigenvalue not reliably positive); K: noise samples per direction."
        + _setting_note(data, "slope_ci", "Interval for b")
        + (" Hess./random var.: mean noise variance along the Hessian directions over that along random "
           "directions, with its CI." if _has(rows, "ratio") else "")
        + (" align. k: alignment_k = k Σλs² / (Σλ · Σs²) inside the probed subspace (1 for isotropic noise), "
           "over the directions in the fit. isotropy p: one-sided p of its Haar-rotation test, whose null is "
           "noise isotropic within the probed subspace — anisotropic noise unrelated to λ rejects it too, so it "
           "is not evidence of alignment with curvature; unadjusted."
           if _has(rows, "alignment_k") else "")
        + (" curvature p: one-sided p of the curvature test (null: noise variance unrelated to λ given the "
           "probed directions; λ permuted across directions), the evidence for alignment with curvature; "
           "unadjusted." if _has(rows, "curvature_p") else ""),
        "Each row describes one trained network; claims about a training procedure rest on the group table.",
    ]
    return ReportTable("relations", "Per-run relation between noise variance and curvature", df,
                       tuple(_with_caveats(cols, rows)), tuple(notes))


def _cmp_fmt(r: Mapping) -> Callable[[Any], str]:
    return format_fixed if str(r.get("quantity", "slope")) == "slope" else format_sig


def comparisons_table(data: ReportData) -> ReportTable | None:
    """Difference [CI], p, Holm p, (given a margin) TOST p, verdict, (1 - 2 alpha) CI and Holm TOST p,
    and the effect size and probability of superiority with their CIs."""
    rows = data.rows("comparisons")
    if not rows:
        return None
    conf, alpha = data.confidence, data.alpha
    recs = []
    for r in rows:
        rec = _flatten({k: v for k, v in r.items() if k not in ("group_a", "group_b")})
        rec["group_a"] = unit_label(r.get("group_a"))
        rec["group_b"] = unit_label(r.get("group_b"))
        for side in ("group_a", "group_b"):
            if isinstance(r.get(side), Mapping):
                rec.update(_flatten(r[side], f"{side}_"))
        recs.append(rec)
    df = _frame(recs, ["quantity", "group_a", "group_b", "source", "step", "paired", "difference", "ci_low",
                       "ci_high", "p_value", "p_adjusted", "margin", "tost_p", "equivalent", "tost_ci_low",
                       "tost_ci_high"])
    cols = [Column("Quantity", lambda r: quantity_label(r.get("quantity", "slope"))),
            Column("Group A", _text("group_a")), Column("Group B", _text("group_b"))]
    if _has(rows, "source"):
        cols.append(Column("Source", _text("source")))
    if _has(rows, "step"):
        cols.append(Column("Step", lambda r: format_int(r.get("step")), "r"))
    cols += [Column("Paired", lambda r: MISSING if is_missing(r.get("paired")) else ("yes" if r["paired"] else "no")),
             Column(_ci_header("A − B", conf),
                    lambda r: format_estimate_ci(r.get("difference"), r.get("ci_low"), r.get("ci_high"),
                                                 _cmp_fmt(r)), "r"),
             Column("p", lambda r: format_p(r.get("p_value")), "r"),
             Column("Holm p", lambda r: format_p(r.get("p_adjusted")), "r")]
    if any("confirmatory" in r for r in rows):
        cols.append(Column("Family", lambda r: "confirmatory" if r.get("confirmatory") is True else "control"))
    tost = _has(rows, "margin")
    tost_level = None if alpha is None else 1 - 2 * alpha
    if tost:
        cols += [Column("Margin", lambda r: "±" + _cmp_fmt(r)(r.get("margin")) if not is_missing(r.get("margin"))
                        else MISSING, "r"),
                 Column("TOST p", lambda r: format_p(r.get("tost_p")), "r"),
                 Column("Equivalent", lambda r: MISSING if is_missing(r.get("equivalent"))
                        else ("yes" if r["equivalent"] else "not shown")),
                 Column(f"{format_percent(tost_level)} CI" if tost_level is not None else "TOST CI",
                        lambda r: MISSING if is_missing(r.get("tost_ci_low")) and is_missing(r.get("tost_ci_high"))
                        else f"[{_cmp_fmt(r)(r.get('tost_ci_low'))}, {_cmp_fmt(r)(r.get('tost_ci_high'))}]", "r")]
    if tost and _has(rows, "tost_p_adjusted"):
        cols.append(Column("Holm TOST p", lambda r: format_p(r.get("tost_p_adjusted")), "r"))
    if _has(rows, "effect_size"):  # effect sizes (results of varprinciple >= issue 7)
        cols += [Column(_ci_header("Effect size", conf), lambda r: (
                     MISSING if is_missing(r.get("effect_size")) else
                     _EFFECT_PREFIX.get(r.get("effect_size_kind"), "")
                     + format_estimate_ci(r.get("effect_size"), r.get("effect_size_ci_low"),
                                          r.get("effect_size_ci_high"))), "r"),
                 Column(_ci_header("P(A > B)", conf), lambda r: format_estimate_ci(
                     r.get("prob_superiority"), r.get("prob_superiority_ci_low"), r.get("prob_superiority_ci_high")),
                     "r")]
    n_family = sum(1 for r in rows if not is_missing(r.get("p_adjusted")))
    level = format_percent(conf) if conf is not None else "the analysis’ level"
    logs = sorted({quantity_label(r.get("quantity")) for r in rows if str(r.get("quantity", "")).startswith("log_")})
    notes = [
        f"A − B: difference of group means (A minus B) with a two-sided {level} CI; p: two-sided test of "
        "no difference (paired over shared runs where Paired = yes, Welch otherwise), unadjusted."
        + _setting_note(data, "comparison_test", "Test") + " Units are GROUP or GROUP:SOURCE (noise source)."
        + (f" {', '.join(logs)}: differences of group means of the natural log (exp(A − B) is the ratio of "
           "geometric means)." if logs else ""),
        f"Holm p: adjusted with Holm's method over the confirmatory family ({n_family} comparison"
        f"{'s' if n_family != 1 else ''} with a Holm p)" + _setting_note(data, "multiplicity", "; rule").rstrip(".")
        + "; '—' marks comparisons outside it (e.g. controls). All other p-values in this report are unadjusted.",
    ]
    if tost:
        a = format_p(alpha) if alpha is not None else "α"
        notes.append(f"TOST: two one-sided tests of equivalence within ±margin at α = {a}; "
                     f"'yes' when TOST p < α, 'not shown' otherwise (a non-significant difference is not "
                     f"similarity); CI at the matching {format_percent(tost_level) if tost_level else '1 − 2α'} "
                     "level (1 − 2α).")
        if _has(rows, "tost_p_adjusted"):
            notes.append("Holm TOST p: the TOST p-values adjusted with Holm's method over the confirmatory family; "
                         "TOST p and Equivalent are per comparison, not adjusted.")
    if _has(rows, "effect_size"):
        kinds = {r.get("effect_size_kind") for r in rows if not is_missing(r.get("effect_size"))}
        described = "; ".join(_EFFECT_TEXT[k] for k in ("bonett_d", "hedges_g", "d_z") if k in kinds)
        notes.append(f"Effect size: {described or 'standardised mean difference'}; with a {level} CI for the "
                     "population effect. P(A > B): probability that a network of A has the larger value (paired: "
                     "that a network's A exceeds its own B) under the normal model of the tests (unequal variances "
                     "for independent groups), with its own CI.")
    return ReportTable("comparisons", "Comparisons between groups", df, tuple(_with_caveats(cols, rows)),
                       tuple(notes))


#: Prefix and explanation of each ``effect_size_kind`` (stats.effect_size.EffectKind values).
_EFFECT_PREFIX = {"d_z": "d_z ", "hedges_g": "g ", "bonett_d": "d_B "}
_EFFECT_TEXT = {
    "bonett_d": "d_B (Bonett's d: mean difference over the root mean of the two groups' variances, no "
                "equal-variance assumption)",
    "hedges_g": "g (Hedges' g: pooled SD, bias-corrected)",
    "d_z": "d_z (paired: mean difference over the SD of the differences, bias-corrected where defined)",
}


def flatness_table(data: ReportData) -> ReportTable | None:
    """Per group x quantity: estimate [CI], n runs (the JSON's ``flatness`` key)."""
    df = flatness_frame(data)
    if df.empty:
        return None
    conf = data.confidence
    cols = [Column("Group", _text("group")), Column("Quantity", lambda r: quantity_label(r.get("quantity")))]
    if df["source"].notna().any():
        cols.append(Column("Source", _text("source")))
    if df["step"].notna().any():
        cols.append(Column("Step", lambda r: format_int(r.get("step")), "r"))
    if df["block"].notna().any():
        cols.append(Column("Block", lambda r: "all" if is_missing(r.get("block")) else str(r["block"])))
    cols.append(Column(_ci_header("Estimate", conf), _est_ci("estimate", "ci_low", "ci_high", format_sig), "r"))
    has_p = df["p_value"].notna().any()
    if has_p:
        cols.append(Column("p (one-sided)", lambda r: format_p(r.get("p_value")), "r"))
    cols.append(Column("n runs", lambda r: format_int(r.get("n_runs")), "r"))
    notes = ["λ_max: largest Hessian eigenvalue; Tr(H): Hessian trace; ρ = D·Tr(HC) / (Tr(H)·Tr(C)) "
             "(1 for isotropic noise); ψ: exponent of σ² ∝ F^(−ψ). Group summaries over runs, CI two-sided "
             f"at {format_percent(conf) if conf is not None else 'the analysis’ level'}."]
    if has_p:
        nulls = {quantity_label(q): n for q, n in zip(df["quantity"], df["null"]) if not is_missing(n)}
        notes.append("p: one-sided against the null " + ", ".join(f"H1: {q} > {format_sig(n)}"
                                                                   for q, n in nulls.items())
                     + " over runs, unadjusted; '—' where no null applies.")
    return ReportTable("flatness", "Flatness per group", df, tuple(cols), tuple(notes))


def gamma_table(data: ReportData) -> ReportTable | None:
    """Per run x layer: γ of C_ii ∝ H_ii^γ (the JSON's ``gamma`` list, stats.gamma)."""
    rows = data.rows("gamma")
    if not rows:
        return None
    df = _frame([dict(r) for r in rows], ["run_id", "group", "block", "step", "gamma", "gamma_ols", "spearman_r",
                                          "n_params", "n_used", "frac_h_nonpositive", "decades", "note"])
    cols = [Column("Run", _text("run_id")), Column("Group", _text("group")), Column("Layer", _text("block")),
            Column("Step", lambda r: format_int(r.get("step")), "r"),
            Column("γ (Theil–Sen)", lambda r: format_fixed(r.get("gamma")), "r"),
            Column("γ (OLS)", lambda r: format_fixed(r.get("gamma_ols")), "r"),
            Column("Spearman r", lambda r: format_r(r.get("spearman_r")), "r"),
            Column("n used / sampled", lambda r: f"{format_int(r.get('n_used'))} / {format_int(r.get('n_params'))}",
                   "r"),
            Column("share h_ii ≤ 0", lambda r: format_percent(r.get("frac_h_nonpositive")), "r"),
            Column("decades of h_ii", lambda r: format_fixed(r.get("decades")), "r")]
    notes = ("γ: slope of log C_ii on log H_ii over a layer's sampled parameters with H_ii > 0 (Zhang, Yang & "
             "Tu 2026); the group mean over networks with its t interval is in the flatness table "
             "(docs/statistics.md §7).",)
    return ReportTable("gamma", "γ per run and layer (C_ii ∝ H_ii^γ)", df, tuple(_with_caveats(cols, rows)), notes)


def skipped_table(data: ReportData) -> ReportTable | None:
    """Runs the analysis left out, with their problems."""
    rows = data.rows("skipped")
    if not rows:
        return None
    recs = [{"path": r.get("path"), "run_id": r.get("run_id"),
             "problems": "; ".join(str(p) if not isinstance(p, Mapping) else str(p.get("message", p))
                                   for p in (r.get("problems") or []))} for r in rows]
    df = pd.DataFrame.from_records(recs, columns=["path", "run_id", "problems"])
    cols = (Column("Run", _text("run_id")), Column("Path", _text("path")), Column("Problems", _text("problems")))
    return ReportTable("skipped", "Runs left out of the analysis", df, cols,
                       ("These runs failed log-schema validation and were skipped (--skip-invalid).",))


#: Table builders in report order.
TABLE_BUILDERS: tuple[Callable[[ReportData], ReportTable | None], ...] = (
    groups_table, comparisons_table, flatness_table, gamma_table, relations_table, skipped_table)


def build_tables(data: ReportData) -> list[ReportTable]:
    """Every table the results hold something for, in report order."""
    return [t for t in (b(data) for b in TABLE_BUILDERS) if t is not None]
