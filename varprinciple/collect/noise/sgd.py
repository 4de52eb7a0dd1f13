"""SGD minibatch noise: per-sample projections, uniform subsets, exact variance and trace."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch.func import grad, jvp, vmap

from ...errors import ConfigError
from .._model import ProbedModel
from ..probe_settings import DEFAULT_MEMORY_BUDGET_MB
from ..progress import tick
from ._common import _BYTES, NoiseDraws, chunk_for as _chunk_for

__all__ = ["PerSampleProjections", "per_sample_projections", "sgd_subsets", "sgd_noise", "sgd_variance_factor"]


def sgd_variance_factor(n: int, B: int) -> float:
    """Finite-population factor :math:`(n-B)/(B(n-1))` of the without-replacement batch mean."""
    return (n - B) / (B * (n - 1))


@dataclass(frozen=True)
class PerSampleProjections:
    """Per-sample gradient projections ``P[i, j] = v_j^T g_i`` and exact moments.

    ``centred_sq_sum`` is :math:`\\sum_i \\lVert g_i - g \\rVert^2` (None on the JVP path,
    which never forms ``g_i``); ``method`` is the path used.
    """

    P: torch.Tensor
    centred_sq_sum: float | None
    method: str
    chunk: int
    gradients: torch.Tensor | None = None


def per_sample_projections(pm: ProbedModel, directions: torch.Tensor, *, gradient: torch.Tensor,
                           memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, method: str = "auto",
                           chunk: int | None = None, keep: bool = False) -> PerSampleProjections:
    """Directional derivatives ``P = G V`` of the per-sample losses, chunked by memory.

    ``method``: ``"vmap"`` (``vmap(grad)`` per chunk of samples, ``G_c V`` and the exact
    :math:`\\sum_i\\lVert g_i - g\\rVert^2` on the fly), ``"jvp"`` (forward-mode JVP of the
    per-sample loss vector along each direction: never forms a per-sample gradient; no
    trace), ``"loop"`` (one backward pass per sample; the oracle), or ``"auto"`` (vmap unless
    fewer than 8 per-sample gradients fit the budget, then jvp). ``gradient`` is the
    full-batch gradient :math:`g`. With ``keep=True`` the vmap path also returns the centred
    ``n x D`` per-sample gradients :math:`g_i - g` when they take at most a quarter of the
    budget (else None).
    """
    D, n = pm.n_params, pm.n
    V = directions.to(pm.dtype)
    act = pm.activation_numel()
    per = _BYTES * (2 * D + 4 * act)
    fit = _chunk_for(memory_budget_mb, per)
    if method == "auto":
        method = "vmap" if fit >= 8 or fit >= n else "jvp"
    if method == "vmap":
        keep = keep and n * D * _BYTES <= memory_budget_mb * 2**20 / 4
        if keep:  # the kept n x D gradients (their chunks and the concatenation) come out of the budget
            fit = _chunk_for(memory_budget_mb - 2 * n * D * _BYTES / 2**20, per)
        c = chunk or min(n, fit)
        f = vmap(grad(pm.one_sample_loss), in_dims=(None, 0, 0))
        Vp = list(V.split(pm.numels))
        gp = list(gradient.split(pm.numels))
        Ps, sq, Gs = [], [], []
        for s in range(0, n, c):
            Gd = f(pm.params, pm.X[s:s + c], pm.y[s:s + c])
            m = Gd[pm.names[0]].shape[0]
            # per parameter block (no n x D concatenation): P += G_p V_p, then centre G_p in
            # place and accumulate ||g_i - g||^2 per sample (row reductions and an exactly
            # rounded final sum: the trace does not depend on the number of torch threads)
            blocks = [Gd[name].contiguous().reshape(m, -1) for name in pm.names]  # own memory
            Ps.append(sum(G @ v for G, v in zip(blocks, Vp)))
            rows = torch.zeros(m, dtype=torch.float64, device=pm.device)
            for G, g in zip(blocks, gp):
                G.sub_(g)
                rows += torch.linalg.vector_norm(G, dim=1).square()  # no temporary, ~10x (G*G).sum(1)
            sq.append(rows)
            if keep:
                Gs.append(torch.cat(blocks, dim=1))
            del Gd, blocks
            tick(m, unit="samples", total=n)
        ss = math.fsum(torch.cat(sq).cpu().tolist())
        return PerSampleProjections(torch.cat(Ps), ss, "vmap", c, torch.cat(Gs) if keep else None)
    if method == "loop":
        Ps, sq = [], []
        leaves = {k: p.detach().clone().requires_grad_(True) for k, p in pm.params.items()}
        for i in range(n):
            with torch.enable_grad():
                li = pm.one_sample_loss(leaves, pm.X[i], pm.y[i])
                gi = torch.autograd.grad(li, list(leaves.values()), allow_unused=True, materialize_grads=True)
            g = torch.cat([t.reshape(-1) for t in gi])
            Ps.append(g @ V)
            sq.append(float(((g - gradient) ** 2).sum()))
            tick(1, unit="samples", total=n)
        return PerSampleProjections(torch.stack(Ps), math.fsum(sq), "loop", 1)
    if method == "jvp":
        d = V.shape[1]
        per_dir_sample = _BYTES * (3 * act + 1)
        c = chunk or max(1, min(n, _chunk_for(memory_budget_mb, per_dir_sample * max(d, 1))))
        tangents = pm.unflatten(V.T.contiguous())  # leading dim d

        def losses_along(t, Xc, yc):
            return jvp(lambda p: pm.sample_losses(p, Xc, yc), (pm.params,), (t,))[1]

        f = vmap(losses_along, in_dims=(0, None, None))
        Ps = []
        for s in range(0, n, c):
            Ps.append(f(tangents, pm.X[s:s + c], pm.y[s:s + c]).T)
            tick(Ps[-1].shape[0], unit="samples", total=n)
        return PerSampleProjections(torch.cat(Ps), None, "jvp", c)
    raise ConfigError(f"`method` must be one of 'auto', 'vmap', 'jvp', 'loop'; got {method!r}.")


def sgd_subsets(n: int, B: int, K: int, *, generator: torch.Generator) -> torch.Tensor:
    """``K`` independent uniform subsets of size ``B`` of ``range(n)``, without replacement
    within a subset; an int64 ``(K, B)`` tensor.

    Examples
    --------
    >>> import torch
    >>> S = sgd_subsets(10, 3, 4, generator=torch.Generator().manual_seed(0))
    >>> S.shape, all(len(set(r.tolist())) == 3 for r in S)
    (torch.Size([4, 3]), True)
    """
    out = []
    step = max(1, int(2**24 // max(n, 1)))
    for s in range(0, K, step):
        k = min(step, K - s)
        # the indices of the B largest of n iid uniforms form a uniform B-subset; topk is
        # O(n log B) per draw instead of a full argsort
        out.append(torch.rand(k, n, generator=generator).topk(B, dim=1, sorted=False).indices)
    return torch.cat(out) if out else torch.empty(0, B, dtype=torch.long)


def sgd_noise(pm: ProbedModel, directions: torch.Tensor, *, gradient: torch.Tensor, batch_size: int,
              n_samples: int, generator: torch.Generator, n_full: int = 0,
              memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, method: str = "auto",
              exact_variance: bool = True) -> NoiseDraws:
    """``n_samples`` SGD noise draws :math:`\\nabla R_B - \\nabla R_S` projected on ``directions``.

    Projections come from per-sample projections (one per-sample-gradient pass), so ``K``
    draws cost a gather. The first ``n_full`` draws are also formed as full vectors (one
    backward pass on their batch each) for matrix-free Tr(HC); their projections equal the
    corresponding rows of ``values``. The trace of C_B is exact on every path (the JVP path
    gets it from one per-sample backward pass at a time).
    """
    t0 = time.perf_counter()
    n, B = pm.n, int(batch_size)
    if not 1 <= B < n:
        raise ConfigError(f"`batch_size` must be in [1, n) with n={n} training samples; got {batch_size}.")
    ps = per_sample_projections(pm, directions, gradient=gradient, memory_budget_mb=memory_budget_mb,
                                method=method, keep=n_full > 0)
    P = ps.P.detach().double()
    Pbar = P.mean(0)
    idx = sgd_subsets(n, B, n_samples, generator=generator)
    vals = (P[idx].mean(1) - Pbar).cpu().numpy()
    fac = sgd_variance_factor(n, B)
    ev = None
    if exact_variance:
        ev = (fac * ((P - Pbar) ** 2).mean(0)).cpu().numpy()
    if ps.gradients is not None:  # centred per-sample gradients kept: a draw is a gather-mean
        full = ps.gradients.new_empty((min(n_full, len(idx)), pm.n_params))
        for j in range(full.shape[0]):  # one draw at a time: no n_full x B x D gather
            full[j] = ps.gradients[idx[j]].mean(0)
    else:  # one backward pass per draw on its batch
        full = _sgd_full(pm, idx[:n_full], gradient)
    # exact trace of C_B; the JVP path never forms g_i, so its sum comes from one backward
    # pass per sample (memory D; it does not depend on tr_hc_samples)
    ss = ps.centred_sq_sum if ps.centred_sq_sum is not None else _centred_sq_sum(pm, gradient)
    trace, exact = fac * ss / n, True
    return NoiseDraws("sgd", vals, full, float(trace), exact, ev, time.perf_counter() - t0,
                      {"method": ps.method, "chunk": ps.chunk, "batch_size": B, "subsets": idx})


def _sgd_full(pm: ProbedModel, idx: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    leaves = {k: p.detach().clone().requires_grad_(True) for k, p in pm.params.items()}
    out = gradient.new_empty((len(idx), pm.n_params))  # filled in place: no list of rows beside it
    for j, r in enumerate(idx):
        with torch.enable_grad():
            lb = pm.batch_loss(leaves, pm.X[r], pm.y[r])
            gb = torch.autograd.grad(lb, list(leaves.values()), allow_unused=True, materialize_grads=True)
        torch.cat([t.reshape(-1) for t in gb], out=out[j])
        out[j] -= gradient
    return out


def _centred_sq_sum(pm: ProbedModel, gradient: torch.Tensor) -> float:
    """:math:`\\sum_i \\lVert g_i - g \\rVert^2`, one per-sample backward pass at a time (memory D)."""
    leaves = {k: p.detach().clone().requires_grad_(True) for k, p in pm.params.items()}
    sq = []
    for i in range(pm.n):
        with torch.enable_grad():
            li = pm.one_sample_loss(leaves, pm.X[i], pm.y[i])
            gi = torch.autograd.grad(li, list(leaves.values()), allow_unused=True, materialize_grads=True)
        rows = [torch.linalg.vector_norm(t.reshape(-1) - g).square()
                for t, g in zip(gi, gradient.split(pm.numels))]
        sq.append(float(sum(rows)))
    return math.fsum(sq)
