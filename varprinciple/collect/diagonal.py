"""Per-parameter diagonals of the Hessian and of the SGD noise covariance (``[probe] diag_params``).

Zhang, Yang & Tu (2026, arXiv 2602.05600) relate, per fully connected layer and in parameter
coordinates, the diagonal of the SGD noise covariance to the diagonal of the Hessian:
:math:`C_{ii} \\propto H_{ii}^{\\gamma}`. This module measures both exactly on a uniform random
sample of up to ``m`` coordinates per block (all when the block has fewer):

* :math:`H_{ii} = e_i^T H e_i` from Hessian-vector products with unit vectors (the probe's
  :class:`~varprinciple.collect.curvature.HessianOperator`, data-chunked under the memory budget;
  columns in chunks);
* :math:`C_{ii} = \\frac{n-B}{B(n-1)} \\frac{1}{n} \\sum_j (g_{j,i} - g_i)^2`, the exact variance of
  coordinate ``i`` of the without-replacement minibatch gradient at the probe batch size ``B``
  (DESIGN.md's SGD noise), from per-sample gradients ``vmap(grad)`` in chunks of samples.
  The factor is common to every coordinate, so it moves only the intercept of log C on log H.

Blocks are the probe's ``blocks`` setting, or one per layer (``"layers"``) when it is unset.
Rows follow :data:`varprinciple.schema.DIAGONAL` (``docs/probes.md``).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import schema
from ._model import ProbedModel, resolve_dtype
from .blocks import LAYERS, resolve_blocks
from .curvature import HessianOperator, hessian_chunk
from .losses import parse_loss
from .noise import sgd_variance_factor
from .noise._common import _BYTES, chunk_for
from .probe_settings import batch_fits_iv

__all__ = ["sample_coordinates", "hessian_diagonal", "gradient_variance_diagonal", "diagonal_frame", "with_diagonal"]


def sample_coordinates(blocks, m: int, *, generator: torch.Generator) -> list[tuple[str, np.ndarray]]:
    """Per block ``(name, sorted flat coordinates)``: a uniform sample of ``min(m, D_b)`` of them
    without replacement (every coordinate when the block is smaller).

    Examples
    --------
    >>> from varprinciple.collect.blocks import ParameterBlock
    >>> bs = [ParameterBlock("a", ("a.w",), np.arange(0, 5)), ParameterBlock("b", ("b.w",), np.arange(5, 7))]
    >>> [(n, len(i)) for n, i in sample_coordinates(bs, 3, generator=torch.Generator().manual_seed(0))]
    [('a', 3), ('b', 2)]
    """
    out = []
    for b in blocks:
        if b.size <= m:
            idx = b.index.copy()
        else:
            pick = torch.randperm(b.size, generator=generator)[:m].numpy()
            idx = np.sort(b.index[pick])
        out.append((b.name, idx.astype(np.int64)))
    return out


def hessian_diagonal(op: HessianOperator, index: np.ndarray, *, memory_budget_mb: float) -> np.ndarray:
    """Exact :math:`H_{ii}` for the flat coordinates ``index``: ``e_i^T (H e_i)``, the unit
    vectors passed in column chunks whose ``D x c`` blocks take at most a quarter of the budget."""
    D = op.n_params
    c = max(1, min(len(index), int(memory_budget_mb * 2**20 / 4 / (2 * D * _BYTES))))
    out = np.empty(len(index))
    for s in range(0, len(index), c):
        sub = index[s:s + c]
        E = torch.zeros(D, len(sub), dtype=op.pm.dtype, device=op.pm.device)
        cols = torch.arange(len(sub), device=op.pm.device)
        rows = torch.as_tensor(sub, device=op.pm.device)
        E[rows, cols] = 1.0
        HE = op.matmat(E)
        out[s:s + len(sub)] = HE[rows, cols].detach().cpu().double().numpy()
    return out


def gradient_variance_diagonal(pm: ProbedModel, index: np.ndarray, *, gradient: torch.Tensor,
                               memory_budget_mb: float) -> np.ndarray:
    """:math:`\\frac1n\\sum_j (g_{j,i} - g_i)^2` for the flat coordinates ``index``, with ``g_j`` the
    per-sample gradients (``vmap(grad)`` over chunks of samples sized to the budget) and ``g``
    their mean (the full-batch gradient)."""
    from torch.func import grad, vmap
    f = vmap(grad(pm.one_sample_loss), in_dims=(None, 0, 0))
    n, D = pm.n, pm.n_params
    # per sample: its gradient, the flattened copy and the activations (as the SGD source plans it)
    c = max(1, min(n, chunk_for(memory_budget_mb, _BYTES * (3 * D + 4 * pm.activation_numel()))))
    idx = torch.as_tensor(index, device=pm.device)
    g = gradient.to(pm.device)[idx]
    acc = torch.zeros(len(index), dtype=torch.float64, device=pm.device)
    for s in range(0, n, c):
        Xc, yc = pm.X[s:s + c], pm.y[s:s + c]
        G = pm.flatten(f(pm.params, Xc, yc), batched=True)[:, idx]
        acc += ((G - g) ** 2).sum(dim=0).double()
        del G
    return (acc / n).cpu().numpy()


def diagonal_frame(model: nn.Module, loss, X, y, *, step: int, settings, generator: torch.Generator) -> pd.DataFrame:
    """schema.DIAGONAL rows of one probe: per block a sample of ``settings.diag_params``
    coordinates with their exact ``h_ii`` and ``c_ii`` (module docstring).

    Examples
    --------
    >>> from varprinciple.collect.probe_settings import ProbeSettings
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20, 3, generator=g); y = torch.randn(20, 1, generator=g)
    >>> s = ProbeSettings(sources=("sgd",), batch_size=4, diag_params=2)
    >>> d = diagonal_frame(nn.Linear(3, 1), "mse", X, y, step=0, settings=s, generator=g)
    >>> d[["block", "param"]].to_dict("list")  # a root parameter is its own block
    {'block': ['weight', 'weight', 'bias'], 'param': [1, 2, 3]}
    """
    pm = ProbedModel(model, parse_loss(loss), X, y, dtype=resolve_dtype(settings.dtype),
                     frozen_batchnorm=settings.frozen_batchnorm)
    budget = settings.memory_budget_mb
    op = HessianOperator(pm, chunk=hessian_chunk(pm, budget))
    blocks = resolve_blocks(settings.blocks if settings.blocks is not None else LAYERS, pm.names, pm.numels)
    batch_fits_iv(settings.batch_size, pm.n, key="`batch_size` (the SGD noise of `diag_params`)")
    factor = sgd_variance_factor(pm.n, settings.batch_size)
    parts = []
    for name, idx in sample_coordinates(blocks, settings.diag_params, generator=generator):
        h = hessian_diagonal(op, idx, memory_budget_mb=budget)
        c = factor * gradient_variance_diagonal(pm, idx, gradient=op.gradient, memory_budget_mb=budget)
        parts.append(pd.DataFrame({"step": np.full(len(idx), step, dtype=np.int64), "block": name,
                                   "param": idx, "h_ii": h, "c_ii": c}))
    return pd.DataFrame(pd.concat(parts, ignore_index=True), columns=list(schema.DIAGONAL.names))


def with_diagonal(res, model: nn.Module, loss, X, y, *, step: int, settings, generator: torch.Generator):
    """``res`` (a :class:`~varprinciple.collect.probe.ProbeResult`) with its ``diagonal`` table and
    timing when ``settings.diag_params`` asks for one (else ``res`` unchanged): the one place both
    :func:`~varprinciple.collect.probe.probe` and the probe runner add the stage, each passing its
    own stream (the runner a seeded one of its own, ``probe`` the caller's generator)."""
    if not settings.diag_params:
        return res
    t = time.perf_counter()
    diag = diagonal_frame(model, loss, X, y, step=step, settings=settings, generator=generator)
    return replace(res, diagonal=diag, timings={**res.timings, "diagonal": time.perf_counter() - t})
