"""Runs of one group analysed at different last probe steps (e.g. runs stopped at a target
loss): the group row has step null and a `steps` list; the report's figures still draw it."""

import numpy as np
import pandas as pd
import pytest

from varprinciple.report import build_report
from varprinciple.report.figures._plot import LAST_STEP, group_level_relations
from varprinciple.report._input import load_results
from varprinciple.simulate import simulate
from varprinciple.stats import analyze


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    root = tmp_path_factory.mktemp("uneven")
    simulate(root / "logs", methods={"sgd": 1.0}, runs_per_method=3, sources=("sgd",), steps=(0, 10),
             n_directions=8, n_samples=60, rng=np.random.default_rng(3))
    # the first run stops at step 0: drop its step-10 rows
    run_dir = sorted(p for p in (root / "logs").iterdir() if p.is_dir())[0]
    for name in ("eigen.parquet", "noise.parquet"):
        df = pd.read_parquet(run_dir / name)
        df[df["step"] == 0].to_parquet(run_dir / name, index=False)
    res = analyze(root / "logs", resamples=0)
    json_path = root / "r.json"
    res.write(json_path)
    return res, json_path, run_dir.name


def test_group_row_has_null_step_and_each_run_enters_at_its_last_step(uneven):
    res, json_path, stopped = uneven
    g = res.groups.iloc[0]
    assert pd.isna(g["step"]) and sorted(g["steps"]) == [0, 10]
    rels = group_level_relations(load_results(json_path))
    assert len(rels) == 3 and {r["step"] for r in rels} == {LAST_STEP}
    assert {r["run_id"]: r["probe_step"] for r in rels}[stopped] == 0
    assert sorted(r["probe_step"] for r in rels) == [0, 10, 10]


def test_figures_draw_a_group_with_uneven_steps(uneven, tmp_path):
    _, json_path, _ = uneven
    out = build_report(json_path, tmp_path / "rep", formats="md")
    names = {p.name for p in (tmp_path / "rep").rglob("*.png")}
    assert any("pooled" in n for n in names) and any("forest" in n for n in names), names
    assert out is not None
