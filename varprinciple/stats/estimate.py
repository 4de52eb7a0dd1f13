"""One result type for a difference estimated with a standard error, df, interval and p-value.

:class:`DifferenceEstimate` holds ``difference``, ``ci_low``, ``ci_high``, ``p_value``, ``se``
and ``df`` (the model: statsmodels' ``CombineResults``): the comparison classes
(:class:`~varprinciple.stats.inference.Comparison`,
:class:`~varprinciple.stats.matched.MatchedComparison`,
:class:`~varprinciple.stats.matched.LossAdjustedComparison`) are its subclasses, so
``conf_int`` and ``summary_frame`` read the same fields everywhere (each subclass also has
its ``confidence``, the level of the stored interval).

Examples
--------
>>> est = DifferenceEstimate(0.5, 0.2738, 0.7262, 0.001, 0.1, 9.0)
>>> [round(x, 4) for x in est.conf_int()]
[0.2738, 0.7262]
>>> [round(x, 4) for x in est.conf_int(0.9)]
[0.3167, 0.6833]
>>> list(est.summary_frame().columns)
['estimate', 'se', 'df', 'ci_low', 'ci_high', 'p_value']
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
from scipy import stats as sps

from ..errors import InputError

__all__ = ["DifferenceEstimate"]


@dataclass(frozen=True)
class DifferenceEstimate:
    """A difference with its standard error, degrees of freedom, interval and p-value."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    df: float

    def conf_int(self, confidence: float | None = None) -> tuple[float, float]:
        """The interval: the stored one (``confidence`` None or equal to the stored level), else
        the t interval ``difference ± t_{(1+confidence)/2, df} se`` (NaN without se and df)."""
        if confidence is None or confidence == getattr(self, "confidence", None):
            return (self.ci_low, self.ci_high)
        if not 0 < confidence < 1:
            raise InputError(f"`confidence` must be in (0, 1); got {confidence!r}.")
        if not (self.se > 0 and self.df > 0) or not math.isfinite(self.difference):
            return (math.nan, math.nan)
        h = float(sps.t.ppf((1 + confidence) / 2, self.df)) * self.se
        return (self.difference - h, self.difference + h)

    def summary_frame(self) -> pd.DataFrame:
        """One row: estimate, se, df, ci_low, ci_high, p_value."""
        return pd.DataFrame([{"estimate": self.difference, "se": self.se, "df": self.df, "ci_low": self.ci_low,
                              "ci_high": self.ci_high, "p_value": self.p_value}])

    def to_frame(self) -> pd.DataFrame:
        """One-row DataFrame of every field."""
        return pd.DataFrame([asdict(self)])
