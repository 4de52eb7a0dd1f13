"""Provenance: the one builder of what a run, an analysis or a study records about where it came from.

- :func:`package_versions`: Python's version and those of the named packages (None for one
  that is not installed; a renderer shows None as it likes, e.g. "not installed");
- :func:`git_revision`: the git commit of the package source (``-dirty`` if modified);
- :func:`machine`: the platform, processor and CPU count of this machine;
- :func:`created`: the current UTC time, ISO 8601 to the second.

Examples
--------
>>> v = package_versions(("numpy", "no-such-package-xyz"))
>>> list(v), v["no-such-package-xyz"]
(['python', 'numpy', 'no-such-package-xyz'], None)
>>> sorted(machine())
['cpu_count', 'platform', 'processor']
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["RUN_PACKAGES", "REPORT_PACKAGES", "package_versions", "git_revision", "machine", "created"]

#: Packages whose versions every collected run records in run.json ``versions``.
RUN_PACKAGES = ("varprinciple", "torch", "numpy", "scipy", "pandas", "pyarrow", "scikit-learn", "mnist1d")
#: Packages whose versions every report records.
REPORT_PACKAGES = ("varprinciple", "numpy", "scipy", "pandas", "pyarrow", "statsmodels", "matplotlib")


@functools.lru_cache(maxsize=8)
def _versions(names: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    from importlib.metadata import PackageNotFoundError, version
    out: list[tuple[str, str | None]] = [("python", platform.python_version())]
    for name in names:
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            out.append((name, None))
    return tuple(out)


def package_versions(names: Sequence[str] = RUN_PACKAGES) -> dict[str, str | None]:
    """Versions of Python (key ``"python"``) and of ``names`` (None if not installed)."""
    return dict(_versions(tuple(names)))


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The git commit of the package source (with ``-dirty`` if modified), or None."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict:
    """Platform, processor and CPU count of this machine."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}


def created() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-01-31T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
