"""GPU check of ``varprinciple collect --device cuda`` (issue 10): run by scripts/gpu_check.sh.

1. A tiny sweep (digits MLP, float64; methods gd, sgd, dropout, sgd+dropout) collected on
   cpu and on cuda with the local executor; every table of every run compared, each float
   column at float64 tolerance (``rtol``/``atol`` below), and the largest differences kept.
2. If ``distributed`` imports: the same sweep with ``--executor dask`` on a one-GPU
   LocalCluster (worker resources GPU=1); its tables must equal the local cuda ones bit for bit.
3. A small timing: one digits-sweep-sized sgd run (top-20, 1,000 noise samples) on cpu and cuda.
4. User models on the device (issue 9): a small transformer classifier with a dict output
   (attention on the math SDPA kernel inside the probe), probed on cpu and on cuda with its
   inputs as a tensor, as ``NpyRows`` (read from a .npy file by chunk) and under a 1 MB budget
   that chunks the HVPs (7 chunks) and the dropout draws; sgd + dropout (exact moments) + isotropic; the eigenvalues, the
   exact variances and the SGD noise must equal the cpu probe's (dropout and isotropic draws
   use the same CPU generator, so they must too).

``GPU_CHECK_DEVICE=cpu GPU_CHECK_TIMING=0`` rehearses the script without a GPU (cpu against cpu: everything
must be equal), which is how it was tested before any GPU was lent.

Writes ``OUT/gpu_check.json`` and prints one line per comparison; exit 1 on any failure.
Training runs with dropout draw their training masks from the device's random stream
(CUDA's Philox vs the CPU's Mersenne twister, varprinciple/collect/train.py), so their
cpu/cuda tables are expected to differ; they are reported, not failed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

RTOL, ATOL = 1e-7, 1e-10
DEV = os.environ.get("GPU_CHECK_DEVICE", "cuda")
TINY = """
[data]
name = "digits"
n_train = 200
n_test = 50

[model]
widths = [16, 16]

[train]
method = ["gd", "sgd", "dropout", "sgd+dropout"]
seed = [0]
steps = 60
batch_size = 16
lr = 0.05
log_every = 10
dtype = "float64"

[probe]
every = 30
top_k = 5
n_samples = 200
n_random = 3
hutchinson_probes = 8
tr_hc_samples = 8
"""
TIMING = """
[data]
name = "digits"
n_train = 1000

[model]
widths = [50, 50]

[train]
method = "sgd"
seed = [0]
steps = 500
batch_size = 16
lr = 0.1

[probe]
every = 250
top_k = 20
n_samples = 1000
batch_size = 32
"""
TABLES = ("eigen.parquet", "noise.parquet", "flatness.parquet", "exact_variance.parquet", "training.parquet")
SKIP_COLS = {"elapsed_s"}


def compare(a: Path, b: Path) -> dict:
    """Largest abs./rel. differences per table; ``ok`` when every float column is allclose."""
    out = {"ok": True, "tables": {}}
    for f in TABLES:
        if not (a / f).exists() and not (b / f).exists():
            continue
        ta, tb = pd.read_parquet(a / f), pd.read_parquet(b / f)
        row = {"rows": [len(ta), len(tb)], "max_abs": 0.0, "max_rel": 0.0, "ok": len(ta) == len(tb)}
        if row["ok"]:
            for c in ta.columns:
                if c in SKIP_COLS:
                    continue
                x, y = ta[c].to_numpy(), tb[c].to_numpy()
                if x.dtype == object and len(x) and isinstance(x[0], (list, np.ndarray)):  # eigenvectors
                    x, y = np.abs(np.stack(x).astype(float)), np.abs(np.stack(y).astype(float))  # sign-free
                if np.issubdtype(np.asarray(x).dtype, np.floating):
                    d = np.abs(x - y)
                    row["max_abs"] = max(row["max_abs"], float(np.nanmax(d, initial=0.0)))
                    rel = d / np.maximum(np.abs(y), ATOL)
                    row["max_rel"] = max(row["max_rel"], float(np.nanmax(rel, initial=0.0)))
                    row["ok"] &= bool(np.allclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True))
                else:
                    row["ok"] &= bool(pd.Series(x).equals(pd.Series(y)))  # NaN-aware
        out["tables"][f] = row
        out["ok"] &= row["ok"]
    return out


def bitwise(a: Path, b: Path) -> bool:
    for f in TABLES:
        if (a / f).exists():
            ta, tb = pd.read_parquet(a / f), pd.read_parquet(b / f)
            ta, tb = ta.drop(columns=[c for c in SKIP_COLS if c in ta]), tb.drop(columns=[c for c in SKIP_COLS if c in tb])
            try:
                pd.testing.assert_frame_equal(ta, tb, check_exact=True)
            except AssertionError:
                return False
    return True


def user_model_checks(report: dict, work: Path) -> None:
    """Check 4: a dict-output transformer probed on the device, tensor / NpyRows / chunked inputs."""
    import torch
    from torch import nn

    from varprinciple.collect.probe import ProbeSettings, probe
    from varprinciple.collect.rows import NpyRows

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(11, 8)
            self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
            self.layer.self_attn.dropout = 0.0  # functional attention dropout: refused by the dropout source
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return {"logits": self.head(self.layer(self.emb(x)).mean(1))}

    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, 11, (96, 6), generator=g)
    y = X[:, 0] % 3
    np.save(work / "tokens.npy", X.numpy())
    base = dict(top_k=3, n_samples=40, batch_size=8, n_random=2, hutchinson_probes=4, tr_hc_samples=4)
    cases = [("cpu (reference)", "cpu", "tensor", 2048), (DEV, DEV, "tensor", 2048), (f"{DEV} NpyRows", DEV, "npy", 2048),
             (f"{DEV} NpyRows chunked", DEV, "npy", 1.0)]
    out: dict = {}
    ref = None
    for label, dev, kind, budget in cases:
        try:
            t0 = time.perf_counter()
            XX = NpyRows(work / "tokens.npy") if kind == "npy" else X.to(dev)
            res = probe(Tokens().to(dev), "cross_entropy", XX, y.to(dev), step=0,
                        generator=torch.Generator().manual_seed(1),
                        settings=ProbeSettings(memory_budget_mb=budget, **base))
            vals = {"eigenvalue": res.eigen["eigenvalue"].to_numpy(),
                    "exact_variance": res.exact_variance["variance"].to_numpy(),
                    "noise": res.noise["value"].to_numpy()}
            row = {"wall_s": round(time.perf_counter() - t0, 2), "hessian_chunk": res.info["plan"]["hessian_chunk"],
                   "lambda": [round(float(v), 8) for v in vals["eigenvalue"]]}
            if ref is None:
                ref = vals
            else:
                for k, v in vals.items():
                    if k == "noise" and budget != 2048:  # chunked dropout draws pair masks differently
                        continue
                    rel = float(np.max(np.abs(v - ref[k]) / np.maximum(np.abs(ref[k]), 1e-12)))
                    row[f"max_rel_{k}"] = rel
                    if not np.allclose(v, ref[k], rtol=RTOL, atol=ATOL):
                        report["failures"].append(f"user model {label}: {k} differs from cpu (max rel {rel:.1e})")
            out[label] = row
            print(f"user model {label:24s} ok; lambda {row['lambda']}, {row['wall_s']} s", flush=True)
        except Exception as exc:  # noqa: BLE001 (report, do not stop the other checks)
            msg = " ".join(str(exc).split())[:300]
            out[label] = {"error": f"{type(exc).__name__}: {msg}"}
            report["failures"].append(f"user model {label}: {type(exc).__name__}: {msg}")
            print(f"user model {label:24s} FAIL: {type(exc).__name__}: {msg}", flush=True)
    report["user_model"] = out


def main() -> int:
    import torch

    from varprinciple.collect.config import load_config
    from varprinciple.collect.run import collect
    out = Path(os.environ.get("OUT") or "gpu_check_out")
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/varprinciple_gpu_check"))
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (work / "tiny.toml").write_text(TINY)
    (work / "timing.toml").write_text(TIMING)
    report: dict = {"torch": torch.__version__, "cuda": torch.version.cuda,
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "rtol": RTOL, "atol": ATOL, "runs": {}, "failures": []}
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU {report['gpu']}", flush=True)
    if DEV == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check", flush=True)
        return 1
    cfg = load_config(work / "tiny.toml")
    res = {}
    for dev in ("cpu", "cuda"):
        t0 = time.perf_counter()
        r = collect(cfg, work / f"tiny-{dev}", device=DEV if dev == "cuda" else "cpu", threads=1, progress=False)
        res[dev] = r
        report[f"tiny_wall_s_{dev}"] = round(time.perf_counter() - t0, 2)
    for rid in res["cpu"].run_ids:
        c = compare(work / "tiny-cpu" / rid, work / "tiny-cuda" / rid)
        meta = json.loads((work / "tiny-cuda" / rid / "run.json").read_text())
        c["device_in_run_json"] = meta.get("device")
        expected_to_differ = "dropout" in rid and DEV == "cuda"
        c["expected_to_differ"] = expected_to_differ
        report["runs"][rid] = c
        status = "ok" if c["ok"] else ("differs (expected: device dropout masks)" if expected_to_differ else "FAIL")
        worst = max(c["tables"].values(), key=lambda t: t["max_rel"])
        print(f"cpu vs cuda {rid:32s} {status}; largest rel. diff {worst['max_rel']:.2e}, "
              f"run.json device {c['device_in_run_json']}", flush=True)
        if not c["ok"] and not expected_to_differ:
            report["failures"].append(f"cpu vs cuda {rid}")
        if not str(c["device_in_run_json"]).startswith(DEV):
            report["failures"].append(f"{rid}: run.json device {c['device_in_run_json']}")
    try:
        import distributed  # noqa: F401
    except ImportError:
        report["dask"] = "distributed not installed: skipped"
        print("dask: distributed not installed, skipped", flush=True)
    else:
        t0 = time.perf_counter()
        collect(cfg, work / "tiny-dask-cuda", device=DEV, threads=1, executor="dask", workers=1,
                progress=False)
        same = {rid: bitwise(work / "tiny-cuda" / rid, work / "tiny-dask-cuda" / rid) for rid in res["cpu"].run_ids}
        report["dask"] = {"bitwise_equal_to_local_cuda": same, "wall_s": round(time.perf_counter() - t0, 2)}
        print(f"dask (1 GPU worker) vs local cuda, bit for bit: {same}", flush=True)
        report["failures"] += [f"dask cuda {rid}" for rid, ok in same.items() if not ok]
    user_model_checks(report, work)
    tcfg = load_config(work / "timing.toml")
    for dev in ("cpu", "cuda") if os.environ.get("GPU_CHECK_TIMING", "1") != "0" else ():
        for threads in ((1, 8) if dev == "cpu" else (1,)):
            t0 = time.perf_counter()
            collect(tcfg, work / f"timing-{dev}-{threads}", device=DEV if dev == "cuda" else "cpu", threads=threads, progress=False)
            wall = time.perf_counter() - t0
            m = json.loads(next((work / f"timing-{dev}-{threads}").glob("*/run.json")).read_text())
            report[f"timing_{dev}_threads{threads}"] = {"wall_s": round(wall, 2), **{k: round(v, 2) for k, v
                                                                                    in m["wall_s"].items()}}
            print(f"timing {dev} threads={threads}: {wall:.1f} s (run.json wall_s {m['wall_s']})", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print("FAILURES: " + "; ".join(report["failures"]) if report["failures"] else "ALL OK", flush=True)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
