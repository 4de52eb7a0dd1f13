"""The memory plan: every D- and n-sized buffer of a probe counted against ``memory_budget_mb``,
its choices (Krylov basis, HVP chunk, product blocks, per-source rooms), the up-front refusal
naming the smallest budget, and measured peaks per stage within its estimates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from varprinciple.collect.memory import plan_memory
from varprinciple.collect.probe_settings import ProbeSettings
from varprinciple.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# MLP 784-1024-160-10 (the 1M model) and 784-4096-1536-10 (~10M), dropout after both hidden layers
ONE_M = dict(D=969_450, n=2000, act=3572, itemsize=8, dropout_units=1184, dropout_cut_units=1024, dropout_fast=True)
TEN_M = dict(D=9_523_722, n=256, act=16916, itemsize=8, dropout_units=5632, dropout_cut_units=4096, dropout_fast=False)


def test_default_probe_at_1m_parameters_fits_the_default_budget():
    p = plan_memory(settings=ProbeSettings(), **ONE_M)
    assert p.peak_mb <= 2048 and p.required_mb < 2048
    assert p.hessian_chunk is None and p.ncv == 41  # the graph kept, the default Krylov basis
    assert set(p.rooms_mb) == {"sgd", "dropout", "isotropic"} and min(p.rooms_mb.values()) > 0
    d = p.to_dict()
    assert d["peak_mb"] <= 2048 and d["required_mb"] >= p.required_mb


def test_10m_probe_is_refused_up_front_with_the_budget_it_needs():
    with pytest.raises(ConfigError, match=r"^`memory_budget_mb` = 2048 is too small for this probe \(D = 9523722, "
                                          r"n = 256, top_k = 20\): it needs at least (\d+) MB \(dropout: directions "
                                          r"30 x D, group sums 64 x D\); raise "
                                          r"memory_budget_mb or lower top_k, n_random, tr_hc_samples\.$") as e:
        plan_memory(settings=ProbeSettings(), **TEN_M)
    need = int(str(e.value).split("needs at least ")[1].split(" MB")[0])
    ok = plan_memory(settings=ProbeSettings(memory_budget_mb=need), **TEN_M)  # the named budget works
    assert ok.peak_mb <= need
    with pytest.raises(ConfigError, match="is too small"):
        plan_memory(settings=ProbeSettings(memory_budget_mb=need - 2), **TEN_M)


def test_choices_shrink_with_the_budget_and_every_plan_stays_within_it():
    s, big = ProbeSettings(sources=("sgd", "isotropic")), {**ONE_M, "n": 20_000}  # a 4.4 GB graph
    need = plan_memory(settings=s, **big).required_mb
    budgets = (16384, 4096, int(need) + 1)
    plans = [plan_memory(settings=replace(s, memory_budget_mb=b), **big) for b in budgets]
    for b, p in zip(budgets, plans):
        assert max(p.peaks_mb.values()) <= b + 1e-6
    assert plans[0].hessian_chunk is None  # the graph kept
    assert plans[1].hessian_chunk > plans[2].hessian_chunk >= 1  # HVPs by data chunk
    assert plans[2].columns < plans[1].columns
    assert plans[0].rooms_mb["sgd"] > plans[1].rooms_mb["sgd"] > plans[2].rooms_mb["sgd"]
    # where the eigensolver dominates, the Krylov basis shrinks to fit, down to top_k + 2
    s = ProbeSettings(sources=("sgd",), n_random=0, tr_hc_samples=0)
    need = plan_memory(settings=s, **ONE_M).required_mb
    ncv = [plan_memory(settings=replace(s, memory_budget_mb=b), **ONE_M).ncv for b in (2048, need + 80, need)]
    assert ncv[0] == 41 and 22 < ncv[1] < 41 and ncv[2] == 22


def test_a_probe_refuses_before_any_work_and_runs_at_the_named_budget():
    torch = pytest.importorskip("torch")
    from _budget import smallest_budget_mb
    from torch import nn

    from varprinciple.collect.probe import probe
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(30, 20, generator=g), torch.randint(0, 3, (30,), generator=g)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 40), nn.ReLU(), nn.Dropout(0.2), nn.Linear(40, 3))
    s = ProbeSettings(top_k=2, n_samples=10, batch_size=4, n_random=1, hutchinson_probes=3, tr_hc_samples=3)
    def no_work(*a, **k):
        raise AssertionError("the Hessian operator was built before the refusal")

    with pytest.MonkeyPatch.context() as mp:  # refused up front: before the gradient graph or any product
        mp.setattr("varprinciple.collect.probe.HessianOperator", no_work)
        need = smallest_budget_mb(net, "cross_entropy", X, y, s)
    res = probe(net, "cross_entropy", X, y, settings=replace(s, memory_budget_mb=need), step=0,
                generator=torch.Generator().manual_seed(1))
    assert res.info["plan"]["memory"]["peak_mb"] <= need
    assert res.info["plan"]["memory"]["required_mb"] == need


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and /proc/self/clear_refs are Linux's")
def test_measured_peak_of_every_stage_is_within_the_plan():
    """A 266k-parameter MLP under a budget just above the smallest one (the rooms shrink): each
    stage's measured peak RSS above the start-up is at most the plan's estimate for it."""
    pytest.importorskip("torch")
    spec = {"widths": [256, 512, 256, 10], "n": 32, "threads": 1,
            "settings": {"top_k": 3, "n_samples": 30, "batch_size": 8, "n_random": 2, "hutchinson_probes": 6,
                         "tr_hc_samples": 6, "dropout_samples": 8, "memory_budget_mb": 80}}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_params.py"), "--spec", json.dumps(spec)],
                         capture_output=True, text=True, env=env, timeout=300, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert "error" not in r, r.get("error")
    plan, measured = r["plan"]["memory"], r["measured_mb"]
    assert plan["rooms_mb"]["dropout"] < 20 and plan["ncv"] < 20  # the budget binds: basis and rooms shrink
    for stage, mb in measured.items():
        if stage == "setup":
            continue
        est = max(v for k, v in plan["peaks_mb"].items() if k.split(" ")[0] == stage
                  or (stage == "hessian" and k == "residuals"))
        assert mb <= est, (stage, mb, est, measured, plan["peaks_mb"])
        assert mb <= spec["settings"]["memory_budget_mb"], (stage, mb)
