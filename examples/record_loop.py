"""Record probes from inside your own training loop with varprinciple's Recorder.

    python examples/record_loop.py LOGDIR      # then: varprinciple test LOGDIR

Every 10 steps the network is probed where it stands (Hessian eigenpairs, SGD and dropout noise,
isotropic control) and LOGDIR/loop-seed<s> is rewritten: the same log set as `varprinciple
collect` writes (run.json with checkpoint fingerprints, checkpoints/step_<n>.pt, the tables).
Run by tests/test_recorder.py.
"""

from __future__ import annotations

import sys

import torch
from sklearn.datasets import load_digits
from torch import nn

from varprinciple.collect.probe import ProbeSettings
from varprinciple.collect.recorder import Recorder

SETTINGS = ProbeSettings(top_k=6, n_samples=60, batch_size=16, n_random=3, hutchinson_probes=4, tr_hc_samples=4)


def digits(n=300):
    d = load_digits()
    return torch.tensor(d.data[:n] / 16.0, dtype=torch.float32), torch.tensor(d.target[:n])


def train(logdir, *, seed=0, steps=30, every=10, stop_after=None):
    """Train a small dropout MLP with SGD, recording every ``every`` steps; ``stop_after``
    interrupts the loop (a job killed mid-run: a new call on the same LOGDIR resumes)."""
    X, y = digits()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Dropout(0.1), nn.Linear(24, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    rec = Recorder(model, "cross_entropy", X, y, out=f"{logdir}/loop-seed{seed}", every=every, seed=seed,
                   method="sgd+dropout", settings=SETTINGS, meta={"lr": 0.5, "batch_size": 32, "drop_prob": 0.1})
    g = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        model.train()
        idx = torch.randperm(len(X), generator=g)[:32]
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
        rec.step(step)
        if stop_after is not None and step == stop_after:
            break
    return rec, model


if __name__ == "__main__":
    for s in (0, 1):
        train(sys.argv[1], seed=s)
