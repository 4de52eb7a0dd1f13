"""The results contract (varprinciple.results): one owner for the JSON and its per-direction table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from varprinciple import results as vr
from varprinciple.errors import InputError
from varprinciple.report import load_results
from varprinciple.simulate import simulate_logset
from varprinciple.stats import analyze


@pytest.fixture(scope="module")
def res():
    logset, _ = simulate_logset(methods={"sgd": 1.0, "dropout": 0.8}, runs_per_method=3,
                                sources=("sgd", "dropout", "isotropic"), rng=np.random.default_rng(3))
    return analyze(logset, resamples=0, equivalence_margin=0.2)


@pytest.mark.parametrize("name, table", [
    ("r.json", "r.directions.parquet"), ("r.JSON", "r.directions.parquet"),
    ("r.out", "r.out.directions.parquet"), ("r", "r.directions.parquet"),
    ("a.json.bak", "a.json.bak.directions.parquet"), (".json", ".json.directions.parquet"),
])
def test_directions_path_rule(tmp_path, name, table):
    assert vr.directions_path(tmp_path / name) == tmp_path / table


def test_distinct_json_names_never_share_a_table():
    names = ["r.json", "r", "r.out", "r.out.json", "r.txt", "R.json"]
    tables = [vr.directions_path(n) for n in names]
    # only the pairs the rule documents collide (r.json / r and r.out.json / r.out)
    assert len(set(tables)) == 4


def test_every_documented_field_is_present(res):
    d = json.loads(json.dumps(res.to_json_dict()))
    assert d["schema_version"] == vr.RESULTS_SCHEMA_VERSION
    for key, fields in (("relations", vr.RELATION_FIELDS), ("groups", vr.GROUP_FIELDS),
                        ("comparisons", vr.COMPARISON_FIELDS), ("flatness", vr.FLATNESS_FIELDS)):
        for row in d[key]:
            missing = set(fields) - set(row)
            assert not missing, (key, missing)
    assert d["comparisons"] and d["relations"] and d["groups"]
    assert list(res.comparisons.columns) == list(vr.COMPARISON_COLUMNS)
    assert list(res.directions_table().column_names) == list(vr.DIRECTION_COLUMNS)


def test_write_then_load_round_trip(tmp_path, res):
    jp, dp = res.write(tmp_path / "sub" / "r.out")
    assert dp == tmp_path / "sub" / "r.out.directions.parquet"
    data = load_results(jp)
    assert data.directions_path == dp.resolve()
    assert len(data.directions) == len(res.directions)
    assert data.results["relations"] == json.loads(json.dumps(res.to_json_dict()["relations"]))


@pytest.mark.parametrize("bad", [3, "", "../x.parquet", "a/b.parquet"])
def test_directions_file_must_be_a_name_in_the_folder(bad):
    with pytest.raises(InputError, match=r"r\.json: key 'directions_file' must be a file name"):
        vr.check_results({"schema_version": 1, "relations": [], "directions_file": bad}, "r.json")


def test_list_keys_are_checked():
    with pytest.raises(InputError, match=r"r\.json: key 'notes' must be a list; got str"):
        vr.check_results({"schema_version": 1, "relations": [], "notes": "x"}, "r.json")
    with pytest.raises(InputError, match=r"r\.json: key 'flatness' must be a list of objects"):
        vr.check_results({"schema_version": 1, "relations": [], "flatness": [1]}, "r.json")


def test_extra_keys_may_not_overwrite_the_contract(res):
    kw = dict(relations=res.relations, groups=res.groups, comparisons=res.comparisons, flatness=res.flatness,
              settings={}, provenance={}, skipped=[], identical=[], notes=[])
    assert vr.results_dict(**kw, extra={"psi": []})["psi"] == []
    with pytest.raises(ValueError, match="extra results key 'groups' would overwrite a contract key"):
        vr.results_dict(**kw, extra={"groups": []})


def test_check_directions_fills_optional_columns():
    df = pd.DataFrame({c: [] for c in vr.DIRECTIONS_REQUIRED})
    out = vr.check_directions(df, "t")
    assert {"block", "group", "method", "reason"} <= set(out.columns)
    with pytest.raises(InputError, match=r"t: column 'variance' missing from the per-direction table"):
        vr.check_directions(df.drop(columns="variance"), "t")
