"""Flatness comparison: per-group λ_max, Tr(H), ψ, ρ ... with their CIs (the 'flatness' key)."""

from __future__ import annotations


from .._input import ReportData
from ..format import format_percent, is_missing
from ..tables import flatness_frame, quantity_label
from ._plot import MAX_PANELS, color_for, new_figure
from .registry import FigureSpec, register_figure

__all__ = ["flatness_plot"]

MARKERS = ("o", "s", "^", "v", "D")


def _comparison_lines(data: ReportData, q: str, step) -> list[str]:
    """Text of the JSON's comparisons of ``q`` (or of its log) between groups, for a panel."""
    from ..format import format_estimate_ci, format_p
    from ..tables import unit_label

    out = []
    for c in data.rows("comparisons"):
        cq = str(c.get("quantity"))
        if cq not in (q, f"log_{q}") or (step is not None and c.get("step") not in (None, step)):
            continue
        what = "log diff." if cq.startswith("log_") else "diff."
        holm = f", Holm p {format_p(c.get('p_adjusted'))}" if not is_missing(c.get("p_adjusted")) else ""
        out.append(f"{unit_label(c.get('group_a'))} − {unit_label(c.get('group_b'))}: {what} "
                   f"{format_estimate_ci(c.get('difference'), c.get('ci_low'), c.get('ci_high'))}, "
                   f"p {format_p(c.get('p_value'))}{holm}")
    return out[:4]


def flatness_plot(data: ReportData):
    """One panel per quantity (x step, x source where given): group estimate and CI."""
    conf = data.confidence
    df = flatness_frame(data)
    df = df[df["estimate"].notna()]
    df["_src"] = ["" if is_missing(s) else str(s) for s in df["source"]]  # "": no source
    keys: list[tuple] = []
    for rec in df.itertuples(index=False):
        k = (rec.quantity, None if is_missing(rec.step) else int(rec.step))
        if k not in keys:
            keys.append(k)
    shown = keys[:MAX_PANELS]
    groups = list(dict.fromkeys(df["group"].tolist()))
    fig, axs = new_figure(len(shown), panel_w=3.4, panel_h=3.0)
    for ax, (q, step) in zip(axs, shown):
        sel = df[(df["quantity"] == q) & ((df["step"] == step) if step is not None else df["step"].isna())]
        sources = list(dict.fromkeys(sel["_src"].tolist()))
        width = 0.6 / max(1, len(sources))
        for i, g in enumerate(groups):
            for j, s in enumerate(sources):
                row = sel[(sel["group"] == g) & (sel["_src"] == s)]
                if row.empty:
                    continue
                r = row.iloc[0]
                x = i + (j - (len(sources) - 1) / 2) * width
                err = None
                if not is_missing(r["ci_low"]) and not is_missing(r["ci_high"]):
                    err = [[max(0.0, r["estimate"] - r["ci_low"])], [max(0.0, r["ci_high"] - r["estimate"])]]
                ax.errorbar([x], [r["estimate"]], yerr=err, fmt=MARKERS[j % len(MARKERS)], ms=6,
                            color=color_for(g, groups), capsize=3, elinewidth=1.4)
        for j, s in enumerate(sources):
            if s:
                ax.plot([], [], MARKERS[j % len(MARKERS)], color="0.35", label=s)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, fontsize=7, rotation=20)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_title(f"{quantity_label(q)}" + (f" · step {step}" if step is not None else ""), fontsize=9)
        if q == "rho":
            ax.axhline(1.0, color="0.5", ls="--", lw=0.9)
        elif q == "curvature_alignment":
            ax.axhline(0.0, color="0.5", ls="--", lw=0.9)
        ax.tick_params(axis="y", labelsize=7)
        cmp_lines = _comparison_lines(data, q, step)
        if cmp_lines:
            ax.set_xlabel("\n".join(cmp_lines), fontsize=6, color="0.25")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, frameon=False, title="source", title_fontsize=6)
    fig.suptitle(f"Flatness and alignment per group (mean over runs, {format_percent(conf) if conf else ''} CI)", fontsize=9)
    return fig


register_figure(FigureSpec(
    "flatness", "Flatness comparison",
    "Group summaries of the flatness probes: top Hessian eigenvalue λ_max, trace Tr(H), and where present "
    "ψ and the alignment ratio ρ = D·Tr(HC)/(Tr(H)·Tr(C)) (dashed: 1, isotropic noise), and the group-level "
    "curvature alignment, the mean Spearman r(λ, s²) over runs (dashed: 0, variance unrelated to λ), with CIs; the "
    "panel text quotes the between-group comparisons of the results (differences of logs for λ_max and "
    "Tr(H)).",
    ("flatness",), flatness_plot))
