"""Per-layer exponent gamma of C_ii ~ H_ii^gamma (Zhang, Yang & Tu 2026) from ``diagonal.parquet``.

Per run, probe step and layer (block): gamma = the slope of log c_ii on log h_ii over the
sampled parameters with h_ii > 0 and c_ii > 0 (:func:`gamma_fit`). The primary per-run
estimate is Theil-Sen's (median of pairwise slopes, robust to the heavy-tailed, outlying
parameters real diagonals have); the OLS slope is reported beside it as a sensitivity row.
Parameters with h_ii <= 0 (or c_ii = 0, e.g. dead units) cannot enter a log fit: they are
counted and their share reported in the row's ``note``.

Group level (:func:`gamma_analysis`): the estimand is the population mean gamma over
independently trained networks of one configuration, per layer. Parameters of one network are
not replicates; networks are. So the interval is a one-sample t interval over networks (re-probes
of one network averaged first, :func:`varprinciple.stats.replicates.network_values`), with the
one-sided p for gamma > 1 (the paper's lower bound). Below :data:`MIN_GAMMA_NETWORKS` networks
the interval is refused (null, reason in ``note``): calibrated on an independent generator
(heavy-tailed, correlated parameters, negative h_ii; ``docs/statistics.md``, "gamma").

Group rows join the ``flatness`` list (quantity ``gamma`` and ``gamma_ols``, source ``sgd``,
null 1); per-run rows are the results JSON's ``gamma`` list (:data:`varprinciple.results.GAMMA_FIELDS`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from .. import schema
from ..results import GAMMA_FIELDS
from .inference import group_test
from .replicates import network_values

__all__ = ["GammaFit", "GammaAnalysis", "gamma_fit", "gamma_group", "gamma_analysis", "MIN_GAMMA_NETWORKS",
           "MIN_GAMMA_PARAMS", "GAMMA_NULL", "GAMMA_SOURCE", "theil_sen"]

#: Fewest independent networks for a group interval (calibration: docs/statistics.md, "gamma").
MIN_GAMMA_NETWORKS = 3
#: Fewest usable parameters (h_ii > 0, c_ii > 0) for a per-run fit.
MIN_GAMMA_PARAMS = 10
#: The paper's lower bound, tested one-sided (H1: gamma > 1).
GAMMA_NULL = 1.0
#: The noise the diagonal c_ii is of.
GAMMA_SOURCE = "sgd"
#: Span of log10 h_ii below which a per-run slope is flagged as fitted over a short lever arm.
SHORT_LEVER_DECADES = 1.0
#: Most points whose pairs enter the Theil-Sen median (memory ~ 16 MAX^2 bytes); beyond it an
#: evenly spaced subsample in order of log h_ii.
THEIL_SEN_MAX = 3000


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Theil-Sen slope (median of pairwise slopes over pairs with distinct x) and Conover's
    intercept median(y) - slope median(x), as :func:`scipy.stats.theilslopes` without its interval
    (which sorts the n^2 slopes; this takes a median). Above :data:`THEIL_SEN_MAX` points an
    evenly spaced subsample in order of x is used.

    Examples
    --------
    >>> theil_sen(np.array([0.0, 1, 2, 3, 4]), np.array([0.0, 2, 4, 6, 100]))  # one outlier
    (2.0, 0.0)
    """
    if x.size > THEIL_SEN_MAX:
        o = np.argsort(x, kind="stable")[np.linspace(0, x.size - 1, THEIL_SEN_MAX).round().astype(int)]
        x, y = x[o], y[o]
    i, j = np.triu_indices(x.size, 1)
    dx = x[j] - x[i]
    ok = dx != 0
    slope = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    return slope, float(np.median(y) - slope * np.median(x))


@dataclass(frozen=True)
class GammaFit:
    """The power law of one run's layer: slopes of log c on log h over usable parameters."""

    gamma: float
    gamma_ols: float
    intercept: float
    spearman_r: float
    n_params: int
    n_used: int
    n_h_nonpositive: int
    n_c_zero: int
    decades: float
    note: str | None = None

    @property
    def frac_h_nonpositive(self) -> float:
        return self.n_h_nonpositive / self.n_params if self.n_params else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "frac_h_nonpositive": self.frac_h_nonpositive}


def gamma_fit(h, c) -> GammaFit:
    """gamma of ``c ~ h^gamma`` over the parameters with ``h > 0`` and ``c > 0``.

    ``gamma``: Theil-Sen slope of log c on log h (primary); ``gamma_ols``: least squares;
    ``decades``: the span of log10 h used. Fewer than :data:`MIN_GAMMA_PARAMS` usable
    parameters give NaN slopes with the reason in ``note``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> h = np.exp(rng.normal(0, 2, 500)); c = 3 * h ** 1.5 * np.exp(rng.standard_t(3, 500) * 0.3)
    >>> f = gamma_fit(np.r_[h, -h[:50]], np.r_[c, c[:50]])
    >>> round(f.gamma, 2), f.n_h_nonpositive, f.n_used
    (1.5, 50, 500)
    """
    h = np.asarray(h, float)
    c = np.asarray(c, float)
    n = h.size
    nonpos = ~(h > 0)
    czero = (h > 0) & ~(c > 0)
    ok = (h > 0) & (c > 0) & np.isfinite(h) & np.isfinite(c)
    k = int(ok.sum())
    if k < MIN_GAMMA_PARAMS:
        return GammaFit(np.nan, np.nan, np.nan, np.nan, n, k, int(nonpos.sum()), int(czero.sum()), np.nan,
                        f"no fit: {k} parameters with h_ii > 0 and c_ii > 0 < {MIN_GAMMA_PARAMS}")
    x, y = np.log(h[ok]), np.log(c[ok])
    dec = float((x.max() - x.min()) / np.log(10))
    if np.ptp(x) == 0:
        return GammaFit(np.nan, np.nan, np.nan, np.nan, n, k, int(nonpos.sum()), int(czero.sum()), dec,
                        "no fit: every usable h_ii is equal")
    ts_slope, ts_icpt = theil_sen(x, y)
    ols = np.polyfit(x, y, 1)
    r = sps.spearmanr(x, y).statistic
    note = (f"h_ii spans {dec:.2f} decades < {SHORT_LEVER_DECADES:g}: a short lever arm"
            if dec < SHORT_LEVER_DECADES else None)
    return GammaFit(ts_slope, float(ols[0]), ts_icpt, float(r), n, k, int(nonpos.sum()),
                    int(czero.sum()), dec, note)


def gamma_group(values, *, confidence: float, networks: int | None = None):
    """One-sample t over per-network gammas (``values``), refused below :data:`MIN_GAMMA_NETWORKS`.

    Returns ``(GroupTest, note or None)``; a refusal keeps the mean but nulls the CI and p.

    Examples
    --------
    >>> g, note = gamma_group([1.2, 1.4], confidence=0.95)
    >>> round(g.estimate, 2), g.ci_low, note
    (1.3, None, 'no interval: 2 networks < 3 (gamma calibrated from 3; docs/statistics.md)')
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, "no network with a gamma fit"
    g = group_test(v, confidence=confidence, null=GAMMA_NULL)
    if v.size < MIN_GAMMA_NETWORKS:
        from dataclasses import replace
        g = replace(g, ci_low=None, ci_high=None, p_value=None)
        return g, (f"no interval: {v.size} network{'s' if v.size != 1 else ''} < {MIN_GAMMA_NETWORKS} "
                   f"(gamma calibrated from {MIN_GAMMA_NETWORKS}; docs/statistics.md)")
    return g, None


@dataclass(frozen=True)
class GammaAnalysis:
    """Per-run rows (the JSON's ``gamma`` list) and group rows (joining ``flatness``)."""

    runs: list = field(default_factory=list)
    groups: list = field(default_factory=list)


def _nan_none(x):
    return None if x is None or (isinstance(x, float) and not np.isfinite(x)) else x


def gamma_analysis(runs, labels, *, key_of, sel, confidence: float, network_of=None) -> GammaAnalysis:
    """gamma per run x layer at each run's analysed step ``sel[run_id]`` and per group x layer
    over networks (module docstring). Runs without ``diagonal.parquet`` are left out."""
    network_of = network_of or {}
    recs = []
    for run, label in zip(runs, labels):
        if run.run_id not in sel or not (isinstance(run.path, Path) and run.path.is_dir()):
            continue
        t = run.optional_table(schema.DIAGONAL.file)
        if t is None or t.empty:
            continue
        t = t[t["step"] == sel[run.run_id]]
        for blk, sub in t.groupby("block", sort=False):
            f = gamma_fit(sub["h_ii"].to_numpy(float), sub["c_ii"].to_numpy(float))
            rec = {"run_id": run.run_id, "group": label, "block": str(blk), "step": int(sel[run.run_id]),
                   **{k: _nan_none(v) for k, v in f.to_dict().items()}}
            recs.append({k: rec[k] for k in GAMMA_FIELDS})
    groups = []
    if not recs:
        return GammaAnalysis()
    df = pd.DataFrame(recs)
    for (label, blk), sub in df.groupby(["group", "block"], sort=False):
        share = float(sub["n_h_nonpositive"].sum() / max(sub["n_params"].sum(), 1))
        czero = float(sub["n_c_zero"].sum() / max(sub["n_params"].sum(), 1))
        excl = (f"h_ii <= 0: {100 * share:.1f}% of sampled parameters excluded from the log fit"
                + (f", c_ii = 0: {100 * czero:.1f}%" if czero > 0 else "")) if share > 0 or czero > 0 else None
        short = int(sum(1 for n in sub["note"] if isinstance(n, str) and "lever arm" in n))
        for q, col in (("gamma", "gamma"), ("gamma_ols", "gamma_ols")):
            vals = sub[col].to_numpy(float)
            _, v, _ = network_values(sub["run_id"].tolist(), vals, network_of)
            g, refusal = gamma_group(v, confidence=confidence)
            notes = [x for x in (refusal, excl,
                                 f"{short} run(s) fitted over < {SHORT_LEVER_DECADES:g} decade of h_ii" if short
                                 else None) if x]
            groups.append({
                "group": label, "group_key": key_of[label], "quantity": q, "source": GAMMA_SOURCE, "block": blk,
                "step": int(sub["step"].iloc[0]) if sub["step"].nunique() == 1 else None,
                "estimate": None if g is None else g.estimate,
                "ci_low": None if g is None else g.ci_low, "ci_high": None if g is None else g.ci_high,
                "p_value": None if g is None else g.p_value, "null": GAMMA_NULL,
                "log_mean": np.nan, "log_ci_low": np.nan, "log_ci_high": np.nan,
                "n_runs": int(np.isfinite(v).sum()), "note": "; ".join(notes) or None})
    return GammaAnalysis(runs=recs, groups=groups)
