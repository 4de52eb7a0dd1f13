"""The variance–flatness exponent ψ of a weight trajectory (Feng & Tu): σ_i² ∝ F_i^(−ψ).

Per run: :func:`psi_fit` takes the second half's projections on the trajectory PCs (a
``(T, k)`` array, the ``trajectory_projections.parquet`` table) and the widths F_i
(``trajectory.parquet``), excludes the drift PC and censored widths, and returns ψ = minus
the OLS slope of log σ_i² on log F_i with a bootstrap CI that respects the trajectory's
autocorrelation, the effective number of independent snapshots, and the one-sided p for
ψ > 0. :func:`psi_from_tables` does the same from the two logged tables. Over runs, ψ is
one number per run: use :func:`~varprinciple.stats.inference.group_test`,
:func:`~varprinciple.stats.inference.compare_groups` and
:func:`~varprinciple.stats.inference.tost` (docs/flatness.md).

This module imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["PsiResult", "psi_fit", "psi_from_tables", "effective_sample_size", "autocorrelation_time",
           "moving_block_indices"]


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


def moving_block_indices(T: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one moving-block bootstrap resample of a length-``T`` series.

    Examples
    --------
    >>> idx = moving_block_indices(10, 3, np.random.default_rng(0))
    >>> len(idx), bool(np.all(np.diff(idx[:3]) == 1))
    (10, True)
    """
    n_blocks = -(-T // block)
    starts = rng.integers(0, T - block + 1, size=n_blocks)
    return (starts[:, None] + np.arange(block)[None, :]).ravel()[:T]


@dataclass(frozen=True)
class PsiResult:
    """ψ of one run: σ² ∝ F^(−ψ) over the non-drift PCs with a finite width.

    ``psi`` is minus the OLS slope of log σ² on log F, ``intercept`` its intercept;
    ``ci_low``/``ci_high`` the percentile bootstrap interval at ``confidence`` (moving
    blocks of ``block_length`` snapshots, the same for every PC, and PCs resampled with
    replacement); ``p_value`` the one-sided p for ψ > 0; ``n_eff_min``/``n_eff_median``
    the effective numbers of independent snapshots over the PCs used; ``n_drift``,
    ``n_censored``, ``n_nonpositive`` count the PCs excluded and why.
    """

    psi: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    intercept: float
    spearman_r: float
    n_components: int
    n_drift: int
    n_censored: int
    n_nonpositive: int
    n_snapshots: int
    n_eff_min: float
    n_eff_median: float
    block_length: int
    resamples: int
    confidence: float
    threshold: str

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of the fields."""
        return pd.DataFrame([asdict(self)])


def _slope(logf: np.ndarray, logv: np.ndarray) -> np.ndarray:
    """OLS slopes along the last axis (NaN when the x values are all equal)."""
    xm = logf - logf.mean(-1, keepdims=True)
    sxx = (xm * xm).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > 0, (xm * (logv - logv.mean(-1, keepdims=True))).sum(-1) / sxx, np.nan)


def _psi_iv(P, widths, drift, confidence, resamples, block_length):
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
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise InputError(f"`resamples` must be an integer >= 100; got {resamples!r}.")
    if P.shape[0] < 8:
        raise InputError(f"`projections` needs at least 8 snapshots; got {P.shape[0]}.")
    if block_length is not None and not (isinstance(block_length, int) and 1 <= block_length <= P.shape[0]):
        raise InputError(f"`block_length` must be an integer in [1, {P.shape[0]}]; got {block_length!r}.")
    return P, w, d


def psi_fit(projections, widths, *, drift=None, confidence: float = 0.95, resamples: int = 2000,
            block_length: int | None = None, threshold: str = "width",
            rng: np.random.Generator | None = None) -> PsiResult:
    """ψ of one trajectory with an autocorrelation-aware bootstrap CI.

    Parameters
    ----------
    projections : array_like, shape (T, k)
        The measuring half's snapshots projected on the k PCs, in time order.
    widths : array_like, shape (k,)
        Widths F_i (NaN: censored, excluded).
    drift : array_like of bool, optional
        PCs to exclude as drift (the logged ``drift`` column: PC1).
    confidence : float, default 0.95
    resamples : int, default 2000
    block_length : int, optional
        Moving-block length; default: the largest integrated autocorrelation time of the
        PCs used, rounded up, within [1, T // 4].
    threshold : str
        Name of the width column used (reported).
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
    Each bootstrap replicate draws one moving-block resample of the time index (applied to
    every PC, so the cross-PC correlation of the variances is kept; the PCs and widths are
    held fixed) and one resample of the PCs with replacement (the scatter of the PCs around
    the power law); ψ* is refitted on the resampled variances. The p-value
    (1 + #{ψ* <= 0}) / (B + 1) inverts the percentile interval.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> F = np.geomspace(1, 10, 8)
    >>> P = rng.normal(size=(400, 8)) * F ** -2.0           # sigma = F^-2: psi = 4
    >>> res = psi_fit(P, F, resamples=500, rng=np.random.default_rng(1))
    >>> round(res.psi), res.ci_low > 3.5, res.p_value < 0.01, res.n_components
    (4, True, True, 8)
    """
    P, w, d = _psi_iv(projections, widths, drift, confidence, resamples, block_length)
    rng = np.random.default_rng() if rng is None else rng
    var = P.var(0, ddof=1)
    censored = ~np.isfinite(w) & ~d
    nonpos = (np.isfinite(w) & ~d) & ((w <= 0) | (var <= 0))
    use = ~d & ~censored & ~nonpos
    k = int(use.sum())
    if k < 3:
        raise InputError(f"psi needs at least 3 usable components; got {k} ({int(d.sum())} drift, "
                         f"{int(censored.sum())} censored widths, {int(nonpos.sum())} non-positive).")
    Pu, logf = P[:, use], np.log(w[use])
    logv = np.log(var[use])
    b = float(_slope(logf, logv))
    intercept = float(logv.mean() - b * logf.mean())
    T = P.shape[0]
    tau = autocorrelation_time(Pu)
    n_eff = np.minimum(T, T / tau)
    blk = block_length if block_length is not None else int(min(max(1, np.ceil(tau.max())), max(1, T // 4)))
    boot = np.empty(resamples)
    for r in range(resamples):
        idx = moving_block_indices(T, blk, rng)
        v = Pu[idx].var(0, ddof=1)
        j = rng.integers(0, k, size=k)
        with np.errstate(divide="ignore"):
            boot[r] = _slope(logf[j], np.log(v[j]))
    boot = -boot[np.isfinite(boot)]
    a = (1 - confidence) / 2
    lo, hi = (np.quantile(boot, [a, 1 - a]) if boot.size else (np.nan, np.nan))
    p = float((1 + np.sum(boot <= 0)) / (boot.size + 1))
    from scipy.stats import spearmanr
    rs = float(spearmanr(logf, logv).statistic)
    return PsiResult(-b, float(lo), float(hi), p, float(boot.std(ddof=1)) if boot.size > 1 else np.nan,
                     intercept, rs, k, int(d.sum()), int(censored.sum()), int(nonpos.sum()), T,
                     float(n_eff.min()), float(np.median(n_eff)), blk, resamples, confidence, threshold)


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
    for name, df, cols in (("trajectory.parquet", pcs, ("component", threshold, "drift")),
                           ("trajectory_projections.parquet", projections, ("step", "component", "value"))):
        miss = [c for c in cols if c not in df.columns]
        if miss:
            raise InputError(f"{name}: column {miss[0]!r} missing")
    pcs = pcs.sort_values("component")
    wide = projections.pivot_table(index="step", columns="component", values="value", aggfunc="first")
    comps = pcs["component"].to_numpy()
    missing = [c for c in comps if c not in wide.columns]
    if missing or wide[comps].isna().any().any():
        raise InputError(f"trajectory_projections.parquet: column 'component': component "
                         f"{missing[0] if missing else int(wide[comps].isna().any().idxmax())} is not "
                         f"projected at every step")
    drift = pcs["drift"].to_numpy(bool) if exclude_drift else None
    return psi_fit(wide[comps].to_numpy(), pcs[threshold].to_numpy(float), drift=drift, threshold=threshold,
                   **kwargs)
