"""How many seeds, directions and samples are needed? Power of ``varprinciple test`` by simulation.

:func:`power_analysis` simulates log sets in memory with :mod:`varprinciple.simulate` over a
grid of designs (runs per group x Hessian directions x noise samples), analyses them with
:func:`varprinciple.stats.analyze` exactly as ``varprinciple test`` would (no files are
written), and counts how often the target effect is detected:

* ``kind="slope"``: the group-level one-sided test of b > 0 (runs as replicates) rejects at
  ``alpha``, when every run's exponent is drawn around ``effect``;
* ``kind="difference"``: the two-sided comparison of two groups (Welch t over runs) rejects at
  ``alpha``, when the groups' mean exponents are ``baseline + effect`` and ``baseline``.

Each design's power comes with its Monte Carlo standard error ``sqrt(p (1 - p) / replicates)``.
The recommended design is the smallest one whose estimated power reaches ``target_power``,
smallest meaning fewest runs first (a run is a trained network), then fewest directions
(Hessian eigenpairs), then fewest samples (cheap draws).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .defaults import ALPHA

__all__ = ["PowerKind", "PowerResult", "power_analysis"]

logger = logging.getLogger(__name__)

#: Upper bound on noise values simulated per analyze() call (memory: 8 bytes each).
_CHUNK_VALUES = 20_000_000


class PowerKind(StrEnum):
    """The effect whose detection is counted."""

    SLOPE = "slope"
    DIFFERENCE = "difference"


@dataclass(frozen=True)
class PowerResult:
    """Estimated power over a grid of designs.

    ``table`` has one row per design: ``n_runs`` (per group), ``n_directions``,
    ``n_samples``, ``power``, ``mc_se``, ``replicates``, ``reached`` (power >= target).
    ``recommended`` is the smallest design reaching ``target_power`` (a dict of the
    row), or None when no design on the grid does.
    """

    kind: str
    effect: float
    baseline: float
    alpha: float
    target_power: float
    replicates: int
    table: pd.DataFrame = field(repr=False)
    recommended: dict | None
    settings: dict = field(default_factory=dict, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """The per-design table."""
        return self.table.copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"kind": self.kind, "effect": self.effect, "baseline": self.baseline, "alpha": self.alpha,
                "target_power": self.target_power, "replicates": self.replicates,
                "recommended": self.recommended, "settings": self.settings,
                "designs": self.table.to_dict(orient="records")}

    def summary(self) -> str:
        """A readable table and the recommendation."""
        what = (f"mean exponent b = {self.effect:g} detected (one-sided group t test, alpha {self.alpha:g})"
                if self.kind == PowerKind.SLOPE else
                f"difference in b of {self.effect:g} (groups at {self.baseline + self.effect:g} vs "
                f"{self.baseline:g}) detected (two-sided Welch t over runs, alpha {self.alpha:g})")
        lines = [f"power: {what}; {self.replicates} simulated studies per design", ""]
        t = self.table.copy()
        t["power"] = [f"{p:.3f} ± {s:.3f}" for p, s in zip(t["power"], t["mc_se"])]
        t["reached"] = np.where(self.table["reached"], "yes", "")
        lines.append(t[["n_runs", "n_directions", "n_samples", "power", "reached"]]
                     .rename(columns={"n_runs": "runs/group", "n_directions": "directions",
                                      "n_samples": "samples", "power": "power ± MC SE",
                                      "reached": f">= {self.target_power:g}"})
                     .to_string(index=False))
        lines.append("")
        if self.recommended is None:
            lines.append(f"no design on the grid reaches power {self.target_power:g}; add runs, directions "
                         "or samples to the grid")
        else:
            r = self.recommended
            lines.append(f"smallest design reaching power {self.target_power:g}: {r['n_runs']} runs per group, "
                         f"{r['n_directions']} directions, {r['n_samples']} samples "
                         f"(power {r['power']:.3f} ± {r['mc_se']:.3f})")
        return "\n".join(lines)


def _grid(name: str, values, low: int) -> list[int]:
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise InputError(f"`{name}` must be a non-empty sequence of integers >= {low}; got {values!r}.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise InputError(f"`{name}` must hold integers >= {low}; got {v!r}.")
        out.append(int(v))
    return sorted(set(out))


def _power_iv(effect, kind, baseline, n_runs, n_directions, n_samples, target_power, alpha, replicates,
              n_nonpositive, rng):
    allowed = [k.value for k in PowerKind]
    if kind not in allowed:
        raise InputError(f"`kind` must be one of {allowed}; got {kind!r}.")
    for name, v in (("effect", effect), ("baseline", baseline)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
            raise InputError(f"`{name}` must be a finite number (exponent units); got {v!r}.")
    if not (isinstance(target_power, (int, float)) and 0 < target_power < 1):
        raise InputError(f"`target_power` must be in (0, 1); got {target_power!r}.")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 0.5):
        raise InputError(f"`alpha` must be in (0, 0.5); got {alpha!r}.")
    if isinstance(replicates, bool) or not isinstance(replicates, (int, np.integer)) or replicates < 10:
        raise InputError(f"`replicates` must be an integer >= 10; got {replicates!r}.")
    runs = _grid("n_runs", n_runs, 2)
    dirs = _grid("n_directions", n_directions, 3)
    samples = _grid("n_samples", n_samples, 3)
    if min(dirs) - n_nonpositive < 3:
        raise InputError(f"`n_directions` must leave at least 3 positive eigenvalues beside n_nonpositive="
                         f"{n_nonpositive}; got min(n_directions)={min(dirs)}.")
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"`rng` must be a numpy.random.Generator (np.random.default_rng(seed)); got {rng!r}.")
    return PowerKind(kind), runs, dirs, samples


def _progress(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="power", unit="study", leave=False, disable=not enabled)


def power_analysis(
    *,
    effect: float,
    kind: str = PowerKind.SLOPE,
    baseline: float = 1.0,
    n_runs: Sequence[int] = (3, 5, 8),
    n_directions: Sequence[int] = (10, 20),
    n_samples: Sequence[int] = (100, 400),
    target_power: float = 0.8,
    alpha: float = ALPHA,
    replicates: int = 200,
    slope_sd: float = 0.1,
    scatter: float = 0.2,
    intercept: float = -3.5,
    noise: str = "gaussian",
    df: float = 8.0,
    drop_prob: float = 0.5,
    correlation: float = 0.3,
    n_nonpositive: int = 0,
    eigen_decay: float = 1.0,
    lambda_max: float = 10.0,
    resamples: int = 0,
    rng: np.random.Generator,
    progress: bool | None = None,
) -> PowerResult:
    """Estimate the power of ``varprinciple test`` for a target effect over a grid of designs.

    Parameters
    ----------
    effect : float
        ``kind="slope"``: the mean exponent b of the group; ``kind="difference"``: the
        difference of the two groups' mean exponents.
    kind : {"slope", "difference"}, default "slope"
        Which test's power is estimated (see the module docstring).
    baseline : float, default 1.0
        ``kind="difference"``: the mean exponent of the second group.
    n_runs, n_directions, n_samples : sequence of int
        The grid: runs (seeds) per group, Hessian directions per probe, noise draws per probe.
    target_power : float, default 0.8
        Power the recommended design must reach.
    alpha : float, default 0.05
        Level of the tests.
    replicates : int, default 200
        Simulated studies per design (Monte Carlo SE at most ``0.5 / sqrt(replicates)``).
    slope_sd, scatter, intercept, noise, df, drop_prob, correlation, n_nonpositive, eigen_decay, lambda_max
        The simulated noise model (see :func:`varprinciple.simulate.simulate`); ``noise``
        is the family of the single simulated source.
    resamples : int, default 0
        Passed to :func:`analyze`; the tests counted here do not resample, so 0 saves time.
    rng : numpy.random.Generator
        Source of randomness.
    progress : bool, optional
        Progress bar (default: when stderr is a terminal).

    Returns
    -------
    PowerResult

    Raises
    ------
    InputError
        For an invalid option (the message names it).

    Examples
    --------
    >>> import numpy as np
    >>> from varprinciple.stats.power import power_analysis
    >>> res = power_analysis(effect=0.1, n_runs=[2, 6], n_directions=[10], n_samples=[100],
    ...                      replicates=40, rng=np.random.default_rng(0))
    >>> res.to_frame()[["n_runs", "n_directions", "n_samples"]].values.tolist()
    [[2, 10, 100], [6, 10, 100]]
    >>> bool(res.table["power"].iloc[1] > res.table["power"].iloc[0])
    True
    """
    from ..simulate import _memory_logset, _simulate_iv  # in-memory runs, no files
    from .analysis import analyze

    kind, runs_grid, dirs_grid, samples_grid = _power_iv(effect, kind, baseline, n_runs, n_directions,
                                                         n_samples, target_power, alpha, replicates,
                                                         n_nonpositive, rng)
    effect, baseline = float(effect), float(baseline)
    designs = [(r, d, k) for r in runs_grid for d in dirs_grid for k in samples_grid]
    rows = []
    bar = _progress(len(designs) * replicates, progress)
    try:
        for n_r, n_d, n_k in designs:
            per_study = n_r * (2 if kind == PowerKind.DIFFERENCE else 1)
            chunk = max(1, min(replicates, _CHUNK_VALUES // (per_study * n_d * n_k)))
            hits = 0
            done = 0
            while done < replicates:
                m = min(chunk, replicates - done)
                ids = [f"p{done + i:05d}" for i in range(m)]
                if kind == PowerKind.SLOPE:
                    methods = {i: effect for i in ids}
                else:
                    methods = {}
                    for i in ids:
                        methods[f"{i}a"] = baseline + effect
                        methods[f"{i}b"] = baseline
                s = _simulate_iv(methods, n_r, ("sgd",), None, slope_sd, scatter, intercept, n_d, 0, n_k, [0],
                                 noise, df, drop_prob, None, correlation, n_nonpositive, eigen_decay,
                                 lambda_max, 1e-3, None, rng)
                logset, _ = _memory_logset(s, rng, tables=False)
                if kind == PowerKind.SLOPE:
                    res = analyze(logset, alpha=alpha, resamples=resamples, progress=False)
                    g = res.groups
                    if len(g) != m:  # pragma: no cover - a grouping change in analyze
                        raise RuntimeError(f"power: expected {m} groups, analyze returned {len(g)}")
                    p = g["p_value"].to_numpy(float)
                else:
                    res = analyze(logset, alpha=alpha, resamples=resamples, progress=False,
                                  compare=[f"{i}a vs {i}b" for i in ids])
                    c = res.comparisons
                    c = c[c["quantity"] == "slope"]
                    if len(c) != m:  # pragma: no cover
                        raise RuntimeError(f"power: expected {m} comparisons, analyze returned {len(c)}")
                    p = c["p_value"].to_numpy(float)
                hits += int(np.count_nonzero(p < alpha))  # NaN p never rejects
                done += m
                bar.update(m)
            pw = hits / replicates
            rows.append({"n_runs": n_r, "n_directions": n_d, "n_samples": n_k, "power": pw,
                         "mc_se": math.sqrt(pw * (1 - pw) / replicates), "replicates": replicates,
                         "reached": pw >= target_power})
            logger.debug("design runs=%d directions=%d samples=%d: power %.3f", n_r, n_d, n_k, pw)
    finally:
        bar.close()
    table = pd.DataFrame(rows)
    ok = table[table["reached"]]
    rec = None
    if len(ok):
        rec = ok.sort_values(["n_runs", "n_directions", "n_samples"]).iloc[0].to_dict()
        rec = {k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
    settings = dict(slope_sd=slope_sd, scatter=scatter, intercept=intercept, noise=str(noise), df=df,
                    drop_prob=drop_prob, correlation=correlation, n_nonpositive=n_nonpositive,
                    eigen_decay=eigen_decay, lambda_max=lambda_max, resamples=resamples,
                    n_runs=runs_grid, n_directions=dirs_grid, n_samples=samples_grid)
    return PowerResult(kind.value, effect, baseline, float(alpha), float(target_power), int(replicates),
                       table, rec, settings)
