"""The smallest memory budget a probe accepts, as its up-front refusal names it (tests that force
every stage to chunk use it: a budget below it is refused, by design)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from varprinciple.errors import ConfigError


def smallest_budget_mb(model, loss, X, y, settings) -> float:
    """The budget named by the refusal of ``settings`` with a 1-byte budget."""
    from varprinciple.collect.probe import probe
    with pytest.raises(ConfigError, match=r"`memory_budget_mb` = .* is too small for this probe") as e:
        probe(model, loss, X, y, settings=replace(settings, memory_budget_mb=1e-6), step=0,
              generator=torch.Generator().manual_seed(0))
    return float(re.search(r"it needs at least ([\d.]+) MB", str(e.value)).group(1))
