"""Known answer (issue 8): psi of SGD on one- and two-layer linear regression.

Gross, Raulf & Rath (PRR 2024): one-layer linear regression under SGD shows no inverse
variance-flatness relation (near its minimum the SGD noise covariance is proportional to H,
so the stationary weight spread is isotropic: psi ~ 0, up to O(lr * lambda) discrete-time
corrections), while a two-layer linear network does (psi > 0: the per-sample gradients
have no component along the flat directions of the rescaling symmetry W1 -> A W1,
W2 -> W2 A^-1, so the flattest directions carry the least variance). SGD here draws every
minibatch independently (``sampler="independent"``, the theory's model); with random
reshuffling (``"epochs"``) the noise of an epoch sums to zero and slow directions see less
of it, which fakes an inverse relation in the one-layer model: the perturbation that shows
the one-layer check can fail. The two-layer network's psi ~ 2 rests on its symmetry
directions, which relax more slowly than the window (their variance keeps growing): the
autocorrelation-aware fit says so in its note. Measured numbers: docs/flatness.md.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from varprinciple.collect.train import train  # noqa: E402
from varprinciple.collect.trajectory import collect_trajectory  # noqa: E402
from varprinciple.stats.psi import psi_from_tables  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

#: one-layer "no inverse relation": the mean psi over seeds stays below this (theory ~0.1 from
#: the discrete-time factor 1/(2 - lr lambda) and the state-dependent noise; 6 seeds measured
#: -0.10..0.71, mean 0.14); the two-layer network's psi is ~2
NO_INVERSE = 0.5


def _fit(two_layer: bool, seed: int, *, n: int = 1000, sampler: str = "independent", lr: float = 0.05,
         window: int = 20_000):
    g = torch.Generator().manual_seed(seed)
    d = 10
    X = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.3, 2.0, d, dtype=torch.float64)
    y = X @ torch.randn(d, 1, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, 1, generator=g,
                                                                                   dtype=torch.float64)
    torch.manual_seed(seed)
    model = (torch.nn.Sequential(torch.nn.Linear(d, 10, bias=False), torch.nn.Linear(10, 1, bias=False))
             if two_layer else torch.nn.Linear(d, 1, bias=False)).double()
    train(model, "mse", X, y, method="sgd", lr=lr, steps=3000, batch_size=4, generator=g, sampler=sampler)
    res = collect_trajectory(model, "mse", X, y, method="sgd", lr=lr, batch_size=4, generator=g, window=window,
                             every=10, n_components=20 if two_layer else 9, profile_points=3, sampler=sampler)
    return psi_from_tables(res.pcs, res.projections, resamples=200, rng=np.random.default_rng(seed)), res.pcs


def _psi(two_layer: bool, seed: int, **kw) -> tuple[float, float]:
    fit, _ = _fit(two_layer, seed, **kw)
    return fit.psi, fit.p_value


def _no_inverse_relation(psis) -> bool:
    return float(np.mean(psis)) < NO_INVERSE


def _inverse_relation(fits) -> bool:
    return all(psi > 1.0 and p < 0.05 for psi, p in fits)


def test_one_layer_linear_regression_shows_no_inverse_relation():
    one = [_psi(False, s) for s in range(4)]
    assert _no_inverse_relation([p for p, _ in one]), one
    assert not _inverse_relation(one)


def test_two_layer_psi_rests_on_slow_diffusing_directions_and_says_so():
    # the two-layer network's psi ~ 2 (Gross et al.'s inverse relation) comes with PCs along
    # its rescaling symmetry that have almost no restoring force: they relax more slowly than
    # the 10,000-step window (n_eff ~ 2-6) and their variance keeps growing with it
    # (variance_ratio > 2); the row's note says the interval is outside its calibrated range
    # (docs/flatness.md: on the stationary PCs alone psi is ~0)
    for s in range(2):
        fit, pcs = _fit(True, s, lr=0.02, window=10_000)
        assert fit.psi > 1.0, fit
        assert fit.n_eff_min < 5 and "n_eff" in fit.note, fit.note
        n_eff = np.asarray(fit.n_eff)
        slow = np.isfinite(n_eff) & (n_eff < 10)
        ratio = pcs.sort_values("component")["variance_ratio"].to_numpy()
        assert np.median(ratio[slow]) > 2 > np.median(ratio[np.isfinite(n_eff) & ~slow])


def test_random_reshuffling_fakes_an_inverse_relation_in_one_layer():
    # the perturbation: the same check fails when the batches come from shuffled epochs and
    # an epoch (n / B = 50 steps) is shorter than the flat directions' relaxation (~220 steps)
    psis = [_psi(False, s, n=200, sampler="epochs")[0] for s in range(2)]
    assert not _no_inverse_relation(psis), psis
