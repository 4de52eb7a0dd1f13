"""Log-log noise variance s² against Hessian eigenvalue λ: per run and pooled by group.

Points: the per-direction table's variances; filled = entered the log-log fit, hollow =
excluded (eigenvalue not reliably positive; those with λ <= 0 cannot sit on a log axis and
are counted in the panel). Lines: the fitted relation exp(intercept + b log λ) from the
results JSON with its CI band; dashed horizontal line: mean variance along the random
directions of the same run/probe/source (a reference for isotropic-looking noise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .._input import ReportData
from ..format import format_estimate_ci, format_percent, is_missing
from ..tables import group_label
from ._plot import (MAX_PANELS, color_for, fit_band, group_level_relations, group_step, lean_log_ticks, new_figure,
                    norm_block, panel_keys, panel_title, run_group)
from .registry import FigureSpec, register_figure

__all__ = ["loglog_runs", "loglog_pooled"]


def _norm(v: Any) -> Any:
    return None if is_missing(v) else v


def _key_frame(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    # object dtype: a string column would turn the whole network's None into NaN (!= None)
    df["_block"] = pd.Series([None if is_missing(b) else str(b) for b in df["block"]], index=df.index, dtype=object)
    df["_basis"] = df["basis"].astype(str)
    return df


def _hessian_relations(data: ReportData) -> list[dict]:
    return [r for r in data.rows("relations") if str(r.get("basis", "hessian")) == "hessian"]


def _sources(data: ReportData) -> list[str]:
    out: list[str] = []
    for r in _hessian_relations(data):
        if r.get("source") not in out:
            out.append(r.get("source"))
    return out


#: Excluded directions more than this factor below the smallest included eigenvalue are
#: not drawn (they would squash the fitted range); the panel counts them.
FAR_BELOW = 100.0


def _draw_points(ax, pts: pd.DataFrame, color: str, *, size: float = 18, label: str | None = None) -> int:
    """Draw included (filled) and excluded (hollow) directions; return #excluded not drawn.

    Not drawn: excluded directions with λ <= 0 (no place on a log axis) or far below the
    included range (:data:`FAR_BELOW`).
    """
    inc = pts[pts["included"]]
    exc = pts[~pts["included"]]
    ax.scatter(inc["eigenvalue"], inc["variance"], s=size, color=color, alpha=0.85, label=label, zorder=3)
    lam = exc["eigenvalue"].to_numpy(dtype=float)
    floor = inc["eigenvalue"].min() / FAR_BELOW if len(inc) else 0.0
    show = np.isfinite(lam) & (lam > 0) & (lam >= floor)
    if show.any():
        ax.scatter(lam[show], exc["variance"].to_numpy(dtype=float)[show], s=size, facecolors="none",
                   edgecolors=color, linewidths=1.0, alpha=0.9, zorder=3)
    return int((~show).sum())


def _draw_fit(ax, rel: Mapping, lam: np.ndarray, color: str, confidence: float | None, *, band: bool = True,
              lw: float = 1.6, alpha: float = 1.0, label: str | None = None, band_alpha: float = 0.18) -> None:
    lam = lam[np.isfinite(lam) & (lam > 0)]
    if lam.size == 0:
        return
    x = np.linspace(np.log(lam.min()), np.log(lam.max()), 60)
    fit, lo, hi = fit_band(rel, x, confidence=confidence)
    if fit is None:
        return
    ax.plot(np.exp(x), np.exp(fit), color=color, lw=lw, alpha=alpha, label=label, zorder=4)
    if band and lo is not None:
        ax.fill_between(np.exp(x), np.exp(lo), np.exp(hi), color=color, alpha=band_alpha, lw=0, zorder=2)


def _random_line(ax, rnd: pd.DataFrame, color: str, label: str | None = None) -> None:
    v = rnd["variance"].to_numpy(dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size:
        ax.axhline(float(v.mean()), color=color, ls="--", lw=1.1, alpha=0.9, label=label, zorder=1)


def loglog_runs(data: ReportData):
    """One panel per run x probe step (x block): every source's points, fit and band."""
    conf = data.confidence
    d = _key_frame(data.directions)
    rels = _hessian_relations(data)
    sources = _sources(data)
    keys: list[tuple] = []
    for r in rels:
        k = (str(r.get("run_id")), r.get("step"), _norm(r.get("block")))
        if k not in keys:
            keys.append(k)
    shown = keys[:MAX_PANELS]
    fig, axs = new_figure(len(shown), fixed=True)
    for ax, (run, step, block) in zip(axs, shown):
        sel = d[(d["run_id"].astype(str) == run) & (d["step"] == step)
                & d["_block"].map(lambda b: b == block)]
        n_hidden = 0
        for src in sources:
            color = color_for(src, sources)
            pts = sel[(sel["source"] == src) & (sel["_basis"] == "hessian")]
            rel = next((r for r in rels if (str(r.get("run_id")), r.get("step"), _norm(r.get("block")), r.get("source"))
                        == (run, step, block, src)), None)
            if rel is None and pts.empty:
                continue
            label = src
            if rel is not None:
                label = f"{src}: b = {format_estimate_ci(rel.get('slope'), rel.get('ci_low'), rel.get('ci_high'))}"
            n_hidden += _draw_points(ax, pts, color, label=label)
            if rel is not None and len(pts):
                _draw_fit(ax, rel, pts.loc[pts["included"], "eigenvalue"].to_numpy(float), color, conf)
            _random_line(ax, sel[(sel["source"] == src) & (sel["_basis"] == "random")], color)
        _finish_loglog_panel(ax, f"{run} · step {step}" + (f" · {block}" if block else ""), n_hidden)
    extra = f"; first {MAX_PANELS} of {len(keys)} panels" if len(keys) > len(shown) else ""
    fig.suptitle(f"Noise variance vs curvature per run (filled: in the fit; hollow: excluded; dashed: "
                 f"random-direction mean; band: {format_percent(conf) if conf else ''} CI{extra})", fontsize=9)
    return fig


def loglog_pooled(data: ReportData):
    """One panel per source x step: all runs coloured by group, per-run fits, group b in the legend."""
    conf = data.confidence
    d = _key_frame(data.directions)
    rels = group_level_relations(data)
    groups_rows = data.rows("groups")
    run_groups = {str(r.get("run_id")): run_group(r) for r in rels}
    glabels = list(dict.fromkeys(run_groups.values()))
    keys = panel_keys(rels)
    shown = keys[:MAX_PANELS]
    fig, axs = new_figure(len(shown), panel_w=4.6, panel_h=3.6, max_cols=3, fixed=True)
    for ax, (src, step, block) in zip(axs, shown):
        sel = d[(d["source"] == src) & d["_block"].map(lambda b: b == block)]
        # each run's points at its relation's probe step (the panel step may be "last")
        probe_step = {str(r.get("run_id")): r.get("probe_step", r.get("step")) for r in rels
                      if (r.get("source"), r.get("step"), norm_block(r.get("block"))) == (src, step, block)}
        sel = sel[[probe_step.get(str(rid)) == st for rid, st in zip(sel["run_id"], sel["step"])]]
        n_hidden = 0
        for g in glabels:
            color = color_for(g, glabels)
            runs = [run for run, gg in run_groups.items() if gg == g]
            grow = next((r for r in groups_rows if group_label(r.get("group"), r) == g
                         and (r.get("source"), group_step(r), norm_block(r.get("block"))) == (src, step, block)),
                        None)
            label = g
            if grow is not None:
                label = (f"{g}: b̄ = {format_estimate_ci(grow.get('slope'), grow.get('ci_low'), grow.get('ci_high'))}"
                         f", n = {grow.get('n_runs')}")
            first = True
            for run in runs:
                pts = sel[(sel["run_id"].astype(str) == run) & (sel["_basis"] == "hessian")]
                if pts.empty:
                    continue
                n_hidden += _draw_points(ax, pts, color, size=10, label=label if first else None)
                first = False
                rel = next((r for r in rels if str(r.get("run_id")) == run and (
                    r.get("source"), r.get("step"), norm_block(r.get("block"))) == (src, step, block)), None)
                if rel is not None:
                    _draw_fit(ax, rel, pts.loc[pts["included"], "eigenvalue"].to_numpy(float), color, conf,
                              lw=0.9, alpha=0.6, band_alpha=0.07)
            if grow is not None:
                _draw_group_line(ax, grow, sel[sel["run_id"].astype(str).isin(runs) & (sel["_basis"] == "hessian")
                                              & sel["included"]], color)
            rnd = sel[sel["run_id"].astype(str).isin(runs) & (sel["_basis"] == "random")]
            _random_line(ax, rnd, color)
        _finish_loglog_panel(ax, panel_title(src, step, block), n_hidden)
    fig.suptitle("Noise variance vs curvature pooled by group (thick lines: group mean relation; thin lines and "
                 "bands: per-run fits with their CIs; "
                 f"dashed: random-direction mean; legend: group mean b with {format_percent(conf) if conf else ''} "
                 "CI)", fontsize=9)
    return fig


register_figure(FigureSpec(
    "loglog_runs", "Variance vs eigenvalue per run",
    "Log-log noise variance s² against Hessian eigenvalue λ, one panel per run and probe. Filled points "
    "entered the fit, hollow ones were excluded; the line is the fitted relation with its CI band; the "
    "dashed line is the mean variance along random directions, where logged.",
    ("relations", "directions"), loglog_runs))

register_figure(FigureSpec(
    "loglog_pooled", "Variance vs eigenvalue pooled by group",
    "All runs of each group on log-log axes, one panel per noise source: points, thin lines and light bands "
    "are runs and their fitted relations with CIs (coloured by group); the legend gives the group mean "
    "exponent b with its CI and the number of runs.",
    ("relations", "directions"), loglog_pooled))


def _finish_loglog_panel(ax, title: str, n_hidden: int) -> None:
    """Log-log axes, labels, the count of excluded directions not drawn, legend, ticks."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("eigenvalue λ", fontsize=8)
    ax.set_ylabel("noise variance s²", fontsize=8)
    ax.tick_params(labelsize=7)
    if n_hidden:
        ax.text(0.02, 0.02, f"{n_hidden} excluded (λ ≤ 0 or ≪ fit range) not shown", transform=ax.transAxes,
                fontsize=6, color="0.35")
    ax.legend(fontsize=6, loc="upper left", frameon=False)
    lean_log_ticks(ax)


def _draw_group_line(ax, grow: dict, pts, color) -> None:
    """The group's mean relation (mean intercept, mean slope over runs) over its runs' fitted range."""
    a, b = grow.get("mean_intercept"), grow.get("slope")
    if a is None or b is None or pts.empty:
        return
    lam = pts["eigenvalue"].to_numpy(float)
    x = np.geomspace(lam.min(), lam.max(), 50)
    ax.plot(x, np.exp(a + b * np.log(x)), color=color, lw=2.4, alpha=0.95, zorder=4)
