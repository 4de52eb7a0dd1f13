"""Load what a report is built from: the results JSON (v1) and its per-direction table.

The report never recomputes statistics: it reads the JSON output v1 of ``varprinciple test``
(or runs :func:`varprinciple.stats.analyze` on a log set and reads the same dict) and the
per-direction table ``<stem>.directions.parquet`` written beside the JSON.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError

__all__ = ["ReportData", "load_results", "directions_path_for", "DIRECTIONS_COLUMNS", "RESULTS_SCHEMA_VERSION"]

logger = logging.getLogger(__name__)

RESULTS_SCHEMA_VERSION = 1
#: Columns of the per-direction table the report needs (the rest are kept).
DIRECTIONS_COLUMNS = ("run_id", "source", "basis", "step", "direction", "eigenvalue", "variance", "included")
_LIST_KEYS = ("relations", "groups", "comparisons", "skipped")


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


def directions_path_for(json_path: str | os.PathLike) -> Path:
    """The per-direction table beside a results JSON: same stem + ``.directions.parquet``.

    Examples
    --------
    >>> directions_path_for("out/results.json").as_posix()
    'out/results.directions.parquet'
    """
    p = Path(json_path)
    return p.with_name(p.stem + ".directions.parquet")


def _check_results(results: Any, where: str) -> dict:
    if not isinstance(results, Mapping):
        raise InputError(f"{where}: results must be a JSON object; got {type(results).__name__}.")
    version = results.get("schema_version")
    if version is None:
        raise InputError(f"{where}: key 'schema_version' missing; not JSON output v1 of `varprinciple test`.")
    if version != RESULTS_SCHEMA_VERSION:
        raise InputError(f"{where}: key 'schema_version' is {version!r}; this report reads JSON output "
                         f"v{RESULTS_SCHEMA_VERSION}.")
    for key in _LIST_KEYS:
        val = results.get(key)
        if val is not None and not isinstance(val, list):
            raise InputError(f"{where}: key {key!r} must be a list; got {type(val).__name__}.")
        if val is not None and any(not isinstance(r, Mapping) for r in val):
            raise InputError(f"{where}: key {key!r} must be a list of objects.")
    for key in ("settings", "provenance"):
        val = results.get(key)
        if val is not None and not isinstance(val, Mapping):
            raise InputError(f"{where}: key {key!r} must be an object; got {type(val).__name__}.")
    if "relations" not in results:
        raise InputError(f"{where}: key 'relations' missing; not JSON output v1 of `varprinciple test`.")
    return dict(results)


def _check_directions(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in DIRECTIONS_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{where}: column {missing[0]!r} missing from the per-direction table"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "") + ".")
    df = df.copy()
    for col in ("block", "group", "method", "reason"):
        if col not in df.columns:
            df[col] = None
    df["included"] = df["included"].astype(bool)
    return df


def read_results_json(path: str | os.PathLike) -> dict:
    """Read and check a results JSON (v1); errors name the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory.")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a results JSON file.")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({str(exc).splitlines()[0]}).") from None
    return _check_results(results, str(path))


def read_directions(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a per-direction table; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: per-direction table not found (`varprinciple test --json` writes it "
                         "beside the JSON).")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise InputError(f"{path}: cannot read the per-direction table "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}).") from None
    return _check_directions(df, str(path))


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
            ddf, dpath = _check_directions(directions, "directions"), None
        else:
            dpath = Path(directions) if directions is not None else directions_path_for(rpath)
            ddf = read_directions(dpath)
        return ReportData(res, ddf, str(rpath.resolve()), rpath.resolve(),
                          dpath.resolve() if dpath is not None else None)
    if hasattr(results, "to_json_dict") and callable(results.to_json_dict):
        results = results.to_json_dict()
    res = _check_results(results, "results")
    if directions is None:
        return ReportData(res, None, "<in-memory results>")
    if isinstance(directions, pd.DataFrame):
        return ReportData(res, _check_directions(directions, "directions"), "<in-memory results>")
    if isinstance(directions, (str, os.PathLike)):
        return ReportData(res, read_directions(directions), "<in-memory results>", None,
                          Path(directions).resolve())
    raise InputError(f"`directions` must be a path, a DataFrame or None; got {type(directions).__name__}.")
