"""Benchmark: a probe's peak memory and time as n grows, under one ``memory_budget_mb``.

Run::

    PYTHONPATH=. python benchmarks/bench_scale.py                       # MLP + CNN, n = 6k / 20k / 60k
    PYTHONPATH=. python benchmarks/bench_scale.py --models mlp --sizes 2000 6000   # quicker

Every (model, n) runs in its own subprocess, so its peak RSS (VmHWM) is that probe's alone. ``--data npy`` (the default) writes the inputs to a ``.npy`` file first (in the parent)
and the probe reads them by chunk through ``NpyRows``, so the subprocess never holds them whole;
``--data memory`` passes an in-memory tensor (the inputs then sit outside the budget). Synthetic MNIST-shaped data (float32 inputs 1x28x28, 10 classes from a random linear
teacher); models at initialisation (step 0), float64 probe:

* ``mlp``: 784-128-10 with ``nn.Dropout(0.2)`` after the hidden layer (101,770 parameters);
* ``cnn``: conv(1->8, 3x3)-ReLU-maxpool-conv(8->16, 3x3)-ReLU-maxpool-dropout(0.2)-linear(784->10)
  (9,098 parameters; its activations per sample are ~80x the MLP's).

The probe is a light but complete one (every stage runs: eigsh top-k, sgd + dropout with exact
moments + isotropic, Hutchinson, Tr(HC)), so the stage times and HVP counts can be compared
across n. Printed: per-stage seconds, HVPs, seconds per HVP, the memory plan the probe chose,
peak RSS, and the data's own bytes (the inputs must be held whatever the budget).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn


def make_model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))
    if kind == "cnn":
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Dropout(0.2), nn.Linear(16 * 7 * 7, 10))
    raise SystemExit(f"unknown model {kind!r}")


def make_data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 1, 28, 28, generator=g)
    W = torch.randn(784, 10, generator=g)
    y = (X.reshape(n, -1) @ W).argmax(1)
    return X, y


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of its own address space (Linux). ``ru_maxrss`` is not used
    where VmHWM exists: across fork + exec it keeps the parent's RSS at the fork as a floor."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(kind: str, n: int, budget: float, args) -> dict:
    from varprinciple.collect.probe import ProbeSettings, probe
    from varprinciple.collect.rows import NpyRows
    torch.set_num_threads(args.threads)
    if args.data == "npy":
        X, y = NpyRows(os.path.join(args.data_dir, f"x{n}.npy")), torch.load(os.path.join(args.data_dir, f"y{n}.pt"))
        data_mb = X.nbytes / 2**20
    else:
        X, y = make_data(n)
        data_mb = X.numel() * X.element_size() / 2**20
    data_mb += y.numel() * y.element_size() / 2**20
    model = make_model(kind)
    base = peak_rss_mb()
    s = ProbeSettings(top_k=args.top_k, n_samples=args.draws, n_random=2, batch_size=32, hutchinson_probes=4,
                      tr_hc_samples=4, eig_tol=1e-6, memory_budget_mb=budget)
    marks = {}

    class _StageRSS(logging.Handler):  # peak RSS when each stage starts (= peak of the stages before)
        def emit(self, record):
            msg = record.getMessage()
            if ": " in msg and record.name.endswith("probe"):
                marks[msg.split(": ", 1)[1].split(" ")[0]] = peak_rss_mb()
    lg = logging.getLogger("varprinciple.collect.probe")
    lg.setLevel(logging.INFO)
    lg.addHandler(_StageRSS())
    t = time.perf_counter()
    res = probe(model, "cross_entropy", X, y, settings=s, step=0, generator=torch.Generator().manual_seed(1))
    total = time.perf_counter() - t
    plan = {k: v for k, v in res.info["plan"].items() if k != "summary"}
    return {"model": kind, "n": n, "n_params": res.info["n_params"], "budget_mb": budget,
            "timings": res.timings, "total": total, "n_hvp": res.n_hvp,
            "n_hvp_eigensolver": res.info["n_hvp_eigensolver"], "plan": plan,
            "rss_before_mb": base, "rss_at_stage_start_mb": marks, "peak_rss_mb": peak_rss_mb(),
            "data_mb": data_mb, "data": args.data}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    p.add_argument("--sizes", nargs="+", type=int, default=[6000, 20000, 60000])
    p.add_argument("--budget", type=float, default=256.0, help="memory_budget_mb")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--draws", type=int, default=50, help="noise draws K per source")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", choices=["npy", "memory"], default="npy",
                   help="inputs read from a .npy file by chunk (NpyRows) or held as a tensor")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.budget, args)))
        return 0
    print(f"torch {torch.__version__}, {args.threads} thread(s), budget {args.budget:g} MB, top_k {args.top_k}, "
          f"K {args.draws}, data {args.data}, load average {os.getloadavg()[0]:.1f}")
    tmp = tempfile.TemporaryDirectory(prefix="bench_scale_")
    if args.data == "npy":  # written here, so the probing subprocess never holds the inputs whole
        for n in args.sizes:
            X, y = make_data(n)
            np.save(os.path.join(tmp.name, f"x{n}.npy"), X.numpy())
            torch.save(y, os.path.join(tmp.name, f"y{n}.pt"))
            del X, y
    for kind in args.models:
        rows = []
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--one", kind, str(n), "--budget", str(args.budget), "--top-k",
                   str(args.top_k), "--draws", str(args.draws), "--threads", str(args.threads), "--data", args.data,
                   "--data-dir", tmp.name]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            st = r["timings"]
            print(flush=True); print(f"== {kind} ({r['n_params']:,} parameters), n = {n:,}: total {r['total']:.1f} s, "
                  f"{r['n_hvp']} HVPs ({r['n_hvp_eigensolver']} in eigsh), load average {os.getloadavg()[0]:.1f}")
            print("   stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in st.items() if k != "total"))
            print(f"   plan: HVPs {r['plan']['hessian']} (full graph would be ~{r['plan']['hessian_graph_mb']} MB), "
                  f"dropout data chunk {r['plan'].get('dropout_data_chunk')}, pair chunk "
                  f"{r['plan'].get('dropout_pair_chunk')}; estimated Hessian "
                  f"{r['plan']['seconds_estimate']['hessian']:.1f} s, flatness "
                  f"{r['plan']['seconds_estimate']['flatness']:.1f} s")
            print("   peak RSS before each stage: " + ", ".join(f"{k} {v:.0f} MB"
                                                           for k, v in r["rss_at_stage_start_mb"].items()))
            print(f"   peak RSS {r['peak_rss_mb']:.0f} MB (after imports + data {r['rss_before_mb']:.0f} MB; "
                  f"data itself {r['data_mb']:.0f} MB, {'on disk' if r['data'] == 'npy' else 'in memory'}); "
                  "working memory above that "
                  f"{r['peak_rss_mb'] - r['rss_before_mb']:.0f} MB")
        a, b = rows[0], rows[-1]
        print(f"\n-- {kind}: n x{b['n'] / a['n']:.1f}: peak RSS x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} "
              f"(target <= 1.2), working memory x"
              f"{(b['peak_rss_mb'] - b['rss_before_mb']) / max(a['peak_rss_mb'] - a['rss_before_mb'], 1):.2f}, "
              f"time x{b['total'] / a['total']:.1f}; per stage: "
              + ", ".join(f"{k} x{b['timings'][k] / max(a['timings'][k], 1e-9):.1f}"
                          for k in a["timings"] if k != "total")
              + f"; seconds per eigsh HVP x"
              f"{(b['timings']['hessian'] / max(b['n_hvp_eigensolver'], 1)) / (a['timings']['hessian'] / max(a['n_hvp_eigensolver'], 1)):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
