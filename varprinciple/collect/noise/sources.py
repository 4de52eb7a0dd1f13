"""The three built-in noise sources, as registered implementations of :class:`NoiseSourceBase`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ._common import NoiseDraws
from .dropout import DropoutSites, dropout_noise
from .dropout_exact import dropout_pair_moments
from .isotropic import isotropic_noise
from .registry import NoiseSourceBase, SourceContext, register_source
from .sgd import sgd_noise

__all__ = ["SGDSource", "DropoutSource", "IsotropicSource"]


@register_source
class SGDSource(NoiseSourceBase):
    """Minibatch noise of batch size ``settings.batch_size`` (without replacement)."""

    name = "sgd"

    def sample(self, ctx: SourceContext):
        s = ctx.settings
        return sgd_noise(ctx.pm, ctx.directions, gradient=ctx.op.gradient, batch_size=s.batch_size,
                         n_samples=s.n_samples, generator=ctx.generator, n_full=ctx.n_full,
                         memory_budget_mb=s.memory_budget_mb, exact_variance=s.exact_variance)


@register_source
class DropoutSource(NoiseSourceBase):
    """Dropout mask noise at every dropout the model applies in train mode (or ``dropout_layers``); with
    ``exact_variance`` its exact moments come from two masks per sample."""

    name = "dropout"

    def __init__(self):
        self.sites = None

    def prepare(self, pm, settings) -> None:
        self.sites = DropoutSites(pm, drop_prob=settings.drop_prob, layers=settings.dropout_layers)

    def sample(self, ctx: SourceContext):
        s = ctx.settings
        pairs = None
        if s.exact_variance:
            pairs = dropout_pair_moments(self.sites, ctx.directions, generator=ctx.generator,
                                         n_groups=s.tr_hc_samples, memory_budget_mb=s.memory_budget_mb)
        if s.n_dropout == 0:  # exact moments only (ProbeSettings guarantees pairs)
            d = ctx.directions.shape[1]
            nd = NoiseDraws("dropout", np.zeros((0, d)), ctx.op.gradient.new_zeros((0, ctx.pm.n_params)),
                            pairs.trace, False, extra={"sites": [x[0] for x in self.sites.sites],
                                                       "drop_probs": self.sites.drop_probs})
        else:
            nd = dropout_noise(self.sites, ctx.directions, gradient=ctx.op.gradient, n_samples=s.n_dropout,
                               generator=ctx.generator, n_full=0 if pairs is not None else ctx.n_full,
                               memory_budget_mb=s.memory_budget_mb, trace_samples=4 if pairs is not None else 32)
        if pairs is not None:
            nd = replace(nd, trace=pairs.trace, exact_variance=pairs.variance, exact_variance_se=pairs.variance_se,
                         exact_variance_groups=pairs.group_variance,
                         extra={**nd.extra, "pairs": pairs, "pair_chunk": pairs.chunk, "pair_seconds": pairs.seconds})
        return nd

    def alignment(self, op, draws, trace_h):
        from ..flatness import pair_alignment
        pairs = draws.extra.get("pairs")
        if pairs is None:
            return super().alignment(op, draws, trace_h)
        return pair_alignment(op, pairs, source=self.name, trace_h=trace_h) if pairs.W is not None else None

    def info(self) -> dict:
        if self.sites is None:
            return {}
        return {"dropout_sites": self.sites.describe(), "dropout_skipped": list(self.sites.skipped)}

    def close(self) -> None:
        if self.sites is not None:
            self.sites.remove()


@register_source
class IsotropicSource(NoiseSourceBase):
    """Isotropic Gaussian control with the trace of the source named by ``isotropic_of``."""

    name = "isotropic"
    after_others = True

    def sample(self, ctx: SourceContext):
        s = ctx.settings
        return isotropic_noise(ctx.pm.n_params, ctx.directions, trace=ctx.draws[s.isotropic_of].trace,
                               n_samples=s.n_samples, generator=ctx.generator, n_full=ctx.n_full,
                               memory_budget_mb=s.memory_budget_mb, of=s.isotropic_of)
