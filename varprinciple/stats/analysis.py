"""``analyze``: the whole analysis of a log set behind ``varprinciple test``.

Per run x step x source x block (basis hessian): the exponent b with its CI and
one-sided p, Spearman r, exclusions by reason, the Hessian/random variance ratio and
alignment_k with its rotation test. Per group x source x block at one step per run:
mean b over runs. Comparisons between (group, source) units with Holm over the
confirmatory family and optional TOST. Flatness summaries from ``flatness.parquet``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from .. import io as vio
from .._version import __version__
from ..errors import InputError
from ._resampling import Resampler
from .alignment import _alignment_from_cov, _variance_ratio
from .grouping import group_keys, parse_group_by, unique_labels
from .inference import compare_groups, group_test, holm
from .relation import (DEFAULT_FLOOR_REL, DEFAULT_RESIDUAL_FACTOR, ExclusionReason, _fit_core, _nan_fit,
                       exclusion_reasons, spearman)

__all__ = ["analyze", "AnalysisResult", "Quantity", "DEFAULT_RESAMPLES", "CONTROL_SOURCES",
           "MAX_DEFAULT_GROUPS", "parse_compare", "directions_path", "JSON_SCHEMA_VERSION"]

logger = logging.getLogger(__name__)

JSON_SCHEMA_VERSION = 1
#: Default number of resamples (bootstrap replicates of the variance ratio and Haar
#: rotations of the alignment test); see docs/statistics.md for the timing that set it.
DEFAULT_RESAMPLES = 999
#: Noise sources that are controls: compared, reported, never in the confirmatory family.
CONTROL_SOURCES = ("isotropic",)
#: With at most this many non-control units, all their pairs form the default family.
MAX_DEFAULT_GROUPS = 6
#: resampling weights and rotations are held in memory: bound their number
MAX_RESAMPLES = 100_000

_FLATNESS_FILE = "flatness.parquet"


class Quantity(StrEnum):
    """Quantities compared between groups."""

    SLOPE = "slope"
    LOG_LAMBDA_MAX = "log_lambda_max"
    LOG_HESSIAN_TRACE = "log_hessian_trace"


_FLAT_COMPARED = {"lambda_max": Quantity.LOG_LAMBDA_MAX, "hessian_trace": Quantity.LOG_HESSIAN_TRACE}

#: ``reason`` of random directions in the per-direction table (they never enter the fit).
RANDOM_REASON = "random"

DIRECTION_COLUMNS = ("run_id", "method", "group", "source", "basis", "step", "block", "direction",
                     "eigenvalue", "residual", "variance", "n_samples", "included", "reason")


def directions_path(json_path: str | os.PathLike) -> Path:
    """The per-direction table written beside ``json_path``: ``<stem>.directions.parquet``.

    Examples
    --------
    >>> directions_path("out/result.json").as_posix()
    'out/result.directions.parquet'
    """
    p = Path(json_path)
    stem = p.name[:-5] if p.name.endswith(".json") else p.name
    return p.with_name(stem + ".directions.parquet")


def _missing(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and not np.isfinite(x))


def _int_or_null(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """An integer column that may hold None (runs' last steps differ) as nullable Int64,
    so it stays an integer (and null) instead of becoming float with NaN."""
    if column in df.columns:
        df[column] = df[column].astype("Int64")
    return df


def _records(df: pd.DataFrame) -> list[dict]:
    """DataFrame rows as JSON-ready dicts (NaN/NA -> None, numpy scalars -> Python)."""
    out = []
    for rec in df.to_dict(orient="records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, (np.integer,)):
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


@dataclass(frozen=True)
class AnalysisResult:
    """Everything ``varprinciple test`` computes; ``to_json_dict`` gives JSON output v1.

    Attributes
    ----------
    relations : DataFrame
        One row per run x step x source x block (basis hessian).
    groups : DataFrame
        One row per group x source x block at the analysed step.
    comparisons : DataFrame
        One row per compared pair of units (slope and flatness quantities).
    flatness : DataFrame
        Per group x quantity x source x block summaries of ``flatness.parquet``.
    directions : DataFrame
        The per-direction table (one row per run, step, source, block, basis, direction).
    skipped : list of dict
        Invalid runs left out (``--skip-invalid``).
    identical : list of list of str
        Run ids whose noise tables are identical (not independent replicates).
    settings, provenance : dict
    notes : list of str
        Things the reader should know (e.g. no default comparison family).
    """

    relations: pd.DataFrame
    groups: pd.DataFrame
    comparisons: pd.DataFrame
    flatness: pd.DataFrame
    directions: pd.DataFrame
    skipped: list = field(default_factory=list)
    identical: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def to_json_dict(self) -> dict:
        """The JSON output v1 as a dict (undefined values are None)."""
        rel = _records(self.relations)
        for r in rel:
            r["excluded"] = {x.value: r.get(f"n_excluded_{x.value}") or 0 for x in ExclusionReason}
        grp = _records(self.groups.rename(columns={"group": "group_label"}))
        for g in grp:
            g["group"] = g.pop("group_key")
        flat = _records(self.flatness.rename(columns={"group": "group_label"}))
        for g in flat:
            g["group"] = g.pop("group_key")
        comps = []
        for c in _records(self.comparisons):
            for side in ("a", "b"):
                c[f"group_{side}"] = {"group": c.pop(f"key_{side}"), "label": c.pop(f"label_{side}"),
                                      "source": c.pop(f"source_{side}"), "block": c.get("block")}
            comps.append(c)
        return {
            "schema_version": JSON_SCHEMA_VERSION,
            "settings": dict(self.settings),
            "provenance": dict(self.provenance),
            "skipped": list(self.skipped),
            "identical": [list(x) for x in self.identical],
            "notes": list(self.notes),
            "relations": rel,
            "groups": grp,
            "comparisons": comps,
            "flatness": flat,
        }

    def directions_table(self) -> pa.Table:
        """The per-direction table as an Arrow table with the documented dtypes."""
        d = self.directions
        types = {"run_id": pa.string(), "method": pa.string(), "group": pa.string(), "source": pa.string(),
                 "basis": pa.string(), "step": pa.int64(), "block": pa.string(), "direction": pa.int64(),
                 "eigenvalue": pa.float64(), "residual": pa.float64(), "variance": pa.float64(),
                 "n_samples": pa.int64(), "included": pa.bool_(), "reason": pa.string()}
        arrays = []
        for name in DIRECTION_COLUMNS:
            col = d[name].to_numpy() if name in d else np.array([], dtype=object)
            if types[name] == pa.float64():
                v = col.astype(float)
                arrays.append(pa.array(v, mask=~np.isfinite(v), type=pa.float64()))
            elif types[name] == pa.string():
                arrays.append(pa.array([None if _missing(x) else str(x) for x in col], type=pa.string()))
            else:
                arrays.append(pa.array(col, type=types[name]))
        return pa.Table.from_arrays(arrays, names=list(DIRECTION_COLUMNS))

    def write(self, json_path: str | os.PathLike) -> tuple[Path, Path]:
        """Write the JSON and ``<stem>.directions.parquet`` beside it (both atomic)."""
        p = Path(json_path)
        check_output_path(p)
        dp = directions_path(p)
        try:
            vio.write_table(dp, self.directions_table())
            vio.write_json(p, self.to_json_dict())
        except OSError as exc:
            raise InputError(f"{p}: cannot write the results ({exc.strerror or exc}).") from None
        return p, dp

    def summary(self) -> str:
        """A readable summary of the analysis."""
        from ._summary import format_summary
        return format_summary(self)


# ============================================================================ options


def check_output_path(json_path: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless the results can be written at ``json_path``
    (checked before a long analysis, so that it is not lost)."""
    p = Path(json_path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory; `--json` wants a file path such as {p / 'results.json'}.")
    # the directory is created on writing: its nearest existing ancestor must be a writable directory
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"{p}: {anc} is not a directory.")
    if not os.access(anc, os.W_OK):
        raise InputError(f"{p}: directory {anc} is not writable.")


def parse_compare(compare: str | Sequence[str] | None) -> list[tuple[str, str]] | None:
    """Parse ``--compare`` pairs ``"UNIT_A vs UNIT_B"`` (UNIT = ``GROUP`` or ``GROUP:SOURCE``).

    Several pairs may be given as a sequence or separated by ``;``.

    Examples
    --------
    >>> parse_compare("sgd:sgd vs dropout:dropout; sgd vs gd")
    [('sgd:sgd', 'dropout:dropout'), ('sgd', 'gd')]
    """
    if compare is None:
        return None
    items = compare.split(";") if isinstance(compare, str) else [p for c in compare for p in str(c).split(";")]
    pairs = []
    for item in items:
        if not item.strip():
            continue
        parts = item.split(" vs ")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise InputError(f"`compare` pairs must read 'UNIT_A vs UNIT_B' (UNIT = GROUP or GROUP:SOURCE); "
                             f"got {item.strip()!r}.")
        pairs.append((parts[0].strip(), parts[1].strip()))
    if not pairs:
        raise InputError(f"`compare` must name at least one pair 'UNIT_A vs UNIT_B'; got {compare!r}.")
    return pairs


def _analyze_iv(confidence, alpha, equivalence_margin, seed, resamples, step, floor_rel, residual_factor):
    def num(x):
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)

    if not (num(confidence) and 0 < confidence < 1):
        raise InputError(f"`confidence` must be in (0, 1); got {confidence!r}.")
    if not (num(alpha) and 0 < alpha < 0.5):
        raise InputError(f"`alpha` must be in (0, 0.5); got {alpha!r}.")
    if equivalence_margin is not None and not (num(equivalence_margin) and np.isfinite(equivalence_margin)
                                               and equivalence_margin > 0):
        raise InputError(f"`equivalence_margin` must be a positive number (exponent units); "
                         f"got {equivalence_margin!r}.")
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        raise InputError(f"`seed` must be an integer >= 0; got {seed!r}.")
    if not (isinstance(resamples, (int, np.integer)) and not isinstance(resamples, bool) and resamples >= 0):
        raise InputError(f"`resamples` must be an integer >= 0; got {resamples!r}.")
    if 0 < resamples < 99:
        raise InputError(f"`resamples` must be 0 (off) or at least 99; got {resamples!r}.")
    if resamples > MAX_RESAMPLES:
        raise InputError(f"`resamples` must be at most {MAX_RESAMPLES}; got {resamples!r}.")
    if step is not None and not (isinstance(step, (int, np.integer)) and not isinstance(step, bool)
                                 and step >= 0):
        raise InputError(f"`step` must be an integer >= 0; got {step!r}.")
    if not (num(floor_rel) and 0 <= floor_rel < 1):
        raise InputError(f"`floor_rel` must be in [0, 1); got {floor_rel!r}.")
    if not (num(residual_factor) and residual_factor >= 0):
        raise InputError(f"`residual_factor` must be >= 0; got {residual_factor!r}.")


# ============================================================================ per probe


def _probe(run, meta_group: str, blk, conf: float, floor_rel: float, rf: float, B: int,
           resampler: Resampler | None):
    """Relation row + per-direction columns for one noise block."""
    H = blk.is_hessian
    Xh = blk.values[:, H]
    lam = blk.eigenvalue[H]
    res = blk.residual[H]
    reasons = exclusion_reasons(lam, residuals=res, floor_rel=floor_rel, residual_factor=rf)
    inc = np.fromiter((r is None for r in reasons), dtype=bool, count=len(reasons))
    excluded = {r.value: int(np.count_nonzero(reasons == r.value)) for r in ExclusionReason}
    K = blk.n_samples
    n = int(inc.sum())
    if n >= 2:
        fit = _fit_core(Xh[:, inc], np.log(lam[inc]), K, n, int((~inc).sum()), conf, excluded)
    else:
        fit = _nan_fit(n, int((~inc).sum()), K, conf, excluded)
    var_h = blk.variance[H]
    r_s, p_s = spearman(lam, var_h)
    nh = int(H.sum())
    nr = int((~H).sum())
    ratio = (np.nan, np.nan, np.nan)
    if nr > 0 and nh > 0:
        order = np.concatenate([np.flatnonzero(H), np.flatnonzero(~H)])
        vr = _variance_ratio(blk.values[:, order], nh, B, conf, resampler)
        ratio = (vr.estimate, vr.ci_low, vr.ci_high)
    align = (np.nan, np.nan)
    if n >= 2:
        Xi = Xh[:, inc]
        Xc = Xi - Xi.mean(axis=0)
        S = (Xc.T @ Xc) / (K - 1)
        at = _alignment_from_cov(S, lam[inc], K, B, resampler=resampler)
        align = (at.estimate, at.p_value)
    row = {
        "run_id": run.run_id, "method": run.method, "group": meta_group, "source": blk.source,
        "basis": "hessian", "step": int(blk.step), "block": blk.block,
        "slope": fit.slope, "ci_low": fit.ci_low, "ci_high": fit.ci_high, "p_value": fit.p_value,
        "intercept": fit.intercept, "se_slope": fit.se_slope, "se_intercept": fit.se_intercept,
        "cov_intercept_slope": fit.cov_intercept_slope, "df": fit.df, "scatter_var": fit.scatter_var,
        "sampling_se": fit.sampling_se,
        "spearman_r": r_s, "spearman_p": p_s, "n_directions": fit.n_directions,
        "n_hessian": nh, "n_excluded": fit.n_excluded,
        **{f"n_excluded_{k}": v for k, v in excluded.items()},
        "n_samples": K, "n_random": nr,
        "ratio": ratio[0], "ratio_ci_low": ratio[1], "ratio_ci_high": ratio[2],
        "alignment_k": align[0], "alignment_p": align[1], "alignment_n": n if n >= 2 else 0,
    }
    d = blk.values.shape[1]
    reason_all = np.full(d, RANDOM_REASON, dtype=object)
    reason_all[np.flatnonzero(H)] = reasons
    inc_all = np.zeros(d, dtype=bool)
    inc_all[np.flatnonzero(H)[inc]] = True
    cols = {
        "basis": blk.basis, "direction": blk.direction, "eigenvalue": blk.eigenvalue,
        "residual": blk.residual, "variance": blk.variance, "included": inc_all, "reason": reason_all,
        "n": d,
    }
    return row, cols


# ============================================================================ comparisons


@dataclass
class _Unit:
    label: str
    key: dict
    source: str | None
    block: str | None
    values: dict  # run_id -> value

    @property
    def control(self) -> bool:
        return self.source in CONTROL_SOURCES

    @property
    def name(self) -> str:
        return self.label if self.source is None else f"{self.label}:{self.source}"


def _compare_units(a: _Unit, b: _Unit, quantity: str, *, conf, alpha, margin, step) -> dict | None:
    common = sorted(set(a.values) & set(b.values))
    note = None
    if common:
        paired = True
        if set(a.values) != set(b.values):
            note = f"paired on the {len(common)} runs both units share"
        va = np.array([a.values[r] for r in common])
        vb = np.array([b.values[r] for r in common])
    else:
        paired = False
        va = np.array(list(a.values.values()))
        vb = np.array(list(b.values.values()))
    va = va[np.isfinite(va)] if not paired else va
    vb = vb[np.isfinite(vb)] if not paired else vb
    if paired:
        ok = np.isfinite(va) & np.isfinite(vb)
        va, vb = va[ok], vb[ok]
    if va.size == 0 or vb.size == 0:
        return None
    c = compare_groups(va, vb, paired=paired, confidence=conf, alpha=alpha, margin=margin)
    return {
        "quantity": quantity, "label_a": a.label, "key_a": a.key, "source_a": a.source,
        "label_b": b.label, "key_b": b.key, "source_b": b.source, "block": a.block, "step": step,
        "paired": c.paired, "difference": c.difference, "ci_low": c.ci_low, "ci_high": c.ci_high,
        "p_value": c.p_value, "p_adjusted": np.nan, "confirmatory": False, "se": c.se, "df": c.df,
        "n_a": c.n_a, "n_b": c.n_b, "margin": c.margin, "tost_p": c.tost_p, "equivalent": c.equivalent,
        "tost_ci_low": c.tost_ci_low, "tost_ci_high": c.tost_ci_high, "note": note,
    }


def _resolve(name: str, units: list[_Unit]) -> list[_Unit]:
    exact = [u for u in units if u.name == name]
    if exact:
        return exact
    return [u for u in units if u.label == name]


def _family_pairs(units: list[_Unit], declared, notes: list[str], quantity: str):
    """(confirmatory pairs, control pairs) of units (each list of (a, b))."""
    by_block: dict[Any, list[_Unit]] = {}
    for u in units:
        by_block.setdefault(u.block, []).append(u)
    conf_pairs, ctrl_pairs = [], []
    if declared is not None:
        for sa, sb in declared:
            ua, ub = _resolve(sa, units), _resolve(sb, units)
            if not ua or not ub:
                avail = sorted({u.name for u in units} | {u.label for u in units})
                bad = sa if not ua else sb
                raise InputError(f"`compare`: no unit {bad!r} for quantity {quantity}; units are: "
                                 f"{', '.join(avail)}.")
            n_before = len(conf_pairs)
            for a in ua:
                for b in ub:
                    if a is b or a.block != b.block:
                        continue
                    if len(ua) > 1 or len(ub) > 1:  # GROUP without source: match sources,
                        if a.source != b.source or a.control:  # never expand into a control
                            continue
                    conf_pairs.append((a, b))
            if len(conf_pairs) == n_before:
                raise InputError(f"`compare`: {sa!r} vs {sb!r} gives no comparison for quantity {quantity} "
                                 "(the same unit, different blocks, or no shared non-control source).")
        return conf_pairs, ctrl_pairs
    for blk, us in by_block.items():
        main = [u for u in us if not u.control]
        ctrl = [u for u in us if u.control]
        n_groups = len({u.label for u in main})
        if n_groups > MAX_DEFAULT_GROUPS:
            notes.append(f"{quantity}: {n_groups} groups (> {MAX_DEFAULT_GROUPS}) at block "
                         f"{blk if blk is not None else 'all'}; declare the confirmatory pairs with --compare.")
            continue
        # all pairs of groups within each noise source, and the noise sources of one group
        # against each other (paired: the same runs); not pairs differing in both
        conf_pairs += [(a, b) for a, b in itertools.combinations(main, 2)
                       if a.source == b.source or a.label == b.label]
        for c in ctrl:
            ctrl_pairs += [(m, c) for m in main if m.label == c.label]
    return conf_pairs, ctrl_pairs


def _comparisons(units_by_q: dict[str, list[_Unit]], declared, *, conf, alpha, margin, step_label,
                 notes) -> list[dict]:
    rows: list[dict] = []
    for q, units in units_by_q.items():
        decl = declared
        if declared is not None and q != Quantity.SLOPE:
            # flatness quantities: the declared pairs at group level
            decl = [(a.rsplit(":", 1)[0] if not _resolve(a, units) else a,
                     b.rsplit(":", 1)[0] if not _resolve(b, units) else b) for a, b in declared]
            decl = list(dict.fromkeys((a, b) for a, b in decl
                                      if _resolve(a, units) and _resolve(b, units) and a != b))
        fam, ctrl = _family_pairs(units, decl, notes, q)
        m = margin if q == Quantity.SLOPE else None
        fam_rows = [r for a, b in fam
                    if (r := _compare_units(a, b, q, conf=conf, alpha=alpha, margin=m, step=step_label))]
        adj = holm([r["p_value"] for r in fam_rows])
        for r, pa_ in zip(fam_rows, adj):
            r["p_adjusted"] = pa_
            r["confirmatory"] = True
        rows += fam_rows
        rows += [r for a, b in ctrl
                 if (r := _compare_units(a, b, q, conf=conf, alpha=alpha, margin=m, step=step_label))]
    return rows


# ============================================================================ analyze


def _progress(iterable, total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc="analysing runs", unit="run", leave=False)


def analyze(
    source: str | os.PathLike | vio.LogSet,
    *,
    confidence: float = 0.95,
    alpha: float = 0.05,
    equivalence_margin: float | None = None,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    group_by: str | Sequence[str] | None = None,
    step: int | None = None,
    compare: str | Sequence[str] | None = None,
    skip_invalid: bool = False,
    floor_rel: float = DEFAULT_FLOOR_REL,
    residual_factor: float = DEFAULT_RESIDUAL_FACTOR,
    progress: bool | None = None,
) -> AnalysisResult:
    """Analyse a log set: per-run exponents, group means, comparisons (``varprinciple test``).

    Parameters
    ----------
    source : path or LogSet
        A log-set directory (read with :func:`varprinciple.io.read_logset`) or a LogSet.
    confidence : float, default 0.95
        Level of every two-sided interval.
    alpha : float, default 0.05
        Level of the TOST (its interval is at 1 - 2 alpha).
    equivalence_margin : float, optional
        Equivalence margin for slope comparisons (exponent units); None: no TOST.
    seed : int, default 0
        Seed of every resampling-based statistic.
    resamples : int, default 999
        Bootstrap replicates and Haar rotations: 0 switches both off (their fields null),
        otherwise at least 99.
    group_by : str or sequence of str, optional
        run.json keys defining groups (comma-separated; dotted paths allowed).
    step : int, optional
        The probe step analysed at group level (default: each run's last probe step).
    compare : str or sequence of str, optional
        Declared comparison pairs ``"UNIT_A vs UNIT_B"`` (UNIT = GROUP or GROUP:SOURCE).
    skip_invalid : bool, default False
        Analyse the valid runs and list the invalid ones instead of raising.
    floor_rel, residual_factor : float
        Exclusion floors (see :func:`varprinciple.stats.exclusion_reasons`).
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).

    Returns
    -------
    AnalysisResult

    Examples
    --------
    >>> import numpy as np
    >>> from varprinciple.simulate import simulate_logset
    >>> logset, _ = simulate_logset(methods={"sgd": 1.0}, runs_per_method=3,
    ...                             sources=("sgd",), rng=np.random.default_rng(0))
    >>> res = analyze(logset, resamples=0)
    >>> res.groups[["group", "source", "n_runs"]].to_dict("records")
    [{'group': 'sgd', 'source': 'sgd', 'n_runs': 3}]
    >>> bool(res.groups["p_value"].iloc[0] < 0.05)
    True
    """
    _analyze_iv(confidence, alpha, equivalence_margin, seed, resamples, step, floor_rel, residual_factor)
    gb = parse_group_by(group_by)
    declared = parse_compare(compare)
    if isinstance(source, vio.LogSet):
        logset = source
        input_name = str(source.root)
    elif isinstance(source, (str, os.PathLike)):
        logset = vio.read_logset(source, skip_invalid=skip_invalid)
        input_name = str(source)
    else:
        raise InputError(f"`source` must be a log-set path or a LogSet; got {type(source).__name__}.")
    runs = logset.runs
    if not runs:
        raise InputError(f"{input_name}: no valid run to analyse.")
    B = int(resamples)
    resampler = Resampler(B, seed) if B > 0 else None
    keys = group_keys([r.meta for r in runs], group_by=gb)
    labels = unique_labels(keys)
    logger.info("analysing %d runs (%d resamples)", len(runs), B)

    t0 = time.perf_counter()
    rel_rows: list[dict] = []
    dir_parts: list[dict] = []
    for run, label in _progress(zip(runs, labels), len(runs), progress):
        for blk in run.blocks:
            row, cols = _probe(run, label, blk, confidence, floor_rel, residual_factor, B, resampler)
            rel_rows.append(row)
            cols.update(run_id=run.run_id, method=run.method, group=label, source=blk.source,
                        step=int(blk.step), block=blk.block, n_samples=blk.n_samples)
            dir_parts.append(cols)
    relations = pd.DataFrame(rel_rows)
    directions = _directions_frame(dir_parts)
    logger.info("analysed %d probes of %d runs in %.1f s", len(rel_rows), len(runs), time.perf_counter() - t0)

    # ---- the analysed step of each run
    notes: list[str] = []
    sel: dict[str, int] = {}
    for run in runs:
        steps = run.steps
        if step is None:
            sel[run.run_id] = max(steps)
        elif step in steps:
            sel[run.run_id] = int(step)
    if step is not None:
        missing = [r.run_id for r in runs if r.run_id not in sel]
        if len(missing) == len(runs):
            avail = sorted({s for r in runs for s in r.steps})
            raise InputError(f"`step` {step} was probed in no run; probed steps: {avail}.")
        if missing:
            notes.append(f"step {step} not probed in runs {', '.join(missing)}; they are left out of groups.")
            logger.warning("step %d not probed in %d run(s); left out of groups", step, len(missing))
    at_step = relations[[sel.get(rid) == s for rid, s in zip(relations["run_id"], relations["step"])]]
    key_of = dict(zip(labels, keys))

    # ---- groups
    grp_rows: list[dict] = []
    slope_units: list[_Unit] = []
    gcols = ["group", "source", "block"]
    for (label, src, blk), sub in _groupby(at_step, gcols):
        vals = sub["slope"].to_numpy(float)
        ok = np.isfinite(vals)
        steps_here = sorted(set(sub["step"].tolist()))
        row = {"group": label, "group_key": key_of[label], "source": src, "block": blk,
               "step": steps_here[0] if len(steps_here) == 1 else None, "steps": steps_here,
               "control": src in CONTROL_SOURCES}
        if ok.any():
            g = group_test(vals[ok], confidence=confidence)
            row.update(slope=g.estimate, ci_low=g.ci_low, ci_high=g.ci_high, p_value=g.p_value, se=g.se,
                       sd=g.sd, df=g.df, n_runs=g.n_runs)
        else:
            row.update(slope=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan, se=np.nan, sd=np.nan,
                       df=np.nan, n_runs=0)
        row.update(_meta_sensitivity(vals, sub["se_slope"].to_numpy(float), confidence))
        icp = sub["intercept"].to_numpy(float)[ok]
        # the group's mean line log s^2 = mean_intercept + slope * log lambda (for drawing)
        row["mean_intercept"] = float(np.mean(icp)) if icp.size and np.all(np.isfinite(icp)) else np.nan
        row["n_runs_total"] = int(len(sub))
        row["mean_ratio"] = float(np.nanmean(sub["ratio"])) if sub["ratio"].notna().any() else np.nan
        row["mean_alignment_k"] = (float(np.nanmean(sub["alignment_k"])) if sub["alignment_k"].notna().any()
                                   else np.nan)
        row["run_ids"] = sorted(sub["run_id"].tolist())
        grp_rows.append(row)
        slope_units.append(_Unit(label, key_of[label], src, blk, dict(zip(sub["run_id"], vals.tolist()))))
    groups = _int_or_null(pd.DataFrame(grp_rows), "step")

    # ---- flatness
    flat_rows, flat_units = _flatness(runs, labels, key_of, sel, confidence)
    flatness = _int_or_null(pd.DataFrame(flat_rows, columns=_FLAT_COLUMNS), "step")

    # ---- comparisons
    step_values = sorted(set(sel.values()))
    step_label = step_values[0] if len(step_values) == 1 else None
    units_by_q = {Quantity.SLOPE.value: slope_units}
    units_by_q.update(flat_units)
    comp_rows = _comparisons(units_by_q, declared, conf=confidence, alpha=alpha, margin=equivalence_margin,
                             step_label=step_label, notes=notes)
    comparisons = pd.DataFrame(comp_rows, columns=_COMP_COLUMNS)

    settings = {
        "confidence": confidence, "alpha": alpha, "equivalence_margin": equivalence_margin, "seed": seed,
        "resamples": B, "group_by": list(gb) if gb else None, "step": step,
        "compare": [f"{a} vs {b}" for a, b in declared] if declared else None, "skip_invalid": skip_invalid,
        "floor_rel": floor_rel, "residual_factor": residual_factor,
        "control_sources": list(CONTROL_SOURCES), "max_default_groups": MAX_DEFAULT_GROUPS,
        "slope_ci": "OLS on log-log; delta-method sampling covariance + moment estimate of direction "
                    "scatter; Student t with n_directions - 2 df",
        "group_ci": "one-sample t over runs", "comparison_test": "paired t (same runs) or Welch t",
        "multiplicity": "Holm within each quantity's confirmatory family",
    }
    import numpy as _np
    import scipy as _sp
    provenance = {
        "package_version": __version__, "input": input_name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_runs": len(runs), "n_skipped": len(logset.skipped), "python": platform.python_version(),
        "numpy": _np.__version__, "scipy": _sp.__version__, "pandas": pd.__version__,
    }
    if logset.identical:
        notes.append("runs with identical noise tables (not independent replicates): "
                     + "; ".join(", ".join(x) for x in logset.identical))
    return AnalysisResult(
        relations=relations, groups=groups, comparisons=comparisons, flatness=flatness,
        directions=directions, skipped=[s.to_dict() for s in logset.skipped],
        identical=[list(x) for x in logset.identical], settings=settings, provenance=provenance,
        notes=notes)


_COMP_COLUMNS = ["quantity", "label_a", "key_a", "source_a", "label_b", "key_b", "source_b", "block", "step",
                 "paired", "difference", "ci_low", "ci_high", "p_value", "p_adjusted", "confirmatory", "se",
                 "df", "n_a", "n_b", "margin", "tost_p", "equivalent", "tost_ci_low", "tost_ci_high", "note"]
_FLAT_COLUMNS = ["group", "group_key", "quantity", "source", "block", "step", "estimate", "ci_low", "ci_high",
                 "p_value", "null", "log_mean", "log_ci_low", "log_ci_high", "n_runs"]


def _meta_sensitivity(slopes: np.ndarray, ses: np.ndarray, confidence: float) -> dict:
    """Random-effects meta-analysis of the runs' slopes (sensitivity analysis only).

    Paule-Mandel tau^2, inverse-variance weights with each run's own standard error, and
    the Hartung-Knapp (WLS-scaled, t with n - 1 df) interval, via statsmodels.
    """
    out = {"meta_slope": np.nan, "meta_ci_low": np.nan, "meta_ci_high": np.nan, "meta_tau2": np.nan}
    ok = np.isfinite(slopes) & np.isfinite(ses) & (ses > 0)
    if ok.sum() < 2:
        return out
    import warnings

    from statsmodels.stats.meta_analysis import combine_effects
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = combine_effects(slopes[ok], ses[ok] ** 2, method_re="pm", use_t=True)
        ci = res.conf_int(alpha=1 - confidence, use_t=True)[3]
    out.update(meta_slope=float(res.mean_effect_re), meta_ci_low=float(ci[0]), meta_ci_high=float(ci[1]),
               meta_tau2=float(res.tau2))
    return out


def _groupby(df: pd.DataFrame, cols: list[str]):
    """Group rows by ``cols`` keeping None keys (pandas drops them); order of first appearance."""
    if df.empty:
        return []
    keys = list(zip(*(df[c].tolist() for c in cols)))
    index: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        index.setdefault(k, []).append(i)
    return [(k, df.iloc[idx]) for k, idx in sorted(index.items(), key=lambda kv: tuple(map(str, kv[0])))]


def _directions_frame(parts: list[dict]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=list(DIRECTION_COLUMNS))
    n = np.array([p["n"] for p in parts])
    data = {}
    for name in ("run_id", "method", "group", "source", "step", "block", "n_samples"):
        data[name] = np.repeat(np.array([p[name] for p in parts], dtype=object), n)
    for name in ("basis", "direction", "eigenvalue", "residual", "variance", "included", "reason"):
        data[name] = np.concatenate([p[name] for p in parts])
    df = pd.DataFrame(data)
    df["step"] = df["step"].astype("int64")
    df["n_samples"] = df["n_samples"].astype("int64")
    df["direction"] = df["direction"].astype("int64")
    return df[list(DIRECTION_COLUMNS)]


def _flatness(runs, labels, key_of, sel, conf):
    """Per group x quantity x source x block summaries of flatness.parquet at each run's step."""
    rows = []
    for run, label in zip(runs, labels):
        if run.run_id not in sel:
            continue
        t = run.optional_table(_FLATNESS_FILE) if isinstance(run.path, Path) and run.path.is_dir() else None
        if t is None or t.empty:
            continue
        t = t[t["step"] == sel[run.run_id]]
        src = t["source"] if "source" in t else pd.Series([None] * len(t), index=t.index)
        blk = t["block"] if "block" in t else pd.Series([None] * len(t), index=t.index)
        for q, s, b, e, st in zip(t["quantity"], src, blk, t["estimate"], t["step"]):
            s = None if (s is None or (isinstance(s, float) and np.isnan(s))) else s
            b = None if (b is None or (isinstance(b, float) and np.isnan(b))) else b
            rows.append({"run_id": run.run_id, "group": label, "quantity": q, "source": s, "block": b,
                         "estimate": float(e), "step": int(st)})
    out, units = [], {}
    if not rows:
        return out, units
    df = pd.DataFrame(rows)
    for (label, q, s, b), sub in _groupby(df, ["group", "quantity", "source", "block"]):
        v = sub["estimate"].to_numpy(float)
        null = 1.0 if q == "rho" else None
        g = group_test(v, confidence=conf, null=null if null is not None else 0.0)
        rec = {"group": label, "group_key": key_of[label], "quantity": q, "source": s, "block": b,
               "step": int(sub["step"].iloc[0]) if sub["step"].nunique() == 1 else None,
               "estimate": g.estimate, "ci_low": g.ci_low, "ci_high": g.ci_high,
               "p_value": g.p_value if null is not None else np.nan, "null": null,
               "log_mean": np.nan, "log_ci_low": np.nan, "log_ci_high": np.nan, "n_runs": g.n_runs}
        if np.all(v > 0):
            lg = group_test(np.log(v), confidence=conf)
            rec.update(log_mean=lg.estimate, log_ci_low=lg.ci_low, log_ci_high=lg.ci_high)
            if q in _FLAT_COMPARED:
                units.setdefault(_FLAT_COMPARED[q].value, []).append(
                    _Unit(label, key_of[label], s if isinstance(s, str) else None, b,
                          dict(zip(sub["run_id"], np.log(v).tolist()))))
        out.append(rec)
    return out, units
