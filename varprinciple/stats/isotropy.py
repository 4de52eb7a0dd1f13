"""When ``isotropy_p`` can be given: tails alike across directions, not Gaussian tails.

The isotropy tests (:func:`varprinciple.stats.alignment.isotropy_test` and
:func:`~varprinciple.stats.alignment.isotropy_jackknife_p`; ``isotropy_p`` is the larger p)
need the directions to be exchangeable in their tails: with an exactly isotropic covariance
whose flattest 3 of 20 directions carry rare spikes, a direction that missed its spikes looks
less noisy than σ² and the tests reject (docs/statistics.md §5.3). Heavy tails ALIKE across
directions (Student-t, a minibatch whose large-gradient sample is large along every
direction) leave them at their level. So a probe whose draws show a dominating draw
(:func:`varprinciple.stats.relation.draw_share`, Bonferroni p < ``RARE_DRAW_ALPHA`` under
Gaussian tails — the previous rule, which refused real minibatch noise in every probe) keeps
its ``isotropy_p`` when it has at least ``MIN_DRAWS_TAIL_CHECK`` draws and
:func:`tail_check` shows the tails alike: at least ``MIN_TAIL_DRAWS`` draws beyond
``TAIL_THRESHOLD`` robust SDs, not concentrated in some directions at either threshold of
``TAIL_THRESHOLDS`` (permutation p >= ``TAIL_ALPHA``). Otherwise the refusal stands. Below
``MIN_DRAWS_TAIL_CHECK`` draws the check lacks power against tails that differ without
being rare (Student-t3 in the flattest half of the directions: 0.13 false rejections over
all probes at K = 50), so the previous rule applies there.

Calibrated on the independent generator ``tests/_foreign_isotropy.py`` (table and command in
docs/statistics.md §5.3).
"""

from __future__ import annotations

import numpy as np

__all__ = ["TAIL_THRESHOLD", "TAIL_THRESHOLDS", "MIN_TAIL_DRAWS", "MIN_DRAWS_TAIL_CHECK", "TAIL_ALPHA",
           "TAIL_RESAMPLES", "ISOTROPY_TAIL_NOTE", "tail_concentration", "tail_check", "tails_differ",
           "isotropy_tail_refusal"]

#: A draw is in the tail of its direction beyond this many robust SDs (1.4826 MAD about the
#: median): Gaussian draws get there with probability 7e-6, so tail draws are heavy-tail draws.
TAIL_THRESHOLD = 4.5
#: The concentration test is run at each of these thresholds (robust SDs): 4.5 catches rare
#: spikes, 3.5 tails that differ without being rare; the tails are alike when neither rejects.
TAIL_THRESHOLDS = (4.5, 3.5)
#: Fewest draws of a probe with the tail check; below, any dominating draw refuses isotropy_p.
MIN_DRAWS_TAIL_CHECK = 100
#: Fewest tail draws from which their spread across directions can show tails alike (with 3 or
#: fewer the spiky design kept isotropy_p in 0.21 of probes and rejected in 0.06 over all at K = 100).
MIN_TAIL_DRAWS = 4
#: Level of the concentration test below which the tails are taken to differ between directions.
TAIL_ALPHA = 0.05
#: Permutations of the concentration test (fixed: it is a screen, not a reported p).
TAIL_RESAMPLES = 199

#: Reason of a refused ``isotropy_p`` (relation row ``note``; no "; ", which separates caveats).
ISOTROPY_TAIL_NOTE = ("no isotropy_p: one draw carries {share:.0%} of a direction's variance (p = {p:.1e} under "
                      "Gaussian tails) and {why}, so the tails may differ between directions, and then the isotropy "
                      "tests reject an isotropic covariance too often (docs/statistics.md §5.3)")


def tail_concentration(values, *, rng: np.random.Generator, threshold: float = TAIL_THRESHOLD) -> tuple[int, float]:
    """The number of tail draws and the permutation p of their concentration across directions.

    A tail draw is an entry more than ``threshold`` robust SDs (1.4826 x MAD about the
    column median) from its direction's median. Statistic: the number of pairs of tail draws
    in the same direction, ``sum_j n_j (n_j - 1)``. Reference: the entries of each draw (row)
    permuted across directions, ``TAIL_RESAMPLES`` times — a symmetry of every law whose
    directions are exchangeable, that keeps a draw large along every direction (one
    large-gradient sample in a minibatch) as it is. ``p = (1 + #{T_perm >= T}) / (1 + N)``;
    1 when no direction holds two tail draws.

    Parameters
    ----------
    values : array_like, shape (K, k)
        Noise draws projected on k directions.
    rng : numpy.random.Generator
        Source of the permutations.
    threshold : float, default TAIL_THRESHOLD
        In robust SDs.

    Returns
    -------
    (n_tail, p) : tuple of (int, float)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> tail_concentration(rng.standard_normal((200, 20)), rng=rng)
    (0, 1.0)
    >>> x = rng.standard_t(3, (200, 20))            # heavy tails alike in every direction
    >>> n, p = tail_concentration(x, rng=rng); n > 10, p > 0.05
    (True, True)
    >>> x = rng.standard_normal((200, 20)); x[:8, 19] *= 20   # rare large draws in one direction
    >>> tail_concentration(x, rng=rng)
    (6, 0.005)
    """
    X = np.asarray(values, dtype=float)
    k = X.shape[1]
    dev = np.abs(X - np.median(X, axis=0))
    mad = np.median(dev, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = dev > threshold * 1.4826 * mad
    tail &= mad > 0
    n = tail.sum(axis=0)
    stat = int((n * (n - 1)).sum())
    if stat == 0:
        return int(n.sum()), 1.0
    rows = np.flatnonzero(tail.any(axis=1))  # only rows with a tail draw move anything
    sub = tail[rows]
    perm = np.argsort(rng.random((TAIL_RESAMPLES, rows.size, k)), axis=2)
    n_perm = np.take_along_axis(np.broadcast_to(sub, perm.shape), perm, axis=2).sum(axis=1)
    t_perm = (n_perm * (n_perm - 1)).sum(axis=1)
    return int(n.sum()), float((1 + np.count_nonzero(t_perm >= stat)) / (1 + TAIL_RESAMPLES))


def tail_check(values, *, rng: np.random.Generator) -> tuple[int, float]:
    """The number of tail draws beyond ``TAIL_THRESHOLD`` robust SDs and the smallest
    concentration p of :func:`tail_concentration` over ``TAIL_THRESHOLDS`` (the row fields
    ``tail_draws`` and ``tail_concentration_p``)."""
    n_tail, p = tail_concentration(values, rng=rng, threshold=TAIL_THRESHOLD)
    for thr in TAIL_THRESHOLDS:
        if thr != TAIL_THRESHOLD:
            p = min(p, tail_concentration(values, rng=rng, threshold=thr)[1])
    return n_tail, p


def tails_differ(draw_share_p: float, n_tail: float, tail_p: float, n_samples: float = np.inf) -> bool:
    """The refusal rule of ``isotropy_p``: a dominating draw (``draw_share_p`` <
    ``RARE_DRAW_ALPHA``) that :func:`tail_check` cannot show to be part of tails alike across
    directions (fewer than ``MIN_DRAWS_TAIL_CHECK`` draws, fewer than ``MIN_TAIL_DRAWS`` tail
    draws, or a concentration p < ``TAIL_ALPHA``)."""
    from .relation import RARE_DRAW_ALPHA

    if not (np.isfinite(draw_share_p) and draw_share_p < RARE_DRAW_ALPHA):
        return False
    return not (n_samples >= MIN_DRAWS_TAIL_CHECK and np.isfinite(n_tail) and n_tail >= MIN_TAIL_DRAWS
                and np.isfinite(tail_p) and tail_p >= TAIL_ALPHA)


def isotropy_tail_refusal(values, *, rng: np.random.Generator) -> tuple[str | None, int, float]:
    """Why ``isotropy_p`` cannot be given for these draws (None when it can), with the
    number of tail draws and the concentration p of :func:`tail_check`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> isotropy_tail_refusal(rng.standard_t(3, (200, 20)), rng=rng)[0] is None
    True
    >>> x = rng.standard_normal((100, 20)); x[5, 19] = 30.0
    >>> isotropy_tail_refusal(x, rng=rng)[0][:52]
    "no isotropy_p: one draw carries 86% of a direction's"
    """
    from .relation import draw_share

    X = np.asarray(values, dtype=float)
    share, p_share = draw_share(X)
    n_tail, p_tail = tail_check(X, rng=rng)
    K = X.shape[0]
    if not tails_differ(p_share, n_tail, p_tail, K):
        return None, n_tail, p_tail
    if K < MIN_DRAWS_TAIL_CHECK:
        why = f"with K = {K} < {MIN_DRAWS_TAIL_CHECK} draws the tails cannot be shown alike across directions"
    elif n_tail < MIN_TAIL_DRAWS:
        why = (f"only {n_tail} draw{'s' if n_tail != 1 else ''} lie beyond {TAIL_THRESHOLD:g} robust SDs (too few "
               "to show tails alike across directions)")
    else:
        why = f"the large draws crowd into some directions (permutation p = {p_tail:.2g})"
    return ISOTROPY_TAIL_NOTE.format(share=share, p=p_share, why=why), n_tail, p_tail
