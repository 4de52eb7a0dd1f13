"""Statistics of noise logs (numpy/scipy/statsmodels/pandas only; never imports torch).

Per run: :func:`relation_fit` (exponent b with a calibrated CI), :func:`spearman`,
:func:`variance_ratio`, :func:`isotropy_test` (old name :func:`alignment_test`),
:func:`curvature_test`. Over runs: :func:`group_test`,
:func:`compare_groups`, :func:`tost`, :func:`holm`, effect sizes
(:func:`standardized_difference`, :func:`prob_superiority`); which runs are one network:
:func:`find_networks`. The whole analysis of a log set:
:func:`analyze` -> :class:`AnalysisResult`. See docs/statistics.md.
"""

from .alignment import (AlignmentTest, CurvatureTest, IsotropyTest, VarianceRatio, alignment_test, curvature_test,
                        isotropy_test, variance_ratio)
from .analysis import (CONTROL_SOURCES, DEFAULT_RESAMPLES, MAX_DEFAULT_GROUPS, AnalysisResult, Quantity,
                       analyze, directions_path, parse_compare)
from .effect_size import EffectSize, Superiority, prob_superiority, standardized_difference
from .grouping import HYPERPARAMETER_KEYS, group_keys, group_label, parse_group_by
from .inference import Comparison, GroupTest, Tost, compare_groups, group_test, holm, tost
from .relation import (DEFAULT_FLOOR_REL, DEFAULT_RESIDUAL_FACTOR, ExclusionReason, RelationFit,
                       exclusion_reasons, relation_fit, spearman)
from .replicates import Networks, find_networks

__all__ = [
    "analyze", "AnalysisResult", "Quantity", "DEFAULT_RESAMPLES", "CONTROL_SOURCES", "MAX_DEFAULT_GROUPS",
    "directions_path", "parse_compare",
    "relation_fit", "RelationFit", "exclusion_reasons", "ExclusionReason", "spearman",
    "DEFAULT_FLOOR_REL", "DEFAULT_RESIDUAL_FACTOR",
    "isotropy_test", "IsotropyTest", "alignment_test", "AlignmentTest", "curvature_test", "CurvatureTest",
    "variance_ratio", "VarianceRatio",
    "group_test", "GroupTest", "compare_groups", "Comparison", "tost", "Tost", "holm",
    "group_keys", "group_label", "parse_group_by", "HYPERPARAMETER_KEYS",
    "standardized_difference", "EffectSize", "prob_superiority", "Superiority", "find_networks", "Networks",
]
