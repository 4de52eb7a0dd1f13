"""Calibrate b's interval from exact (two-mask) dropout variances on an independent generator.

Not :mod:`varprinciple.simulate`: per-sample gradient projections are built from dropout-like
masks at two sites (Bernoulli keeps scaled by 1/keep, a linear site times a multiplicative
one), per-sample activations with heavy tails (Student t3 and rare samples 10x larger), loadings
correlated along the spectrum (AR(1) across neighbouring directions), a few directions (k = 5,
10) and small training sets. Each direction's variance *given the training set* is computed in
closed form and the loadings are rescaled so that it is exactly ``lambda^b exp(e_j)`` (``e_j``
~ N(0, tau^2), the scatter about the power law), so the truth b is known exactly; the only
other randomness is the two masks per sample, as in the collector. The estimator sees only
the J group sums of ``(v' delta_i)^2 / (2 n^2)`` (what ``exact_variance_groups.parquet`` logs).

Run: ``PYTHONPATH=. python scripts/calib_dropout_exact.py --reps 1000`` (numbers in
docs/statistics.md, "b from exact variances").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from varprinciple.stats.relation_exact import exact_relation_fit  # noqa: E402


def draw_groups(rng, *, n: int, k: int, b: float, tau: float, J: int = 64, units: int = 16,
                units2: int = 8, p1: float = 0.5, p2: float = 0.1, rho: float = 0.7,
                spike_rate: float = 0.02, spike: float = 10.0, tail_df: float = 3.0, tilt: bool = False):
    """One probe: ``(G, lam, target, vse)`` -- the (J, k) group sums, eigenvalues, the true
    per-direction variances given the training set and the per-direction SE the collector
    reports (``sqrt(J var_g G)``)."""
    lam = np.geomspace(1.0, 1e-2, k)
    target = lam ** b * np.exp(tau * rng.standard_normal(k))
    idx = np.arange(k)
    Lc = np.linalg.cholesky(rho ** np.abs(idx[:, None] - idx[None, :]))
    L = rng.standard_normal((units, k)) @ Lc.T
    scale = 1.0 + spike * (rng.random(n) < spike_rate)
    h = np.abs(rng.standard_t(tail_df, size=(n, units))) * scale[:, None]
    c = h[:, :, None] * L[None]  # (n, U, k)
    if tilt:  # the rare large samples load on the flat directions only (rising to spike x there)
        is_spike = scale > 1.0
        c[is_spike] *= (np.linspace(0.0, 1.0, k) * spike + 1.0) / scale[is_spike, None, None]
    a = rng.gamma(2.0, size=(n, units2)) / (2.0 * units2)  # second site, mean ~ 1
    q1, q2 = 1.0 - p1, 1.0 - p2
    mA, vA = c.sum(1), (1.0 - q1) / q1 * (c * c).sum(1)
    mB, vB = a.sum(1), (1.0 - q2) / q2 * (a * a).sum(1)
    V = (vA + mA ** 2) * (vB + mB ** 2)[:, None] - mA ** 2 * (mB ** 2)[:, None]
    s = np.sqrt(target / (V.sum(0) / n ** 2))
    c *= s
    eta = (rng.random((2, n, units)) < q1) / q1
    zeta = (rng.random((2, n, units2)) < q2) / q2
    x = np.einsum("mnu,nuk->mnk", eta, c) * (zeta * a).sum(-1)[:, :, None]
    d2 = (x[0] - x[1]) ** 2 / (2.0 * n * n)
    J = min(J, n)
    g = rng.permutation(n) % J
    G = np.zeros((J, k))
    np.add.at(G, g, d2)
    vse = np.sqrt(J * G.var(axis=0, ddof=1))
    return G, lam, target, vse


def run_design(rng, *, reps: int, n: int, k: int, b: float, tau: float, **kw) -> dict:
    cover = reject = refused = 0
    z = []
    for _ in range(reps):
        G, lam, target, vse = draw_groups(rng, n=n, k=k, b=b, tau=tau, **kw)
        z.append((G.sum(0) - target) / vse)
        ef = exact_relation_fit(G, lam)
        f = ef.fit
        if not np.isfinite(f.ci_low):
            refused += 1
            continue
        cover += f.ci_low <= b <= f.ci_high
        if b == 0:
            reject += f.p_value < 0.05
    m = reps - refused
    z = np.concatenate(z)
    out = {"n": n, "k": k, "b": b, "tau": tau, "reps": reps, "refused": refused / reps,
           "coverage": cover / m if m else np.nan, "type1": reject / m if (m and b == 0) else np.nan,
           "m": m, "sd_z_variance": float(np.std(z))}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--n", type=int, nargs="+", default=[24, 100, 1000])
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--tau", type=float, nargs="+", default=[0.0, 0.3])
    ap.add_argument("--b", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--J", type=int, nargs="+", default=[64], help="groups of samples (collector: min(64, n))")
    ap.add_argument("--tilt", action="store_true", help="rare large samples load on the flat directions")
    ap.add_argument("--spike-rate", type=float, default=0.02)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    print("| n | J | k | tau | b | refused | coverage ± MC SE | type-I ± MC SE | sd of (vhat - v)/se |")
    print("|---|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for n, J in [(n, J) for n in a.n for J in a.J]:
        for k in a.k:
            for tau in a.tau:
                for b in a.b:
                    r = run_design(rng, reps=a.reps, n=n, k=k, b=b, tau=tau, J=J, tilt=a.tilt, spike_rate=a.spike_rate)
                    m = max(r["m"], 1)
                    cov = f"{r['coverage']:.3f} ± {np.sqrt(r['coverage'] * (1 - r['coverage']) / m):.3f}"
                    t1 = ("—" if not np.isfinite(r["type1"]) else
                          f"{r['type1']:.3f} ± {np.sqrt(r['type1'] * (1 - r['type1']) / m):.3f}")
                    print(f"| {n} | {min(J, n)} | {k} | {tau} | {b:g} | {r['refused']:.3f} | {cov} | {t1} | "
                          f"{r['sd_z_variance']:.2f} |", flush=True)
    print(f"({a.reps} replicate probes per row, J = min({a.J}, n), tilt {a.tilt}, spike rate {a.spike_rate}, "
          f"seed {a.seed}, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
