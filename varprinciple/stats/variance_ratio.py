"""The Hessian/random variance ratio: mean variance over the (fixed) logged Hessian directions
over the mean variance along a uniformly random direction, with an interval that combines the
draws' sampling error (jackknife) and the random basis' (only the random directions are a
sample), Satterthwaite df. Re-exported by :mod:`varprinciple.stats.alignment`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..errors import InputError
from .defaults import CONFIDENCE

__all__ = ["VarianceRatio", "variance_ratio", "MIN_RANDOM_CI"]


#: Fewest random directions with a variance-ratio interval: with m = 2 the random-direction part
#: has one df and the interval undercovers (0.911 +- 0.006 on the independent review's power-law
#: design, docs/statistics.md); m = 3 holds 0.936-0.977.
MIN_RANDOM_CI = 3

@dataclass(frozen=True)
class VarianceRatio:
    """Mean noise variance over the logged Hessian directions / along a uniformly random direction.

    ``estimate`` = mean s^2 over the Hessian directions / mean s^2 over the random ones;
    ``ci_low``/``ci_high`` its interval at ``confidence`` (NaN with fewer than
    ``MIN_RANDOM_CI`` = 3 random directions or 3 draws); ``se_log`` the standard error of the log ratio, split into
    ``se_log_sampling`` (draws) and ``se_log_directions`` (the random basis);
    ``df`` the Satterthwaite degrees of freedom.
    """

    estimate: float
    ci_low: float
    ci_high: float
    se_log: float
    se_log_sampling: float
    se_log_directions: float
    df: float
    n_hessian: int
    n_random: int
    n_samples: int
    confidence: float

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the fields."""
        return pd.DataFrame([asdict(self)])


def variance_ratio(hessian_values, random_values, *, confidence: float = CONFIDENCE) -> VarianceRatio:
    """Ratio of the mean noise variance over the logged Hessian directions to that along a
    uniformly random direction, with a calibrated interval.

    Parameters
    ----------
    hessian_values : array_like, shape (K, h)
        Draws projected on the (fixed) Hessian directions.
    random_values : array_like, shape (K, m)
        The same draws projected on m independent uniformly random unit directions.
    confidence : float, default 0.95
        Level of the two-sided interval.

    Returns
    -------
    VarianceRatio

    Notes
    -----
    Estimand: ``(1/h) sum_i v_i^T C v_i`` over the logged Hessian directions (fixed: they
    are not a sample) divided by ``E_u[u^T C u] = tr(C) / D``, u uniform on the unit sphere.
    Two sources of error, on ``L = log(estimate)``:

    * the draws (given the directions): delete-one-draw jackknife variance ``V_s`` of L
      (every column variance recomputed, so the correlation across directions is kept),
      with ``2 (K - 1) / (kurtosis - 1)`` df (at most K - 1);
    * the random basis: ``V_d = Var(u^T C u) / (m mbar_R^2)``. For independent uniform u, w,
      ``Var(u^T C u) = 2 E[(u^T C w)^2]`` up to O(1/D), so both the spread of the m
      variances and the m(m-1)/2 covariances between random directions estimate it, each
      corrected for its own sampling error (estimated from the draws):
      ``Var^ = [sum_j (s_j^2 - sbar^2)^2 / 2 + sum_{i<j} s_ij^2 - corrections] * 2 /
      ((m - 1)(m + 2) / 2)``, clipped at 0, with m - 1 df (the pooled (m - 1)(m + 2) / 2
      assumes Gaussian entries of U^T C U and undercovered, 0.91 at m = 3, when the noise is
      concentrated in a few directions).

    ``exp(L +- t SE)`` with ``SE^2 = V_s + V_d`` and the Satterthwaite df, capped at
    ``(m - 1) SE^2 / V_d`` (the basis part's df in proportion to its share of the variance;
    Satterthwaite alone undercovered at m = 3, 0.915-0.93, where V_d dominates). The Hessian
    directions are never resampled: resampling them (earlier versions) measured coverage
    1.000 when variance grows with curvature.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> h = rng.normal(size=(400, 10)) * 3.0
    >>> r = rng.normal(size=(400, 10))
    >>> res = variance_ratio(h, r)
    >>> res.ci_low < 9 < res.ci_high, round(res.df)
    (True, 328)
    """
    H = np.asarray(hessian_values, dtype=float)
    Rn = np.asarray(random_values, dtype=float)
    if H.ndim != 2 or Rn.ndim != 2 or H.shape[0] != Rn.shape[0]:
        raise InputError(f"`hessian_values` and `random_values` must be 2-D with the same number of "
                         f"rows (draws); got shapes {H.shape} and {Rn.shape}.")
    if H.shape[1] < 1 or Rn.shape[1] < 1:
        raise InputError("`hessian_values` and `random_values` need at least one direction each.")
    if H.shape[0] < 2:
        raise InputError(f"need at least 2 draws (rows); got {H.shape[0]}.")
    if not np.all(np.isfinite(H)) or not np.all(np.isfinite(Rn)):
        raise InputError("`hessian_values` and `random_values` must be finite; got NaN or Inf.")
    if not (0 < confidence < 1):
        raise InputError(f"`confidence` must be in (0, 1); got {confidence}.")
    return _ratio_interval(np.hstack([H, Rn]), H.shape[1], confidence)


def _ratio_interval(X: np.ndarray, nh: int, confidence: float) -> VarianceRatio:
    K, d = X.shape
    m = d - nh
    Xc = X - X.mean(axis=0)
    sq = Xc * Xc
    S = sq.sum(axis=0)
    var = S / (K - 1)
    mh, mr = float(var[:nh].mean()), float(var[nh:].mean())
    est = mh / mr if mr > 0 else np.nan
    nan = dict(ci_low=np.nan, ci_high=np.nan, se_log=np.nan, se_log_sampling=np.nan,
               se_log_directions=np.nan, df=np.nan)
    if K < 3 or m < MIN_RANDOM_CI or not (mh > 0 and mr > 0):
        return VarianceRatio(estimate=est, **nan, n_hessian=nh, n_random=m, n_samples=K, confidence=confidence)
    # (1) draws: delete-one jackknife of L (closed-form leave-one-out variances)
    loo = (S - K / (K - 1.0) * sq) / (K - 2.0)  # (K, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        l_loo = np.log(loo[:, :nh].mean(axis=1)) - np.log(loo[:, nh:].mean(axis=1))
    if not np.all(np.isfinite(l_loo)):
        return VarianceRatio(estimate=est, **nan, n_hessian=nh, n_random=m, n_samples=K, confidence=confidence)
    u = l_loo - l_loo.mean()
    uu = float(u @ u)
    v_s = (K - 1.0) / K * uu
    kurt = K * float(np.sum(np.square(u * u))) / (uu * uu) if uu > 0 else 3.0
    nu_s = float(min(max(2.0 * (K - 1.0) / max(kurt - 1.0, 1e-12), 1.0), K - 1.0))
    # (2) the random basis: Var(u'Cu) ~ 2 E[(u'Cw)^2], pooled over the m variances and the
    #     m (m - 1) / 2 covariances, each corrected for its sampling error
    Rc = Xc[:, nh:]
    den = K * (K - 1.0)
    P = np.einsum("ki,kj->kij", Rc, Rc)  # (K, m, m) per-draw products
    Cov = P.sum(axis=0) / (K - 1.0)
    Pc = P - P.mean(axis=0)
    samp = np.einsum("kij,kij->ij", Pc, Pc) / den  # sampling variance of each entry of Cov
    diag = np.diag(Cov)
    cen = diag - diag.mean()
    Wd = np.diagonal(Pc, axis1=1, axis2=2)  # (K, m)
    Wc = Wd - Wd.mean(axis=1, keepdims=True)
    spread = float(cen @ cen) - float((Wc * Wc).sum()) / den  # minus tr(C Sigma_v)
    iu = np.triu_indices(m, 1)
    offd = float(np.sum(Cov[iu] ** 2 - samp[iu]))
    var_dir = max(0.0, 2.0 * (spread / 2.0 + offd) / ((m - 1.0) * (m + 2.0) / 2.0))
    # df of the basis part: m - 1 (those of the spread of m variances alone); the pooled
    # (m - 1)(m + 2)/2 assumes Gaussian entries of U^T C U and undercovered (0.91 at m = 3)
    # when the noise is concentrated in a few directions
    nu_d = m - 1.0
    v_d = var_dir / (m * mr * mr)
    V = v_s + v_d
    df = float(V * V / (v_s * v_s / nu_s + v_d * v_d / nu_d)) if V > 0 else np.nan
    # capped at (m - 1) V / V_d: the basis part's df count in proportion to its share of the
    # variance, not its square as in Satterthwaite. With m = 3 directions the spread of the
    # skewed u'Cu is positively correlated with their mean, and Satterthwaite's df (median 3-4
    # at m = 3 where the basis part dominates) undercovered (0.915-0.93).
    if v_d > 0:
        df = min(df, nu_d * V / v_d)
    se = float(np.sqrt(V))
    tq = float(sps.t.ppf(0.5 + confidence / 2, df))
    return VarianceRatio(estimate=est, ci_low=float(est * np.exp(-tq * se)), ci_high=float(est * np.exp(tq * se)),
                         se_log=se, se_log_sampling=float(np.sqrt(v_s)), se_log_directions=float(np.sqrt(v_d)),
                         df=df, n_hessian=nh, n_random=m, n_samples=K, confidence=confidence)
