"""Load what a report is built from: the results JSON (v1) and its per-direction table.

The report never recomputes statistics: it reads the JSON output v1 of ``varprinciple test``
(or runs :func:`varprinciple.stats.analyze` on a log set and reads the same dict) and the
per-direction table written beside the JSON. Both files' contract (version, fields, the
path of the table, validation) is owned by :mod:`varprinciple.results`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..results import DIRECTIONS_REQUIRED, RESULTS_SCHEMA_VERSION, check_directions, check_results
from ..results import directions_path as directions_path_for
from ..results import directions_path_of, read_directions, read_results_json

__all__ = ["ReportData", "load_results", "directions_path_for", "DIRECTIONS_COLUMNS", "RESULTS_SCHEMA_VERSION",
           "read_results_json", "read_directions"]

logger = logging.getLogger(__name__)

#: Columns of the per-direction table the report needs (owned by :mod:`varprinciple.results`).
DIRECTIONS_COLUMNS = DIRECTIONS_REQUIRED


@dataclass(frozen=True, eq=False)
class ReportData:
    """The inputs of one report.

    Attributes
    ----------
    results : dict
        JSON output v1 (``schema_version``, ``settings``, ``provenance``, ``relations``,
        ``groups``, ``comparisons``, ``skipped`` and optional keys such as ``flatness``).
    directions : pandas.DataFrame or None
        The per-direction table (one row per run, step, source, block, basis, direction).
    location : str
        Where the results came from (a path, or a description for in-memory results).
    results_path, directions_path : Path or None
        The files read, when read from files.
    """

    results: dict
    directions: pd.DataFrame | None
    location: str
    results_path: Path | None = None
    directions_path: Path | None = None

    @property
    def settings(self) -> dict:
        return self.results.get("settings") or {}

    @property
    def confidence(self) -> float | None:
        c = self.settings.get("confidence")
        return None if c is None else float(c)

    @property
    def alpha(self) -> float | None:
        a = self.settings.get("alpha")
        return None if a is None else float(a)

    def rows(self, key: str) -> list[dict]:
        """The list stored under ``key`` (empty when absent or null)."""
        return list(self.results.get(key) or [])


def load_results(results: Any, *, directions: Any = None) -> ReportData:
    """Load a report's inputs from a results JSON path, or from an in-memory results dict.

    Parameters
    ----------
    results : path or dict
        A results JSON file (its per-direction table must lie beside it), or the dict of
        JSON output v1 (e.g. ``analyze(...).to_json_dict()``).
    directions : path, DataFrame or None, optional
        The per-direction table; defaults to the file beside a results JSON. For an
        in-memory dict it may be omitted (the variance figures are then skipped).

    Returns
    -------
    ReportData

    Examples
    --------
    >>> d = load_results({"schema_version": 1, "relations": []})
    >>> d.location, d.directions is None
    ('<in-memory results>', True)
    """
    if isinstance(results, (str, os.PathLike)):
        rpath = Path(results)
        res = read_results_json(rpath)
        if isinstance(directions, pd.DataFrame):
            ddf, dpath = check_directions(directions, "directions"), None
        else:
            dpath = Path(directions) if directions is not None else directions_path_of(rpath, res)
            ddf = read_directions(dpath)
        return ReportData(res, ddf, str(rpath.resolve()), rpath.resolve(),
                          dpath.resolve() if dpath is not None else None)
    if hasattr(results, "to_json_dict") and callable(results.to_json_dict):
        results = results.to_json_dict()
    res = check_results(results, "results")
    if directions is None:
        return ReportData(res, None, "<in-memory results>")
    if isinstance(directions, pd.DataFrame):
        return ReportData(res, check_directions(directions, "directions"), "<in-memory results>")
    if isinstance(directions, (str, os.PathLike)):
        return ReportData(res, read_directions(directions), "<in-memory results>", None,
                          Path(directions).resolve())
    raise InputError(f"`directions` must be a path, a DataFrame or None; got {type(directions).__name__}.")
