"""Benchmark: cost of the per-run interval's df rule (two Bell-McCaffrey working covariances).

Times ``relation_fit`` and ``curvature_test`` (which recomputes the slope's SE and df for
every permutation) on one probe, for the current code and for the statistics of a git
revision measured in the same run, and prints the ratios.

Usage (one core)::

    OMP_NUM_THREADS=1 python benchmarks/bench_df_rule.py [--before 78e5c4b] [--K 1000] [--k 40]
        [--resamples 999]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def baseline_import(rev: str) -> str:
    """Python code importing ``relation_fit`` and ``curvature_test`` of git revision ``rev``."""
    tmp = Path(tempfile.mkdtemp())
    subprocess.run(f"git -C {ROOT} archive {rev} varprinciple | tar -x -C {tmp}", shell=True, check=True)
    return f"import sys; sys.path.insert(0, {str(tmp)!r}); from varprinciple.stats import curvature_test, relation_fit"


SNIPPET = """
import time, numpy as np
rng = np.random.default_rng(0)
lam = np.geomspace(10, 0.01, {k})
X = rng.standard_normal(({K}, {k})) * lam ** 0.5
perms = np.argsort(rng.random(({B}, {k})), axis=1)
def med(f):
    f(); ts = []
    for _ in range(7):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts))
print(med(lambda: relation_fit(X, lam)), med(lambda: curvature_test(X, lam, resamples={B}, _permutations=perms)))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="78e5c4b", help="baseline git revision (default 78e5c4b)")
    p.add_argument("--K", type=int, default=1000)
    p.add_argument("--k", type=int, default=40)
    p.add_argument("--resamples", type=int, default=999)
    a = p.parse_args(argv)
    snippet = SNIPPET.format(K=a.K, k=a.k, B=a.resamples)
    header = baseline_import(a.before)
    res = {}
    for name, head in (("current", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                                   "from varprinciple.stats import curvature_test, relation_fit"),
                       (a.before, header)):
        out = subprocess.run([sys.executable, "-c", head + "\n" + snippet], check=True, capture_output=True,
                             text=True).stdout.split()
        res[name] = [float(v) for v in out]
    print(f"K = {a.K} draws, {a.k} directions, {a.resamples} permutations, median of 7")
    print("| function | current | " + a.before + " | ratio |")
    print("|---|---|---|---|")
    for i, fn in enumerate(("relation_fit", "curvature_test")):
        c, b = res["current"][i], res[a.before][i]
        print(f"| {fn} | {1000 * c:.1f} ms | {1000 * b:.1f} ms | {c / b:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
