"""Forest plot of the per-run exponent b by group, with the group mean and its CI."""

from __future__ import annotations


from .._input import ReportData
from ..format import format_estimate_ci, format_percent, is_missing
from ..tables import group_label
from ._plot import (MAX_PANELS, color_for, group_level_relations, group_step, new_figure, norm_block, panel_keys,
                    panel_title, run_group)
from .registry import FigureSpec, register_figure

__all__ = ["forest_plot"]


def _err(est, lo, hi):
    if is_missing(lo) or is_missing(hi) or is_missing(est):
        return None
    return [[max(0.0, float(est) - float(lo))], [max(0.0, float(hi) - float(est))]]


def forest_plot(data: ReportData):
    """One panel per source x step; rows are runs grouped by group, then the group's mean (diamond)."""
    conf = data.confidence
    rels = group_level_relations(data)
    groups_rows = data.rows("groups")
    glab = run_group
    keys = panel_keys(rels)
    shown = keys[:MAX_PANELS]
    glabels: list[str] = []
    for r in rels:
        if glab(r) not in glabels:
            glabels.append(glab(r))
    n_rows_max = max(len([r for r in rels if (r.get("source"), r.get("step"), norm_block(r.get("block"))) == k])
                     + 2 * len(glabels) for k in shown) if shown else 0
    fig, axs = new_figure(len(shown), panel_w=4.8, panel_h=max(2.5, 0.22 * n_rows_max + 1.0), max_cols=3)
    for ax, (src, step, block) in zip(axs, shown):
        y = 0.0
        ticks, labels = [], []
        for g in glabels:
            color = color_for(g, glabels)
            runs = [r for r in rels if glab(r) == g and (r.get("source"), r.get("step"),
                                                           norm_block(r.get("block"))) == (src, step, block)]
            if not runs:
                continue
            for r in sorted(runs, key=lambda r: str(r.get("run_id"))):
                if not is_missing(r.get("slope")):
                    ax.errorbar([float(r["slope"])], [y], xerr=_err(r["slope"], r.get("ci_low"), r.get("ci_high")),
                                fmt="o", ms=4, color=color, ecolor=color, elinewidth=1.1, capsize=2)
                ticks.append(y)
                labels.append(str(r.get("run_id")))
                y -= 1
            grow = next((gr for gr in groups_rows if group_label(gr.get("group"), gr) == g
                         and (gr.get("source"), group_step(gr), norm_block(gr.get("block"))) == (src, step, block)),
                        None)
            if grow is not None and not is_missing(grow.get("slope")):
                ax.errorbar([float(grow["slope"])], [y], xerr=_err(grow["slope"], grow.get("ci_low"),
                                                                   grow.get("ci_high")),
                            fmt="D", ms=7, color=color, ecolor=color, elinewidth=2.4, capsize=3,
                            markeredgecolor="black")
                ticks.append(y)
                labels.append(f"{g} mean (n = {grow.get('n_runs')}): "
                              f"{format_estimate_ci(grow.get('slope'), grow.get('ci_low'), grow.get('ci_high'))}")
                y -= 1
            y -= 0.6
        ax.axvline(0.0, color="0.3", lw=0.9, ls="--")
        ax.axvline(1.0, color="0.6", lw=0.9, ls=":")
        ax.set_yticks(ticks)
        ax.set_yticklabels(labels, fontsize=7)
        for t in ax.get_yticklabels():
            if "mean" in t.get_text():
                t.set_fontweight("bold")
        ax.set_ylim(y + 0.3, 0.8)
        ax.set_xlabel(f"exponent b ({format_percent(conf) if conf else ''} CI)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(panel_title(src, step, block), fontsize=9)
        ax.grid(axis="x", color="0.9", lw=0.6)
    fig.suptitle("Per-run exponent b with CI; diamonds: group mean over runs (dashed: b = 0, dotted: b = 1)",
                 fontsize=9)
    return fig


register_figure(FigureSpec(
    "forest", "Forest plot of b",
    "Per-run exponents b with their CIs, grouped by training procedure; the diamond is the group mean over "
    "runs with its CI (runs are the replicates). Dashed: b = 0 (no curvature dependence); dotted: b = 1.",
    ("relations",), forest_plot))
