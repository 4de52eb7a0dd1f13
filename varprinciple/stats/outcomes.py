"""Per-run outcomes compared between groups beside λ_max and Tr(H): generalisation and a
reparameterisation-aware flatness.

For each run at its analysed step (the matched-loss stop in the study):

* ``test_accuracy`` — the test-split accuracy (``training.parquet`` at that step, else
  run.json's ``final`` when the step is the run's last);
* ``generalisation_gap`` — test loss − training loss there (full-batch means, dropout off;
  nats for cross-entropy): the quantity "flatter minima generalise better" is about;
* ``filter_width`` — the width of the filter-normalised random-direction loss profiles
  (``loss_profiles.parquet`` rows of kind ``random``, collected at the final weights by
  ``[trajectory] random_profiles``; Li et al. 2018). Estimand: along each direction d_j the
  distance t₊ + t₋ between the two points t > 0 and t < 0 nearest the centre where the
  training loss first rises by :data:`WIDTH_RISE` above its centre value (linear
  interpolation between grid points), averaged over the directions. Filter normalisation
  scales each filter's step by that filter's norm, so rescaling a ReLU layer's filters by
  c and the next layer by 1/c — which changes λ_max and Tr(H) — leaves the profile width
  unchanged. A side that never reaches the rise within ``[trajectory] profile_radius``
  counts as the radius (the width is then a lower bound, said in the row's note).

:func:`run_outcomes` returns them per run; :mod:`.flatness` summarises them over runs and
compares them between groups (:data:`.flatness.FLAT_COMPARED`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import schema

__all__ = ["OUTCOME_QUANTITIES", "WIDTH_RISE", "profile_width", "run_outcomes"]

#: Loss rise above the centre that marks a profile's edge (nats for cross-entropy).
WIDTH_RISE = 0.1
#: The per-run outcome quantities (rows of the ``flatness`` table).
OUTCOME_QUANTITIES = ("test_accuracy", "generalisation_gap", "filter_width")


def _edge(ts: np.ndarray, rise: np.ndarray, level: float) -> tuple[float, bool]:
    """Distance from 0 to where ``rise`` (ordered by increasing |t|, starting at t = 0)
    first reaches ``level``; (the largest |t|, True) when it never does."""
    hit = np.flatnonzero(rise >= level)
    if hit.size == 0:
        return float(abs(ts[-1])), True
    i = int(hit[0])
    if i == 0:
        return 0.0, False
    t0, t1, r0, r1 = abs(ts[i - 1]), abs(ts[i]), rise[i - 1], rise[i]
    return float(t0 + (level - r0) * (t1 - t0) / (r1 - r0)), False


def profile_width(profiles: pd.DataFrame, *, rise: float = WIDTH_RISE) -> tuple[float, int, int]:
    """Mean full width t₊ + t₋ of the ``random`` loss profiles at a loss rise of ``rise``.

    Returns (width, number of censored sides, number of directions); width is NaN when
    there is no random profile with a point on each side of t = 0.

    Examples
    --------
    >>> ts = np.linspace(-1, 1, 201)
    >>> df = pd.DataFrame({"kind": "random", "direction": 0, "t": ts, "loss": 0.01 + 0.4 * ts ** 2})
    >>> w, censored, n = profile_width(df, rise=0.1)
    >>> round(w, 4), censored, n   # 2 * sqrt(0.1 / 0.4)
    (1.0, 0, 1)
    """
    p = profiles[profiles["kind"] == "random"] if "kind" in profiles else profiles
    widths, censored = [], 0
    for _, d in p.groupby("direction"):
        d = d.sort_values("t")
        ts, loss = d["t"].to_numpy(float), d["loss"].to_numpy(float)
        centre = np.flatnonzero(np.isclose(ts, 0.0, atol=1e-12))
        if centre.size == 0 or centre[0] == 0 or centre[0] == len(ts) - 1:
            continue
        c = int(centre[0])
        l0 = loss[c]
        # a non-finite loss (overflow far out) counts as above the rise
        r = np.where(np.isfinite(loss), loss - l0, np.inf)
        up, cu = _edge(ts[c:], r[c:], rise)
        down, cd = _edge(ts[:c + 1][::-1], r[:c + 1][::-1], rise)
        widths.append(up + down)
        censored += int(cu) + int(cd)
    if not widths:
        return float("nan"), 0, 0
    return float(np.mean(widths)), censored, len(widths)


def _training_row(run, step: int) -> dict | None:
    path = getattr(run, "path", None)
    if isinstance(path, Path) and (path / schema.TRAINING.file).exists():
        tr = run.optional_table(schema.TRAINING.file)
        hit = tr.loc[tr["step"] == step]
        if len(hit):
            return hit.iloc[0].to_dict()
    final = run.meta.get("final")
    probes = [p.get("step") for p in (run.meta.get("probes") or []) if isinstance(p, dict)]
    if isinstance(final, dict) and probes and step == max(probes):
        return final
    return None


def _finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def run_outcomes(run, step: int, *, rise: float = WIDTH_RISE) -> dict[str, tuple[float, str | None]]:
    """``{quantity: (value, note)}`` for the outcomes ``run`` logged at ``step`` (absent
    ones are left out). The filter width is read only when ``step`` is the run's last probe
    (the profiles are taken at the final weights)."""
    out: dict[str, tuple[float, str | None]] = {}
    row = _training_row(run, step)
    if row is not None:
        acc, test, train = (_finite(row.get(k)) for k in ("test_accuracy", "test_loss", "train_loss"))
        if acc is not None:
            out["test_accuracy"] = (acc, None)
        if test is not None and train is not None:
            out["generalisation_gap"] = (test - train, None)
    path = getattr(run, "path", None)
    probes = [p.get("step") for p in (run.meta.get("probes") or []) if isinstance(p, dict)]
    if (isinstance(path, Path) and (path / schema.LOSS_PROFILES.file).exists()
            and (not probes or step == max(probes))):
        w, cens, n = profile_width(run.optional_table(schema.LOSS_PROFILES.file), rise=rise)
        if n and np.isfinite(w):
            note = (f"{cens} of {2 * n} profile sides never rose by {rise:g} within the profile radius "
                    f"(counted as the radius): the width is a lower bound" if cens else None)
            out["filter_width"] = (w, note)
    return out
