"""Calibration of the gamma group interval (varprinciple.stats.gamma) on the independent generator
tests/_foreign_gamma.py: coverage of the 95% t interval over networks for the group mean gamma and
the type-I error of the one-sided test gamma > 1 at alpha 0.05 (true mean 1), for n = 3, 4, 6
networks, with Monte Carlo standard errors; OLS per run beside Theil-Sen (primary).

    PYTHONPATH=.:tests nice -n 10 python scripts/calib_gamma.py --reps 2000 --rows 40 --cols 50

Numbers are recorded in docs/statistics.md ("gamma").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _foreign_gamma import networks  # noqa: E402

from varprinciple.stats.gamma import gamma_fit, gamma_group  # noqa: E402


def run(reps: int, ns=(3, 4, 6), *, rows=20, cols=25, seed=0, mu_cov=1.4, tau=0.15):
    rng = np.random.default_rng(seed)
    out = []
    for n in ns:
        cover = {"gamma": 0, "gamma_ols": 0}
        reject = {"gamma": 0, "gamma_ols": 0}
        for _ in range(reps):
            for mu, what in ((mu_cov, "cov"), (1.0, "type1")):
                nets = networks(n, mu, tau=tau, rng=rng, rows=rows, cols=cols)
                fits = [gamma_fit(h, c) for _, h, c in nets]
                for q in cover:
                    g, _ = gamma_group([getattr(f, q) for f in fits], confidence=0.95)
                    if what == "cov":
                        cover[q] += g.ci_low <= mu <= g.ci_high
                    else:
                        reject[q] += g.p_value < 0.05
        for q in cover:
            c, r = cover[q] / reps, reject[q] / reps
            out.append({"n": n, "estimator": q, "coverage": c, "coverage_se": np.sqrt(c * (1 - c) / reps),
                        "type1": r, "type1_se": np.sqrt(max(r * (1 - r), 0.05 * 0.95) / reps)})
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--cols", type=int, default=25)
    ap.add_argument("--tau", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ns", type=int, nargs="+", default=[3, 4, 6], help="numbers of networks")
    a = ap.parse_args()
    print(f"reps {a.reps}, layer {a.rows}x{a.cols}, tau {a.tau}, seed {a.seed}")
    for n in a.ns:
        for r in run(a.reps, (n,), rows=a.rows, cols=a.cols, seed=a.seed + n, tau=a.tau):
            print(f"n={r['n']} {r['estimator']:9s} coverage {r['coverage']:.3f} (MC SE {r['coverage_se']:.3f})  "
                  f"type-I {r['type1']:.3f} (MC SE {r['type1_se']:.3f})", flush=True)
