"""Report: tables and figures a paper can use, from the results of ``varprinciple test``.

The report reads JSON output v1 and its per-direction table (or runs the analysis on a log
set and reads the same dict); it formats, it never recomputes statistics. Rounding and
number style live in :mod:`varprinciple.report.format`; figures are registered in
:mod:`varprinciple.report.figures.registry`. See docs/report.md.
"""

from ._input import ReportData, directions_path_for, load_results
from .build import ReportFile, ReportFormat, ReportResult, build_report, package_versions, parse_formats
from .caveats import Caveat, iter_caveats
from .findings import findings_text
from .format import ReportTable
from .tables import build_tables

__all__ = [
    "build_report",
    "ReportResult",
    "ReportFile",
    "ReportFormat",
    "ReportData",
    "ReportTable",
    "load_results",
    "directions_path_for",
    "build_tables",
    "parse_formats",
    "package_versions",
    "Caveat",
    "iter_caveats",
    "findings_text",
]
