"""The figure registry: figure builders, each declaring the inputs it needs.

A figure is a :class:`FigureSpec`: a name (the file stem), a title, a caption, the names of
the inputs it needs (see :data:`INPUTS`) and a ``build(data) -> matplotlib.figure.Figure``
function. :func:`register_figure` adds one; the report draws every registered figure whose
inputs are available and lists the others with the reason they were skipped. Adding a
figure is one module under ``varprinciple/report/figures/`` that calls
:func:`register_figure`, plus its import in ``figures/__init__.py`` (docs/report.md).

A spec whose ``build`` is None is *planned*: it documents a figure whose analysis does not
exist yet; the report names it as skipped until a builder is registered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .._input import ReportData

__all__ = ["INPUTS", "FigureSpec", "FIGURES", "register_figure", "available_inputs", "missing_inputs"]

logger = logging.getLogger(__name__)

#: Inputs a figure can need, with the text a skip note shows when one is missing.
INPUTS: dict[str, str] = {
    "relations": "per-run relations (the results' 'relations' key)",
    "groups": "group summaries (the results' 'groups' key)",
    "directions": "the per-direction table (<results>.directions.parquet) with Hessian directions",
    "random_directions": "random directions in the per-direction table",
    "flatness": "flatness summaries (the results' 'flatness' key, from flatness.parquet probes)",
    "variance_flatness": "the variance-flatness analysis (the results' 'variance_flatness' key; "
                         "trajectory PCA logs)",
    "loss_profiles": "loss profiles (the results' 'loss_profiles' key; loss-profile logs)",
}


@dataclass(frozen=True)
class FigureSpec:
    """One registered figure.

    Attributes
    ----------
    name : str
        File stem (``figures/<name>.png`` and ``.svg``) and registry key.
    title : str
        Short title shown above the figure.
    caption : str
        What the figure shows, how to read it.
    requires : tuple of str
        Names from :data:`INPUTS` that must all be available.
    build : callable or None
        ``build(data: ReportData) -> matplotlib.figure.Figure``; None for a planned figure.
    """

    name: str
    title: str
    caption: str
    requires: tuple[str, ...]
    build: Callable[[ReportData], object] | None = None


#: Registered figures in report order.
FIGURES: dict[str, FigureSpec] = {}


def register_figure(spec: FigureSpec) -> FigureSpec:
    """Register (or replace) a figure; unknown input names are a programming error.

    Examples
    --------
    >>> spec = register_figure(FigureSpec("demo", "Demo", "A demo.", ("relations",)))
    >>> FIGURES.pop("demo") is spec
    True
    """
    unknown = [r for r in spec.requires if r not in INPUTS]
    if unknown:
        raise ValueError(f"figure {spec.name!r} requires unknown inputs {unknown}; known: {sorted(INPUTS)}")
    FIGURES[spec.name] = spec
    return spec


def available_inputs(data: ReportData) -> frozenset[str]:
    """Names of the inputs :data:`INPUTS` present in ``data``."""
    have = set()
    if data.rows("relations"):
        have.add("relations")
    if data.rows("groups"):
        have.add("groups")
    d = data.directions
    if d is not None and len(d):
        basis = d["basis"].astype(str)
        if (basis == "hessian").any():
            have.add("directions")
        if (basis == "random").any():
            have.add("random_directions")
    for key in ("flatness", "variance_flatness", "loss_profiles"):
        if data.results.get(key):
            have.add(key)
    return frozenset(have)


def missing_inputs(spec: FigureSpec, have: frozenset[str]) -> list[str]:
    """The inputs ``spec`` needs that are not in ``have``."""
    return [r for r in spec.requires if r not in have]
