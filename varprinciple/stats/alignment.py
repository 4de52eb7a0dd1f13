"""Noise concentration: alignment inside the probed subspace and Hessian/random variance ratio.

* :func:`isotropy_test` (old name :func:`alignment_test`) — ``alignment_k = k sum_i lambda_i
  s_i^2 / (sum_i lambda_i sum_i s_i^2)`` over the k included Hessian directions (1 for
  isotropic noise) with a rotation test: Haar rotations of the k x k sample covariance of the
  projections. The test is exact for H0 "the noise law is rotation-invariant within
  span(v_1..v_k)" — a test of ISOTROPY: anisotropic noise unrelated to curvature rejects it.
  A covariance that is exactly sigma^2 I with a few heavy-tailed directions rejects it too, so
  the per-probe ``isotropy_p`` is the larger of its p and :func:`isotropy_jackknife_p`'s
  (draw-level jackknife of log alignment_k), which needs only an isotropic covariance — as
  long as the tails are alike across directions: where one draw dominates a direction
  (:func:`isotropy_tail_reason`) ``isotropy_p`` is refused.
* :func:`curvature_test` — a test of alignment WITH CURVATURE: H0 "the noise variance is
  unrelated to lambda given the probed directions" (the eigenvalues are exchangeable across
  directions), by permuting the eigenvalues across directions with the studentized
  log-log slope as statistic.
* :func:`variance_ratio` (in :mod:`.variance_ratio`, re-exported here) — mean variance over the (fixed) logged Hessian directions over
  the mean variance along a uniformly random direction; its interval combines the draws'
  sampling error (jackknife) and the random basis' (only the random directions are a
  sample), with Satterthwaite df.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..errors import InputError
from ._resampling import Resampler
from .defaults import RESAMPLES, check_resamples
from .variance_ratio import MIN_RANDOM_CI, VarianceRatio, _ratio_interval, variance_ratio  # noqa: F401 (re-exported)

__all__ = ["IsotropyTest", "isotropy_test", "isotropy_jackknife_p", "isotropy_tail_reason", "AlignmentTest",
           "alignment_test", "CurvatureTest", "curvature_test", "studentized_slopes", "VarianceRatio", "variance_ratio", "MIN_RANDOM_CI"]


@dataclass(frozen=True)
class IsotropyTest:
    """alignment_k (``estimate``) with its rotation-test p (one-sided, large alignment; NaN
    without resamples). H0 of the test: noise isotropic within the probed subspace."""

    estimate: float
    p_value: float
    n_directions: int
    n_samples: int
    resamples: int

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the fields."""
        return pd.DataFrame([asdict(self)])


def _check_resamples(resamples) -> int:
    return check_resamples(resamples, minimum=1)


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


def isotropy_test(values, eigenvalues, *, resamples: int = RESAMPLES, rng: np.random.Generator | None = None,
                  _resampler: Resampler | None = None) -> IsotropyTest:
    """alignment_k of the noise within the probed Hessian subspace, with its rotation (isotropy) test.

    A small p says the noise is not isotropic within span(v_1..v_k); it is NOT evidence that
    the variance follows the curvature (use :func:`curvature_test`).

    Parameters
    ----------
    values : array_like, shape (K, k)
        Noise draws projected on k Hessian directions with positive eigenvalues.
    eigenvalues : array_like, shape (k,)
        Their eigenvalues (> 0).
    resamples : int, default 999
        Number of Haar rotations N; 0 gives ``p_value = nan``.
    rng : numpy.random.Generator, optional
        Source of the rotations (fresh entropy when omitted).

    Returns
    -------
    IsotropyTest
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
    >>> res = isotropy_test(rng.normal(size=(200, 8)), lam, resamples=199, rng=rng)
    >>> 0.8 < res.estimate < 1.2, res.p_value > 0.01
    (True, True)
    >>> res = isotropy_test(rng.normal(size=(200, 8)) * np.sqrt(lam), lam, resamples=199, rng=rng)
    >>> res.estimate > 1.2, res.p_value
    (True, 0.005)
    """
    X, lam, B = _alignment_iv(values, eigenvalues, resamples)
    K, k = X.shape
    Xc = X - X.mean(axis=0)
    S = (Xc.T @ Xc) / (K - 1)
    return _alignment_from_cov(S, lam, K, B, rng=rng, resampler=_resampler)


def isotropy_jackknife_p(values, eigenvalues) -> float:
    """One-sided p for "alignment_k > 1" that needs only an isotropic COVARIANCE.

    Statistic: L = log alignment_k = log(sum_i lambda_i s_i^2 / sum_i lambda_i) - log(mean_i s_i^2),
    whose population value is 0 when the covariance is sigma^2 I within the probed
    directions, whatever the law's shape. Delete-one-draw jackknife (closed-form
    leave-one-out variances; bias-corrected L, its jackknife SE) and a t reference with
    ``2 (K - 1) / (kurtosis - 1)`` df (at most K - 1) of the per-draw values, as for the
    variance ratio. NaN with fewer than 4 draws or a non-positive leave-one-out variance.

    The rotation test of :func:`isotropy_test` is exact only when the whole law is
    rotation-invariant: a covariance that is exactly sigma^2 I with a few heavy-tailed
    (spiky) directions rejected it in 0.28 of probes (issue 17); ``isotropy_p`` is the larger
    of the two p-values, a level-alpha test whenever either's assumptions hold.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> lam = np.geomspace(10, 1, 8)
    >>> isotropy_jackknife_p(rng.normal(size=(200, 8)), lam) > 0.05
    True
    >>> isotropy_jackknife_p(rng.normal(size=(200, 8)) * np.sqrt(lam), lam) < 1e-6
    True
    """
    X = np.asarray(values, dtype=float)
    lam = np.asarray(eigenvalues, dtype=float).ravel()
    K, k = X.shape
    if K < 4 or k < 2:
        return np.nan
    w = lam / lam.sum()
    e = X - X.mean(axis=0)
    sq = e * e
    S = sq.sum(axis=0)
    loo = (S - K / (K - 1.0) * sq) / (K - 2.0)  # (K, k) leave-one-out variances
    if not (np.all(S > 0) and np.all(loo > 0)):
        return np.nan

    def stat(v):
        return np.log(v @ w) - np.log(v.mean(axis=-1))

    full = float(stat(S / (K - 1.0)))
    lv = stat(loo)
    lbar = float(lv.mean())
    est = K * full - (K - 1.0) * lbar
    u = lv - lbar
    uu = float(u @ u)
    if not uu > 0:
        return np.nan
    se = float(np.sqrt((K - 1.0) / K * uu))
    kurt = K * float(np.sum(u ** 4)) / (uu * uu)
    df = float(min(max(2.0 * (K - 1.0) / max(kurt - 1.0, 1e-12), 1.0), K - 1.0))
    return float(sps.t.sf(est / se, df))


#: Reason of a refused ``isotropy_p`` (relation row ``note``).
ISOTROPY_TAIL_NOTE = ("no isotropy_p: one draw carries {share:.0%} of a direction's variance (p = {p:.1e} under "
                      "Gaussian tails); with tails that differ between directions a direction that missed its "
                      "rare draws looks less noisy and the isotropy tests reject an isotropic covariance "
                      "(docs/statistics.md §5.3)")


def isotropy_tail_reason(values) -> str | None:
    """Why ``isotropy_p`` cannot be given for these draws, or None.

    Both isotropy tests need tails that are alike across the probed directions: with an
    exactly isotropic covariance whose flattest 3 of 20 directions carry rare spikes
    (kurtosis 40, K = 100) ``max(rotation p, jackknife p)`` rejected in 0.105 of probes; the
    rule refuses 0.91 of them, and the rest reject in 0.46 (0.043 over all probes): a
    direction that missed its spikes looks less noisy than sigma^2 and nothing in the probe
    can show why, which only the source rule (per_probe.refuse_heavy_tail_isotropy) catches. The refusal rests on
    :func:`varprinciple.stats.relation.draw_share`: one draw carrying more of a direction's
    sum of squares than Gaussian tails allow (Bonferroni p < ``RARE_DRAW_ALPHA``, any share).
    Gaussian draws are refused in <= 0.3 % of probes; Student-t draws (alike across directions,
    where the tests hold) often are — the price of a per-probe rule (docs/statistics.md §5.3).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 10))
    >>> isotropy_tail_reason(x) is None
    True
    >>> x[5, 9] = 30.0
    >>> isotropy_tail_reason(x)[:52]
    "no isotropy_p: one draw carries 89% of a direction's"
    """
    from .relation import RARE_DRAW_ALPHA, draw_share

    share, p = draw_share(values)
    if np.isfinite(p) and p < RARE_DRAW_ALPHA:
        return ISOTROPY_TAIL_NOTE.format(share=share, p=p)
    return None


def _alignment_from_cov(S, lam, K, B, *, rng=None, resampler=None) -> IsotropyTest:
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
            Q = haar_rotations(B, k, rng=rng if rng is not None else np.random.default_rng())  # None: fresh
            R2 = Q * Q
        D = np.clip(np.linalg.eigvalsh(S), 0.0, None)
        diag_rot = R2 @ D  # (N, k): diagonal of each rotated covariance
        t_rot = k * (diag_rot @ lam) / (lsum * trS)
        # tolerance so that the identity rotation ties with the observation
        hits = int(np.count_nonzero(t_rot >= est - 1e-12 * max(1.0, abs(est))))
        p = (1.0 + hits) / (1.0 + B)
    return IsotropyTest(estimate=est, p_value=float(p), n_directions=k, n_samples=int(K), resamples=B)


#: Old names of the isotropy test (kept: same objects).
AlignmentTest = IsotropyTest
alignment_test = isotropy_test


@dataclass(frozen=True)
class CurvatureTest:
    """Test of alignment with curvature: ``estimate`` is the log-log slope b over the
    included directions, ``statistic`` its studentized value b / SE(b) (relation_fit's SE,
    ``df`` its Satterthwaite df); ``p_permutation`` the one-sided permutation p,
    ``p_parametric`` the one-sided t p of relation_fit, ``p_value`` the larger of the two
    (NaN without resamples or with fewer than 4 directions or 3 draws)."""

    estimate: float
    statistic: float
    df: float
    p_value: float
    p_permutation: float
    p_parametric: float
    n_directions: int
    n_samples: int
    resamples: int

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the fields."""
        return pd.DataFrame([asdict(self)])


def studentized_slopes(y: np.ndarray, infl: np.ndarray, x: np.ndarray, *, nu2: float | None = None):
    """Slopes b, studentized slopes b / SE and Satterthwaite df of ``y`` on each row of ``x``.

    Vectorised over the N rows of ``x`` (N, n); SE and df are exactly
    :func:`relation_fit`'s (``infl`` (K, n): per-draw jackknife deviations of ``y``), except
    that a given ``nu2`` replaces the df of the sampling part (saves the O(K n) per row).

    Returns
    -------
    b, t, df, nu2 : numpy.ndarray, shape (N,)
    """
    from .relation import _slope_rows

    b, var, df, _, nu2_r = _slope_rows(y, infl, x, nu2=nu2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = b / np.sqrt(var)
    return b, t, df, nu2_r


def _curvature_iv(values, eigenvalues, resamples):
    X, lam, B = _alignment_iv(values, eigenvalues, resamples)
    if not np.all(np.isfinite(X)):
        raise InputError("`values` must be finite; got NaN or Inf.")
    return X, lam, B


def curvature_test(values, eigenvalues, *, resamples: int = RESAMPLES, rng: np.random.Generator | None = None,
                   _permutations: np.ndarray | None = None) -> CurvatureTest:
    """Does the noise variance grow with curvature? A permutation test of the log-log slope.

    Parameters
    ----------
    values : array_like, shape (K, n)
        Noise draws projected on n Hessian directions with positive eigenvalues (the
        included directions of a probe).
    eigenvalues : array_like, shape (n,)
        Their eigenvalues (> 0).
    resamples : int, default 999
        Number of random permutations N; 0 gives ``p_value = nan``.
    rng : numpy.random.Generator, optional
        Source of the permutations (fresh entropy when omitted).

    Returns
    -------
    CurvatureTest
        ``p_value = max(p_permutation, p_parametric)``, one-sided (variance grows with lambda).

    Notes
    -----
    H0: the variances are unrelated to the eigenvalues given the directions — the
    eigenvalues are exchangeable across directions. This is the null of "anisotropic noise
    that is not aligned with curvature" (which the isotropy test rejects). The statistic
    is the one-sided t p-value of the studentized slope ``T = b / SE(b)`` of
    :func:`relation_fit` (jackknife over the shared draws + HC2 scatter, Satterthwaite df),
    recomputed for every permutation (the sampling part's df kept at the observed value):
    ``p_permutation = (1 + #{p_perm <= p_obs}) / (1 + N)``.
    Permuting lambda keeps the draws and their correlation across directions;
    studentizing keeps the test close to its level when sampling errors are correlated
    along the spectrum. The permutation test is exact when the direction variances are
    exchangeable; it is not when a few outlier eigenvalues also have a larger scatter
    (measured type-I 0.09 at 5%); relation_fit's t test holds there (0.05). So
    ``p_value = max(p_permutation, p_parametric)``: a level-alpha test whenever either
    test's assumptions hold (docs/statistics.md has the measurements).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> lam = np.geomspace(10, 0.1, 20)
    >>> aniso = np.exp(rng.normal(0, 1, 20))            # anisotropic, unrelated to lambda
    >>> res = curvature_test(rng.normal(size=(200, 20)) * np.sqrt(aniso), lam, resamples=499, rng=rng)
    >>> res.p_value > 0.05
    True
    >>> res = curvature_test(rng.normal(size=(200, 20)) * np.sqrt(lam), lam, resamples=499, rng=rng)
    >>> res.p_value
    0.002
    """
    X, lam, B = _curvature_iv(values, eigenvalues, resamples)
    from .relation import MIN_DIRECTIONS_CI, _constant_columns, _jackknife_log_variances, _slope_design_ok

    K, n = X.shape
    x = np.log(lam)
    jk = _jackknife_log_variances(X) if n >= MIN_DIRECTIONS_CI else None
    if jk is None or not _slope_design_ok(x) or _constant_columns(X).any():
        return CurvatureTest(estimate=np.nan, statistic=np.nan, df=np.nan, p_value=np.nan, p_permutation=np.nan,
                             p_parametric=np.nan, n_directions=n, n_samples=K, resamples=B)
    y, infl = jk
    b, t, df, nu2 = studentized_slopes(y, infl, x[None, :])
    if not (np.isfinite(t[0]) and np.isfinite(df[0]) and df[0] > 0):  # no studentized slope: no test
        return CurvatureTest(estimate=float(b[0]), statistic=np.nan, df=np.nan, p_value=np.nan,
                             p_permutation=np.nan, p_parametric=np.nan, n_directions=n, n_samples=K, resamples=B)
    stat = -sps.t.logsf(t[0], df[0])  # larger = stronger evidence for variance growing with lambda
    p_par = float(sps.t.sf(t[0], df[0]))
    p = np.nan
    if B > 0:
        if _permutations is None:
            g = rng if rng is not None else np.random.default_rng()  # None: fresh entropy
            perms = np.argsort(g.random((B, n)), axis=1)
        else:
            perms = _permutations
        # canonical order (descending eigenvalue): listing directions in another order gives
        # the same reference
        order = np.argsort(-lam, kind="stable")
        xs = x[order][perms]  # (B, n) permuted eigenvalues, in the canonical order
        # the sampling part's df of the observed slope serves every permutation (the
        # statistic is any fixed function of the permuted data; this one saves O(K n) each)
        _, t_perm, df_perm, _ = studentized_slopes(y[order], infl[:, order], xs, nu2=float(nu2[0]))
        s_perm = -sps.t.logsf(t_perm, df_perm)
        hits = int(np.count_nonzero(s_perm >= stat - 1e-9 * max(1.0, abs(stat))))
        p = (1.0 + hits) / (1.0 + B)
    return CurvatureTest(estimate=float(b[0]), statistic=float(t[0]), df=float(df[0]),
                         p_value=float(np.maximum(p, p_par)) if B > 0 else np.nan, p_permutation=float(p),
                         p_parametric=p_par, n_directions=n, n_samples=K, resamples=B)
