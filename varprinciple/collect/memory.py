"""The probe's memory plan: every buffer that grows with D or n, counted against ``memory_budget_mb``.

A probe holds, besides its inputs and torch's own start-up (outside the budget):

* **persistent** for the whole probe: a few D-vectors (parameter copies, the full-batch
  gradient, the warm start), the full batch's double-backward graph when it is kept
  (:data:`~.curvature.GRAPH_FACTOR` x itemsize x activations x n);
* **Hessian** (eigsh): ARPACK's Lanczos basis ``ncv x D`` (float64) and work vectors, the
  returned eigenvectors ``k x D``; then the residuals, in blocks of ``columns`` products;
* **directions** (after the Hessian): the eigenvectors (float64) and the ``d = k + m (+ blocks)``
  directions every source projects on;
* per **source**, one at a time: its full draws for Tr(HC) (``tr_hc_samples x D``; dropout's
  signed group sums), its fast-path tangents (dropout at a cut site: ``d x n x units``), and
  its chunked work (per-sample gradients, two-mask pairs, draws), which gets whatever room is
  left (:attr:`MemoryPlan.rooms`, passed to the source as its budget);
* **flatness**: the Hutchinson probes (int8, ``h x D`` bytes) and blocks of ``columns``
  products; each source's Tr(HC) right after its draws, so only one source's full draws are
  held at a time.

:func:`plan_memory` picks the Krylov basis size ``ncv``, the HVP data chunk (or the kept graph),
the block of columns per product and each source's room from the budget, and refuses up front
(one-line :class:`~varprinciple.errors.ConfigError` naming ``memory_budget_mb`` and the smallest
budget that would work) when even the smallest setting does not fit. Its estimate of every
stage's peak is checked against measured peak RSS in ``tests/test_memory.py``.

This module imports no torch (it counts bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = ["MemoryPlan", "plan_memory", "GRAPH_FACTOR", "MIN_ROOM_ITEMS", "WORK_FACTOR"]

MB = 2**20
#: Bytes of a kept double-backward graph per sample, in units of (activation elements x
#: itemsize): measured 5.3 (MLP 64-300-300-10) and 2.5 (small CNN) with ru_maxrss; 8 leaves a margin.
GRAPH_FACTOR = 8
#: the smallest room a source's chunked work may get: this many of its items (samples / draws)
MIN_ROOM_ITEMS = 1
#: a source's measured peak over the budget its chunk rules are given (the room): the dropout
#: draws' rule counts 3 D-vectors per draw where the batched gradients, their flattening and
#: centring hold about 5 (measured 1.6x on a 528k-parameter MLP, tests/test_memory.py)
WORK_FACTOR = {"dropout": 2.0}
_F64 = 8


@dataclass(frozen=True)
class MemoryPlan:
    """What the probe may hold, stage by stage, under ``budget_mb``.

    Attributes
    ----------
    budget_mb : float
    ncv : int
        Lanczos basis size for eigsh (``max(2k + 1, 20)`` capped at D, lowered to fit).
    hessian_chunk : int or None
        Samples per HVP data chunk; None keeps the whole batch's graph (the fast path).
    columns : int
        Hessian-vector products formed together (residuals, Hutchinson, Tr(HC) blocks).
    rooms_mb : dict
        Per source, the budget (MB) its chunked work gets (the rest is held by the probe, and
        :data:`WORK_FACTOR` covers a source whose chunk rule undercounts).
    peaks_mb : dict
        Estimated peak (MB) of each stage under this plan (all buffers the probe holds then).
    required_mb : float
        The smallest budget with which some setting fits (the refusal names it).
    """

    budget_mb: float
    ncv: int
    hessian_chunk: int | None
    columns: int
    rooms_mb: dict = field(default_factory=dict)
    peaks_mb: dict = field(default_factory=dict)
    required_mb: float = 0.0

    @property
    def peak_mb(self) -> float:
        return max(self.peaks_mb.values())

    def to_dict(self) -> dict:
        return {"budget_mb": self.budget_mb, "ncv": self.ncv, "hessian_chunk": self.hessian_chunk,
                "columns": self.columns, "rooms_mb": {k: round(v, 1) for k, v in self.rooms_mb.items()},
                "peaks_mb": {k: round(v, 1) for k, v in self.peaks_mb.items()},
                "peak_mb": round(self.peak_mb, 1), "required_mb": float(_mb_up(self.required_mb * MB))}


def _mb_up(b: float) -> str:
    """Bytes as MB rounded up: whole MB from 10 MB, else two decimals."""
    mb = b / MB
    return str(math.ceil(mb)) if mb >= 10 else f"{math.ceil(mb * 100) / 100:.2f}"


def _per_item(source: str, *, D: int, act: int, n: int, units: int, d: int) -> float:
    """Bytes one item of a source's chunked work needs at least (the sources' own chunk rules)."""
    if source == "sgd":  # one per-sample gradient + its activations (vmap(grad))
        return _F64 * (2 * D + 4 * act)
    if source == "dropout":  # two masks' per-sample gradients; a draw on one sample's data
        return max(2 * _F64 * (2 * D + 4 * act), _F64 * (3 * D + 6 * act + 2 * units))
    if source == "isotropic":  # one Gaussian vector and its copy
        return _F64 * 2 * D
    return _F64 * (2 * D + 4 * act)  # a registered source of unknown cost: as a per-sample gradient


def plan_memory(*, D: int, n: int, act: int, itemsize: int, settings, d: int | None = None,
                dropout_units: int = 0, dropout_cut_units: int = 0, dropout_fast: bool = False,
                store_vectors: bool = False) -> MemoryPlan:
    """The memory plan of one probe (module docstring), or a :class:`ConfigError` when no
    setting fits ``settings.memory_budget_mb``.

    Parameters
    ----------
    D, n, act, itemsize : int
        Trainable parameters, training samples, activation elements per sample, probe dtype's bytes.
    settings : ProbeSettings
    d : int, optional
        Directions the sources project on (default ``top_k + n_random``; more with blocks).
    dropout_units, dropout_cut_units : int
        Mask elements per sample over all dropout sites, and at the cut site.
    dropout_fast : bool
        The dropout draws take the cut-site fast path (its tangents ``d x n x cut units``).
    store_vectors : bool
        The eigenvectors are logged (``k x D`` float32 in the eigen table).

    Examples
    --------
    >>> from varprinciple.collect.probe_settings import ProbeSettings
    >>> p = plan_memory(D=969_450, n=2000, act=3572, itemsize=8, settings=ProbeSettings())  # MLP 784-1024-160-10
    >>> p.hessian_chunk is None, p.ncv, p.peak_mb <= 2048
    (True, 41, True)
    >>> plan_memory(D=9_523_722, n=256, act=16916, itemsize=8, settings=ProbeSettings())  # 784-4096-1536-10
    Traceback (most recent call last):
    ...
    varprinciple.errors.ConfigError: `memory_budget_mb` = 2048 is too small for this probe (D = 9523722, n = 256, top_k = 20): it needs at least 8803 MB (dropout: directions 30 x D, group sums 64 x D); raise memory_budget_mb or lower top_k, n_random, tr_hc_samples.
    """
    s = settings
    B = float(s.memory_budget_mb) * MB
    k, m, J, h = s.top_k, s.n_random, s.tr_hc_samples, s.hutchinson_probes
    d = k + m if d is None else d
    it = itemsize
    Dv = D * it
    base = 7 * Dv + (k * D * 4 if store_vectors else 0)  # params, leaves, gradient, graph's gradient, warm start
    tables = 6 * _F64 * d * (s.n_samples + s.n_dropout) * len(s.sources)  # projections and frames
    persistent = base + tables
    held_dirs = (k * D * _F64 if it != _F64 else 0) + d * Dv  # the directions (float64: eigenvectors a view)
    n_full = min(J, s.n_samples)
    ncv_default = min(D, max(2 * k + 1, 20))
    ncv_min = min(D, k + 2)

    def graph(c: int) -> float:
        return GRAPH_FACTOR * it * act * c

    def hvp(c: int | None) -> float:  # one product: the chunk's graph when chunked, a few D-vectors
        return (0 if c is None else graph(c)) + 3 * Dv

    def stages(ncv: int, c: int | None, r: int, item_rooms: dict) -> dict[str, float]:
        g = persistent + (graph(n) if c is None else 0)  # a kept graph: during the stages with products
        # basis + ARPACK's work vectors and the start vector; z and its sorted copy
        out = {"hessian": g + hvp(c) + _F64 * (ncv + 5) * D + 2 * _F64 * k * D,
               "residuals": g + k * D * _F64 + hvp(c) + 3 * r * Dv}
        flat = g + held_dirs + hvp(c) + 4 * r * Dv + h * D  # int8 probes
        out["flatness"] = flat
        for src in s.sources:
            held = persistent + held_dirs  # the graph is freed while a source draws
            if src == "dropout":  # group sums (or full draws) + the draws kept for the trace (x3 by data chunk)
                keep = min(s.n_dropout, max(0 if s.exact_variance else n_full, 4 if s.exact_variance else 32, 2))
                # the draws' full vectors stay referenced (a view) until Tr(HC) is done
                full = (J if s.exact_variance else n_full) * Dv + keep * Dv
                fast = 2 * (d + 1) * n * dropout_cut_units * it if dropout_fast else 0  # cut-site tangents
                sampling = held + full + 2 * keep * Dv + fast
            else:
                full = n_full * Dv
                sampling = held + full
            out[src] = sampling + WORK_FACTOR.get(src, 1.0) * item_rooms[src]
            out[f"{src} Tr(HC)"] = g + held_dirs + full + hvp(c) + 4 * r * Dv
        return out

    min_items = {src: MIN_ROOM_ITEMS * _per_item(src, D=D, act=act, n=n, units=dropout_units, d=d)
                 for src in s.sources}
    floor = stages(ncv_min, 1, 1, min_items)
    required = max(floor.values())
    if required > B:
        worst = max(floor, key=floor.get)
        what = {"hessian": f"eigensolver: Lanczos basis {ncv_min} x D and {k} eigenvectors, float64",
                "residuals": "eigenvector residuals",
                "dropout": f"dropout: directions {d} x D, group sums {J} x D"
                + (f", cut-site tangents {d} x n x {dropout_cut_units}" if dropout_fast else "")
                }.get(worst, f"{worst}: directions {d} x D, full draws {n_full} x D")
        raise ConfigError(
            f"`memory_budget_mb` = {s.memory_budget_mb:g} is too small for this probe (D = {D}, n = {n}, "
            f"top_k = {k}): it needs at least {_mb_up(required)} MB ({what}); raise memory_budget_mb "
            "or lower top_k, n_random, tr_hc_samples.")

    def fits(ncv: int, c: int | None, r: int) -> bool:
        return max(stages(ncv, c, r, min_items).values()) <= B

    def largest_ncv(c: int | None) -> int:
        ncv = ncv_default
        while ncv > ncv_min and not fits(ncv, c, 1):
            ncv -= 1
        return ncv

    # the HVP plan: keep the whole batch's graph (the fast path) when it fits half the budget beside
    # the smallest basis; then the largest basis that fits; else the largest basis with one-sample
    # data chunks, then the largest data chunk that fits beside it (the basis first: a smaller one
    # costs more products, a smaller data chunk only more overhead per product)
    if graph(n) <= B / 2 and fits(ncv_min, None, 1):
        c = None
        ncv = largest_ncv(None)
    else:
        ncv = largest_ncv(1)
        lo, hi = 1, max(1, min(n - 1, int(B / 2 // (GRAPH_FACTOR * it * max(act, 1)))))
        while lo < hi:  # the largest chunk that fits (fits() is monotone in c)
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(ncv, mid, 1) else (lo, mid - 1)
        c = lo
    # products formed together: as many as fit, up to the largest block used when HVPs go by data
    # chunk (a block shares each chunk's graph); 8 with the graph kept (products are one at a time)
    r = max(1, k, h, J) if c is not None else min(8, max(1, k, h, J))
    while r > 1 and not fits(ncv, c, r):
        r = max(1, r // 2)
    # each source's room: what is left of the budget at its stage
    zero = dict.fromkeys(s.sources, 0.0)
    held = stages(ncv, c, r, zero)
    rooms = {src: max(min_items[src], (B - held[src]) / WORK_FACTOR.get(src, 1.0)) for src in s.sources}
    peaks = stages(ncv, c, r, rooms)
    return MemoryPlan(budget_mb=float(s.memory_budget_mb), ncv=int(ncv), hessian_chunk=c, columns=int(r),
                      rooms_mb={src: v / MB for src, v in rooms.items()},
                      peaks_mb={st: v / MB for st, v in peaks.items()}, required_mb=required / MB)
