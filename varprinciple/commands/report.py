"""``varprinciple report INPUT --out DIR [--format md,tex,html,csv]``."""

from __future__ import annotations

import argparse
import shlex

__all__ = ["register", "handler"]


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="write tables (Markdown, LaTeX, CSV), figures (PNG, SVG) and an HTML page from results",
        description="Write report tables, figures and a self-contained HTML page from the results JSON of "
                    "`varprinciple test --json` (its .directions.parquet beside it), or from a log-set "
                    "directory (analysed with default settings; results.json is written into --out).")
    p.add_argument("input", metavar="RESULTS_OR_LOGDIR", help="results JSON (v1) or log-set directory")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--format", default="md,tex,html,csv", metavar="FORMATS",
                   help="comma-separated subset of md,tex,html,csv (default: all); figures are always written")
    p.add_argument("--no-figures", action="store_true", help="write tables and pages only")
    p.add_argument("--dpi", type=int, default=110, help="PNG resolution (default 110)")
    p.set_defaults(func=handler)
    return p


def handler(args: argparse.Namespace) -> int:
    from ..report import build_report

    argv = ["varprinciple", "report", args.input, "--out", args.out, "--format", args.format]
    if args.no_figures:
        argv.append("--no-figures")
    if args.dpi != 110:
        argv += ["--dpi", str(args.dpi)]
    res = build_report(args.input, args.out, formats=args.format, dpi=args.dpi, figures=not args.no_figures, command=shlex.join(argv))
    print(f"report: {len(res.files)} files written to {res.out_dir}")
    if res.html is not None:
        print(f"  HTML: {res.html}")
    for name, why in res.skipped_figures:
        print(f"  figure {name} skipped: {why}")
    return 0
