"""Cost of per-layer probes: one probe of a digits MLP with and without ``blocks = "layers"``.

Usage: PYTHONPATH=. .venv/bin/python benchmarks/bench_blocks.py [--top-k 20] [--samples 200]
Prints seconds per stage, HVPs and the ratio (same process, same model, same generator seed).
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits
from torch import nn

from varprinciple.collect.probe import ProbeSettings, probe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--samples", type=int, default=200)
    a = ap.parse_args()
    torch.set_num_threads(1)
    d = load_digits()
    X = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 50), nn.ReLU(), nn.Linear(50, 50), nn.ReLU(), nn.Dropout(0.1), nn.Linear(50, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    for blocks in (None, "layers"):
        s = ProbeSettings(top_k=a.top_k, n_samples=a.samples, batch_size=32, blocks=blocks)
        t = time.perf_counter()
        res = probe(net, "cross_entropy", X, y, settings=s, step=300, generator=torch.Generator().manual_seed(0))
        wall = time.perf_counter() - t
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in res.timings.items() if k != "total")
        print(f"blocks={blocks!s:7} total {wall:.2f}s, {res.n_hvp} HVPs, noise rows {len(res.noise)}: {stages}")
        if blocks:
            for b in res.info["blocks"]:
                print(f"  block {b['name']}: {b['n_params']} params, top-{b['top_k']} by {b['method']}, "
                      f"{b['n_hvp']} HVPs, lambda_max(H_bb) = "
                      f"{res.eigen[res.eigen.block == b['name']].eigenvalue.max():.4g}")
            print(f"  whole network lambda_max = {res.eigen[res.eigen.block.isna()].eigenvalue.max():.4g}")


if __name__ == "__main__":
    main()
