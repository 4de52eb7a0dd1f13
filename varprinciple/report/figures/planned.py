"""Planned figures whose analyses do not exist yet (registered without a builder).

The report lists them as skipped, naming the input they wait for. To implement one, write
its builder in its own module and register a :class:`FigureSpec` with the same name (that
replaces the planned entry); see docs/report.md.
"""

from __future__ import annotations

from .registry import FigureSpec, register_figure

__all__: list[str] = []

register_figure(FigureSpec(
    "variance_flatness", "Weight variance vs landscape width",
    "Feng & Tu's inverse variance-flatness relation: σ² along each weight-trajectory PC against the "
    "landscape width F along it, log-log, with the fitted exponent ψ.",
    ("variance_flatness",), None))

register_figure(FigureSpec(
    "loss_profiles", "1D loss profiles",
    "Filter-normalised 1D loss profiles around the minimum per group (wider = flatter).",
    ("loss_profiles",), None))
