"""Statistics defaults: the one owner of the interval level, the test level and the resample count.

Every public function of the statistics layer (and the study, the CLI and the manifest) takes
its default from here; a change here changes them all.

Examples
--------
>>> CONFIDENCE, ALPHA, RESAMPLES
(0.95, 0.05, 999)
>>> check_resamples(50)
Traceback (most recent call last):
...
varprinciple.errors.InputError: `resamples` must be 0 (off) or at least 99; got 50.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["CONFIDENCE", "ALPHA", "RESAMPLES", "PSI_RESAMPLES", "MIN_RESAMPLES", "MAX_RESAMPLES", "check_resamples"]

#: Two-sided interval level.
CONFIDENCE = 0.95
#: Level of tests (TOST, claims, power).
ALPHA = 0.05
#: Resamples (Haar rotations of the isotropy test, permutations of the curvature test);
#: see docs/statistics.md for the timing that set it.
RESAMPLES = 999
#: Bootstrap replicates of ψ's interval when ψ is fitted on its own (``psi_fit``,
#: ``psi_from_tables``, ``psi_analysis``): its ends are the 2.5% and 97.5% quantiles of the
#: replicates, whose Monte Carlo error needs more draws than a p-value's 1/(B+1) resolution
#: (Efron & Tibshirani's ~2,000 for percentile-type intervals). ``analyze`` passes its own
#: ``resamples`` (:data:`RESAMPLES`) through.
PSI_RESAMPLES = 2000
#: Fewest resamples that give a usable p-value (1/(B+1) = 0.01); 0 turns resampling off.
MIN_RESAMPLES = 99
#: Rotations and permutations are held in memory: bound their number.
MAX_RESAMPLES = 100_000


def check_resamples(resamples, *, minimum: int = MIN_RESAMPLES) -> int:
    """``resamples`` as an int: 0 (off) or in ``[minimum, MAX_RESAMPLES]``, else a one-line InputError.

    ``minimum`` is :data:`MIN_RESAMPLES` for every analysis; the low-level resampling tests
    (``isotropy_test``, ``curvature_test``, ``alignment_test``) accept any positive count
    (``minimum=1``), as scipy's ``permutation_test`` does.
    """
    if not (isinstance(resamples, (int, np.integer)) and not isinstance(resamples, bool) and resamples >= 0):
        raise InputError(f"`resamples` must be an integer >= 0; got {resamples!r}.")
    if 0 < resamples < minimum:
        raise InputError(f"`resamples` must be 0 (off) or at least {minimum}; got {resamples!r}.")
    if resamples > MAX_RESAMPLES:
        raise InputError(f"`resamples` must be at most {MAX_RESAMPLES}; got {resamples!r}.")
    return int(resamples)
