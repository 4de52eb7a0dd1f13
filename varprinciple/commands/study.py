"""``varprinciple study [--out DIR]``: the built-in default study, collected and tested."""

from __future__ import annotations

import argparse

__all__ = ["register", "handler"]


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "study",
        help="run the built-in default study: digits MLP, GD vs SGD vs dropout at matched training loss, 5 seeds; "
             "collect and test",
        description="Collect the built-in default study (varprinciple/collect/default_study.toml: a digits "
                    "MLP trained by GD, SGD and dropout, 5 seeds each, every run stopped at a common training "
                    "loss, probed with SGD, dropout and isotropic noise), then run `varprinciple test` on it "
                    "and print the findings with their caveats first. Writes DIR/logs (the log set) "
                    "and DIR/results.json (+ results.directions.parquet). Re-running resumes. With --study "
                    "MANIFEST: a study manifest instead (docs/study.md), e.g. the replication study "
                    "studies/replication.toml.")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default ./study; with --study: reports/<name>[-quick])")
    p.add_argument("--study", default=None, metavar="MANIFEST",
                   help="run a study manifest (e.g. studies/replication.toml): collect every experiment, test "
                        "it, write the claims table and the report (docs/study.md)")
    p.add_argument("--quick", action="store_true",
                   help="with --study: the manifest's quick configs (a pipeline check of a few minutes)")
    p.add_argument("--design", action="store_true",
                   help="with --study: print the declared design's power and minimum detectable effect, run nothing")
    p.add_argument("--render", action="store_true",
                   help="with --study: redo the claims table, design statement and study page from OUT's "
                        "committed results (OUT/results/*.json, OUT/study.json); collect and analyse nothing")
    p.add_argument("--experiment", action="append", default=None, metavar="NAME",
                   help="with --study: only this experiment (repeatable)")
    p.add_argument("--config", default=None, metavar="CONFIG",
                   help="use this config instead of the built-in default study")
    p.add_argument("--fixed-steps", action="store_true",
                   help="the built-in study's fixed-step variant: every run stops at step 1500 whatever its "
                        "training loss (flatness NOT at matched loss; the default stops every run at a common "
                        "[train] target_loss)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="runs in parallel (default: min(2, CPU count))")
    p.add_argument("--device", default="cpu", metavar="D", help="torch device (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the statistics' resampling (default 0; with --study: the manifest's [study] seed)")
    p.set_defaults(func=handler)
    return p


def _manifest_handler(args: argparse.Namespace) -> int:
    from ..study.manifest import load_manifest
    from ..study.runner import run_manifest, study_design

    m = load_manifest(args.study)
    if args.design:
        d = study_design(m)
        print(d.summary() if d is not None else f"{m.path}: no [power] section")
        return 0
    if args.render:
        from ..study.runner import render_manifest
        out = args.out or f"reports/{m.name}" + ("-quick" if args.quick else "")
        res = render_manifest(m, out, quick=args.quick)
        print(f"study {m.name}: claims, design and page redone from {res.out / 'results'} in {res.wall_s:.1f} s")
        print(f"  report: {res.page}")
        return 0
    command = (f"varprinciple study --study {args.study}" + (" --quick" if args.quick else "")
               + (f" --out {args.out}" if args.out else "")
               + "".join(f" --experiment {x}" for x in args.experiment or []))
    res = run_manifest(m, args.out, quick=args.quick, workers=args.workers, device=args.device,
                       experiments=args.experiment, command=command)
    from ..report.study_page import claims_markdown, summarize_claims
    print("Findings (per claim: pooled random-effects estimate over its units, verdict counts):")
    for s in summarize_claims(res.claims, confidence=m.confidence):
        print(f"  {s.sentence(m.confidence)}")
    print()
    if res.design is not None:
        print(res.design.summary())
    print(claims_markdown(res.claims, confidence=m.confidence))
    print(f"study {m.name}{' (quick)' if args.quick else ''}: {res.wall_s:.1f} s")
    print(f"  claims: {res.out / 'claims.csv'}")
    if res.page is not None:
        print(f"  report: {res.page}")
    return 0


def handler(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if args.study is not None:
        return _manifest_handler(args)
    if args.quick or args.design or args.experiment or args.render:
        raise ConfigError("--quick, --design, --render and --experiment need --study MANIFEST")
    if args.fixed_steps and args.config:
        raise ConfigError("--fixed-steps selects a built-in config; it cannot be combined with --config")
    from ..study.default import run_study

    args.out = args.out or "study"

    res = run_study(args.out, config=args.config, workers=args.workers, device=args.device,
                    seed=args.seed, fixed_steps=args.fixed_steps)
    if res.results is not None:
        import json

        from ..report.findings import findings_text
        print(findings_text(json.loads(res.results.read_text(encoding="utf-8"))))
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
