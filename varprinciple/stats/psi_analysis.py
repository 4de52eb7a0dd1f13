"""ψ over a log set: per run, per group and between groups, plus the records the report draws.

:func:`psi_analysis` reads each run's optional ``trajectory.parquet`` and
``trajectory_projections.parquet`` (runs without them are skipped silently: the trajectory
is optional), fits ψ per run (:func:`~varprinciple.stats.psi.psi_from_tables`), summarises
it per group (one-sample t over runs, p for ψ > 0) and compares every pair of groups
(Welch, with TOST at the declared equivalence margin; Holm over the ψ family). Its rows use
the column sets of the analysis' ``flatness`` (quantity ``psi``) and ``comparisons``
(quantity ``psi``) tables, so they can be appended to them; ``records`` and ``profiles``
are the JSON lists ``variance_flatness`` and ``loss_profiles`` the report's figures read
(docs/report.md). This module imports no torch.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import InputError
from .inference import compare_groups, group_test, holm
from .psi import psi_from_tables

__all__ = ["PsiAnalysis", "psi_analysis", "TRAJECTORY_FILE", "PROJECTIONS_FILE", "PROFILES_FILE"]

TRAJECTORY_FILE = "trajectory.parquet"
PROJECTIONS_FILE = "trajectory_projections.parquet"
PROFILES_FILE = "loss_profiles.parquet"


@dataclass(frozen=True)
class PsiAnalysis:
    """ψ results of a log set.

    ``per_run``: one row per run with a trajectory (PsiResult fields, ``run_id``,
    ``method``, ``group``; ``problem`` names why ψ is missing). ``groups``: rows in the
    analysis' flatness-table format with ``quantity`` = ``psi`` and ``null`` 0.
    ``comparisons``: rows in the comparisons-table format with ``quantity`` = ``psi``.
    ``records``: per run, ψ and its components (for the σ² vs F figure). ``profiles``:
    per run and profile, the loss profile (for the loss-profile figure).
    """

    per_run: pd.DataFrame
    groups: list[dict] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    profiles: list[dict] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        return self.per_run.copy()


def _table(run, name):
    path = getattr(run, "path", None)
    if path is None or not (path / name).exists():
        return None
    return run.optional_table(name)


def _float(x):
    return None if x is None or not np.isfinite(x) else float(x)


def psi_analysis(runs: Sequence, labels: Sequence[str], *, key_of: Mapping[str, dict] | None = None,
                 confidence: float = 0.95, alpha: float = 0.05, margin: float | None = None,
                 resamples: int = 2000, seed: int = 0, threshold: str = "width") -> PsiAnalysis:
    """ψ per run, per group and between groups (runs are the replicates).

    Parameters
    ----------
    runs : sequence of varprinciple.io.RunLog
    labels : sequence of str
        Each run's group label (as the analysis assigns them).
    key_of : mapping, optional
        Group label -> key fields (copied into the rows as ``group_key``/``key_a``...).
    confidence, alpha, margin : float
        CI level, TOST level and the equivalence margin on ψ (None: no TOST).
    resamples, seed : int
        Bootstrap replicates per run; each run's stream is derived from ``seed`` and its
        run_id, so results do not depend on the order of runs.
    threshold : str
        Width column (``width``: f = e; ``width_2``: f = 2).

    Raises
    ------
    InputError
        If ``labels`` does not have one label per run.
    """
    if len(labels) != len(runs):
        raise InputError(f"`labels` must have one label per run ({len(runs)}); got {len(labels)}.")
    key_of = key_of or {}
    rows, records, profiles = [], [], []
    for run, label in zip(runs, labels):
        pcs, proj = _table(run, TRAJECTORY_FILE), _table(run, PROJECTIONS_FILE)
        prof = _table(run, PROFILES_FILE)
        base = {"run_id": run.run_id, "method": run.method, "group": label}
        if prof is not None and len(prof):
            for (kind, d), sub in prof.groupby(["kind", "direction"], sort=True):
                sub = sub.sort_values("t")
                profiles.append({**base, "kind": str(kind), "direction": int(d), "t": sub["t"].tolist(),
                                 "loss": [_float(v) for v in sub["loss"]],
                                 "loss0": _float(sub["loss0"].iloc[0]) if "loss0" in sub else None,
                                 "other_run": (sub["other_run"].iloc[0] if "other_run" in sub else None)})
        if pcs is None or proj is None:
            continue
        rng = np.random.default_rng([int(seed), zlib.crc32(run.run_id.encode())])
        row = dict(base)
        try:
            res = psi_from_tables(pcs, proj, threshold=threshold, confidence=confidence, resamples=resamples,
                                  rng=rng)
            row.update(res.to_frame().iloc[0].to_dict())
            row["problem"] = None
        except InputError as exc:
            row.update(psi=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan, problem=str(exc))
        rows.append(row)
        comps = pcs.sort_values("component")
        records.append({**{k: _float(row.get(k)) if k not in ("run_id", "method", "group", "problem") else row.get(k)
                           for k in ("run_id", "method", "group", "psi", "ci_low", "ci_high", "p_value",
                                     "n_eff_min", "problem")},
                        "intercept": _float(row.get("intercept")), "threshold": threshold,
                        "components": [{"component": int(c), "variance": _float(v), "variance_short": _float(vs),
                                        "width": _float(w), "drift": bool(dr)}
                                       for c, v, vs, w, dr in zip(comps["component"], comps["variance"],
                                                                  comps["variance_short"], comps[threshold],
                                                                  comps["drift"])]})
    per_run = pd.DataFrame(rows)
    groups, units = [], {}
    if len(per_run):
        for label, sub in per_run.groupby("group", sort=True):
            v = sub["psi"].to_numpy(float)
            v = v[np.isfinite(v)]
            if not v.size:
                continue
            g = group_test(v, confidence=confidence, null=0.0)
            groups.append({"group": label, "group_key": key_of.get(label), "quantity": "psi", "source": None,
                           "block": None, "step": None, "estimate": g.estimate, "ci_low": g.ci_low,
                           "ci_high": g.ci_high, "p_value": g.p_value, "null": 0.0, "log_mean": np.nan,
                           "log_ci_low": np.nan, "log_ci_high": np.nan, "n_runs": g.n_runs})
            units[label] = v
    comparisons = []
    for a, b in itertools.combinations(sorted(units), 2):
        va, vb = units[a], units[b]
        if va.size < 2 or vb.size < 2:
            continue
        c = compare_groups(va, vb, confidence=confidence, alpha=alpha, margin=margin)
        comparisons.append({"quantity": "psi", "label_a": a, "key_a": key_of.get(a), "source_a": None,
                            "label_b": b, "key_b": key_of.get(b), "source_b": None, "block": None, "step": None,
                            "paired": False, "difference": c.difference, "ci_low": c.ci_low, "ci_high": c.ci_high,
                            "p_value": c.p_value, "p_adjusted": np.nan, "confirmatory": True, "se": c.se,
                            "df": c.df, "n_a": c.n_a, "n_b": c.n_b, "margin": c.margin, "tost_p": c.tost_p,
                            "equivalent": c.equivalent, "tost_ci_low": c.tost_ci_low,
                            "tost_ci_high": c.tost_ci_high, "note": None})
    for r, p in zip(comparisons, holm([r["p_value"] for r in comparisons])):
        r["p_adjusted"] = p
    return PsiAnalysis(per_run, groups, comparisons, records, profiles)
