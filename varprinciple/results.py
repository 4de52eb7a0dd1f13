"""Results contract v1: the one owner of ``varprinciple test``'s JSON and per-direction table.

:mod:`varprinciple.schema` owns the *log* contract (what collectors write); this module owns
the *results* contract (what the analysis writes and the report reads): the version, the
fields every row of each results list carries, the per-direction table's columns and
dtypes, the rule that places that table beside the JSON, (de)serialisation, and the
validation the report applies on reading. Both :mod:`varprinciple.stats` and
:mod:`varprinciple.report` import it; it imports neither (nor torch).
``docs/statistics.md`` describes the fields in prose.

The per-direction table of ``OUT`` is ``OUT`` with a trailing ``.json`` (any case) removed
and ``.directions.parquet`` appended: ``r.json`` -> ``r.directions.parquet``,
``r.out`` -> ``r.out.directions.parquet``, ``r`` -> ``r.directions.parquet``. The JSON also
names its table (key ``directions_file``, a name in the JSON's folder), which readers prefer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from . import io as vio
from .errors import InputError

__all__ = [
    "RESULTS_SCHEMA_VERSION",
    "RELATION_FIELDS",
    "GROUP_FIELDS",
    "COMPARISON_FIELDS",
    "COMPARISON_COLUMNS",
    "FLATNESS_FIELDS",
    "FLATNESS_COLUMNS",
    "GAMMA_FIELDS",
    "DIRECTION_COLUMNS",
    "DIRECTION_TYPES",
    "DIRECTIONS_REQUIRED",
    "DIRECTIONS_SUFFIX",
    "RESULTS_LIST_KEYS",
    "SETTINGS_FIELDS",
    "RANDOM_REASON",
    "directions_path",
    "directions_path_of",
    "check_output_path",
    "to_records",
    "int_or_null",
    "results_dict",
    "directions_table",
    "write_results",
    "check_results",
    "check_directions",
    "read_results_json",
    "read_directions",
]

RESULTS_SCHEMA_VERSION = 1

#: Fields every ``relations`` row carries (one row per run x step x source x block,
#: Hessian basis). Extra fields are welcome; these may not change meaning.
RELATION_FIELDS = (
    "run_id", "method", "group", "network", "source", "basis", "step", "block",
    "slope", "ci_low", "ci_high", "p_value", "intercept", "se_slope", "se_intercept", "cov_intercept_slope",
    "df", "scatter_var", "sampling_se", "spearman_r", "spearman_p",
    "n_directions", "n_hessian", "n_excluded", "excluded", "n_samples", "n_random",
    "ratio", "ratio_ci_low", "ratio_ci_high", "ratio_df", "alignment_k", "isotropy_p", "alignment_p",
    "alignment_n", "curvature_p",
    # issue 17: the rare-large-draw diagnostic (the largest share of a direction's sum of squares
    # carried by one draw, its Bonferroni p under Gaussian draws, whether the probe's source was
    # flagged) and the row's caveats in plain words (null when none)
    "max_draw_share", "draw_share_p", "rare_draw_source", "note",
    # isotropy_p is max(rotation p, jackknife p) since issue 17; the rotation test's own p; the
    # Spearman r of the directions' kurtosis with lambda (tails changing along the spectrum)
    "isotropy_p_rotation", "kurtosis_spearman_r",
    # issue 19: what b was fitted from -- "draws" (the sampled draws' variances) or "exact" (the
    # exact per-direction variances, dropout's two-mask estimate, with the jackknife over its
    # exact_groups groups of samples; null otherwise)
    "variance_input", "exact_groups",
    # the tail rule of isotropy_p (stats/isotropy.py): draws beyond 4.5 robust SDs and the
    # smaller permutation p of their concentration across directions at 4.5 and 3.5 robust SDs
    # (null without resamples)
    "tail_draws", "tail_concentration_p",
)
#: Fields every ``groups`` row carries (group x source x block at the analysed step).
GROUP_FIELDS = (
    "group", "group_label", "source", "block", "step", "steps", "control",
    "slope", "ci_low", "ci_high", "p_value", "se", "sd", "df", "n_runs", "n_runs_total", "n_networks",
    "meta_slope", "meta_ci_low", "meta_ci_high", "meta_tau2", "mean_intercept", "mean_ratio",
    "mean_alignment_k", "run_ids",
    # issue 17: robust companions of the t test (median with its order-statistic interval,
    # one-sided Wilcoxon signed-rank and sign p for b > 0), the outlying networks, and the
    # row's caveats (null when none)
    "median", "median_ci_low", "median_ci_high", "signrank_p", "sign_p", "outlier_networks", "note",
)
#: Columns of ``AnalysisResult.comparisons`` (one row per compared pair of units).
COMPARISON_COLUMNS = (
    "quantity", "label_a", "key_a", "source_a", "label_b", "key_b", "source_b", "block", "step",
    "paired", "difference", "ci_low", "ci_high", "p_value", "p_adjusted", "confirmatory", "se",
    "df", "n_a", "n_b", "margin", "tost_p", "equivalent", "tost_ci_low", "tost_ci_high", "tost_p_adjusted",
    "equivalent_adjusted", "effect_size", "effect_size_ci_low", "effect_size_ci_high", "effect_size_kind",
    "prob_superiority", "prob_superiority_ci_low", "prob_superiority_ci_high", "prob_superiority_empirical",
    "prob_superiority_method", "note",
) + (
    # flatness comparisons (log_lambda_max, log_hessian_trace) at matched loss, null on other
    # rows: the groups' geometric-mean training losses, their log ratio, whether they differ
    # by more than the tolerance (with a note), runs that missed the target loss, and the
    # loss-adjusted group difference (stats.matched; docs/flatness.md)
    "loss_a", "loss_b", "loss_log_ratio", "loss_mismatch", "loss_note", "n_unmatched_a", "n_unmatched_b",
    "adjusted_difference", "adjusted_ci_low", "adjusted_ci_high", "adjusted_p_value", "adjusted_slope",
)
#: Fields every ``comparisons`` row of the JSON carries: the frame's, with each side's
#: label/key/source gathered in ``group_a`` / ``group_b`` objects.
COMPARISON_FIELDS = ("quantity", "group_a", "group_b") + tuple(
    c for c in COMPARISON_COLUMNS if c[:-2] not in ("label", "key", "source") and c != "quantity")
#: Columns of ``AnalysisResult.flatness`` (group x quantity x source x block). Quantities: the
#: probes' (``lambda_max``, ``hessian_trace``, ``rho``, ...), ``psi``, ``curvature_alignment``
#: and the per-run outcomes of :mod:`varprinciple.stats.outcomes` (``test_accuracy``,
#: ``generalisation_gap``, ``filter_width``), whose comparisons have quantities
#: ``test_accuracy``, ``generalisation_gap`` and ``log_filter_width`` (docs/statistics.md).
FLATNESS_COLUMNS = ("group", "group_key", "quantity", "source", "block", "step", "estimate", "ci_low",
                    "ci_high", "p_value", "null", "log_mean", "log_ci_low", "log_ci_high", "n_runs", "note")
#: Fields every ``flatness`` row of the JSON carries.
FLATNESS_FIELDS = tuple("group_label" if c == "group" else "group" if c == "group_key" else c
                        for c in FLATNESS_COLUMNS)

#: Fields of each row of the optional top-level ``gamma`` list (one per run x layer with a
#: ``diagonal.parquet``; varprinciple.stats.gamma): gamma (Theil-Sen slope of log c_ii on log
#: h_ii), gamma_ols, intercept, spearman_r, n_params sampled, n_used (h_ii > 0, c_ii > 0),
#: n_h_nonpositive, frac_h_nonpositive, n_c_zero, decades of h_ii used, note. Its group rows are
#: ``flatness`` rows with quantity ``gamma`` / ``gamma_ols`` and source ``sgd`` (null 1).
GAMMA_FIELDS = ("run_id", "group", "block", "step", "gamma", "gamma_ols", "intercept", "spearman_r", "n_params",
                "n_used", "n_h_nonpositive", "frac_h_nonpositive", "n_c_zero", "decades", "note")

#: Top-level keys holding lists (absent or null reads as empty).
#: Fields every ``settings`` object carries (the analysis' options as used). ``seed`` is the seed
#: given (null: fresh entropy was asked for); ``seed_entropy`` is the integer every resampling
#: stream was derived from -- the seed itself, or ``numpy.random.SeedSequence().entropy`` drawn
#: for ``seed=None`` -- so that ``analyze(..., seed=seed_entropy)`` reproduces the numbers.
SETTINGS_FIELDS = ("confidence", "alpha", "equivalence_margin", "seed", "seed_entropy", "resamples", "group_by",
                   "step", "compare", "skip_invalid", "floor_rel", "residual_factor")
RESULTS_LIST_KEYS = ("relations", "groups", "comparisons", "flatness", "skipped", "identical", "notes")
_OBJECT_LIST_KEYS = ("relations", "groups", "comparisons", "flatness", "skipped")

#: ``reason`` of random directions in the per-direction table (they never enter the fit).
RANDOM_REASON = "random"
#: The per-direction table: one row per run, step, source, block, basis, direction.
DIRECTION_TYPES: dict[str, pa.DataType] = {
    "run_id": pa.string(), "method": pa.string(), "group": pa.string(), "source": pa.string(),
    "basis": pa.string(), "step": pa.int64(), "block": pa.string(), "direction": pa.int64(),
    "eigenvalue": pa.float64(), "residual": pa.float64(), "variance": pa.float64(),
    "n_samples": pa.int64(), "included": pa.bool_(), "reason": pa.string(),
}
DIRECTION_COLUMNS = tuple(DIRECTION_TYPES)
#: Columns a reader of the per-direction table needs (others are filled with null).
DIRECTIONS_REQUIRED = ("run_id", "source", "basis", "step", "direction", "eigenvalue", "variance", "included")
DIRECTIONS_SUFFIX = ".directions.parquet"


# ============================================================================ paths


def directions_path(json_path: str | os.PathLike) -> Path:
    """The per-direction table written beside ``json_path``.

    A trailing ``.json`` (any case) is replaced by ``.directions.parquet``; any other name
    gets ``.directions.parquet`` appended, so distinct JSON names never share a table.

    Examples
    --------
    >>> directions_path("out/result.json").as_posix()
    'out/result.directions.parquet'
    >>> directions_path("x/r.out").as_posix()
    'x/r.out.directions.parquet'
    """
    p = Path(json_path)
    stem = p.name[:-5] if p.name.lower().endswith(".json") and len(p.name) > 5 else p.name
    return p.with_name(stem + DIRECTIONS_SUFFIX)


def check_output_path(json_path: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless the results can be written at ``json_path``
    (checked before a long analysis, so that it is not lost)."""
    p = Path(json_path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory; `--json` wants a file path such as {p / 'results.json'}.")
    if p.name.endswith(DIRECTIONS_SUFFIX):
        raise InputError(f"{p}: a results JSON may not end in {DIRECTIONS_SUFFIX!r} (its per-direction "
                         "table is written beside it under that suffix).")
    # the directory is created on writing: its nearest existing ancestor must be a writable directory
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"{p}: {anc} is not a directory.")
    if not os.access(anc, os.W_OK):
        raise InputError(f"{p}: directory {anc} is not writable.")


# ============================================================================ writing


def _missing(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and not np.isfinite(x))


def int_or_null(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Make ``column`` nullable Int64 (in place), so that an integer column holding None
    (e.g. runs' last steps differ) stays integer instead of becoming float with NaN."""
    if column in df.columns:
        df[column] = df[column].astype("Int64")
    return df


def to_records(df: pd.DataFrame) -> list[dict]:
    """DataFrame rows as JSON-ready dicts (NaN/NA -> None, numpy scalars -> Python).

    Examples
    --------
    >>> to_records(pd.DataFrame({"a": [1, 2], "b": [0.5, float("nan")]}))
    [{'a': 1, 'b': 0.5}, {'a': 2, 'b': None}]
    """
    out = []
    for rec in df.to_dict(orient="records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, np.integer):
                v = int(v)
            elif isinstance(v, (np.floating, float)):
                v = float(v) if np.isfinite(v) else None
            elif isinstance(v, np.bool_):
                v = bool(v)
            elif v is pd.NA or v is pd.NaT:
                v = None
            clean[k] = v
        out.append(clean)
    return out


def _excluded_counts(row: dict) -> dict:
    """``n_excluded_<reason>`` fields gathered into one ``excluded`` object."""
    return {k[len("n_excluded_"):]: (row.get(k) or 0) for k in row if k.startswith("n_excluded_")}


def results_dict(*, relations: pd.DataFrame, groups: pd.DataFrame, comparisons: pd.DataFrame,
                 flatness: pd.DataFrame, settings: Mapping, provenance: Mapping, skipped: list,
                 identical: list, notes: list, directions_file: str | None = None,
                 extra: Mapping | None = None) -> dict:
    """JSON output v1 as a dict from the analysis' frames (undefined values are None).

    ``extra`` adds top-level keys (new analyses add their own lists here).
    """
    rel = to_records(relations)
    for r in rel:
        r["excluded"] = _excluded_counts(r)
    grp = to_records(groups.rename(columns={"group": "group_label"}))
    for g in grp:
        g["group"] = g.pop("group_key", None)
    flat = to_records(flatness.rename(columns={"group": "group_label"}))
    for g in flat:
        g["group"] = g.pop("group_key", None)
    comps = []
    for c in to_records(comparisons):
        for side in ("a", "b"):
            c[f"group_{side}"] = {"group": c.pop(f"key_{side}"), "label": c.pop(f"label_{side}"),
                                  "source": c.pop(f"source_{side}"), "block": c.get("block")}
        comps.append(c)
    out = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "settings": dict(settings),
        "provenance": dict(provenance),
        "skipped": list(skipped),
        "identical": [list(x) for x in identical],
        "notes": list(notes),
        "relations": rel,
        "groups": grp,
        "comparisons": comps,
        "flatness": flat,
    }
    if directions_file is not None:
        out["directions_file"] = directions_file
    for k, v in (extra or {}).items():
        if k in out:
            raise ValueError(f"extra results key {k!r} would overwrite a contract key")
        out[k] = v
    return out


def directions_table(d: pd.DataFrame) -> pa.Table:
    """The per-direction frame as an Arrow table with the documented column order and dtypes."""
    arrays = []
    for name, typ in DIRECTION_TYPES.items():
        col = d[name].to_numpy() if name in d else np.array([], dtype=object)
        if typ == pa.float64():
            v = col.astype(float)
            arrays.append(pa.array(v, mask=~np.isfinite(v), type=typ))
        elif typ == pa.string():
            arrays.append(pa.array([None if _missing(x) else str(x) for x in col], type=typ))
        else:
            arrays.append(pa.array(col, type=typ))
    return pa.Table.from_arrays(arrays, names=list(DIRECTION_COLUMNS))


def write_results(json_path: str | os.PathLike, results: Mapping,
                  directions: pd.DataFrame | pa.Table) -> tuple[Path, Path]:
    """Write the JSON at ``json_path`` and its per-direction table beside it (both atomic).

    The table goes first, so a JSON on disk always has its table. Returns both paths.
    """
    p = Path(json_path)
    check_output_path(p)
    dp = directions_path(p)
    table = directions if isinstance(directions, pa.Table) else directions_table(directions)
    body = dict(results)
    body["directions_file"] = dp.name
    try:
        vio.write_table(dp, table)
        vio.write_json(p, body)
    except OSError as exc:
        raise InputError(f"{p}: cannot write the results ({exc.strerror or exc}).") from None
    return p, dp


# ============================================================================ reading


def check_results(results: Any, where: str) -> dict:
    """Check the structure of a results dict (JSON output v1); errors name ``where`` and the key.

    Examples
    --------
    >>> check_results({"schema_version": 1, "relations": []}, "r.json")["relations"]
    []
    """
    if not isinstance(results, Mapping):
        raise InputError(f"{where}: results must be a JSON object; got {type(results).__name__}.")
    version = results.get("schema_version")
    if version is None:
        raise InputError(f"{where}: key 'schema_version' missing; not JSON output v1 of `varprinciple test`.")
    if version != RESULTS_SCHEMA_VERSION:
        raise InputError(f"{where}: key 'schema_version' is {version!r}; this version of varprinciple reads JSON output "
                         f"v{RESULTS_SCHEMA_VERSION}.")
    for key in RESULTS_LIST_KEYS:
        val = results.get(key)
        if val is not None and not isinstance(val, list):
            raise InputError(f"{where}: key {key!r} must be a list; got {type(val).__name__}.")
        if key in _OBJECT_LIST_KEYS and val is not None and any(not isinstance(r, Mapping) for r in val):
            raise InputError(f"{where}: key {key!r} must be a list of objects.")
    for key in ("settings", "provenance"):
        val = results.get(key)
        if val is not None and not isinstance(val, Mapping):
            raise InputError(f"{where}: key {key!r} must be an object; got {type(val).__name__}.")
    dfile = results.get("directions_file")
    if dfile is not None and (not isinstance(dfile, str) or not dfile or Path(dfile).name != dfile):
        raise InputError(f"{where}: key 'directions_file' must be a file name in the JSON's folder; "
                         f"got {dfile!r}.")
    if "relations" not in results:
        raise InputError(f"{where}: key 'relations' missing; not JSON output v1 of `varprinciple test`.")
    return dict(results)


def check_directions(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check a per-direction table has the columns a reader needs; fill optional ones with null."""
    missing = [c for c in DIRECTIONS_REQUIRED if c not in df.columns]
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
    return check_results(results, str(path))


def directions_path_of(json_path: str | os.PathLike, results: Mapping | None = None) -> Path:
    """Where the per-direction table of a results JSON lies: the file the JSON names
    (``directions_file``), else :func:`directions_path`."""
    p = Path(json_path)
    name = (results or {}).get("directions_file")
    return p.with_name(name) if isinstance(name, str) and name else directions_path(p)


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
    return check_directions(df, str(path))
