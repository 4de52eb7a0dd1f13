"""Shared pieces of the noise sources: the draws container, the one projection, directions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch


__all__ = ["NoiseDraws", "project", "random_directions", "chunk_for"]

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
        Exact variance along each direction, when known (sgd, isotropic), or its unbiased
        two-mask estimate (dropout).
    exact_variance_se : ndarray or None, ``(d,)``
        Standard error of ``exact_variance`` when it is an estimate (dropout); None when exact.
    exact_variance_groups : ndarray or None, ``(J, d)``
        Contributions of ``J`` random groups of samples to ``exact_variance`` (they sum to it;
        dropout), from which the statistics' jackknife takes the sampling error of b.
    """

    source: str
    values: np.ndarray
    full: torch.Tensor
    trace: float
    trace_exact: bool
    exact_variance: np.ndarray | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    exact_variance_se: np.ndarray | None = None
    exact_variance_groups: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])


def chunk_for(budget_mb: float, per_item_bytes: float) -> int:
    return max(1, int(budget_mb * 2**20 // max(per_item_bytes, 1)))
