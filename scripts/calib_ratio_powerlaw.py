"""Calibration of the Hessian/random variance-ratio interval with few random directions.

The independent review's design (docs/statistics.md section 5.2): noise in D = 200
dimensions with a power-law covariance ``C = diag(i^-alpha)``, i = 1..D, in the Hessian
eigenbasis; the logged Hessian directions are the top h = 20 coordinates; m independent
uniformly random unit directions of R^D; K = 100 draws. The estimand
``mean_{i <= h} C_ii / (tr C / D)`` is known exactly. Measured: coverage of the 95% interval
with its Monte Carlo SE sqrt(r (1 - r) / n), per alpha (how concentrated the noise is), m
and noise tails.

Numpy only (its own draws, not ``varprinciple.simulate`` or tests/_realistic_generator.py).
With ``--before REV`` the ``variance_ratio`` of git revision REV is measured on the same draws.

Usage (one core)::

    OMP_NUM_THREADS=1 python scripts/calib_ratio_powerlaw.py [--n 2000] [--before 78e5c4b]
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
from varprinciple.stats import variance_ratio  # noqa: E402

D, H, K = 200, 20, 100


def draws(alpha: float, m: int, n: int, rng: np.random.Generator, tails: str = "gauss"):
    """n replicate probes: (Hessian projections (K, H), random projections (K, m)) and the truth."""
    lam = np.arange(1, D + 1, dtype=float) ** -alpha
    truth = lam[:H].mean() / lam.mean()
    for _ in range(n):
        z = rng.standard_normal((K, D)) if tails == "gauss" else rng.standard_t(5, (K, D)) / np.sqrt(5 / 3)
        y = z * np.sqrt(lam)
        U = rng.standard_normal((D, m))
        U /= np.linalg.norm(U, axis=0)
        yield y[:, :H], y @ U, truth


def load_before(rev: str):
    return module_at(rev, "varprinciple/stats/alignment.py", "before_alignment").variance_ratio


CELLS = [(alpha, m, "gauss") for alpha in (1.0, 0.5, 1.5) for m in (3, 5, 10, 30)] + [(1.0, 3, "t5"), (1.0, 5, "t5")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="replicate probes per cell (default 2000)")
    p.add_argument("--before", default=None, help="git revision whose variance_ratio is measured beside")
    a = p.parse_args(argv)
    before = load_before(a.before) if a.before else None
    t0 = time.time()
    print(f"### Variance ratio, power-law covariance C = diag(i^-alpha), D = {D}, {H} Hessian directions, "
          f"K = {K}: 95% CI coverage ({a.n} probes each)\n")
    head = "| alpha | m random | tails | coverage | median df | mean SE of log ratio | sd of log ratio |"
    sep = "|---|---|---|---|---|---|---|"
    if before:
        head += " coverage before | median df before |"
        sep += "---|---|"
    print(head)
    print(sep)
    for i, (alpha, m, tails) in enumerate(CELLS):
        data = list(draws(alpha, m, a.n, np.random.default_rng([20261201, i]), tails))
        res = [variance_ratio(h, r) for h, r, _ in data]
        truth = data[0][2]
        L = np.log([q.estimate for q in res]) - np.log(truth)
        row = (f"| {alpha:g} | {m} | {tails} | {rate([q.ci_low <= truth <= q.ci_high for q in res])} | "
               f"{np.median([q.df for q in res]):.1f} | {np.mean([q.se_log for q in res]):.3f} | {L.std():.3f} |")
        if before:
            old = [before(h, r) for h, r, _ in data]
            row += (f" {rate([q.ci_low <= truth <= q.ci_high for q in old])} | "
                    f"{np.median([q.df for q in old]):.1f} |")
        print(row, flush=True)
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
