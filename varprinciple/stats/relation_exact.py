"""The exponent b from exact per-direction noise variances (dropout's two-mask moments).

With masks iid per sample, dropout noise's variance along a direction v is a sum over the n
training samples, ``v' C v = (1/n^2) sum_i Var_eta(v' g_i(eta))``, and the collector estimates it
without bias from two masks per sample (:mod:`varprinciple.collect.noise.dropout_exact`):
``vhat = (1/(2 n^2)) sum_i (v' delta_i)^2``. It also logs the estimate's contributions of J
random groups of samples (``exact_variance_groups.parquet``: ``G[g, j]``, ``sum_g G[g, j] =
vhat_j``). :func:`exact_relation_fit` fits ``log vhat_j = a + b log lambda_j + e_j`` exactly
like :func:`varprinciple.stats.relation.relation_fit` fits the sampled draws' variances, with
the groups in the draws' place:

* the sampling error of the ``log vhat_j`` -- correlated across directions because every
  sample's mask pair enters every direction -- is the delete-one-group jackknife of the log
  sums (with its bias correction of the log), so no Gaussian or delta-method assumption is made
  about the heavy-tailed per-sample terms;
* the scatter of the directions about the power law is the same HC2 term with Bell-McCaffrey
  degrees of freedom; the sampling part's df is ``2 (J - 1) / (kurtosis - 1)`` of the per-group
  jackknife values of b.

Calibrated on an independent generator (``scripts/calib_dropout_exact.py``; docs/statistics.md,
"b from exact variances") from n = J = 8 training samples; fewer than :data:`MIN_GROUPS` groups
get no interval. Known limit: where a few rare samples carry the flat directions' variance, the
one-sided test's type-I error is 0.055-0.072 at n = 12-100 (0.044-0.047 at n = 1000).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .relation import (DEFAULT_FLOOR_REL, DEFAULT_RESIDUAL_FACTOR, ExclusionReason, RelationFit, _fit_jackknife,
                       _nan_fit, exclusion_reasons)
from ._relation_fit import EQUAL_LOG_EIGENVALUES

__all__ = ["MIN_GROUPS", "exact_jackknife", "exact_relation_fit", "ExactFit"]

#: Fewest groups of samples with an interval (J = min(tr_hc_samples, n) in the collector;
#: calibrated down to J = 8, docs/statistics.md, "b from exact variances").
MIN_GROUPS = 8


def exact_jackknife(groups):
    """``(y, infl)``: the jackknife bias-corrected log of each direction's group sum and the (J, k)
    per-group jackknife deviations (``infl.T @ infl`` is the jackknife covariance of ``y``); None
    with fewer than 3 groups or a leave-one-group-out sum that is not positive.

    The leave-one-group-out estimate is ``(S - G_g) J / (J - 1)`` (the groups are a random
    partition of the samples into near-equal parts).
    """
    G = np.asarray(groups, dtype=float)
    J = G.shape[0]
    if J < 3:
        return None
    S = G.sum(axis=0)
    loo = (S[None, :] - G) * (J / (J - 1.0))
    if not (np.all(S > 0) and np.all(loo > 0)):
        return None
    Yl = np.log(loo)
    ybar = Yl.mean(axis=0)
    y = J * np.log(S) - (J - 1.0) * ybar
    return y, np.sqrt((J - 1.0) / J) * (Yl - ybar)


@dataclass(frozen=True)
class ExactFit:
    """The fit of exact variances: ``fit`` (a :class:`RelationFit` whose ``n_samples`` counts the
    J groups of samples, the jackknife's units) and ``note`` (why an interval was refused; None
    otherwise)."""

    fit: RelationFit
    note: str | None = None


def _exact_iv(groups, eigenvalues, residuals):
    G = np.asarray(groups, dtype=float)
    if G.ndim != 2:
        raise InputError(f"`groups` must be a 2-D array (groups x directions); got {G.ndim} dimension(s).")
    lam = np.asarray(eigenvalues, dtype=float).ravel()
    if lam.shape[0] != G.shape[1]:
        raise InputError(f"`eigenvalues` must have one entry per column of `groups` ({G.shape[1]}); "
                         f"got {lam.shape[0]}.")
    if not np.all(np.isfinite(G)) or np.any(G < 0):
        raise InputError("`groups` must be finite and >= 0 (sums of squares); got a negative, NaN or Inf entry.")
    if not np.all(np.isfinite(lam)):
        raise InputError("`eigenvalues` must be finite; got NaN or Inf.")
    res = None if residuals is None else np.asarray(residuals, dtype=float).ravel()
    return G, lam, res


def exact_relation_fit(groups, eigenvalues, *, residuals=None, confidence: float = 0.95,
                       floor_rel: float = DEFAULT_FLOOR_REL,
                       residual_factor: float = DEFAULT_RESIDUAL_FACTOR) -> ExactFit:
    """Fit ``log v_j = a + b log lambda_j + e_j`` from exact variances given as J group sums.

    Parameters
    ----------
    groups : array_like, shape (J, k)
        Per-group contributions to each direction's exact-variance estimate (they sum to it).
    eigenvalues : array_like, shape (k,)
    residuals : array_like, shape (k,), optional
        ``||H v - lambda v||`` per direction.
    confidence, floor_rel, residual_factor
        As in :func:`varprinciple.stats.relation.relation_fit`.

    Returns
    -------
    ExactFit
        ``fit.n_samples`` is J; no interval (NaN, reason in ``note``) with fewer than
        :data:`MIN_GROUPS` groups.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> lam = np.geomspace(10.0, 0.1, 12)
    >>> G = rng.chisquare(4, size=(64, 12)) * lam            # 64 groups, variance ~ lambda^1
    >>> fit = exact_relation_fit(G, lam)
    >>> f = fit.fit; round(f.slope, 2), f.ci_low < 1 < f.ci_high, fit.note is None
    (1.0, True, True)
    """
    G, lam, res = _exact_iv(groups, eigenvalues, residuals)
    reasons = exclusion_reasons(lam, residuals=res, floor_rel=floor_rel, residual_factor=residual_factor)
    inc = np.array([r is None for r in reasons], dtype=bool)
    excluded = {r.value: int(np.count_nonzero(reasons == r.value)) for r in ExclusionReason}
    J, n, n_exc = G.shape[0], int(inc.sum()), int((~inc).sum())
    Gi = G[:, inc]
    x = np.log(lam[inc])
    if n < 2 or not np.ptp(x) > EQUAL_LOG_EIGENVALUES or not np.all(Gi.sum(axis=0) > 0):
        return ExactFit(_nan_fit(n, n_exc, J, confidence, excluded))
    jk = exact_jackknife(Gi) if J >= MIN_GROUPS else None
    if jk is None:
        y = np.log(Gi.sum(axis=0))
        dx = x - x.mean()
        b = float(dx @ y / (dx @ dx))
        fit = _nan_fit(n, n_exc, J, confidence, excluded, slope=b, intercept=float(y.mean() - b * x.mean()))
        why = (f"{J} groups of samples < {MIN_GROUPS}" if J < MIN_GROUPS
               else "a direction's exact variance rests on one group of samples")
        return ExactFit(fit, f"no interval from exact variances: {why} (docs/statistics.md, 'b from exact variances')")
    return ExactFit(_fit_jackknife(*jk, x, J, n_exc, confidence, excluded))
