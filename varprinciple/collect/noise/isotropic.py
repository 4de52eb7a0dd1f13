"""Isotropic control: Gaussian vectors with the trace of the source they control for."""

from __future__ import annotations

import time

import numpy as np
import torch

from ...errors import ConfigError
from ..probe_settings import DEFAULT_MEMORY_BUDGET_MB
from ..progress import tick
from ._common import _BYTES, NoiseDraws, chunk_for as _chunk_for, project

__all__ = ["isotropic_noise"]


def isotropic_noise(D: int, directions: torch.Tensor, *, trace: float, n_samples: int,
                    generator: torch.Generator, n_full: int = 0, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
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
        # one call per row: the stream (hence every draw) does not depend on the chunk size;
        # filled in place (no list of rows beside the chunk)
        Z = torch.empty(k, D, dtype=torch.float64)
        for i in range(k):
            Z[i].normal_(generator=generator)
        Z.mul_(sigma)
        Z = Z.to(device=directions.device, dtype=directions.dtype)
        vals.append(project(Z, directions).double().cpu())
        if done < n_full:
            fulls.append(Z[: n_full - done].clone())  # a copy: a view would keep the whole chunk alive
        del Z
        done += k
        tick(k, unit="draws", total=n_samples)
    full = torch.cat(fulls) if fulls else directions.new_zeros((0, D))
    ev = np.full(directions.shape[1], trace / D) * (directions.double().norm(dim=0).cpu().numpy() ** 2)
    return NoiseDraws("isotropic", torch.cat(vals).numpy(), full, float(trace), True, ev,
                      time.perf_counter() - t0, {"of": of, "sigma2": trace / D})
