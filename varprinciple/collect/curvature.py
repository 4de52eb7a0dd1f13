"""Hessian of the full-batch training loss: Hessian-vector products, top-k eigenpairs, dense path.

The Hessian is that of :math:`R_S(\\theta) = \\frac1n\\sum_i \\ell_i(\\theta)` with dropout
switched off (the model in eval mode), at the probed parameters, in the probe dtype
(float64 by default).

Hessian-vector products use double backward with the gradient graph *reused*: the
full-batch gradient :math:`g(\\theta)` is built once with ``create_graph=True`` and every
product :math:`Hv = \\nabla_\\theta (g^\\top v)` is one backward pass through that graph
(``retain_graph=True``). On a 6k-parameter MLP this is about 2x faster than
``torch.func.jvp(jacrev)`` (DESIGN.md); ``torch.func.jvp(grad(mse))`` fails on current
torch. Several vectors at once go through ``autograd.grad(..., is_grads_batched=True)``.

Eigenpairs: the top-``k`` *largest algebraic* eigenvalues (scipy ``eigsh(which="LA")``),
sorted by descending eigenvalue, rank 0 = largest. We ask for the largest algebraic
(not largest magnitude) because the variance principle concerns sharp *positive*
curvature; away from a minimum a large negative eigenvalue would otherwise displace a
positive one, and non-positive eigenvalues cannot enter a log-log fit anyway. Each pair
carries its residual :math:`\\lVert Hv - \\lambda v\\rVert`.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import nn

from ..errors import ConfigError, InputError, VarPrincipleError, VarPrincipleWarning
from ._model import ProbedModel, resolve_dtype
from .losses import Loss, parse_loss
from .memory import GRAPH_FACTOR

__all__ = [
    "HessianOperator",
    "EigenResult",
    "EigenConvergenceWarning",
    "hessian_operator",
    "top_eigenpairs",
    "dense_hessian",
    "DENSE_MAX_PARAMS",
    "hessian_graph_bytes",
    "hessian_chunk",
    "BlockHessianOperator",
]

logger = logging.getLogger(__name__)

#: The dense path refuses models with more parameters than this (D x D matrix, D HVPs).
DENSE_MAX_PARAMS = 4000




def hessian_graph_bytes(pm: ProbedModel, n: int | None = None) -> int:
    """Estimated peak bytes of an HVP with the gradient graph of ``n`` samples kept
    (default: all ``pm.n``): the graph plus a few ``D``-vectors."""
    n = pm.n if n is None else n
    item = torch.finfo(pm.dtype).bits // 8
    return int(GRAPH_FACTOR * item * pm.activation_numel() * n + 6 * item * pm.n_params)


def hessian_chunk(pm: ProbedModel, memory_budget_mb: float) -> int | None:
    """Samples per data chunk for HVPs under ``memory_budget_mb``: None (keep the whole batch's
    graph, the fast path) when :func:`hessian_graph_bytes` fits half the budget, else the largest
    chunk that does (at least 1)."""
    half = memory_budget_mb * 2**20 / 2
    if hessian_graph_bytes(pm) <= half:
        return None
    item = torch.finfo(pm.dtype).bits // 8
    per = GRAPH_FACTOR * item * pm.activation_numel()
    return max(1, min(pm.n, int((half - 6 * item * pm.n_params) // per)))


class EigenConvergenceWarning(VarPrincipleWarning):
    """ARPACK returned fewer converged eigenpairs than asked for."""


class HessianOperator:
    """Matrix-free Hessian of the full-batch loss at fixed parameters.

    Build it with :func:`hessian_operator`. ``matvec`` / ``matmat`` take and return torch
    tensors (``(D,)`` / ``(D, b)``); ``as_linear_operator()`` wraps it for scipy.
    ``n_hvp`` counts Hessian-vector products (a ``matmat`` of b columns counts b).
    ``gradient`` is the full-batch gradient :math:`\\nabla R_S` (detached) and ``loss_value``
    the loss :math:`R_S`.

    ``chunk`` (samples): None keeps the whole batch's gradient graph and every product is one
    backward pass through it (the fast path); an integer sums products over data chunks,
    rebuilding each chunk's graph once per ``matvec``/``matmat`` call, so memory is bounded
    by one chunk whatever ``n`` (see :func:`hessian_chunk`). Both give the same H to rounding.

    ``columns`` bounds how many products the probe's blocks (residuals, Hutchinson, Tr(HC)) form
    at once (:class:`~varprinciple.collect.memory.MemoryPlan` sets it from the budget).
    """

    #: products formed together by the callers that take blocks of columns
    columns: int = 16

    def __init__(self, pm: ProbedModel, *, chunk: int | None = None):
        self.pm = pm
        self.n_params = pm.n_params
        self.n_hvp = 0
        if chunk is not None and (not isinstance(chunk, (int, np.integer)) or chunk < 1):
            raise ConfigError(f"`chunk` must be a positive integer or None; got {chunk!r}.")
        #: samples per data chunk; None = the whole batch with its gradient graph kept (fast path)
        self.chunk = None if chunk is None or chunk >= pm.n else int(chunk)
        self._leaves = [p.detach().clone().requires_grad_(True) for p in pm.params.values()]
        # autograd's is_grads_batched (vmap over double backward) costs 1.2-2.2x a loop of single
        # products per vector on CPU for blocks of 5-25 (benchmarks/bench_block_eigs.py, 6k and 113k
        # MLPs), and block eigensolvers need more products than eigsh: batching is opt-in.
        self._batched_ok = False
        if self.chunk is None:
            self._build()
            self.gradient = self._flat_grad.detach()
            self.loss_value = float(self._loss.detach())
            self._needs_graph = any(g.requires_grad for g in self._grads)
        else:  # data-chunked: nothing kept between products; memory ~ one chunk's graph
            gsum = torch.zeros(pm.n_params, dtype=pm.dtype, device=pm.device)
            lsum, needs = 0.0, False
            for s, e in self._chunks():
                loss, grads = self._graph(pm.X[s:e], pm.y[s:e])
                w = (e - s) / pm.n
                gsum += w * torch.cat([g.detach().reshape(-1) for g in grads])
                lsum += w * float(loss.detach())
                needs = needs or any(g.requires_grad for g in grads)
                del loss, grads
            self.gradient, self.loss_value, self._needs_graph = gsum, lsum, needs
            self._flat_grad = None

    def _build(self) -> None:
        loss, grads = self._graph(self.pm.X, self.pm.y)
        self._loss, self._grads = loss, list(grads)
        self._flat_grad = torch.cat([g.reshape(-1) for g in grads])

    def drop_graph(self) -> None:
        """Free the whole batch's gradient graph between stages that need no products; the next
        product rebuilds it (one forward and backward pass; the same H)."""
        if self.chunk is None and self._flat_grad is not None:
            self._loss = self._grads = self._flat_grad = None

    def _chunks(self):
        n, c = self.pm.n, self.chunk or self.pm.n
        return [(s, min(n, s + c)) for s in range(0, n, c)]

    def _graph(self, X, y):
        params = dict(zip(self.pm.names, self._leaves))
        with torch.enable_grad():
            loss = self.pm.batch_loss(params, X, y)
            grads = torch.autograd.grad(loss, self._leaves, create_graph=True, allow_unused=True,
                                        materialize_grads=True)
        return loss, grads

    def _chunked_matmat(self, V: torch.Tensor) -> torch.Tensor:
        """H V summed over data chunks: each chunk's gradient graph is built once for all columns."""
        out = torch.zeros_like(V)
        for s, e in self._chunks():
            _, grads = self._graph(self.pm.X[s:e], self.pm.y[s:e])
            flat = torch.cat([g.reshape(-1) for g in grads])
            if not flat.requires_grad:
                continue
            w = (e - s) / self.pm.n
            for j in range(V.shape[1]):
                with torch.enable_grad():
                    hv = torch.autograd.grad(flat, self._leaves, grad_outputs=V[:, j],
                                             retain_graph=j + 1 < V.shape[1], allow_unused=True,
                                             materialize_grads=True)
                out[:, j] += w * torch.cat([h.reshape(-1) for h in hv])
            del grads, flat
        return out

    def _zeros(self, shape) -> torch.Tensor:
        return torch.zeros(shape, dtype=self.pm.dtype, device=self.pm.device)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """One Hessian-vector product :math:`Hv` (``v`` of shape ``(D,)``)."""
        self.n_hvp += 1
        if not self._needs_graph:
            return self._zeros(v.shape)
        v = v.to(dtype=self.pm.dtype, device=self.pm.device)
        if self.chunk is not None:
            return self._chunked_matmat(v[:, None])[:, 0]
        if self._flat_grad is None:
            self._build()
        with torch.enable_grad():
            hv = torch.autograd.grad(self._flat_grad, self._leaves, grad_outputs=v, retain_graph=True,
                                     allow_unused=True, materialize_grads=True)
        return torch.cat([h.reshape(-1) for h in hv])

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Hessian times each column of ``V`` (shape ``(D, b)``), batched when torch allows."""
        b = V.shape[1]
        if b == 0:
            return V.clone()
        if not self._needs_graph:
            self.n_hvp += b
            return self._zeros(V.shape)
        V = V.to(dtype=self.pm.dtype, device=self.pm.device)
        if self.chunk is not None:
            self.n_hvp += b
            return self._chunked_matmat(V)
        if self._batched_ok and b > 1:
            if self._flat_grad is None:
                self._build()
            try:
                with torch.enable_grad():
                    hv = torch.autograd.grad(self._flat_grad, self._leaves, grad_outputs=V.T.contiguous(),
                                             retain_graph=True, allow_unused=True,
                                             materialize_grads=True, is_grads_batched=True)
                self.n_hvp += b
                return torch.cat([h.reshape(b, -1) for h in hv], dim=1).T
            except RuntimeError as exc:  # some ops lack batching rules for double backward
                logger.debug("batched HVP unavailable (%s); looping", exc)
                self._batched_ok = False
        out = torch.empty_like(V)
        for j in range(b):  # filled in place: no list of b products beside the result
            out[:, j] = self.matvec(V[:, j])
        return out

    def as_linear_operator(self) -> LinearOperator:
        """A float64 scipy ``LinearOperator`` whose ``matvec`` is one HVP."""
        dt = self.pm.dtype

        def mv(x: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1)).to(dt)
            return self.matvec(v).detach().cpu().double().numpy()

        def mm(X: np.ndarray) -> np.ndarray:
            V = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64)).to(dt)
            return self.matmat(V).detach().cpu().double().numpy()

        D = self.n_params
        return LinearOperator((D, D), matvec=mv, matmat=mm, rmatvec=mv, dtype=np.float64)


def _prepare(model, loss, X, y, dtype) -> ProbedModel:
    return ProbedModel(model, parse_loss(loss), X, y, dtype=resolve_dtype(dtype))


def hessian_operator(model: nn.Module, loss: Loss | str, X: torch.Tensor, y: torch.Tensor, *,
                     dtype: str = "float64") -> HessianOperator:
    """Matrix-free Hessian of the full-batch loss of ``model`` on ``(X, y)``.

    Parameters
    ----------
    model : nn.Module
        The network; it is copied, cast to ``dtype`` and put in eval mode (dropout off).
        Batch-dependent layers (BatchNorm) are refused with :class:`ConfigError`.
    loss : Loss or str
        ``"mse"`` or ``"cross_entropy"`` (see :mod:`varprinciple.collect.losses`).
    X, y : torch.Tensor
        The full training set.
    dtype : {"float64", "float32"}
        Probe precision.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> X = torch.tensor([[1.0, 0.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
    >>> op = hessian_operator(nn.Linear(2, 1, bias=False), "mse", X, y)
    >>> op.matvec(torch.tensor([1.0, 0.0], dtype=torch.float64))  # H = X^T X / n
    tensor([0.5000, 0.0000], dtype=torch.float64)
    """
    return HessianOperator(_prepare(model, loss, X, y, dtype))


@dataclass(frozen=True)
class EigenResult:
    """Top eigenpairs of the Hessian, by descending eigenvalue (rank 0 = largest).

    ``eigenvectors`` is ``(D, k)`` with unit columns; ``residuals[i]`` is
    :math:`\\lVert H v_i - \\lambda_i v_i \\rVert`; ``n_hvp`` counts the HVPs spent
    (solver + residuals); ``method`` is ``"eigsh"`` or ``"dense"``.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residuals: np.ndarray
    n_hvp: int
    method: str
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.eigenvalues.shape[0])

    def to_frame(self, *, step: int = 0, store_vectors: bool = False) -> pd.DataFrame:
        """Rows of the ``eigen`` table (schema v1): step, rank, eigenvalue, residual[, vector]."""
        df = pd.DataFrame({
            "step": np.full(self.k, step, dtype=np.int64),
            "rank": np.arange(self.k, dtype=np.int64),
            "eigenvalue": self.eigenvalues.astype(np.float64),
            "residual": self.residuals.astype(np.float64),
        })
        if store_vectors:
            df["vector"] = [self.eigenvectors[:, i].astype(np.float32) for i in range(self.k)]
        return df


def _residuals(op: HessianOperator, lam: np.ndarray, V: np.ndarray) -> np.ndarray:
    """:math:`\\lVert Hv_i - \\lambda_i v_i\\rVert` in blocks of ``op.columns`` products."""
    r = max(1, int(getattr(op, "columns", 16)))
    out = np.empty(V.shape[1])
    for s in range(0, V.shape[1], r):
        e = min(V.shape[1], s + r)
        Vt = torch.from_numpy(np.ascontiguousarray(V[:, s:e])).to(op.pm.dtype)
        HV = op.matmat(Vt).detach().cpu().double().numpy()
        HV -= V[:, s:e] * lam[None, s:e]
        out[s:e] = np.linalg.norm(HV, axis=0)
    return out


def _sign_fix(V: np.ndarray) -> np.ndarray:
    """Make each column's largest-|.| entry positive (a deterministic sign convention), in place."""
    idx = np.argmax(np.abs(V), axis=0)
    s = np.sign(V[idx, np.arange(V.shape[1])])
    s[s == 0] = 1.0
    V *= s[None, :]
    return V


def top_eigenpairs(op: HessianOperator, *, k: int, tol: float = 1e-10,
                   v0: np.ndarray | None = None, generator: torch.Generator | None = None,
                   method: str = "auto", ncv: int | None = None) -> EigenResult:
    """Top-``k`` largest-algebraic eigenpairs of the Hessian ``op``.

    Parameters
    ----------
    op : HessianOperator
    k : int
        Number of eigenpairs, ``1 <= k <= D``.
    tol : float
        ARPACK relative tolerance (``eigsh(tol=...)``); raised to ``100 * eps`` of the probe
        dtype when smaller.
    v0 : ndarray, optional
        Warm start (e.g. the previous probe's top eigenvector); otherwise a Gaussian vector
        drawn from ``generator`` (so results never depend on ARPACK's internal seed).
    method : {"auto", "eigsh", "dense"}
        ``"auto"`` uses eigsh unless ``k >= D - 1`` (ARPACK's limit), then dense.
    ncv : int, optional
        Lanczos basis size (default ``max(2k + 1, 20)``, capped at D).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> X = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5])); y = torch.zeros(4, 1)
    >>> op = hessian_operator(nn.Linear(4, 1, bias=False), "mse", X, y)
    >>> res = top_eigenpairs(op, k=2, generator=torch.Generator().manual_seed(0))
    >>> res.eigenvalues.round(6)  # diag(X^T X / n) = (9, 4, 1, 0.25) / 4
    array([2.25, 1.  ])
    """
    D = op.n_params
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 or k > D:
        raise ConfigError(f"`top_k` must be an integer in [1, {D}] (the number of parameters); got {k!r}.")
    if method not in ("auto", "eigsh", "dense"):
        raise ConfigError(f"`method` must be one of 'auto', 'eigsh', 'dense'; got {method!r}.")
    if method == "auto":
        method = "dense" if k >= D - 1 else "eigsh"
    t0 = time.perf_counter()
    hvp0 = op.n_hvp
    if method == "dense":
        if D > DENSE_MAX_PARAMS:
            raise ConfigError(f"dense eigendecomposition refuses {D} parameters (> {DENSE_MAX_PARAMS}).")
        Hm = _dense_from_operator(op)
        w, U = np.linalg.eigh(Hm)
        lam, V = w[::-1][:k].copy(), U[:, ::-1][:, :k].copy()
    else:
        if k >= D - 1:
            raise ConfigError(f"eigsh needs `top_k` < {D - 1} (D - 1); got {k}; use method='dense'.")
        eps = float(torch.finfo(op.pm.dtype).eps)
        tol_eff = max(float(tol), 100 * eps)
        if v0 is None:
            g = generator if generator is not None else torch.Generator().manual_seed(0)
            v0 = torch.randn(D, generator=g, dtype=torch.float64).numpy()
        else:
            v0 = np.asarray(v0, dtype=np.float64).reshape(-1)
            if v0.shape[0] != D or not np.all(np.isfinite(v0)) or not np.any(v0):
                raise InputError(f"`v0` must be a finite nonzero vector of length {D}; got shape "
                                 f"{v0.shape}.")
        ncv_eff = min(D, max(k + 1, ncv) if ncv is not None else max(2 * k + 1, 20))
        A = op.as_linear_operator()
        try:
            lam, V = eigsh(A, k=k, which="LA", tol=tol_eff, v0=v0, ncv=ncv_eff)
        except ArpackNoConvergence as exc:
            lam, V = exc.eigenvalues, exc.eigenvectors
            if len(lam) == 0:
                raise VarPrincipleError(f"eigsh converged none of the top {k} Hessian eigenpairs; "
                                        f"raise `eig_tol` (now {tol_eff:g}) or lower `top_k`.") from exc
            warnings.warn(f"eigsh converged {len(lam)} of {k} eigenpairs; keeping those.",
                          EigenConvergenceWarning, stacklevel=2)
        order = np.argsort(lam)[::-1]
        lam, V = np.asarray(lam)[order], np.asarray(V)[:, order]  # V: one C-ordered copy
        V = np.ascontiguousarray(V)
    V = _sign_fix(V)
    n_solver = op.n_hvp - hvp0
    t_solver = time.perf_counter() - t0
    res = _residuals(op, lam, V)
    return EigenResult(eigenvalues=np.asarray(lam, dtype=np.float64), eigenvectors=V, residuals=res,
                       n_hvp=op.n_hvp - hvp0, method=method, seconds=time.perf_counter() - t0,
                       extra={"n_hvp_solver": n_solver, "seconds_solver": t_solver})


def _dense_from_operator(op: HessianOperator, *, chunk: int = 256) -> np.ndarray:
    D = op.n_params
    H = np.empty((D, D))
    for s in range(0, D, chunk):
        e = min(D, s + chunk)
        E = torch.zeros(D, e - s, dtype=op.pm.dtype, device=op.pm.device)
        E[torch.arange(s, e), torch.arange(e - s)] = 1.0
        H[:, s:e] = op.matmat(E).detach().cpu().double().numpy()
    return 0.5 * (H + H.T)


def dense_hessian(model: nn.Module, loss: Loss | str, X: torch.Tensor, y: torch.Tensor, *,
                  dtype: str = "float64", max_params: int = DENSE_MAX_PARAMS) -> np.ndarray:
    """The dense ``D x D`` Hessian of the full-batch loss (exact; for tests and small models).

    Built column by column from batched HVPs and symmetrised. Refuses models with more
    than ``max_params`` parameters (:class:`ConfigError`): D HVPs and D^2 memory.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> X = torch.tensor([[1.0, 1.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
    >>> dense_hessian(nn.Linear(2, 1, bias=False), "mse", X, y)  # X^T X / 2
    array([[0.5, 0.5],
           [0.5, 2.5]])
    """
    pm = _prepare(model, loss, X, y, dtype)
    if pm.n_params > max_params:
        raise ConfigError(f"dense_hessian refuses {pm.n_params} parameters (> max_params={max_params}); "
                          "use the matrix-free HessianOperator.")
    return _dense_from_operator(HessianOperator(pm))


class BlockHessianOperator:
    """The block-diagonal Hessian :math:`H_{bb}` of a parameter block: the rows and columns
    ``index`` of the full-batch Hessian ``op`` (cross-block curvature is left out).

    A product pads :math:`v_b` with zeros to R^D, takes one HVP of ``op`` and keeps the block's
    rows: :math:`H_{bb} v_b = (H\\,[v_b; 0])_b`. It has the interface :func:`top_eigenpairs`
    uses (``n_params``, ``pm``, ``matvec``, ``matmat``, ``as_linear_operator``); ``n_hvp``
    is ``op``'s counter (each block product is one HVP of the full model).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> X = torch.tensor([[1.0, 1.0], [0.0, 2.0]]); y = torch.zeros(2, 1)
    >>> op = hessian_operator(nn.Linear(2, 1, bias=False), "mse", X, y)  # H = [[.5, .5], [.5, 2.5]]
    >>> BlockHessianOperator(op, np.array([1])).matvec(torch.ones(1, dtype=torch.float64))
    tensor([2.5000], dtype=torch.float64)
    """

    def __init__(self, op: HessianOperator, index: np.ndarray):
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= op.n_params or np.unique(idx).size != idx.size:
            raise InputError(f"`index` must be distinct coordinates in [0, {op.n_params}); got {idx.size} "
                             f"entries in [{idx.min() if idx.size else '-'}, {idx.max() if idx.size else '-'}].")
        self.op = op
        self.pm = op.pm
        self.n_params = int(idx.size)
        self._idx = torch.as_tensor(idx, device=op.pm.device)

    @property
    def n_hvp(self) -> int:
        return self.op.n_hvp

    @property
    def columns(self) -> int:
        """Products formed together: the full operator's (each is one of its HVPs)."""
        return self.op.columns

    @n_hvp.setter
    def n_hvp(self, value: int) -> None:
        self.op.n_hvp = value

    def _pad(self, V: torch.Tensor) -> torch.Tensor:
        V = V.to(dtype=self.pm.dtype, device=self.pm.device)
        out = V.new_zeros((self.op.n_params, *V.shape[1:]))
        out[self._idx] = V
        return out

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """:math:`H_{bb} v` (``v`` of shape ``(D_b,)``): one HVP of the full model."""
        return self.op.matvec(self._pad(v))[self._idx]

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """:math:`H_{bb} V` for ``V`` of shape ``(D_b, c)``."""
        return self.op.matmat(self._pad(V))[self._idx]

    as_linear_operator = HessianOperator.as_linear_operator

