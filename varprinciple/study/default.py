"""The built-in default study: collect ``default_study.toml``, then test it (through the study
runner's one collect -> analyse step, :func:`varprinciple.study.runner.run_experiment`).

Every run is trained to a common ``[train] target_loss`` (matched-loss stop rule), so the
methods' flatness is compared at matched training loss; ``fixed_steps=True``
(``varprinciple study --fixed-steps``) runs the fixed-step variant instead.

``varprinciple study [--out DIR]`` = :func:`run_study`. It writes

- ``DIR/logs/``: the log set (one run per method x seed; resumable),
- ``DIR/results.json`` and ``DIR/results.directions.parquet``: the output of
  :func:`varprinciple.stats.analyze` (JSON output v1 and the per-direction table).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..collect.config import CollectConfig, default_study_path, load_config
from ..collect.run import CollectResult
from ..errors import ConfigError
from .runner import run_experiment

__all__ = ["StudyResult", "run_study", "default_study_fixed_steps_path"]

@dataclass(frozen=True)
class StudyResult:
    """Where the study's outputs are, and its printed summary (None without statistics)."""

    out: Path
    logs: Path
    results: Path | None
    directions: Path | None
    summary: str | None
    collected: CollectResult
    analysis_s: float
    note: str | None = None

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"output": ["logs", "results", "directions"],
                             "path": [str(self.logs), None if self.results is None else str(self.results),
                                      None if self.directions is None else str(self.directions)]})


def default_study_fixed_steps_path() -> Path:
    """Path of the packaged fixed-step variant of the default study (``default_study_fixed_steps.toml``)."""
    return default_study_path().with_name("default_study_fixed_steps.toml")


def run_study(out: str | os.PathLike = "study", *, config: str | os.PathLike | CollectConfig | None = None,
              workers: int | None = None, device: str = "cpu", seed: int = 0, fixed_steps: bool = False,
              progress: bool | None = None) -> StudyResult:
    """Collect a study (by default the built-in one) into ``out/logs`` and analyse it.

    Parameters
    ----------
    out : path, default "study"
    config : path or CollectConfig, optional
        Default: :func:`~varprinciple.collect.config.default_study_path` (every run stopped at
        a common ``[train] target_loss``: flatness compared at matched training loss).
    workers : int, optional
        Parallel runs (default ``min(2, cpu_count)``).
    device : str, default "cpu"
    seed : int, default 0
        Seed of the statistics' resampling.
    fixed_steps : bool, default False
        Without ``config``: the fixed-step variant (every run stops at step 1500 whatever its
        training loss; flatness comparisons then carry a loss-mismatch note).

    Returns
    -------
    StudyResult
    """
    out = Path(out)
    if fixed_steps and config is not None:
        raise ConfigError("`fixed_steps` selects a built-in config; it cannot be combined with `config`.")
    default = default_study_fixed_steps_path() if fixed_steps else default_study_path()
    cfg = config if isinstance(config, CollectConfig) else load_config(config or default)
    if workers is None:
        workers = max(1, min(2, os.cpu_count() or 1))
    logs = out / "logs"
    ex = run_experiment([cfg], logs, out / "results.json", workers=workers, device=device, seed=seed,
                        progress=progress)
    return StudyResult(out, logs, ex.results, ex.directions, ex.analysis.summary(caveats=False), ex.collected[0],
                       ex.analysis_s)
