"""psi of SGD on one- and two-layer linear regression (Gross, Raulf & Räth, PRR 2024, check).

    OMP_NUM_THREADS=1 python benchmarks/psi_linear.py

Inputs x in R^10 with feature scales 0.3..2.0 (Hessian eigenvalues ~0.09..4), a linear
teacher plus N(0, 0.5^2) label noise; SGD with lr 0.05, B = 4, under both samplers (shuffled
epochs, then independent batches), 5,000 steps of training then a 20,000-step window snapshotted every 10 steps
(varprinciple.collect.trajectory). Prints psi [95% CI], p, n_eff_min and the median
variance_ratio (about 1: stationary; about 2: diffusing). docs/flatness.md discusses the output;
tests/test_psi_linear.py asserts the known answer.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from varprinciple.collect.train import train
from varprinciple.collect.trajectory import collect_trajectory
from varprinciple.stats.psi import psi_from_tables


def run(two_layer: bool, n: int, seed: int = 0, sampler: str = "epochs") -> str:
    g = torch.Generator().manual_seed(seed)
    d = 10
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.3, 2.0, d, dtype=torch.float64)
    y = X @ torch.randn(d, 1, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, 1, generator=g,
                                                                                   dtype=torch.float64)
    torch.manual_seed(seed)
    model = (nn.Sequential(nn.Linear(d, 10, bias=False), nn.Linear(10, 1, bias=False)) if two_layer
             else nn.Linear(d, 1, bias=False)).double()
    t0 = time.perf_counter()
    train(model, "mse", X, y, method="sgd", lr=0.05, steps=5000, batch_size=4, generator=g, sampler=sampler)
    res = collect_trajectory(model, "mse", X, y, method="sgd", lr=0.05, batch_size=4, generator=g, window=20_000,
                             every=10, n_components=20 if two_layer else 9, profile_points=3,
                             sampler=sampler)
    p = psi_from_tables(res.pcs, res.projections, resamples=1000, rng=np.random.default_rng(seed))
    ratio = float(np.median(res.pcs["variance_ratio"].iloc[1:]))
    return (f"{sampler}: {'two' if two_layer else 'one'}-layer n={n}: psi {p.psi:.2f} [{p.ci_low:.2f}, {p.ci_high:.2f}], "
            f"p {p.p_value:.3f}, n_eff_min {p.n_eff_min:.0f}, median variance_ratio {ratio:.2f} "
            f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for sampler in ("epochs", "independent"):
        for two, n in ((False, 200), (False, 4000), (True, 200)):
            print(run(two, n, sampler=sampler), flush=True)
