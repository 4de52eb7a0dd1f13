"""Group-level statistics: the analysed step of each run, and one row per group x source x block.

Independently trained networks are the replicates of a training procedure (re-probes of
one network count once, :mod:`.replicates`): a group's exponent is the mean of its
networks' slopes with a one-sample t interval over runs (:func:`~varprinciple.stats.group_test`),
plus a random-effects meta-analysis as a sensitivity analysis. Which runs form a group is
decided in :mod:`varprinciple.stats.grouping`.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import InputError
from .comparisons import CONTROL_SOURCES, Unit
from .inference import OUTLIER_Z, group_test, robust_location
from .relation import MIN_DRAWS_RARE
from .replicates import network_values

__all__ = ["analysed_steps", "at_analysed_step", "group_rows", "meta_sensitivity", "groupby_keep_none",
           "curvature_alignment_rows", "CURVATURE_ALIGNMENT", "POOLED_DIRECTIONS_RATIO"]

#: A group whose runs' numbers of included directions differ by this factor or more gets a note
#: (the unweighted mean is then conservative, the precision-weighted meta_slope undercovers).
POOLED_DIRECTIONS_RATIO = 2.0

#: Quantity name of the group-level curvature-alignment rows (in the flatness table).
CURVATURE_ALIGNMENT = "curvature_alignment"

logger = logging.getLogger(__name__)


def analysed_steps(runs, step: int | None, notes: list[str]) -> dict[str, int]:
    """The probe step analysed at group level for each run id (default: the run's last).

    Runs that did not probe a requested ``step`` are left out (with a note); raises
    :class:`InputError` when no run probed it.
    """
    sel: dict[str, int] = {}
    for run in runs:
        steps = run.steps
        if step is None:
            sel[run.run_id] = max(steps)
        elif step in steps:
            sel[run.run_id] = int(step)
    if step is not None:
        missing = [r.run_id for r in runs if r.run_id not in sel]
        if len(missing) == len(runs):
            avail = sorted({s for r in runs for s in r.steps})
            raise InputError(f"`step` {step} was probed in no run; probed steps: {avail}.")
        if missing:
            notes.append(f"step {step} not probed in runs {', '.join(missing)}; they are left out of groups.")
            logger.warning("step %d not probed in %d run(s); left out of groups", step, len(missing))
    return sel


def at_analysed_step(relations: pd.DataFrame, sel: dict[str, int]) -> pd.DataFrame:
    """The relation rows at each run's analysed step."""
    if relations.empty:
        return relations
    return relations[[sel.get(rid) == s for rid, s in zip(relations["run_id"], relations["step"])]]


def groupby_keep_none(df: pd.DataFrame, cols: list[str]):
    """Group rows by ``cols`` keeping None keys (pandas drops them); sorted by the keys' text."""
    if df.empty:
        return []
    keys = list(zip(*(df[c].tolist() for c in cols)))
    index: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        index.setdefault(k, []).append(i)
    return [(k, df.iloc[idx]) for k, idx in sorted(index.items(), key=lambda kv: tuple(map(str, kv[0])))]


def meta_sensitivity(slopes: np.ndarray, ses: np.ndarray, confidence: float) -> dict:
    """Random-effects meta-analysis of the runs' slopes (sensitivity analysis only).

    Paule-Mandel tau^2, inverse-variance weights with each run's own standard error, and
    the Hartung-Knapp (WLS-scaled, t with n - 1 df) interval, via statsmodels.
    """
    out = {"meta_slope": np.nan, "meta_ci_low": np.nan, "meta_ci_high": np.nan, "meta_tau2": np.nan}
    ok = np.isfinite(slopes) & np.isfinite(ses) & (ses > 0)
    if ok.sum() < 2:
        return out
    import warnings

    from statsmodels.stats.meta_analysis import combine_effects
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = combine_effects(slopes[ok], ses[ok] ** 2, method_re="pm", use_t=True)
        ci = res.conf_int(alpha=1 - confidence, use_t=True)[3]
    out.update(meta_slope=float(res.mean_effect_re), meta_ci_low=float(ci[0]), meta_ci_high=float(ci[1]),
               meta_tau2=float(res.tau2))
    return out


def _where(label, src, blk) -> str:
    return f"{label}:{src}" + (f" (block {blk})" if blk is not None else "")


def _design_notes(sub: pd.DataFrame, label, src, blk) -> list[str]:
    """Notes on runs pooled in one group whose designs differ (the exponent of a curved
    relation depends on the range of the spectrum that was probed)."""
    out = []
    steps = sorted(set(sub["step"].tolist()))
    if len(steps) > 1:
        out.append(f"group {_where(label, src, blk)} pools runs analysed at different steps "
                   f"({', '.join(map(str, steps))}); a curved relation's exponent depends on the spectrum probed.")
    nh = sorted(set(int(x) for x in sub["n_hessian"].tolist()))
    if len(nh) > 1:
        out.append(f"group {_where(label, src, blk)} pools runs with different numbers of probed Hessian "
                   f"directions ({', '.join(map(str, nh))}); a curved relation's exponent depends on the "
                   "spectrum probed.")
    return out


#: Note of a group row refused because its runs' probes were refused for rare large draws.
RARE_GROUP_NOTE = ("no interval or p: rare large draws dominate this noise source and its runs have fewer "
                   "than {kmin} draws; each run's b is then biased in the same direction, which averaging "
                   "over networks does not remove (docs/statistics.md §5.3)")


def _rare_refused(sub: pd.DataFrame) -> bool:
    """True if a run of the group sits in a rare-large-draw source with too few draws."""
    if "rare_draw_source" not in sub:
        return False
    flag = sub["rare_draw_source"].fillna(False).astype(bool).to_numpy()
    return bool(np.any(flag & (sub["n_samples"].to_numpy() < MIN_DRAWS_RARE)))


def _robust_fields(vals: np.ndarray, nets: list, confidence: float, notes: list[str]) -> dict:
    """Median with its order-statistic interval, signed-rank and sign p (one-sided, > 0), and
    the outlying networks (a note names them)."""
    out = {"median": np.nan, "median_ci_low": np.nan, "median_ci_high": np.nan, "signrank_p": np.nan,
           "sign_p": np.nan, "outlier_networks": []}
    if vals.size == 0:
        return out
    r = robust_location(vals, confidence=confidence)
    out.update(median=r.median, median_ci_low=r.median_ci_low, median_ci_high=r.median_ci_high,
               signrank_p=r.signrank_p, sign_p=r.sign_p, outlier_networks=[str(nets[i]) for i in r.outliers])
    if r.outliers:
        names = ", ".join(out["outlier_networks"])
        notes.append(f"outlying network(s) {names} (modified z > {OUTLIER_Z}): the t interval's SD includes "
                     f"them; the median {r.median:.3g} and the signed-rank p {r.signrank_p:.3g} beside it do not "
                     "lean on them")
    # a missing median interval (too few networks for an order-statistic interval at this
    # level) is no caveat on the row's own numbers: median_ci_low/high are simply null
    return out


def _pooling_notes(sub: pd.DataFrame) -> list[str]:
    """A note when the runs' numbers of included directions differ widely."""
    nd = sub["n_directions"].to_numpy(float) if "n_directions" in sub else np.empty(0)
    nd = nd[np.isfinite(nd) & (nd > 0)]
    if nd.size >= 2 and nd.max() >= POOLED_DIRECTIONS_RATIO * nd.min():
        return [f"pools runs with {int(nd.min())} to {int(nd.max())} included directions: the mean weights "
                "them equally (conservative for the precise runs); meta_slope weights by precision and may "
                "undercover"]
    return []


def group_rows(at_step: pd.DataFrame, key_of: dict[str, dict], confidence: float,
               network_of: dict[str, str] | None = None,
               notes: list[str] | None = None) -> tuple[list[dict], list[Unit]]:
    """One row per group x source x block of the relations at the analysed step, and the
    slope units compared between groups.

    Runs of one network (``network_of``, :func:`varprinciple.stats.replicates.find_networks`)
    count once: the network's slope is the mean of its runs' slopes, ``n_runs`` and ``df``
    count networks. Notes on pooled runs whose designs differ are appended to ``notes``.
    """
    network_of = network_of or {}
    rows: list[dict] = []
    units: list[Unit] = []
    for (label, src, blk), sub in groupby_keep_none(at_step, ["group", "source", "block"]):
        run_ids = sub["run_id"].tolist()
        slopes = sub["slope"].to_numpy(float)
        nets, vals, ses = network_values(run_ids, slopes, network_of, sub["se_slope"].to_numpy(float))
        icp = np.where(np.isfinite(slopes), sub["intercept"].to_numpy(float), np.nan)
        _, icp_net, _ = network_values(run_ids, icp, network_of)
        ok = np.isfinite(vals)
        steps_here = sorted(set(sub["step"].tolist()))
        row = {"group": label, "group_key": key_of[label], "source": src, "block": blk,
               "step": steps_here[0] if len(steps_here) == 1 else None, "steps": steps_here,
               "control": src in CONTROL_SOURCES}
        row_notes: list[str] = []
        if ok.any():
            g = group_test(vals[ok], confidence=confidence)
            row.update(slope=g.estimate, ci_low=g.ci_low, ci_high=g.ci_high, p_value=g.p_value, se=g.se,
                       sd=g.sd, df=g.df, n_runs=g.n_runs)
            row.update(_robust_fields(vals[ok], [n for n, o in zip(nets, ok) if o], confidence, row_notes))
        else:
            row.update(slope=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan, se=np.nan, sd=np.nan,
                       df=np.nan, n_runs=0)
            row.update(_robust_fields(np.empty(0), [], confidence, row_notes))
        row.update(meta_sensitivity(vals, ses, confidence))
        icp_ok = icp_net[ok]
        # the group's mean line log s^2 = mean_intercept + slope * log lambda (for drawing)
        row["mean_intercept"] = float(np.mean(icp_ok)) if icp_ok.size and np.all(np.isfinite(icp_ok)) else np.nan
        row["n_runs_total"] = int(len(sub))
        row["n_networks"] = len(nets)
        row["mean_ratio"] = float(np.nanmean(sub["ratio"])) if sub["ratio"].notna().any() else np.nan
        row["mean_alignment_k"] = (float(np.nanmean(sub["alignment_k"])) if sub["alignment_k"].notna().any()
                                   else np.nan)
        row["run_ids"] = sorted(run_ids)
        row_notes += _pooling_notes(sub)
        if _rare_refused(sub):
            for c in ("ci_low", "ci_high", "p_value", "median_ci_low", "median_ci_high", "signrank_p", "sign_p",
                      "meta_ci_low", "meta_ci_high"):
                row[c] = np.nan
            row_notes.append(RARE_GROUP_NOTE.format(kmin=MIN_DRAWS_RARE))
        row["note"] = "; ".join(row_notes) if row_notes else None
        rows.append(row)
        units.append(Unit(label, key_of[label], src, blk, dict(zip(nets, vals.tolist()))))
        if notes is not None:
            notes += _design_notes(sub, label, src, blk)
    return rows, units


#: Note of a curvature-alignment row refused under rare large draws.
CURVATURE_RARE_NOTE = ("no interval or p: rare large draws in this noise source; where their share of the "
                       "variance changes along the spectrum, Spearman's r has a non-zero mean without any "
                       "relation to curvature (the median of s^2 falls below its mean where tails are "
                       "heavier), so the mean r is not tested (docs/statistics.md §4)")


#: Note of a curvature-alignment row refused because the noise's tails are heavier in flat directions.
CURVATURE_SHAPE_NOTE = ("no interval or p: the noise's tails are heavier in the flat directions (mean Spearman r of "
                        "the directions' kurtosis with lambda {r:.2f}, one-sided p {p:.2g}), which gives Spearman's r "
                        "of s^2 a positive mean with no relation to curvature (docs/statistics.md §4); see b's group "
                        "test")
#: Note of a curvature-alignment row whose tails are heavier in the sharp directions (kept: conservative).
CURVATURE_SHAPE_KEPT_NOTE = ("the noise's tails are heavier in the sharp directions (mean Spearman r of kurtosis with "
                             "lambda {r:.2f}): Spearman's r of s^2 is then biased down, so this test is conservative")
#: Level of the one-sided group tests of a kurtosis gradient along the spectrum.
TAIL_GRADIENT_ALPHA = 0.05


def _tail_gradient(sub: pd.DataFrame, network_of: dict) -> tuple[float, float] | None:
    """(mean r, one-sided p) of the networks' Spearman r of kurtosis with lambda when its mean
    differs from 0 in either direction at TAIL_GRADIENT_ALPHA (one-sided t over networks),
    else None."""
    if "kurtosis_spearman_r" not in sub:
        return None
    _n, kr, _ = network_values(sub["run_id"].tolist(), sub["kurtosis_spearman_r"].to_numpy(float), network_of)
    kr = kr[np.isfinite(kr)]
    if kr.size < 2 or np.ptp(kr) == 0:
        return None
    g = group_test(kr)
    p1 = min(g.p_value, 1 - g.p_value)
    return (g.estimate, p1) if p1 < TAIL_GRADIENT_ALPHA else None


def curvature_alignment_rows(at_step: pd.DataFrame, key_of: dict[str, dict], confidence: float,
                             network_of: dict[str, str] | None = None) -> list[dict]:
    """Group-level alignment of noise variance with curvature: one row per group x source x block.

    Estimand: the mean, over independently trained networks of the procedure, of the
    Spearman rank correlation between λ_i and the noise variance s_i² along the logged
    Hessian directions. Its null value 0 holds when the directions' sampling laws are
    exchangeable (anisotropy unrelated to λ); it does NOT hold when the tails of the noise
    change along the spectrum (rare large draws carrying more of the variance in flat
    directions push the median of s² below σ² there): rows of sources flagged for rare large
    draws (:func:`.per_probe.rare_draw_sources`), and rows whose networks' tails are heavier in
    the flat directions (mean ``kurtosis_spearman_r`` < 0, one-sided p < TAIL_GRADIENT_ALPHA),
    get no interval or p, with a note; tails heavier in the sharp directions bias r downwards
    (conservative): kept, with a note.
    Estimate, CI and one-sided p (H1: mean > 0) by the
    one-sample t over networks (re-probes of one network averaged first), as for b.
    Rank-based, so it uses every direction (non-positive eigenvalues too) and no power law.
    Each run's own test of the same null is its ``curvature_p`` (λ permuted across directions).
    Rows are in the flatness table's format, quantity :data:`CURVATURE_ALIGNMENT`.
    """
    network_of = network_of or {}
    rows: list[dict] = []
    if at_step.empty or "spearman_r" not in at_step:
        return rows
    for (label, src, blk), sub in groupby_keep_none(at_step, ["group", "source", "block"]):
        _nets, vals, _ = network_values(sub["run_id"].tolist(), sub["spearman_r"].to_numpy(float), network_of)
        vals = vals[np.isfinite(vals)]
        if vals.size < 2:
            continue
        g = group_test(vals, confidence=confidence)
        steps_here = sorted(set(sub["step"].tolist()))
        lo, hi, p, note = g.ci_low, g.ci_high, g.p_value, None
        if "rare_draw_source" in sub and sub["rare_draw_source"].fillna(False).astype(bool).any():
            lo = hi = p = np.nan
            note = CURVATURE_RARE_NOTE
        elif (grad := _tail_gradient(sub, network_of)) is not None:
            if grad[0] < 0:  # heavier tails in flat directions: r biased upwards, refused
                lo = hi = p = np.nan
                note = CURVATURE_SHAPE_NOTE.format(r=grad[0], p=grad[1])
            else:
                note = CURVATURE_SHAPE_KEPT_NOTE.format(r=grad[0])
        rows.append({"group": label, "group_key": key_of[label], "quantity": CURVATURE_ALIGNMENT, "source": src,
                     "block": blk, "step": steps_here[0] if len(steps_here) == 1 else None,
                     "estimate": g.estimate, "ci_low": lo, "ci_high": hi, "p_value": p,
                     "null": 0.0, "log_mean": np.nan, "log_ci_low": np.nan, "log_ci_high": np.nan,
                     "n_runs": g.n_runs, "note": note})
    return rows
