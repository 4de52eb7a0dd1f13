"""Noise sources of the probes: SGD minibatch noise, dropout mask noise, isotropic control.

Definitions (DESIGN.md, binding):

* **sgd** — a sample is :math:`\\xi = \\nabla R_B(\\theta) - \\nabla R_S(\\theta)` with
  :math:`B` drawn uniformly *without replacement* (``B < n``); the ``K`` draws are
  independent subsets. Exactly, along a unit direction ``v``:
  :math:`v^\\top C_B v = \\frac{n-B}{B(n-1)} \\cdot \\frac1n \\sum_i (v^\\top(g_i - g))^2`.
* **dropout** — :math:`\\xi = \\nabla R_{drop}(\\theta, \\eta_k) - \\nabla R_S(\\theta)` on the
  full batch, masks iid per sample and per unit as ``nn.Dropout`` in train mode (keep with
  probability ``1 - drop_prob``, kept units scaled by ``1 / (1 - drop_prob)``). Its mean
  is :math:`\\nabla R_1 \\neq 0`, so all its second moments are centred (ddof = 1).
* **isotropic** — :math:`\\xi \\sim N(0, \\frac{\\mathrm{tr}\\, C}{D} I_D)`, full
  ``D``-dimensional vectors with the trace of the source they control for.

Every source's full noise vectors go through the one projection :func:`project`
(``xi @ V``). The SGD fast path gets the same projections without forming each
``D``-vector: per-sample directional derivatives ``P = G V`` (``n x d``) are computed in
chunks sized by a memory budget (``torch.func.vmap(grad)``, or forward-mode JVPs when even a
small chunk of per-sample gradients would not fit), then a draw is the mean of ``P`` over
its subset minus the full mean.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import grad, jvp, vmap

from ..errors import ConfigError
from ._model import ProbedModel

__all__ = [
    "NoiseDraws",
    "PerSampleProjections",
    "DropoutSites",
    "project",
    "random_directions",
    "per_sample_projections",
    "sgd_subsets",
    "sgd_noise",
    "dropout_noise",
    "dropout_data_chunk",
    "dropout_gradients",
    "dropout_cut_tangents",
    "dropout_projections",
    "isotropic_noise",
    "sgd_variance_factor",
]

logger = logging.getLogger(__name__)

_BYTES = 8
_CACHE_BYTES = 12 * 2**20


def project(noise: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Project noise vectors ``(K, D)`` on directions ``(D, d)``: the ``(K, d)`` matrix ``noise @ V``.

    The single projection used for every source whose full vectors exist.

    Examples
    --------
    >>> import torch
    >>> project(torch.tensor([[1.0, 2.0]]), torch.eye(2))
    tensor([[1., 2.]])
    """
    return noise @ directions.to(noise.dtype)


def random_directions(D: int, m: int, *, generator: torch.Generator,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``m`` independent uniformly random unit directions in R^D, as columns ``(D, m)``.

    Examples
    --------
    >>> import torch
    >>> R = random_directions(5, 3, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(R.norm(dim=0), torch.ones(3, dtype=torch.float64))
    True
    """
    R = torch.randn(D, m, generator=generator, dtype=torch.float64)
    return (R / R.norm(dim=0, keepdim=True)).to(dtype)


def sgd_variance_factor(n: int, B: int) -> float:
    """Finite-population factor :math:`(n-B)/(B(n-1))` of the without-replacement batch mean."""
    return (n - B) / (B * (n - 1))


@dataclass(frozen=True)
class NoiseDraws:
    """``K`` draws of one noise source, projected on ``d`` directions.

    Attributes
    ----------
    source : str
    values : ndarray, ``(K, d)``
        Projections (Hessian directions first, by rank, then random ones).
    full : torch.Tensor, ``(K_full, D)``
        The first ``K_full`` draws as full vectors (for matrix-free Tr(HC)).
    trace : float
        Trace of the source covariance: exact for sgd (per-sample gradients) and isotropic
        (by construction), the centred (ddof=1) sample trace for dropout.
    trace_exact : bool
    exact_variance : ndarray or None, ``(d,)``
        Exact variance along each direction, when known (sgd, isotropic).
    """

    source: str
    values: np.ndarray
    full: torch.Tensor
    trace: float
    trace_exact: bool
    exact_variance: np.ndarray | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])


# ============================================================================ per-sample


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


def _chunk_for(budget_mb: float, per_item_bytes: float) -> int:
    return max(1, int(budget_mb * 2**20 // max(per_item_bytes, 1)))


def per_sample_projections(pm: ProbedModel, directions: torch.Tensor, *, gradient: torch.Tensor,
                           memory_budget_mb: float = 2048, method: str = "auto",
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
        c = chunk or min(n, fit)
        f = vmap(grad(pm.one_sample_loss), in_dims=(None, 0, 0))
        Vp = list(V.split(pm.numels))
        gp = list(gradient.split(pm.numels))
        Ps, sq, Gs = [], [], []
        keep = keep and n * D * _BYTES <= memory_budget_mb * 2**20 / 4
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
        return PerSampleProjections(torch.stack(Ps), math.fsum(sq), "loop", 1)
    if method == "jvp":
        d = V.shape[1]
        per_dir_sample = _BYTES * (3 * act + 1)
        c = chunk or max(1, min(n, _chunk_for(memory_budget_mb, per_dir_sample * max(d, 1))))
        tangents = pm.unflatten(V.T.contiguous())  # leading dim d

        def losses_along(t, Xc, yc):
            return jvp(lambda p: pm.sample_losses(p, Xc, yc), (pm.params,), (t,))[1]

        f = vmap(losses_along, in_dims=(0, None, None))
        Ps = [f(tangents, pm.X[s:s + c], pm.y[s:s + c]).T for s in range(0, n, c)]
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
              memory_budget_mb: float = 2048, method: str = "auto",
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
        full = ps.gradients[idx[:n_full]].mean(1)
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
    rows = []
    for r in idx:
        with torch.enable_grad():
            lb = pm.batch_loss(leaves, pm.X[r], pm.y[r])
            gb = torch.autograd.grad(lb, list(leaves.values()), allow_unused=True, materialize_grads=True)
        rows.append(torch.cat([t.reshape(-1) for t in gb]) - gradient)
    if not rows:
        return gradient.new_zeros((0, pm.n_params))
    return torch.stack(rows)


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


# ============================================================================ dropout


class DropoutSites:
    """Where dropout acts in a probed model, with explicit, externally drawn masks.

    Sites are the model's ``nn.Dropout`` modules (their ``p`` is the DROP probability;
    ``drop_prob`` overrides it when given), or the named modules ``layers`` (dropout on
    their outputs, at ``drop_prob``), or — when the model has no ``nn.Dropout``, no layers
    are named and ``drop_prob`` is given — the *input of the last* ``nn.Linear`` (dropout at
    the last hidden layer, the setting of the paper's :math:`R_1`). Hooks multiply each
    site's tensor by ``mask / keep`` only while masks are set, so the Hessian and SGD probes
    see the model with dropout off.
    """

    def __init__(self, pm: ProbedModel, *, drop_prob: float | None = None,
                 layers: tuple[str, ...] | None = None):
        self.pm = pm
        mods = dict(pm.module.named_modules())
        sites: list[tuple[str, nn.Module, float, str]] = []
        if layers is not None:
            if not layers:
                raise ConfigError("`dropout_layers`: give at least one module name (or None for the "
                                  "model's nn.Dropout modules).")
            if drop_prob is None:
                raise ConfigError("`dropout_layers` needs `drop_prob` (the DROP probability) to be set.")
            for name in layers:
                if name not in mods:
                    known = ", ".join(repr(k) for k in mods if k) or "none"
                    raise ConfigError(f"`dropout_layers` names unknown module {name!r}; modules: {known}.")
                sites.append((name, mods[name], float(drop_prob), "output"))
        else:
            others = [k for k, m in mods.items()
                      if isinstance(m, nn.modules.dropout._DropoutNd) and type(m) is not nn.Dropout]
            if others:
                raise ConfigError(f"dropout source supports nn.Dropout only; module {others[0]!r} is "
                                  f"{type(mods[others[0]]).__name__} (name `dropout_layers` instead).")
            for k, m in mods.items():
                if type(m) is nn.Dropout:
                    sites.append((k, m, float(drop_prob if drop_prob is not None else m.p), "output"))
            if not sites:
                if drop_prob is None:
                    raise ConfigError("dropout source: the model has no nn.Dropout; set `drop_prob` "
                                      "(and optionally `dropout_layers`).")
                lin = [k for k, m in mods.items() if isinstance(m, nn.Linear)]
                if not lin:
                    raise ConfigError("dropout source: no nn.Dropout and no nn.Linear in the model; "
                                      "name `dropout_layers`.")
                sites.append((lin[-1], mods[lin[-1]], float(drop_prob), "input"))
        for name, _, p, _ in sites:
            if not 0.0 < p < 1.0:
                raise ConfigError(f"drop probability at {name!r} must be in (0, 1); got {p}.")
        self.sites = sites
        self._masks: tuple | None = None
        self._cut_h: torch.Tensor | None = None
        self._capture: dict | None = None
        self.cut = -1
        self._handles = []
        for i, (_, mod, _, where) in enumerate(sites):
            if where == "output":
                self._handles.append(mod.register_forward_hook(self._out_hook(i)))
            else:
                self._handles.append(mod.register_forward_pre_hook(self._in_hook(i)))
        self.shapes = self._record_shapes()
        self._check_functional(mods)

    def _check_functional(self, mods) -> None:
        """Refuse (one line, naming the call) when the model applies dropout in train mode that
        is not one of the sites: functional dropout (e.g. attention dropout via
        ``scaled_dot_product_attention(dropout_p=...)`` or ``F.dropout``) or an ``nn.Dropout``
        left out by ``dropout_layers`` would otherwise be silently missing from the source."""
        from ._model import random_calls
        ok = frozenset(id(mod) for _, mod, _, where in self.sites if where == "output" and type(mod) is nn.Dropout)
        pm = self.pm
        found = random_calls(pm.module, lambda: pm.forward(pm.params, pm.X[:2]), train=True, allowed=ok)
        if found:
            more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
            raise ConfigError(f"dropout source: the model applies dropout in train mode that the probe cannot "
                              f"include: {found[0]}{more}; set it to 0 (e.g. the attention's dropout) or name "
                              f"it in `dropout_layers`, or remove 'dropout' from `sources`.")

    def _site_value(self, i, t):
        if i == self.cut:
            if self._capture is not None:
                self._capture["h"] = t
            if self._cut_h is not None:  # already masked (see cut_loss)
                return self._cut_h
        return t if self._masks is None else t * self._masks[i]

    def _out_hook(self, i):
        def hook(_mod, _inp, out):
            if self._masks is None and self._cut_h is None and self._capture is None:
                return None
            return self._site_value(i, out)
        return hook

    def _in_hook(self, i):
        def hook(_mod, inp):
            if self._masks is None and self._cut_h is None and self._capture is None:
                return None
            return (self._site_value(i, inp[0]),) + tuple(inp[1:])
        return hook

    def _record_shapes(self) -> list[tuple[int, ...]]:
        shapes: list = [None] * len(self.sites)
        order: list[int] = []

        def seen(i, shape):
            if shapes[i] is None:
                order.append(i)
            shapes[i] = shape

        hs = []
        for i, (_, mod, _, where) in enumerate(self.sites):
            if where == "output":
                hs.append(mod.register_forward_hook(
                    lambda _m, _i, o, i=i: seen(i, tuple(o.shape[1:]))))
            else:
                hs.append(mod.register_forward_pre_hook(
                    lambda _m, inp, i=i: seen(i, tuple(inp[0].shape[1:]))))
        # parameters used before the first site fires (the part the cut-site shortcut skips)
        own = {}
        for mname, mod in self.pm.module.named_modules():
            own[id(mod)] = [f"{mname}.{p}" if mname else p for p, _ in mod.named_parameters(recurse=False)]
        lower: set[str] = set()

        def mark(mod, _i, _o):
            first = self.sites[order[0]] if order else None
            if first is None or (first[1] is mod and first[3] == "output"):
                lower.update(own.get(id(mod), []))

        hs += [m.register_forward_hook(mark) for m in self.pm.module.modules()]
        try:
            with torch.no_grad():
                self.pm.forward(self.pm.params, self.pm.X[:1])
        finally:
            for h in hs:
                h.remove()
        for i, s in enumerate(shapes):
            if s is None:
                raise ConfigError(f"dropout site {self.sites[i][0]!r} is not used by the model's forward.")
        self.cut = order[0]
        self.lower_numel = int(sum(k for name, k in zip(self.pm.names, self.pm.numels) if name in lower))
        return shapes

    def fast_path_pays(self, d: int) -> bool:
        """Whether the cut-site shortcut should beat exact per-draw gradients: per sample it costs
        about 3 x (parameters above the cut) + d x (units at the cut) multiply-adds against
        3 x D for a full forward+backward pass; use it when that is under half."""
        upper = self.pm.n_params - self.lower_numel
        cut_units = int(np.prod(self.shapes[self.cut]))
        return 3 * upper + d * cut_units < 1.5 * self.pm.n_params

    @property
    def drop_probs(self) -> list[float]:
        return [p for _, _, p, _ in self.sites]

    @property
    def unit_numel(self) -> int:
        """Mask elements per sample over all sites."""
        return int(sum(int(np.prod(s)) for s in self.shapes))

    def draw_keeps(self, K: int, *, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``K`` draws of boolean keep masks, one ``(K, n, *shape)`` tensor per site, iid with
        P(keep) = 1 - drop_prob (from float32 uniforms: exact to 2^-24, about half the cost of
        float64 ones; an exact one-random-byte-per-unit scheme measured no faster)."""
        return tuple((torch.rand((K, self.pm.n, *s), generator=generator, dtype=torch.float32) >= p)
                     .to(self.pm.device) for (_, _, p, _), s in zip(self.sites, self.shapes))

    def scales(self) -> list[torch.Tensor]:
        """Per site the inverse keep probability 1/(1 - drop_prob) as a 0-d tensor."""
        return [torch.tensor(1.0 / (1.0 - p), dtype=self.pm.dtype, device=self.pm.device)
                for (_, _, p, _) in self.sites]

    def to_masks(self, keeps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Scaled float masks (``keep / (1 - drop_prob)``) from boolean keeps."""
        zero = torch.zeros((), dtype=self.pm.dtype, device=self.pm.device)
        return tuple(torch.where(k, sc, zero) for k, sc in zip(keeps, self.scales()))

    def draw_masks(self, K: int, *, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``K`` draws of scaled masks, one ``(K, n, *shape)`` tensor per site (iid Bernoulli),
        as ``nn.Dropout`` in train mode applies them."""
        return self.to_masks(self.draw_keeps(K, generator=generator))

    def loss(self, params: dict, masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """:math:`R_{drop}(\\theta, \\eta)` on the full batch for one draw of masks ``(n, *shape)``."""
        self._masks = masks
        try:
            return self.pm.batch_loss(params, self.pm.X, self.pm.y)
        finally:
            self._masks = None

    def cut_loss(self, params: dict, a: torch.Tensor, masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """R_drop with the first site's *masked* tensor replaced by ``a`` (the graph is cut there;
        the other sites use ``masks``)."""
        self._masks, self._cut_h = masks, a
        try:
            return self.pm.batch_loss(params, self.pm.X, self.pm.y)
        finally:
            self._masks, self._cut_h = None, None

    def cut_value(self, params: dict) -> torch.Tensor:
        """The first site's tensor (before its mask) at ``params``, dropout off."""
        store: dict = {}
        self._capture = store
        try:
            self.pm.forward(params, self.pm.X)
        finally:
            self._capture = None
        return store["h"]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


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
                         memory_budget_mb: float = 2048) -> tuple[torch.Tensor, torch.Tensor]:
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
                  memory_budget_mb: float = 2048, method: str = "auto",
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
    try:
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            sites.pm = pm.subset(s, e)
            nd = dropout_noise(sites, V, gradient=zero, n_samples=K, generator=generator, n_full=keep,
                               memory_budget_mb=memory_budget_mb, method=method, trace_samples=trace_samples)
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


# ============================================================================ isotropic


def isotropic_noise(D: int, directions: torch.Tensor, *, trace: float, n_samples: int,
                    generator: torch.Generator, n_full: int = 0, memory_budget_mb: float = 2048,
                    of: str = "sgd") -> NoiseDraws:
    """Isotropic control: ``n_samples`` vectors :math:`\\xi\\sim N(0, (\\mathrm{tr}\\,C/D) I_D)`
    through :func:`project`. Its exact variance along a unit direction is ``trace / D``.

    Examples
    --------
    >>> import torch
    >>> V = torch.eye(50, dtype=torch.float64)[:, :2]
    >>> nd = isotropic_noise(50, V, trace=50.0, n_samples=4000, generator=torch.Generator().manual_seed(0))
    >>> nd.exact_variance, bool(abs(nd.values.var(0, ddof=1) - 1).max() < 0.1)
    (array([1., 1.]), True)
    """
    t0 = time.perf_counter()
    if not np.isfinite(trace) or trace <= 0:
        raise ConfigError(f"isotropic control needs a positive finite trace of C ({of}); got {trace}.")
    sigma = float(np.sqrt(trace / D))
    c = max(1, min(n_samples, _chunk_for(memory_budget_mb, _BYTES * 2 * D)))
    vals, fulls = [], []
    done = 0
    while done < n_samples:
        k = min(c, n_samples - done)
        # one call per row: the stream (hence every draw) does not depend on the chunk size
        Z = torch.stack([torch.randn(D, generator=generator, dtype=torch.float64) for _ in range(k)]) * sigma
        Z = Z.to(device=directions.device, dtype=directions.dtype)
        vals.append(project(Z, directions).double().cpu())
        if done < n_full:
            fulls.append(Z[: n_full - done])
        done += k
    full = torch.cat(fulls) if fulls else directions.new_zeros((0, D))
    ev = np.full(directions.shape[1], trace / D) * (directions.double().norm(dim=0).cpu().numpy() ** 2)
    return NoiseDraws("isotropic", torch.cat(vals).numpy(), full, float(trace), True, ev,
                      time.perf_counter() - t0, {"of": of, "sigma2": trace / D})
