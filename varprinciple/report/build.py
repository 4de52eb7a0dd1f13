"""Build a report: tables, figures and pages from results (or from a log set via ``analyze``)."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..io import atomic_write_bytes
from ..provenance import REPORT_PACKAGES
from ._input import ReportData, load_results
from .format import ReportTable, render
from .pages import FigureOutput, PageContext, html_page, latex_document, markdown_page
from .tables import build_tables

__all__ = ["ReportFormat", "ReportFile", "ReportResult", "build_report", "parse_formats", "package_versions"]

logger = logging.getLogger(__name__)

#: Packages whose versions every report records.
VERSION_PACKAGES = REPORT_PACKAGES


class ReportFormat(StrEnum):
    """Output formats of the tables (figures are always written as PNG and SVG)."""

    MD = "md"
    TEX = "tex"
    HTML = "html"
    CSV = "csv"


ALL_FORMATS = tuple(ReportFormat)


@dataclass(frozen=True)
class ReportFile:
    """One written file: kind (table, figure, page, results), name, format and path."""

    kind: str
    name: str
    format: str
    path: Path


@dataclass(frozen=True)
class ReportResult:
    """The files a report wrote and the figures it skipped (with reasons).

    Examples
    --------
    >>> r = ReportResult(Path("out"), (ReportFile("page", "report", "html", Path("out/report.html")),), ())
    >>> r.path("page", "report", "html").as_posix()
    'out/report.html'
    >>> r.to_frame()[["kind", "name", "format"]].values.tolist()
    [['page', 'report', 'html']]
    """

    out_dir: Path
    files: tuple[ReportFile, ...]
    skipped_figures: tuple[tuple[str, str], ...]
    results_path: Path | None = None

    def path(self, kind: str, name: str, fmt: str) -> Path:
        """The path of one written file; KeyError when it was not written."""
        for f in self.files:
            if (f.kind, f.name, f.format) == (kind, name, fmt):
                return f.path
        raise KeyError((kind, name, fmt))

    @property
    def html(self) -> Path | None:
        return next((f.path for f in self.files if f.kind == "page" and f.format == "html"), None)

    def to_frame(self) -> pd.DataFrame:
        """One row per written file."""
        return pd.DataFrame([{"kind": f.kind, "name": f.name, "format": f.format, "path": str(f.path)}
                             for f in self.files], columns=["kind", "name", "format", "path"])


def parse_formats(formats: str | Iterable[str] | None) -> tuple[ReportFormat, ...]:
    """Parse ``"md,tex"`` or an iterable of names into formats (all four when None).

    Examples
    --------
    >>> parse_formats("md, csv")
    (<ReportFormat.MD: 'md'>, <ReportFormat.CSV: 'csv'>)
    """
    if formats is None:
        return ALL_FORMATS
    items = [s.strip() for s in formats.split(",")] if isinstance(formats, str) else [str(s).strip() for s in formats]
    items = [s for s in items if s]
    bad = [s for s in items if s not in {f.value for f in ReportFormat}]
    if bad or not items:
        raise InputError(f"`formats` must be a comma-separated subset of {[f.value for f in ReportFormat]}; "
                         f"got {formats!r}.")
    return tuple(dict.fromkeys(ReportFormat(s) for s in items))


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a report depends on (:mod:`varprinciple.provenance`),
    shown as "not installed" for one that is absent."""
    from ..provenance import package_versions as versions
    return {k: "not installed" if v is None else v for k, v in versions(VERSION_PACKAGES).items()}


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _analyze_logset(logdir: Path, out_dir: Path) -> Path:
    """Run the analysis with default settings; write ``out_dir/results.json`` (+ directions)."""
    from ..stats import analyze

    logger.info("analysing log set %s with default settings", logdir)
    res = analyze(logdir)  # before creating out_dir: a bad log set leaves nothing behind
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    res.write(json_path)
    return json_path


def _draw_figures(data: ReportData, fig_dir: Path, *, dpi: int) -> tuple[list[FigureOutput], list[ReportFile]]:
    import matplotlib

    from .figures import FIGURES, available_inputs, missing_inputs
    from .figures.registry import INPUTS

    have = available_inputs(data)
    outs: list[FigureOutput] = []
    files: list[ReportFile] = []
    for spec in FIGURES.values():
        missing = missing_inputs(spec, have)
        if missing:
            reason = "needs " + "; ".join(INPUTS[m] for m in missing)
            logger.info("figure %s skipped: %s", spec.name, reason)
            outs.append(FigureOutput(spec.name, spec.title, spec.caption, skipped=reason))
            continue
        if spec.build is None:
            reason = "its inputs are present but no builder is registered yet"
            outs.append(FigureOutput(spec.name, spec.title, spec.caption, skipped=reason))
            continue
        with matplotlib.rc_context({"svg.hashsalt": "varprinciple", "font.size": 8}):
            fig = spec.build(data)
            png, svg = fig_dir / f"{spec.name}.png", fig_dir / f"{spec.name}.svg"
            fig_dir.mkdir(parents=True, exist_ok=True)
            fig.savefig(png, dpi=dpi, metadata={"Software": None})
            fig.savefig(svg, metadata={"Date": None})
        outs.append(FigureOutput(spec.name, spec.title, spec.caption, png=png, svg=svg))
        files += [ReportFile("figure", spec.name, "png", png), ReportFile("figure", spec.name, "svg", svg)]
    return outs, files


def _analysis_notes(data: ReportData) -> tuple[str, ...]:
    """The analysis' own notes plus a warning for runs with identical noise tables."""
    notes = [str(n) for n in data.results.get("notes") or []]
    for ids in data.results.get("identical") or []:
        notes.append("Runs " + ", ".join(map(str, ids)) + " have identical noise tables: they are not independent "
                     "replicates.")
    return tuple(notes)


def _design_statement(data: ReportData) -> dict[str, str]:
    """What a reader needs to judge the design, from the results alone: replicates, what was
    randomised, margins, multiplicity and exclusions (machine and wall time live with the
    collection; ``varprinciple study --study`` adds them on its study page)."""
    res, st = data.results, data.settings or {}
    groups: dict[str, int] = {}
    for g in res.get("groups") or []:
        if isinstance(g, dict):
            lab = str(g.get("group_label") or g.get("group"))
            groups[lab] = max(groups.get(lab, 0), int(g.get("n_runs") or 0))
    runs = {str(r.get("run_id")) for r in res.get("relations") or [] if isinstance(r, dict)}
    excluded: dict[str, int] = {}
    for r in res.get("relations") or []:
        for k, v in ((r.get("excluded") or {}) if isinstance(r, dict) else {}).items():
            excluded[k] = excluded.get(k, 0) + int(v or 0)
    margin = st.get("equivalence_margin")
    out = {
        "Replicates": (f"{len(runs)} runs in {len(groups)} groups ("
                       + ", ".join(f"{k}: {v}" for k, v in groups.items()) + "); runs (seeds) are the replicates"
                       if groups else f"{len(runs)} runs"),
        "Randomised": "per run: initialisation, minibatch order, dropout masks (training seed), noise draws and "
                      f"random directions (probe seed); the statistics' resampling: seed {st.get('seed')}, "
                      f"{st.get('resamples')} resamples",
        "Analysed step": "each run's last probe step" if st.get("step") is None else str(st.get("step")),
        "Equivalence margin": "none declared (no TOST)" if margin is None else f"±{margin:g} (exponent units)",
        "Multiplicity": str(st.get("multiplicity", "Holm within each quantity's confirmatory family")),
        "Exclusions": (f"{len(res.get('skipped') or [])} runs left out; directions excluded from the fits: "
                       + (", ".join(f"{k} {v}" for k, v in sorted(excluded.items()) if v) or "none")
                       + (f"; {len(res.get('identical'))} sets of identical runs" if res.get("identical") else "")),
    }
    return out


def _default_command(location: str, out_dir: Path, formats: tuple[ReportFormat, ...]) -> str:
    fmts = ",".join(f.value for f in formats)
    return (f"python -c \"from varprinciple.report import build_report; "
            f"build_report({location!r}, {str(out_dir)!r}, formats={fmts!r})\"")


def _build_report_iv(results: Any, out_dir: Any, formats: Any, dpi: Any):
    if out_dir is None or not isinstance(out_dir, (str, os.PathLike)):
        raise InputError(f"`out_dir` must be a path; got {type(out_dir).__name__}.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory (the report's --out).")
    if not isinstance(dpi, int) or isinstance(dpi, bool) or not 30 <= dpi <= 600:
        raise InputError(f"`dpi` must be an integer in [30, 600]; got {dpi!r}.")
    return out, parse_formats(formats)


def build_report(results: Any, out_dir: str | os.PathLike, *, formats: str | Iterable[str] | None = None,
                 directions: Any = None, figures: bool = True, command: str | None = None, dpi: int = 110,
                 title: str = "Variance principle report") -> ReportResult:
    """Write tables, figures and pages for analysis results.

    Parameters
    ----------
    results : path, dict or results object
        A results JSON of ``varprinciple test`` (JSON output v1; its per-direction table
        must lie beside it, see :func:`varprinciple.results.directions_path`), a log-set directory (analysed with
        default settings; ``results.json`` and its per-direction table are written into
        ``out_dir``), a results dict, or an object with ``to_json_dict()``.
    out_dir : path
        Output directory (created): ``tables/<name>.{md,tex,csv}``, ``figures/<name>.{png,svg}``,
        ``report.md``, ``report.tex``, ``report.html`` depending on ``formats``.
    formats : str or iterable of str, optional
        Subset of ``md, tex, html, csv`` (default: all). Figures are always written.
    directions : path or DataFrame, optional
        The per-direction table, when not beside the JSON (or for an in-memory dict).
    figures : bool, optional
        Draw the figures (default); False writes tables and pages only.
    command : str, optional
        The command line to record in the pages (the CLI passes its own).
    dpi : int, optional
        Resolution of the PNG figures.
    title : str, optional
        Page title.

    Returns
    -------
    ReportResult

    Examples
    --------
    >>> import tempfile
    >>> res = {"schema_version": 1, "settings": {"confidence": 0.95, "alpha": 0.05},
    ...        "relations": [{"run_id": "r0", "method": "sgd", "group": "sgd", "source": "sgd",
    ...                       "basis": "hessian", "step": 10, "slope": 0.98, "ci_low": 0.8,
    ...                       "ci_high": 1.16, "p_value": 1e-5, "n_directions": 20}],
    ...        "groups": [{"group": "sgd", "source": "sgd", "step": 10, "slope": 0.98,
    ...                    "ci_low": 0.8, "ci_high": 1.16, "p_value": 0.0004, "n_runs": 1}]}
    >>> with tempfile.TemporaryDirectory() as d:
    ...     r = build_report(res, d, formats="md,csv")
    ...     print(r.path("table", "groups", "md").read_text().splitlines()[4])
    | sgd | sgd | 10 | 0.98 [0.80, 1.16] | < .001 | 1 |
    """
    out, fmts = _build_report_iv(results, out_dir, formats, dpi)
    if not isinstance(figures, bool):
        raise InputError(f"`figures` must be True or False; got {figures!r}.")
    results_path = None
    if isinstance(results, (str, os.PathLike)) and Path(results).is_dir():
        results_path = _analyze_logset(Path(results), out)
        data = load_results(results_path)
        data = ReportData(data.results, data.directions, str(Path(results).resolve()), data.results_path,
                          data.directions_path)
    else:
        data = load_results(results, directions=directions)
    out.mkdir(parents=True, exist_ok=True)
    files: list[ReportFile] = []
    if results_path is not None:
        files.append(ReportFile("results", "results", "json", results_path))

    tables: list[ReportTable] = build_tables(data)
    tab_dir = out / "tables"
    for t in tables:
        for fmt in fmts:
            if fmt == ReportFormat.HTML:
                continue  # tables live in the HTML page
            p = tab_dir / f"{t.name}.{fmt.value}"
            _write_text(p, render(t, fmt.value))
            files.append(ReportFile("table", t.name, fmt.value, p))

    if figures:
        fig_outs, fig_files = _draw_figures(data, out / "figures", dpi=dpi)
        files += fig_files
    else:
        fig_outs = []

    ctx = PageContext(
        title=title,
        command=command or _default_command(data.location, out, fmts),
        location=data.location,
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        versions=package_versions(),
        settings=data.settings,
        provenance=data.results.get("provenance") or {},
        notes=_analysis_notes(data),
        design=_design_statement(data),
        results=data.results,
    )
    if ReportFormat.MD in fmts:
        p = out / "report.md"
        _write_text(p, markdown_page(ctx, tables, fig_outs, out_dir=out))
        files.append(ReportFile("page", "report", "md", p))
    if ReportFormat.TEX in fmts:
        p = out / "report.tex"
        _write_text(p, latex_document(ctx, tables, fig_outs, out_dir=out))
        files.append(ReportFile("page", "report", "tex", p))
    if ReportFormat.HTML in fmts:
        p = out / "report.html"
        _write_text(p, html_page(ctx, tables, fig_outs))
        files.append(ReportFile("page", "report", "html", p))
    skipped = tuple((f.name, f.skipped) for f in fig_outs if f.skipped is not None)
    logger.info("report written to %s (%d files; %d figures skipped)", out, len(files), len(skipped))
    return ReportResult(out, tuple(files), skipped, results_path)


