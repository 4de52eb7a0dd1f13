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

Layout (one module per source behind one interface, :mod:`.registry`): ``_common`` (draws
container, projection, directions), ``sgd``, ``dropout`` (+ ``dropout_exact``: exact moments from
two masks per sample), ``isotropic``, ``sources`` (the registered implementations).

Every source's full noise vectors go through the one projection :func:`project`
(``xi @ V``). The SGD fast path gets the same projections without forming each
``D``-vector: per-sample directional derivatives ``P = G V`` (``n x d``) are computed in
chunks sized by a memory budget (``torch.func.vmap(grad)``, or forward-mode JVPs when even a
small chunk of per-sample gradients would not fit), then a draw is the mean of ``P`` over
its subset minus the full mean.
"""

from __future__ import annotations

from ._common import NoiseDraws, chunk_for, project, random_directions
from .dropout_sites import DropoutSite, DropoutSites
from .dropout import (dropout_cut_tangents, dropout_data_chunk, dropout_gradients, dropout_noise,
                      dropout_projections)
from .dropout_exact import DropoutPairMoments, dropout_pair_moments, pair_chunk
from .isotropic import isotropic_noise
from .registry import SOURCES, NoiseSourceBase, SourceContext, get_source, register_source, source_names
from .sgd import PerSampleProjections, per_sample_projections, sgd_noise, sgd_subsets, sgd_variance_factor
from .sources import DropoutSource, IsotropicSource, SGDSource  # registers sgd, dropout, isotropic

__all__ = [
    "NoiseDraws", "PerSampleProjections", "DropoutSite", "DropoutSites", "DropoutPairMoments", "project", "random_directions",
    "chunk_for", "per_sample_projections", "sgd_subsets", "sgd_noise", "sgd_variance_factor", "dropout_noise",
    "dropout_gradients", "dropout_cut_tangents", "dropout_projections", "dropout_data_chunk",
    "dropout_pair_moments", "pair_chunk", "isotropic_noise", "SOURCES", "NoiseSourceBase", "SourceContext",
    "register_source", "get_source", "source_names", "SGDSource", "DropoutSource", "IsotropicSource",
]
