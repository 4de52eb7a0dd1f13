"""An independent generator of per-parameter diagonals (h_ii, c_ii) with a known gamma (a test helper).

Written from the definition alone (C_ii ∝ H_ii^γ per layer; docs/statistics.md "gamma"), with
NumPy only -- none of varprinciple's fitting or grouping code -- so that the calibration of
``varprinciple.stats.gamma`` does not share a bug with the code it checks.

One *network* r of a configuration has its own exponent γ_r = μ + τ T_r (T_r a unit-variance
Student t with 5 df: networks scatter heavy-tailed around the group mean μ, the estimand).
One *layer* is an ``rows x cols`` weight matrix; parameters share row and column factors, so
they are correlated, and span several decades:

    log h_ij = a_i + b_j + e_ij        a ~ N(0, 1.5²), b ~ N(0, 1), e ~ N(0, 0.5²)
    log c_ij = α_r + γ_r log h_ij + ρ_i + s t₃           ρ_i ~ N(0, 0.3²) (row-correlated scatter)

with heavy-tailed scatter ``s t₃`` (s = 0.4), a share ``outlier`` of parameters whose c is
multiplied by e^U, U ~ U(2, 5) (outliers, independent of h), a share ``dead`` with h = c = 0 (dead
inputs), and negative curvature: each parameter in the lowest ``neg_quantile`` of h flips the
sign of h with probability 1/2 (a selection on h only, which leaves the conditional law of
log c given log h, and so γ_r, unchanged). The per-network truth is γ_r; the group truth μ.
"""

from __future__ import annotations

import numpy as np

__all__ = ["network_layer", "networks"]


def network_layer(gamma: float, *, rows: int = 20, cols: int = 25, outlier: float = 0.03, dead: float = 0.03,
                  neg_quantile: float = 0.15, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(h, c)`` of one layer of one network whose true exponent is ``gamma``."""
    a = rng.normal(0, 1.5, rows)[:, None]
    b = rng.normal(0, 1.0, cols)[None, :]
    logh = a + b + rng.normal(0, 0.5, (rows, cols))
    rho = rng.normal(0, 0.3, rows)[:, None]
    alpha = rng.normal(-5, 1)
    logc = alpha + gamma * logh + rho + 0.4 * rng.standard_t(3, (rows, cols))
    h, c = np.exp(logh).ravel(), np.exp(logc).ravel()
    out = rng.random(h.size) < outlier
    c[out] *= np.exp(rng.uniform(2, 5, out.sum()))
    low = h < np.quantile(h, neg_quantile)
    h[low & (rng.random(h.size) < 0.5)] *= -1
    dd = rng.random(h.size) < dead
    h[dd], c[dd] = 0.0, 0.0
    return h, c


def networks(n: int, mu: float, *, tau: float = 0.15, rng: np.random.Generator, **layer) -> list:
    """``n`` independent networks of one configuration: ``[(gamma_r, h, c), ...]``."""
    t = rng.standard_t(5, n) / np.sqrt(5 / 3)  # unit variance
    return [(g, *network_layer(g, rng=rng, **layer)) for g in mu + tau * t]
