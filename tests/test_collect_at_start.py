"""`[probe] at_start = true` makes `collect` probe the initialisation (step 0) too."""

from __future__ import annotations

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from varprinciple.collect.config import load_config  # noqa: E402
from varprinciple.collect.run import collect  # noqa: E402
from varprinciple.io import read_logset  # noqa: E402

pytestmark = pytest.mark.torch

CFG = """
[data]
name = "digits"
n_train = 40
n_test = 10

[model]
widths = [4]

[train]
method = "dropout"
seed = 0
steps = 10
batch_size = 8
lr = 0.1
log_every = 10

[probe]
at_start = {at_start}
top_k = 2
n_samples = 8
n_random = 1
hutchinson_probes = 2
tr_hc_samples = 3
dropout_samples = 4
"""


@pytest.mark.parametrize("at_start", ["true", "false"])
def test_collect_probes_step_zero_when_asked(tmp_path, at_start):
    p = tmp_path / "c.toml"
    p.write_text(CFG.format(at_start=at_start))
    collect(load_config(p), tmp_path / "logs")
    (run,) = read_logset(tmp_path / "logs").runs
    assert run.steps == ([0, 10] if at_start == "true" else [10])
    noise = pd.read_parquet(run.path / "noise.parquet")
    assert noise.query("source == 'dropout'")["sample"].max() == 3  # dropout_samples = 4 draws
    assert noise.query("source == 'sgd'")["sample"].max() == 7      # n_samples = 8
