"""``varprinciple study [--out DIR]``: the built-in default study, collected and tested."""

from __future__ import annotations

import argparse

__all__ = ["register", "handler"]


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "study",
        help="run the built-in default study: digits MLP, GD vs SGD vs dropout, 5 seeds; collect and test",
        description="Collect the built-in default study (varprinciple/collect/default_study.toml: a digits "
                    "MLP trained by GD, SGD and dropout, 5 seeds each, probed with SGD, dropout and "
                    "isotropic noise), then run `varprinciple test` on it. Writes DIR/logs (the log set) "
                    "and DIR/results.json (+ results.directions.parquet). Re-running resumes.")
    p.add_argument("--out", default="study", metavar="DIR", help="output directory (default ./study)")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="use this config instead of the built-in default study")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="runs in parallel (default: min(2, CPU count))")
    p.add_argument("--device", default="cpu", metavar="D", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the statistics' resampling (default 0)")
    p.set_defaults(func=handler)
    return p


def handler(args: argparse.Namespace) -> int:
    from ..collect.study import run_study

    res = run_study(args.out, config=args.config, workers=args.workers, device=args.device,
                    seed=args.seed)
    if res.summary:
        print(res.summary)
    print(f"study: {len(res.collected.run_ids)} runs in {res.collected.wall_s:.1f} s collection"
          + (f" + {res.analysis_s:.1f} s analysis" if res.results is not None else ""))
    print(f"  log set: {res.logs}")
    if res.results is not None:
        print(f"  results: {res.results}")
        if res.directions is not None:
            print(f"  per-direction table: {res.directions}")
        print(f"  next: varprinciple report {res.results} --out {res.out / 'report'}")
    else:
        print(f"  statistics unavailable ({res.note}); run: varprinciple test {res.logs}")
    return 0
