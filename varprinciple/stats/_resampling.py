"""Shared, data-independent resampling ingredients (Haar rotations, permutations).

Weights and rotations do not depend on the data, so one set per shape serves every
probe of an analysis: each probe's test or interval is valid on its own, they are cheap
(one generation per shape instead of one per probe), and results do not depend on the
order in which runs are read. Everything derives from the analysis seed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Resampler", "haar_rotations"]

#: Largest cache entry (bytes) kept for Haar-rotation squares; larger ones are regenerated.
_MAX_CACHE_BYTES = 256 * 2**20


def haar_rotations(n: int, k: int, *, rng: np.random.Generator) -> np.ndarray:
    """``n`` independent Haar-distributed k x k orthogonal matrices, shape (n, k, k).

    QR of Gaussian matrices with the sign of R's diagonal moved into Q (Mezzadri 2007).

    Examples
    --------
    >>> import numpy as np
    >>> Q = haar_rotations(3, 4, rng=np.random.default_rng(0))
    >>> np.allclose(Q @ Q.transpose(0, 2, 1), np.eye(4))
    True
    """
    G = rng.standard_normal((n, k, k))
    Q, R = np.linalg.qr(G)
    d = np.sign(np.diagonal(R, axis1=1, axis2=2))
    d[d == 0] = 1.0
    return Q * d[:, None, :]


class Resampler:
    """Caches squared Haar rotations per k (isotropy test) and permutations per number of
    directions (curvature test)."""

    def __init__(self, resamples: int, seed: int):
        self.resamples = int(resamples)
        self.seed = int(seed)
        self._rot2: dict[int, np.ndarray] = {}
        self._perms: dict[int, np.ndarray] = {}

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, *key]))

    def permutations(self, n: int) -> np.ndarray:
        """(N, n) random permutations of n items (the curvature test's reference)."""
        p = self._perms.get(n)
        if p is None:
            rng = self._rng(4, n)
            p = np.argsort(rng.random((self.resamples, n)), axis=1)
            self._perms[n] = p
        return p

    def rotation_squares(self, k: int) -> np.ndarray:
        """(N, k, k) element-wise squares of N Haar rotations (the rotation test's reference)."""
        r = self._rot2.get(k)
        if r is None:
            rng = self._rng(3, k)
            Q = haar_rotations(self.resamples, k, rng=rng)
            r = Q * Q
            if r.nbytes <= _MAX_CACHE_BYTES:
                self._rot2[k] = r
        return r
