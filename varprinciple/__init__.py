"""varprinciple: is training noise curvature-aligned?

collect (torch) -> log set (Parquet + run.json) -> stats -> results -> report.
Importing this package never imports torch; only ``varprinciple.collect`` does.
"""

from ._version import __version__
from .errors import (ConfigError, InputError, LogValidationError, VarPrincipleError,
                     VarPrincipleWarning)
from .io import LogSet, RunLog, read_logset, read_run, write_run

__all__ = [
    "__version__",
    "VarPrincipleError",
    "InputError",
    "ConfigError",
    "LogValidationError",
    "VarPrincipleWarning",
    "LogSet",
    "RunLog",
    "read_logset",
    "read_run",
    "write_run",
]
