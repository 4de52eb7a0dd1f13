"""``varprinciple collect CONFIG --out LOGDIR [--workers N] [--threads T] [--device D]
[--executor {local,dask} [--scheduler ADDRESS | --scheduler-file FILE]]``."""

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
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="runs in parallel, one process each (default 1); with --executor dask, the "
                        "processes of the LocalCluster it starts; results do not depend on it")
    p.add_argument("--threads", type=int, default=1, metavar="T",
                   help="torch threads per run (default 1); results are bitwise reproducible for a given T")
    p.add_argument("--device", default="cpu", metavar="D",
                   help="torch device of training and probes: cpu, cuda, cuda:N, mps (default cpu); "
                        "on a Dask cluster cuda means one worker per GPU")
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local: this machine's process pool (default); dask: a Dask cluster, a "
                        "LocalCluster unless --scheduler/--scheduler-file (needs "
                        "pip install \"varprinciple[dask]\"; docs/cluster.md)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", metavar="ADDRESS", help="address of a running Dask scheduler "
                                                          "(e.g. tcp://10.0.0.1:8786); LOGDIR must be on "
                                                          "storage every worker shares")
    g.add_argument("--scheduler-file", metavar="FILE",
                   help="scheduler file written by `dask scheduler --scheduler-file FILE`")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config and list the runs without training")
    p.set_defaults(func=handler)
    return p


def handler(args: argparse.Namespace) -> int:
    from ..collect.config import load_config
    from ..collect.run import collect, expand_sweep

    cfg = load_config(args.config)
    if args.executor == "dask" and not getattr(args, "verbose", False):
        import logging  # Dask's scheduler and nannies log every start and stop at INFO
        try:
            import distributed  # noqa: F401 - its import sets its loggers' levels; override after
        except ImportError:
            pass  # collect() says how to install it
        for name in ("distributed", "distributed.http.proxy"):
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().getEffectiveLevel()))
    if args.dry_run:
        specs = expand_sweep(cfg)
        print(f"{args.config}: valid; {len(specs)} run{'s' if len(specs) != 1 else ''}:")
        for s in specs:
            print(f"  {s.run_id}")
        return 0
    res = collect(cfg, args.out, workers=1 if args.workers is None else args.workers, threads=args.threads,
                  device=args.device, executor=args.executor, scheduler=args.scheduler,
                  scheduler_file=args.scheduler_file)
    print(f"collect: {len(res.ran)} run{'s' if len(res.ran) != 1 else ''} written, {len(res.skipped)} "
          f"finished run{'s' if len(res.skipped) != 1 else ''} skipped, {res.wall_s:.1f} s")
    print(f"  log set: {res.out}")
    return 0
