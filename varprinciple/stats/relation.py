"""The per-run relation between noise variance and curvature: log s^2 = a + b log lambda + e.

For one probe (run x step x source x block) the noise draws projected on the Hessian
eigen-directions form a K x k matrix (samples x directions). :func:`relation_fit` fits
the exponent ``b`` by ordinary least squares of ``y_i = log s_i^2`` on
``x_i = log lambda_i`` over the *reliably positive* eigenvalues and gives it a
confidence interval that accounts for

* the sampling error of the ``s_i^2``, which is correlated across directions because
  every draw is projected on every direction (and, in real logs, correlated within
  groups of neighbouring directions along the spectrum): a delete-one-draw jackknife of
  the log variances, so heavy tails and small K are handled without a Gaussian
  assumption, and
* the scatter ``e_i`` of the directions around the power law, which may be larger for a
  few high-leverage outlier eigenvalues: a leverage-adjusted (HC2) estimate from the
  residuals,

with Satterthwaite degrees of freedom for the two parts. No resampling with random
numbers is used, so the interval is the same with ``resamples=0``. See
``docs/statistics.md`` for the derivation and the calibration results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..errors import InputError
from ._relation_fit import (CONSTANT_REL, EQUAL_LOG_EIGENVALUES, MAX_LEVERAGE, SAMPLING_FLOOR,  # noqa: F401 (re-exported)
                            _bm_df, _constant_columns, _jackknife_log_variances, _loo_log_variances,
                            _slope_design_ok, _slope_rows)

__all__ = [
    "ExclusionReason",
    "DEFAULT_FLOOR_REL",
    "DEFAULT_RESIDUAL_FACTOR",
    "MIN_DIRECTIONS_CI",
    "EQUAL_LOG_EIGENVALUES",
    "MIN_DRAWS_RARE",
    "RARE_DRAW_ALPHA",
    "RARE_DRAW_SHARE",
    "draw_share",
    "exclusion_reasons",
    "RelationFit",
    "relation_fit",
    "spearman",
]

#: Eigenvalues at or below this multiple of the block's largest eigenvalue are excluded: the
#: fit spans at most four decades below lambda_max. Calibrated on realistic spectra (a bulk of
#: small eigenvalues above a noise floor, docs/statistics.md): with 1e-6, two off-law directions
#: at 5e-6 lambda_max pulled a true b = 1 down to 0.17.
DEFAULT_FLOOR_REL = 1e-4
#: Eigenvalues at or below this multiple of their residual ||Hv - lambda v|| are excluded
#: (for a unit v there is an exact eigenvalue within ||Hv - lambda v|| of lambda, so a
#: lambda above its residual is guaranteed to sit near a positive eigenvalue).
DEFAULT_RESIDUAL_FACTOR = 1.0
#: Fewest included directions with an interval. With 3 (one residual degree of freedom) the
#: coverage ranged 0.92-0.99 over K and noise structures (docs/statistics.md): refused.
MIN_DIRECTIONS_CI = 4
#: A probe "saw a rare large draw" when one draw carries at least this share of an included
#: direction's sum of squares (about its mean) ... (Student-t5 draws, whose intervals hold, do
#: so in <= 3 % of probes at K >= 20; the issue-17 design in 59-67 % at K = 20-30)
RARE_DRAW_SHARE = 0.8
#: ... and the share's Bonferroni p under Gaussian draws (:func:`draw_share`) is below this.
RARE_DRAW_ALPHA = 1e-3
#: Fewest draws per probe with an interval when the noise source has rare large draws (a
#: source whose probes show them more often than light tails allow): below it, a probe that
#: never saw such a draw underestimates the variance where those draws carry it, and its
#: slope is biased with a narrow interval (coverage 0.64 / 0.77 / 0.89 at K = 20 / 30 / 50,
#: 0.95 at K = 100 on the issue-17 design; docs/statistics.md §5.3).
MIN_DRAWS_RARE = 100


class ExclusionReason(StrEnum):
    """Why a Hessian direction did not enter the log-log fit."""

    NONPOSITIVE = "nonpositive"
    BELOW_FLOOR = "below_floor"
    RESIDUAL = "residual"


def exclusion_reasons(eigenvalues, *, residuals=None, floor_rel: float = DEFAULT_FLOOR_REL,
                      residual_factor: float = DEFAULT_RESIDUAL_FACTOR) -> np.ndarray:
    """The exclusion reason of every direction (None when the direction is included).

    Parameters
    ----------
    eigenvalues : array_like, shape (k,)
        Hessian eigenvalues of the probed directions.
    residuals : array_like, shape (k,), optional
        ``||H v - lambda v||`` per direction; NaN where not logged.
    floor_rel : float, default 1e-4
        Relative floor: ``lambda <= floor_rel * max(lambda)`` is ``"below_floor"``.
    residual_factor : float, default 1.0
        ``lambda <= residual_factor * residual`` is ``"residual"``.

    Returns
    -------
    numpy.ndarray of object
        ``None`` (included) or an :class:`ExclusionReason` value per direction; the
        first reason that applies in the order nonpositive, below_floor, residual.

    Examples
    --------
    >>> exclusion_reasons([4.0, 1e-9, -0.5, 0.2], residuals=[0.0, 0.0, 0.0, 0.3]).tolist()
    [None, 'below_floor', 'nonpositive', 'residual']
    """
    lam = np.asarray(eigenvalues, dtype=float)
    res = np.full(lam.shape, np.nan) if residuals is None else np.asarray(residuals, dtype=float)
    out = np.full(lam.shape, None, dtype=object)
    lmax = np.max(lam) if lam.size else np.nan
    nonpos = ~(lam > 0)
    below = ~nonpos & (lam <= floor_rel * lmax)
    resid = ~nonpos & ~below & np.isfinite(res) & (lam <= residual_factor * res)
    out[resid] = ExclusionReason.RESIDUAL.value
    out[below] = ExclusionReason.BELOW_FLOOR.value
    out[nonpos] = ExclusionReason.NONPOSITIVE.value
    return out


def draw_share(values) -> tuple[float, float]:
    """The largest share of a column's sum of squares (about its mean) carried by one draw,
    and its Bonferroni p-value under Gaussian draws.

    For K Gaussian draws of one column, a draw's share e_k^2 / sum_j e_j^2 of the centred
    sum of squares is (K - 1)/K times a Beta(1/2, (K - 2)/2) variable, whatever the mean and
    variance; the p-value bounds the chance that any of the K x n shares is as large:
    ``min(1, n K P(Beta > share K/(K - 1)))``. A small p with a share of one half or more
    says one rare large draw dominates a direction (rare large-gradient samples), the regime
    where a probe that did not see such a draw is biased (docs/statistics.md §5.3).

    Parameters
    ----------
    values : array_like, shape (K, n)

    Returns
    -------
    (share, p) : tuple of float
        NaN with fewer than 4 draws or a constant column.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(1).normal(size=(20, 30))
    >>> share, p = draw_share(x); p > 0.01
    True
    >>> x[3, :10] += 40.0                       # one draw dominates ten directions
    >>> share, p = draw_share(x); round(share, 2), p < 1e-6
    (0.95, True)
    """
    X = np.asarray(values, dtype=float)
    K, n = X.shape
    if K < 4 or n == 0:
        return np.nan, np.nan
    e = X - X.mean(axis=0)
    sq = e * e
    tot = sq.sum(axis=0)
    if not np.all(tot > 0):
        return np.nan, np.nan
    share = float(np.max(sq.max(axis=0) / tot))
    p = float(min(1.0, n * K * sps.beta.sf(min(share * K / (K - 1.0), 1.0), 0.5, (K - 2.0) / 2.0)))
    return share, p


@dataclass(frozen=True)
class RelationFit:
    """The fitted power law ``s^2 ~ exp(intercept) * lambda^slope`` of one probe.

    ``slope`` is the exponent b; ``ci_low``/``ci_high`` its two-sided interval at
    ``confidence`` (Student t with the Satterthwaite ``df``, not an integer in general);
    ``p_value`` the one-sided p for b > 0. ``scatter_var`` is the estimated (average)
    variance tau^2 of the directions around the power law (beyond sampling error);
    ``sampling_se`` the jackknife standard error of b due to sampling error alone.
    Undefined values are NaN (fewer than ``MIN_DIRECTIONS_CI`` = 4 included directions or
    fewer than 3 draws give no interval, fewer than 2 directions no slope).
    ``max_draw_share`` / ``draw_share_p``: the largest share of an included direction's sum
    of squares carried by one draw, and its Bonferroni p under Gaussian draws
    (:func:`draw_share`; the diagnostic of rare large draws).
    """

    slope: float
    intercept: float
    se_slope: float
    se_intercept: float
    cov_intercept_slope: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float
    scatter_var: float
    sampling_se: float
    n_directions: int
    n_excluded: int
    n_samples: int
    confidence: float
    excluded: dict = field(default_factory=dict)
    max_draw_share: float = np.nan
    draw_share_p: float = np.nan

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the fields (``excluded`` as ``n_excluded_<reason>``)."""
        d = asdict(self)
        exc = d.pop("excluded")
        for r in ExclusionReason:
            d[f"n_excluded_{r.value}"] = int(exc.get(r.value, 0))
        return pd.DataFrame([d])


def _nan_fit(n_inc: int, n_exc: int, K: int, confidence: float, excluded: dict, **known) -> RelationFit:
    base = dict(slope=np.nan, intercept=np.nan, se_slope=np.nan, se_intercept=np.nan,
                cov_intercept_slope=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan,
                df=np.nan, scatter_var=np.nan, sampling_se=np.nan)
    base.update(known)
    extra = {k: base.pop(k) for k in ("max_draw_share", "draw_share_p") if k in base}
    return RelationFit(**base, n_directions=n_inc, n_excluded=n_exc, n_samples=K,
                       confidence=confidence, excluded=excluded, **extra)


def _relation_fit_iv(values, eigenvalues, residuals, confidence, floor_rel, residual_factor):
    X = np.asarray(values, dtype=float)
    if X.ndim != 2:
        raise InputError(f"`values` must be a 2-D array (samples x directions); got {X.ndim} dimension(s).")
    lam = np.asarray(eigenvalues, dtype=float).ravel()
    if lam.shape[0] != X.shape[1]:
        raise InputError(f"`eigenvalues` must have one entry per column of `values` ({X.shape[1]}); "
                         f"got {lam.shape[0]}.")
    if X.shape[0] < 2:
        raise InputError(f"`values` must hold at least 2 samples (rows); got {X.shape[0]}.")
    if not np.all(np.isfinite(X)):
        raise InputError("`values` must be finite; got NaN or Inf.")
    if not np.all(np.isfinite(lam)):
        raise InputError("`eigenvalues` must be finite; got NaN or Inf.")
    if X.size and float(np.max(np.abs(X))) > 1e150:
        raise InputError(f"`values` too large (max |x| = {float(np.max(np.abs(X))):.3g} > 1e150): their "
                         f"squares overflow; rescale them (b does not depend on a common scale).")
    res = None
    if residuals is not None:
        res = np.asarray(residuals, dtype=float).ravel()
        if res.shape != lam.shape:
            raise InputError(f"`residuals` must have the shape of `eigenvalues` {lam.shape}; got {res.shape}.")
    if not (0 < confidence < 1):
        raise InputError(f"`confidence` must be in (0, 1); got {confidence}.")
    if not (0 <= floor_rel < 1):
        raise InputError(f"`floor_rel` must be in [0, 1); got {floor_rel}.")
    if not (residual_factor >= 0):
        raise InputError(f"`residual_factor` must be >= 0; got {residual_factor}.")
    return X, lam, res


def relation_fit(values, eigenvalues, *, residuals=None, confidence: float = 0.95,
                 floor_rel: float = DEFAULT_FLOOR_REL,
                 residual_factor: float = DEFAULT_RESIDUAL_FACTOR) -> RelationFit:
    """Fit ``log s_i^2 = a + b log lambda_i + e_i`` for one probe, with a calibrated CI for b.

    Parameters
    ----------
    values : array_like, shape (K, k)
        K noise draws projected on k Hessian eigen-directions (the same draw on every
        direction of a row).
    eigenvalues : array_like, shape (k,)
        The eigenvalue of each direction.
    residuals : array_like, shape (k,), optional
        ``||H v - lambda v||`` per direction (NaN where unknown).
    confidence : float, default 0.95
        Two-sided confidence level of the interval.
    floor_rel, residual_factor : float
        Exclusion floors (see :func:`exclusion_reasons`).

    Returns
    -------
    RelationFit

    Notes
    -----
    Sampling part: with ``l_(-k),j`` the log variance of direction j without draw k
    (closed form), ``y_j = K log s_j^2 - (K - 1) mean_k l_(-k),j`` (jackknife bias
    correction of the log) and the jackknife covariance
    ``Sigma_J = (K - 1)/K sum_k (l_(-k) - lbar)(l_(-k) - lbar)^T``. For the OLS weights
    ``c`` of b, leverages ``h`` and residual maker ``M``:

    * ``V1 = sum_i c_i^2 r_i^2 / (1 - h_i)`` (HC2) estimates the scatter, heteroscedastic
      and leverage-adjusted, plus the sampling error visible in the residuals
      (``tr(G Sigma_J)``, ``G = M diag(c^2 / (1 - h)) M``);
    * ``V2 = c^T Sigma_J c - tr(G Sigma_J)`` is the sampling error the residuals cannot see
      (correlated along the spectrum, e.g. within blocks of neighbouring directions);
    * ``Var(b) = max(V1 + V2, SAMPLING_FLOOR * c^T Sigma_J c)``, t interval with the
      Satterthwaite df of ``V1`` (Bell-McCaffrey df ``tr(G Omega)^2 / tr((G Omega)^2)``,
      the smaller of those under ``Omega = diag(tau_i^2 + Sigma_J,ii)``, ``tau_i^2`` the
      clipped HC2 scatter of direction i, and under the design-based
      ``Omega = diag(tau^2 / (1 - h_i) + Sigma_J,ii)``, ``tau^2`` the pooled scatter) and
      ``V2`` (``2 (K - 1) / (kurtosis - 1)`` of the per-draw jackknife values of b, at most
      K - 1).

    A shift common to all directions (a shared scale) cancels in the slope contrast.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> lam = np.geomspace(10.0, 0.1, 20)
    >>> x = rng.normal(size=(500, 20)) * lam ** 0.5      # variance = lambda^1
    >>> fit = relation_fit(x, lam)
    >>> round(fit.slope, 3), round(fit.ci_low, 3), round(fit.ci_high, 3), fit.p_value < 1e-6
    (0.995, 0.975, 1.015, True)
    """
    X, lam, res = _relation_fit_iv(values, eigenvalues, residuals, confidence, floor_rel, residual_factor)
    reasons = exclusion_reasons(lam, residuals=res, floor_rel=floor_rel, residual_factor=residual_factor)
    inc = np.array([r is None for r in reasons], dtype=bool)
    excluded = {r.value: int(np.count_nonzero(reasons == r.value)) for r in ExclusionReason}
    K = X.shape[0]
    n = int(inc.sum())
    n_exc = int((~inc).sum())
    if n < 2:
        return _nan_fit(n, n_exc, K, confidence, excluded)
    x = np.log(lam[inc])
    return _fit_core(X[:, inc], x, K, n, n_exc, confidence, excluded)


def _fit_core(Xi: np.ndarray, x: np.ndarray, K: int, n: int, n_exc: int, confidence: float,
              excluded: dict) -> RelationFit:
    s2 = Xi.var(axis=0, ddof=1)
    xbar = x.mean()
    dx = x - xbar
    sxx = float(dx @ dx)
    if not np.ptp(x) > EQUAL_LOG_EIGENVALUES or _constant_columns(Xi, s2).any():
        # all included eigenvalues (numerically) equal, or a constant column: no slope
        return _nan_fit(n, n_exc, K, confidence, excluded)
    share, share_p = draw_share(Xi)
    jk = _jackknife_log_variances(Xi)
    if jk is None:  # too few draws for the jackknife: slope without interval
        y = np.log(s2)
        b = float(dx @ y / sxx)
        return _nan_fit(n, n_exc, K, confidence, excluded, slope=b, intercept=float(y.mean() - b * xbar),
                        max_draw_share=share, draw_share_p=share_p)
    y, infl = jk
    return _fit_jackknife(y, infl, x, K, n_exc, confidence, excluded, max_draw_share=share,
                          draw_share_p=share_p)


def _fit_jackknife(y: np.ndarray, infl: np.ndarray, x: np.ndarray, K: int, n_exc: int, confidence: float,
                   excluded: dict, **extra) -> RelationFit:
    """The fit of bias-corrected log variances ``y`` (n,) on ``x`` with the jackknife deviations
    ``infl`` (m, n) of ``y`` over ``m`` deleted units (draws, or groups of samples for exact
    variances); ``K`` is reported as ``n_samples``, ``extra`` are further RelationFit fields."""
    n = y.shape[0]
    xbar = x.mean()
    dx = x - xbar
    sxx = float(dx @ dx)
    share, share_p = extra.get("max_draw_share", np.nan), extra.get("draw_share_p", np.nan)
    c = dx / sxx
    b = float(c @ y)
    a = float(y.mean() - b * xbar)
    if n < MIN_DIRECTIONS_CI or not _slope_design_ok(x):
        return _nan_fit(n, n_exc, K, confidence, excluded, slope=b, intercept=a, max_draw_share=share,
                        draw_share_p=share_p)
    _, var_b, df, vs, _ = (float(v[0]) for v in _slope_rows(y, infl, x[None, :]))
    # the intercept's variance and its covariance with b: the same two parts (HC2 on the
    # residuals + the sampling error they cannot see), no df needed
    A = np.vstack([1.0 / n - xbar * c, c])  # (a, b) = A @ y
    U = infl @ A.T
    v_samp = U.T @ U
    h = 1.0 / n + dx * dx / sxx
    q = np.vstack([np.full(n, 1.0 / np.sqrt(n)), dx / np.sqrt(sxx)])
    resid = y - a - b * x
    IM = infl - (infl @ q.T) @ q  # infl @ M, M = I - q'q the residual maker (rank-2 update: no n x n GEMM)
    r2 = resid * resid

    def part(wv):  # HC2 term + (sampling - its share seen by the residuals)
        return float(wv @ r2 - np.einsum("ki,i,ki->", IM, wv, IM))

    va = max(part(A[0] ** 2 / (1.0 - h)) + v_samp[0, 0], SAMPLING_FLOOR * float(v_samp[0, 0]))
    cov_ab = part(A[0] * A[1] / (1.0 - h)) + float(v_samp[0, 1])
    lim = 0.999 * np.sqrt(va * var_b)
    cov_ab = float(np.clip(cov_ab, -lim, lim))
    se_b = float(np.sqrt(var_b))
    se_a = float(np.sqrt(va))
    tq = float(sps.t.ppf(0.5 + confidence / 2, df))
    p = float(sps.t.sf(b / se_b, df)) if se_b > 0 else np.nan
    tau2 = max(0.0, float((resid @ resid - np.einsum("ki,ki->", IM, infl)) / (n - 2)))
    return RelationFit(slope=b, intercept=a, se_slope=se_b, se_intercept=se_a,
                       cov_intercept_slope=cov_ab, ci_low=b - tq * se_b, ci_high=b + tq * se_b,
                       p_value=p, df=df, scatter_var=tau2, sampling_se=float(np.sqrt(vs)),
                       n_directions=n, n_excluded=n_exc, n_samples=K, confidence=confidence,
                       excluded=excluded, max_draw_share=share, draw_share_p=share_p)


def spearman(eigenvalues, variances) -> tuple[float, float]:
    """Spearman rank correlation of variances with eigenvalues and its two-sided p.

    Rank statistics may use every Hessian direction, non-positive eigenvalues included.
    Returns ``(nan, nan)`` with fewer than 3 directions or a constant input.

    Examples
    --------
    >>> r, p = spearman([3.0, 2.0, 1.0, -1.0], [9.0, 4.0, 1.0, 0.5])
    >>> r
    1.0
    """
    lam = np.asarray(eigenvalues, dtype=float)
    v = np.asarray(variances, dtype=float)
    if lam.size < 3 or np.ptp(lam) == 0 or np.ptp(v) == 0:
        return np.nan, np.nan
    res = sps.spearmanr(lam, v)
    return float(res.statistic), float(res.pvalue)
