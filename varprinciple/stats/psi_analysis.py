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

from .. import schema
from ..errors import InputError
from .comparisons import Unit, adjust_family, compare_units
from .defaults import ALPHA, CONFIDENCE, PSI_RESAMPLES
from .inference import group_test
from .replicates import network_values
from .psi import psi_from_tables

__all__ = ["PsiAnalysis", "psi_analysis", "TRAJECTORY_FILE", "PROJECTIONS_FILE", "PROFILES_FILE"]

TRAJECTORY_FILE = schema.TRAJECTORY.file
PROJECTIONS_FILE = schema.TRAJECTORY_PROJECTIONS.file
PROFILES_FILE = schema.LOSS_PROFILES.file
#: The width column of the threshold-sensitivity psi, by the main one (f = e <-> f = 2).
SENSITIVITY = {"width": "width_2", "width_2": "width"}


@dataclass(frozen=True)
class PsiAnalysis:
    """ψ results of a log set.

    ``per_run``: one row per run with a trajectory (PsiResult fields, ``run_id``,
    ``method``, ``group``; ``problem`` names why ψ is missing; ``psi_sensitivity`` with its
    CI is ψ from the other threshold's widths, ``sensitivity_threshold``). ``groups``: rows in the
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
    """A finite float or None (None, NaN, inf and pandas' NA of nullable columns alike)."""
    if x is None or x is pd.NA:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _window_notes(meta: Mapping, note: str | None) -> dict:
    """``loss_change``, ``plateau_reached`` and ``note`` (with the stationarity caveats from
    run.json's ``trajectory`` record appended) of one run."""
    traj = meta.get("trajectory") if isinstance(meta, Mapping) else None
    traj = traj if isinstance(traj, Mapping) else {}
    notes = [note] if note else []
    change = traj.get("loss_change")
    if traj.get("loss_level") is False and isinstance(change, (int, float)):
        notes.append(f"window not stationary: the training loss trends by {change:+.0%} across it "
                     f"(docs/flatness.md)")
    if traj.get("plateau_reached") is False:
        notes.append("the loss had not levelled (plateau rule) when the window started")
    return {"loss_change": change if isinstance(change, (int, float)) else None,
            "plateau_reached": traj.get("plateau_reached"), "note": "; ".join(notes) or None}


def psi_analysis(runs: Sequence, labels: Sequence[str], *, key_of: Mapping[str, dict] | None = None,
                 confidence: float = CONFIDENCE, alpha: float = ALPHA, margin: float | None = None,
                 resamples: int = PSI_RESAMPLES, seed: int = 0, threshold: str = "width",
                 network_of: Mapping[str, str] | None = None,
                 pair_of: Mapping[str, str] | None = None) -> PsiAnalysis:
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
    network_of : mapping, optional
        run_id -> network id (:func:`varprinciple.stats.replicates.find_networks`): runs of
        one network count once at group level (their ψ averaged), never as replicates.
    pair_of : mapping, optional
        network id -> pairing key (:func:`varprinciple.stats.replicates.pair_keys`):
        groups sharing keys (matched seeds) are compared paired.

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
        per = {}
        try:
            res = psi_from_tables(pcs, proj, threshold=threshold, confidence=confidence, resamples=resamples,
                                  rng=rng)
            row.update(res.to_frame().iloc[0].to_dict())
            row["problem"] = None
            comps_sorted = pcs.sort_values("component")["component"].astype(int).tolist()
            per = {key: dict(zip(comps_sorted, getattr(res, key))) for key in ("tau", "n_eff", "variance")}
        except InputError as exc:
            row.update(psi=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan, problem=str(exc),
                       note=f"no psi: {exc}", refused=True)
        # the collector's stationarity record (run.json trajectory: plateau rule, loss trend)
        row.update(_window_notes(getattr(run, "meta", None) or {}, row.get("note")))
        # threshold sensitivity: psi with the other width column (f = 2 when the main one is f = e)
        other = SENSITIVITY.get(threshold)
        row.update(psi_sensitivity=np.nan, psi_sensitivity_ci_low=np.nan, psi_sensitivity_ci_high=np.nan,
                   sensitivity_threshold=other)
        if other is not None and other in pcs.columns:
            try:
                r2 = psi_from_tables(pcs, proj, threshold=other, confidence=confidence, resamples=resamples,
                                     rng=np.random.default_rng([int(seed), zlib.crc32(run.run_id.encode()), 2]))
                row.update(psi_sensitivity=r2.psi, psi_sensitivity_ci_low=r2.ci_low,
                           psi_sensitivity_ci_high=r2.ci_high)
            except InputError:
                pass
        rows.append(row)
        comps = pcs.sort_values("component")
        records.append({**{k: _float(row.get(k)) if k not in ("run_id", "method", "group", "problem", "note")
                           else row.get(k)
                           for k in ("run_id", "method", "group", "psi", "ci_low", "ci_high", "p_value",
                                     "n_eff_min", "lever_arm", "psi_window", "problem", "note")},
                        "refused": bool(row.get("refused", False)),
                        "intercept": _float(row.get("intercept")), "threshold": threshold,
                        "sensitivity_threshold": row["sensitivity_threshold"],
                        **{k: _float(row[k]) for k in ("psi_sensitivity", "psi_sensitivity_ci_low",
                                                       "psi_sensitivity_ci_high")},
                        "components": [{"component": int(c), "variance": _float(v), "variance_short": _float(vs),
                                        "width": _float(w), "drift": bool(dr),
                                        "variance_stationary": _float(per.get("variance", {}).get(int(c))),
                                        "tau": _float(per.get("tau", {}).get(int(c))),
                                        "n_eff": _float(per.get("n_eff", {}).get(int(c)))}
                                       for c, v, vs, w, dr in zip(comps["component"], comps["variance"],
                                                                  comps["variance_short"], comps[threshold],
                                                                  comps["drift"])]})
    per_run = pd.DataFrame(rows)
    network_of = network_of or {}
    groups, units = [], {}
    if len(per_run):
        for label, sub in per_run.groupby("group", sort=True):
            # runs of one network (re-probes, copies) count once: their psi are averaged first
            nets, v, _ = network_values(sub["run_id"].tolist(), sub["psi"].to_numpy(float), network_of)
            keep = np.isfinite(v)
            if not keep.any():
                continue
            g = group_test(v[keep], confidence=confidence, null=0.0)
            # a run whose own interval was refused (n_eff or lever arm too small) has a psi whose
            # small-sample bias is not controlled: the group's interval is refused with it
            refused = sub.loc[sub["refused"].fillna(False).astype(bool) & np.isfinite(sub["psi"].to_numpy(float)),
                              "run_id"].tolist() if "refused" in sub else []
            note = (f"no interval: {len(refused)} of {len(sub)} runs refused theirs ({', '.join(refused[:3])}"
                    f"{', ...' if len(refused) > 3 else ''}: see their notes)") if refused else None
            ci_low, ci_high, p = (np.nan, np.nan, np.nan) if refused else (g.ci_low, g.ci_high, g.p_value)
            groups.append({"group": label, "group_key": key_of.get(label), "quantity": "psi", "source": None,
                           "block": None, "step": None, "estimate": g.estimate, "ci_low": ci_low,
                           "ci_high": ci_high, "p_value": p, "null": 0.0, "log_mean": np.nan,
                           "log_ci_low": np.nan, "log_ci_high": np.nan, "n_runs": g.n_runs, "note": note})
            units[label] = Unit(label=label, key=key_of.get(label), source=None, block=None,
                                values={n: float(x) for n, x, k in zip(nets, v, keep) if k})
    comparisons = []
    for a, b in itertools.combinations(sorted(units), 2):
        if len(units[a].values) < 2 or len(units[b].values) < 2:
            continue
        row = compare_units(units[a], units[b], "psi", conf=confidence, alpha=alpha, margin=margin, step=None,
                            pair_of=pair_of)
        if row is not None:
            comparisons.append(row)
    adjust_family(comparisons, alpha=alpha)
    return PsiAnalysis(per_run, groups, comparisons, records, profiles)
