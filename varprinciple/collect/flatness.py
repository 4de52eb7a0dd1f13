"""Flatness and noise-alignment scalars: Tr(H) (deflated Hutchinson), Tr(HC) and rho.

* **Tr(H)**, deflated by the top-``k`` eigenpairs :math:`(\\lambda_i, v_i)` already computed:
  :math:`\\mathrm{Tr}(H) = \\sum_{i<k}\\lambda_i + \\mathrm{Tr}(P H P)` with the projector
  :math:`P = I - V_kV_k^\\top` onto their complement. The second term is estimated with
  ``m`` Rademacher probes :math:`z_j`: :math:`t_j = (Pz_j)^\\top H (Pz_j)`, estimate
  :math:`\\bar t`, standard error :math:`s_t/\\sqrt m`. When the residuals are small the top
  part is exact and the estimator's variance is that of the bulk only (the Hutch++ idea with
  exact eigenvectors). With ``k = D`` the complement is empty and the trace exact.
* **Tr(HC)**, centred (DESIGN.md): from ``K`` full noise draws :math:`\\xi_k`,
  :math:`\\widehat{\\mathrm{Tr}}(HC) = [\\sum_k \\xi_k^\\top H\\xi_k - K\\bar\\xi^\\top H\\bar\\xi]/(K-1)`
  (``K`` HVPs; :math:`H\\bar\\xi` is the mean of the :math:`H\\xi_k`), and likewise
  :math:`\\widehat{\\mathrm{Tr}}(C) = [\\sum_k\\lVert\\xi_k\\rVert^2 - K\\lVert\\bar\\xi\\rVert^2]/(K-1)`.
* **rho** :math:`= D\\,\\widehat{\\mathrm{Tr}}(HC) / (\\widehat{\\mathrm{Tr}}(H)\\,\\widehat{\\mathrm{Tr}}(C))`
  (Zhu et al.): 1 for isotropic noise. Its SE combines the delete-one jackknife SE of the
  ratio :math:`\\widehat{\\mathrm{Tr}}(HC)/\\widehat{\\mathrm{Tr}}(C)` over draws with the SE of
  Tr(H) in quadrature (relative errors; the two are independent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError
from .curvature import HessianOperator

__all__ = ["TraceEstimate", "NoiseAlignment", "hutchinson_trace", "noise_alignment", "pair_alignment",
           "flatness_frame"]


@dataclass(frozen=True)
class TraceEstimate:
    """Tr(H): ``estimate`` = ``exact_part`` (sum of the top-k eigenvalues) + complement estimate."""

    estimate: float
    se: float
    exact_part: float
    n_probes: int
    n_hvp: int

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"estimate": self.estimate, "se": self.se, "exact_part": self.exact_part,
                              "n_probes": self.n_probes, "n_hvp": self.n_hvp}])


def hutchinson_trace(op: HessianOperator, *, n_probes: int, generator: torch.Generator,
                     eigenvalues: np.ndarray | None = None,
                     eigenvectors: np.ndarray | None = None) -> TraceEstimate:
    """Hutchinson estimate of Tr(H), deflated by the given eigenpairs.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from varprinciple.collect.curvature import hessian_operator
    >>> X = torch.eye(3) * 2; y = torch.zeros(3, 1)
    >>> op = hessian_operator(nn.Linear(3, 1, bias=False), "mse", X, y)   # H = 4/3 I
    >>> te = hutchinson_trace(op, n_probes=8, generator=torch.Generator().manual_seed(0))
    >>> round(te.estimate, 10), round(te.se, 10)   # Rademacher probes are exact for diagonal H
    (4.0, 0.0)
    """
    if n_probes < 2:
        raise ConfigError(f"`hutchinson_probes` must be >= 2; got {n_probes}.")
    D, dt = op.n_params, op.pm.dtype
    hvp0 = op.n_hvp
    exact = 0.0
    Vk = None
    if eigenvalues is not None and len(eigenvalues):
        exact = float(np.sum(eigenvalues))
        Vk = (eigenvectors if isinstance(eigenvectors, torch.Tensor)
              else torch.from_numpy(np.ascontiguousarray(eigenvectors))).to(dt)
        if Vk.shape[1] >= D:
            return TraceEstimate(exact, 0.0, exact, 0, 0)
    # the probes as int8 (one byte per entry; the same stream as drawing them in the probe dtype),
    # their products in blocks of ``op.columns``: memory h x D bytes + a block of D-vectors
    Z8 = torch.randint(0, 2, (D, n_probes), generator=generator, dtype=torch.int8)
    if Vk is not None:
        Vk = Vk.to(op.pm.device)
    r = max(1, int(getattr(op, "columns", n_probes)))
    t = np.empty(n_probes)
    for s in range(0, n_probes, r):
        e = min(n_probes, s + r)
        Z = (Z8[:, s:e].to(dt) * 2 - 1).to(op.pm.device)
        if Vk is not None:
            Z = Z - Vk @ (Vk.T @ Z)
        HZ = op.matmat(Z)
        if Vk is not None:
            HZ = HZ - Vk @ (Vk.T @ HZ)
        t[s:e] = (Z * HZ).sum(0).double().cpu().numpy()
        del Z, HZ
    est = exact + float(t.mean())
    se = float(t.std(ddof=1) / np.sqrt(n_probes))
    return TraceEstimate(est, se, exact, n_probes, op.n_hvp - hvp0)


@dataclass(frozen=True)
class NoiseAlignment:
    """Centred Tr(HC), Tr(C) and rho of one noise source from ``n_samples`` full draws."""

    source: str
    tr_hc: float
    tr_hc_se: float
    tr_c: float
    tr_c_se: float
    rho: float
    rho_se: float
    n_samples: int
    n_hvp: int

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([self.__dict__])


def _jackknife_se(values: np.ndarray) -> float:
    K = len(values)
    return float(np.sqrt((K - 1) / K * np.sum((values - values.mean()) ** 2)))


def noise_alignment(op: HessianOperator, full: torch.Tensor, *, source: str,
                    trace_h: TraceEstimate) -> NoiseAlignment:
    """Centred, matrix-free Tr(HC), Tr(C) and rho from full noise draws ``full`` ``(K, D)``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from varprinciple.collect.curvature import hessian_operator
    >>> X = torch.diag(torch.tensor([2.0, 1.0])); y = torch.zeros(2, 1)
    >>> op = hessian_operator(nn.Linear(2, 1, bias=False), "mse", X, y)   # H = diag(2, 0.5)
    >>> te = hutchinson_trace(op, n_probes=4, generator=torch.Generator().manual_seed(0))
    >>> xi = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)  # along e1
    >>> na = noise_alignment(op, xi, source="demo", trace_h=te)
    >>> na.tr_hc, na.tr_c, na.rho     # rho = D Tr(HC) / (Tr(H) Tr(C)) = 2 * 2 / (2.5 * 1)
    (2.0, 1.0, 1.6)
    """
    K, D = full.shape
    if K < 3:
        raise ConfigError(f"`tr_hc_samples` must be >= 3; got {K}.")
    hvp0 = op.n_hvp
    Xi = full.to(op.pm.dtype)
    # products in blocks of ``op.columns`` rows: per draw q_i = x_i'Hx_i, b_i = (sum x)'H x_i, and
    # the sum of the H x_i; nothing K x D is formed beside the draws themselves
    r = max(1, int(getattr(op, "columns", K)))
    Xs = Xi.sum(0)
    HXs = torch.zeros_like(Xs)
    q, s, b = np.empty(K), np.empty(K), np.empty(K)
    for i in range(0, K, r):
        e = min(K, i + r)
        Xc = Xi[i:e]
        HXc = op.matmat(Xc.T.contiguous()).T
        q[i:e] = (Xc * HXc).sum(1).double().cpu().numpy()
        s[i:e] = (Xc * Xc).sum(1).double().cpu().numpy()
        b[i:e] = (HXc @ Xs).double().cpu().numpy()
        HXs += HXc.sum(0)
        del HXc
    a = (Xi @ HXs).double().cpu().numpy()   # x_i' H (sum x)
    c = (Xi @ Xs).double().cpu().numpy()    # x_i' (sum x)
    xs_hxs, xs_xs = float(Xs @ HXs), float(Xs @ Xs)
    qbar = xs_hxs / K**2
    sbar = xs_xs / K**2
    tr_hc = (q.sum() - K * qbar) / (K - 1)
    tr_c = (s.sum() - K * sbar) / (K - 1)
    # delete-one jackknife of tr_hc, tr_c and their ratio, from the leave-one-out means
    # xm_i = (sum x - x_i)/(K-1), hxm_i = (H sum x - H x_i)/(K-1) expanded into the scalars above
    xmhxm = (xs_hxs - a - b + q) / (K - 1) ** 2
    xmxm = (xs_xs - 2 * c + s) / (K - 1) ** 2
    q_loo = ((q.sum() - q) - (K - 1) * xmhxm) / (K - 2)
    s_loo = ((s.sum() - s) - (K - 1) * xmxm) / (K - 2)
    with np.errstate(divide="ignore", invalid="ignore"):  # a leave-one-out Tr(C) of 0: SE undefined (NaN)
        ratio_loo = np.where(s_loo > 0, q_loo / s_loo, np.nan)
    ratio = tr_hc / tr_c if tr_c > 0 else float("nan")
    rho = D * ratio / trace_h.estimate if trace_h.estimate != 0 else float("nan")
    rel = np.sqrt((_jackknife_se(ratio_loo) / ratio) ** 2 + (trace_h.se / trace_h.estimate) ** 2) \
        if np.isfinite(rho) and ratio != 0 else float("nan")
    return NoiseAlignment(source, float(tr_hc), _jackknife_se(q_loo), float(tr_c), _jackknife_se(s_loo),
                          float(rho), float(abs(rho) * rel), K, op.n_hvp - hvp0)


def pair_alignment(op: HessianOperator, moments, *, source: str, trace_h: TraceEstimate) -> NoiseAlignment:
    """Tr(HC), Tr(C) and rho from dropout's two-mask per-sample differences (no full draws).

    ``moments`` is a :class:`~varprinciple.collect.noise.dropout_exact.DropoutPairMoments` with
    ``J`` signed group sums :math:`w_j`: :math:`\\widehat{\\mathrm{Tr}}(HC) = \\sum_j
    w_j^\\top H w_j / (2n^2)` (``J`` HVPs), Tr(C) its per-sample estimate. SEs from the ``J``
    independent group terms; rho's SE from the delete-one-group jackknife of the ratio
    Tr(HC)/Tr(C), combined with the SE of Tr(H) as relative errors.
    ``n_samples`` of the result is ``J``.
    """
    W = moments.W
    if W is None or W.shape[1] < 2:
        raise ConfigError("`tr_hc_samples` must be >= 2 groups for the dropout pair estimator.")
    J = W.shape[1]
    hvp0 = op.n_hvp
    r = max(1, int(getattr(op, "columns", J)))
    h = np.empty(J)
    for s in range(0, J, r):  # blocks of ``op.columns`` products
        e = min(J, s + r)
        Wc = W[:, s:e].to(op.pm.dtype)
        h[s:e] = ((Wc * op.matmat(Wc)).sum(0).double() / (2.0 * moments.n ** 2)).cpu().numpy()
    c = np.asarray(moments.group_trace, dtype=np.float64)
    tr_hc, tr_c = float(h.sum()), float(c.sum())
    se_hc = float(np.sqrt(J * h.var(ddof=1)))
    ratio = tr_hc / tr_c if tr_c > 0 else float("nan")
    rho = op.n_params * ratio / trace_h.estimate if trace_h.estimate != 0 else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_loo = (tr_hc - h) / (tr_c - c)
    rel = np.sqrt((_jackknife_se(ratio_loo) / ratio) ** 2 + (trace_h.se / trace_h.estimate) ** 2) \
        if np.isfinite(rho) and ratio != 0 else float("nan")
    return NoiseAlignment(source, tr_hc, se_hc, tr_c, float(moments.trace_se), float(rho),
                          float(abs(rho) * rel), J, op.n_hvp - hvp0)


def flatness_frame(*, step: int, lambda_max: float, trace_h: TraceEstimate,
                   alignments: list[NoiseAlignment],
                   exact_traces: dict[str, float] | None = None,
                   exact_trace_se: dict[str, float] | None = None) -> pd.DataFrame:
    """Rows of the optional ``flatness.parquet`` table (schema.FLATNESS).

    quantity: ``lambda_max`` (se null), ``hessian_trace``, and per source ``tr_hc``,
    ``tr_c`` (centred sample trace of the draws used for rho), ``rho``; plus
    ``tr_c_exact`` where the source's trace is known exactly (sgd, isotropic: se null) or
    estimated without bias from exact per-sample moments (dropout: se from ``exact_trace_se``).
    """
    rows = [{"quantity": "lambda_max", "source": None, "estimate": lambda_max, "se": None},
            {"quantity": "hessian_trace", "source": None, "estimate": trace_h.estimate, "se": trace_h.se}]
    for a in alignments:
        rows += [{"quantity": "tr_hc", "source": a.source, "estimate": a.tr_hc, "se": a.tr_hc_se},
                 {"quantity": "tr_c", "source": a.source, "estimate": a.tr_c, "se": a.tr_c_se},
                 {"quantity": "rho", "source": a.source, "estimate": a.rho, "se": a.rho_se}]
    for src, tr in (exact_traces or {}).items():
        rows.append({"quantity": "tr_c_exact", "source": src, "estimate": tr,
                     "se": (exact_trace_se or {}).get(src)})
    df = pd.DataFrame(rows)
    df.insert(0, "step", np.int64(step))
    df["step"] = df["step"].astype(np.int64)
    df["source"] = df["source"].astype("string")  # typed even when every entry is null
    df["se"] = df["se"].astype(np.float64)
    return df
