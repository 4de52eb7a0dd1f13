"""σ² against F along the weight-trajectory PCs (Feng & Tu), per group, with each run's ψ fit.

Reads the results' ``variance_flatness`` key: one record per run with ``psi``,
``intercept``, ``ci_low``/``ci_high`` and ``components`` (``variance``, ``width``,
``drift``), as :func:`varprinciple.stats.psi_analysis.psi_analysis` writes them.
"""

from __future__ import annotations

import numpy as np

from .._input import ReportData
from ..format import format_estimate_ci, is_missing
from ._plot import MAX_PANELS, color_for, lean_log_ticks, new_figure
from .registry import FigureSpec, register_figure

__all__ = ["variance_flatness_plot"]


def variance_flatness_plot(data: ReportData):
    """One log-log panel per group: σ_i² vs F_i of every run (drift PC hollow), run fits dashed."""
    recs = [r for r in data.rows("variance_flatness") if r.get("components")]
    groups = list(dict.fromkeys(str(r.get("group", r.get("method"))) for r in recs))[:MAX_PANELS]
    psi_groups = {str(g.get("group_label", g.get("group"))): g for g in data.rows("flatness")
                  if g.get("quantity") == "psi"}
    fig, axs = new_figure(max(1, len(groups)), panel_w=3.4, panel_h=3.0)
    runs_all = [r.get("run_id") for r in recs]
    for ax, g in zip(axs, groups):
        for r in (r for r in recs if str(r.get("group", r.get("method"))) == g):
            col = color_for(r.get("run_id"), runs_all)
            comps = [c for c in r["components"] if not is_missing(c.get("width")) and not is_missing(c.get("variance"))
                     and c["width"] > 0 and c["variance"] > 0]
            for drift in (False, True):
                pts = [c for c in comps if bool(c.get("drift")) is drift]
                if pts:
                    ax.scatter([c["width"] for c in pts], [c["variance"] for c in pts], s=16,
                               facecolors="none" if drift else col, edgecolors=col, lw=0.9)
            if not is_missing(r.get("psi")) and not is_missing(r.get("intercept")):
                fit = [c["width"] for c in comps if not c.get("drift")]
                if fit:
                    x = np.geomspace(min(fit), max(fit), 20)
                    ax.plot(x, np.exp(r["intercept"]) * x ** (-r["psi"]), "--", color=col, lw=0.9)
        ax.set_xscale("log")
        ax.set_yscale("log")
        lean_log_ticks(ax)
        ax.set_xlabel("width F (loss reaches f·L0)", fontsize=7)
        ax.set_ylabel("variance σ² along the PC", fontsize=7)
        ax.tick_params(labelsize=7)
        s = psi_groups.get(g)
        txt = (f"ψ {format_estimate_ci(s.get('estimate'), s.get('ci_low'), s.get('ci_high'))}"
               if s else "")
        ax.set_title(f"{g}\n{txt}", fontsize=8)
    fig.suptitle("Weight variance vs landscape width along trajectory PCs (hollow: PC1, drift)", fontsize=9)
    return fig


register_figure(FigureSpec(
    "variance_flatness", "Weight variance vs landscape width",
    "Feng & Tu's inverse variance-flatness relation: per group, the variance σ² of each run's weight "
    "trajectory along its principal components (measured on the window's second half) against the landscape "
    "width F along them (distance between the points where the training loss reaches f·L0), log-log; dashed: "
    "each run's fit σ² ∝ F^(−ψ) over the non-drift PCs (PC1, hollow, excluded). ψ > 0 is an inverse relation; "
    "isotropic Langevin dynamics on a quadratic gives ψ = −2 (docs/flatness.md).",
    ("variance_flatness",), variance_flatness_plot))
