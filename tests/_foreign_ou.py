"""An independent writer of weight-trajectory logs with a known ψ (a test helper).

It writes ``run.json``, ``trajectory.parquet`` and ``trajectory_projections.parquet`` the way
a foreign training code would from docs/log-schema.md, using nothing but NumPy and pyarrow —
none of varprinciple's own simulation, trajectory or PCA code — so the ψ known answers of
tests/test_psi_ou.py do not share a bug with the code that computes ψ.

The process is SGD's linearisation in a quadratic L = c + ½ θᵀHθ, exact in discrete time:
θ_{t+1} = θ_t − η H θ_t + η ξ_t, ξ_t ~ N(0, C), C diagonal in H's eigenbasis with entries
c_i. Along eigen-direction i the stationary variance is

    σ_i² = η c_i / (λ_i (2 − η λ_i)),

and a snapshot every ``every`` steps is an exact AR(1) with coefficient (1 − η λ_i)^every
(simulated exactly at the snapshot lag, started at stationarity). The width along a unit
direction v is F(v) = 2 sqrt(2 (f − 1) c / vᵀHv) (the quadratic's closed form, f = e).
Noise kinds:

* ``"flat"``: c_i = λ_i (2 − η λ_i): σ_i² = η in every direction — ψ = 0 exactly;
* ``"isotropic"``: c_i = 1: σ_i² = η / (λ_i (2 − η λ_i)) — ψ ≈ −2 (exact value from
  :func:`true_psi`: the discrete-time factor 1/(2 − ηλ) lifts it towards 0 by ≈ η λ);
* ``"hessian2"``: c_i = λ_i²: σ_i² = η λ_i / (2 − η λ_i) — ψ ≈ +2 (again up to the factor).

The estimand is ψ = −(OLS slope of log σ_i² on log F_i) over the logged non-drift PCs.
With ``rotate = True`` the logged PCs are a random rotation of the eigenbasis (as a PCA of
an isotropic spread would return): each projection is then a mixture of AR(1)s and the
width and variance along it follow from vᵀHv and vᵀΣv.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LOSS_MIN = 0.5                        # c of the quadratic: widths are defined (L0 > 0)
FACTOR = math.e


def noise_diag(kind: str, lam: np.ndarray, eta: float) -> np.ndarray:
    """Noise variances c_i along the eigen-directions for ``kind``."""
    if kind == "flat":
        return lam * (2 - eta * lam)
    if kind == "isotropic":
        return np.ones_like(lam)
    if kind == "hessian2":
        return lam ** 2
    raise ValueError(kind)


def stationary_var(kind: str, lam: np.ndarray, eta: float) -> np.ndarray:
    return eta * noise_diag(kind, lam, eta) / (lam * (2 - eta * lam))


def width(hv: np.ndarray) -> np.ndarray:
    """F along a unit direction with curvature vᵀHv = ``hv``."""
    return 2 * np.sqrt(2 * (FACTOR - 1) * LOSS_MIN / hv)


def true_psi(kind: str, lam: np.ndarray, eta: float, U: np.ndarray | None = None) -> float:
    """The estimand: −OLS slope of log σ² on log F along the logged directions (columns of U)."""
    v = stationary_var(kind, lam, eta)
    if U is None:
        var, hv = v, lam
    else:
        var, hv = np.einsum("ik,i,ik->k", U, v, U), np.einsum("ik,i,ik->k", U, lam, U)
    x, y = np.log(width(hv)), np.log(var)
    return float(-np.polyfit(x, y, 1)[0])


def simulate(kind: str, *, lam, eta: float, every: int, n_snapshots: int, rng: np.random.Generator,
             rotate: bool = False, drift_sd: float = 1.0, drift_rate: float = 0.0):
    """Projections (T, 1 + k): a drifting PC1 (a random walk of step sd ``drift_sd`` plus
    ``drift_rate`` per snapshot) then the k stationary PCs.

    Returns (projections, widths, drift flags, U) with U the eigen-to-PC rotation (or None).
    """
    lam = np.asarray(lam, float)
    k = lam.size
    a = (1 - eta * lam) ** every
    var = stationary_var(kind, lam, eta)
    e = rng.standard_normal((n_snapshots, k)) * np.sqrt(var * (1 - a ** 2))
    X = np.empty((n_snapshots, k))
    X[0] = rng.standard_normal(k) * np.sqrt(var)
    for t in range(1, n_snapshots):
        X[t] = a * X[t - 1] + e[t]
    U = None
    hv = lam
    if rotate:
        q, r = np.linalg.qr(rng.standard_normal((k, k)))
        U = q * np.sign(np.diag(r))
        X = X @ U
        hv = np.einsum("ik,i,ik->k", U, lam, U)
    drift = np.cumsum(rng.standard_normal(n_snapshots)) * drift_sd + drift_rate * np.arange(n_snapshots)
    P = np.column_stack([drift, X])
    F = np.concatenate([[width(np.array([lam.min() / 100]))[0]], width(hv)])
    flags = np.zeros(k + 1, bool)
    flags[0] = True
    return P, F, flags, U


def write_run(path, run_id: str, P: np.ndarray, F: np.ndarray, drift: np.ndarray, *, every: int,
              method: str = "sgd", group: str | None = None) -> Path:
    """Write one run as a foreign writer would (docs/log-schema.md, schema v1)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    T, k = P.shape
    meta = {"schema_version": 1, "run_id": run_id, "method": method, "seed": 0}
    if group is not None:
        meta["group"] = group
    (path / "run.json").write_text(json.dumps(meta))
    var = P.var(0, ddof=1)
    short = P[: T // 2].var(0, ddof=1)
    pcs = pa.table({"component": pa.array(np.arange(k), pa.int64()),
                    "variance": pa.array(var, pa.float64()),
                    "variance_short": pa.array(short, pa.float64()),
                    "width": pa.array(F, pa.float64()),
                    "loss0": pa.array(np.full(k, LOSS_MIN), pa.float64()),
                    "drift": pa.array(drift, pa.bool_()),
                    "n_snapshots": pa.array(np.full(k, T), pa.int64())})
    steps = np.arange(T, dtype=np.int64) * every
    proj = pa.table({"step": pa.array(np.repeat(steps, k), pa.int64()),
                     "component": pa.array(np.tile(np.arange(k), T), pa.int64()),
                     "value": pa.array(P.ravel(), pa.float64())})
    pq.write_table(pcs, path / "trajectory.parquet")
    pq.write_table(proj, path / "trajectory_projections.parquet")
    return path
