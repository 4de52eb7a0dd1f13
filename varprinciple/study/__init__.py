"""Studies: a manifest of experiments and pre-declared claims, its design (power), and its runner.

``manifest`` and ``design`` import no torch; ``runner`` collects (torch) only when called.
"""

from .design import DesignResult, design_summary, tost_power, welch_mde
from .manifest import Experiment, StudyManifest, load_manifest

__all__ = ["Experiment", "StudyManifest", "load_manifest", "DesignResult", "design_summary", "tost_power",
           "welch_mde"]
