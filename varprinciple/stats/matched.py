"""Flatness comparisons at matched training loss (docs/flatness.md).

With cross-entropy the Hessian shrinks with the training loss, so λ_max or Tr(H) of two
methods compared at a fixed step are confounded with how far each trained. Two tools:

* :func:`matched_comparison` — the raw comparison of log quantity between two groups of
  runs (Welch, runs the replicates), reported beside the groups' training losses, with a
  note when they differ by more than ``tolerance`` (default 10 %) and the runs that did not
  reach the target loss excluded and counted. Confirmatory when the runs were stopped by
  the matched-loss rule (``[train] target_loss``).
* :func:`loss_adjusted_comparison` — OLS across runs of
  log q = α + β·log L + γ·[group a] + e; γ is the group difference of log q at a common
  training loss (a sensitivity analysis: it assumes a common slope β).

This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import schema
from ..errors import InputError
from ..results import COMPARISON_COLUMNS
from .defaults import CONFIDENCE
from .estimate import DifferenceEstimate
from .inference import compare_groups

__all__ = ["LOSS_TOLERANCE", "LOSS_COLUMNS", "MatchedComparison", "LossAdjustedComparison",
           "matched_comparison", "loss_adjusted_comparison", "training_loss_at", "target_reached",
           "annotate_flatness_comparisons"]

#: Relative difference of the groups' (geometric-mean) training losses above which a
#: matched comparison carries a note: |log(L_a / L_b)| > log(1 + LOSS_TOLERANCE).
LOSS_TOLERANCE = 0.10


def _positive(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise InputError(f"`{name}` must be finite and > 0 (it enters a log); got {a.tolist()}.")
    return a


def _reached(r, n: int, name: str) -> np.ndarray:
    if r is None:
        return np.ones(n, bool)
    a = np.asarray(r, dtype=bool).ravel()
    if a.size != n:
        raise InputError(f"`{name}` must have one flag per run ({n}); got {a.size}.")
    return a


@dataclass(frozen=True)
class MatchedComparison(DifferenceEstimate):
    """log q_a − log q_b over runs (Welch), beside the groups' training losses.

    ``difference`` etc. are on the log scale (exp(difference) is the ratio of geometric
    means). ``loss_a``/``loss_b`` are the geometric-mean training losses of the runs used;
    ``loss_log_ratio`` = log(loss_a / loss_b); ``loss_mismatch`` is true when
    |loss_log_ratio| > log(1 + tolerance), and ``note`` says so. ``n_unmatched_a``/``_b``
    count runs excluded because they did not reach the target loss.
    """

    n_a: int
    n_b: int
    loss_a: float
    loss_b: float
    loss_log_ratio: float
    loss_mismatch: bool
    tolerance: float
    n_unmatched_a: int
    n_unmatched_b: int
    confidence: float
    note: str | None


def matched_comparison(q_a, loss_a, q_b, loss_b, *, reached_a=None, reached_b=None,
                       tolerance: float = LOSS_TOLERANCE, confidence: float = CONFIDENCE) -> MatchedComparison:
    """Compare a flatness quantity of two groups of runs, with their training losses beside it.

    Parameters
    ----------
    q_a, q_b : array_like
        One positive flatness value per run (λ_max, Tr(H)).
    loss_a, loss_b : array_like
        Each run's full-batch training loss where ``q`` was measured.
    reached_a, reached_b : array_like of bool, optional
        run.json's ``target.reached``; runs with False are excluded and counted.
    tolerance : float, default 0.10
    confidence : float, default 0.95

    Returns
    -------
    MatchedComparison

    Raises
    ------
    InputError
        On non-positive values, mismatched lengths, or fewer than 2 matched runs in a group.

    Examples
    --------
    >>> res = matched_comparison([0.20, 0.22, 0.19], [0.0030, 0.0031, 0.0029],
    ...                          [0.46, 0.44, 0.47], [0.0044, 0.0045, 0.0043])
    >>> round(float(np.exp(res.difference)), 2), res.loss_mismatch
    (0.44, True)
    >>> res.note
    'training losses differ by 47% (0.003 vs 0.0044), more than the 10% tolerance: not a matched-loss comparison'
    """
    if not (isinstance(tolerance, (int, float)) and tolerance > 0):
        raise InputError(f"`tolerance` must be > 0; got {tolerance!r}.")
    qa, la, qb, lb = (_positive(q_a, "q_a"), _positive(loss_a, "loss_a"), _positive(q_b, "q_b"),
                      _positive(loss_b, "loss_b"))
    if qa.size != la.size or qb.size != lb.size:
        raise InputError(f"each group needs one loss per run; got {qa.size} values and {la.size} losses "
                         f"(a), {qb.size} and {lb.size} (b).")
    ra, rb = _reached(reached_a, qa.size, "reached_a"), _reached(reached_b, qb.size, "reached_b")
    if ra.sum() < 2 or rb.sum() < 2:
        raise InputError(f"each group needs >= 2 runs that reached the target loss; got {int(ra.sum())} "
                         f"(a) and {int(rb.sum())} (b).")
    c = compare_groups(np.log(qa[ra]), np.log(qb[rb]), confidence=confidence)
    ga, gb = float(np.exp(np.log(la[ra]).mean())), float(np.exp(np.log(lb[rb]).mean()))
    lr = float(np.log(ga / gb))
    mismatch = bool(abs(lr) > np.log1p(tolerance))
    notes = []
    if mismatch:
        notes.append(f"training losses differ by {abs(np.expm1(abs(lr))):.0%} ({ga:.2g} vs {gb:.2g}), more than "
                     f"the {tolerance:.0%} tolerance: not a matched-loss comparison")
    na_out, nb_out = int((~ra).sum()), int((~rb).sum())
    if na_out or nb_out:
        notes.append(f"{na_out + nb_out} run(s) that did not reach the target loss excluded")
    return MatchedComparison(c.difference, c.ci_low, c.ci_high, c.p_value, c.se, c.df, c.n_a, c.n_b, ga, gb,
                             lr, mismatch, float(tolerance), na_out, nb_out, confidence,
                             "; ".join(notes) or None)


@dataclass(frozen=True)
class LossAdjustedComparison(DifferenceEstimate):
    """γ of log q = α + β log L + γ [group a] + e: the group difference at a common loss.

    ``difference``/``ci_low``/``ci_high``/``p_value`` (two-sided) are γ's, t on ``df`` =
    n − 3; ``slope`` is β with its CI; ``common_loss`` the geometric-mean training loss
    of all runs (the loss at which ``log_q_a``/``log_q_b``, the fitted group values, are
    given).
    """

    slope: float
    slope_ci_low: float
    slope_ci_high: float
    common_loss: float
    log_q_a: float
    log_q_b: float
    n_a: int
    n_b: int
    confidence: float


def loss_adjusted_comparison(q_a, loss_a, q_b, loss_b, *, confidence: float = CONFIDENCE) -> LossAdjustedComparison:
    """Group difference of log q at a common training loss (OLS with a common loss slope).

    Raises
    ------
    InputError
        On non-positive values, mismatched lengths, fewer than 4 runs in all, or losses
        that do not vary (the slope is not identified).

    Examples
    --------
    Both groups follow log q = 1 + log L, group a sits 0.5 lower at every loss:

    >>> L_a = np.array([0.002, 0.003, 0.004]); L_b = np.array([0.003, 0.004, 0.006])
    >>> res = loss_adjusted_comparison(np.exp(0.5 + np.log(L_a) + [0.01, -0.01, 0.0]), L_a,
    ...                                np.exp(1.0 + np.log(L_b) + [0.0, 0.01, -0.01]), L_b)
    >>> round(res.difference, 1), round(res.slope, 1)
    (-0.5, 1.0)
    """
    qa, la, qb, lb = (_positive(q_a, "q_a"), _positive(loss_a, "loss_a"), _positive(q_b, "q_b"),
                      _positive(loss_b, "loss_b"))
    if qa.size != la.size or qb.size != lb.size:
        raise InputError(f"each group needs one loss per run; got {qa.size} values and {la.size} losses "
                         f"(a), {qb.size} and {lb.size} (b).")
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise InputError(f"`confidence` must be in (0, 1); got {confidence!r}.")
    n = qa.size + qb.size
    if n < 4 or qa.size < 1 or qb.size < 1:
        raise InputError(f"the loss-adjusted comparison needs >= 4 runs with both groups present; got "
                         f"{qa.size} (a) and {qb.size} (b).")
    logl = np.log(np.r_[la, lb])
    if np.ptp(logl) == 0:
        raise InputError("the training losses do not vary: the loss slope is not identified.")
    y = np.log(np.r_[qa, qb])
    xc = logl - logl.mean()
    X = np.column_stack([np.ones(n), xc, np.r_[np.ones(qa.size), np.zeros(qb.size)]])
    import statsmodels.api as sm
    fit = sm.OLS(y, X).fit()
    df = float(fit.df_resid)
    ci = fit.conf_int(alpha=1 - confidence) if df > 0 else np.full((3, 2), np.nan)
    se = fit.bse if df > 0 else np.full(3, np.nan)
    p = float(fit.pvalues[2]) if df > 0 else np.nan
    b = fit.params
    return LossAdjustedComparison(float(b[2]), float(ci[2][0]), float(ci[2][1]), p, float(se[2]), df, float(b[1]),
                                  float(ci[1][0]), float(ci[1][1]), float(np.exp(logl.mean())),
                                  float(b[0] + b[2]), float(b[0]), int(qa.size), int(qb.size), confidence)


# ------------------------------------------------------------------ reading logged runs

_FLAT_QUANTITIES = {"log_lambda_max": "lambda_max", "log_hessian_trace": "hessian_trace"}

#: Columns :func:`annotate_flatness_comparisons` fills (owned by varprinciple.results).
LOSS_COLUMNS = COMPARISON_COLUMNS[COMPARISON_COLUMNS.index("loss_a"):]


def training_loss_at(run, step: int) -> float | None:
    """A run's full-batch training loss at ``step``: its ``training.parquet`` row there, else
    run.json's ``probes[].train_loss``; None when neither logged it."""
    path = getattr(run, "path", None)
    if path is not None and (path / schema.TRAINING.file).exists():
        tr = run.optional_table(schema.TRAINING.file)
        hit = tr.loc[tr["step"] == step, "train_loss"]
        if len(hit):
            return float(hit.iloc[0])
    for p in (run.meta.get("probes") or []):
        if isinstance(p, dict) and p.get("step") == step and p.get("train_loss") is not None:
            return float(p["train_loss"])
    return None


def target_reached(run) -> bool:
    """False only when run.json records a matched-loss target that was not reached."""
    t = run.meta.get("target")
    return not (isinstance(t, dict) and t.get("reached") is False)


def _flat_value(run, quantity: str, step: int, block) -> float | None:
    path = getattr(run, "path", None)
    if path is None or not (path / schema.FLATNESS.file).exists():
        return None
    t = run.optional_table(schema.FLATNESS.file)
    sel = (t["quantity"] == quantity) & (t["step"] == step)
    if "source" in t:
        sel &= t["source"].isna()
    if "block" in t:
        sel &= t["block"].isna() if block is None else (t["block"] == block)
    elif block is not None:
        return None
    hit = t.loc[sel, "estimate"]
    return float(hit.iloc[0]) if len(hit) else None


def annotate_flatness_comparisons(comparisons: pd.DataFrame, runs, labels, sel: Mapping[str, int], *,
                                  tolerance: float = LOSS_TOLERANCE, confidence: float = CONFIDENCE,
                                  network_of: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Add the groups' training losses and the loss-adjusted comparison to flatness rows.

    For each row of ``comparisons`` whose ``quantity`` is ``log_lambda_max`` or
    ``log_hessian_trace``, the runs of ``label_a`` and ``label_b`` (at their step in
    ``sel``) give :func:`matched_comparison`'s loss summary (``loss_a``, ``loss_b``,
    ``loss_log_ratio``, ``loss_mismatch``, ``loss_note``, ``n_unmatched_*``) and
    :func:`loss_adjusted_comparison`'s ``adjusted_*`` fields; the row's own difference
    stays the raw one. Other rows get nulls. Columns: :data:`LOSS_COLUMNS`.
    Runs of one network (``network_of``: run_id -> network id; re-probes, copies) enter
    once, with their first run's values: they are not independent replicates.
    """
    out = comparisons.copy()
    for c in LOSS_COLUMNS:
        out[c] = None
    if out.empty:
        return out
    network_of = network_of or {}
    by_label: dict[str, list] = {}
    seen: set[tuple[str, str]] = set()
    for run, label in zip(runs, labels):
        net = (label, network_of.get(run.run_id, run.run_id))
        if run.run_id in sel and net not in seen:
            seen.add(net)
            by_label.setdefault(label, []).append(run)
    for i, row in out.iterrows():
        q = _FLAT_QUANTITIES.get(str(row["quantity"]))
        if q is None:
            continue
        data = {}
        for side in ("a", "b"):
            vals, losses, reached = [], [], []
            for run in by_label.get(row[f"label_{side}"], []):
                v = _flat_value(run, q, sel[run.run_id], row.get("block"))
                loss = training_loss_at(run, sel[run.run_id])
                if v is not None and v > 0 and loss is not None and loss > 0:
                    vals.append(v)
                    losses.append(loss)
                    reached.append(target_reached(run))
            data[side] = (vals, losses, reached)
        (qa, la, ra), (qb, lb, rb) = data["a"], data["b"]
        try:
            m = matched_comparison(qa, la, qb, lb, reached_a=ra, reached_b=rb, tolerance=tolerance,
                                   confidence=confidence)
        except InputError as exc:
            out.at[i, "loss_note"] = f"no loss summary: {exc}"
            continue
        for k in ("loss_a", "loss_b", "loss_log_ratio", "loss_mismatch", "n_unmatched_a", "n_unmatched_b"):
            out.at[i, k] = getattr(m, k)
        out.at[i, "loss_note"] = m.note
        try:
            adj = loss_adjusted_comparison(np.array(qa)[ra], np.array(la)[ra], np.array(qb)[rb], np.array(lb)[rb],
                                           confidence=confidence)
        except InputError:
            continue
        out.at[i, "adjusted_difference"] = adj.difference
        out.at[i, "adjusted_ci_low"] = adj.ci_low
        out.at[i, "adjusted_ci_high"] = adj.ci_high
        out.at[i, "adjusted_p_value"] = adj.p_value
        out.at[i, "adjusted_slope"] = adj.slope
    return out
