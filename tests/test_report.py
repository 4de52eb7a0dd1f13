"""Tests of `varprinciple report`: tables equal the JSON, figures written, errors, CLI.

The hand-written fixture below follows JSON output v1 (DESIGN.md) plus the report contract
(relation intercept/se_*/cov, per-direction table, "flatness" key). It exercises optional
content that real analyses may lack (flatness summaries, flatness comparisons, blocks).
Tests on real `analyze` output live in tests/test_report_real.py.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from varprinciple.cli import main
from varprinciple.errors import InputError
from varprinciple.report import build_report, load_results, parse_formats
from varprinciple.report.format import (
    MINUS,
    format_fixed,
    format_p,
    format_r,
    format_sig,
    parse_number,
)
from varprinciple.report.tables import build_tables, group_label

# ---------------------------------------------------------------------------- fixture

STEP = 1000


def _ols(x, y, conf=0.95):
    from scipy import stats as sps

    n = x.size
    X = np.c_[np.ones(n), x]
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    s2 = resid @ resid / (n - 2)
    cov = s2 * np.linalg.inv(X.T @ X)
    tq = sps.t.ppf(0.5 + conf / 2, n - 2)
    se_b = float(np.sqrt(cov[1, 1]))
    return dict(intercept=float(beta[0]), slope=float(beta[1]), se_intercept=float(np.sqrt(cov[0, 0])),
                se_slope=se_b, cov_intercept_slope=float(cov[0, 1]), ci_low=float(beta[1] - tq * se_b),
                ci_high=float(beta[1] + tq * se_b), p_value=float(sps.t.sf(beta[1] / se_b, n - 2)))


def _unit(label, source):
    return {"group": {"method": label}, "label": label, "source": source, "block": None}


def make_results(*, random: bool = True, flatness: bool = True, margin: float | None = 0.2,
                 confidence: float = 0.95, seed: int = 7) -> tuple[dict, pd.DataFrame]:
    """A small, internally consistent results dict and per-direction table (2 groups x 3 runs)."""
    from scipy import stats as sps

    rng = np.random.default_rng(seed)
    relations, drows = [], []
    truth = {"sgd": 1.0, "dropout": 0.55}
    for g, b_true in truth.items():
        for s in range(3):
            run = f"{g}-seed{s}"
            lam = np.r_[np.geomspace(40.0, 0.04, 12), [-0.02, 1e-9, 0.015]]
            for src in ("sgd", "dropout"):
                b = b_true if src == g else 0.8
                var = np.where(lam > 0, 0.02 * np.abs(lam) ** b * np.exp(rng.normal(0, 0.25, lam.size)),
                               rng.uniform(1e-3, 5e-3, lam.size))
                inc = np.r_[np.ones(12, bool), [False, False, False]]
                fit = _ols(np.log(lam[inc]), np.log(var[inc]), confidence)
                rho, rho_p = sps.spearmanr(lam[inc], var[inc])
                relations.append(dict(run_id=run, method=g, group=g, source=src, basis="hessian", step=STEP,
                                      block=None, **fit, spearman_r=float(rho), spearman_p=float(rho_p),
                                      n_directions=12, n_excluded=3,
                                      n_excluded_by_reason={"nonpositive": 1, "below_floor": 1,
                                                            "residual": 1}, n_samples=64))
                for i, (l, v) in enumerate(zip(lam, var)):
                    drows.append(dict(run_id=run, method=g, group=g, source=src, basis="hessian", step=STEP,
                                      block=None, direction=i, eigenvalue=float(l), residual=0.02 if i == 14 else 1e-8,
                                      variance=float(v), n_samples=64, included=bool(inc[i]),
                                      reason=None if inc[i] else
                                      ("nonpositive" if l <= 0 else "below_floor" if l < 1e-6 else "residual")))
                if random:
                    for j in range(5):
                        drows.append(dict(run_id=run, method=g, group=g, source=src, basis="random", step=STEP,
                                          block=None, direction=j, eigenvalue=None, residual=None,
                                          variance=float(0.02 * 0.05 * np.exp(rng.normal(0, 0.2))),
                                          n_samples=64, included=False, reason="random"))
    groups = []
    tq_conf = lambda n: sps.t.ppf(0.5 + confidence / 2, n - 1)  # noqa: E731
    per = {}
    for g in truth:
        for src in ("sgd", "dropout"):
            b = np.array([r["slope"] for r in relations if r["group"] == g and r["source"] == src])
            per[(g, src)] = b
            m, se = b.mean(), b.std(ddof=1) / np.sqrt(b.size)
            groups.append(dict(group={"method": g}, group_label=g, control=False, source=src, step=STEP, block=None, slope=float(m),
                               ci_low=float(m - tq_conf(b.size) * se), ci_high=float(m + tq_conf(b.size) * se),
                               p_value=float(sps.t.sf(m / se, b.size - 1)), n_runs=int(b.size)))
    comps = []
    for src in ("sgd", "dropout"):
        a, b = per[("sgd", src)], per[("dropout", src)]
        res = sps.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(confidence)
        d = float(a.mean() - b.mean())
        row = dict(quantity="slope", group_a=_unit("sgd", src), group_b=_unit("dropout", src),
                   step=STEP, paired=False, confirmatory=True, difference=d, ci_low=float(ci.low), ci_high=float(ci.high),
                   p_value=float(res.pvalue), p_adjusted=None, margin=margin, tost_p=None, equivalent=None,
                   tost_ci_low=None, tost_ci_high=None)
        if margin is not None:
            ci90 = res.confidence_interval(0.9)
            row.update(tost_p=0.31 if src == "sgd" else 0.012, equivalent=src != "sgd",
                       tost_ci_low=float(ci90.low), tost_ci_high=float(ci90.high))
        comps.append(row)
    ps = [c["p_value"] for c in comps]
    order = np.argsort(ps)
    adj = np.minimum(1, np.maximum.accumulate([(len(ps) - k) * ps[i] for k, i in enumerate(order)]))
    for k, i in enumerate(order):
        comps[i]["p_adjusted"] = float(adj[k])
    results = {
        "schema_version": 1,
        "settings": {"confidence": confidence, "alpha": 0.05, "equivalence_margin": margin, "seed": 0,
                     "resamples": 999},
        "provenance": {"package_version": "0.1.0", "input": "/data/fixture-logs", "created": "2026-11-27T10:00:00Z",
                       "command": "varprinciple test /data/fixture-logs --json results.json"},
        "skipped": [{"path": "/data/fixture-logs/broken", "run_id": "broken",
                     "problems": ["run 'broken': noise.parquet: column 'value': 3 NaN/Inf values"]}],
        "relations": relations,
        "groups": groups,
        "comparisons": comps,
    }
    if flatness:
        flat = []
        for g, lmax in (("sgd", 12.5), ("dropout", 7.25)):
            flat.append(dict(group={"method": g}, quantity="lambda_max", source=None, step=STEP, estimate=lmax,
                             ci_low=lmax * 0.8, ci_high=lmax * 1.2, n_runs=3))
            flat.append(dict(group={"method": g}, quantity="hessian_trace", source=None, step=STEP,
                             estimate=lmax * 13.3, ci_low=lmax * 11.0, ci_high=lmax * 15.9, n_runs=3))
            for src, r in (("sgd", 3.2), ("dropout", 2.1)):
                flat.append(dict(group={"method": g}, quantity="rho", source=src, step=STEP, estimate=r,
                                 ci_low=r - 0.4, ci_high=r + 0.5, n_runs=3))
        results["flatness"] = flat
        comps.append(dict(quantity="log_lambda_max", group_a=_unit("sgd", None), group_b=_unit("dropout", None),
                          step=STEP, paired=False, confirmatory=False, difference=0.5423, ci_low=0.1234,
                          ci_high=0.92666, p_value=0.0123, p_adjusted=None, margin=None, tost_p=None,
                          equivalent=None, tost_ci_low=None, tost_ci_high=None))
    return results, pd.DataFrame(drows)


def write_fixture(tmp_path: Path, **kw) -> Path:
    results, dirs = make_results(**kw)
    path = tmp_path / "in" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    dirs.to_parquet(path.with_name("results.directions.parquet"), index=False)
    return path


# ---------------------------------------------------------------------------- parse back helpers


def _cells_md(text: str, title: str) -> tuple[list[str], list[list[str]]]:
    lines = text.splitlines()
    i = next(k for k, l in enumerate(lines) if l.startswith("#") and title in l)
    rows = []
    for l in lines[i + 2:]:
        if not l.startswith("|"):
            break
        rows.append([c.strip().replace("\\|", "|") for c in l.strip().strip("|").split(" | ")])
    return rows[0], rows[2:]


def _cells_tex(text: str) -> tuple[list[str], list[list[str]]]:
    body = text.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    head = text.split("\\toprule\n", 1)[1].split("\\midrule", 1)[0]

    def split(line):
        return [c.strip() for c in line.strip().removesuffix("\\\\").split(" & ")]

    return split(head), [split(l) for l in body.strip().splitlines()]


def _delatex(cell: str) -> str:
    """Undo the report's LaTeX escaping of the symbols tables use."""
    for tex, text in (("$-$", MINUS), ("$<$", "<"), ("---", "—"), ("$\\pm$", "±"), ("\\%", "%"),
                      ("$\\lambda$", "λ"), ("\\_", "_"), ("\\&", "&"), ("$\\rho$", "ρ"), ("$\\psi$", "ψ")):
        cell = cell.replace(tex, text)
    return cell


_CI_RE = re.compile(r"^(\S+) \[(\S+), (\S+)\]$")


def assert_est_ci(cell: str, est, lo, hi):
    m = _CI_RE.match(cell)
    assert m, cell
    for text, val in zip(m.groups(), (est, lo, hi)):
        got, half = parse_number(text)
        assert abs(got - val) <= half + 1e-12 * abs(val), (cell, val)


def assert_p(cell: str, p):
    if p is None:
        assert cell == "—"
    elif cell == "< .001":
        assert p < 0.001
    else:
        got, half = parse_number(cell)
        assert abs(got - p) <= half + 1e-12, (cell, p)
        assert not cell.startswith("0"), cell  # no leading zero


def _label(g):
    return group_label(g)


def check_groups_rows(header, rows, results):
    assert header[3] == "b [95% CI]" or header[3].startswith("b [")
    assert header[4] == "p (one-sided)" and header[5] == "n runs"
    assert len(rows) == len(results["groups"])
    for cells, g in zip(rows, results["groups"]):
        assert cells[0] == _label(g["group"]) and cells[1].removesuffix(" (control)") == g["source"]
        assert cells[2] == str(g["step"])
        assert_est_ci(cells[3], g["slope"], g["ci_low"], g["ci_high"])
        assert_p(cells[4], g["p_value"])
        assert cells[5] == str(g["n_runs"])


# ---------------------------------------------------------------------------- tables = JSON


@pytest.fixture(scope="module")
def report_full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    path = write_fixture(tmp)
    res = build_report(path, tmp / "out", command="varprinciple report in/results.json --out out", figures=False)
    return path, json.loads(path.read_text()), res


def test_groups_table_markdown_and_latex_equal_json(report_full):
    _, results, res = report_full
    md = res.path("table", "groups", "md").read_text()
    header, rows = _cells_md(md, "Exponent b per group")
    check_groups_rows(header, rows, results)
    # flatness columns joined by group and step
    assert header[6] == "λ_max [95% CI]" and header[7] == "Tr(H) [95% CI]"
    flat = {(_label(f["group"]), f["quantity"]): f for f in results["flatness"]}
    for cells, g in zip(rows, results["groups"]):
        f = flat[(_label(g["group"]), "lambda_max")]
        assert_est_ci(cells[6], f["estimate"], f["ci_low"], f["ci_high"])
    tex = res.path("table", "groups", "tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    th, trows = _cells_tex(tex)
    check_groups_rows([_delatex(c) for c in th], [[_delatex(c) for c in r] for r in trows], results)
    assert "b [95\\% CI]" in th[3]


def test_csv_keeps_raw_numbers_at_full_precision(report_full):
    _, results, res = report_full
    df = pd.read_csv(res.path("table", "groups", "csv"))
    assert df["slope"].tolist() == [g["slope"] for g in results["groups"]]
    assert df["p_value"].tolist() == [g["p_value"] for g in results["groups"]]
    rel = pd.read_csv(res.path("table", "relations", "csv"))
    for col in ("slope", "ci_low", "ci_high", "intercept", "se_slope", "spearman_r"):
        assert rel[col].tolist() == [r[col] for r in results["relations"]]
    assert rel["n_excluded_by_reason_nonpositive"].tolist() == [1] * len(results["relations"])
    cmp_ = pd.read_csv(res.path("table", "comparisons", "csv"))
    got = cmp_["p_adjusted"].tolist()
    want = [c["p_adjusted"] for c in results["comparisons"]]
    assert [g for g, w in zip(got, want) if w is not None] == [w for w in want if w is not None]
    assert all(np.isnan(g) for g, w in zip(got, want) if w is None)  # null -> empty cell
    assert cmp_["group_a"].tolist() == ["sgd:sgd", "sgd:dropout", "sgd"]
    assert cmp_["group_a_source"].tolist()[:2] == ["sgd", "dropout"]


def test_relations_table_equals_json(report_full):
    _, results, res = report_full
    header, rows = _cells_md(res.path("table", "relations", "md").read_text(), "Per-run relation")
    assert header[:4] == ["Run", "Group", "Source", "Step"]
    assert header[4] == "b [95% CI]" and header[5] == "p (one-sided)"
    for cells, r in zip(rows, results["relations"], strict=True):
        assert cells[0] == r["run_id"] and cells[1] == r["group"]
        assert_est_ci(cells[4], r["slope"], r["ci_low"], r["ci_high"])
        assert_p(cells[5], r["p_value"])
        r_text = cells[6].replace(MINUS + ".", MINUS + "0.") if cells[6].startswith(MINUS) else "0" + cells[6]
        got, half = parse_number(r_text)
        assert abs(got - r["spearman_r"]) <= half + 1e-12
        assert_p(cells[7], r["spearman_p"])
        assert cells[8:] == [str(r["n_directions"]), str(r["n_excluded"]), str(r["n_samples"])]


def test_comparisons_table_equals_json_with_tost(report_full):
    _, results, res = report_full
    md = res.path("table", "comparisons", "md").read_text()
    header, rows = _cells_md(md, "Comparisons")
    assert header == ["Quantity", "Group A", "Group B", "Step", "Paired", "A − B [95% CI]", "p",
                      "Holm p", "Family", "Margin", "TOST p", "Equivalent", "90% CI"]
    for cells, c in zip(rows, results["comparisons"], strict=True):
        assert cells[0] == ("b" if c["quantity"] == "slope" else "log λ_max")
        src = c["group_a"]["source"]
        assert cells[1] == c["group_a"]["label"] + (f":{src}" if src else "")
        assert_est_ci(cells[5], c["difference"], c["ci_low"], c["ci_high"])
        assert_p(cells[6], c["p_value"])
        assert_p(cells[7], c["p_adjusted"])
        assert cells[8] == ("confirmatory" if c["confirmatory"] else "control")
        if c["margin"] is None:
            assert cells[9:] == ["—"] * 4
            continue
        assert cells[9] == "±" + format_fixed(c["margin"])
        assert_p(cells[10], c["tost_p"])
        assert cells[11] == ("yes" if c["equivalent"] else "not shown")
        m = re.match(r"^\[(\S+), (\S+)\]$", cells[12])
        for text, val in zip(m.groups(), (c["tost_ci_low"], c["tost_ci_high"])):
            got, half = parse_number(text)
            assert abs(got - val) <= half
    assert "Holm" in md and "one-sided" not in md.split("*Note.*")[1].split("Holm")[0]
    assert "confirmatory family (2 comparisons with a Holm p)" in md  # the family size is stated


def test_notes_say_which_p_are_one_sided_and_adjusted(report_full):
    _, _, res = report_full
    groups_md = res.path("table", "groups", "md").read_text()
    assert "p one-sided for H1: b > 0" in groups_md and "not adjusted" in groups_md
    cmp_md = res.path("table", "comparisons", "md").read_text()
    assert "two-sided" in cmp_md and "Holm" in cmp_md and "unadjusted" in cmp_md
    assert "(1 − 2α)" in cmp_md


def test_confidence_level_read_from_settings(tmp_path):
    path = write_fixture(tmp_path, confidence=0.9, margin=None, flatness=False)
    res = build_report(path, tmp_path / "out", formats="md", figures=False)
    assert not any(f.kind == "figure" for f in res.files) and not (tmp_path / "out" / "figures").exists()
    header, rows = _cells_md(res.path("table", "groups", "md").read_text(), "Exponent b")
    assert header[3] == "b [90% CI]" and len(header) == 6  # no flatness columns
    cmp_header, _ = _cells_md(res.path("table", "comparisons", "md").read_text(), "Comparisons")
    assert "Margin" not in cmp_header and cmp_header[-4] == "A − B [90% CI]"
    assert not (tmp_path / "out" / "tables" / "flatness.md").exists()


def test_skipped_runs_table(report_full):
    _, _, res = report_full
    text = res.path("table", "skipped", "md").read_text()
    assert "broken" in text and "NaN/Inf" in text


# ---------------------------------------------------------------------------- figures and pages


FIG_ALL = {"loglog_runs", "loglog_pooled", "forest", "flatness"}


def test_figures_without_optional_tables(tmp_path):
    path = write_fixture(tmp_path, random=False, flatness=False)
    res = build_report(path, tmp_path / "out", formats="html", dpi=40)
    drawn = {f.name for f in res.files if f.kind == "figure"}
    assert drawn == FIG_ALL - {"flatness"}
    for f in res.files:
        assert f.path.stat().st_size > 0
    assert "flatness" in dict(res.skipped_figures)
    assert "'flatness' key" in dict(res.skipped_figures)["flatness"]
    # random-direction reference line: the SVG of the run panels has fewer dashed lines without random dirs
    assert not (tmp_path / "out" / "report.md").exists()


def test_random_reference_line_drawn_only_with_random_directions(tmp_path):
    from varprinciple.report.figures.loglog import loglog_runs

    def dashed_lines(data):
        fig = loglog_runs(data)
        return sum(1 for ax in fig.axes for l in ax.get_lines() if l.get_linestyle() == "--")

    results, dirs = make_results()
    with_random = dashed_lines(load_results(results, directions=dirs))
    without = dashed_lines(load_results(results, directions=dirs[dirs["basis"] == "hessian"]))
    assert without == 0 and with_random == 12  # 6 runs x 2 sources


def test_fitted_line_comes_from_json_intercept_and_slope():
    from varprinciple.report.figures.loglog import loglog_runs

    results, dirs = make_results(random=False)
    fig = loglog_runs(load_results(results, directions=dirs))
    ax = fig.axes[0]
    rel = results["relations"][0]
    line = [l for l in ax.get_lines() if l.get_linestyle() == "-"][0]
    x, y = line.get_data()
    np.testing.assert_allclose(np.log(y), rel["intercept"] + rel["slope"] * np.log(x), rtol=1e-12)


def test_figures_and_pages_with_optional_tables(tmp_path):
    """One build with every optional part: figure files, self-contained HTML, Markdown/LaTeX pages."""
    path = write_fixture(tmp_path)
    results = json.loads(path.read_text())
    res = build_report(path, tmp_path / "out", command="varprinciple report in/results.json --out out", dpi=50)
    # every applicable figure, PNG and SVG, non-empty; planned ones skipped with the input they need
    drawn = {f.name for f in res.files if f.kind == "figure"}
    assert drawn == FIG_ALL
    for name in FIG_ALL:
        for fmt in ("png", "svg"):
            assert res.path("figure", name, fmt).stat().st_size > 5000, (name, fmt)
    assert res.path("figure", "forest", "png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in res.path("figure", "forest", "svg").read_bytes()[:500]
    skipped = dict(res.skipped_figures)
    assert set(skipped) == {"variance_flatness", "loss_profiles"}
    assert "variance_flatness" in skipped["variance_flatness"]
    # the HTML page is self-contained
    text = res.html.read_text()
    assert text.count('src="data:image/png;base64,') == len(FIG_ALL)
    assert not re.search(r'(src|href)="(?!data:)', text)
    assert "http://" not in text and "https://" not in text
    assert "varprinciple report in/results.json --out out" in text
    assert str(path.resolve()) in text
    for pkg in ("numpy", "matplotlib", "varprinciple", "pandas"):
        assert f"<dt>{pkg}</dt>" in text
    assert "b [95% CI]" in text and results["relations"][0]["run_id"] in text
    # Markdown and LaTeX pages
    md = res.path("page", "report", "md").read_text()
    assert "![Forest plot of b](figures/forest.png)" in md and "## Command" in md
    tex = res.path("page", "report", "tex").read_text()
    assert "\\usepackage{booktabs}" in tex and "\\includegraphics" in tex
    assert tex.rstrip().endswith("\\end{document}") and tex.count("\\begin{table}") == 5
    # the result lists every file it wrote
    df = res.to_frame()
    assert set(df["kind"]) == {"table", "figure", "page"}
    assert len(df) == len(res.files) and all(Path(p).exists() for p in df["path"])


def test_formats_subset(tmp_path):
    path = write_fixture(tmp_path)
    res = build_report(path, tmp_path / "out", formats=["csv"], figures=False)
    assert {f.format for f in res.files} == {"csv"}


# ---------------------------------------------------------------------------- errors


def test_error_missing_input(tmp_path):
    with pytest.raises(InputError, match=r"nope\.json: no such file or directory"):
        build_report(tmp_path / "nope.json", tmp_path / "out")


def test_error_not_json(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match=r"r\.json: not valid JSON"):
        build_report(p, tmp_path / "out")


def test_error_wrong_schema_version(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"schema_version": 2, "relations": []}))
    with pytest.raises(InputError, match=r"r\.json: key 'schema_version' is 2; this version of varprinciple reads JSON output v1"):
        build_report(p, tmp_path / "out")
    p.write_text(json.dumps({"relations": []}))
    with pytest.raises(InputError, match=r"key 'schema_version' missing"):
        build_report(p, tmp_path / "out")
    p.write_text(json.dumps([1, 2]))
    with pytest.raises(InputError, match=r"results must be a JSON object; got list"):
        build_report(p, tmp_path / "out")


def test_error_malformed_keys(tmp_path):
    with pytest.raises(InputError, match=r"key 'relations' missing"):
        load_results({"schema_version": 1})
    with pytest.raises(InputError, match=r"key 'groups' must be a list; got dict"):
        load_results({"schema_version": 1, "relations": [], "groups": {}})
    with pytest.raises(InputError, match=r"key 'relations' must be a list of objects"):
        load_results({"schema_version": 1, "relations": [1]})
    with pytest.raises(InputError, match=r"key 'settings' must be an object; got list"):
        load_results({"schema_version": 1, "relations": [], "settings": []})
    with pytest.raises(InputError, match=r"`directions` must be a path, a DataFrame or None; got int"):
        load_results({"schema_version": 1, "relations": []}, directions=3)


def test_error_missing_directions_table(tmp_path):
    path = write_fixture(tmp_path)
    path.with_name("results.directions.parquet").unlink()
    with pytest.raises(InputError, match=r"results\.directions\.parquet: per-direction table not found"):
        build_report(path, tmp_path / "out")


def test_error_bad_directions_table(tmp_path):
    path = write_fixture(tmp_path)
    dpath = path.with_name("results.directions.parquet")
    pd.read_parquet(dpath).drop(columns=["variance", "included"]).to_parquet(dpath)
    with pytest.raises(InputError, match=r"directions\.parquet: column 'variance' missing from the per-direction "
                                         r"table \(and 1 more\)"):
        build_report(path, tmp_path / "out")
    dpath.write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"directions\.parquet: cannot read the per-direction table"):
        build_report(path, tmp_path / "out")


def test_error_options(tmp_path):
    path = write_fixture(tmp_path)
    with pytest.raises(InputError, match=r"`formats` must be a comma-separated subset of .*got 'md,pdf'"):
        build_report(path, tmp_path / "out", formats="md,pdf")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match=r"file: exists and is not a directory"):
        build_report(path, f)
    with pytest.raises(InputError, match=r"`out_dir` must be a path; got NoneType"):
        build_report(path, None)
    with pytest.raises(InputError, match=r"`dpi` must be an integer in \[30, 600\]; got 5"):
        build_report(path, tmp_path / "out", dpi=5)
    with pytest.raises(InputError, match=r"`figures` must be True or False; got 'no'"):
        build_report(path, tmp_path / "out", figures="no")
    assert parse_formats(None) == parse_formats("md,tex,html,csv")


# ---------------------------------------------------------------------------- CLI


def test_cli_writes_report_and_equals_api(tmp_path, capsys):
    path = write_fixture(tmp_path)
    rc = main(["report", str(path), "--out", str(tmp_path / "cli"), "--format", "md,csv,html", "--no-figures"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "files written" in out
    api = build_report(path, tmp_path / "api", formats="md,csv,html", figures=False)
    for name in ("groups", "comparisons", "relations"):
        for fmt in ("md", "csv"):
            assert (tmp_path / "cli" / "tables" / f"{name}.{fmt}").read_text() == api.path("table", name, fmt).read_text()
    html_text = (tmp_path / "cli" / "report.html").read_text()
    assert f"varprinciple report {path} --out {tmp_path / 'cli'} --format md,csv,html --no-figures" in html_text


@pytest.mark.parametrize("setup, message", [
    ("missing", "no such file or directory"),
    ("version", "key 'schema_version' is 3"),
    ("nodirs", "per-direction table not found"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, setup, message):
    path = write_fixture(tmp_path)
    if setup == "missing":
        path = tmp_path / "missing.json"
    elif setup == "version":
        path.write_text(json.dumps({"schema_version": 3, "relations": []}))
    else:
        path.with_name("results.directions.parquet").unlink()
    rc = main(["report", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------- formatting


def test_format_conventions():
    assert format_p(0.0004) == "< .001" and format_p(0.001) == ".001" and format_p(0.04999) == ".050"
    assert format_p(None) == "—" and format_p(float("nan")) == "—"
    assert format_fixed(-0.004) == "0.00" and format_fixed(-0.5) == MINUS + "0.50"
    assert format_r(-0.5) == MINUS + ".50"
    assert format_sig(9.9996) == "10.0" and format_sig(999.96) == "1000" and format_sig(0.00099996) == "1.00e" + MINUS + "03"


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False).filter(lambda x: x == 0 or abs(x) > 1e-300))
def test_formatted_numbers_parse_back_within_half_a_unit(x):
    for text in (format_fixed(x), format_fixed(x, 4), format_sig(x)):
        got, half = parse_number(text)
        assert abs(got - x) <= half * (1 + 1e-9) + 1e-12 * abs(x), (x, text)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1))
def test_p_values_parse_back(p):
    assert_p(format_p(p), p)


def test_csv_round_trips_floats_exactly(tmp_path):
    from varprinciple.report.format import ReportTable, to_csv

    vals = [0.1 + 0.2, 1 / 3, -2.5e-17, None]
    t = ReportTable("x", "x", pd.DataFrame({"v": vals}), ())
    rows = list(csv.reader(io.StringIO(to_csv(t))))
    assert [float(r[0]) if r[0] else None for r in rows[1:]] == vals


def test_latex_escaping_of_labels():
    results, dirs = make_results()
    for r in results["relations"]:
        r["run_id"] = r["run_id"] + "_a&b%"
    tables = {t.name: t for t in build_tables(load_results(results, directions=dirs))}
    from varprinciple.report.format import to_latex

    tex = to_latex(tables["relations"])
    assert "sgd-seed0\\_a\\&b\\%" in tex and "_a&" not in tex


def test_every_panel_of_every_figure_holds_data():
    from varprinciple.report.figures import FIGURES, available_inputs, missing_inputs

    results, dirs = make_results()
    data = load_results(results, directions=dirs)
    have = available_inputs(data)
    for spec in FIGURES.values():
        if spec.build is None or missing_inputs(spec, have):  # the report skips these too
            continue
        fig = spec.build(data)
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert axes, spec.name
        for ax in axes:
            n_points = sum(len(l.get_xdata()) for l in ax.get_lines()) + sum(
                len(c.get_offsets()) for c in ax.collections)
            assert n_points > 0, (spec.name, ax.get_title())
        if spec.name == "flatness":  # panels quote the between-group comparisons of the JSON
            lam = next(ax for ax in axes if ax.get_title().startswith("λ_max"))
            c = next(c for c in results["comparisons"] if c["quantity"] == "log_lambda_max")
            assert lam.get_xlabel() == ("sgd − dropout: log diff. "
                                        f"{format_fixed(c['difference'])} [{format_fixed(c['ci_low'])}, "
                                        f"{format_fixed(c['ci_high'])}], p {format_p(c['p_value'])}")


def test_analysis_notes_and_identical_runs_shown(tmp_path):
    results, dirs = make_results(flatness=False)
    results["notes"] = ["slope: 8 units (> 6) at block all; declare the confirmatory pairs with --compare."]
    results["identical"] = [["sgd-seed0", "sgd-seed1"]]
    res = build_report(results, tmp_path / "out", directions=dirs, formats="md,html", figures=False)
    for page in (res.path("page", "report", "md"), res.html):
        text = page.read_text()
        assert "declare the confirmatory pairs with --compare" in text
        assert "sgd-seed0, sgd-seed1 have identical noise tables" in text


def test_error_results_path_is_a_directory_and_unknown_file(tmp_path):
    from varprinciple.report._input import read_results_json

    with pytest.raises(InputError, match=r"is a directory, expected a results JSON file"):
        read_results_json(tmp_path)
    res = build_report(write_fixture(tmp_path), tmp_path / "out", formats="csv", figures=False)
    with pytest.raises(KeyError):
        res.path("figure", "forest", "png")


def test_register_figure_rejects_unknown_inputs():
    from varprinciple.report.figures import FIGURES, FigureSpec, register_figure

    with pytest.raises(ValueError, match=r"figure 'bad' requires unknown inputs \['nope'\]"):
        register_figure(FigureSpec("bad", "Bad", "", ("relations", "nope")))
    assert "bad" not in FIGURES


def test_parse_number_rejects_non_numbers():
    with pytest.raises(ValueError, match=r"not a formatted number: '< \.001'"):
        parse_number("< .001")


def test_figure_titles_and_captions_escape_to_ascii_latex():
    from varprinciple.report.figures import FIGURES
    from varprinciple.report.format import latex_escape

    for spec in FIGURES.values():
        text = latex_escape(spec.title + " " + spec.caption)
        assert all(ord(ch) < 128 for ch in text), (spec.name, sorted({c for c in text if ord(c) > 127}))


def test_comparisons_table_shows_effect_sizes_and_adjusted_tost(tmp_path):
    from varprinciple.simulate import simulate_logset
    from varprinciple.stats import analyze
    ls, _ = simulate_logset(methods={"sgd": 1.0, "dropout": 0.8}, runs_per_method=4, sources=("sgd", "dropout"),
                            rng=np.random.default_rng(0))
    results = analyze(ls, resamples=0, equivalence_margin=0.3).to_json_dict()
    res = build_report(results, tmp_path / "out", formats="md", figures=False)
    md = res.path("table", "comparisons", "md").read_text()
    header, rows = _cells_md(md, "Comparisons")
    assert header[-3:] == ["Holm TOST p", "Effect size [95% CI]", "P(A > B) [95% CI]"]
    for cells, c in zip(rows, results["comparisons"], strict=True):
        assert_p(cells[-3], c["tost_p_adjusted"])
        kind, est_ci = cells[-2].split(" ", 1)
        assert kind == {"d_z": "d_z", "bonett_d": "d_B", "hedges_g": "g"}[c["effect_size_kind"]]
        assert c["effect_size_kind"] == ("d_z" if c["paired"] else "bonett_d")
        assert_est_ci(est_ci, c["effect_size"], c["effect_size_ci_low"], c["effect_size_ci_high"])
        assert_est_ci(cells[-1], c["prob_superiority"], c["prob_superiority_ci_low"], c["prob_superiority_ci_high"])
    assert "Bonett's d" in md and "Holm TOST p: the TOST p-values adjusted" in md


def test_latex_escape_maps_any_note_text_to_ascii():
    # notes are free text from the statistics (section signs, Greek letters, arrows): LaTeX output
    # must stay ASCII whatever they hold (known symbols mapped, others decomposed or named)
    from varprinciple.report.format import latex_escape

    text = "docs §5.3: τ 12, φ̂ → 0.9, n_eff ≠ T, ā, ½, 中"
    out = latex_escape(text)
    assert all(ord(c) < 128 for c in out), out
    assert r"\S{}5.3" in out and r"$\tau$" in out and r"$\rightarrow$" in out and "cjk" in out
