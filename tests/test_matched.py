"""Matched-loss flatness comparisons (varprinciple.stats.matched)."""

from __future__ import annotations

import numpy as np
import pytest

from varprinciple.errors import InputError
from varprinciple.stats.inference import compare_groups
from varprinciple.stats.matched import loss_adjusted_comparison, matched_comparison


def _confounded(rng, n=6, gamma=0.0, sd=0.05):
    """log lambda_max = 1 + 1.0 log L (+ gamma for group a); group a trained further."""
    la = np.exp(rng.normal(np.log(0.003), 0.15, n))
    lb = np.exp(rng.normal(np.log(0.0044), 0.15, n))
    qa = np.exp(1 + np.log(la) + gamma + rng.normal(0, sd, n))
    qb = np.exp(1 + np.log(lb) + rng.normal(0, sd, n))
    return qa, la, qb, lb


def test_raw_comparison_is_welch_on_logs_and_flags_the_loss_gap():
    qa, la, qb, lb = _confounded(np.random.default_rng(0))
    res = matched_comparison(qa, la, qb, lb)
    ref = compare_groups(np.log(qa), np.log(qb))
    assert res.difference == pytest.approx(ref.difference) and res.p_value == pytest.approx(ref.p_value)
    assert res.loss_mismatch and "tolerance" in res.note
    # the confounded raw comparison "finds" a difference the loss-adjusted one does not
    adj = loss_adjusted_comparison(qa, la, qb, lb)
    assert res.p_value < 0.05 and adj.ci_low <= 0 <= adj.ci_high


def test_matched_runs_carry_no_note_and_unmatched_runs_are_excluded():
    rng = np.random.default_rng(1)
    la, lb = np.full(4, 0.003), np.full(4, 0.00305)
    qa, qb = rng.lognormal(0, 0.1, 4), rng.lognormal(0, 0.1, 4)
    res = matched_comparison(qa, la, qb, lb)
    assert not res.loss_mismatch and res.note is None
    res2 = matched_comparison(qa, la, qb, lb, reached_a=[True, True, True, False])
    assert res2.n_a == 3 and res2.n_unmatched_a == 1 and "did not reach" in res2.note


@pytest.mark.slow
def test_loss_adjusted_interval_coverage():
    # gamma = 0.3 at every loss; 95% CI coverage over 1000 datasets (MC SE 0.007)
    rng = np.random.default_rng(2)
    n, hits = 1000, 0
    for _ in range(n):
        r = loss_adjusted_comparison(*_confounded(rng, n=5, gamma=0.3, sd=0.1))
        hits += r.ci_low <= 0.3 <= r.ci_high
    assert abs(hits / n - 0.95) < 3 * np.sqrt(0.95 * 0.05 / n)


@pytest.mark.parametrize("args, kw, match", [
    (([1.0, -1.0], [0.1, 0.1], [1.0, 1.0], [0.1, 0.1]), {}, "`q_a` must be finite and > 0"),
    (([1.0, 1.0], [0.1], [1.0, 1.0], [0.1, 0.1]), {}, "each group needs one loss per run"),
    (([1.0, 1.0], [0.1, 0.1], [1.0, 1.0], [0.1, 0.1]), {"reached_a": [True, False]}, ">= 2 runs that reached"),
    (([1.0, 1.0], [0.1, 0.1], [1.0, 1.0], [0.1, 0.1]), {"reached_b": [True]}, "`reached_b` must have one flag"),
    (([1.0, 1.0], [0.1, 0.1], [1.0, 1.0], [0.1, 0.1]), {"tolerance": 0}, "`tolerance` must be > 0"),
])
def test_matched_errors(args, kw, match):
    with pytest.raises(InputError, match=match):
        matched_comparison(*args, **kw)


@pytest.mark.parametrize("args, kw, match", [
    (([1.0], [0.1], [1.0, 2.0], [0.1, 0.2]), {}, "needs >= 4 runs"),
    (([1.0, 2.0], [0.1, 0.1], [1.0, 2.0], [0.1, 0.1]), {}, "do not vary"),
    (([1.0, 2.0], [0.1, 0.2], [1.0, 2.0], [0.1]), {}, "each group needs one loss per run"),
    (([1.0, 2.0], [0.1, 0.2], [1.0, 2.0], [0.1, 0.3]), {"confidence": 2}, "`confidence` must be in"),
    (([1.0, 2.0], [0.1, 0.2], [1.0, np.nan], [0.1, 0.3]), {}, "`q_b` must be finite"),
])
def test_adjusted_errors(args, kw, match):
    with pytest.raises(InputError, match=match):
        loss_adjusted_comparison(*args, **kw)
