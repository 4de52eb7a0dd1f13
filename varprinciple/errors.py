"""Exception and warning types of varprinciple.

Every error the package raises on purpose derives from :class:`VarPrincipleError`;
the CLI catches it, prints its one-line message and exits with code 2.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "VarPrincipleError",
    "InputError",
    "ConfigError",
    "LogValidationError",
    "Problem",
    "VarPrincipleWarning",
    "DuplicateRunWarning",
]


class VarPrincipleError(Exception):
    """Base class of the package's own errors; its message is one line."""


class InputError(VarPrincipleError, ValueError):
    """A bad argument or input file (not a log-schema problem)."""


class ConfigError(VarPrincipleError, ValueError):
    """A collection config that fails validation."""


@dataclass(frozen=True)
class Problem:
    """One validation problem of one run: where it is and what is wrong."""

    path: str
    message: str
    run_id: str | None = None
    file: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        parts = []
        parts.append(f"run {self.run_id!r}" if self.run_id is not None else f"run at {self.path}")
        if self.file is not None:
            parts.append(self.file)
        if self.key is not None:
            parts.append(self.key)
        return ": ".join(parts) + ": " + self.message

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "path": self.path, "file": self.file,
                "key": self.key, "message": self.message}


class LogValidationError(VarPrincipleError):
    """One or more runs of a log set break log schema v1.

    ``problems`` lists every problem found, one :class:`Problem` each.
    """

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        head = str(self.problems[0]) if n else "invalid log set"
        more = f" (and {n - 1} more problem{'s' if n > 2 else ''})" if n > 1 else ""
        super().__init__(head + more)

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class VarPrincipleWarning(UserWarning):
    """Base class of the package's warnings."""


class DuplicateRunWarning(VarPrincipleWarning):
    """Two runs have identical noise tables (copies of one probe; counted once as one network)."""
