"""Plotting helpers shared by the figure modules (matplotlib, object-oriented, Agg)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..format import format_estimate_ci, format_percent, is_missing

__all__ = ["COLORS", "color_for", "new_figure", "fit_band", "ci_label", "panel_grid", "lean_log_ticks",
           "MAX_PANELS"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
          "#bcbd22", "#7f7f7f")
MAX_PANELS = 24


def color_for(key: Any, keys: list) -> str:
    return COLORS[keys.index(key) % len(COLORS)] if key in keys else COLORS[-1]


def panel_grid(n: int, *, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def new_figure(n_panels: int, *, panel_w: float = 3.6, panel_h: float = 3.0, max_cols: int = 4,
               sharex: bool = False, sharey: bool = False, fixed: bool = False):
    """A figure with a grid of ``n_panels`` axes (extra axes hidden); returns (fig, axes list).

    ``fixed=True`` uses fixed margins (in inches) instead of matplotlib's constrained layout,
    which is several times slower for many log-scaled panels.
    """
    n_panels = max(int(n_panels), 0)
    rows, cols = panel_grid(max(n_panels, 1), max_cols=max_cols)
    w, h = panel_w * cols + 0.6, panel_h * rows + 0.8
    fig = Figure(figsize=(w, h), layout=None if fixed else "constrained")
    if fixed:
        fig.subplots_adjust(left=0.75 / w, right=1 - 0.2 / w, bottom=0.55 / h, top=1 - 0.6 / h,
                            wspace=0.8 / panel_w * cols / max(cols, 1), hspace=0.9 / panel_h)
    axs = fig.subplots(rows, cols, squeeze=False, sharex=sharex, sharey=sharey).ravel().tolist()
    for ax in axs[n_panels:]:
        ax.set_visible(False)
    return fig, axs[:n_panels]


def norm_block(v: Any) -> Any:
    return None if is_missing(v) else str(v)


def run_group(rel: Mapping[str, Any]) -> str:
    """The group label of a relation row (its ``group`` label, else its method)."""
    from ..tables import group_label

    return group_label(rel.get("group"), rel) if rel.get("group") is not None else str(rel.get("method"))


def group_level_relations(data) -> list[dict]:
    """Hessian relations at the group level: those whose (group, source, step, block) has a group row.

    Without group rows, every Hessian relation.
    """
    from ..tables import group_label

    rels = [r for r in data.rows("relations") if str(r.get("basis", "hessian")) == "hessian"]
    groups = data.rows("groups")
    keys = {(group_label(g.get("group"), g), g.get("source"), g.get("step"), norm_block(g.get("block")))
            for g in groups if not is_missing(g.get("step"))}
    if not groups:
        return rels
    out = [r for r in rels if (run_group(r), r.get("source"), r.get("step"), norm_block(r.get("block"))) in keys]
    # a group whose runs were analysed at different steps (each run's last probe, e.g. runs
    # stopped at a target loss) has step null and the list `steps`: each of its runs enters
    # with its last relation among those steps, drawn in one panel labelled "last"
    for g in groups:
        if not is_missing(g.get("step")):
            continue
        steps = set(g.get("steps") or [])
        src, blk = g.get("source"), norm_block(g.get("block"))
        for rid in g.get("run_ids") or []:
            cand = [r for r in rels if r.get("run_id") == rid and r.get("source") == src
                    and norm_block(r.get("block")) == blk and r.get("step") in steps]
            if cand:
                best = max(cand, key=lambda r: r["step"])
                out.append({**best, "step": LAST_STEP, "probe_step": best["step"]})
    return out


#: Panel step of a group analysed at each run's last probe step when those steps differ.
LAST_STEP = "last"


def group_step(g: dict) -> Any:
    """The panel step of a group row: its step, or :data:`LAST_STEP` when it is null."""
    return LAST_STEP if is_missing(g.get("step")) else g.get("step")


def panel_keys(rels: list[dict]) -> list[tuple]:
    """Distinct (source, step, block) of relation rows, in order of appearance."""
    keys: list[tuple] = []
    for r in rels:
        k = (r.get("source"), r.get("step"), norm_block(r.get("block")))
        if k not in keys:
            keys.append(k)
    return keys


def panel_title(src: Any, step: Any, block: Any) -> str:
    return f"source {src} · step {step}" + (f" · {block}" if block is not None else "")


def lean_log_ticks(ax) -> None:
    """Readable, cheap log ticks: no minor ticks beyond 1.5 decades (they dominate drawing
    time), unlabelled minor ticks from 1 decade on, minor ticks at 2 and 5 labelled below."""
    from matplotlib.ticker import LogLocator, NullFormatter, NullLocator

    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        lo, hi = sorted(lim)
        if axis.get_scale() != "log" or lo <= 0:
            continue
        decades = math.log10(hi / lo)
        if decades > 1.5:
            axis.set_minor_locator(NullLocator())
        elif decades >= 1.0:
            axis.set_minor_formatter(NullFormatter())
        else:
            axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))


def _norm_ppf(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def fit_band(rel: Mapping[str, Any], log_lam: np.ndarray, *, confidence: float | None):
    """Fitted line and band of a relation over natural-log eigenvalues.

    Returns ``(fit, low, high)`` in natural-log variance units; ``low``/``high`` are None when
    the relation carries no standard errors. The band is fit ± m·SE(fit) with
    SE(fit)² = se_intercept² + x² se_slope² + 2x cov_intercept_slope and the multiplier
    m = (ci_high − ci_low) / (2 se_slope), i.e. the one the analysis' slope CI implies
    (a normal quantile at ``confidence`` when that is undefined).
    """
    a, b = rel.get("intercept"), rel.get("slope")
    if is_missing(a) or is_missing(b):
        return None, None, None
    fit = float(a) + float(b) * log_lam
    se_a, se_b, cov = rel.get("se_intercept"), rel.get("se_slope"), rel.get("cov_intercept_slope")
    if is_missing(se_a) or is_missing(se_b):
        return fit, None, None
    cov = 0.0 if is_missing(cov) else float(cov)
    var = float(se_a) ** 2 + log_lam ** 2 * float(se_b) ** 2 + 2 * log_lam * cov
    se = np.sqrt(np.clip(var, 0.0, None))
    lo, hi = rel.get("ci_low"), rel.get("ci_high")
    if not is_missing(lo) and not is_missing(hi) and float(se_b) > 0:
        m = (float(hi) - float(lo)) / (2 * float(se_b))
    else:
        m = _norm_ppf(0.5 + (confidence if confidence is not None else 0.95) / 2)
    return fit, fit - m * se, fit + m * se


def ci_label(prefix: str, est: Any, lo: Any, hi: Any, confidence: float | None) -> str:
    level = f" ({format_percent(confidence)} CI)" if confidence is not None else ""
    return f"{prefix} = {format_estimate_ci(est, lo, hi)}{level}"
