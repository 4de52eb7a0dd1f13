"""The noise-source interface and its registry (as the report's figure registry).

A source is one class that registers itself with :func:`register_source`; the probe knows no
source by name. Its life in one probe:

1. ``prepare(pm, settings)`` -- before any expensive stage: validate and build what it needs
   (e.g. the dropout sites), so a bad configuration fails before the Hessian;
2. ``sample(ctx)`` -- return :class:`~varprinciple.collect.noise.NoiseDraws` (projections on the
   probe's directions, full vectors for Tr(HC) when asked, the trace, exact variances when known);
3. ``alignment(op, draws, trace_h)`` -- Tr(HC), Tr(C), rho for ``flatness.parquet`` (default: the
   centred moments of the full draws), or None;
4. ``info()`` -- JSON-ready facts for run.json; ``close()`` -- release hooks.

Sources with ``after_others = True`` (the isotropic control) run after the rest, so ``ctx.draws``
holds the sources they refer to. Adding a source is one module defining a subclass of
:class:`NoiseSourceBase` decorated with :func:`register_source`, imported by this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ...errors import ConfigError

__all__ = ["SourceContext", "NoiseSourceBase", "register_source", "get_source", "source_names", "SOURCES"]

#: name -> source class, in registration order.
SOURCES: dict[str, type["NoiseSourceBase"]] = {}


@dataclass
class SourceContext:
    """What a source's ``sample`` may use: the probed model, the Hessian operator (its
    ``gradient`` is the full-batch gradient), the directions ``(D, d)``, the settings, the
    source's own generator, the number of full vectors to keep, and the draws made so far."""

    pm: Any
    op: Any
    directions: torch.Tensor
    settings: Any
    generator: torch.Generator
    n_full: int
    draws: dict = field(default_factory=dict)


class NoiseSourceBase:
    """Base class of a noise source (see the module docstring for the protocol)."""

    name: ClassVar[str] = ""
    after_others: ClassVar[bool] = False

    def prepare(self, pm, settings) -> None:
        """Validate and set up before any expensive stage (default: nothing)."""

    def sample(self, ctx: SourceContext):
        raise NotImplementedError

    def alignment(self, op, draws, trace_h):
        """Tr(HC), Tr(C), rho from the full draws (``tr_hc_samples`` >= 3), else None."""
        from ..flatness import noise_alignment
        if draws.full.shape[0] >= 3:
            return noise_alignment(op, draws.full, source=self.name, trace_h=trace_h)
        return None

    def info(self) -> dict:
        return {}

    def close(self) -> None:
        """Release hooks and caches (default: nothing)."""


def register_source(cls: type[NoiseSourceBase]) -> type[NoiseSourceBase]:
    """Class decorator: add a source to :data:`SOURCES` under ``cls.name``."""
    if not cls.name:
        raise ConfigError(f"noise source {cls.__name__} has no `name`.")
    if cls.name in SOURCES and SOURCES[cls.name] is not cls:
        raise ConfigError(f"noise source {cls.name!r} is already registered by {SOURCES[cls.name].__name__}.")
    SOURCES[cls.name] = cls
    return cls


def source_names() -> list[str]:
    """Registered source names, in registration order.

    Examples
    --------
    >>> source_names()
    ['sgd', 'dropout', 'isotropic']
    """
    return list(SOURCES)


def get_source(name: str) -> NoiseSourceBase:
    """A fresh instance of the registered source ``name``."""
    try:
        return SOURCES[name]()
    except KeyError:
        raise ConfigError(f"unknown noise source {name!r}; registered: {source_names()}.") from None
