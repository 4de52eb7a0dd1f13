"""The numpy side of the trajectory analysis: split-half snapshot PCA, the measuring half's
variances, loss profiles and landscape widths (usable on any trajectory, no torch).

Definitions are in docs/flatness.md and :mod:`varprinciple.collect.trajectory` (which collects
the snapshots from a torch model and re-exports everything here: import from there).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import schema
from ..errors import ConfigError

__all__ = ["TrajectoryResult", "SnapshotPCA", "landscape_width", "analyse_trajectory", "THRESHOLDS",
           "TRAJECTORY_FILE", "PROJECTIONS_FILE", "PROFILES_FILE"]

TRAJECTORY_FILE = schema.TRAJECTORY.file
PROJECTIONS_FILE = schema.TRAJECTORY_PROJECTIONS.file
PROFILES_FILE = schema.LOSS_PROFILES.file

#: Threshold factors f of the widths: column ``width`` (f = e, Feng & Tu) and ``width_2``.
THRESHOLDS = {"width": math.e, "width_2": 2.0}


def landscape_width(loss_fn: Callable[[np.ndarray], float], center: np.ndarray, direction: np.ndarray, *,
                    factor: float = math.e, loss0: float | None = None, t0: float = 1e-3,
                    t_max: float = 1e3, rtol: float = 1e-4) -> tuple[float, float]:
    """Distances to the nearest points on either side where the loss reaches ``factor · L₀``.

    Doubling from ``t0`` until the loss is ``>= factor · L₀`` (or ``t > t_max``: NaN,
    censored), then bisection to relative precision ``rtol``. The width is
    ``t_minus + t_plus``.

    Returns
    -------
    (t_minus, t_plus) : tuple of float
        NaN on a side where the threshold was not reached, or when L₀ <= 0.

    Examples
    --------
    A quadratic L = c + ½ λ t² has half-width sqrt(2 (f − 1) c / λ) on each side:

    >>> import math, numpy as np
    >>> c, lam = 0.5, 4.0
    >>> loss = lambda th: c + 0.5 * lam * float(th @ th)
    >>> tm, tp = landscape_width(loss, np.zeros(3), np.array([1.0, 0, 0]), factor=2.0)
    >>> round(tm + tp, 4), round(2 * math.sqrt(2 * c / lam), 4)
    (1.0, 1.0)
    """
    center = np.asarray(center, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64)
    L0 = float(loss_fn(center)) if loss0 is None else float(loss0)
    if not (L0 > 0 and math.isfinite(L0)):
        return math.nan, math.nan
    level = factor * L0
    out = []
    for sign in (-1.0, 1.0):
        def f(t: float) -> float:
            return float(loss_fn(center + sign * t * direction))
        lo, hi = 0.0, float(t0)
        while f(hi) < level:
            lo, hi = hi, 2 * hi
            if hi > t_max:
                hi = math.nan
                break
        if math.isnan(hi):
            out.append(math.nan)
            continue
        while hi - lo > rtol * hi:
            mid = 0.5 * (lo + hi)
            if f(mid) >= level:
                hi = mid
            else:
                lo = mid
        out.append(0.5 * (lo + hi))
    return out[0], out[1]


class SnapshotPCA:
    """Split-half PCA of a stream of snapshots: PCs from the first half, projections of the second.

    ``add(x)`` takes snapshots in time order (the first ``n_first`` go to the PCA). When
    ``streaming`` is false, the first half is kept and decomposed exactly (thin SVD);
    otherwise it feeds an :class:`~sklearn.decomposition.IncrementalPCA` in batches of
    ``batch`` snapshots. The second half is projected on arrival; its mean is accumulated.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pca = SnapshotPCA(n_first=50, n_components=2)
    >>> for x in rng.normal(size=(100, 5)) * [5.0, 2.0, 1.0, 0.1, 0.1]:
    ...     pca.add(x)
    >>> pca.components.shape, np.abs(pca.components[0]).argmax(), pca.projections.shape
    ((2, 5), np.int64(0), (50, 2))
    """

    def __init__(self, *, n_first: int, n_components: int, streaming: bool = False, batch: int = 64):
        if n_components >= n_first:
            raise ConfigError(f"`n_components` must be < the snapshots of the first half ({n_first}); "
                              f"got {n_components}")
        self.n_first, self.k, self.streaming, self.batch = n_first, n_components, streaming, batch
        self._first: list[np.ndarray] = []
        self._ipca = None
        self.components: np.ndarray | None = None
        self.variance_fit: np.ndarray | None = None
        self._mean_fit: np.ndarray | None = None
        self._proj: list[np.ndarray] = []
        self._sum: np.ndarray | None = None
        self.n_seen = 0

    def _partial_fit(self, X: np.ndarray) -> None:
        if self._ipca is None:
            from sklearn.decomposition import IncrementalPCA
            self._ipca = IncrementalPCA(n_components=self.k)
        self._ipca.partial_fit(X)

    def _finish_fit(self) -> None:
        if self.streaming:
            self._partial_fit(np.asarray(self._first))   # >= batch rows left (or all n_first > k)
            self._first = []
            V, var, mean = self._ipca.components_, self._ipca.explained_variance_, self._ipca.mean_
        else:
            X = np.asarray(self._first)
            mean = X.mean(0)
            _, s, Vt = np.linalg.svd(X - mean, full_matrices=False)
            V, var = Vt[:self.k], s[:self.k] ** 2 / (len(X) - 1)
            self._first = []
        # a deterministic sign: the largest-magnitude entry of each PC is positive
        idx = np.abs(V).argmax(1)
        V = V * np.sign(V[np.arange(len(V)), idx])[:, None]
        self.components, self.variance_fit, self._mean_fit = np.asarray(V), np.asarray(var), mean

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        if self.n_seen < self.n_first:
            self._first.append(x)
            self.n_seen += 1
            b = max(self.batch, self.k)
            if self.streaming and len(self._first) >= 2 * b and self.n_seen < self.n_first:
                self._partial_fit(np.asarray(self._first[:b]))
                del self._first[:b]
            if self.n_seen == self.n_first:
                self._finish_fit()
            return
        self._proj.append(self.components @ (x - self._mean_fit))
        self._sum = x.copy() if self._sum is None else self._sum + x
        self.n_seen += 1

    @property
    def projections(self) -> np.ndarray:
        """Second-half projections on the PCs, ``(T2, k)`` (centred on the first half's mean)."""
        return np.asarray(self._proj)

    @property
    def mean_second(self) -> np.ndarray:
        """Mean snapshot of the second half: the centre of the widths and profiles."""
        return self._sum / len(self._proj)


@dataclass(frozen=True)
class TrajectoryResult:
    """The per-PC table, the second-half projections and the loss profiles of one window;
    ``window`` describes how it started and whether its loss was level (run.json's
    ``trajectory`` record: :func:`collect_trajectory`)."""

    pcs: pd.DataFrame
    projections: pd.DataFrame
    profiles: pd.DataFrame
    window: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return self.pcs.copy()

    def tables(self) -> dict[str, pd.DataFrame]:
        """The optional log tables by file name (schema.TRAJECTORY, ...)."""
        return {TRAJECTORY_FILE: self.pcs, PROJECTIONS_FILE: self.projections, PROFILES_FILE: self.profiles}


def analyse_trajectory(pca: SnapshotPCA, loss_fn: Callable[[np.ndarray], float], *,
                       steps: Sequence[int] | None = None, profile_points: int = 21,
                       params: str = "all") -> TrajectoryResult:
    """σ_i², ``variance_short``, widths (f = e, 2) and loss profiles along each PC of ``pca``.

    Parameters
    ----------
    pca : SnapshotPCA
        Fed with every snapshot of the window.
    loss_fn : callable
        Full-batch training loss (dropout off) at a parameter-subset vector.
    steps : sequence of int, optional
        Training steps of the second-half snapshots (default 0, 1, ...).
    profile_points : int
        Grid points of each profile, on [−1.5 h, 1.5 h], h the larger f = e half-width
        (3 σ_i when censored).
    params : str
        Label of the parameter subset (the tables' ``params`` column).

    Examples
    --------
    Isotropic Langevin dynamics on a quadratic: σ² ∝ 1/λ and F ∝ λ^(-1/2).

    >>> rng = np.random.default_rng(1)
    >>> lam = np.array([8.0, 4.0, 2.0, 1.0]); eta, T = 0.01, 0.01
    >>> pca = SnapshotPCA(n_first=2000, n_components=3)
    >>> th = np.zeros(4)
    >>> for _ in range(4000):
    ...     th = th - eta * lam * th + np.sqrt(2 * eta * T) * rng.normal(size=4)
    ...     pca.add(th)
    >>> res = analyse_trajectory(pca, lambda v: 1.0 + 0.5 * float(v @ (lam * v)))
    >>> bool(res.pcs["drift"].iloc[0]), len(res.profiles) == 3 * 21
    (True, True)
    """
    P = pca.projections
    T2, k = P.shape
    if T2 < 4:
        raise ConfigError(f"the second half has {T2} snapshots; need >= 4")
    center = pca.mean_second
    var = P.var(0, ddof=1)
    short = P[: T2 // 2]
    var_short = short.var(0, ddof=1)
    L0 = float(loss_fn(center))
    rows, prof = [], []
    scale = max(float(np.linalg.norm(center)), 1e-12)
    for i in range(k):
        v = pca.components[i]
        sd = float(np.sqrt(var[i])) if var[i] > 0 else 1e-8 * scale
        t0, t_max = 0.1 * sd, max(10 * scale, 1e4 * sd)
        widths, halves = {}, {}
        for col, f in THRESHOLDS.items():
            tm, tp = landscape_width(loss_fn, center, v, factor=f, loss0=L0, t0=t0, t_max=t_max)
            widths[col] = tm + tp if math.isfinite(tm) and math.isfinite(tp) else None
            halves[col] = (tm, tp)
        tm, tp = halves["width"]
        h = np.nanmax([tm, tp]) if np.isfinite([tm, tp]).any() else 3 * sd
        for t in np.linspace(-1.5 * h, 1.5 * h, profile_points):
            prof.append({"kind": "pc", "direction": i, "t": float(t), "loss": float(loss_fn(center + t * v)),
                         "loss0": L0})
        rows.append({"component": i, "variance": float(var[i]), "variance_short": float(var_short[i]),
                     "variance_ratio": float(var[i] / var_short[i]) if var_short[i] > 0 else None,
                     "variance_fit": float(pca.variance_fit[i]), "width": widths["width"],
                     "width_2": widths["width_2"], "t_minus": None if not math.isfinite(tm) else tm,
                     "t_plus": None if not math.isfinite(tp) else tp, "loss0": L0,
                     "drift": i == 0, "n_snapshots": int(T2), "params": params})
    pcs = pd.DataFrame(rows)
    for c in ("width", "width_2", "t_minus", "t_plus", "variance_ratio"):
        pcs[c] = pcs[c].astype(np.float64)
    pcs["component"] = pcs["component"].astype(np.int64)
    pcs["n_snapshots"] = pcs["n_snapshots"].astype(np.int64)
    st = np.arange(T2) if steps is None else np.asarray(steps, dtype=np.int64)
    projections = pd.DataFrame({"step": np.repeat(st, k).astype(np.int64),
                                "component": np.tile(np.arange(k), T2).astype(np.int64),
                                "value": P.ravel()})
    profiles = pd.DataFrame(prof)
    profiles["direction"] = profiles["direction"].astype(np.int64)
    return TrajectoryResult(pcs, projections, profiles)
