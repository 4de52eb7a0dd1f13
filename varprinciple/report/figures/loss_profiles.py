"""1-D loss profiles: along trajectory PCs, filter-normalised random directions, run-to-run lines.

Reads the results' ``loss_profiles`` key: one record per run and profile with ``kind``
(``pc``, ``random``, ``interpolation``), ``direction``, ``t``, ``loss`` and ``loss0``.
"""

from __future__ import annotations

from .._input import ReportData
from ._plot import MAX_PANELS, color_for, new_figure
from .registry import FigureSpec, register_figure

__all__ = ["loss_profiles_plot"]

KIND_LABEL = {"pc": "along trajectory PCs (PC2–PC4)", "random": "filter-normalised random directions",
              "interpolation": "straight line between two runs (t = 0: this run, t = 1: the other)"}


def loss_profiles_plot(data: ReportData):
    """One panel per profile kind; one line per profile, coloured by group; loss / L₀ on a log axis."""
    recs = [r for r in data.rows("loss_profiles") if r.get("t") and r.get("loss")]
    kinds = [k for k in ("pc", "random", "interpolation") if any(r.get("kind") == k for r in recs)][:MAX_PANELS]
    groups = list(dict.fromkeys(str(r.get("group", r.get("method"))) for r in recs))
    fig, axs = new_figure(max(1, len(kinds)), panel_w=3.8, panel_h=3.0)
    for ax, kind in zip(axs, kinds):
        seen = set()
        for r in recs:
            if r.get("kind") != kind or (kind == "pc" and not 1 <= int(r.get("direction", 0)) <= 3):
                continue
            g = str(r.get("group", r.get("method")))
            l0 = r.get("loss0") or 1.0
            pts = [(t, v / l0) for t, v in zip(r["t"], r["loss"]) if v is not None and v > 0]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color_for(g, groups), lw=0.8, alpha=0.7,
                    label=g if g not in seen else None)
            seen.add(g)
        ax.set_yscale("log")
        ax.axhline(2.718281828459045, color="0.5", ls=":", lw=0.8)
        ax.set_xlabel("t (distance along the direction)", fontsize=7)
        ax.set_ylabel("loss / L₀", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_title(KIND_LABEL[kind], fontsize=8)
        if seen:
            ax.legend(fontsize=6, frameon=False)
    fig.suptitle("1-D training-loss profiles (dotted: e·L₀, the width threshold)", fontsize=9)
    return fig


register_figure(FigureSpec(
    "loss_profiles", "1D loss profiles",
    "Training loss (dropout off) relative to its value L0 at the centre along 1-D lines: the trajectory PCs "
    "2–4 around the window-mean weights, filter-normalised random directions around the final weights, and "
    "the straight line between two runs' solutions; one line per run and direction, coloured by group. Wider "
    "valleys are flatter; the dotted line is the e·L0 threshold of the widths F (docs/flatness.md).",
    ("loss_profiles",), loss_profiles_plot))
