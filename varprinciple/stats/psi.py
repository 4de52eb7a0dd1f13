"""The variance–flatness exponent ψ of a weight trajectory (Feng & Tu): σ_i² ∝ F_i^(−ψ).

Per run: :func:`psi_fit` takes the second half's projections on the trajectory PCs (a
``(T, k)`` array, the ``trajectory_projections.parquet`` table) and the widths F_i
(``trajectory.parquet``), excludes the drift PC and censored widths, estimates each PC's
*stationary* variance (:func:`stationary_variance`: the window variance corrected for the
autocorrelation of the series, an AR(1) per PC) and returns ψ = minus the OLS slope of
log σ_i² on log F_i with the interval of a parametric AR(1) bootstrap, the per-PC τ and
n_eff, the lever arm (decades of F) and the one-sided p for ψ > 0 — or a refused interval
with the reason in ``note`` when n_eff or the lever arm is below the calibrated minimum.
:func:`psi_from_tables` does the same from the two logged tables. Over runs, ψ is one number
per run: use :func:`~varprinciple.stats.inference.group_test`,
:func:`~varprinciple.stats.inference.compare_groups` and
:func:`~varprinciple.stats.inference.tost` (docs/flatness.md).

This module imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .. import schema
from ..errors import InputError
from .defaults import CONFIDENCE, PSI_RESAMPLES, check_resamples

__all__ = ["PsiResult", "StationaryVariance", "psi_fit", "psi_from_tables", "stationary_variance",
           "effective_sample_size", "autocorrelation_time", "MIN_N_EFF", "CALIBRATED_N_EFF", "MIN_LEVER_ARM",
           "DRIFT_TREND_MAX"]


def autocorrelation_time(x) -> np.ndarray:
    """Integrated autocorrelation time τ = 1 + 2 Σ_k ρ_k of each column of ``x`` (T, k).

    Geyer's initial positive sequence: the pair sums Γ_m = ρ_{2m} + ρ_{2m+1} are added while
    positive, τ = −1 + 2 Σ Γ_m; τ is at least 1 (no credit for anticorrelation).

    Examples
    --------
    An AR(1) series with coefficient φ has τ = (1 + φ) / (1 − φ) = 3 for φ = 0.5:

    >>> rng = np.random.default_rng(0)
    >>> e = rng.normal(size=20000); x = np.empty_like(e); x[0] = e[0]
    >>> for t in range(1, len(e)):
    ...     x[t] = 0.5 * x[t - 1] + e[t]
    >>> round(float(autocorrelation_time(x)[0]))
    3
    """
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    T = a.shape[0]
    a = a - a.mean(0)
    n = 1 << int(np.ceil(np.log2(2 * T)))
    f = np.fft.rfft(a, n=n, axis=0)
    acov = np.fft.irfft(f * np.conj(f), n=n, axis=0)[:T] / T
    out = np.ones(a.shape[1])
    for j in range(a.shape[1]):
        if acov[0, j] <= 0:
            continue
        rho = acov[:, j] / acov[0, j]
        s = 0.0
        for m in range(0, (T - 1) // 2):
            g = rho[2 * m] + rho[2 * m + 1]
            if g <= 0:
                break
            s += g
        out[j] = max(1.0, -1.0 + 2.0 * s)
    return out


def effective_sample_size(x) -> np.ndarray:
    """Effective number of independent snapshots T / τ of each column of ``x`` (at most T).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> float(effective_sample_size(rng.normal(size=(400, 1)))[0]) > 300
    True
    """
    a = np.asarray(x, dtype=float)
    T = a.shape[0]
    return np.minimum(T, T / autocorrelation_time(a))


#: Smallest effective number of independent snapshots (along the slowest fitted PC) at which
#: psi's interval is given; below it the interval is refused. n_eff ~ 1 is the AR(1) fit's
#: bound (phi = 1 - 2/T): the PC did not relax within the window (a random walk, or slower).
#: Not higher, because a refusal near the calibrated range selects runs whose psi is biased
#: (docs/flatness.md).
MIN_N_EFF = 1.05
#: Smallest n_eff_min at which the interval was calibrated; between MIN_N_EFF and this the
#: interval is given with a caveat in ``note``.
CALIBRATED_N_EFF = 5.0
#: Smallest lever arm (decades of F spanned by the fitted PCs) at which the interval is given.
MIN_LEVER_ARM = 0.2
#: Largest AR(1) coefficient used (a PC with phi above it is treated as a random walk: n_eff ~ 1).
_PHI_MAX_FRACTION = 2.0


def _geyer_tau(xc: np.ndarray) -> np.ndarray:
    """Geyer's initial-positive-sequence τ of each column of centred ``xc`` (..., T, k),
    vectorised (the same estimator as :func:`autocorrelation_time`)."""
    T = xc.shape[-2]
    n = 1 << int(np.ceil(np.log2(2 * T)))
    f = np.fft.rfft(xc, n=n, axis=-2)
    acov = np.fft.irfft(f * np.conj(f), n=n, axis=-2)[..., :2 * ((T - 1) // 2), :]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = acov / acov[..., :1, :]
    g = rho[..., 0::2, :] + rho[..., 1::2, :]
    keep = np.cumprod(g > 0, axis=-2)
    tau = -1.0 + 2.0 * np.nansum(np.where(keep > 0, g, 0.0), axis=-2)
    return np.where(np.isfinite(tau), np.maximum(tau, 1.0), 1.0)


def _ar1(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``X`` (..., T, k): the AR(1) coefficient used, and the window variance
    (ddof 1). φ is the larger of the lag-1 autocorrelation with Kendall's bias correction
    φ̂ + (1 + 3φ̂)/T and the coefficient (τ − 1)/(τ + 1) of the AR(1) with the series'
    Geyer τ (a PC mixing fast and slow directions relaxes more slowly than its lag-1
    autocorrelation says), clipped to [0, 1 − 2/T]."""
    T = X.shape[-2]
    xc = X - X.mean(-2, keepdims=True)
    ss = (xc * xc).sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(ss > 0, (xc[..., 1:, :] * xc[..., :-1, :]).sum(-2) / ss, 0.0)
    tau_g = _geyer_tau(xc)
    phi = np.maximum(phi + (1 + 3 * phi) / T, (tau_g - 1) / (tau_g + 1))
    phi = np.clip(phi, 0.0, 1 - _PHI_MAX_FRACTION / T)
    return phi, ss / (T - 1)


def _window_tau(phi: np.ndarray, T: int) -> np.ndarray:
    """τ_T = 1 + 2 Σ_{k<T} (1 − k/T) φ^k: T·Var(mean)/σ² of a length-T AR(1) window."""
    f = np.asarray(phi, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = f / (1 - f) - f * (1 - f ** T) / (T * (1 - f) ** 2)
    return np.where(f > 0, 1 + 2 * s, 1.0)


def stationary_variance(projections) -> StationaryVariance:
    """Stationary variance of each column of a ``(T, k)`` trajectory, corrected for the window.

    A window of T autocorrelated snapshots under-estimates the stationary variance: the
    sample variance (ddof 1) has expectation σ² (T − τ_T) / (T − 1), τ_T = T·Var(x̄)/σ²
    (≈ the integrated autocorrelation time τ for T ≫ τ), so it is low by about τ/T — most
    along the slowest (flattest) PCs. Each column is modelled as an AR(1) (the exact law of a
    linearised SGD/OU direction sampled at a fixed lag): φ is the lag-1 autocorrelation with
    Kendall's small-sample correction, τ = (1 + φ)/(1 − φ), n_eff = T/τ, and the variance is
    s² (T − 1)/(T − τ_T(φ)).

    Examples
    --------
    An AR(1) with φ = 0.95 and unit stationary variance, 400 snapshots (τ = 39):

    >>> from scipy.signal import lfilter
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(400, 4000)) * np.sqrt(1 - 0.95 ** 2); z[0] /= np.sqrt(1 - 0.95 ** 2)
    >>> x = lfilter([1.0], [1.0, -0.95], z, axis=0)
    >>> sv = stationary_variance(x)
    >>> round(float(np.mean(x.var(0, ddof=1))), 2), round(float(np.mean(sv.variance)), 2)
    (0.91, 1.03)
    """
    P = np.asarray(projections, dtype=float)
    if P.ndim == 1:
        P = P[:, None]
    T = P.shape[0]
    phi, s2 = _ar1(P)
    tau = (1 + phi) / (1 - phi)
    return StationaryVariance(s2 * (T - 1) / (T - _window_tau(phi, T)), s2, phi, tau, T / tau)


@dataclass(frozen=True)
class StationaryVariance:
    """Per PC: ``variance`` (stationary, window-corrected), ``variance_window`` (the sample
    variance, ddof 1), the AR(1) coefficient ``phi`` per snapshot, ``tau`` and ``n_eff``."""

    variance: np.ndarray
    variance_window: np.ndarray
    phi: np.ndarray
    tau: np.ndarray
    n_eff: np.ndarray


def _ar1_replicates(phi, var, R, T, n, rng):
    """``n`` replicates (n, T, k) of k AR(1)s with coefficients ``phi``, stationary variances
    ``var``, innovation correlation ``R``, started at stationarity."""
    from scipy.signal import lfilter
    k = phi.size
    LR = np.linalg.cholesky(R)
    L0 = np.linalg.cholesky(R / (1 - np.outer(phi, phi)))
    z = rng.standard_normal((n, T, k)) @ LR.T
    z[:, 0, :] = rng.standard_normal((n, k)) @ L0.T
    X = np.empty_like(z)
    for i in range(k):
        X[:, :, i] = lfilter([1.0], [1.0, -phi[i]], z[:, :, i], axis=1)
    return X * np.sqrt(var * (1 - phi ** 2))


def _innovation_corr(P, phi):
    xc = P - P.mean(0)
    e = xc[1:] - phi * xc[:-1]
    sd = e.std(0)
    R = np.corrcoef(e.T) if e.shape[1] > 1 else np.ones((1, 1))
    R = np.where(np.isfinite(R), R, 0.0)
    np.fill_diagonal(R, 1.0)
    # keep it positive definite (near-collinear PCs): shrink towards the identity if needed
    for shrink in (0.0, 0.01, 0.05, 0.2, 1.0):
        Rs = (1 - shrink) * R + shrink * np.eye(len(R))
        try:
            np.linalg.cholesky(Rs / (1 - np.outer(phi, phi)))
            return Rs
        except np.linalg.LinAlgError:
            continue
    return np.eye(len(R)) if sd.size else R


@dataclass(frozen=True)
class PsiResult:
    """ψ of one run: σ² ∝ F^(−ψ) over the non-drift PCs with a finite width.

    ``psi`` is minus the OLS slope of log σ² on log F, the σ² being the stationary
    variances (:func:`stationary_variance`), bias-corrected by the parametric bootstrap;
    ``psi_window`` the same slope from the uncorrected window variances; ``intercept`` the
    fit's intercept; ``ci_low``/``ci_high`` the basic interval of a parametric AR(1)
    bootstrap at ``confidence``, widened by max(1, ``se_ols`` / ``se_sampling``) for the
    scatter of the PCs about the power law; ``se`` the standard deviation of the widened
    replicates; ``p_value`` the one-sided p for ψ > 0 inverting the interval; ``n_eff_min``/
    ``n_eff_median`` the effective numbers of independent snapshots over the PCs used
    (AR(1) τ); ``lever_arm`` the decades of F they span; ``refused`` true (with null
    interval and p and the reason in ``note``) when n_eff_min < ``MIN_N_EFF`` or the lever
    arm < ``MIN_LEVER_ARM``; ``drift_trend`` the fraction of the drift PC's window variance
    that a linear trend explains (null without a drift PC); ``note`` the caveats in words
    (null when none); ``tau``/``n_eff`` per component (NaN for unused ones), in component
    order; ``n_drift``, ``n_censored``, ``n_nonpositive`` count the PCs excluded and why.
    """

    psi: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    se_sampling: float
    se_ols: float
    intercept: float
    spearman_r: float
    n_components: int
    n_drift: int
    n_censored: int
    n_nonpositive: int
    n_snapshots: int
    n_eff_min: float
    n_eff_median: float
    lever_arm: float
    psi_window: float
    bias: float
    refused: bool
    drift_trend: float
    note: str | None
    resamples: int
    confidence: float
    threshold: str
    tau: tuple = ()
    n_eff: tuple = ()
    variance: tuple = ()

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the scalar fields (the per-component tuples left out)."""
        d = asdict(self)
        for key in ("tau", "n_eff", "variance"):
            d.pop(key)
        return pd.DataFrame([d])


def _slope(logf: np.ndarray, logv: np.ndarray) -> np.ndarray:
    """OLS slopes along the last axis (NaN when the x values are all equal)."""
    xm = logf - logf.mean(-1, keepdims=True)
    sxx = (xm * xm).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > 0, (xm * (logv - logv.mean(-1, keepdims=True))).sum(-1) / sxx, np.nan)


def _psi_iv(P, widths, drift, confidence, resamples, min_n_eff, min_lever_arm):
    P = np.asarray(P, dtype=float)
    if P.ndim != 2:
        raise InputError(f"`projections` must be a 2-D array (snapshots x components); got {P.ndim}-D.")
    if not np.all(np.isfinite(P)):
        raise InputError("`projections` must be finite; got NaN or Inf.")
    w = np.asarray(widths, dtype=float).ravel()
    if w.size != P.shape[1]:
        raise InputError(f"`widths` must have one value per component ({P.shape[1]}); got {w.size}.")
    d = np.zeros(w.size, bool) if drift is None else np.asarray(drift, dtype=bool).ravel()
    if d.size != w.size:
        raise InputError(f"`drift` must have one flag per component ({w.size}); got {d.size}.")
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise InputError(f"`confidence` must be in (0, 1); got {confidence!r}.")
    check_resamples(resamples)
    if P.shape[0] < 8:
        raise InputError(f"`projections` needs at least 8 snapshots; got {P.shape[0]}.")
    for name, v in (("min_n_eff", min_n_eff), ("min_lever_arm", min_lever_arm)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise InputError(f"`{name}` must be a number >= 0; got {v!r}.")
    return P, w, d


def _trend_r2(x: np.ndarray) -> float:
    t = np.arange(x.size) - (x.size - 1) / 2
    xc = x - x.mean()
    ss = float(xc @ xc)
    return float((t @ xc) ** 2 / (t @ t) / ss) if ss > 0 else 0.0


#: Share of the drift PC's window variance explained by a linear trend above which the
#: window is flagged as not stationary.
DRIFT_TREND_MAX = 0.5


def psi_fit(projections, widths, *, drift=None, confidence: float = CONFIDENCE, resamples: int = PSI_RESAMPLES,
            threshold: str = "width", min_n_eff: float = MIN_N_EFF, min_lever_arm: float = MIN_LEVER_ARM,
            rng: np.random.Generator | None = None) -> PsiResult:
    """ψ of one trajectory from its stationary variances, with an AR(1)-bootstrap interval.

    Parameters
    ----------
    projections : array_like, shape (T, k)
        The measuring half's snapshots projected on the k PCs, in time order.
    widths : array_like, shape (k,)
        Widths F_i (NaN: censored, excluded).
    drift : array_like of bool, optional
        PCs to exclude as drift (the logged ``drift`` column: PC1).
    confidence : float, default 0.95
    resamples : int, default :data:`~varprinciple.stats.defaults.PSI_RESAMPLES` (2,000)
        0 skips the bootstrap (interval, p and se are NaN; ``psi`` is then not
        bootstrap-bias-corrected).
    threshold : str
        Name of the width column used (reported).
    min_n_eff, min_lever_arm : float
        Below either, the interval and p are refused (null) and ``note`` says why; the
        defaults are the smallest designs at which the interval was calibrated
        (docs/flatness.md).
    rng : numpy.random.Generator, optional

    Returns
    -------
    PsiResult

    Raises
    ------
    InputError
        On malformed input, or fewer than 3 usable PCs (with the exclusion counts).

    Notes
    -----
    The estimand is ψ = −(OLS slope of log σ_i² on log F_i) over the fitted PCs, σ_i² the
    stationary variance along PC i (PCs and widths held fixed). Each PC's series is fitted
    as an AR(1) (:func:`stationary_variance`: the window variance corrected by
    (T − 1)/(T − τ_T)). The bootstrap simulates B replicate windows from the fitted model —
    k AR(1)s with the fitted φ_i and σ_i², innovations correlated across PCs as the fitted
    residuals are, started at stationarity — and refits φ, σ² and ψ* on each, so that it
    reproduces the estimator's small-sample bias and spread at the run's n_eff. With
    d = ψ* − ψ̂ (ψ̂ the plug-in estimate), ``bias`` = mean(d), ``psi`` = ψ̂ − bias and the
    interval is the basic one [ψ̂ − q_{1−a}(d), ψ̂ − q_a(d)]. Scatter of the PCs about the
    power law is not in the AR(1) model: the replicates' deviations are stretched by
    max(1, se_ols / se_sampling), se_ols the classical OLS standard error from the fit's
    residuals, and by t_{df}(1 − a)/z(1 − a), df = 2·n_eff_min, for the error of the plug-in
    φ the replicates are drawn at. p = (1 + #{d ≥ ψ̂}) / (B + 1) inverts the one-sided
    interval. Below ``CALIBRATED_N_EFF`` the interval comes with a caveat in ``note``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> F = np.geomspace(1, 10, 8)
    >>> P = rng.normal(size=(400, 8)) * F ** -2.0           # sigma = F^-2: psi = 4
    >>> res = psi_fit(P, F, resamples=500, rng=np.random.default_rng(1))
    >>> round(res.psi), res.ci_low > 3.5, res.p_value < 0.01, res.n_components, res.note is None
    (4, True, True, 8, True)
    """
    P, w, d = _psi_iv(projections, widths, drift, confidence, resamples, min_n_eff, min_lever_arm)
    rng = np.random.default_rng() if rng is None else rng
    T = P.shape[0]
    raw = P.var(0, ddof=1)
    censored = ~np.isfinite(w) & ~d
    nonpos = (np.isfinite(w) & ~d) & ((w <= 0) | (raw <= 0))
    use = ~d & ~censored & ~nonpos
    k = int(use.sum())
    if k < 3:
        raise InputError(f"psi needs at least 3 usable components; got {k} ({int(d.sum())} drift, "
                         f"{int(censored.sum())} censored widths, {int(nonpos.sum())} non-positive).")
    Pu, logf = P[:, use], np.log(w[use])
    sv = stationary_variance(Pu)
    logv = np.log(sv.variance)
    b = float(_slope(logf, logv))
    psi_hat = -b
    intercept = float(logv.mean() - b * logf.mean())
    psi_window = float(-_slope(logf, np.log(sv.variance_window)))
    resid = logv - intercept - b * logf
    xm = logf - logf.mean()
    se_ols = float(np.sqrt(resid @ resid / (k - 2) / (xm @ xm))) if k > 2 and xm @ xm > 0 else np.nan
    lever = float((logf.max() - logf.min()) / np.log(10))
    n_eff_min = float(sv.n_eff.min())
    notes = []
    drift_trend = np.nan
    if d.any():
        drift_trend = _trend_r2(P[:, np.flatnonzero(d)[0]])
        if drift_trend > DRIFT_TREND_MAX:
            notes.append(f"window not stationary: a linear trend explains {drift_trend:.0%} of the drift PC's "
                         f"variance (docs/flatness.md)")
    refusal = None
    if n_eff_min < min_n_eff:
        j = int(np.argmin(sv.n_eff))
        refusal = (f"no interval: n_eff {n_eff_min:.1f} < {min_n_eff:g} along PC "
                   f"{int(np.flatnonzero(use)[j]) + 1} (lengthen the window; docs/flatness.md)")
    elif n_eff_min < CALIBRATED_N_EFF:
        j = int(np.argmin(sv.n_eff))
        notes.append(f"caveat: n_eff {n_eff_min:.1f} along PC {int(np.flatnonzero(use)[j]) + 1} is below the "
                     f"calibrated range (>= {CALIBRATED_N_EFF:g}): the window is short against its relaxation, "
                     f"or it diffuses (docs/flatness.md)")
    if refusal is None and lever < min_lever_arm:
        refusal = (f"no interval: the fitted PCs span {lever:.2f} decades of F < {min_lever_arm:g} "
                   f"(docs/flatness.md)")
    lo = hi = p = se = se_boot = np.nan
    bias = 0.0
    if resamples:
        R = _innovation_corr(Pu, sv.phi)
        dev = []
        chunk = max(1, int(2e6 // max(1, T * k)))
        for start in range(0, resamples, chunk):
            X = _ar1_replicates(sv.phi, sv.variance, R, T, min(chunk, resamples - start), rng)
            phi_r, s2_r = _ar1(X)
            v_r = s2_r * (T - 1) / (T - _window_tau(phi_r, T))
            with np.errstate(divide="ignore", invalid="ignore"):
                dev.append(-_slope(logf, np.log(v_r)) - psi_hat)
        dev = np.concatenate(dev)
        dev = dev[np.isfinite(dev)]
        if dev.size > 1:
            bias = float(dev.mean())
            se_boot = float(dev.std(ddof=1))
            stretch = max(1.0, se_ols / se_boot) if se_boot > 0 and np.isfinite(se_ols) else 1.0
            a = (1 - confidence) / 2
            # the replicates are drawn at the fitted phi, not at the unknown true one: a t-type
            # widening with df = 2 n_eff_min covers that plug-in error (calibrated: docs/flatness.md)
            from scipy.stats import norm, t as t_dist
            widen = float(t_dist.ppf(1 - a, max(1.0, 2 * n_eff_min)) / norm.ppf(1 - a))
            dev = bias + stretch * widen * (dev - bias)
            q_lo, q_hi = np.quantile(dev, [a, 1 - a])
            lo, hi = psi_hat - q_hi, psi_hat - q_lo
            p = float((1 + np.sum(dev >= psi_hat)) / (dev.size + 1))
            se = float(dev.std(ddof=1))
    if refusal is not None:
        lo = hi = p = np.nan
        notes.insert(0, refusal)
    from scipy.stats import spearmanr
    rs = float(spearmanr(logf, logv).statistic)
    full = np.full(w.size, np.nan)

    def per_comp(x):
        out = full.copy()
        out[use] = x
        return tuple(float(v) for v in out)

    return PsiResult(psi_hat - bias, float(lo), float(hi), p, se, se_boot, se_ols, intercept, rs, k,
                     int(d.sum()), int(censored.sum()), int(nonpos.sum()), T, n_eff_min,
                     float(np.median(sv.n_eff)), lever, psi_window, bias, refusal is not None,
                     float(drift_trend), "; ".join(notes) or None, resamples, confidence, threshold,
                     per_comp(sv.tau), per_comp(sv.n_eff), per_comp(sv.variance))


def psi_from_tables(pcs: pd.DataFrame, projections: pd.DataFrame, *, threshold: str = "width",
                    exclude_drift: bool = True, **kwargs) -> PsiResult:
    """:func:`psi_fit` from a run's ``trajectory.parquet`` and ``trajectory_projections.parquet``.

    ``threshold`` names the width column (``width``: f = e; ``width_2``: f = 2).

    Raises
    ------
    InputError
        If a column is missing or the projections do not cover every component.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> F = np.geomspace(1, 10, 6)
    >>> P = rng.normal(size=(200, 6)) * F ** -1.0
    >>> pcs = pd.DataFrame({"component": range(6), "width": F, "drift": [True] + [False] * 5})
    >>> proj = pd.DataFrame({"step": np.repeat(np.arange(200), 6), "component": np.tile(range(6), 200),
    ...                      "value": P.ravel()})
    >>> res = psi_from_tables(pcs, proj, resamples=200, rng=np.random.default_rng(0))
    >>> res.n_components, res.n_drift, round(res.psi)
    (5, 1, 2)
    """
    for name, df, cols in ((schema.TRAJECTORY.file, pcs, ("component", threshold, "drift")),
                           (schema.TRAJECTORY_PROJECTIONS.file, projections, ("step", "component", "value"))):
        miss = [c for c in cols if c not in df.columns]
        if miss:
            raise InputError(f"{name}: column {miss[0]!r} missing")
    pcs = pcs.sort_values("component")
    wide = projections.pivot_table(index="step", columns="component", values="value", aggfunc="first")
    comps = pcs["component"].to_numpy()
    missing = [c for c in comps if c not in wide.columns]
    if missing or wide[comps].isna().any().any():
        raise InputError(f"{schema.TRAJECTORY_PROJECTIONS.file}: column 'component': component "
                         f"{missing[0] if missing else int(wide[comps].isna().any().idxmax())} is not "
                         f"projected at every step")
    drift = pcs["drift"].to_numpy(bool) if exclude_drift else None
    return psi_fit(wide[comps].to_numpy(), pcs[threshold].to_numpy(float), drift=drift, threshold=threshold,
                   **kwargs)
