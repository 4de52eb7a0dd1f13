"""The probe's plan, made before any expensive stage (:func:`~varprinciple.collect.probe.run_probe`):
the memory plan (:func:`memory_plan`, every D- and n-sized buffer against ``memory_budget_mb``,
:mod:`.memory`) and the cost plan (:func:`cost_plan`: units of work and expected seconds per
stage from one timed HVP and one timed per-sample chunk, with cheaper settings when it is long),
which the progress display (:mod:`.progress`) shows and corrects as it measures."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from ..errors import ConfigError
from ._model import ProbedModel
from .curvature import HessianOperator, hessian_graph_bytes
from .memory import MemoryPlan, plan_memory
from .noise import pair_chunk
from .probe_settings import ProbeSettings

__all__ = ["memory_plan", "cost_plan"]

#: eigsh's products per Lanczos vector of the basis (ncv) before it converges, from a cold start and
#: with a warm start (measured: 209 solver products at top-20, ncv 41, cold, on the 969k MLP)
_EIGSH_PER_NCV = {"cold": 4.5, "warm": 3.0}
#: an eigsh product costs this many bare HVPs (ARPACK's own work and the numpy round trips;
#: measured 2-4x on the 969k MLP)
_EIGSH_OVERHEAD = 2.0


def _n_eig(ncv: int, k: int, warm: bool) -> int:
    """Expected eigsh products (solver + residuals) for ``k`` eigenpairs with basis ``ncv``."""
    return int(round(_EIGSH_PER_NCV["warm" if warm else "cold"] * ncv)) + k


def memory_plan(pm: ProbedModel, settings: ProbeSettings, sites=None, pblocks=None) -> MemoryPlan:
    """The probe's :class:`~.memory.MemoryPlan` (every D- and n-sized buffer against the budget), or a
    one-line :class:`ConfigError` naming the smallest budget that would work."""
    k, m = settings.top_k, settings.n_random
    d = k + m + (sum(min(k, b.size) + m for b in pblocks) if pblocks else 0)
    return plan_memory(D=pm.n_params, n=pm.n, act=pm.activation_numel(), itemsize=torch.finfo(pm.dtype).bits // 8,
                       settings=settings, d=d, dropout_units=sites.unit_numel if sites is not None else 0,
                       dropout_cut_units=int(np.prod(sites.shapes[sites.cut])) if sites is not None else 0,
                       dropout_fast=bool(sites.fast_path_pays(d)) if sites is not None else False,
                       store_vectors=pm.n_params <= settings.store_vectors_max_params)


def cost_plan(pm: ProbedModel, op: HessianOperator, settings: ProbeSettings, sites, pblocks, mplan: MemoryPlan,
              *, warm: bool = False) -> dict:
    """Memory plan and cost estimate, made before any expensive stage: the memory plan's choices
    (ncv, HVP chunk, rooms) and the expected seconds per stage from one timed HVP (after an
    untimed one) and one timed per-sample chunk."""
    from .noise import dropout_data_chunk  # noqa: PLC0415
    n, D, k = pm.n, pm.n_params, settings.top_k
    budget = settings.memory_budget_mb
    z = torch.zeros(D, dtype=pm.dtype, device=pm.device)
    op.matvec(z)  # the first product may build the gradient graph and warm caches: not timed
    t = time.perf_counter()
    op.matvec(z)
    t_hvp = time.perf_counter() - t
    op.n_hvp -= 2
    n_eig = _n_eig(mplan.ncv, k, warm)
    plan = {
        "memory_budget_mb": budget,
        "hessian": "graph kept" if op.chunk is None else f"data chunks of {op.chunk}",
        "hessian_graph_mb": round(hessian_graph_bytes(pm) / 2**20, 1),
        "hessian_chunk": op.chunk,
        "memory": mplan.to_dict(),
        "seconds_per_hvp": t_hvp,
    }
    if sites is not None:
        plan["dropout_data_chunk"] = dropout_data_chunk(sites, mplan.rooms_mb["dropout"])
        plan["dropout_pair_chunk"] = pair_chunk(pm, mplan.rooms_mb["dropout"])
    rooms = [mplan.rooms_mb[x] for x in ("sgd", "dropout") if x in mplan.rooms_mb]
    t_s = _seconds_per_sample(pm, min(rooms)) if rooms else 0.0
    stages = _stage_plan(pm, settings, t_hvp, t_s, n_eig, pblocks, mplan.ncv)
    plan["stages"] = stages
    plan["hvp_estimate"] = {st: int(sum(u for u, unit, _ in p if unit == "HVPs")) for st, p in stages.items()}
    plan["seconds_estimate"] = {st: float(sum(e or 0.0 for *_, e in p)) for st, p in stages.items()}
    plan["seconds_total"] = float(sum(plan["seconds_estimate"].values()))
    plan["cheaper"] = _cheaper(pm, settings, t_hvp, t_s, pblocks, warm, plan["seconds_total"])
    plan["summary"] = (f"n={n}, D={D}, budget {budget} MB (planned peak {mplan.peak_mb:.0f} MB, eigsh ncv "
                       f"{mplan.ncv}), HVPs: {plan['hessian']} (full graph ~{plan['hessian_graph_mb']} MB), "
                       f"~{t_hvp * 1e3:.1f} ms/HVP; estimated total {plan['seconds_total']:.1f} s: "
                       + ", ".join(f"{st} {sec:.1f} s" for st, sec in plan["seconds_estimate"].items()))
    return plan


def _seconds_per_sample(pm: ProbedModel, room_mb: float) -> float:
    """One per-sample-gradient pass's seconds per sample (``vmap(grad)`` on up to 64 samples, as
    many as a quarter of ``room_mb`` holds; timed on its second call: the first traces)."""
    from torch.func import grad, vmap
    per = 8 * (2 * pm.n_params + 4 * pm.activation_numel())
    c = max(1, min(pm.n, 64, int(room_mb * 2**20 / 4 // per)))
    f = vmap(grad(pm.one_sample_loss), in_dims=(None, 0, 0))
    f(pm.params, pm.X[:c], pm.y[:c])
    t = time.perf_counter()
    f(pm.params, pm.X[:c], pm.y[:c])
    return (time.perf_counter() - t) / c


def _stage_plan(pm: ProbedModel, settings: ProbeSettings, t_hvp: float, t_s: float, n_eig: int,
                pblocks, ncv: int) -> dict[str, list[tuple]]:
    """Per stage, in the order they run, its pieces of work ``(units, unit, estimated seconds)`` for
    the progress display and the cost plan: eigsh products at :data:`_EIGSH_OVERHEAD` timed HVPs,
    other HVPs at the timed HVP's cost, per-sample passes at the timed per-sample chunk's, a
    dropout draw (one full-batch masked gradient, batched over draws) at one HVP's, an isotropic
    draw at ~20 ns per parameter; each source's Tr(HC) products (right after its draws) at one
    HVP each. Rough by design: the display corrects them per unit as it measures."""
    n, D, k = pm.n, pm.n_params, settings.top_k
    t_eig = _EIGSH_OVERHEAD * t_hvp
    plan: dict[str, list[tuple]] = {"hessian": [(n_eig, "HVPs", t_eig * n_eig)]}
    if pblocks:  # each block's eigensolve: about one whole-network eigensolve (full HVPs)
        n_blk = sum(_n_eig(min(ncv, b.size), min(k, b.size), False) for b in pblocks)
        plan["blocks"] = [(n_blk, "HVPs", t_eig * n_blk)]
    plan["flatness"] = [(settings.hutchinson_probes, "HVPs", t_hvp * settings.hutchinson_probes)]
    J = settings.tr_hc_samples
    n_full = min(J, settings.n_samples)
    src = {"sgd": [(n, "samples", n * t_s)],
           "dropout": ([(n, "samples", 2 * n * t_s)] if settings.exact_variance else [])
           + [(settings.n_dropout, "draws", settings.n_dropout * t_hvp)],
           "isotropic": [(settings.n_samples, "draws", settings.n_samples * D * 2e-8)]}
    for s in sorted(settings.sources, key=lambda x: x == "isotropic"):
        pieces = list(src.get(s, [(None, None, None)]))
        j = J if (s == "dropout" and settings.exact_variance) else n_full
        if J and j >= 3:
            pieces.append((j, "HVPs", t_hvp * j))
        plan[s] = pieces
    return plan


def _cheaper(pm: ProbedModel, settings: ProbeSettings, t_hvp: float, t_s: float, pblocks, warm: bool,
             total: float) -> list[dict]:
    """Cheaper settings with their estimated total seconds (each at most 80% of ``total``):
    fewer eigenpairs, fewer trace probes, fewer sampled dropout draws, a source left out."""
    s = settings
    cands: list[tuple[str, dict]] = []
    if s.top_k > 5:
        cands.append(("top_k = 5", {"top_k": 5}))
    if s.hutchinson_probes > 16 or s.tr_hc_samples > 16:
        cands.append(("hutchinson_probes = 16, tr_hc_samples = 16",
                      {"hutchinson_probes": min(16, s.hutchinson_probes), "tr_hc_samples": min(16, s.tr_hc_samples)}))
    if "dropout" in s.sources and s.n_dropout > 200:
        cands.append(("dropout_samples = 200", {"dropout_samples": 200}))
    for src in s.sources:
        rest = tuple(x for x in s.sources if x != src)
        if rest and (src != s.isotropic_of or "isotropic" not in rest):
            cands.append(("sources = [" + ", ".join(f'"{x}"' for x in rest) + "]", {"sources": rest}))
    out = []
    for label, change in cands:
        try:
            alt = replace(s, **change)
        except ConfigError:
            continue
        k = min(alt.top_k, pm.n_params)
        ncv = min(pm.n_params, max(2 * k + 1, 20))
        st = _stage_plan(pm, alt, t_hvp, t_s, _n_eig(ncv, k, warm), pblocks, ncv)
        sec = float(sum(e or 0.0 for p in st.values() for *_, e in p))
        if sec <= 0.8 * total:
            out.append({"settings": label, "seconds": sec})
    return sorted(out, key=lambda c: c["seconds"])
