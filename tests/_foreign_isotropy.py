"""An independent generator of noise draws for calibrating ``isotropy_p`` and its tail rule.

Written for the purpose (no varprinciple.simulate, no _realistic_generator): K draws of the
noise projected on k Hessian directions with eigenvalues over two decades, covariance
``diag(lambda^b)`` (b = 0: isotropic, the null of the isotropy test), and tails that are
either alike across directions or differ between them:

* ``gauss`` — Gaussian entries;
* ``t5``, ``t3`` — independent Student-t entries (unit variance), alike across directions;
* ``mvt3`` — a multivariate t (one chi-square scale per draw shared by every direction: a
  minibatch with a large-gradient sample is large along every direction);
* ``sgd`` — minibatch means of B = 32 per-sample vectors whose norms are log-normal (sd 1.2)
  and whose directions are uniform: the kind of real minibatch noise whose draws carry 7–11 %
  of a direction's variance at K = 200 (tails alike across directions);
* ``spike1`` — Gaussian, except one direction (a random rank) that carries rare large draws
  (1 % of draws, 7x scale), its variance renormalised to the others';
* ``t3half_bottom`` — tails that differ but are not rare: Student-t3 in the flattest half of the
  directions, Gaussian in the sharpest half (unit variance in each);
* ``spiky3_bottom`` / ``spiky3_top`` — the design that motivated the refusal (issue 17,
  docs/statistics.md §5.3): 3 of the k directions, at the lowest (highest) eigenvalue ranks,
  carry rare spikes (2 % of draws, kurtosis ≈ 40), unit variance in every direction.
"""

from __future__ import annotations

import numpy as np

#: log-sd of the per-sample gradient norms of ``sgd`` (one draw carries 7-11 % of a direction's
#: variance at K = 200, k = 20, as in the default study's real SGD noise)
SGD_SD = 0.8
DESIGNS = ("gauss", "t5", "t3", "mvt3", "sgd", "spike1", "t3half_bottom", "spiky3_bottom", "spiky3_top")


def eigenvalues(k: int) -> np.ndarray:
    """k eigenvalues over two decades, descending."""
    return np.geomspace(10.0, 0.1, k)


def _spikes(rng, K: int, m: int, rate: float, scale: float) -> np.ndarray:
    """(K, m) unit-variance scale mixture: N(0, 1) with prob 1 - rate, N(0, scale^2) with prob rate."""
    z = rng.standard_normal((K, m))
    big = rng.random((K, m)) < rate
    z = np.where(big, z * scale, z)
    return z / np.sqrt(1.0 - rate + rate * scale * scale)


def draws(design: str, K: int, k: int, rng: np.random.Generator, *, b: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues (k,), draws (K, k)) of one probe; covariance diag(lambda^b) up to a constant."""
    lam = eigenvalues(k)
    if design == "gauss":
        z = rng.standard_normal((K, k))
    elif design in ("t5", "t3"):
        nu = float(design[1:])
        z = rng.standard_t(nu, (K, k)) / np.sqrt(nu / (nu - 2.0))
    elif design == "mvt3":
        w = np.sqrt(rng.chisquare(3.0, (K, 1)) / 3.0)
        z = rng.standard_normal((K, k)) / w / np.sqrt(3.0)
    elif design == "sgd":
        B = 32
        d = rng.standard_normal((K, B, k))
        d /= np.linalg.norm(d, axis=2, keepdims=True)
        r = np.exp(SGD_SD * rng.standard_normal((K, B, 1)))
        z = (r * d).mean(axis=1)
        z /= np.sqrt(np.exp(2 * SGD_SD ** 2) / B / k)
    elif design == "spike1":
        z = rng.standard_normal((K, k))
        j = int(rng.integers(k))
        z[:, j] = _spikes(rng, K, 1, 0.01, 7.0)[:, 0]
    elif design == "t3half_bottom":
        z = rng.standard_normal((K, k))
        z[:, k // 2:] = rng.standard_t(3.0, (K, k - k // 2)) / np.sqrt(3.0)
    elif design in ("spiky3_bottom", "spiky3_top"):
        z = rng.standard_normal((K, k))
        cols = np.arange(k - 3, k) if design.endswith("bottom") else np.arange(3)
        z[:, cols] = _spikes(rng, K, 3, 0.02, 8.0)
    else:
        raise ValueError(f"unknown design {design!r}; one of {DESIGNS}")
    return lam, z * lam ** (b / 2.0)
