"""The readable text summary printed by ``varprinciple test`` (formatting only).

The terminal of ``varprinciple test`` / ``study`` prints the findings block first
(:mod:`varprinciple.report.findings`), which renders every caveat of the results beside its
number; it then prints this summary with ``caveats=False``, so that no caveat is printed twice.
A Python user calling ``summary()`` alone gets the caveats here (``caveats=True``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["format_summary"]

_MAX_RELATION_ROWS = 40
_EFFECT_LABEL = {"d_z": "d_z", "hedges_g": "g", "bonett_d": "d_B"}


def _f(x, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    if isinstance(x, (float, np.floating)):
        return f"{x:.{nd}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{nd}f}"
    return str(x)


def _p(x) -> str:
    if x is None or pd.isna(x) or not np.isfinite(x):
        return "-"
    return "<1e-4" if x < 1e-4 else f"{x:.4f}"


def _ci(lo, hi) -> str:
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return "-"
    return f"[{_f(lo)}, {_f(hi)}]" if np.isfinite(lo) and np.isfinite(hi) else "-"


def _ci2(lo, hi) -> str:
    """An interval at 2 decimals (effect sizes, probabilities)."""
    return f"[{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else "-"


def _table(rows: list[dict]) -> str:
    if not rows:
        return "  (none)"
    df = pd.DataFrame(rows)
    return "\n".join("  " + line for line in df.to_string(index=False).splitlines())


def format_summary(res, *, caveats: bool = True) -> str:
    """The detailed tables of an analysis; with ``caveats`` also its caveats (row notes,
    study-wide notes, skipped and identical runs) — leave them out where the findings block,
    which shows each of them beside its number, is printed too (the CLI)."""
    s = res.settings
    conf = int(round(100 * s["confidence"]))
    out = [f"varprinciple test: {res.provenance['n_runs']} run(s) from {res.provenance['input']}; "
           f"resamples {s['resamples']}, seed {s['seed']}"]
    if res.skipped and not caveats:
        out.append(f"SKIPPED {len(res.skipped)} invalid run(s): their problems are listed with the findings above")
    elif res.skipped:
        out.append(f"SKIPPED {len(res.skipped)} invalid run(s):")
        for sk in res.skipped:
            out.append(f"  {sk['run_id'] or sk['path']}: " + "; ".join(sk["problems"]))
    for ids in res.identical if caveats else ():
        out.append(f"WARNING identical noise tables in runs {', '.join(ids)} (not independent replicates)")
    rel = res.relations
    out.append("")
    out.append(f"Per-run exponent b (log s^2 on log lambda, Hessian basis; {conf}% CI, p one-sided b > 0):")
    if len(rel) <= _MAX_RELATION_ROWS:
        rows = []
        for r in rel.itertuples(index=False):
            row = {"run": r.run_id, "source": r.source, "step": r.step}
            if "block" in rel and rel["block"].notna().any():
                row["block"] = r.block if r.block is not None else "all"
            row.update({"b": _f(r.slope), f"{conf}% CI": _ci(r.ci_low, r.ci_high), "p": _p(r.p_value),
                        "spearman": _f(r.spearman_r), "n_dir": r.n_directions, "excl": r.n_excluded,
                        "K": r.n_samples, "align_k": _f(r.alignment_k), "iso_p": _p(r.isotropy_p),
                        "curv_p": _p(r.curvature_p)})
            if "ratio" in rel and rel["ratio"].notna().any():
                row["H/rand"] = _f(r.ratio)
            rows.append(row)
        out.append(_table(rows))
    else:
        out.append(f"  {len(rel)} relations (see the JSON); median b by group and source:")
        rows = []
        for (g, src), sub in rel.groupby(["group", "source"], sort=True):
            rows.append({"group": g, "source": src, "relations": len(sub), "median b": _f(sub["slope"].median()),
                         "share CI>0": _f(float((sub["ci_low"] > 0).mean()), 2)})
        out.append(_table(rows))
    out.append("")
    out.append(f"Groups (runs as replicates; mean b, {conf}% t CI, p one-sided b > 0):")
    rows = []
    for r in res.groups.itertuples(index=False):
        row = {"group": r.group, "source": r.source, "step": r.step if not pd.isna(r.step) else "last"}
        if "block" in res.groups and res.groups["block"].notna().any():
            row["block"] = r.block if r.block is not None else "all"
        row.update({"b": _f(r.slope), f"{conf}% CI": _ci(r.ci_low, r.ci_high), "p": _p(r.p_value),
                    "n_runs": r.n_runs})
        rows.append(row)
    out.append(_table(rows))
    if len(res.flatness):
        out.append("")
        out.append(f"Flatness (mean over runs, {conf}% t CI):")
        rows = [{"group": r.group, "quantity": r.quantity, "source": r.source if isinstance(r.source, str) else "-",
                 "mean": _f(r.estimate), f"{conf}% CI": _ci(r.ci_low, r.ci_high), "n_runs": r.n_runs}
                for r in res.flatness.itertuples(index=False)]
        out.append(_table(rows))
    psi_runs = [r for r in res.extra.get("variance_flatness", []) if isinstance(r, dict)]
    if psi_runs:
        out.append("")
        out.append(f"ψ per run (σ² ∝ F^-ψ over the non-drift PCs; {conf}% CI, p one-sided ψ > 0; n_eff_min: smallest "
                   "effective sample size along a fitted PC; lever arm: decades of F spanned; docs/flatness.md):")
        rows = [{"run": r.get("run_id"), "group": r.get("group"), "psi": _f(r.get("psi")),
                 f"{conf}% CI": _ci(r.get("ci_low"), r.get("ci_high")), "p": _p(r.get("p_value")),
                 "n_eff_min": _f(r.get("n_eff_min"), 1), "lever arm": _f(r.get("lever_arm"), 2)}
                | ({"note": r.get("note") or r.get("problem") or ""} if caveats else {})
                for r in psi_runs]
        out.append(_table(rows))
    out += _gamma_lines(res, conf)
    out.append("")
    margin = s["equivalence_margin"]
    out.append(f"Comparisons (difference a - b; {conf}% CI; two-sided p; Holm over the confirmatory family; "
               "effect: Bonett's d_B (unequal variances) or paired d_z; "
               "P(a>b): probability of superiority, normal model"
               + (f"; TOST margin {margin}, equivalent per comparison and Holm-adjusted" if margin is not None
                  else "") + "):")
    rows = []
    for r in res.comparisons.itertuples(index=False):
        a = r.label_a + (f":{r.source_a}" if isinstance(r.source_a, str) else "")
        b = r.label_b + (f":{r.source_b}" if isinstance(r.source_b, str) else "")
        row = {"quantity": r.quantity, "a": a, "b": b, "test": "paired" if r.paired else "Welch",
               "diff": _f(r.difference), f"{conf}% CI": _ci(r.ci_low, r.ci_high), "p": _p(r.p_value),
               "p_holm": _p(r.p_adjusted) if r.confirmatory else "(control)",
               "effect": f"{_EFFECT_LABEL.get(r.effect_size_kind, 'g')} {_f(r.effect_size, 2)}"
                         if np.isfinite(r.effect_size) else "-",
               "effect CI": _ci2(r.effect_size_ci_low, r.effect_size_ci_high),
               "P(a>b)": _f(r.prob_superiority, 2), "P CI": _ci2(r.prob_superiority_ci_low,
                                                                r.prob_superiority_ci_high)}
        if margin is not None and r.quantity == "slope":
            row["tost_p"] = _p(r.tost_p)
            row["equivalent"] = {True: "yes", False: "no"}.get(r.equivalent, "-")
            row["tost_holm"] = _p(r.tost_p_adjusted) if r.confirmatory else "(control)"
            row["equiv_holm"] = {True: "yes", False: "no"}.get(r.equivalent_adjusted, "-")
        rows.append(row)
    out.append(_table(rows))
    if caveats:
        out += _row_notes(res)
        out += [f"NOTE {n}" for n in res.notes]
    return "\n".join(out)


def _gamma_lines(res, conf: int) -> list[str]:
    """gamma of C_ii ~ H_ii^gamma per layer (stats.gamma): group rows with their notes, then per run."""
    runs = [r for r in res.extra.get("gamma", []) if isinstance(r, dict)]
    if not runs:
        return []
    out = ["", f"γ per layer (C_ii ∝ H_ii^γ, Zhang, Yang & Tu 2026; per run Theil–Sen slope of log c_ii on log "
               f"h_ii, gamma_ols = OLS; group: mean over networks, {conf}% t CI, p one-sided γ > 1):"]
    f = res.flatness
    g = f[f["quantity"].isin(["gamma", "gamma_ols"])] if len(f) else f
    out.append(_table([{"group": r.group, "block": r.block, "quantity": r.quantity, "mean": _f(r.estimate),
                        f"{conf}% CI": _ci(r.ci_low, r.ci_high), "p": _p(r.p_value), "n_runs": r.n_runs,
                        "note": r.note if isinstance(r.note, str) else ""} for r in g.itertuples(index=False)]))
    out.append(_table([{"run": r["run_id"], "block": r["block"], "gamma": _f(r["gamma"]),
                        "gamma_ols": _f(r["gamma_ols"]), "n_used": r["n_used"],
                        "h<=0": _f(r["frac_h_nonpositive"], 2), "decades": _f(r["decades"], 2),
                        "note": r.get("note") or ""} for r in runs]))
    return out


def _row_notes(res) -> list[str]:
    """The rows' own caveats (field ``note``), each distinct text once with its row count."""
    out = []
    for what, df in (("relations", res.relations), ("groups", res.groups), ("flatness", res.flatness)):
        if df is None or df.empty or "note" not in df:
            continue
        counts: dict[str, int] = {}
        for n in df["note"]:
            if isinstance(n, str) and n:
                counts[n] = counts.get(n, 0) + 1
        for text, c in counts.items():
            out.append(f"NOTE ({what}, {c} row{'s' if c > 1 else ''}) {text}")
    return out
