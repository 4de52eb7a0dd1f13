"""The per-run relation between noise variance and curvature: log s^2 = a + b log lambda + e.

For one probe (run x step x source x block) the noise draws projected on the Hessian
eigen-directions form a K x k matrix (samples x directions). :func:`relation_fit` fits
the exponent ``b`` by ordinary least squares of ``y_i = log s_i^2`` on
``x_i = log lambda_i`` over the *reliably positive* eigenvalues and gives it a
confidence interval that accounts for

* the sampling error of the ``s_i^2``, which is correlated across directions because
  every draw is projected on every direction; its covariance is estimated from the
  draws themselves by the delta method (fourth moments, so heavy tails and masked noise
  are handled without a Gaussian assumption), and
* the scatter ``e_i`` of the directions around the power law, estimated by moments from
  the residual sum of squares minus its expected sampling part.

No resampling is used, so the interval is the same with ``resamples=0``. See
``docs/statistics.md`` for the derivation and the calibration results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..errors import InputError

__all__ = [
    "ExclusionReason",
    "DEFAULT_FLOOR_REL",
    "DEFAULT_RESIDUAL_FACTOR",
    "exclusion_reasons",
    "RelationFit",
    "relation_fit",
    "spearman",
]

#: Eigenvalues at or below this multiple of the block's largest eigenvalue are excluded.
DEFAULT_FLOOR_REL = 1e-6
#: Eigenvalues at or below this multiple of their residual ||Hv - lambda v|| are excluded
#: (for a unit v there is an exact eigenvalue within ||Hv - lambda v|| of lambda, so a
#: lambda above its residual is guaranteed to sit near a positive eigenvalue).
DEFAULT_RESIDUAL_FACTOR = 1.0
#: The slope variance is never estimated below this fraction of its sampling part.
SAMPLING_FLOOR = 0.5


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
    floor_rel : float, default 1e-6
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


@dataclass(frozen=True)
class RelationFit:
    """The fitted power law ``s^2 ~ exp(intercept) * lambda^slope`` of one probe.

    ``slope`` is the exponent b; ``ci_low``/``ci_high`` its two-sided interval at
    ``confidence`` (Student t with ``df = n_directions - 2``); ``p_value`` the one-sided
    p for b > 0. ``scatter_var`` is the estimated variance tau^2 of the directions around
    the power law (beyond sampling error); ``sampling_se`` the part of ``se_slope`` due to
    sampling error alone. Undefined values are NaN (fewer than 3 included directions
    give no interval, fewer than 2 no slope).
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
    return RelationFit(**base, n_directions=n_inc, n_excluded=n_exc, n_samples=K,
                       confidence=confidence, excluded=excluded)


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
    if np.any(np.isnan(lam)):
        raise InputError("`eigenvalues` must not be NaN.")
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
    With ``Z_kj = (x_kj - xbar_j)^2 / s_j^2 - 1`` (column-centred), the sampling
    covariance of ``log s^2`` is estimated as ``Sigma = Z^T Z / (K (K - 1))`` (delta
    method); ``y_j = log s_j^2 + Sigma_jj / 2`` removes the first-order bias of the log.
    For OLS weights ``c`` (slope) the variance of b is
    ``tau^2 c^T c + c^T Sigma c`` with the moment estimate
    ``tau^2 = (RSS - tr(M Sigma)) / (n - 2)``, M the residual maker; the variance is
    floored at ``SAMPLING_FLOOR * c^T Sigma c`` (``scatter_var`` reports ``max(0, tau^2)``).
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
    xc = Xi - Xi.mean(axis=0)
    sq = xc * xc
    s2 = sq.sum(axis=0) / (K - 1)
    Z = sq / s2 - 1.0
    Z -= Z.mean(axis=0)
    denom = K * (K - 1.0)
    diag_sigma = (Z * Z).sum(axis=0) / denom
    y = np.log(s2) + 0.5 * diag_sigma
    xbar = x.mean()
    dx = x - xbar
    sxx = float(dx @ dx)
    if not sxx > 0:  # all included eigenvalues equal: no slope
        return _nan_fit(n, n_exc, K, confidence, excluded)
    c = dx / sxx
    b = float(c @ y)
    a = float(y.mean() - b * xbar)
    # weights: (a, b) = A @ y
    A = np.vstack([1.0 / n - xbar * c, c])
    U = Z @ A.T  # (K, 2)
    v_samp = (U.T @ U) / denom
    if n < 3:
        return _nan_fit(n, n_exc, K, confidence, excluded, slope=b, intercept=a)
    resid = y - a - b * x
    rss = float(resid @ resid)
    # tr(M Sigma) = tr(Sigma) - q1' Sigma q1 - q2' Sigma q2 (q: orthonormal basis of [1, x])
    q = np.vstack([np.full(n, 1.0 / np.sqrt(n)), dx / np.sqrt(sxx)])
    Zq = Z @ q.T
    tr_m_sigma = float(diag_sigma.sum() - (Zq * Zq).sum() / denom)
    df = n - 2
    tau2_raw = (rss - tr_m_sigma) / df  # unbiased moment estimate; may be negative
    AAt = A @ A.T
    # Variance floor: the slope variance may fall below its sampling part (a negative tau2
    # estimate keeps the interval unbiased, like the classical OLS interval) but not below
    # SAMPLING_FLOOR times it. Clipping tau2 at 0 instead makes the interval conservative
    # (coverage up to 0.99 with few directions); see docs/statistics.md.
    tau2_eff = max(tau2_raw, -(1.0 - SAMPLING_FLOOR) * v_samp[1, 1] / AAt[1, 1])
    cov = tau2_eff * AAt + v_samp
    if not (cov[0, 0] > 0 and np.linalg.det(cov) > 0):  # keep the 2x2 covariance positive definite
        cov = max(tau2_raw, 0.0) * AAt + v_samp
    tau2 = max(0.0, tau2_raw)
    se_b = float(np.sqrt(cov[1, 1]))
    se_a = float(np.sqrt(cov[0, 0]))
    tq = float(sps.t.ppf(0.5 + confidence / 2, df))
    if se_b > 0:
        p = float(sps.t.sf(b / se_b, df))
    else:  # pragma: no cover - impossible with positive variances
        p = np.nan
    return RelationFit(slope=b, intercept=a, se_slope=se_b, se_intercept=se_a,
                       cov_intercept_slope=float(cov[0, 1]), ci_low=b - tq * se_b, ci_high=b + tq * se_b,
                       p_value=p, df=float(df), scatter_var=tau2, sampling_se=float(np.sqrt(v_samp[1, 1])),
                       n_directions=n, n_excluded=n_exc, n_samples=K, confidence=confidence,
                       excluded=excluded)


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
