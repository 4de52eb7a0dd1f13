"""Calibration of ψ's interval on foreign-written OU trajectories (docs/flatness.md).

Each cell simulates ``--reps`` runs with tests/_foreign_ou.py (an exact discrete OU in a
quadratic, 12 directions with λ from 10 to 0.1, a snapshot every 10 steps, started at
stationarity, plus a drifting PC1), writes nothing to disk, and fits ψ with
:func:`varprinciple.stats.psi.psi_fit`. Printed per cell: the median n_eff_min, the share
of runs refused, and over the runs given an interval the coverage of the true ψ (the OLS
estimand of the generator), the rate of "ψ > 0" at p < 0.05 (type-I when the truth is ≤ 0),
the mean error of ψ and of the uncorrected window ψ; and over groups of 4 runs (one-sample t
on ψ, the analysis' group_test), the group coverage and type-I. MC SEs are binomial.
``--no-refusal`` fits with the thresholds off (to find where the interval stops holding).

    nice -n 10 python scripts/calibrate_psi.py --reps 200 --resamples 300 > calib.txt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _foreign_ou as fo  # noqa: E402

from varprinciple.stats.inference import group_test  # noqa: E402
from varprinciple.stats.psi import psi_fit  # noqa: E402

LAM = np.geomspace(10, 0.1, 12)
CELLS = [  # kind, eta, snapshots, rotate
    ("flat", 0.01, 1000, False), ("flat", 0.02, 1000, False), ("flat", 0.05, 1000, False),
    ("flat", 0.05, 4000, False), ("flat", 0.05, 1000, True), ("isotropic", 0.05, 1000, False),
    ("hessian2", 0.05, 1000, False), ("flat", 0.01, 4000, False), ("flat", 0.005, 1000, False),
    ("flat", 0.007, 1000, False),
]


def _se(p, n):
    return np.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def run_cell(kind, eta, T, rotate, *, reps, resamples, refuse, seed, min_n_eff=None):
    rng = np.random.default_rng([seed, int(eta * 1000), T, int(rotate), len(kind)])
    rows = []
    for _ in range(reps):
        P, F, flags, U = fo.simulate(kind, lam=LAM, eta=eta, every=10, n_snapshots=T, rng=rng, rotate=rotate)
        truth = fo.true_psi(kind, LAM, eta, U)
        kw = {} if refuse else {"min_n_eff": 0.0, "min_lever_arm": 0.0}
        if refuse and min_n_eff is not None:
            kw["min_n_eff"] = min_n_eff
        r = psi_fit(P, F, drift=flags, resamples=resamples, rng=rng, **kw)
        rows.append((truth, r.psi, r.psi_window, r.ci_low, r.ci_high, r.p_value, r.n_eff_min, r.refused))
    a = np.array(rows, dtype=float)
    truth = a[:, 0]
    given = a[:, 7] == 0
    g = a[given]
    n = len(g)
    cov = float(np.mean((g[:, 3] <= g[:, 0]) & (g[:, 0] <= g[:, 4]))) if n else np.nan
    pos = float(np.mean(g[:, 5] < 0.05)) if n else np.nan
    # groups of 4 runs (all runs; a group with a refused run is refused in the analysis)
    gc, gt, ng = [], [], 0
    for i in range(0, reps - 3, 4):
        blk = a[i:i + 4]
        if refuse and np.any(blk[:, 7] == 1):
            continue
        res = group_test(blk[:, 1], confidence=0.95, null=0.0)
        ng += 1
        gc.append(res.ci_low <= blk[0, 0] <= res.ci_high)
        gt.append(res.p_value < 0.05)
    gcov, gpos = (float(np.mean(gc)), float(np.mean(gt))) if ng else (np.nan, np.nan)
    return {"cell": f"{kind} eta={eta} T={T}{' rotated' if rotate else ''}", "truth": float(truth.mean()),
            "n_eff_min": float(np.median(a[:, 6])), "refused": float(np.mean(~given)), "n_given": n,
            "coverage": cov, "coverage_se": _se(cov, n), "positive": pos, "positive_se": _se(pos, n),
            "bias": float(np.mean(g[:, 1] - g[:, 0])) if n else np.nan,
            "bias_window": float(np.mean(a[:, 2] - truth)), "sd": float(np.std(a[:, 1])),
            "n_groups": ng, "group_coverage": gcov, "group_coverage_se": _se(gcov, ng),
            "group_positive": gpos, "group_positive_se": _se(gpos, ng)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--no-refusal", action="store_true")
    ap.add_argument("--min-n-eff", type=float, default=None, help="refusal threshold (default: MIN_N_EFF)")
    ap.add_argument("--cells", type=str, default="", help="comma-separated cell indices (default all)")
    args = ap.parse_args(argv)
    idx = [int(c) for c in args.cells.split(",")] if args.cells else range(len(CELLS))
    for i in idx:
        t0 = time.time()
        r = run_cell(*CELLS[i], reps=args.reps, resamples=args.resamples, refuse=not args.no_refusal,
                     seed=args.seed, min_n_eff=args.min_n_eff)
        print(f"{r['cell']:32s} truth {r['truth']:+.3f}  n_eff_min {r['n_eff_min']:6.1f}  refused {r['refused']:.2f}  "
              f"run: coverage {r['coverage']:.3f}±{r['coverage_se']:.3f}  P(p<.05) {r['positive']:.3f}"
              f"±{r['positive_se']:.3f} (n {r['n_given']})  bias {r['bias']:+.3f} (window {r['bias_window']:+.3f}) "
              f"sd {r['sd']:.3f}  group of 4: coverage {r['group_coverage']:.3f}±{r['group_coverage_se']:.3f}  "
              f"P(p<.05) {r['group_positive']:.3f}±{r['group_positive_se']:.3f} (n {r['n_groups']})  "
              f"[{time.time() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
