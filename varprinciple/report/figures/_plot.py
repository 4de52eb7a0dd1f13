"""Plotting helpers shared by the figure modules (matplotlib, object-oriented, Agg)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..format import format_estimate_ci, format_percent, is_missing

__all__ = ["COLORS", "color_for", "new_figure", "fit_band", "ci_label", "panel_grid", "MAX_PANELS"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
          "#bcbd22", "#7f7f7f")
MAX_PANELS = 24


def color_for(key: Any, keys: list) -> str:
    return COLORS[keys.index(key) % len(COLORS)] if key in keys else COLORS[-1]


def panel_grid(n: int, *, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def new_figure(n_panels: int, *, panel_w: float = 3.6, panel_h: float = 3.0, max_cols: int = 4,
               sharex: bool = False, sharey: bool = False):
    """A figure with a grid of ``n_panels`` axes (extra axes hidden); returns (fig, axes list)."""
    rows, cols = panel_grid(n_panels, max_cols=max_cols)
    fig = Figure(figsize=(panel_w * cols + 0.6, panel_h * rows + 0.8), layout="constrained")
    axs = fig.subplots(rows, cols, squeeze=False, sharex=sharex, sharey=sharey).ravel().tolist()
    for ax in axs[n_panels:]:
        ax.set_visible(False)
    return fig, axs[:n_panels]


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
