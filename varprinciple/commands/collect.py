"""``varprinciple collect CONFIG --out LOGDIR [--workers N] [--device D]``."""

from __future__ import annotations

import argparse

__all__ = ["register", "handler"]


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "collect",
        help="train networks and log Hessian eigenpairs and noise samples (a log set)",
        description="Validate a TOML collection config, expand its sweep lists into runs, train and "
                    "probe each, and write one schema-v1 run per configuration into LOGDIR. "
                    "Re-running skips finished runs and redoes unfinished ones. "
                    "See docs/collection.md for every config key.")
    p.add_argument("config", metavar="CONFIG", help="TOML config file")
    p.add_argument("--out", required=True, metavar="LOGDIR", help="log-set directory (created)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="runs in parallel, one process each (default 1); results do not depend on it")
    p.add_argument("--threads", type=int, default=1, metavar="T",
                   help="torch threads per run (default 1); results are bitwise reproducible for a given T")
    p.add_argument("--device", default="cpu", metavar="D", help="torch device (default cpu)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config and list the runs without training")
    p.set_defaults(func=handler)
    return p


def handler(args: argparse.Namespace) -> int:
    from ..collect.config import load_config
    from ..collect.run import collect, expand_sweep

    cfg = load_config(args.config)
    if args.dry_run:
        specs = expand_sweep(cfg)
        print(f"{args.config}: valid; {len(specs)} run{'s' if len(specs) != 1 else ''}:")
        for s in specs:
            print(f"  {s.run_id}")
        return 0
    res = collect(cfg, args.out, workers=args.workers, threads=args.threads, device=args.device)
    print(f"collect: {len(res.ran)} run{'s' if len(res.ran) != 1 else ''} written, {len(res.skipped)} "
          f"finished run{'s' if len(res.skipped) != 1 else ''} skipped, {res.wall_s:.1f} s")
    print(f"  log set: {res.out}")
    return 0
