"""Calibration of the per-run intervals and tests on the independent realistic generator.

Measures, by simulation with known truth (fixed seeds), what docs/statistics.md quotes:

* ``slope``:     coverage of the 95% CI of the per-run exponent b and type-I error of its
                 one-sided test (alpha = 0.05), per scenario (blocked correlation along the
                 spectrum, heavy tails, small K, heteroscedastic high-leverage outliers, few
                 directions);
* ``harmonic``:  the same on the harmonic spectrum lambda_i = 8 / i of ``varprinciple simulate``;
* ``design``:    the same over a grid of K draws x n directions (smallest calibrated design);
* ``floor``:     mean b when two off-law directions sit at a tiny lambda / lambda_max, per floor_rel;
* ``ratio``:     coverage of the 95% Hessian/random variance-ratio interval for the estimand
                 mean_i v_i^T C v_i / (tr C / D), m random directions, b in {0, 1};
* ``curvature``: type-I (anisotropic variances unrelated to lambda) and power of
                 ``curvature_test`` beside the rejection rate of the isotropy test.

Monte Carlo SE of a rate r over n replicates: sqrt(r (1 - r) / n), printed with every rate.
With ``--before REV`` the estimators of git revision REV (e.g. the commit before issue 7)
are measured beside the current ones.

Usage (one core)::

    OMP_NUM_THREADS=1 python benchmarks/calibrate_intervals.py [--n 2000] [--only slope,ratio]
        [--before 5e9b5cc]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from _realistic_generator import Design, draws  # noqa: E402

from varprinciple.stats import curvature_test, isotropy_test, relation_fit, variance_ratio  # noqa: E402
from varprinciple.stats import relation as _relation  # noqa: E402

ALPHA = 0.05
D0 = Design(K=100, k=20, b=1.0)

#: per-run slope scenarios: name -> design (b is set per measurement)
SLOPE_SCENARIOS = {
    "gaussian, scatter 0.3": D0.but(scatter=0.3),
    "blocked (2 blocks, rho 0.5), Gaussian, K=100": D0.but(block_corr=0.5),
    "blocked, t5, K=30": D0.but(K=30, tails="t5", block_corr=0.5),
    "blocked, Gaussian, K=30": D0.but(K=30, block_corr=0.5),
    "blocked, Gaussian, K=10": D0.but(K=10, block_corr=0.5),
    "blocked (4 blocks), t5, K=50, scatter 0.3": D0.but(K=50, tails="t5", block_corr=0.5, n_blocks=4, scatter=0.3),
    "t5, K=10, scatter 0.3": D0.but(K=10, tails="t5", scatter=0.3),
    "3 outliers (scatter 1.0) + bulk (0.2)": D0.but(scatter=0.2, n_outliers=3, outlier_scatter=1.0),
    "3 outliers (scatter 0.6) + bulk (0.2), t5, blocked": D0.but(scatter=0.2, n_outliers=3, outlier_scatter=0.6,
                                                              tails="t5", block_corr=0.3),
    "5 directions, scatter 0.2": D0.but(k=5, scatter=0.2),
    "4 directions, scatter 0.2": D0.but(k=4, scatter=0.2),
    "3 directions, scatter 0.2 (refused by default; measured with MIN_DIRECTIONS_CI = 3)": D0.but(k=3, scatter=0.2),
    "6 directions, t5, K=30, scatter 0.2": D0.but(k=6, K=30, tails="t5", scatter=0.2),
}

#: the harsh-but-realistic structure of the design grid
GRID_BASE = D0.but(tails="t5", block_corr=0.5, scatter=0.3, n_outliers=0)
GRID_K = (10, 20, 30, 50, 100)
GRID_N = (3, 4, 5, 6, 8, 10, 20)


def rate(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    r = float(x.mean())
    return r, float(np.sqrt(r * (1 - r) / x.size))


def fmt(r: tuple[float, float]) -> str:
    return f"{r[0]:.3f} ± {r[1]:.3f}"


def load_before(rev: str):
    """relation_fit / variance_ratio of git revision ``rev`` (imports made absolute)."""
    tmp = Path(tempfile.mkdtemp())
    mods = {}
    for name in ("relation", "alignment"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:varprinciple/stats/{name}.py"],
                             check=True, capture_output=True, text=True).stdout
        src = src.replace("from ..errors", "from varprinciple.errors").replace(
            "from ._resampling", "from varprinciple.stats._resampling")
        path = tmp / f"before_{name}.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location(f"before_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods


def slope_rates(d: Design, n: int, seed: int, fit=relation_fit) -> dict:
    """Coverage at b = 1 and type-I at b = 0; designs with fewer included directions than
    ``MIN_DIRECTIONS_CI`` (no interval by default) are measured with the minimum lowered."""
    saved = _relation.MIN_DIRECTIONS_CI
    _relation.MIN_DIRECTIONS_CI = min(saved, d.k - d.n_tiny)
    try:
        return _slope_rates(d, n, seed, fit)
    finally:
        _relation.MIN_DIRECTIONS_CI = saved


def _slope_rates(d: Design, n: int, seed: int, fit) -> dict:
    rng = np.random.default_rng(seed)
    lam, X, _, _ = draws(d.but(b=1.0), n, rng)
    f1 = [fit(x, lam) for x in X]
    lam, X, _, _ = draws(d.but(b=0.0), n, rng)
    f0 = [fit(x, lam) for x in X]
    lo = np.array([f.ci_low for f in f1])
    hi = np.array([f.ci_high for f in f1])
    ok = np.isfinite(lo)
    return {"coverage": rate((lo[ok] <= 1.0) & (1.0 <= hi[ok])),
            "type1": rate(np.array([f.p_value for f in f0]) < ALPHA),
            "width": float(np.nanmedian(hi - lo)), "mean_b": float(np.mean([f.slope for f in f1])),
            "n_dir": f1[0].n_directions}


def run_slope(n: int, before=None) -> None:
    print(f"\n### Per-run slope b: 95% CI coverage at b = 1, type-I of the one-sided test at b = 0 ({n} probes each)\n")
    head = "| scenario | K | n dirs | coverage | type-I | median width | mean b̂ |"
    sep = "|---|---|---|---|---|---|---|"
    if before is not None:
        head += " coverage before | type-I before |"
        sep += "---|---|"
    print(head)
    print(sep)
    for i, (name, d) in enumerate(SLOPE_SCENARIOS.items()):
        r = slope_rates(d, n, 1000 + i)
        row = (f"| {name} | {d.K} | {r['n_dir']} | {fmt(r['coverage'])} | {fmt(r['type1'])} | "
               f"{r['width']:.3f} | {r['mean_b']:.3f} |")
        if before is not None:
            rb = slope_rates(d, n, 1000 + i, fit=before["relation"].relation_fit)
            row += f" {fmt(rb['coverage'])} | {fmt(rb['type1'])} |"
        print(row, flush=True)


def run_harmonic(n: int) -> None:
    """The harmonic spectrum lambda_i = 8 / i of ``varprinciple simulate`` (draws of
    tests/test_calibration.py: Gaussian, t5 with a common factor, masked)."""
    import test_calibration as tc

    lam = 8.0 / np.arange(1, 13)
    print(f"\n### Harmonic spectrum λ_i = 8/i, 12 directions, K = 80, scatter 0.3 ({n} probes; CI at b = 0.5)\n")
    print("| noise | coverage | type-I | median df | median width |")
    print("|---|---|---|---|---|")
    for noise, corr in (("gaussian", 0.0), ("t5", 0.3), ("masked", 0.0)):
        rng = np.random.default_rng(1)
        f1 = [relation_fit(x, lam) for x in tc.draws(rng, n, 80, lam, 0.5, noise=noise, corr=corr, scatter=0.3)]
        f0 = [relation_fit(x, lam) for x in tc.draws(rng, n, 80, lam, 0.0, noise=noise, corr=corr, scatter=0.3)]
        print(f"| {noise} | {fmt(rate([f.ci_low <= 0.5 <= f.ci_high for f in f1]))} | "
              f"{fmt(rate([f.p_value < ALPHA for f in f0]))} | {np.median([f.df for f in f1]):.1f} | "
              f"{np.median([f.ci_high - f.ci_low for f in f1]):.2f} |", flush=True)


def run_design(n: int) -> None:
    print(f"\n### Design grid (t5 draws, 2 blocks rho 0.5 along the spectrum, scatter 0.3): "
          f"coverage / type-I ({n} probes each; 3 directions: refused by default, measured with "
          f"MIN_DIRECTIONS_CI = 3)\n")
    print("| K \\ directions | " + " | ".join(str(k) for k in GRID_N) + " |")
    print("|---|" + "---|" * len(GRID_N))
    for K in GRID_K:
        cells = []
        for k in GRID_N:
            r = slope_rates(GRID_BASE.but(K=K, k=k), n, 7 * K + k)
            cells.append(f"{r['coverage'][0]:.3f} / {r['type1'][0]:.3f}")
        print(f"| {K} | " + " | ".join(cells) + " |", flush=True)


def run_floor(n: int) -> None:
    print(f"\n### Exclusion floor: two off-law directions at a tiny λ/λmax (bulk over 2–3 decades, true b = 1, "
          f"{n} probes)\n")
    print("| bulk decades | tiny λ/λmax | floor_rel | included | mean b̂ | coverage |")
    print("|---|---|---|---|---|---|")
    for decades in (2.0, 3.0):
        for tiny in (5e-6, 5e-5):
            d = D0.but(n_tiny=2, tiny_rel=tiny, decades=decades, scatter=0.2)
            rng = np.random.default_rng(11)
            lam, X, _, _ = draws(d, n, rng)
            for fl in (1e-6, 1e-4):
                fits = [relation_fit(x, lam, floor_rel=fl) for x in X]
                cov = rate([f.ci_low <= 1.0 <= f.ci_high for f in fits])
                print(f"| {decades:g} | {tiny:g} | {fl:g} | {fits[0].n_directions} | "
                      f"{np.mean([f.slope for f in fits]):.3f} | {fmt(cov)} |", flush=True)


RATIO_DESIGNS = {
    "plain (Gaussian, 20 Hessian dirs, D=400, K=100)": Design(K=100, k=20, D=400),
    "stressed (t5, blocked rho 0.3, 2 outliers, scatter 0.3)": Design(K=100, k=20, D=400, tails="t5",
                                                                       block_corr=0.3, n_outliers=2, scatter=0.3),
    "small K (Gaussian, K=30)": Design(K=30, k=20, D=400),
}


def run_ratio(n: int, before=None) -> None:
    print(f"\n### Hessian/random variance ratio: 95% CI coverage of mean_i v_iᵀCv_i / (tr C / D) ({n} probes each)\n")
    head = "| design | b | m random | coverage | sd of log ratio | mean SE | median df |"
    sep = "|---|---|---|---|---|---|---|"
    if before is not None:
        head += " coverage before |"
        sep += "---|"
    print(head)
    print(sep)
    for dn, base in RATIO_DESIGNS.items():
        for b in (0.0, 1.0):
            for m in (3, 5, 10, 30):
                d = base.but(b=b, m_random=m)
                rng = np.random.default_rng(int(100 * b) + m)
                lam, X, R, truth = draws(d, n, rng)
                res = [variance_ratio(x, r) for x, r in zip(X, R)]
                cov = rate([q.ci_low <= t <= q.ci_high for q, t in zip(res, truth)])
                L = np.log([q.estimate for q in res]) - np.log(truth)
                row = (f"| {dn} | {b:g} | {m} | {fmt(cov)} | {L.std():.3f} | "
                       f"{np.mean([q.se_log for q in res]):.3f} | {np.median([q.df for q in res]):.1f} |")
                if before is not None:
                    rs = np.random.default_rng(5)
                    old = [before["alignment"].variance_ratio(x, r, resamples=199, rng=rs) for x, r in zip(X, R)]
                    row += f" {fmt(rate([q.ci_low <= t <= q.ci_high for q, t in zip(old, truth)]))} |"
                print(row, flush=True)


CURV_SCENARIOS = {  # name -> (design, role)
    "anisotropic unrelated (scatter 0.7), Gaussian": (D0.but(b=0.0, scatter=0.7), "type-I"),
    "anisotropic unrelated, t5, blocked rho 0.5": (D0.but(b=0.0, scatter=0.7, tails="t5", block_corr=0.5), "type-I"),
    "anisotropic unrelated, K=30, blocked": (D0.but(b=0.0, scatter=0.7, K=30, block_corr=0.5), "type-I"),
    "anisotropic unrelated, 10 directions, K=30, t5": (D0.but(b=0.0, scatter=0.7, k=10, K=30, tails="t5"), "type-I"),
    "unrelated in mean, 3 outliers with scatter 1.0 (bulk 0.3)": (D0.but(b=0.0, scatter=0.3, n_outliers=3,
                                                                       outlier_scatter=1.0), "type-I"),
    "isotropic (b = 0, no scatter)": (D0.but(b=0.0), "type-I"),
    "b = 1, 20 directions, scatter 0.7": (D0.but(b=1.0, scatter=0.7), "power"),
    "b = 1, 20 directions, scatter 1.0, t5, K=30, blocked": (D0.but(b=1.0, scatter=1.0, tails="t5", K=30,
                                                                block_corr=0.5), "power"),
    "b = 0.3, 20 directions, scatter 0.7": (D0.but(b=0.3, scatter=0.7), "power"),
}


def run_curvature(n: int, resamples: int = 199) -> None:
    print(f"\n### Curvature test vs isotropy test: rejection rate at α = 0.05 ({n} probes, {resamples} "
          f"permutations / rotations each)\n")
    print("| scenario | role | curvature_p | permutation p alone | t p alone | isotropy_p |")
    print("|---|---|---|---|---|---|")
    for i, (name, (d, role)) in enumerate(CURV_SCENARIOS.items()):
        rng = np.random.default_rng(300 + i)
        lam, X, _, _ = draws(d, n, rng)
        ct = [curvature_test(x, lam, resamples=resamples, rng=rng) for x in X]
        it = [isotropy_test(x, lam, resamples=resamples, rng=rng) for x in X]
        print(f"| {name} | {role} | {fmt(rate([c.p_value <= ALPHA for c in ct]))} | "
              f"{fmt(rate([c.p_permutation <= ALPHA for c in ct]))} | "
              f"{fmt(rate([c.p_parametric <= ALPHA for c in ct]))} | "
              f"{fmt(rate([t.p_value <= ALPHA for t in it]))} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="replicate probes per cell (default 2000)")
    p.add_argument("--only", default="slope,harmonic,design,floor,ratio,curvature")
    p.add_argument("--before", default=None, help="git revision whose estimators are measured beside")
    a = p.parse_args(argv)
    before = load_before(a.before) if a.before else None
    t0 = time.time()
    parts = a.only.split(",")
    if "slope" in parts:
        run_slope(a.n, before)
    if "harmonic" in parts:
        run_harmonic(a.n)
    if "design" in parts:
        run_design(a.n // 2)
    if "floor" in parts:
        run_floor(a.n // 4)
    if "ratio" in parts:
        run_ratio(a.n // 2, before)
    if "curvature" in parts:
        run_curvature(a.n // 2)
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
