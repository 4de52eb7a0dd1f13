"""The study's design numbers: power of the TOST and minimum detectable effects (closed forms).

For runs-as-replicates t tests with a run-to-run SD ``sd`` of the per-run quantity:

* :func:`welch_mde` — the smallest true difference a two-sided test at ``alpha`` detects
  with probability ``power`` (noncentral t; Welch with equal n and SD has df = 2n - 2,
  paired differences df = n - 1);
* :func:`tost_power` — the probability that TOST at ``alpha`` declares equivalence within
  ``±margin`` when the true difference is ``true_difference`` (Monte Carlo over the sample
  mean and SD, which are independent under normality: exact up to the reported MC SE).

``varprinciple power`` simulates whole studies (directions, samples, heavy tails) for the
slope test and the difference test; these closed forms cover the TOST it does not, and
are checked against it in tests. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from ..errors import InputError

__all__ = ["welch_mde", "tost_power", "DesignResult", "design_summary"]


def _iv(n, sd, alpha, kind):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
        raise InputError(f"`n` must be an integer >= 2 (runs per arm); got {n!r}.")
    if not (isinstance(sd, (int, float)) and sd > 0):
        raise InputError(f"`sd` must be > 0; got {sd!r}.")
    if not 0 < alpha < 0.5:
        raise InputError(f"`alpha` must be in (0, 0.5); got {alpha!r}.")
    if kind not in ("welch", "paired"):
        raise InputError(f"`kind` must be 'welch' or 'paired'; got {kind!r}.")


def _se_df(n, sd, kind):
    return (sd * np.sqrt(2.0 / n), 2 * n - 2) if kind == "welch" else (sd / np.sqrt(n), n - 1)


def welch_mde(n: int, sd: float, *, alpha: float = 0.05, power: float = 0.8, kind: str = "welch") -> float:
    """Minimum detectable difference of a two-sided t test with ``n`` runs per arm.

    Examples
    --------
    >>> round(welch_mde(6, 0.15), 3)
    0.269
    """
    _iv(n, sd, alpha, kind)
    se, df = _se_df(n, sd, kind)
    crit = sps.t.ppf(1 - alpha / 2, df)

    def f(delta):
        ncp = delta / se
        return float(np.nan_to_num(sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp), nan=1.0)) - power

    return float(optimize.brentq(f, 1e-9, 15 * se))


def tost_power(n: int, sd: float, margin: float, *, alpha: float = 0.05, true_difference: float = 0.0,
               kind: str = "welch", reps: int = 200_000, rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Power of TOST (equivalence within ``±margin``) and its Monte Carlo SE.

    Examples
    --------
    >>> p, se = tost_power(6, 0.15, 0.3, rng=np.random.default_rng(0))
    >>> round(p, 2), se < 0.001
    (0.88, True)
    """
    _iv(n, sd, alpha, kind)
    if not margin > 0:
        raise InputError(f"`margin` must be > 0; got {margin!r}.")
    rng = np.random.default_rng(0) if rng is None else rng
    se, df = _se_df(n, sd, kind)
    d = rng.normal(true_difference, se, reps)
    se_hat = se * np.sqrt(rng.chisquare(df, reps) / df)
    crit = sps.t.ppf(1 - alpha, df)
    hit = (d - crit * se_hat > -margin) & (d + crit * se_hat < margin)
    p = float(hit.mean())
    return p, float(np.sqrt(p * (1 - p) / reps))


@dataclass(frozen=True)
class DesignResult:
    """Power of the declared design: one row per runs-per-arm value (``table``) and the
    minimum detectable effect at the chosen n."""

    table: pd.DataFrame
    n: int
    sd: float
    alpha: float
    target_power: float
    kind: str
    mde: float
    margins: dict

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def summary(self) -> str:
        lines = [f"design: {self.n} runs per arm, run-to-run sd {self.sd:g}, alpha {self.alpha:g}, {self.kind} t",
                 f"minimum detectable difference (two-sided, power {self.target_power:g}): {self.mde:.3f}"]
        for _, r in self.table.iterrows():
            parts = [f"TOST ±{m:g}: {r[f'tost_power_{m:g}']:.2f}" for m in self.margins.values()]
            lines.append(f"  n = {int(r['n']):2d}: MDE {r['mde']:.3f}; " + "; ".join(parts))
        return "\n".join(lines)


def design_summary(*, sd: float, n: int, margins: dict, alpha: float = 0.05, target_power: float = 0.8,
                   kind: str = "welch", grid=(3, 4, 5, 6, 8, 10, 12, 15), seed: int = 0) -> DesignResult:
    """TOST power at each margin and the MDE over a grid of runs per arm.

    Examples
    --------
    >>> d = design_summary(sd=0.15, n=6, margins={"slope": 0.3}, grid=(4, 6))
    >>> list(d.table.columns)
    ['n', 'mde', 'tost_power_0.3', 'tost_power_0.3_mcse']
    """
    rows = []
    for k in sorted(set(grid) | {n}):
        row = {"n": k, "mde": welch_mde(k, sd, alpha=alpha, power=target_power, kind=kind)}
        for m in margins.values():
            p, se = tost_power(k, sd, m, alpha=alpha, kind=kind, rng=np.random.default_rng([seed, k]))
            row[f"tost_power_{m:g}"], row[f"tost_power_{m:g}_mcse"] = p, se
        rows.append(row)
    return DesignResult(pd.DataFrame(rows), n, sd, alpha, target_power, kind,
                        welch_mde(n, sd, alpha=alpha, power=target_power, kind=kind), dict(margins))
