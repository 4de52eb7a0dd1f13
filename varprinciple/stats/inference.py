"""Inference over runs: one-sample t per group, paired/Welch comparisons, TOST and Holm.

Runs are the independent replicates of a training procedure; every function here takes
one summary number per run (e.g. the run's exponent b).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..errors import InputError
from .defaults import ALPHA, CONFIDENCE
from .estimate import DifferenceEstimate

__all__ = ["GroupTest", "group_test", "RobustLocation", "robust_location", "OUTLIER_Z", "Tost", "tost",
           "tost_from", "tost_p",
           "Comparison", "compare_groups", "holm"]

#: A network is flagged as an outlier when its modified z-score |x - median| / (1.4826 MAD)
#: exceeds this (Iglewicz & Hoaglin 1993).
OUTLIER_Z = 3.5


def _vector(x, name: str, minimum: int = 1) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if a.size < minimum:
        raise InputError(f"`{name}` needs at least {minimum} value(s); got {a.size}.")
    if not np.all(np.isfinite(a)):
        raise InputError(f"`{name}` must be finite; got NaN or Inf.")
    return a


def _check_level(confidence: float, name: str = "confidence") -> None:
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise InputError(f"`{name}` must be in (0, 1); got {confidence!r}.")


@dataclass(frozen=True)
class GroupTest:
    """Mean over runs with a two-sided t interval and the one-sided p for mean > ``null``."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    sd: float
    df: float
    n_runs: int
    confidence: float

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the fields."""
        return pd.DataFrame([asdict(self)])


def group_test(values, *, confidence: float = CONFIDENCE, null: float = 0.0) -> GroupTest:
    """One-sample t inference over runs: mean, t interval, one-sided p for mean > null.

    Parameters
    ----------
    values : array_like
        One finite number per run (at least 1; the interval needs 2).
    confidence : float, default 0.95
    null : float, default 0.0

    Returns
    -------
    GroupTest

    Examples
    --------
    >>> res = group_test([0.9, 1.1, 1.0, 1.2, 0.8])
    >>> round(res.estimate, 3), round(res.ci_low, 3), round(res.p_value, 6)
    (1.0, 0.804, 7.3e-05)
    """
    a = _vector(values, "values")
    _check_level(confidence)
    n = a.size
    m = float(a.mean())
    if n < 2:
        return GroupTest(m, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, n, confidence)
    sd = float(a.std(ddof=1))
    se = float(sd / np.sqrt(n))
    df = n - 1.0
    tq = float(sps.t.ppf(0.5 + confidence / 2, df))
    if se > 0:
        p = float(sps.t.sf((m - null) / se, df))
    else:
        p = 0.0 if m > null else 1.0 if m < null else np.nan
    return GroupTest(m, m - tq * se, m + tq * se, p, se, sd, df, n, confidence)


@dataclass(frozen=True)
class RobustLocation:
    """Median over runs with its distribution-free order-statistic interval, the one-sided
    Wilcoxon signed-rank and sign tests of location > ``null``, and the outlying runs.

    ``median_ci_low``/``median_ci_high`` are NaN when no order-statistic interval reaches
    ``confidence`` (fewer than 6 runs at 95%); ``outliers`` are the indices of the values
    whose modified z-score exceeds :data:`OUTLIER_Z`."""

    median: float
    median_ci_low: float
    median_ci_high: float
    median_coverage: float
    signrank_p: float
    sign_p: float
    outliers: tuple
    n_runs: int

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the fields."""
        return pd.DataFrame([asdict(self)])


def robust_location(values, *, confidence: float = CONFIDENCE, null: float = 0.0) -> RobustLocation:
    """Robust companions of :func:`group_test`: median with an order-statistic interval,
    signed-rank and sign tests, and outlying runs.

    Parameters
    ----------
    values : array_like
        One finite number per run.
    confidence : float, default 0.95
    null : float, default 0.0

    Returns
    -------
    RobustLocation

    Notes
    -----
    Median interval: ``[x_(j), x_(n+1-j)]`` with the largest j such that
    ``P(Binom(n, 1/2) <= j - 1) <= (1 - confidence)/2``; its coverage ``median_coverage`` =
    1 - 2 P(Binom(n, 1/2) <= j - 1) >= confidence for any continuous law. The signed-rank p
    (exact for n <= 50 without ties, scipy) assumes a law symmetric about its median; the sign
    test (exact binomial) assumes nothing more than continuity. One outlying run moves them
    little: with one network at b = 2 among five at b = 0.3, every network is above 0 and both
    give p = 1/32, where the t test's variance swallows the signal.

    Examples
    --------
    >>> r = robust_location([0.31, 0.28, 0.33, 0.29, 2.0])
    >>> r.median, r.signrank_p, r.sign_p, r.outliers
    (0.31, 0.03125, 0.03125, (4,))
    """
    from scipy.stats import binom, binomtest, wilcoxon

    a = _vector(values, "values")
    _check_level(confidence)
    n = a.size
    med = float(np.median(a))
    lo = hi = np.nan
    cov = np.nan
    srt = np.sort(a)
    tail = (1 - confidence) / 2
    j = 0
    while j + 1 <= n // 2 and binom.cdf(j, n, 0.5) <= tail:  # j + 1 = the order statistic used
        j += 1
    if j >= 1:
        lo, hi = float(srt[j - 1]), float(srt[n - j])
        cov = float(1 - 2 * binom.cdf(j - 1, n, 0.5))
    d = a - null
    nz = d[d != 0]
    sr_p = sg_p = np.nan
    if nz.size >= 1:
        sg_p = float(binomtest(int((nz > 0).sum()), nz.size, 0.5, alternative="greater").pvalue)
        import warnings
        with warnings.catch_warnings():  # scipy warns that n is small: the exact p is what we want
            warnings.simplefilter("ignore")
            sr_p = float(wilcoxon(nz, alternative="greater").pvalue)
    mad = float(np.median(np.abs(a - med)))
    out: tuple = ()
    if n >= 3 and mad > 0:
        out = tuple(int(i) for i in np.flatnonzero(np.abs(a - med) / (1.4826 * mad) > OUTLIER_Z))
    return RobustLocation(med, lo, hi, cov, sr_p, sg_p, out, n)


@dataclass(frozen=True)
class Tost:
    """Two one-sided tests for |difference| < margin, with the (1 - 2 alpha) interval."""

    difference: float
    margin: float
    p_value: float
    p_lower: float
    p_upper: float
    equivalent: bool
    ci_low: float
    ci_high: float
    df: float
    alpha: float

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the fields."""
        return pd.DataFrame([asdict(self)])


def _tost_sides(diff, se, df, margin):
    p_lo = sps.t.sf((diff + margin) / se, df)   # H0: diff <= -margin
    p_up = sps.t.cdf((diff - margin) / se, df)  # H0: diff >= +margin
    return p_lo, p_up


def tost_p(difference, se, df, margin: float) -> np.ndarray:
    """The TOST p of ``difference`` (standard error ``se``, ``df`` degrees of freedom) for
    ``|difference| < margin``: the larger of the two one-sided t p-values (vectorised; no
    checks, for simulations of the rule -- :func:`tost_from` is the checked, scalar form).

    Examples
    --------
    >>> tost_p([0.0, 0.25], 0.1, 10.0, 0.3).round(4)
    array([0.0067, 0.3139])
    """
    return np.maximum(*_tost_sides(np.asarray(difference, float), se, df, margin))


def tost_from(difference: float, se: float, df: float, *, margin: float, alpha: float = ALPHA) -> Tost:
    """Equivalence test within ``(-margin, margin)`` of an estimate with standard error ``se``
    and ``df`` degrees of freedom (from a results row); :func:`tost` computes them from samples.

    A non-positive or NaN ``se`` or ``df`` gives NaN p-values and ``equivalent`` False.

    Examples
    --------
    >>> res = tost_from(0.02, 0.05, 8.0, margin=0.2)
    >>> res.equivalent, round(res.ci_low, 3), round(res.ci_high, 3)
    (True, -0.073, 0.113)
    """
    if not (np.isfinite(margin) and margin > 0):
        raise InputError(f"`margin` must be a positive number; got {margin!r}.")
    _check_level(alpha, "alpha")
    if alpha >= 0.5:
        raise InputError(f"`alpha` must be in (0, 0.5); got {alpha!r}.")
    return _tost_from(float(difference), float(se), float(df), float(margin), float(alpha))


def _tost_from(diff: float, se: float, df: float, margin: float, alpha: float) -> Tost:
    if not (se > 0 and df > 0):
        return Tost(diff, margin, np.nan, np.nan, np.nan, False, np.nan, np.nan, df, alpha)
    p_lo, p_up = (float(x) for x in _tost_sides(diff, se, df, margin))
    p = max(p_lo, p_up)
    tq = float(sps.t.ppf(1 - alpha, df))
    return Tost(diff, margin, p, p_lo, p_up, bool(p < alpha), diff - tq * se, diff + tq * se, df, alpha)


def _diff_stats(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[float, float, float]:
    """(difference a - b, its standard error, degrees of freedom)."""
    if paired:
        d = a - b
        n = d.size
        diff = float(d.mean())
        if n < 2:
            return diff, np.nan, np.nan
        return diff, float(d.std(ddof=1) / np.sqrt(n)), float(n - 1)
    diff = float(a.mean() - b.mean())
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return diff, np.nan, np.nan
    va, vb = float(a.var(ddof=1) / na), float(b.var(ddof=1) / nb)
    se2 = va + vb
    if not se2 > 0:
        return diff, 0.0, np.nan
    df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return diff, float(np.sqrt(se2)), float(df)


def _pair_iv(a, b, paired, alpha, margin):
    a = _vector(a, "a")
    b = _vector(b, "b")
    if paired and a.size != b.size:
        raise InputError(f"paired samples need equal lengths; got {a.size} and {b.size}.")
    _check_level(alpha, "alpha")
    if alpha >= 0.5:
        raise InputError(f"`alpha` must be in (0, 0.5); got {alpha!r}.")
    if margin is not None and not (np.isfinite(margin) and margin > 0):
        raise InputError(f"`margin` must be a positive number; got {margin!r}.")
    return a, b


def tost(a, b, *, margin: float, paired: bool = False, alpha: float = ALPHA) -> Tost:
    """Equivalence test of ``mean(a) - mean(b)`` within ``(-margin, margin)``.

    Welch's t (unequal variances) for independent samples, the paired t otherwise; the
    TOST p is the larger of the two one-sided p-values, and ``equivalent`` is
    ``p < alpha``, which is the same as the (1 - 2 alpha) interval lying inside the margins.

    Examples
    --------
    >>> res = tost([1.0, 1.1, 0.9, 1.05, 0.95], [1.02, 0.98, 1.1, 0.9, 1.0], margin=0.2)
    >>> res.equivalent, round(res.p_value, 4)
    (True, 0.0016)
    """
    a, b = _pair_iv(a, b, paired, alpha, margin)
    if margin is None:
        raise InputError("`margin` must be a positive number; got None.")
    diff, se, df = _diff_stats(a, b, paired)
    return _tost_from(diff, se, df, float(margin), alpha)


@dataclass(frozen=True)
class Comparison(DifferenceEstimate):
    """Difference ``a - b`` of two groups' means with a two-sided t test (and optional TOST)."""

    paired: bool
    n_a: int
    n_b: int
    confidence: float
    margin: float
    tost_p: float
    equivalent: bool | None
    tost_ci_low: float
    tost_ci_high: float


def compare_groups(a, b, *, paired: bool = False, confidence: float = CONFIDENCE, alpha: float = ALPHA,
                   margin: float | None = None) -> Comparison:
    """Compare two groups of per-run values: difference a - b, t interval, two-sided p, TOST.

    Parameters
    ----------
    a, b : array_like
        One value per run. With ``paired=True`` element i of both comes from the same run.
    paired : bool, default False
        Paired t on the differences; otherwise Welch's unequal-variance t.
    confidence : float, default 0.95
        Level of the two-sided interval for the difference.
    alpha : float, default 0.05
        Level of the TOST (its interval is at 1 - 2 alpha).
    margin : float, optional
        Equivalence margin; None leaves the TOST fields NaN/None.

    Returns
    -------
    Comparison

    Examples
    --------
    >>> res = compare_groups([1.0, 1.2, 0.9, 1.1, 1.0], [0.5, 0.6, 0.4, 0.7, 0.5])
    >>> round(res.difference, 2), res.p_value < 0.001, res.paired
    (0.5, True, False)
    """
    a, b = _pair_iv(a, b, paired, alpha, margin)
    _check_level(confidence)
    diff, se, df = _diff_stats(a, b, paired)
    if se > 0 and df > 0:
        tq = float(sps.t.ppf(0.5 + confidence / 2, df))
        lo, hi = diff - tq * se, diff + tq * se
        p = float(2 * sps.t.sf(abs(diff) / se, df))
    else:
        lo = hi = p = np.nan
    t_p = t_lo = t_hi = np.nan
    eq = None
    m = np.nan
    if margin is not None:
        m = float(margin)
        tr = _tost_from(diff, se, df, m, alpha)
        t_p, t_lo, t_hi = tr.p_value, tr.ci_low, tr.ci_high
        eq = tr.equivalent if np.isfinite(tr.p_value) else None
    return Comparison(diff, lo, hi, p, se, df, bool(paired), int(a.size), int(b.size), confidence, m,
                      t_p, eq, t_lo, t_hi)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count).

    Computed directly (sort, scale by m - i, running maximum, clip at 1) rather than with
    ``statsmodels.stats.multitest.multipletests``, which gives the same numbers (tested)
    but runs a full garbage collection on every call (~50 ms), too slow inside simulation
    loops such as calibration and power analysis.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise InputError("`p_values` must lie in [0, 1].")
    m = ok.size
    order = np.argsort(p[ok], kind="stable")
    stepped = np.maximum.accumulate(p[ok][order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    out[ok] = adjusted
    return out
