"""The probe's fit to the data and model (batch < n, top_k <= D) is checked once, at each boundary:
the run's assembly (collect), the own-model API (before anything is written) and ``probe``."""

from __future__ import annotations

import pytest
import torch

from varprinciple.collect.api import probe_model
from varprinciple.collect.probe import ProbeSettings
from varprinciple.collect.recorder import Recorder
from varprinciple.errors import ConfigError

SMALL = dict(n_samples=20, n_random=1, sources=("sgd",), hutchinson_probes=2, tr_hc_samples=0)


def _data(n=12):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 3, generator=g)
    return X, X @ torch.tensor([[1.0], [2.0], [0.5]])


def test_own_model_api_checks_before_writing(tmp_path):
    X, y = _data()
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^`top_k`: must be <= the number of parameters \(4\); got 5$"):
        probe_model(torch.nn.Linear(3, 1), "mse", X, y, out=out, run_id="r", method="gd",
                    settings=ProbeSettings(top_k=5, batch_size=4, **SMALL))
    with pytest.raises(ConfigError, match=r"^`batch_size`: must be < the number of training samples \(12\); "
                                          r"got 12$"):
        probe_model(torch.nn.Linear(3, 1), "mse", X, y, out=out, run_id="r", method="gd",
                    settings=ProbeSettings(top_k=2, batch_size=12, **SMALL))
    assert not out.exists()


def test_recorder_checks_at_construction(tmp_path):
    X, y = _data()
    with pytest.raises(ConfigError, match=r"^`batch_size`: must be < the number of training samples \(12\)"):
        Recorder(torch.nn.Linear(3, 1), "mse", X, y, out=tmp_path / "rec", every=1, run_id="r", method="sgd",
                 settings=ProbeSettings(top_k=2, batch_size=20, **SMALL))
    assert not (tmp_path / "rec").exists()

