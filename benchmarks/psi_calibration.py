"""Calibration of psi's interval and p-value on Langevin trajectories with known answers.

    OMP_NUM_THREADS=1 python benchmarks/psi_calibration.py --reps 200

Isotropic Langevin on L = 1 + theta' H theta / 2 (10 eigenvalues 8 ... 0.5, eta 0.01,
temperature 0.01, 20,000 steps, snapshot every 10): psi = -2; coverage of the nominal 90%
interval around the psi of long runs (400,000 steps). Noise ~ H: psi = 0 (a null of no
inverse relation); rejection rate of the one-sided p < 0.05 for psi > 0.
Prints the rates with their Monte Carlo standard errors (docs/flatness.md records them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_psi import trajectory_psi  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    t0 = time.perf_counter()
    truth = float(np.mean([trajectory_psi("isotropic", seed=10_000 + s, steps=400_000, resamples=100).psi
                           for s in range(3)]))
    iso = [trajectory_psi("isotropic", seed=s, steps=20_000, resamples=300, confidence=0.90)
           for s in range(args.reps)]
    cov = np.mean([r.ci_low <= truth <= r.ci_high for r in iso])
    nul = [trajectory_psi("hessian", seed=s, steps=20_000, resamples=300) for s in range(args.reps)]
    rej = np.mean([r.p_value < 0.05 for r in nul])
    n = args.reps
    print(f"isotropic Langevin: long-run psi {truth:.3f}; mean psi {np.mean([r.psi for r in iso]):.3f} "
          f"(sd {np.std([r.psi for r in iso]):.3f}); 90% CI coverage {cov:.3f} ± {np.sqrt(cov * (1 - cov) / n):.3f}; "
          f"median n_eff_min {np.median([r.n_eff_min for r in iso]):.0f} of {iso[0].n_snapshots}")
    print(f"noise ~ H (psi = 0): mean psi {np.mean([r.psi for r in nul]):.3f}; "
          f"P(p < 0.05) {rej:.3f} ± {np.sqrt(max(rej * (1 - rej), 0.05 * 0.95) / n):.3f}")
    print(f"{2 * n + 3} trajectories in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
