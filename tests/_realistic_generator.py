"""An independent generator of realistic noise logs (numpy + pyarrow; NOT ``varprinciple.simulate``).

It exists to test the statistics on structures that real training produces and that the
package's own simulator does not (issue 7):

* **a realistic spectrum**: a few separated outlier eigenvalues on top of a bulk of small
  eigenvalues that decays towards a noise floor (``realistic_spectrum``), optionally with
  two tiny eigenvalues at ``lambda / lambda_max ~ 5e-6`` whose residual is below them;
* **sampling errors correlated along the eigenvalue order**: a draw-level factor shared
  within contiguous blocks of directions (top half / bottom half, ...), which does not
  cancel in the slope contrast (a factor shared by *all* directions does);
* **heavy tails**: Student t (nu = 5) coordinates and factors, scaled to unit variance;
* **outlier eigenvalues with their own, larger scatter** around the power law
  (high-leverage, heteroscedastic);
* **few directions, small K** (everything is a parameter);
* **few random directions**: the noise lives in ``D`` dimensions with covariance
  ``C = S^(1/2) R S^(1/2)`` in the Hessian eigenbasis (variances ``S`` follow
  ``lambda^b`` on the probed directions and a bulk elsewhere); a random direction is a
  uniformly random unit vector of R^D (independent, as ``collect`` draws them), so the
  variance along it is ``u^T C u`` with mean ``tr(C) / D``.

``draws`` returns arrays for fast vectorised calibration; ``write_logset`` writes the same
structures as schema-v1 log sets (``run.json``, ``eigen.parquet``, ``noise.parquet``) with
pyarrow and json only. Every function takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["Design", "realistic_spectrum", "draws", "write_run", "TailDesign", "tail_spectrum", "tail_draws",
           "spiky_isotropic_draws"]


@dataclass(frozen=True)
class Design:
    """One probe's design. Variances: ``log sigma_i^2 = b log lambda_i + scatter_i * N(0, 1)``.

    ``tails``: "gauss" or "t5" (coordinates and block factors). ``block_corr``: weight
    rho of the block factor (correlation within a block), ``n_blocks`` contiguous blocks
    along the eigenvalue order. ``n_outliers`` top eigenvalues are outliers (separated by
    ``outlier_gap`` decades above the bulk) with scatter ``outlier_scatter`` (the bulk has
    ``scatter``). ``n_tiny`` extra directions at ``tiny_rel * lambda_max`` (variance OFF the
    power law: as large as the bulk's median, the situation that wrecks b if they enter).
    ``m_random`` random directions in ``D`` dimensions; the D - k unprobed coordinates
    have the variances of the bulk's lower end times ``bulk_level``.
    """

    K: int = 100
    k: int = 20
    b: float = 1.0
    tails: str = "gauss"
    block_corr: float = 0.0
    n_blocks: int = 2
    scatter: float = 0.0
    n_outliers: int = 0
    outlier_scatter: float = 0.0
    outlier_gap: float = 1.0
    decades: float = 2.0
    n_tiny: int = 0
    tiny_rel: float = 5e-6
    m_random: int = 0
    D: int = 400
    bulk_level: float = 1.0

    def but(self, **kw) -> "Design":
        return replace(self, **kw)


def realistic_spectrum(d: Design) -> np.ndarray:
    """Descending eigenvalues (lambda_max = 1): ``n_outliers`` outliers separated by
    ``outlier_gap`` decades (0.3 decades apart), a log-spaced bulk over ``decades`` decades,
    then ``n_tiny`` tiny ones at ``tiny_rel`` (fixed, no randomness)."""
    n_bulk = d.k - d.n_outliers - d.n_tiny
    bulk = np.geomspace(1.0, 10.0 ** -d.decades, n_bulk)
    out = 10.0 ** (d.outlier_gap + 0.3 * np.arange(d.n_outliers))[::-1]
    lam = np.concatenate([out, bulk])
    lam = lam / lam.max()
    tiny = d.tiny_rel * np.geomspace(1.0, 0.8, d.n_tiny) if d.n_tiny else np.empty(0)
    return np.concatenate([lam, tiny])


def _std_noise(rng: np.random.Generator, tails: str, shape) -> np.ndarray:
    if tails == "gauss":
        return rng.standard_normal(shape)
    if tails == "t5":
        return rng.standard_t(5, shape) / np.sqrt(5.0 / 3.0)
    raise ValueError(f"unknown tails {tails!r}")


def _log_sd(d: Design, lam: np.ndarray, n_rep: int, rng: np.random.Generator) -> np.ndarray:
    """(n_rep, k) log standard deviations on the probed directions."""
    n_law = d.k - d.n_tiny
    scat = np.full(n_law, d.scatter)
    scat[: d.n_outliers] = d.outlier_scatter
    logv = d.b * np.log(lam[:n_law])[None, :] + scat * rng.standard_normal((n_rep, n_law))
    if d.n_tiny:  # off the law: variance of the bulk's median direction
        med = np.median(logv[:, d.n_outliers:], axis=1, keepdims=True)
        logv = np.concatenate([logv, np.repeat(med, d.n_tiny, axis=1)], axis=1)
    return logv / 2


def _correlated(d: Design, n_rep: int, ncol: int, rng: np.random.Generator) -> np.ndarray:
    """(n_rep, K, ncol) unit-variance noise; the first d.k columns carry the block factors."""
    z = _std_noise(rng, d.tails, (n_rep, d.K, ncol))
    if d.block_corr > 0:
        blocks = np.array_split(np.arange(d.k), d.n_blocks)
        f = _std_noise(rng, d.tails, (n_rep, d.K, d.n_blocks))
        for j, cols in enumerate(blocks):
            z[:, :, cols] = np.sqrt(1 - d.block_corr) * z[:, :, cols] + np.sqrt(d.block_corr) * f[:, :, j:j + 1]
    return z


def draws(d: Design, n_rep: int, rng: np.random.Generator):
    """Replicate probes of design ``d``.

    Returns
    -------
    lam : (k,) eigenvalues (the same for every replicate, descending, tiny ones last)
    X : (n_rep, K, k) projections on the Hessian directions
    R : (n_rep, K, m_random) projections on random directions, or None
    ratio : (n_rep,) the true ratio mean_i C_ii / (tr C / D) of each replicate, or None
    """
    lam = realistic_spectrum(d)
    logsd = _log_sd(d, lam, n_rep, rng)  # (n_rep, k)
    if d.m_random == 0:
        X = _correlated(d, n_rep, d.k, rng) * np.exp(logsd)[:, None, :]
        return lam, X, None, None
    # the unprobed D - k coordinates: variances of the bulk's lower end (a decaying tail)
    n_rest = d.D - d.k
    base = np.min(logsd[:, : d.k - d.n_tiny], axis=1, keepdims=True)
    rest = base + np.log(d.bulk_level) / 2 + np.linspace(0.0, -1.0, n_rest)[None, :]
    sd = np.exp(np.concatenate([logsd, rest], axis=1))  # (n_rep, D)
    X = np.empty((n_rep, d.K, d.k))
    R = np.empty((n_rep, d.K, d.m_random))
    ratio = np.empty(n_rep)
    for r in range(n_rep):  # loop: a K x D matrix per replicate
        y = _correlated(d, 1, d.D, rng)[0] * sd[r]
        U = rng.standard_normal((d.D, d.m_random))
        U /= np.linalg.norm(U, axis=0)
        X[r] = y[:, : d.k]
        R[r] = y @ U
        s2 = sd[r] ** 2
        # tr C = sum of variances (block factors only add off-diagonal covariance)
        ratio[r] = s2[: d.k].mean() / (s2.sum() / d.D)
    return lam, X, R, ratio


def write_run(run_dir: Path, run_id: str, method: str, lam: np.ndarray, X: np.ndarray,
              R: np.ndarray | None = None, *, residual: np.ndarray | None = None, step: int = 100,
              source: str = "sgd", seed: int = 0, extra: dict | None = None) -> None:
    """Write one schema-v1 run (pyarrow + json only) from arrays of :func:`draws`."""
    K, k = X.shape
    m = 0 if R is None else R.shape[1]
    vals = X if R is None else np.hstack([X, R])
    d = k + m
    noise = pa.table({
        "step": pa.array(np.full(K * d, step, dtype=np.int64)),
        "source": pa.array([source] * (K * d)),
        "basis": pa.array((["hessian"] * k + ["random"] * m) * K),
        "direction": pa.array(np.tile(np.concatenate([np.arange(k), np.arange(m)]).astype(np.int64), K)),
        "sample": pa.array(np.repeat(np.arange(K, dtype=np.int64), d)),
        "value": pa.array(vals.ravel().astype(np.float64)),
    })
    cols = {"step": pa.array(np.full(k, step, dtype=np.int64)), "rank": pa.array(np.arange(k, dtype=np.int64)),
            "eigenvalue": pa.array(np.asarray(lam, dtype=np.float64))}
    if residual is not None:
        cols["residual"] = pa.array(np.asarray(residual, dtype=np.float64))
    run_dir.mkdir(parents=True)
    pq.write_table(noise, run_dir / "noise.parquet")
    pq.write_table(pa.table(cols), run_dir / "eigen.parquet")
    meta = {"schema_version": 1, "run_id": run_id, "method": method, "seed": int(seed),
            "dataset": "realistic-generator", "model": "independent", **(extra or {})}
    (run_dir / "run.json").write_text(json.dumps(meta))


# ------------------------------------------------------------------ issue 17 structures


@dataclass(frozen=True)
class TailDesign:
    """Rare large draws whose share of the variance grows along the spectrum (issue 17).

    ``n_law`` power-law eigenvalues over ``decades`` decades (lambda_max = 1), plus
    ``n_tiny`` near-zero (1e-7) and ``n_negative`` negative eigenvalues (excluded from the
    fit as documented). Each draw is an AR(1) Gaussian vector along the eigenvalue order
    (correlation ``ar`` between neighbours) with variance ``(1 - f_i) lambda_i^b``; with
    probability ``p_event`` a draw also carries a rare large-gradient sample, an independent
    AR(1) vector with variance ``f_i lambda_i^b / p_event``, so the exact variance is
    ``lambda_i^b`` and the event's share ``f_i`` rises linearly from ``share_top`` on the top
    direction to ``share_bottom`` on the bottom one (kurtosis 3 -> ~50 at 0.9).
    ``p_event = 0`` gives Gaussian draws with the same variances (no share to events).
    """

    K: int = 20
    b: float = 0.0
    n_law: int = 55
    decades: float = 3.5
    n_tiny: int = 2
    n_negative: int = 3
    ar: float = 0.5
    p_event: float = 0.05
    share_top: float = 0.0
    share_bottom: float = 0.9

    def but(self, **kw) -> "TailDesign":
        return replace(self, **kw)


def _ar1(rng: np.random.Generator, shape, rho: float) -> np.ndarray:
    """Unit-variance AR(1) along the last axis."""
    z = rng.standard_normal(shape)
    out = np.empty(shape)
    out[..., 0] = z[..., 0]
    c = np.sqrt(1 - rho * rho)
    for j in range(1, shape[-1]):
        out[..., j] = rho * out[..., j - 1] + c * z[..., j]
    return out


def tail_spectrum(d: TailDesign) -> np.ndarray:
    """Eigenvalues: the power law (descending), then the near-zero, then the negative ones."""
    law = np.geomspace(1.0, 10.0 ** -d.decades, d.n_law)
    tiny = np.full(d.n_tiny, 1e-7)
    neg = -np.geomspace(1e-3, 1e-2, d.n_negative) if d.n_negative else np.empty(0)
    return np.concatenate([law, tiny, neg])


def tail_draws(d: TailDesign, n_rep: int, rng: np.random.Generator):
    """``(lam, X, n_events)``: eigenvalues (k,), draws (n_rep, K, k) and the number of
    rare events in each replicate (n_rep,). The non-law directions get the bottom
    direction's variance (Gaussian), off the law."""
    lam = tail_spectrum(d)
    k = lam.size
    var = np.full(k, (10.0 ** -d.decades) ** d.b)
    var[: d.n_law] = lam[: d.n_law] ** d.b
    f = np.zeros(k)
    if d.p_event > 0:
        f[: d.n_law] = np.linspace(d.share_top, d.share_bottom, d.n_law)
    X = _ar1(rng, (n_rep, d.K, k), d.ar) * np.sqrt((1 - f) * var)
    events = rng.random((n_rep, d.K)) < d.p_event
    if d.p_event > 0 and events.any():
        E = _ar1(rng, (int(events.sum()), k), d.ar) * np.sqrt(f * var / d.p_event)
        X[events] += E
    return lam, X, events.sum(axis=1)


def spiky_isotropic_draws(n_rep: int, K: int, rng: np.random.Generator, *, k: int = 20, n_spiky: int = 3,
                          where: str = "top", p_spike: float = 0.02, kurtosis: float = 40.0):
    """Exactly isotropic covariance (sigma^2 I, sigma = 1) whose ``n_spiky`` directions carry
    rare spikes (a scale mixture with the given kurtosis): ``where`` is "top", "bottom" or
    "random" (ranks in a descending power-law spectrum over 2 decades). Returns
    ``(lam, X)``, X of shape (n_rep, K, k)."""
    lam = np.geomspace(1.0, 1e-2, k)
    X = rng.standard_normal((n_rep, K, k))
    # scale mixture: with prob p a draw has scale c, else s, E[scale^2] = 1 and
    # kurtosis 3 E[scale^4] = kurtosis
    m4 = kurtosis / 3.0
    # p c^4 + (1 - p) s^4 = m4, p c^2 + (1 - p) s^2 = 1: solve for c with s^2 = (1 - p c^2)/(1 - p)
    from scipy.optimize import brentq
    g = lambda c2: p_spike * c2 * c2 + (1 - p_spike) * ((1 - p_spike * c2) / (1 - p_spike)) ** 2 - m4  # noqa: E731
    c2 = brentq(g, 1.0, 1.0 / p_spike - 1e-12)
    s2 = (1 - p_spike * c2) / (1 - p_spike)
    for r in range(n_rep):
        cols = {"top": np.arange(n_spiky), "bottom": np.arange(k - n_spiky, k),
                "random": rng.choice(k, n_spiky, replace=False)}[where]
        spikes = rng.random((K, n_spiky)) < p_spike
        X[r][:, cols] *= np.sqrt(np.where(spikes, c2, s2))
    return lam, X
