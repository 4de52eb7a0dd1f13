"""Benchmark of `varprinciple test` against a bare baseline measured in the same run.

Log set: 200 runs x 50 Hessian directions x 1,000 samples = 10 million noise rows (one
source, one step), written once by ``varprinciple simulate`` and cached.

Stages, each in its own Python subprocess so that peak memory (ru_maxrss) is its own:

* ``baseline``: pyarrow reads every noise.parquet and computes the variance (ddof = 1) of
  ``value`` grouped by (step, source, basis, direction) with pyarrow's group_by/aggregate;
* ``test0``:    ``analyze(logdir, resamples=0)`` (what ``varprinciple test --resamples 0`` runs);
* ``test``:     ``analyze(logdir)`` with its defaults;
* ``cli0``:     the CLI ``varprinciple test LOGDIR --resamples 0 --json OUT`` (optional, ``--cli``);
* ``read``:     ``io.read_logset`` alone, the reading + validation part of test0 (``--breakdown``).

Targets (issue 2): test0 <= 3x baseline, test <= 20x baseline, peak memory <= 3 GB;
the resampling cost is reported per 1,000 resamples: (test - test0) / (resamples / 1000).

Usage::

    python benchmarks/bench_test.py [--cache DIR] [--repeat 3] [--cli] [--breakdown]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_RUNS, N_DIRS, N_SAMPLES = 200, 50, 1000


def build(cache: Path) -> Path:
    """Write (once) the 10-million-row log set under ``cache``; return its path."""
    out = cache / f"logset-{N_RUNS}x{N_DIRS}x{N_SAMPLES}"
    marker = out / ".complete"
    if marker.exists():
        return out
    import numpy as np

    from varprinciple.simulate import simulate

    t = time.perf_counter()
    simulate(out, methods={"sgd": 1.0, "dropout": 0.8}, runs_per_method=N_RUNS // 2, sources=("sgd",),
             n_directions=N_DIRS, n_samples=N_SAMPLES, n_nonpositive=2, overwrite=True,
             rng=np.random.default_rng(0))
    marker.write_text("ok\n")
    print(f"built {out} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def stage(name: str, logdir: Path) -> dict:
    """Run one stage in this process and return its wall time and peak RSS."""
    if name == "baseline":
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        t = time.perf_counter()
        n_rows = n_groups = 0
        for f in sorted(logdir.rglob("noise.parquet")):
            tab = pq.read_table(f)
            agg = tab.group_by(["step", "source", "basis", "direction"]).aggregate(
                [("value", "variance", pc.VarianceOptions(ddof=1))])
            n_rows += tab.num_rows
            n_groups += agg.num_rows
        wall = time.perf_counter() - t
        extra = {"rows": n_rows, "groups": n_groups}
    elif name in ("test0", "test"):
        from varprinciple.stats import analyze

        kw = {"resamples": 0} if name == "test0" else {}
        t = time.perf_counter()
        res = analyze(logdir, seed=0, **kw)
        wall = time.perf_counter() - t
        settings = res.to_json_dict()["settings"]
        extra = {"relations": int(len(res.relations)), "resamples": settings.get("resamples")}
    elif name == "read":
        from varprinciple.io import read_logset

        t = time.perf_counter()
        ls = read_logset(logdir)
        wall = time.perf_counter() - t
        extra = {"runs": len(ls.runs)}
    elif name == "cli0":
        from varprinciple.cli import main

        out = Path(tempfile.mkdtemp()) / "out.json"
        t = time.perf_counter()
        rc = main(["-q", "test", str(logdir), "--resamples", "0", "--json", str(out)])
        wall = time.perf_counter() - t
        extra = {"rc": rc}
    else:  # pragma: no cover
        raise SystemExit(f"unknown stage {name}")
    return {"stage": name, "wall_s": wall, "peak_mb": _peak_mb(), **extra}


def _run_stage(name: str, logdir: Path) -> dict:
    cmd = [sys.executable, __file__, "--stage", name, "--logdir", str(logdir)]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"stage {name} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "varprinciple-bench",
                    help="where the synthetic log set is cached")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per stage; the minimum is reported")
    ap.add_argument("--cli", action="store_true", help="also time the CLI with --resamples 0")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time io.read_logset alone (reading + validating the log set)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--logdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        print(json.dumps(stage(args.stage, args.logdir)))
        return 0
    logdir = build(args.cache)
    stages = ["baseline", "test0", "test"] + (["cli0"] if args.cli else []) + (["read"] if args.breakdown else [])
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name in stages:  # interleaved, so drifts in machine load hit all stages alike
            r = _run_stage(name, logdir)
            if name not in best or r["wall_s"] < best[name]["wall_s"]:
                best[name] = {**r, "peak_mb": max(r["peak_mb"], best.get(name, {}).get("peak_mb", 0.0))}
    base = best["baseline"]["wall_s"]
    resamples = best["test"].get("resamples")
    print(f"log set: {logdir} ({best['baseline']['rows']:,} noise rows, {N_RUNS} runs)")
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; best of {args.repeat}")
    print(f"{'stage':<10} {'wall (s)':>9} {'x baseline':>11} {'target':>7} {'peak RSS (MB)':>14}")
    targets = {"baseline": None, "test0": 3.0, "test": 20.0, "cli0": 3.0, "read": None}
    for name in stages:
        r = best[name]
        ratio = r["wall_s"] / base
        tgt = targets[name]
        flag = "" if tgt is None else ("  ok" if ratio <= tgt else "  MISSED")
        print(f"{name:<10} {r['wall_s']:>9.2f} {ratio:>11.2f} {'' if tgt is None else f'<= {tgt:g}x':>7} "
              f"{r['peak_mb']:>14.0f}{flag}")
    peak = max(r["peak_mb"] for r in best.values())
    print(f"peak memory over all stages: {peak:.0f} MB (target <= 3072 MB){'' if peak <= 3072 else '  MISSED'}")
    if resamples:
        per1000 = (best["test"]["wall_s"] - best["test0"]["wall_s"]) / (resamples / 1000.0)
        print(f"resampling: defaults use {resamples} resamples; cost {per1000:.2f} s per 1,000 resamples "
              f"for {N_RUNS} runs ({1000 * per1000 / N_RUNS:.1f} ms per run per 1,000 resamples)")
    print(json.dumps({k: v for k, v in best.items()}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
