"""One config key's declaration (type, default, allowed values): the row type of
:data:`varprinciple.collect.config.CONFIG_KEYS`. This module imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigKey"]


@dataclass(frozen=True)
class ConfigKey:
    """One config key: its type, default and allowed values.

    ``kind`` is ``int``, ``float``, ``bool``, ``str``, ``int_list`` or ``str_list``.
    ``default`` None means unset (the key's documented fallback applies). ``lo``/``hi``
    bound numbers (``lo_open``/``hi_open``: strict). ``sweep``: a list of values expands
    into a sweep. ``scalar_choices``: strings a list key also accepts in place of a list.
    ``choices_of``: where the allowed values are registered (read when a value is checked).
    """

    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...] | None = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    sweep: bool = False
    unique: bool = False
    scalar_choices: tuple[str, ...] | None = None
    #: ``"module:function"`` returning the allowed values, read when a value is checked (a
    #: registry the config module cannot import at import time, e.g. the noise sources')
    choices_of: str | None = None

    def allowed(self) -> tuple[str, ...] | None:
        """The allowed values: ``choices``, or those ``choices_of`` returns now."""
        if self.choices_of is None:
            return self.choices
        import importlib
        module, _, func = self.choices_of.partition(":")
        return tuple(getattr(importlib.import_module(module), func)())
