"""Dropout noise's exact second moments from two masks per sample (per-sample-gradient passes).

With masks iid per sample (as ``nn.Dropout`` draws them), a dropout noise draw is a sum of
``n`` independent per-sample terms,
:math:`\\xi = \\frac1n\\sum_i (g_i(\\eta_i) - g_i)`, :math:`g_i(\\eta) = \\nabla\\ell_i(\\theta,\\eta)`,
so its covariance is :math:`C_{drop} = \\frac1{n^2}\\sum_i \\mathrm{Cov}_\\eta(g_i(\\eta))`.
For two independent masks :math:`a_i, b_i` per sample, :math:`\\delta_i = g_i(a_i) - g_i(b_i)`
has mean 0 and :math:`E[\\delta_i\\delta_i^\\top] = 2\\,\\mathrm{Cov}_\\eta(g_i)`, hence the
unbiased estimators (``docs/probes.md`` gives the derivation):

* :math:`\\widehat{v^\\top C v} = \\frac1{2n^2}\\sum_i (v^\\top\\delta_i)^2` per direction,
* :math:`\\widehat{\\mathrm{Tr}\\,C} = \\frac1{2n^2}\\sum_i \\lVert\\delta_i\\rVert^2`,
* :math:`\\widehat{\\mathrm{Tr}\\,HC} = \\frac1{2n^2}\\sum_{j<J} w_j^\\top H w_j` with
  :math:`w_j = \\sum_{i\\in G_j} s_i\\delta_i` over a random partition of the samples into
  ``J`` groups :math:`G_j` and Rademacher signs :math:`s_i` (the cross terms vanish in
  expectation): ``J`` Hessian-vector products, no extra backward pass.

All of it comes from one ``vmap(grad)`` pass over the samples with both masks (the cost of
two per-sample-gradient passes), chunked over samples by the memory budget. Standard errors
come from the ``J`` independent group sums.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, vmap

from ...errors import ConfigError
from ..probe_settings import DEFAULT_MEMORY_BUDGET_MB
from ..progress import tick

__all__ = ["DropoutPairMoments", "dropout_pair_moments", "pair_chunk"]

_BYTES = 8


@dataclass(frozen=True)
class DropoutPairMoments:
    """Unbiased estimates of dropout noise's exact moments from two masks per sample.

    Attributes
    ----------
    variance, variance_se : ndarray, ``(d,)``
        :math:`v_j^\\top C_{drop} v_j` per direction (column of the directions given) and its
        standard error (from the group sums; unreliable with few or dominating samples: the
        statistics use ``group_variance``'s jackknife instead, docs/statistics.md, "b from exact variances").
    trace, trace_se : float
        :math:`\\mathrm{Tr}\\,C_{drop}` and its standard error (from the group sums).
    group_trace : ndarray, ``(J,)``
        Per-group contributions to ``trace`` (they sum to it).
    W : torch.Tensor or None, ``(D, J)``
        Signed group sums :math:`w_j` of the per-sample differences (for Tr(HC)); None when
        ``n_groups`` is 0.
    n : int
        Training samples.
    chunk : int
        Samples per ``vmap`` chunk.
    seconds : float
    group_variance : ndarray, ``(J, d)``
        Per-group contributions to ``variance`` (they sum to it).
    """

    variance: np.ndarray
    variance_se: np.ndarray
    trace: float
    trace_se: float
    group_trace: np.ndarray
    W: torch.Tensor | None
    n: int
    chunk: int
    seconds: float
    group_variance: np.ndarray | None = None

    @property
    def n_groups(self) -> int:
        return int(self.group_trace.shape[0])


def pair_chunk(pm, memory_budget_mb: float) -> int:
    """Samples per chunk of the two-mask per-sample pass under ``memory_budget_mb``
    (each sample costs two per-sample gradients plus their activations)."""
    per = 2 * _BYTES * (2 * pm.n_params + 4 * pm.activation_numel())
    return max(1, min(pm.n, int(memory_budget_mb * 2**20 // per)))


def dropout_pair_moments(sites, directions: torch.Tensor, *, generator: torch.Generator,
                         n_groups: int = 64, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                         chunk: int | None = None) -> DropoutPairMoments:
    """Exact-moment estimates of dropout noise from two independent masks per sample.

    Parameters
    ----------
    sites : DropoutSites
        The dropout source (sites and drop probabilities) of a probed model.
    directions : torch.Tensor, ``(D, d)``
        Directions for the projected variances.
    generator : torch.Generator
        Draws the masks, the partition into groups and the signs.
    n_groups : int
        ``J`` groups for Tr(HC) and the standard errors (0: no ``W``; the trace SE is then
        from 2 groups). Capped at ``n``.
    memory_budget_mb : float
        Bounds the chunk of samples per ``vmap(grad)`` call.
    chunk : int, optional
        Force a chunk size (tests).

    Returns
    -------
    DropoutPairMoments

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from varprinciple.collect._model import ProbedModel
    >>> from varprinciple.collect.losses import Loss
    >>> from varprinciple.collect.noise import DropoutSites
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(50, 3, generator=g, dtype=torch.float64); y = torch.randn(50, 1, generator=g, dtype=torch.float64)
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.3), nn.Linear(4, 1))
    >>> pm = ProbedModel(net, Loss.MSE, X, y, dtype=torch.float64)
    >>> mom = dropout_pair_moments(DropoutSites(pm), torch.eye(pm.n_params, dtype=torch.float64)[:, :2],
    ...                            generator=g, n_groups=5)
    >>> mom.variance.shape, mom.W.shape, bool(mom.trace > 0)
    ((2,), torch.Size([21, 5]), True)
    """
    t0 = time.perf_counter()
    if not isinstance(n_groups, int) or n_groups < 0:
        raise ConfigError(f"`n_groups` must be an integer >= 0; got {n_groups!r}.")
    pm = sites.pm
    n = pm.n
    V = directions.to(pm.dtype)
    Vp = list(V.split(pm.numels))
    J = min(n_groups, n) if n_groups else 2
    c = chunk or pair_chunk(pm, memory_budget_mb)
    # random partition of the samples into J groups of (almost) equal size, and signs
    group = torch.randperm(n, generator=generator) % J
    signs = (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).to(pm.dtype)
    zero = torch.zeros((), dtype=pm.dtype, device=pm.device)
    scales = sites.scales()

    f = vmap(grad(sites.one_sample_loss), in_dims=(None, 0, 0, 0), randomness="error")
    gu2 = torch.zeros(J, V.shape[1], dtype=torch.float64, device=pm.device)
    gtr = torch.zeros(J, dtype=torch.float64, device=pm.device)
    Ws = [torch.zeros(J, k, dtype=pm.dtype, device=pm.device) for k in pm.numels] if n_groups else None
    for s in range(0, n, c):
        m = min(c, n - s)
        Xc, yc = pm.X[s:s + m], pm.y[s:s + m]
        # sample-major draws (m, 2, *shape): the masks do not depend on the chunk size
        u01 = torch.rand((m, 2, sites.unit_numel), generator=generator, dtype=torch.float32).to(pm.device)
        masks, o = [], 0
        for p, shape, sc in zip(sites.drop_probs, sites.shapes, scales):
            k = int(np.prod(shape))
            us = u01[:, :, o:o + k].transpose(0, 1).reshape(2 * m, *shape)
            masks.append(torch.where(us >= p, sc, zero))
            o += k
        masks = tuple(masks)
        G = f(pm.params, torch.cat([Xc, Xc]), torch.cat([yc, yc]), masks)
        u = torch.zeros(m, V.shape[1], dtype=pm.dtype, device=pm.device)
        rows = torch.zeros(m, dtype=torch.float64, device=pm.device)
        gc, sc_ = group[s:s + m].to(pm.device), signs[s:s + m].to(pm.device)
        for b, name in enumerate(pm.names):
            Gb = G[name].reshape(2 * m, -1)
            dlt = Gb[:m] - Gb[m:]
            u += dlt @ Vp[b]
            rows += torch.linalg.vector_norm(dlt, dim=1).double().square()
            if Ws is not None:  # scatter-add s_i delta_i into its group's row: O(m D), no J factor
                Ws[b].index_add_(0, gc, dlt * sc_[:, None])
        del G
        gu2.index_add_(0, gc, u.double() ** 2)
        gtr.index_add_(0, gc, rows)
        tick(m, unit="samples", total=n)
    norm = 2.0 * n * n
    gt = (gtr / norm).cpu().numpy()
    trace = math.fsum(gt.tolist())
    se = float(np.sqrt(J * gt.var(ddof=1))) if J > 1 else float("nan")
    W = torch.cat(Ws, dim=1).T.contiguous() if Ws is not None else None
    gv = (gu2 / norm).cpu().numpy()
    vse = np.sqrt(J * gv.var(axis=0, ddof=1)) if J > 1 else np.full(gv.shape[1], np.nan)
    return DropoutPairMoments(gv.sum(0), vse, float(trace), se, gt, W, n, c,
                              time.perf_counter() - t0, gv)
