"""Log schema v1 reading and writing: every validation problem is found and named."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from varprinciple import schema
from varprinciple.errors import DuplicateRunWarning, InputError, LogValidationError, Problem
from varprinciple.io import (atomic_write_bytes, find_runs, read_logset, read_run, read_table,
                             write_json, write_run, write_table)


def make_tables(*, k=4, K=30, m=2, seed=0, steps=(0,), sources=("sgd",), block=None):
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(0.5, 5.0, k))[::-1]
    eig_rows, noise_rows = [], []
    for s in steps:
        eig_rows.append(pd.DataFrame({"step": s, "rank": np.arange(k), "eigenvalue": lam,
                                      "residual": np.full(k, 1e-9)}))
        for src in sources:
            x = rng.normal(size=(K, k + m)) * np.sqrt(np.r_[lam, np.ones(m)])
            basis = np.r_[["hessian"] * k, ["random"] * m]
            direction = np.r_[np.arange(k), np.arange(m)]
            noise_rows.append(pd.DataFrame({
                "step": s, "source": src,
                "basis": np.tile(basis, K), "direction": np.tile(direction, K),
                "sample": np.repeat(np.arange(K), k + m), "value": x.ravel()}))
    eig = pd.concat(eig_rows, ignore_index=True)
    noise = pd.concat(noise_rows, ignore_index=True)
    if block is not None:
        eig["block"] = block
        noise["block"] = block
    return eig, noise


def meta(rid="r0", method="sgd", **kw):
    return {"schema_version": 1, "run_id": rid, "method": method, **kw}


def write_raw(run_dir, meta_obj, eig, noise):
    """Write a run WITHOUT validation, as a foreign writer might."""
    os.makedirs(run_dir, exist_ok=True)
    if eig is not None:
        pq.write_table(eig if isinstance(eig, pa.Table) else pa.Table.from_pandas(eig, preserve_index=False),
                       os.path.join(run_dir, "eigen.parquet"))
    if noise is not None:
        pq.write_table(noise if isinstance(noise, pa.Table) else pa.Table.from_pandas(noise, preserve_index=False),
                       os.path.join(run_dir, "noise.parquet"))
    with open(os.path.join(run_dir, "run.json"), "w") as fh:
        fh.write(meta_obj if isinstance(meta_obj, str) else json.dumps(meta_obj))


def problems_of(run_dir):
    with pytest.raises(LogValidationError) as info:
        read_run(run_dir)
    return info.value.lines()


def test_roundtrip_and_matrix_layout(tmp_path):
    eig, noise = make_tables(k=5, K=40, m=3, steps=(0, 10), sources=("sgd", "dropout"))
    write_run(tmp_path / "r", meta(), eigen=eig, noise=noise)
    run = read_run(tmp_path / "r")
    assert run.run_id == "r0" and run.method == "sgd"
    assert run.steps == [0, 10]
    assert len(run.blocks) == 4
    b = run.blocks[0]
    assert b.values.shape == (40, 8)
    assert list(b.basis[:5]) == ["hessian"] * 5 and list(b.basis[5:]) == ["random"] * 3
    np.testing.assert_array_equal(b.direction, [0, 1, 2, 3, 4, 0, 1, 2])
    # the matrix holds exactly the logged values
    sub = noise[(noise.step == b.step) & (noise.source == b.source)]
    for j in range(8):
        col = sub[(sub.basis == b.basis[j]) & (sub.direction == b.direction[j])].sort_values("sample")
        np.testing.assert_array_equal(b.values[:, j], col.value.to_numpy())
        assert b.variance[j] == pytest.approx(col.value.var(ddof=1), rel=1e-12)
    np.testing.assert_allclose(b.eigenvalue[:5], eig.eigenvalue[:5])
    assert np.isnan(b.eigenvalue[5:]).all()


def test_row_order_does_not_matter(tmp_path):
    eig, noise = make_tables(k=4, K=25, m=2)
    write_run(tmp_path / "a", meta("a"), eigen=eig, noise=noise)
    shuffled = noise.sample(frac=1.0, random_state=1)
    write_run(tmp_path / "b", meta("b"), eigen=eig.iloc[::-1], noise=shuffled)
    a, b = read_run(tmp_path / "a"), read_run(tmp_path / "b")
    np.testing.assert_array_equal(a.blocks[0].values, b.blocks[0].values)


def test_lossless_upcasts_accepted(tmp_path):
    eig, noise = make_tables()
    t = pa.table({
        "step": pa.array(noise.step, pa.int32()),
        "source": pa.array(noise.source, pa.large_string()),
        "basis": pa.array(noise.basis).dictionary_encode(),
        "direction": pa.array(noise.direction, pa.int16()),
        "sample": pa.array(noise["sample"], pa.uint32()),
        "value": pa.array(noise.value, pa.float32()),
    })
    write_raw(tmp_path / "r", meta(), eig, t)
    run = read_run(tmp_path / "r")
    assert run.blocks[0].values.dtype == np.float64


def test_block_column(tmp_path):
    eig, noise = make_tables(block="layer1")
    write_run(tmp_path / "r", meta(), eigen=eig, noise=noise)
    assert read_run(tmp_path / "r").blocks[0].block == "layer1"


@pytest.mark.parametrize("mutate, match", [
    (lambda m, e, n: (m, e, n.drop(columns="value")), r"noise.parquet: column 'value': missing"),
    (lambda m, e, n: (m, e.drop(columns="eigenvalue"), n), r"eigen.parquet: column 'eigenvalue': missing"),
    (lambda m, e, n: (m, e, n.assign(value=n.value.astype(str))), r"column 'value': has dtype (large_)?string, expected float64"),
    (lambda m, e, n: (m, e, n.assign(step=n.step.astype(float))), r"column 'step': has dtype double, expected int64"),
    (lambda m, e, n: (m, e.assign(eigenvalue=np.where(e["rank"] == 1, np.inf, e.eigenvalue)), n),
     r"eigen.parquet: column 'eigenvalue': 1 NaN/Inf value"),
    (lambda m, e, n: (m, e, n.assign(value=np.where(n.index == 3, np.nan, n.value))),
     r"noise.parquet: column 'value': 1 null/NaN value"),
    (lambda m, e, n: (m, e, n.assign(basis=np.where(n.index == 0, "lanczos", n.basis))),
     r"column 'basis': values \['lanczos'\] not in \['hessian', 'random'\]"),
    (lambda m, e, n: (m, e, n.assign(direction=np.where(n.index == 0, -1, n.direction))),
     r"column 'direction': negative values"),
    (lambda m, e, n: (m, e, n.iloc[:0]), r"noise.parquet: table is empty"),
    (lambda m, e, n: (m, e, n.assign(source=np.where(n.index == 0, "", n.source))),
     r"column 'source': 1 empty string"),
    (lambda m, e, n: ({k: v for k, v in m.items() if k != "method"}, e, n), r"run.json: key 'method': missing"),
    (lambda m, e, n: ({**m, "schema_version": 2}, e, n), r"unsupported schema_version 2"),
    (lambda m, e, n: ({**m, "schema_version": "1"}, e, n), r"key 'schema_version': must be int; got '1'"),
    (lambda m, e, n: ({**m, "run_id": " "}, e, n), r"key 'run_id': must not be empty"),
    (lambda m, e, n: (m, e[e["rank"] != 2], n), r"eigen.parquet: column 'rank': step 0, source 'sgd': no eigenvalue "
                                                 r"for Hessian direction\(s\) \[2\]"),
    (lambda m, e, n: (m, pd.concat([e, e.iloc[:1]]), n), r"eigen.parquet: columns \('step', 'rank'\): 1 duplicate"),
    (lambda m, e, n: (m, e, n.iloc[:-1]), r"1 of 30 draws do not cover all 6 directions"),
    (lambda m, e, n: (m, e, pd.concat([n, n.iloc[:1]])), r"1 duplicate \(sample, basis, direction\) row"),
    (lambda m, e, n: (m, e, n[n["sample"] == 0]), r"1 sample \(need at least 2\)"),
    (lambda m, e, n: (m, e, n.assign(value=np.where(n.direction.eq(1) & n.basis.eq("hessian"), 0.5, n.value))),
     r"noise.parquet: column 'value': step 0, source 'sgd': zero variance along direction\(s\) hessian 1"),
])
def test_each_problem_is_named(tmp_path, mutate, match):
    eig, noise = make_tables()
    m, e, n = mutate(meta(), eig, noise)
    write_raw(tmp_path / "r", m, e, n)
    lines = problems_of(tmp_path / "r")
    assert any(re.search(match, line) for line in lines), lines
    # the same problem stops a writer before anything is written
    with pytest.raises(LogValidationError) as info:
        write_run(tmp_path / "w", m, eigen=e, noise=n)
    assert any(re.search(match, line) for line in info.value.lines()), info.value.lines()
    assert not (tmp_path / "w").exists()


def test_missing_files_and_bad_json(tmp_path):
    eig, noise = make_tables()
    write_raw(tmp_path / "a", meta(), None, noise)
    assert any("eigen.parquet: missing file" in s for s in problems_of(tmp_path / "a"))
    write_raw(tmp_path / "b", "{not json", eig, noise)
    assert any("run.json: invalid JSON" in s for s in problems_of(tmp_path / "b"))
    write_raw(tmp_path / "c", "[1, 2]", eig, noise)
    assert any("run.json: must hold a JSON object" in s for s in problems_of(tmp_path / "c"))
    write_raw(tmp_path / "d", meta(), eig, noise)
    (tmp_path / "d" / "noise.parquet").write_bytes(b"garbage")
    assert any("noise.parquet: unreadable Parquet" in s for s in problems_of(tmp_path / "d"))


def test_all_problems_listed_not_only_the_first(tmp_path):
    eig, noise = make_tables()
    write_raw(tmp_path / "r", {"schema_version": 1, "run_id": "x"}, eig.drop(columns="rank"),
              noise.assign(value=noise.value.astype(str)))
    lines = problems_of(tmp_path / "r")
    assert len(lines) == 3
    assert all(line.startswith("run 'x': ") for line in lines)


def test_logset_duplicates_skip_and_identical(tmp_path):
    eig, noise = make_tables()
    write_run(tmp_path / "a", meta("a"), eigen=eig, noise=noise)
    write_run(tmp_path / "b", meta("a"), eigen=eig, noise=noise.assign(value=noise.value * 2))
    with pytest.raises(LogValidationError, match="duplicate run_id"):
        read_logset(tmp_path)
    ls = read_logset(tmp_path, skip_invalid=True)
    assert ls.runs == [] and len(ls.skipped) == 2
    assert "duplicate run_id" in ls.skipped[0].problems[0]

    root = tmp_path / "set2"
    write_run(root / "a", meta("a"), eigen=eig, noise=noise)
    write_run(root / "b", meta("b"), eigen=eig, noise=noise)
    write_raw(root / "bad", meta("bad"), eig, noise.iloc[:-1])
    with pytest.warns(DuplicateRunWarning, match="runs a, b have identical noise tables"):
        ls = read_logset(root, skip_invalid=True)
    assert [r.run_id for r in ls.runs] == ["a", "b"]
    assert ls.identical == [("a", "b")]
    assert ls.skipped[0].run_id == "bad" and ls.skipped[0].to_dict()["problems"]


def test_logset_errors(tmp_path):
    with pytest.raises(InputError, match="no such directory"):
        read_logset(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        find_runs(tmp_path / "f")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no run found \(no run.json"):
        read_logset(tmp_path / "empty")


def test_write_helpers_are_atomic_and_json_has_no_nan(tmp_path):
    write_json(tmp_path / "x.json", {"a": float("nan"), "b": [np.float64(np.inf), np.int64(3)], "c": np.arange(2)})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 3], "c": [0, 1]}
    atomic_write_bytes(tmp_path / "y.bin", b"123")
    assert (tmp_path / "y.bin").read_bytes() == b"123"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(InputError, match="expected a pandas DataFrame or pyarrow Table; got list"):
        write_table(tmp_path / "z.parquet", [1, 2])
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json(tmp_path / "w.json", {"a": object()})
    assert not (tmp_path / "w.json").exists()


def test_optional_table_validation(tmp_path):
    eig, noise = make_tables()
    flat = pd.DataFrame({"step": [0], "quantity": ["lambda_max"], "estimate": [np.nan]})
    with pytest.raises(LogValidationError, match="flatness.parquet: column 'estimate'"):
        write_run(tmp_path / "r", meta(), eigen=eig, noise=noise, tables={"flatness.parquet": flat})
    flat = pd.DataFrame({"step": [0], "quantity": ["lambda_max"], "estimate": [3.0]})
    write_run(tmp_path / "r", meta(), eigen=eig, noise=noise, tables={"flatness.parquet": flat})
    run = read_run(tmp_path / "r")
    assert run.optional_table("flatness.parquet").estimate.tolist() == [3.0]
    assert run.optional_table("nothing.parquet") is None
    (tmp_path / "r" / "flatness.parquet").write_bytes(b"junk")
    with pytest.raises(LogValidationError, match="flatness.parquet: unreadable Parquet"):
        read_table(tmp_path / "r" / "flatness.parquet", run_id="r0")


def test_problem_str_without_run_id():
    p = Problem("/x/y", "missing file", None, "eigen.parquet")
    assert str(p) == "run at /x/y: eigen.parquet: missing file"
    err = LogValidationError([p, p, p])
    assert str(err).endswith("(and 2 more problems)")


def test_invalid_optional_table_makes_the_run_invalid_and_is_skippable(tmp_path):
    eig, noise = make_tables()
    write_run(tmp_path / "a", meta("a"), eigen=eig, noise=noise)
    write_run(tmp_path / "b", meta("b"), eigen=eig, noise=noise.assign(value=noise.value * 3))
    pq.write_table(pa.table({"step": [0], "quantity": ["lambda_max"], "estimate": [float("nan")]}),
                   tmp_path / "a" / "flatness.parquet")
    pq.write_table(pa.table({"step": [0], "quantity": ["lambda_max"]}), tmp_path / "b" / "flatness.parquet")
    with pytest.raises(LogValidationError) as info:
        read_logset(tmp_path)
    lines = info.value.lines()
    assert any(re.search(r"run 'a': flatness.parquet: column 'estimate': 1 NaN/Inf value", ln) for ln in lines)
    assert any(re.search(r"run 'b': flatness.parquet: column 'estimate': missing", ln) for ln in lines)
    ls = read_logset(tmp_path, skip_invalid=True)
    assert ls.runs == [] and {s.run_id for s in ls.skipped} == {"a", "b"}


def test_every_problem_of_a_block_is_listed(tmp_path):
    eig, noise = make_tables(k=5)
    bad = noise.iloc[:-1]                                   # one draw misses a direction
    write_raw(tmp_path / "r", meta(), eig[eig["rank"] != 4], bad)   # and direction 4 has no eigenvalue
    lines = problems_of(tmp_path / "r")
    assert any("draws do not cover all" in ln for ln in lines)
    assert any("no eigenvalue for Hessian direction(s) [4]" in ln for ln in lines)


def test_duplicate_run_id_lines_name_their_own_path(tmp_path):
    eig, noise = make_tables()
    write_run(tmp_path / "x", meta("same"), eigen=eig, noise=noise)
    write_run(tmp_path / "y", meta("same"), eigen=eig, noise=noise.assign(value=noise.value * 2))
    with pytest.raises(LogValidationError) as info:
        read_logset(tmp_path)
    lines = info.value.lines()
    assert any(f"duplicate run_id at {tmp_path / 'x'}" in ln for ln in lines)
    assert any(f"duplicate run_id at {tmp_path / 'y'}" in ln for ln in lines)


def test_every_table_declares_its_unique_key():
    for spec in (schema.EIGEN, schema.NOISE, *schema.OPTIONAL_TABLES.values()):
        assert spec.unique_key, spec.file
        assert set(spec.unique_key) <= set(spec.names), spec.file


@pytest.mark.parametrize("file, rows, match", [
    ("flatness.parquet", {"step": [0, 0], "quantity": ["lambda_max"] * 2, "estimate": [3.0, 4.0]},
     r"run 'r0': flatness.parquet: columns \('step', 'quantity'\): 1 duplicate row \(the key must be unique; "
     r"e.g. step=0, quantity='lambda_max'\)"),
    ("flatness.parquet", {"step": [0, 0, 0], "quantity": ["rho"] * 3, "source": ["sgd", "sgd", None],
                          "estimate": [1.0, 1.1, 1.2]},
     r"flatness.parquet: columns \('step', 'quantity', 'source'\): 1 duplicate row"),
    ("training.parquet", {"step": [0, 1, 1], "train_loss": [1.0, 0.5, 0.4]},
     r"training.parquet: columns \('step',\): 1 duplicate row"),
    ("exact_variance.parquet", {"step": [0, 0], "source": ["sgd"] * 2, "basis": ["hessian"] * 2,
                                "direction": [1, 1], "variance": [1.0, 1.0]},
     r"exact_variance.parquet: columns \('step', 'source', 'basis', 'direction'\): 1 duplicate row"),
])
def test_duplicate_keys_in_optional_tables_are_named(tmp_path, file, rows, match):
    eig, noise = make_tables()
    with pytest.raises(LogValidationError, match=match):
        write_run(tmp_path / "w", meta(), eigen=eig, noise=noise, tables={file: pd.DataFrame(rows)})
    write_run(tmp_path / "r", meta(), eigen=eig, noise=noise)
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), tmp_path / "r" / file)
    assert any(re.search(match, ln) for ln in problems_of(tmp_path / "r"))
    with pytest.raises(LogValidationError, match=match):
        read_table(tmp_path / "r" / file, run_id="r0")


def test_key_check_handles_nulls_and_wide_keys():
    spec = schema.TableSpec("x.parquet", (schema.ColumnSpec("a", "int64"), schema.ColumnSpec("b", "string")),
                            unique_key=("a", "b"))
    ok = pa.table({"a": [0, 0, 2 ** 40], "b": pa.array(["u", None, "u"], type=pa.string())})
    assert schema.key_problems(ok, spec) == []
    bad = pa.table({"a": [0, 0, -5, -5], "b": pa.array([None, None, "v", "v"], type=pa.string())})
    assert schema.key_problems(bad, spec)[0][1].startswith("2 duplicate rows")
    # keys wider than one int64 fall back to a hash group-by with the same answer
    wide = pa.table({"a": [-(2 ** 62), 2 ** 62, 2 ** 62], "b": ["u", "u", "u"]})
    assert schema.key_problems(wide, spec)[0][1].startswith("1 duplicate row ")
