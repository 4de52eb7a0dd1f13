"""Dropout mask noise: batched and cut-site draws, data chunks (the sites: :mod:`.dropout_sites`)."""

from __future__ import annotations

import logging
import math
import time

import torch
from torch.func import grad, jvp, vmap

from ...errors import ConfigError
from ..probe_settings import DEFAULT_MEMORY_BUDGET_MB
from ..progress import tick, ticking
from ._common import _BYTES, _CACHE_BYTES, NoiseDraws, chunk_for as _chunk_for, project
from .dropout_sites import DropoutSites

__all__ = ["DropoutSites", "dropout_gradients", "dropout_cut_tangents", "dropout_projections", "dropout_noise",
           "dropout_data_chunk"]

logger = logging.getLogger(__name__)


def dropout_gradients(sites: DropoutSites, masks: tuple[torch.Tensor, ...], *,
                      method: str = "vmap") -> torch.Tensor:
    """Full-batch gradients :math:`\\nabla R_{drop}(\\theta, \\eta_k)` for a stack of masks
    (``(K, n, *shape)`` per site) as a ``(K, D)`` tensor; ``method`` ``"vmap"`` (batched over
    draws) or ``"loop"`` (one backward pass per draw; the oracle)."""
    pm = sites.pm
    if method == "vmap":
        G = vmap(grad(sites.loss), in_dims=(None, 0))(pm.params, masks)
        return pm.flatten(G, batched=True)
    if method == "loop":
        leaves = {k: p.detach().clone().requires_grad_(True) for k, p in pm.params.items()}
        rows = []
        for j in range(masks[0].shape[0]):
            with torch.enable_grad():
                lj = sites.loss(leaves, tuple(m[j] for m in masks))
                gj = torch.autograd.grad(lj, list(leaves.values()), allow_unused=True, materialize_grads=True)
            rows.append(torch.cat([t.reshape(-1) for t in gj]))
        return torch.stack(rows)
    raise ConfigError(f"`method` must be 'vmap' or 'loop'; got {method!r}.")


def dropout_cut_tangents(sites: DropoutSites, directions: torch.Tensor, *,
                         memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB) -> tuple[torch.Tensor, torch.Tensor]:
    """The first dropout site's tensor ``h0`` ``(n, *shape)`` (dropout off) and its directional
    derivatives ``T[j] = J_h v_j`` ``(d, n, *shape)`` by forward-mode AD (mask-independent)."""
    pm = sites.pm
    with torch.no_grad():
        h0 = sites.cut_value(pm.params).detach()
    V = directions.to(pm.dtype)
    d = V.shape[1]
    if d == 0:
        return h0, h0.new_zeros((0, *h0.shape))
    tang = pm.unflatten(V.T.contiguous())
    f = vmap(lambda t: jvp(sites.cut_value, (pm.params,), (t,))[1])
    c = max(1, min(d, _chunk_for(memory_budget_mb, _BYTES * (pm.n * 4 * pm.activation_numel() + pm.n_params))))
    Ts = [f({k: v[s:s + c] for k, v in tang.items()}) for s in range(0, d, c)]
    return h0, torch.cat(Ts).detach()


def dropout_projections(sites: DropoutSites, masks: tuple[torch.Tensor, ...], directions: torch.Tensor, *,
                        h0: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Projections :math:`V^\\top \\nabla R_{drop}(\\theta, \\eta_k)` without the backward pass
    below the first dropout site: by the chain rule,
    :math:`v^\\top\\nabla R = \\partial_\\theta\\psi\\cdot v + \\partial_h\\psi \\cdot (J_h v)` where
    :math:`\\psi` is the loss with the first site's tensor ``h`` cut loose (exact, also with skip
    connections; ``T`` from :func:`dropout_cut_tangents`). Returns ``(K, d)`` (not centred)."""
    keeps = tuple(m != 0 for m in masks)
    sc = sites.scales()[sites.cut]
    return _cut_projections(sites, keeps, directions, h0s=h0 * sc, Ts=T.reshape(T.shape[0], -1) * sc)


def _cut_projections(sites: DropoutSites, keeps: tuple[torch.Tensor, ...], directions: torch.Tensor, *,
                     h0s: torch.Tensor, Ts: torch.Tensor) -> torch.Tensor:
    """:func:`dropout_projections` from boolean keeps, with ``h0s = h0 / keep_prob`` and
    ``Ts = T / keep_prob`` (``(d, n * units)``) scaled once per probe: the cut site's float mask
    is never formed and each per-draw tensor is touched by few elementwise passes (measured:
    those passes, not the matrix products, dominate the per-draw time)."""
    pm = sites.pm
    cut = sites.cut
    scales = sites.scales()
    zero = torch.zeros((), dtype=pm.dtype, device=pm.device)
    kc = keeps[cut]
    a = torch.where(kc, h0s, zero)  # the masked, scaled tensor at the cut
    masks = tuple(kc.new_zeros(kc.shape[0]).to(pm.dtype) if i == cut else torch.where(k, scales[i], zero)
                  for i, k in enumerate(keeps))  # the cut's entry is unused (cut_loss takes `a`)
    Gp, Ga = vmap(grad(sites.cut_loss, argnums=(0, 1)), in_dims=(None, 0, 0))(pm.params, a, masks)
    c = Ga.shape[0]
    Gm = torch.where(kc, Ga, zero)  # d R / d h = scale * keep * d R / d a; the scale sits in Ts
    return pm.flatten(Gp, batched=True) @ directions.to(pm.dtype) + Gm.reshape(c, -1) @ Ts.T


def dropout_noise(sites: DropoutSites, directions: torch.Tensor, *, gradient: torch.Tensor,
                  n_samples: int, generator: torch.Generator, n_full: int = 0,
                  memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, method: str = "auto",
                  trace_samples: int = 32) -> NoiseDraws:
    """``n_samples`` dropout noise draws :math:`\\nabla R_{drop}(\\theta,\\eta_k) - \\nabla R_S`
    projected on ``directions``, batched over draws in chunks sized by the memory budget.

    ``method``:

    * ``"auto"`` — ``"fast"`` when :meth:`DropoutSites.fast_path_pays` (most parameters lie
      below the first dropout site, e.g. dropout at the last hidden layer), else ``"vmap"``.
    * ``"fast"`` — the first ``max(n_full, min(K, trace_samples))`` draws are exact full
      gradients (``vmap`` over draws of ``grad``; kept as full vectors for Tr(HC) and the
      trace); the remaining draws use :func:`dropout_projections` (no backward pass below the
      first dropout site). The fast path is checked against the exact draws (relative error
      <= 1e-6 in float64) and abandoned, with a log warning, if it disagrees.
    * ``"vmap"`` — every draw an exact full gradient, batched over draws.
    * ``"loop"`` — one backward pass per draw (the oracle).

    The trace of C_drop is the centred (ddof=1) sample trace over the exact draws.
    """
    t0 = time.perf_counter()
    if method not in ("auto", "fast", "vmap", "loop"):
        raise ConfigError(f"`method` must be one of 'auto', 'fast', 'vmap', 'loop'; got {method!r}.")
    pm = sites.pm
    D, n, K = pm.n_params, pm.n, int(n_samples)
    act = pm.activation_numel()
    nc = dropout_data_chunk(sites, memory_budget_mb)
    if nc < n:
        return _dropout_noise_by_data(sites, directions, gradient=gradient, n_samples=K, generator=generator,
                                      n_full=n_full, memory_budget_mb=memory_budget_mb, method=method,
                                      trace_samples=trace_samples, chunk=nc, t0=t0)
    per = _BYTES * (3 * D + n * (6 * act + 2 * sites.unit_numel))
    c = max(1, min(K, _chunk_for(memory_budget_mb, per)))
    # cache-sized chunks: the per-draw work is dominated by elementwise passes over the masked
    # (draws, n, units) tensors, fastest when one such tensor stays near 12 MB (measured on CPU:
    # 16 draws of the digits MLP 1.9 ms/draw vs 2.8 ms/draw at 64)
    c = max(1, min(c, max(8, int(_CACHE_BYTES // (_BYTES * n * max(sites.unit_numel, 1))))))
    V = directions.to(pm.dtype)
    gV = (gradient @ V).detach()
    if method == "auto":
        method = "fast" if sites.fast_path_pays(V.shape[1]) else "vmap"
    n_exact = K if method != "fast" else min(K, max(n_full, trace_samples, 2))
    vals, fulls, check_masks = [], [], []
    s1 = torch.zeros(D, dtype=torch.float64, device=pm.device)
    s2: list[float] = []
    done = 0
    exact_method = "loop" if method == "loop" else "vmap"
    fast_ok = None
    while done < K:
        k = min(c, (n_exact if done < n_exact else K) - done)
        keeps = sites.draw_keeps(k, generator=generator)
        if done < n_exact:
            masks = sites.to_masks(keeps)
            xi = dropout_gradients(sites, masks, method=exact_method) - gradient
            vals.append(project(xi, V).detach())
            if done < n_full:
                fulls.append(xi[: n_full - done].detach())
            s1 += xi.sum(0).double()
            s2.extend(((xi.double() ** 2).sum(1)).cpu().tolist())  # per draw; summed exactly below
            if method == "fast" and done == 0:
                check_masks = [masks, vals[-1]]
        else:
            if fast_ok is None:
                h0, T = dropout_cut_tangents(sites, V, memory_budget_mb=memory_budget_mb)
                sc = sites.scales()[sites.cut]
                h0s, Ts = h0 * sc, T.reshape(T.shape[0], -1) * sc
                del T
                fast = _cut_projections(sites, tuple(m != 0 for m in check_masks[0]), V, h0s=h0s, Ts=Ts) - gV
                ref = check_masks[1]
                tol = 1e-6 if pm.dtype == torch.float64 else 1e-3
                err = float((fast - ref).abs().max() / ref.abs().max().clamp_min(1e-300))
                fast_ok = err <= tol
                if not fast_ok:
                    logger.warning("dropout fast projections disagree with exact gradients (rel. err %.2g); "
                                   "using exact gradients for all draws", err)
                check_masks = []
            if fast_ok:
                vals.append((_cut_projections(sites, keeps, V, h0s=h0s, Ts=Ts) - gV).detach())
            else:
                xi = dropout_gradients(sites, sites.to_masks(keeps), method="vmap") - gradient
                vals.append(project(xi, V).detach())
        done += k
        tick(k, unit="draws", total=K)
    Ke = n_exact
    s1sq = math.fsum(((s1 * s1).cpu()).tolist())
    trace = (math.fsum(s2) - s1sq / Ke) / (Ke - 1) if Ke > 1 else float("nan")
    full = torch.cat(fulls) if fulls else gradient.new_zeros((0, D))
    return NoiseDraws("dropout", torch.cat(vals).double().cpu().numpy(), full, float(trace), False, None,
                      time.perf_counter() - t0,
                      {"chunk": c, "drop_probs": sites.drop_probs, "sites": [s[0] for s in sites.sites],
                       "n_exact": n_exact, "fast_path": bool(fast_ok) if fast_ok is not None else False,
                       "mean_norm_exact": float((s1 / Ke).norm())})


def dropout_data_chunk(sites: DropoutSites, memory_budget_mb: float) -> int:
    """Samples per data chunk so that one dropout draw on the chunk fits ``memory_budget_mb``
    (``n`` when a draw on the whole batch fits)."""
    pm = sites.pm
    per_sample = _BYTES * (6 * pm.activation_numel() + 2 * sites.unit_numel)
    room = memory_budget_mb * 2**20 - _BYTES * 3 * pm.n_params
    return int(max(1, min(pm.n, room // per_sample)))


def _dropout_noise_by_data(sites: DropoutSites, directions: torch.Tensor, *, gradient: torch.Tensor,
                           n_samples: int, generator: torch.Generator, n_full: int, memory_budget_mb: float,
                           method: str, trace_samples: int, chunk: int, t0: float) -> NoiseDraws:
    """:func:`dropout_noise` summed over data chunks: R_drop = sum_c (n_c/n) R_drop,c with masks
    independent across samples, so each draw's projections (and full vectors) are the weighted
    sums of the chunks' (each chunk draws its own masks for all K draws). The trace is the
    centred sample trace of the first max(n_full, trace_samples, 2) draws, kept as full vectors."""
    pm = sites.pm
    D, n, K = pm.n_params, pm.n, int(n_samples)
    V = directions.to(pm.dtype)
    keep = min(K, max(n_full, trace_samples, 2))
    vals = torch.zeros(K, V.shape[1], dtype=torch.float64, device=pm.device)
    full = torch.zeros(keep, D, dtype=pm.dtype, device=pm.device)
    zero = torch.zeros(D, dtype=pm.dtype, device=pm.device)
    fast = []
    shown = 0
    try:
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            sites.pm = pm.subset(s, e)
            with ticking(lambda *_: None):  # progress counts draws over the whole batch, below
                nd = dropout_noise(sites, V, gradient=zero, n_samples=K, generator=generator, n_full=keep,
                                   memory_budget_mb=memory_budget_mb, method=method, trace_samples=trace_samples)
            now = K * e // n  # draws of the whole batch done, in proportion to the samples covered
            tick(now - shown, unit="draws", total=K)
            shown = now
            w = (e - s) / n
            vals += w * torch.from_numpy(nd.values).to(pm.device)
            full += w * nd.full
            fast.append(nd.extra["fast_path"])
    finally:
        sites.pm = pm
    vals -= (gradient @ V).double()
    full -= gradient
    xc = (full - full.mean(0)).double()
    trace = float((xc * xc).sum() / (keep - 1))
    return NoiseDraws("dropout", vals.cpu().numpy(), full[:n_full].detach(), trace, False, None,
                      time.perf_counter() - t0,
                      {"chunk": 1, "data_chunk": chunk, "drop_probs": sites.drop_probs,
                       "sites": [x[0] for x in sites.sites], "n_exact": keep, "fast_path": all(fast),
                       "mean_norm_exact": float(full.mean(0).norm())})
