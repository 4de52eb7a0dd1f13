"""The built-in default study (``varprinciple study``): moved to :mod:`varprinciple.study.default`,
which runs it through the study runner; importable from here as before."""

from __future__ import annotations

from ..study.default import StudyResult, default_study_fixed_steps_path, run_study

__all__ = ["StudyResult", "run_study", "default_study_fixed_steps_path"]
