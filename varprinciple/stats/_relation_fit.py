"""The numerical core of the per-probe slope fit (private): the jackknife of log variances and
the vectorised slope with its two-part variance and Satterthwaite df.

Shared by :mod:`.relation` (b from sampled draws), :mod:`.relation_exact` (b from exact
per-direction variances and their per-group contributions) and :mod:`.alignment`. The
derivation is in :func:`varprinciple.stats.relation.relation_fit`'s Notes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EQUAL_LOG_EIGENVALUES", "MAX_LEVERAGE", "CONSTANT_REL", "SAMPLING_FLOOR"]


#: Log eigenvalues closer than this are one eigenvalue: with every included direction in one
#: (numerically) degenerate eigenspace -- e.g. the output layer of an MSE network, whose Hessian
#: block is I_outputs (x) the feature covariance -- there is no spread to fit a slope on (eigsh's
#: 1e-10 tolerance and round-off otherwise leave differences of ~1e-15 that give slopes ~1e15).
EQUAL_LOG_EIGENVALUES = 1e-8
#: A direction with leverage above this (nearly) determines the slope alone (e.g. one eigenvalue
#: level beside a repeated one): its residual is (nearly) zero and its scatter cannot be
#: estimated, and the separable Bell-McCaffrey traces lose their precision as 1 - h -> 0
#: (relative error ~1 at 1 - h ~ 1e-8, fine at 1e-4: independent review); the slope then gets no
#: interval.
MAX_LEVERAGE = 1.0 - 1e-3
#: A column whose standard deviation is below this multiple of its mean's magnitude is constant
#: (round-off variance of a constant column is ~1e-32 of its square, not noise).
CONSTANT_REL = 1e-12
#: The slope variance is never estimated below this fraction of its sampling part.
SAMPLING_FLOOR = 0.5


def _constant_columns(X: np.ndarray, s2: np.ndarray | None = None) -> np.ndarray:
    """Columns of ``X`` (K, n) that are constant up to round-off (``s2``: their variances,
    ddof 1, when already known)."""
    s2 = X.var(axis=0, ddof=1) if s2 is None else s2
    m = np.abs(X.mean(axis=0))
    return ~(s2 > (CONSTANT_REL * m) ** 2)  # also catches s2 <= 0 and NaN


def _slope_design_ok(x: np.ndarray) -> bool:
    """True if the log eigenvalues ``x`` spread (not all numerically equal) and no direction
    has leverage above ``MAX_LEVERAGE`` (the slope's interval then exists)."""
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if not np.ptp(x) > EQUAL_LOG_EIGENVALUES or not sxx > 0:
        return False
    return float(np.max(1.0 / x.size + dx * dx / sxx)) < MAX_LEVERAGE

def _loo_log_variances(Xi: np.ndarray) -> np.ndarray | None:
    """(K, n) leave-one-draw-out log column variances (ddof = 1), or None if one is not positive."""
    K = Xi.shape[0]
    d = Xi - Xi.mean(axis=0)
    sq = d * d
    s2_loo = (sq.sum(axis=0) - K / (K - 1.0) * sq) / (K - 2.0)
    if not np.all(s2_loo > 0):
        return None
    return np.log(s2_loo)


def _jackknife_log_variances(Xi: np.ndarray):
    """``(y, infl)``: jackknife bias-corrected log variances (n,) and the (K, n) per-draw
    jackknife deviations with ``infl.T @ infl`` = the jackknife sampling covariance of ``y``;
    None with fewer than 3 draws or a non-positive leave-one-out variance."""
    K = Xi.shape[0]
    if K < 3:
        return None
    s2 = Xi.var(axis=0, ddof=1)
    Yl = _loo_log_variances(Xi)
    if Yl is None or not np.all(s2 > 0):
        return None
    ybar_loo = Yl.mean(axis=0)
    # jackknife bias correction of log s^2 (E log s^2 < log sigma^2, by an amount that depends on
    # the kurtosis of each direction's noise)
    y = np.log(s2) - (K - 1.0) * (ybar_loo - np.log(s2))
    return y, np.sqrt((K - 1.0) / K) * (Yl - ybar_loo)


def _bm_df(w: np.ndarray, q1: np.ndarray, n: int, *oms: np.ndarray) -> list[np.ndarray]:
    """Bell-McCaffrey df ``tr(G Omega)^2 / tr((G Omega)^2)`` per row, ``G = M diag(w) M``, for
    each diagonal working covariance in ``oms``.

    ``w``, ``q1`` and each ``om`` are (m, n): weights, unit-norm centred regressor and the
    diagonal of Omega per row. G = diag(w) + F with F_ij = sum_t A_t(i) B_t(j) separable (8
    terms), so the traces need O(n) per row instead of n x n matrices.
    """
    c00 = w.sum(axis=1) / n
    c01 = np.einsum("ij,ij->i", w, q1) / n  # q0 * (q0' diag(w) q1)
    c11 = np.einsum("ij,ij->i", w, q1 * q1)
    one = np.ones_like(q1)
    qw = q1 * w
    A = np.stack([c00[:, None] / n * one, c01[:, None] * q1, c01[:, None] * one, c11[:, None] * q1,
                  -w / n, one, -qw, q1], axis=1)  # (m, 8, n)
    B = np.stack([one, one, q1, q1, one, -w / n, q1, -qw], axis=1)
    f_diag = np.einsum("Nti,Nti->Ni", A, B)
    out = []
    for om in oms:
        MA = np.einsum("Nti,Nsi->Nts", A * om[:, None, :], A)
        MB = np.einsum("Nti,Nsi->Nts", B * om[:, None, :], B)
        tr_go = np.einsum("Ni,Ni->N", om, w + f_diag)
        tr_go2 = np.einsum("Nts,Nts->N", MA, MB) + np.einsum("Ni,Ni->N", om * om, w * w + 2.0 * w * f_diag)
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(tr_go * tr_go / tr_go2)
    return out


def _slope_rows(y: np.ndarray, infl: np.ndarray, x: np.ndarray, *, chunk: int = 256,
                nu2: float | None = None):
    """The slope of ``y`` on each row of ``x`` (N, n) with its variance and df, vectorised.

    ``infl`` (K, n) are the per-draw jackknife deviations of ``y`` (``Sigma = infl.T @ infl``).
    Returns ``(b, var_b, df, v_samp, nu2)``, arrays of shape (N,); see :func:`relation_fit`'s
    Notes. O(N (n^2 + K n)) after one n x n product; O(N n^2) when ``nu2`` (the df of the
    sampling part, which needs the K per-draw values of each slope) is given.
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    N, n = x.shape
    K = infl.shape[0]
    Sigma = infl.T @ infl
    dS = np.diag(Sigma)
    out = [np.empty(N) for _ in range(5)]
    for lo in range(0, N, chunk):
        xs = x[lo:lo + chunk]
        m = xs.shape[0]
        dx = xs - xs.mean(axis=1, keepdims=True)
        sxx = np.einsum("ij,ij->i", dx, dx)
        c = dx / sxx[:, None]
        b = c @ y
        r = y[None, :] - y.mean() - b[:, None] * dx  # residuals
        h = 1.0 / n + dx * dx / sxx[:, None]  # leverages
        w = c * c / (1.0 - h)
        # (1) HC2 on the residuals: the scatter (heteroscedastic, leverage-adjusted) plus the
        #     part of the sampling error the residuals see, tr(G Sigma), G = M diag(w) M
        v1 = np.einsum("ij,ij->i", w, r * r)
        # residual maker M = I - q0 q0' - q1 q1', q0 = 1/sqrt(n), q1 = dx/sqrt(sxx) (per row)
        q1 = dx / np.sqrt(sxx)[:, None]
        s0 = Sigma.sum(axis=1) / np.sqrt(n)  # Sigma q0
        s1 = q1 @ Sigma  # (Sigma q1)' per row
        b00 = float(s0.sum()) / np.sqrt(n)
        b01 = s1.sum(axis=1) / np.sqrt(n)
        b11 = np.einsum("ij,ij->i", s1, q1)
        q0 = 1.0 / np.sqrt(n)
        diag_msm = (dS[None, :] - 2.0 * (q0 * s0[None, :] + q1 * s1)
                    + q0 * q0 * b00 + 2.0 * q0 * b01[:, None] * q1 + b11[:, None] * q1 * q1)
        tr_g_sigma = np.einsum("Ni,Ni->N", w, diag_msm)
        # (2) the sampling error the residuals cannot see (correlated along the spectrum)
        if nu2 is None:
            U = infl @ c.T  # (K, m) per-draw jackknife deviations of b
            vs = np.einsum("km,km->m", U, U)
        else:
            vs = np.einsum("ij,ij->i", c @ Sigma, c)
        v2 = vs - tr_g_sigma
        var = np.maximum(v1 + v2, SAMPLING_FLOOR * vs)
        # Satterthwaite df. (1): Bell-McCaffrey df of G, the smaller of those under two working
        # covariances of the residual errors: the residual-based Omega = diag(scatter_i + Sigma_ii),
        # scatter_i the HC2 estimate (r_i^2 - (M Sigma M)_ii) / (1 - h_i) clipped at 0, and the
        # design-based Omega = diag(tau2 / (1 - h_i) + Sigma_ii), tau2 the pooled scatter
        # (rr - tr(M Sigma)) / (n - 2) clipped at 0, inflated by 1 / (1 - h_i) as HC3's per-direction
        # estimates are on average. The residual-based df are large exactly when the few
        # high-leverage residuals are small by chance (SE small and df large together); the
        # design-based ones do not depend on the residuals' pattern and are small when a few
        # directions carry the leverage, where heteroscedasticity hurts most.
        om = np.maximum((r * r - diag_msm) / (1.0 - h), 0.0) + dS[None, :]
        tr_m_sigma = float(dS.sum()) - b00 - b11
        tau2 = np.maximum((np.einsum("ij,ij->i", r, r) - tr_m_sigma) / (n - 2.0), 0.0) if n > 2 else np.zeros(m)
        om_h = tau2[:, None] / (1.0 - h) + dS[None, :]
        nu1 = np.fmin(*_bm_df(w, q1, n, om, om_h))
        # (2): df of a jackknife variance from K draws, 2 (K - 1) / (kurtosis - 1), <= K - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            if nu2 is None:
                u = U - U.mean(axis=0)
                uu = np.einsum("km,km->m", u, u)
                kurt = np.where(uu > 0, K * np.sum(np.square(u * u), axis=0) / (uu * uu), 3.0)
                nu2_r = np.clip(2.0 * (K - 1.0) / np.maximum(kurt - 1.0, 1e-12), 1.0, K - 1.0)
            else:
                nu2_r = np.full(m, float(nu2))
            p2 = np.maximum(v2, 0.0)
            df = np.where(v1 + p2 > 0, (v1 + p2) ** 2 / (v1 * v1 / nu1 + p2 * p2 / nu2_r), n - 2.0)
        sl = slice(lo, lo + m)
        out[0][sl], out[1][sl], out[2][sl], out[3][sl], out[4][sl] = b, var, df, vs, nu2_r
    return tuple(out)
