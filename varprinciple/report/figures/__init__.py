"""Report figures: a registry of builders (``registry``) and one module per figure family.

Importing this package registers the built-in figures, in report order.
"""

from . import loglog, forest, flatness, variance_flatness, loss_profiles, planned  # noqa: F401,I001  (registration order = report order)
from .registry import FIGURES, INPUTS, FigureSpec, available_inputs, missing_inputs, register_figure

__all__ = ["FIGURES", "INPUTS", "FigureSpec", "available_inputs", "missing_inputs", "register_figure"]
