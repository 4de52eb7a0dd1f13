"""Flatness summaries over runs from the optional ``flatness.parquet`` table.

Per group x quantity x source x block at each run's analysed step: the mean over runs
with a t interval (``rho`` is tested against its isotropic value 1), and on the log
scale for positive quantities; ``lambda_max``, ``hessian_trace`` and the filter-normalised
profile width ``filter_width`` become units compared between groups on the log scale,
``test_accuracy`` and ``generalisation_gap`` (per-run outcomes, :mod:`.outcomes`) on their own
scale (:data:`FLAT_COMPARED`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema
from .comparisons import Quantity, Unit
from .group_level import groupby_keep_none
from .inference import group_test
from .outcomes import run_outcomes
from .replicates import network_values

__all__ = ["FLATNESS_FILE", "FLAT_COMPARED", "flatness_rows"]

FLATNESS_FILE = schema.FLATNESS.file
#: flatness quantities compared between groups, with the compared Quantity (``log_*``: on
#: the log scale, the others on their own)
FLAT_COMPARED = {"lambda_max": Quantity.LOG_LAMBDA_MAX, "hessian_trace": Quantity.LOG_HESSIAN_TRACE,
                 "filter_width": Quantity.LOG_FILTER_WIDTH, "test_accuracy": Quantity.TEST_ACCURACY,
                 "generalisation_gap": Quantity.GENERALISATION_GAP}


def _none_if_nan(x):
    return None if (x is None or (isinstance(x, float) and np.isnan(x))) else x


def _notes(notes: pd.Series) -> str | None:
    """The runs' caveats of one row, each once ("; "-joined), with how many runs carry it."""
    found = [n for n in notes if isinstance(n, str) and n]
    if not found:
        return None
    counts = pd.Series(found).value_counts(sort=False)
    return "; ".join(f"{n} ({k} of {len(notes)} runs)" for n, k in counts.items())


def flatness_rows(runs, labels, key_of, sel, conf, network_of=None) -> tuple[list[dict], dict[str, list[Unit]]]:
    """Per group x quantity x source x block summaries of flatness.parquet at each run's step,
    and the units of :data:`FLAT_COMPARED` quantities keyed by quantity.

    Runs of one network (``network_of``) count once: their estimates are averaged first.
    """
    network_of = network_of or {}
    rows = []
    for run, label in zip(runs, labels):
        if run.run_id not in sel:
            continue
        # per-run outcomes (test accuracy, generalisation gap, profile width) at the analysed step
        for q, (e, why) in run_outcomes(run, sel[run.run_id]).items():
            rows.append({"run_id": run.run_id, "group": label, "quantity": q, "source": None, "block": None,
                         "estimate": float(e), "step": int(sel[run.run_id]), "note": why})
        t = run.optional_table(FLATNESS_FILE) if isinstance(run.path, Path) and run.path.is_dir() else None
        if t is None or t.empty:
            continue
        t = t[t["step"] == sel[run.run_id]]
        src = t["source"] if "source" in t else pd.Series([None] * len(t), index=t.index)
        blk = t["block"] if "block" in t else pd.Series([None] * len(t), index=t.index)
        for q, s, b, e, st in zip(t["quantity"], src, blk, t["estimate"], t["step"]):
            rows.append({"run_id": run.run_id, "group": label, "quantity": q, "source": _none_if_nan(s),
                         "block": _none_if_nan(b), "estimate": float(e), "step": int(st), "note": None})
    out, units = [], {}
    if not rows:
        return out, units
    df = pd.DataFrame(rows)
    for (label, q, s, b), sub in groupby_keep_none(df, ["group", "quantity", "source", "block"]):
        nets, v, _ = network_values(sub["run_id"].tolist(), sub["estimate"].to_numpy(float), network_of)
        null = 1.0 if q == "rho" else None
        g = group_test(v, confidence=conf, null=null if null is not None else 0.0)
        rec = {"group": label, "group_key": key_of[label], "quantity": q, "source": s, "block": b,
               "step": int(sub["step"].iloc[0]) if sub["step"].nunique() == 1 else None,
               "estimate": g.estimate, "ci_low": g.ci_low, "ci_high": g.ci_high,
               "p_value": g.p_value if null is not None else np.nan, "null": null,
               "log_mean": np.nan, "log_ci_low": np.nan, "log_ci_high": np.nan, "n_runs": g.n_runs,
               "note": _notes(sub["note"])}
        comp = FLAT_COMPARED.get(q)
        if np.all(v > 0):
            lg = group_test(np.log(v), confidence=conf)
            rec.update(log_mean=lg.estimate, log_ci_low=lg.ci_low, log_ci_high=lg.ci_high)
            if comp is not None and comp.value.startswith("log_"):
                units.setdefault(comp.value, []).append(
                    Unit(label, key_of[label], s if isinstance(s, str) else None, b,
                         dict(zip(nets, np.log(v).tolist())), note=rec["note"]))
        if comp is not None and not comp.value.startswith("log_"):
            units.setdefault(comp.value, []).append(
                Unit(label, key_of[label], s if isinstance(s, str) else None, b, dict(zip(nets, v.tolist())),
                     note=rec["note"]))
        out.append(rec)
    return out, units
