"""Planned figures: registered without a builder until their analyses exist.

The report lists a planned figure as skipped, naming the input it waits for. To implement
one, write its builder in its own module and register a :class:`FigureSpec` with the same
name (that replaces the planned entry); see docs/report.md. The σ² vs F and loss-profile
figures that were planned here now have builders (``variance_flatness.py``,
``loss_profiles.py``); none is planned at present.
"""

from __future__ import annotations

__all__: list[str] = []
