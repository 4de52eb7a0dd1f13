"""Pilot of a study manifest: one seed of every arm with the FULL configs (everything else as
declared), to check that each arm reaches its target training loss within its step budget and
to estimate the full study's time (CPU seconds x seeds per arm).

    .venv/bin/python scripts/study_pilot.py studies/replication.toml --out /tmp/pilot [--experiment NAME]

Prints one line per run (target reached?, stop step, train/probe/total seconds) and the
estimate; writes OUT/pilot.json. The pilot changes nothing that the study declares (margins,
claims, seeds); it only measures. docs/study.md records its numbers and command.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
import tomllib
from pathlib import Path

from varprinciple.collect.config import validate_config
from varprinciple.collect.run import collect
from varprinciple.io import write_json
from varprinciple.study import load_manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("--out", required=True)
    ap.add_argument("--experiment", action="append", default=None)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    m = load_manifest(args.manifest)
    out = Path(args.out)
    rows, est_cpu, est_proc = [], 0.0, 0.0
    for e in m.experiments:
        if args.experiment and e.name not in args.experiment:
            continue
        for cfg_path in e.configs:
            raw = tomllib.loads(cfg_path.read_text())
            seeds = raw["train"].get("seed", 0)
            n_seeds = len(seeds) if isinstance(seeds, list) else 1
            raw["train"]["seed"] = [seeds[0] if isinstance(seeds, list) else seeds]
            cfg = validate_config(raw, source=str(cfg_path), base_dir=cfg_path.parent)
            t0, c0 = time.perf_counter(), _cpu()
            res = collect(cfg, out / e.name, workers=args.workers)
            wall, cpu = time.perf_counter() - t0, _cpu() - c0
            # CPU seconds of the whole collect call (this process and its workers): on a shared
            # machine the runs' wall_s is inflated by contention, their CPU time is not
            est_proc += cpu * n_seeds
            for rid in res.run_ids:
                meta = json.loads((out / e.name / rid / "run.json").read_text())
                tgt = meta.get("target") or {}
                w = meta["wall_s"]
                est_cpu += w["total"] * n_seeds
                row = {"experiment": e.name, "run_id": rid, "reached": tgt.get("reached"),
                       "stop_step": tgt.get("stop_step"), "target": tgt.get("loss"),
                       "final_train_loss": meta["final"]["train_loss"], "trained_steps": meta.get("trained_steps"),
                       "train_s": w["train"], "probes_s": w["probes"], "total_s": w["total"], "seeds": n_seeds}
                rows.append(row)
                print(f"{e.name:15s} {rid:40s} reached={row['reached']} stop={row['stop_step']} "
                      f"loss={row['final_train_loss']:.4g} train {w['train']:.1f}s probes {w['probes']:.1f}s "
                      f"total {w['total']:.1f}s", flush=True)
            print(f"  {cfg_path.name}: {len(res.run_ids)} runs in {wall:.1f} s wall, {cpu:.1f} CPU-s "
                  f"(x {n_seeds} seeds: {cpu * n_seeds:.0f} CPU-s)", flush=True)
    summary = {"runs": rows, "estimated_full_cpu_s": est_cpu, "estimated_full_wall_s_2_workers": est_cpu / 2,
               "estimated_full_process_cpu_s": est_proc}
    write_json(out / "pilot.json", summary)
    print(f"estimated full study: {est_cpu:.0f} CPU-s of runs -> about {est_cpu / 2 / 60:.1f} min on 2 workers "
          f"(plus analysis and reports); from the collect calls' CPU time: {est_proc:.0f} CPU-s -> about "
          f"{est_proc / 2 / 60:.1f} min on 2 workers")


def _cpu() -> float:
    """User + system CPU seconds of this process and its waited-for children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


if __name__ == "__main__":
    main()
