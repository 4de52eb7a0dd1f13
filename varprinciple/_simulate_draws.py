"""The generator of :mod:`varprinciple.simulate`: spectra, correlated non-Gaussian draws and the
noise blocks/table of one simulated run (the model is stated in that module's docstring).

Re-exported there (``NoiseFamily``, ``ISOTROPIC``); import from :mod:`varprinciple.simulate`.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pandas as pd
import pyarrow as pa

from . import schema
from ._version import __version__
from .io import NoiseBlock

__all__ = ["NoiseFamily", "ISOTROPIC", "generate", "noise_table"]

#: The source name of the isotropic control (b = 0 by construction).
ISOTROPIC = "isotropic"


class NoiseFamily(StrEnum):
    """Distribution of the simulated noise draws (before the covariance is applied)."""

    GAUSSIAN = "gaussian"
    STUDENT_T = "student-t"
    MASKED = "masked"


def _spectrum(s: dict, rng: np.random.Generator) -> np.ndarray:
    """Eigenvalues of one probe, sorted descending; the last ``n_nonpositive`` are <= 0."""
    n, k = s["n_directions"], s["n_nonpositive"]
    lmax = s["lambda_max"] * np.exp(0.2 * rng.standard_normal())
    lam = lmax * np.arange(1, n - k + 1, dtype=float) ** (-s["eigen_decay"])
    neg = -lmax * 10.0 ** rng.uniform(-4, -2, size=k)
    if k:
        neg[0] = 0.0
    return np.concatenate([lam, np.sort(neg)[::-1]]), lmax


def _correlation_matrix(d: int, c: float, rng: np.random.Generator) -> np.ndarray:
    if c == 0.0 or d == 1:
        return np.eye(d)
    g = rng.standard_normal((d, 2))
    cc = g @ g.T
    dd = np.sqrt(np.diag(cc))
    cc = cc / np.outer(dd, dd)
    return (1.0 - c) * np.eye(d) + c * cc


def _draws(family: str, K: int, chol: np.ndarray, s: dict, rng: np.random.Generator) -> np.ndarray:
    """K draws (K x d) with covariance ``chol @ chol.T`` from ``family``."""
    d = chol.shape[0]
    if family == NoiseFamily.GAUSSIAN:
        z = rng.standard_normal((K, d))
    elif family == NoiseFamily.STUDENT_T:
        nu = s["df"]
        z = rng.standard_t(nu, size=(K, d)) * np.sqrt((nu - 2.0) / nu)
    else:  # masked, dropout-like
        U = s["n_units"]
        keep = 1.0 - s["drop_prob"]
        # orthonormal columns, each direction dominated by one unit (few effective units
        # make the draws far from Gaussian, as dropout noise of narrow layers is)
        q, _ = np.linalg.qr(np.eye(U, d) + 0.3 * rng.standard_normal((U, d)) / np.sqrt(U))
        mask = rng.random((K, U)) < keep
        g = rng.normal(1.0, 1.0, size=(K, U))
        var_unit = keep * 2.0 - keep**2 * 1.0  # Var(m g) with E g = 1, E g^2 = 2
        z = (mask * g) @ q / np.sqrt(var_unit)  # covariance I, mean keep * q^T 1 / c != 0
    return z @ chol.T


def _run_blocks(s: dict, method: str, slopes: dict[str, float], rng: np.random.Generator):
    """Noise blocks of one run (all steps, sources and blocks) and its truth record."""
    nd, nr, K = s["n_directions"], s["n_random"], s["n_samples"]
    d = nd + nr
    blocks_out: list[NoiseBlock] = []
    eig_rows: list[pd.DataFrame] = []
    variances: dict[str, dict] = {}
    basis = np.array([schema.Basis.HESSIAN.value] * nd + [schema.Basis.RANDOM.value] * nr, dtype=object)
    direction = np.concatenate([np.arange(nd), np.arange(nr)]).astype(np.int64)
    for step in s["steps"]:
        for blk in (s["blocks"] or [None]):
            lam, lmax = _spectrum(s, rng)
            resid = np.abs(lmax) * 1e-7 * rng.uniform(0.5, 2.0, size=nd)
            row = pd.DataFrame({"step": np.int64(step), "rank": np.arange(nd, dtype=np.int64),
                                "eigenvalue": lam, "residual": resid})
            if s["blocks"]:
                row["block"] = blk
            eig_rows.append(row)
            pos_min = lam[lam > 0].min()
            curv = np.concatenate([np.where(lam > 0, lam, pos_min), np.full(nr, s["random_curvature"] * lmax)])
            for src in s["sources"]:
                if src == ISOTROPIC:
                    sigma2 = np.full(d, np.exp(s["intercept"]))
                    chol = np.diag(np.sqrt(sigma2))
                    fam = NoiseFamily.GAUSSIAN
                else:
                    e = s["scatter"] * rng.standard_normal(d)
                    sigma2 = np.exp(s["intercept"] + slopes[src] * np.log(curv) + e)
                    R = _correlation_matrix(d, s["correlation"], rng)
                    sd = np.sqrt(sigma2)
                    chol = np.linalg.cholesky(R * np.outer(sd, sd))
                    fam = NoiseFamily(s["noise"][src])
                x = _draws(fam, K, chol, s, rng)
                var = x.var(axis=0, ddof=1)
                blocks_out.append(NoiseBlock(
                    int(step), src, blk, x, basis.copy(), direction.copy(),
                    np.concatenate([lam, np.full(nr, np.nan)]),
                    np.concatenate([resid, np.full(nr, np.nan)]),
                    np.arange(K, dtype=np.int64), var))
                key = f"step={step}/source={src}" + (f"/block={blk}" if blk is not None else "")
                h = sigma2[:nd]
                variances[key] = {"variance": h.tolist(),
                                  "random_variance": sigma2[nd:].tolist(),
                                  "hessian_random_ratio": float(h.mean() / sigma2[nd:].mean()) if nr else None}
    # the reader's order: step, then source and block in order of appearance
    src_pos = {x: i for i, x in enumerate(s["sources"])}
    blk_pos = {x: i for i, x in enumerate(s["blocks"] or [None])}
    blocks_out.sort(key=lambda b: (b.step, src_pos[b.source], blk_pos[b.block]))
    return blocks_out, pd.concat(eig_rows, ignore_index=True), variances


def noise_table(blocks: list[NoiseBlock], *, float32: bool = False) -> pa.Table:
    parts = []
    for b in blocks:
        K, d = b.values.shape
        cols = {
            "step": np.full(K * d, b.step, dtype=np.int64),
            "source": pa.DictionaryArray.from_arrays(np.zeros(K * d, dtype=np.int32), pa.array([b.source])),
            "basis": pa.DictionaryArray.from_arrays(
                np.tile((b.basis != schema.Basis.HESSIAN.value).astype(np.int32), K),
                pa.array([schema.Basis.HESSIAN.value, schema.Basis.RANDOM.value])),
            "direction": np.tile(b.direction, K),
            "sample": np.repeat(b.samples, d),
            "value": b.values.ravel().astype(np.float32 if float32 else np.float64),
        }
        if b.block is not None:
            cols["block"] = pa.DictionaryArray.from_arrays(np.zeros(K * d, dtype=np.int32), pa.array([b.block]))
        parts.append(pa.table(cols))
    t = pa.concat_tables(parts, promote_options="permissive")
    # plain strings on disk: the schema's canonical type
    for name in ("source", "basis", "block"):
        if name in t.column_names:
            t = t.set_column(t.schema.get_field_index(name), name, t.column(name).cast(pa.string()))
    return t


def generate(s: dict, rng: np.random.Generator):
    """Yield (meta, blocks, eigen DataFrame, truth rows) for every run."""
    src_nonzero = [x for x in s["sources"] if x != ISOTROPIC]
    for method, mean_b in s["methods"].items():
        for seed in range(s["runs_per_method"]):
            run_id = f"{method}-s{seed}"
            slopes = {src: mean_b + s["source_offsets"][src] + s["slope_sd"] * rng.standard_normal()
                      for src in src_nonzero}
            slopes_all = {src: (slopes[src] if src != ISOTROPIC else 0.0) for src in s["sources"]}
            blocks, eig, variances = _run_blocks(s, method, slopes, rng)
            truth_rows = [{"run_id": run_id, "method": method, "seed": seed, "source": src,
                           "noise": s["noise"][src], "slope": slopes_all[src],
                           "mean_slope": (mean_b + s["source_offsets"][src]) if src != ISOTROPIC else 0.0,
                           "intercept": s["intercept"]} for src in s["sources"]]
            meta = {
                "schema_version": schema.SCHEMA_VERSION, "run_id": run_id, "method": method, "seed": seed,
                "dataset": "simulated", "model": "varprinciple.simulate",
                "package_versions": {"varprinciple": __version__, "numpy": np.__version__},
                "truth": {"slope": slopes_all,
                          "mean_slope": {r["source"]: r["mean_slope"] for r in truth_rows},
                          "intercept": s["intercept"], "slope_sd": s["slope_sd"], "scatter": s["scatter"],
                          "noise": s["noise"], "correlation": s["correlation"], "df": s["df"],
                          "drop_prob": s["drop_prob"], "n_nonpositive": s["n_nonpositive"],
                          "directions": variances},
            }
            yield meta, blocks, eig, truth_rows
