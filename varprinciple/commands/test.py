"""``varprinciple test LOGDIR``: analyse a log set, print a summary, write JSON output v1."""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "handler"]

logger = logging.getLogger(__name__)


def register(subparsers) -> argparse.ArgumentParser:
    from ..stats.analysis import DEFAULT_RESAMPLES
    from ..stats.defaults import ALPHA, CONFIDENCE
    p = subparsers.add_parser(
        "test", help="test the variance principle on a log set",
        description="Per-run exponent b of noise variance vs Hessian eigenvalue, group means over runs, "
                    "comparisons (Holm, TOST). See docs/statistics.md.")
    p.add_argument("logdir", metavar="LOGDIR", help="log-set directory (runs with run.json below it)")
    p.add_argument("--json", metavar="OUT", default=None,
                   help="write JSON output v1 here and its per-direction table beside it (OUT minus .json, + "
                        ".directions.parquet)")
    p.add_argument("--confidence", type=float, default=CONFIDENCE, help=f"two-sided interval level (default {CONFIDENCE})")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"TOST level (default {ALPHA})")
    p.add_argument("--equivalence-margin", type=float, default=None, metavar="DELTA",
                   help="equivalence margin for slope comparisons, in exponent units (enables TOST)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling statistics (default 0)")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, metavar="N",
                   help=f"Haar rotations (isotropy test) and permutations (curvature test): 0 (off) or >= 99 "
                        f"(default {DEFAULT_RESAMPLES})")
    p.add_argument("--group-by", default=None, metavar="KEYS",
                   help="comma-separated run.json keys defining groups (dotted paths allowed)")
    p.add_argument("--step", type=int, default=None, help="probe step for groups (default: each run's last)")
    p.add_argument("--compare", action="append", default=None, metavar="'A vs B'",
                   help="declared comparison 'GROUP[:SOURCE] vs GROUP[:SOURCE]' (repeatable)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="analyse the valid runs and list the invalid ones")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=handler)
    return p


def handler(args: argparse.Namespace) -> int:
    from ..stats import analyze
    from ..results import check_output_path

    if args.json:
        check_output_path(args.json)
    res = analyze(args.logdir, confidence=args.confidence, alpha=args.alpha,
                  equivalence_margin=args.equivalence_margin, seed=args.seed, resamples=args.resamples,
                  group_by=args.group_by, step=args.step, compare=args.compare,
                  skip_invalid=args.skip_invalid, progress=False if args.no_progress else None)
    from ..report.findings import findings_text
    print(findings_text(res.to_json_dict()))
    print(res.summary(caveats=False))  # the findings block above shows every caveat once
    if args.json:
        jp, dp = res.write(args.json)
        print(f"\nwrote {jp} and {dp}")
    return 0
