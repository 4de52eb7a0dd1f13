"""Shared helpers of the calibration scripts in scripts/ (not part of the package)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rate(x) -> str:
    """A rate with its Monte Carlo SE, ``"r ± sqrt(r (1 - r) / n)"``."""
    x = np.asarray(x, dtype=float)
    r = float(x.mean())
    return f"{r:.3f} ± {np.sqrt(r * (1 - r) / x.size):.3f}"


def module_at(rev: str, relpath: str, name: str):
    """The module ``relpath`` (e.g. ``varprinciple/stats/relation.py``) as it was at git
    revision ``rev``, its relative imports resolved against the installed package."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{relpath}"],
                         check=True, capture_output=True, text=True).stdout
    pkg = ".".join(Path(relpath).with_suffix("").parts[:-1])
    parent = pkg.rsplit(".", 1)[0]
    src = src.replace("from ..", f"from {parent}.").replace("from .", f"from {pkg}.")
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod
