"""Run a study manifest: collect every experiment, test it, build the claims table and the report.

``varprinciple study --study studies/replication.toml [--quick] [--out reports/replication]``
= :func:`run_manifest`. Output folder::

    OUT/logs/<experiment>/        log sets (resumable: re-running skips finished runs)
    OUT/results/<experiment>.json results (+ .directions.parquet) of `varprinciple test`
    OUT/experiments/<experiment>/ the per-experiment report (tables, figures, report.html)
    OUT/claims.json, claims.csv   the claims table (unrounded)
    OUT/design.json               power table and MDE of the declared design
    OUT/study.json                design statement: manifest, seeds, machine, wall time, peak memory
    OUT/logs_manifest.json        every log file's path, size and SHA-256 (commit this when the logs are large)
    OUT/report.md, report.html    the study page: findings first (claims + forest plot)
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from .. import provenance
from ..io import write_json
from .claims import ClaimRow, claims_frame, claims_table
from .design import DesignResult, design_summary
from .manifest import StudyManifest, load_manifest

__all__ = ["ManifestResult", "ExperimentRun", "run_experiment", "run_manifest", "render_manifest", "study_design",
           "write_design"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManifestResult:
    """What :func:`run_manifest` wrote and the claims it found."""

    out: Path
    claims: tuple[ClaimRow, ...]
    results: dict
    design: DesignResult | None
    wall_s: float
    page: Path | None

    def to_frame(self):
        return claims_frame(self.claims)


@dataclass(frozen=True)
class ExperimentRun:
    """One experiment collected and tested by :func:`run_experiment`."""

    collected: tuple  # CollectResult per config, in order
    analysis: object  # varprinciple.stats.AnalysisResult
    results: Path  # the results JSON written
    directions: Path  # its per-direction table
    collect_s: float
    analysis_s: float

    @property
    def n_runs(self) -> int:
        return sum(len(c.run_ids) for c in self.collected)

    @property
    def n_ran(self) -> int:
        return sum(len(c.ran) for c in self.collected)


def run_experiment(configs, logs: Path, results: Path, *, workers: int, device: str = "cpu", seed: int | None = 0,
                   resamples: int | None = None, confidence: float | None = None, alpha: float | None = None,
                   equivalence_margin: float | None = None, progress: bool | None = None) -> ExperimentRun:
    """Collect every config of one experiment into the log set ``logs`` (resumable) and test it
    into ``results`` (JSON output v1 + its per-direction table): the one collect -> analyse step
    of a study, used by :func:`run_manifest` for each experiment and by the default study
    (:func:`varprinciple.study.default.run_study`). ``None`` options take the statistics
    defaults (:mod:`varprinciple.stats.defaults`)."""
    from ..collect.config import CollectConfig, load_config
    from ..collect.run import collect
    from ..stats import analyze
    from ..stats.defaults import ALPHA, CONFIDENCE, RESAMPLES

    t0 = time.perf_counter()
    collected = tuple(collect(c if isinstance(c, CollectConfig) else load_config(c), logs, workers=workers,
                              device=device, progress=progress) for c in configs)
    tc = time.perf_counter() - t0
    analysis = analyze(logs, seed=seed, resamples=RESAMPLES if resamples is None else resamples,
                       confidence=CONFIDENCE if confidence is None else confidence,
                       alpha=ALPHA if alpha is None else alpha, equivalence_margin=equivalence_margin,
                       progress=progress)
    json_path, dir_path = analysis.write(results)
    return ExperimentRun(collected, analysis, Path(json_path), Path(dir_path), tc, time.perf_counter() - t0 - tc)


def study_design(m: StudyManifest, rows=None) -> DesignResult | None:
    """The declared design's power table for the rule the claims table applies (None without
    a [power] section): TOST at the ``slope`` margin (and half of it), Holm over the family of
    the equivalence claim that uses that margin — its number of evaluated rows in ``rows`` (a
    claims table) when there are any, else ``[power] family_size``, else 1."""
    p = m.power
    if not p or "sd" not in p or "runs_per_arm" not in p:
        return None
    margins = {k: v for k, v in m.margins.items() if k == "slope"} or dict(m.margins)
    first = next(iter(margins.values()))
    # half the declared margin beside it: what a tighter margin would cost
    margins.update({f"{k}/2": v / 2 for k, v in list(margins.items())})
    family = next((c.family for c in m.claims if c.kind.value == "equivalent" and c.margin == first), None)
    size = int(p.get("family_size") or 1)
    if rows is not None and family is not None:
        counted = sum(1 for r in rows if r.family == family and r.estimate is not None)
        size = counted or size  # no evaluated row yet: the declared size
    return design_summary(sd=float(p["sd"]), n=int(p["runs_per_arm"]), margins=margins, alpha=m.alpha,
                          target_power=float(p.get("target_power", 0.8)), kind=str(p.get("kind", "welch")),
                          seed=m.seed, family_size=size, family=family)


def write_design(path: Path, design: DesignResult) -> None:
    """``design.json``: the power statement, its assumptions (margins, family, test) and table."""
    write_json(path, {"summary": design.summary(), "n": design.n, "sd": design.sd, "mde": design.mde,
                      "kind": design.kind, "alpha": design.alpha, "margins": design.margins,
                      "family": design.family, "family_size": design.family_size,
                      "table": json.loads(design.table.to_json(orient="records"))})


def logs_manifest(logs: Path) -> dict:
    """Path (relative to ``logs``), size and SHA-256 of every file of the log sets, and their total size."""
    import hashlib
    files = []
    for f in sorted(p for p in Path(logs).rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(logs).parts)):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        files.append({"path": f.relative_to(logs).as_posix(), "bytes": f.stat().st_size, "sha256": h.hexdigest()})
    return {"root": "logs", "total_bytes": sum(x["bytes"] for x in files), "files": files}


def _previous_statement(path: Path) -> dict | None:
    """An earlier run's study.json in the output folder (None if absent or unreadable)."""
    try:
        prev = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return prev if isinstance(prev, dict) else None


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0  # Linux: KiB


def _write_claims(out: Path, m: StudyManifest, rows) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "claims.json", {"alpha": m.alpha, "confidence": m.confidence,
                                     "claims": [r.to_dict() for r in rows]})
    claims_frame(rows).to_csv(out / "claims.csv", index=False)


def render_manifest(manifest: str | os.PathLike | StudyManifest, out: str | os.PathLike, *,
                    quick: bool = False) -> ManifestResult:
    """Redo the claims table, the design statement and the study page from a study folder's
    committed results (``OUT/results/<experiment>.json`` and ``OUT/study.json``), collecting
    and analysing nothing (``varprinciple study --study M --out OUT --render``).

    Raises
    ------
    InputError
        When ``OUT/results`` holds no results JSON of the manifest's experiments.
    """
    from ..errors import InputError

    t0 = time.perf_counter()
    m = manifest if isinstance(manifest, StudyManifest) else load_manifest(manifest)
    out = Path(out)
    results = {}
    for e in m.experiments:
        p = out / "results" / f"{e.name}.json"
        if p.is_file():
            results[e.name] = json.loads(p.read_text(encoding="utf-8"))
    if not results:
        raise InputError(f"{out / 'results'}: no results JSON of the manifest's experiments "
                         f"({', '.join(e.name for e in m.experiments)}); run the study first.")
    statement = _previous_statement(out / "study.json") or {}
    rows = claims_table(results, m.claims, alpha=m.alpha, confidence=m.confidence)
    _write_claims(out, m, rows)
    design = study_design(m, rows)
    if design is not None:
        write_design(out / "design.json", design)
    from ..report.study_page import build_study_page
    page = build_study_page(out, m, rows, results, statement, design=design,
                            quick=bool(statement.get("quick", quick)))
    return ManifestResult(out, tuple(rows), results, design, time.perf_counter() - t0, page)


def run_manifest(manifest: str | os.PathLike | StudyManifest, out: str | os.PathLike | None = None, *,
                 quick: bool = False, workers: int | None = None, device: str = "cpu",
                 experiments: list[str] | None = None, report: bool = True, command: str | None = None,
                 progress: bool | None = None) -> ManifestResult:
    """Collect, test and report every experiment of a study manifest.

    Parameters
    ----------
    manifest : path or StudyManifest
    out : path, optional
        Default ``reports/<name>`` (``reports/<name>-quick`` with ``quick``).
    quick : bool
        Use each experiment's quick configs and ``quick_resamples``.
    workers : int, optional
        Default: the manifest's ``workers``.
    experiments : list of str, optional
        Only these experiments (default: all).
    report : bool
        Write the per-experiment reports and the study page.
    """
    t0 = time.perf_counter()
    m = manifest if isinstance(manifest, StudyManifest) else load_manifest(manifest)
    out = Path(out) if out is not None else Path("reports") / (m.name + ("-quick" if quick else ""))
    workers = workers or m.workers
    exps = [m.experiment(n) for n in experiments] if experiments else list(m.experiments)
    resamples = m.quick_resamples if quick else m.resamples
    results: dict[str, dict] = {}
    timing: dict[str, dict] = {}
    n_ran = 0
    previous = _previous_statement(out / "study.json")
    for e in exps:
        ex = run_experiment(e.config_paths(quick), out / "logs" / e.name, out / "results" / f"{e.name}.json",
                            workers=workers, device=device, seed=m.seed, resamples=resamples,
                            confidence=m.confidence, alpha=m.alpha, equivalence_margin=e.equivalence_margin,
                            progress=progress)
        n_ran += ex.n_ran
        results[e.name] = json.loads(ex.results.read_text(encoding="utf-8"))
        timing[e.name] = {"runs": ex.n_runs, "collect_s": ex.collect_s, "analysis_s": ex.analysis_s}
        logger.info("%s: %d runs, collected in %.1f s", e.name, ex.n_runs, ex.collect_s)
    rows = claims_table(results, m.claims, alpha=m.alpha, confidence=m.confidence)
    _write_claims(out, m, rows)
    design = study_design(m, rows)
    if design is not None:
        write_design(out / "design.json", design)
    wall = time.perf_counter() - t0
    statement = {
        "study": m.name, "manifest": str(m.path), "quick": quick, "command": command,
        "created": provenance.created(),
        "machine": {**provenance.machine(), "device": device, "workers": workers, "torch_threads_per_run": 1},
        "wall_s": wall, "peak_rss_mb": _peak_rss_mb(), "experiments": timing,
        "margins": dict(m.margins), "margin_why": dict(m.margin_why), "power": dict(m.power),
        "alpha": m.alpha, "confidence": m.confidence, "resamples": resamples,
        # runs trained by this invocation vs finished runs it found and kept (a resumed study's
        # wall time covers only the former)
        "runs_collected": n_ran, "runs_reused": sum(t["runs"] for t in timing.values()) - n_ran,
    }
    if n_ran == 0 and previous is not None and previous.get("quick") == quick:
        # every run was already collected: the collection's own wall time and memory are the
        # earlier statement's; this invocation only re-analysed (recorded beside them)
        statement["reanalysed"] = {"created": statement["created"], "wall_s": wall,
                                   "peak_rss_mb": statement["peak_rss_mb"]}
        for k in ("created", "wall_s", "peak_rss_mb", "machine", "runs_collected", "runs_reused"):
            if k in previous:
                statement[k] = previous[k]
        for name, t in timing.items():
            old_t = (previous.get("experiments") or {}).get(name) or {}
            if "collect_s" in old_t:
                t["collect_s"] = old_t["collect_s"]
    write_json(out / "study.json", statement)
    write_json(out / "logs_manifest.json", logs_manifest(out / "logs"))
    page = None
    if report:
        from ..report.study_page import build_study_page
        page = build_study_page(out, m, rows, results, statement, design=design, quick=quick)
    return ManifestResult(out, tuple(rows), results, design, wall, page)
