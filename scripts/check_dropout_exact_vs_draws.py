"""b from exact dropout variances vs b from K = 1,000 sampled draws on real networks.

Three digits MLPs 64-50-50-10 (dropout p = 0.2 after the last or both hidden layers, 300 steps),
each probed once with both the exact two-mask moments and K = 1,000 dropout draws; the log set is
analysed as logged (b from the exact variances, ``variance_input`` "exact") and again with the
``group_variance`` column removed (b from the draws). Numbers in docs/statistics.md, "b from exact
variances".

Run: ``PYTHONPATH=. python scripts/check_dropout_exact_vs_draws.py`` (about a minute).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_noise import digits, mlp, train  # noqa: E402

from varprinciple.collect.api import probe_model  # noqa: E402
from varprinciple.collect.probe_settings import ProbeSettings  # noqa: E402
from varprinciple.io import refresh_file_records  # noqa: E402
from varprinciple.stats import analyze  # noqa: E402


def main():
    torch.set_num_threads(1)
    X, y = digits()
    tmp = Path(tempfile.mkdtemp())
    exact, draws = tmp / "exact", tmp / "draws"
    for seed, drop_after in [(0, (-1,)), (1, (0, 1)), (2, (0, 1))]:
        net = train(mlp((64, 50, 50, 10), drop_after=drop_after, seed=seed), X, y, 300, 0.3)
        s = ProbeSettings(top_k=20, n_samples=1000, sources=("dropout",), dropout_samples=1000, n_random=0)
        run = probe_model(net, "cross_entropy", X, y, out=exact / f"r{seed}", run_id=f"r{seed}", method="dropout",
                          settings=s, seed=seed)
        shutil.copytree(run, draws / f"r{seed}")
        ev = pd.read_parquet(run / "exact_variance.parquet").drop(columns=["group_variance"])
        ev.to_parquet(draws / f"r{seed}" / "exact_variance.parquet")
        refresh_file_records(draws / f"r{seed}", ["exact_variance.parquet"])
    cols = ["run_id", "variance_input", "slope", "ci_low", "ci_high", "n_samples", "exact_groups"]
    for path in (exact, draws):
        print(analyze(path, resamples=0).relations[cols].to_string(index=False))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
