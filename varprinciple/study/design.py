"""The study's design numbers: power of the TOST and minimum detectable effects (closed forms).

For runs-as-replicates t tests with a run-to-run SD ``sd`` of the per-run quantity:

* :func:`welch_mde` — the smallest true difference a two-sided test at ``alpha`` detects
  with probability ``power`` (noncentral t; Welch with equal n and SD has df = 2n - 2,
  paired differences df = n - 1);
* :func:`tost_power` — the probability that TOST at ``alpha`` declares equivalence within
  ``±margin`` when the true difference is ``true_difference``, for the rule the claims table
  applies: Welch's standard error and Welch–Satterthwaite df from each arm's own sample
  variance (``kind="welch"``) or the paired t (``kind="paired"``, ``sd`` = SD of the
  paired differences), and Holm over a family of ``family_size`` such rows (each row's
  power to be declared equivalent after Holm when every row of the family is truly
  equivalent, rows independent). Monte Carlo over the sample means and variances, which
  are independent under normality: exact up to the reported MC SE.

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
from ..stats.defaults import ALPHA
from ..stats.inference import tost_p

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


def welch_mde(n: int, sd: float, *, alpha: float = ALPHA, power: float = 0.8, kind: str = "welch") -> float:
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


def tost_power(n: int, sd: float, margin: float, *, alpha: float = ALPHA, true_difference: float = 0.0,
               kind: str = "welch", family_size: int = 1, reps: int = 200_000,
               rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Power of the applied TOST rule (equivalence within ``±margin``, Holm over
    ``family_size`` rows) and its Monte Carlo SE.

    Examples
    --------
    >>> p, se = tost_power(6, 0.15, 0.3, rng=np.random.default_rng(0))
    >>> round(p, 2), se < 0.001
    (0.88, True)
    >>> p12, _ = tost_power(6, 0.15, 0.3, family_size=12, reps=20_000, rng=np.random.default_rng(0))
    >>> p12 < 0.5  # Holm's first step tests at alpha / 12
    True
    """
    _iv(n, sd, alpha, kind)
    if not margin > 0:
        raise InputError(f"`margin` must be > 0; got {margin!r}.")
    if not isinstance(family_size, (int, np.integer)) or isinstance(family_size, bool) or family_size < 1:
        raise InputError(f"`family_size` must be an integer >= 1; got {family_size!r}.")
    if rng is None:
        rng = np.random.default_rng()
    m = int(family_size)
    shape = (reps, m)
    if kind == "welch":
        d = rng.normal(true_difference, sd * np.sqrt(2.0 / n), shape)
        va = sd**2 * rng.chisquare(n - 1, shape) / (n - 1) / n
        vb = sd**2 * rng.chisquare(n - 1, shape) / (n - 1) / n
        se_hat = np.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (n - 1))
    else:
        d = rng.normal(true_difference, sd / np.sqrt(n), shape)
        se_hat = sd / np.sqrt(n) * np.sqrt(rng.chisquare(n - 1, shape) / (n - 1))
        df = float(n - 1)
    p = tost_p(d, se_hat, df, margin)
    if m > 1:
        from ..stats.inference import holm
        p = np.apply_along_axis(holm, 1, p) if reps * m <= 50_000 else _holm_rows(p)
    hit = p < alpha
    power = float(hit.mean())
    # rows of one replicate share the Holm step: the MC SE counts replicates, not rows
    per_rep = hit.mean(axis=1)
    return power, float(per_rep.std(ddof=1) / np.sqrt(reps)) if reps > 1 else float("nan")


def _holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along each row (vectorised; same numbers as stats.inference.holm)."""
    m = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    ps = np.take_along_axis(p, order, axis=1) * (m - np.arange(m))
    adj = np.minimum(np.maximum.accumulate(ps, axis=1), 1.0)
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=1)
    return out


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
    family_size: int = 1
    family: str | None = None

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def power_at(self, margin: float, n: int | None = None) -> float:
        """Power of the applied rule (Holm over the family) at ``margin`` and ``n`` runs per arm."""
        r = self.table[self.table["n"] == (self.n if n is None else n)].iloc[0]
        col = f"tost_power_{margin:g}_holm" if self.family_size > 1 else f"tost_power_{margin:g}"
        return float(r[col])

    def summary(self) -> str:
        test = "Welch t (Welch–Satterthwaite df)" if self.kind == "welch" else "paired t"
        fam = (f"Holm over the {self.family_size} rows of family '{self.family}'" if self.family and
               self.family_size > 1 else f"Holm over {self.family_size} rows" if self.family_size > 1 else "one row")
        lines = [f"design: {self.n} runs per arm, run-to-run sd {self.sd:g}, alpha {self.alpha:g}, {test}",
                 f"minimum detectable difference (two-sided, power {self.target_power:g}): {self.mde:.3f}",
                 "TOST power per row that is truly equivalent (true difference 0), margins "
                 + ", ".join(f"±{m:g}" for m in self.margins.values()) + f"; {fam}"
                 + (" (alone: without Holm)" if self.family_size > 1 else "")]
        for _, r in self.table.iterrows():
            parts = []
            for m in self.margins.values():
                one = r[f"tost_power_{m:g}"]
                if self.family_size > 1:
                    parts.append(f"TOST ±{m:g}: {r[f'tost_power_{m:g}_holm']:.2f} (alone {one:.2f})")
                else:
                    parts.append(f"TOST ±{m:g}: {one:.2f}")
            lines.append(f"  n = {int(r['n']):2d}: MDE {r['mde']:.3f}; " + "; ".join(parts))
        return "\n".join(lines)


def design_summary(*, sd: float, n: int, margins: dict, alpha: float = ALPHA, target_power: float = 0.8,
                   kind: str = "welch", grid=(3, 4, 5, 6, 8, 10, 12, 15), seed: int = 0, family_size: int = 1,
                   family: str | None = None, reps: int = 100_000) -> DesignResult:
    """TOST power of the applied rule at each margin and the MDE over a grid of runs per arm.

    ``family_size`` > 1 adds, per margin, the power after Holm over that many rows
    (``tost_power_<m>_holm``, :func:`tost_power`); ``reps`` Monte Carlo replicates per cell
    (a tenth of them for the Holm columns).

    Examples
    --------
    >>> d = design_summary(sd=0.15, n=6, margins={"slope": 0.3}, grid=(4, 6), reps=20_000)
    >>> list(d.table.columns)
    ['n', 'mde', 'tost_power_0.3', 'tost_power_0.3_mcse']
    """
    rows = []
    for k in sorted(set(grid) | {n}):
        row = {"n": k, "mde": welch_mde(k, sd, alpha=alpha, power=target_power, kind=kind)}
        for m in margins.values():
            p, se = tost_power(k, sd, m, alpha=alpha, kind=kind, reps=reps, rng=np.random.default_rng([seed, k]))
            row[f"tost_power_{m:g}"], row[f"tost_power_{m:g}_mcse"] = p, se
            if family_size > 1:
                p, se = tost_power(k, sd, m, alpha=alpha, kind=kind, family_size=family_size,
                                   reps=max(2_000, reps // 10), rng=np.random.default_rng([seed, k, family_size]))
                row[f"tost_power_{m:g}_holm"], row[f"tost_power_{m:g}_holm_mcse"] = p, se
        rows.append(row)
    return DesignResult(pd.DataFrame(rows), n, sd, alpha, target_power, kind,
                        welch_mde(n, sd, alpha=alpha, power=target_power, kind=kind), dict(margins),
                        int(family_size), family)
