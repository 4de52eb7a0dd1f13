"""Calibration of the per-run b interval with a few high-leverage outlier eigenvalues.

The independent review's design (docs/statistics.md section 5.2): 8 bulk directions with
eigenvalues ``logspace(1, 0, 8)`` and two outliers at ``1e-2, 8e-3`` (three decades below
the bulk, inside the relative floor 1e-4), per-direction log-scatter ``tau`` = 0.3 for the
bulk and 0.9 for the outliers, ``s2 = 0.05 lam^b exp(tau N(0, 1))``, K = 200 Gaussian draws
``x = N(0, 1) sqrt(s2)``. Measured: coverage of the 95% CI for b at b = 1 and the rejection
rate of the one-sided test (alpha = 0.05) at b = 0, with Monte Carlo SE sqrt(r (1 - r) / n),
for that design and variants (number of outliers, their scatter, no bulk scatter, K, number
of bulk directions, distance below the bulk).

Numpy only (its own draws, not ``varprinciple.simulate`` or tests/_realistic_generator.py).
With ``--before REV`` the ``relation_fit`` of git revision REV is measured on the same draws.

Usage (one core)::

    OMP_NUM_THREADS=1 python scripts/calib_relation_outliers.py [--n 2000] [--before 78e5c4b]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _calib_common import module_at, rate  # noqa: E402
from varprinciple.stats import relation_fit  # noqa: E402


def design(n_bulk: int = 8, n_out: int = 2, tau_bulk: float = 0.3, tau_out: float = 0.9, K: int = 200,
           below: float = 2.0):
    """Eigenvalues (bulk logspace(1, 0, n_bulk), outliers at 10^-below * 0.8^j; a negative
    ``below`` puts them above the bulk), log-scatter per direction, K."""
    lam = np.r_[np.logspace(1, 0, n_bulk), 10.0 ** -below * 0.8 ** np.arange(n_out)]
    tau = np.r_[np.full(n_bulk, tau_bulk), np.full(n_out, tau_out)]
    return lam, tau, K


#: name -> (eigenvalues, log-scatter per direction, K)
DESIGNS = {
    "review: 2 outliers (scatter 0.9), 8 bulk (0.3), K = 200": design(),
    "3 outliers (0.9), 8 bulk (0.3), K = 200": design(n_out=3),
    "1 outlier (0.9), 8 bulk (0.3), K = 200": design(n_out=1),
    "2 outliers (0.6), 8 bulk (0.3), K = 200": design(tau_out=0.6),
    "2 outliers (1.5), 8 bulk (0.3), K = 200": design(tau_out=1.5),
    "2 outliers (0.3), 8 bulk (0.3), K = 200 (homoscedastic)": design(tau_out=0.3),
    "2 outliers (0.9), 8 bulk without scatter, K = 200": design(tau_bulk=0.0),
    "2 outliers (0.9) at λ = 0.1, 0.08 (one decade below the bulk), 8 bulk (0.3), K = 200": design(below=1.0),
    "2 outliers (0.9), 8 bulk (0.3), K = 50": design(K=50),
    "2 outliers (0.9), 8 bulk (0.3), K = 20": design(K=20),
    "2 outliers (0.9), 4 bulk (0.3), K = 200": design(n_bulk=4),
    "2 outliers (0.9), 18 bulk (0.3), K = 200": design(n_bulk=18),
    "2 outliers (1.0) two decades ABOVE the bulk (λ = 1000, 800), 18 bulk (0.2), K = 100":
        design(n_bulk=18, tau_bulk=0.2, tau_out=1.0, K=100, below=-3.0),
    "3 outliers (1.0) two decades above, 17 bulk (0.2), K = 100":
        design(n_bulk=17, n_out=3, tau_bulk=0.2, tau_out=1.0, K=100, below=-3.0),
}


def draws(lam, tau, b, K, n, rng):
    """(n, K, d) projections: variance 0.05 lam^b exp(tau N(0, 1)) per replicate and direction."""
    s2 = 0.05 * lam ** b * np.exp(tau * rng.standard_normal((n, lam.size)))
    return rng.standard_normal((n, K, lam.size)) * np.sqrt(s2)[:, None, :]


def load_before(rev: str):
    return module_at(rev, "varprinciple/stats/relation.py", "before_relation").relation_fit


def measure(fit, lam, tau, K, n, seed):
    rng = np.random.default_rng(seed)
    f1 = [fit(x, lam) for x in draws(lam, tau, 1.0, K, n, rng)]
    f0 = [fit(x, lam) for x in draws(lam, tau, 0.0, K, n, rng)]
    return ([f.ci_low <= 1.0 <= f.ci_high for f in f1], [f.p_value < 0.05 for f in f0],
            float(np.median([f.df for f in f1])), float(np.median([f.ci_high - f.ci_low for f in f1])))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="replicate probes per cell and per b (default 2000)")
    p.add_argument("--before", default=None, help="git revision whose relation_fit is measured beside")
    a = p.parse_args(argv)
    before = load_before(a.before) if a.before else None
    t0 = time.time()
    print(f"### Per-run b with high-leverage outliers: 95% CI coverage at b = 1, type-I at b = 0 "
          f"({a.n} probes each)\n")
    head = "| design | coverage | type-I | median df | median width |"
    sep = "|---|---|---|---|---|"
    if before:
        head += " coverage before | type-I before |"
        sep += "---|---|"
    print(head)
    print(sep)
    for i, (name, (lam, tau, K)) in enumerate(DESIGNS.items()):
        cov, t1, df, wd = measure(relation_fit, lam, tau, K, a.n, 20261201 + i)
        row = f"| {name} | {rate(cov)} | {rate(t1)} | {df:.1f} | {wd:.2f} |"
        if before:
            cb, tb, _, _ = measure(before, lam, tau, K, a.n, 20261201 + i)
            row += f" {rate(cb)} | {rate(tb)} |"
        print(row, flush=True)
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
