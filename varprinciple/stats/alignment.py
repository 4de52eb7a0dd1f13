"""Noise concentration: alignment inside the probed subspace and Hessian/random variance ratio.

* :func:`alignment_test` — ``alignment_k = k sum_i lambda_i s_i^2 / (sum_i lambda_i sum_i s_i^2)``
  over the k included Hessian directions (1 for isotropic noise) with a rotation test:
  Haar rotations of the k x k sample covariance of the projections. The test is exact
  for H0 "the noise law is rotation-invariant within span(v_1..v_k)".
* :func:`variance_ratio` — mean variance along Hessian directions over mean variance
  along random directions, with an interval on the log scale whose variance combines a
  bootstrap of whole draws (Poisson weights on rows, so correlations across directions
  are kept) and a bootstrap of directions (with replacement within each basis), minus
  the direction-specific sampling error that both contain (estimated from the draws).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..errors import InputError
from ._resampling import Resampler

__all__ = ["AlignmentTest", "alignment_test", "VarianceRatio", "variance_ratio", "RATIO_FLOOR"]

#: The variance of the log ratio is never estimated below this fraction of the larger of
#: its two bootstrap components.
RATIO_FLOOR = 0.5


@dataclass(frozen=True)
class AlignmentTest:
    """alignment_k with its rotation-test p (one-sided, large alignment; NaN without resamples)."""

    estimate: float
    p_value: float
    n_directions: int
    n_samples: int
    resamples: int

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the fields."""
        return pd.DataFrame([asdict(self)])


def _check_resamples(resamples) -> int:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 0:
        raise InputError(f"`resamples` must be an integer >= 0; got {resamples!r}.")
    return int(resamples)


def _alignment_iv(values, eigenvalues, resamples):
    X = np.asarray(values, dtype=float)
    lam = np.asarray(eigenvalues, dtype=float).ravel()
    if X.ndim != 2 or X.shape[1] != lam.shape[0]:
        raise InputError(f"`values` must be (samples x directions) with one column per eigenvalue "
                         f"({lam.shape[0]}); got shape {X.shape}.")
    if X.shape[0] < 2:
        raise InputError(f"`values` must hold at least 2 samples (rows); got {X.shape[0]}.")
    if np.any(~(lam > 0)):
        raise InputError("`eigenvalues` must all be positive (pass the included directions only).")
    return X, lam, _check_resamples(resamples)


def alignment_test(values, eigenvalues, *, resamples: int = 999, rng: np.random.Generator | None = None,
                   _resampler: Resampler | None = None) -> AlignmentTest:
    """alignment_k of the noise within the probed Hessian subspace, with its rotation test.

    Parameters
    ----------
    values : array_like, shape (K, k)
        Noise draws projected on k Hessian directions with positive eigenvalues.
    eigenvalues : array_like, shape (k,)
        Their eigenvalues (> 0).
    resamples : int, default 999
        Number of Haar rotations N; 0 gives ``p_value = nan``.
    rng : numpy.random.Generator, optional
        Source of the rotations (``default_rng(0)`` when omitted).

    Returns
    -------
    AlignmentTest
        ``p = (1 + #{T_rot >= T_obs}) / (1 + N)``.

    Notes
    -----
    With ``S = U D U^T`` the sample covariance and Q Haar, ``diag(Q S Q^T)`` has the law
    of ``(R o R) D`` with ``R = Q U`` Haar, so the reference statistics are
    ``k lambda^T (R o R) D / (sum lambda tr S)``: N k^2 work per probe after one set of
    rotations.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> lam = np.geomspace(10, 1, 8)
    >>> res = alignment_test(rng.normal(size=(200, 8)), lam, resamples=199, rng=rng)
    >>> 0.8 < res.estimate < 1.2, res.p_value > 0.01
    (True, True)
    >>> res = alignment_test(rng.normal(size=(200, 8)) * np.sqrt(lam), lam, resamples=199, rng=rng)
    >>> res.estimate > 1.2, res.p_value
    (True, 0.005)
    """
    X, lam, B = _alignment_iv(values, eigenvalues, resamples)
    K, k = X.shape
    Xc = X - X.mean(axis=0)
    S = (Xc.T @ Xc) / (K - 1)
    return _alignment_from_cov(S, lam, K, B, rng=rng, resampler=_resampler)


def _alignment_from_cov(S, lam, K, B, *, rng=None, resampler=None) -> AlignmentTest:
    k = lam.shape[0]
    # canonical order (descending eigenvalue) so that listing the directions in another
    # order gives the same Monte Carlo reference, not just the same distribution
    order = np.argsort(-lam, kind="stable")
    lam = lam[order]
    S = S[np.ix_(order, order)]
    s2 = np.diag(S)
    trS = float(s2.sum())
    lsum = float(lam.sum())
    est = float(k * (lam @ s2) / (lsum * trS))
    p = np.nan
    if B > 0 and k >= 2:
        if resampler is not None:
            R2 = resampler.rotation_squares(k)
        else:
            from ._resampling import haar_rotations
            Q = haar_rotations(B, k, rng=rng if rng is not None else np.random.default_rng(0))
            R2 = Q * Q
        D = np.clip(np.linalg.eigvalsh(S), 0.0, None)
        diag_rot = R2 @ D  # (N, k): diagonal of each rotated covariance
        t_rot = k * (diag_rot @ lam) / (lsum * trS)
        # tolerance so that the identity rotation ties with the observation
        hits = int(np.count_nonzero(t_rot >= est - 1e-12 * max(1.0, abs(est))))
        p = (1.0 + hits) / (1.0 + B)
    return AlignmentTest(estimate=est, p_value=float(p), n_directions=k, n_samples=int(K), resamples=B)


@dataclass(frozen=True)
class VarianceRatio:
    """Mean noise variance along Hessian directions / along random directions, with a CI."""

    estimate: float
    ci_low: float
    ci_high: float
    se_log: float
    n_hessian: int
    n_random: int
    n_samples: int
    resamples: int
    confidence: float

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the fields."""
        return pd.DataFrame([asdict(self)])


def variance_ratio(hessian_values, random_values, *, resamples: int = 999, confidence: float = 0.95,
                   rng: np.random.Generator | None = None,
                   _resampler: Resampler | None = None) -> VarianceRatio:
    """Ratio of mean variance along Hessian directions to mean variance along random ones.

    Parameters
    ----------
    hessian_values : array_like, shape (K, h)
        Draws projected on Hessian directions.
    random_values : array_like, shape (K, r)
        The same draws projected on random directions.
    resamples : int, default 999
        Bootstrap replicates; 0 gives a NaN interval.
    confidence : float, default 0.95
        Level of the two-sided interval.
    rng : numpy.random.Generator, optional
        Source of the bootstrap (``default_rng(0)`` when omitted).

    Returns
    -------
    VarianceRatio

    Notes
    -----
    ``L = log(ratio)``. ``Var(L) = V_draw + V_dir - V_ind`` where V_draw is the variance of
    L over draw replicates (Poisson(1) weights on whole draws, every column variance
    recomputed), V_dir over direction replicates (multinomial counts within each basis,
    variances as estimated) and V_ind the direction-specific sampling error both contain
    (``tr(C Sigma_v) / (n^2 m^2)`` per basis). Resampling both factors at once (the
    "pigeonhole" bootstrap) counts V_ind twice and covered ~100%. The variance is floored
    at ``RATIO_FLOOR * max(V_draw, V_dir)``; the interval is ``exp(L +- t SE)`` with
    ``n_hessian + n_random - 2`` df.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> h = rng.normal(size=(400, 10)) * 3.0
    >>> r = rng.normal(size=(400, 10))
    >>> res = variance_ratio(h, r, resamples=500, rng=rng)
    >>> res.ci_low < 9 < res.ci_high
    True
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
    if not (0 < confidence < 1):
        raise InputError(f"`confidence` must be in (0, 1); got {confidence}.")
    B = _check_resamples(resamples)
    resampler = _resampler
    if resampler is None and B > 0:
        seed = int((rng if rng is not None else np.random.default_rng(0)).integers(2**63 - 1))
        resampler = Resampler(B, seed)
    return _variance_ratio(np.hstack([H, Rn]), H.shape[1], B, confidence, resampler)


def _variance_ratio(X: np.ndarray, nh: int, B: int, confidence: float,
                    resampler: Resampler | None) -> VarianceRatio:
    K, d = X.shape
    nr = d - nh
    Xc = X - X.mean(axis=0)
    sq = Xc * Xc
    var = sq.sum(axis=0) / (K - 1)
    mh, mr = float(var[:nh].mean()), float(var[nh:].mean())
    est = mh / mr
    lo = hi = se = np.nan
    if B > 0 and resampler is not None:
        # (1) whole draws: Poisson weights on rows, every column variance recomputed
        W = resampler.draw_weights(K)  # (B, K)
        wsum = W.sum(axis=1, keepdims=True)
        m = (W @ Xc) / wsum
        v = ((W @ sq) / wsum - m * m) * (wsum / (wsum - 1.0))  # (B, d)
        with np.errstate(divide="ignore", invalid="ignore"):
            l_draw = np.log(v[:, :nh].mean(axis=1) / v[:, nh:].mean(axis=1))
        # (2) directions: multinomial counts within each basis, variances as estimated
        ch = resampler.direction_counts(nh, 0)
        cr = resampler.direction_counts(nr, 1)
        l_dir = np.log(((ch @ var[:nh]) / nh) / ((cr @ var[nh:]) / nr))
        l_draw = l_draw[np.isfinite(l_draw)]
        v_draw = float(l_draw.var(ddof=1)) if l_draw.size > 1 else np.nan
        v_dir = float(l_dir.var(ddof=1))
        # (3) the direction-specific sampling error is in both (1) and (2): subtract it once.
        # Spread of the estimated variances across directions of a basis carries
        # tr(C Sigma_v) / n of sampling error (C centring, Sigma_v = sampling covariance of
        # the column variances, estimated from the draws as for the slope).
        Wm = sq - sq.mean(axis=0)
        den = K * (K - 1.0)
        v_ind = 0.0
        for cols, n_b, m_b in ((slice(0, nh), nh, mh), (slice(nh, d), nr, mr)):
            Wb = Wm[:, cols]
            tr = float((Wb * Wb).sum()) / den
            one = float((Wb.sum(axis=1) ** 2).sum()) / den
            v_ind += (tr - one / n_b) / (n_b * n_b * m_b * m_b)
        var_l = max(v_draw + v_dir - v_ind, RATIO_FLOOR * max(v_draw, v_dir))
        if np.isfinite(var_l) and var_l > 0:
            se = float(np.sqrt(var_l))
            df = max(nh + nr - 2, 1)
            tq = float(sps.t.ppf(0.5 + confidence / 2, df))
            lo, hi = float(est * np.exp(-tq * se)), float(est * np.exp(tq * se))
    return VarianceRatio(estimate=est, ci_low=lo, ci_high=hi, se_log=se, n_hessian=nh, n_random=nr,
                         n_samples=K, resamples=B, confidence=confidence)
