"""The tail rule of isotropy_p (stats/isotropy.py): kept where the tails are alike across
directions, refused where they may differ. Calibrated on the independent generator
tests/_foreign_isotropy.py (the full table: scripts/calib_isotropy_tail_rule.py,
docs/statistics.md §5.3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _foreign_isotropy import draws

from varprinciple.stats.alignment import isotropy_jackknife_p, isotropy_test
from varprinciple.stats.isotropy import (MIN_DRAWS_TAIL_CHECK, MIN_TAIL_DRAWS, TAIL_RESAMPLES, TAIL_THRESHOLD, isotropy_tail_refusal,
                                         tail_concentration, tails_differ)
from varprinciple.stats.per_probe import heavy_tail_sources


def test_tail_concentration_against_a_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 8))
    x[:5, 2] *= 30.0
    n, p = tail_concentration(x, rng=np.random.default_rng(1))
    # brute force: tail draws by column with a loop, the statistic and a p from explicit permutations
    med = np.median(x, axis=0)
    mad = np.array([np.median(np.abs(x[:, j] - med[j])) for j in range(8)])
    tail = np.array([[abs(x[i, j] - med[j]) > TAIL_THRESHOLD * 1.4826 * mad[j] for j in range(8)] for i in range(120)])
    counts = tail.sum(axis=0)
    assert n == int(tail.sum())
    stat = sum(c * (c - 1) for c in counts)
    g = np.random.default_rng(1)
    rows = np.flatnonzero(tail.any(axis=1))
    u = g.random((TAIL_RESAMPLES, rows.size, 8))
    hits = 0
    for b in range(TAIL_RESAMPLES):
        perm_counts = np.zeros(8, int)
        for r, i in enumerate(rows):
            order = np.argsort(u[b, r])
            perm_counts += tail[i][order]
        hits += sum(c * (c - 1) for c in perm_counts) >= stat
    assert p == pytest.approx((1 + hits) / (1 + TAIL_RESAMPLES))
    assert p < 0.05  # the five large draws of direction 2 crowd into it


def test_gaussian_draws_have_no_tail_draws_and_are_never_refused():
    rng = np.random.default_rng(2)
    for _ in range(50):
        why, n, _ = isotropy_tail_refusal(rng.standard_normal((100, 20)), rng=rng)
        assert why is None and n <= 3


def test_tails_differ_rule():
    assert not tails_differ(0.5, 0, 1.0)                      # no dominating draw: nothing to refuse
    assert tails_differ(1e-5, MIN_TAIL_DRAWS - 1, 1.0)         # too few tail draws to show tails alike
    assert tails_differ(1e-5, 40, 0.01)                        # tail draws crowd into some directions
    assert not tails_differ(1e-5, 40, 0.4)                     # tails alike: isotropy_p kept
    assert tails_differ(1e-5, np.nan, np.nan)                  # no concentration test: the previous rule
    assert tails_differ(1e-5, 40, 0.4, MIN_DRAWS_TAIL_CHECK - 1)  # too few draws for the check: the previous rule
    assert not tails_differ(1e-5, 40, 0.4, MIN_DRAWS_TAIL_CHECK)


def _probe_rates(design, K, reps, rng, group=5):
    rows = []
    for r in range(reps):
        lam, X = draws(design, K, 20, rng)
        iso = max(isotropy_test(X, lam, resamples=199, rng=rng).p_value, isotropy_jackknife_p(X, lam))
        why, n, p = isotropy_tail_refusal(X, rng=rng)
        from varprinciple.stats.relation import draw_share
        rows.append({"group": f"g{r // group}", "source": "s", "iso": iso, "draw_share_p": draw_share(X)[1], "n_samples": K,
                     "tail_draws": n, "tail_concentration_p": p, "refused": why is not None})
    df = pd.DataFrame(rows)
    flagged = heavy_tail_sources(df)
    src = ~df["group"].map(lambda g: (g, "s") in flagged).to_numpy()
    given = ~df["refused"].to_numpy()
    rej = df["iso"].to_numpy() < 0.05
    return given.mean(), (rej & given).mean(), (given & src).mean(), (rej & given & src).mean()


@pytest.mark.slow
def test_calibration_on_the_independent_generator():
    """K = 100, 20 directions, 100 probes per design (MC SE <= 0.05 on a rate): heavy tails
    alike across directions keep isotropy_p (the previous rule refused t3 in every probe) at
    its level; the design that motivated the refusal (3 flat directions with rare spikes) is
    refused in most probes and in every probe of its 5-probe sources (false rejections over all
    probes 0 there; a probe analysed alone: 0.067 +- 0.020 in the 150-probe table, bound here
    0.075 + 2 MC SEs of 100 probes; before any refusal: 0.14)."""
    rng = np.random.default_rng(11)
    g, over_all, g_src, over_all_src = _probe_rates("t3", 100, 100, rng)
    assert g >= 0.8 and g_src >= 0.7 and over_all <= 0.075
    g, over_all, g_src, over_all_src = _probe_rates("spiky3_bottom", 100, 100, rng)
    assert g <= 0.4 and over_all <= 0.075 + 2 * 0.026 and over_all_src <= 0.05
    g, over_all, g_src, over_all_src = _probe_rates("gauss", 100, 60, rng)
    assert g == 1.0 and g_src == 1.0
