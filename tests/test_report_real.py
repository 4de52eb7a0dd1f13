"""`varprinciple report` on real `analyze` output (simulated log sets with known truth).

Every number in the Markdown and LaTeX tables is parsed back and compared with the JSON
value it came from, within half a unit of the last printed digit; `varprinciple report LOGDIR`
gives the numbers of `varprinciple test --json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from varprinciple.cli import main
from varprinciple.io import write_table
from varprinciple.report import build_report
from varprinciple.report.format import MINUS, parse_number
from varprinciple.report.tables import group_label, unit_label
from varprinciple.simulate import simulate
from varprinciple.stats import analyze

from test_report import _cells_md, _cells_tex, _delatex, assert_est_ci, assert_p  # noqa: E402

FLAT = {"lambda_max": 10.0, "hessian_trace": 150.0}


def _simulate(root: Path, *, random: int, flatness: bool, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    simulate(root, methods={"sgd": 1.0, "dropout": 0.6}, runs_per_method=3, n_directions=12, n_random=random,
             n_samples=60, rng=rng)
    if flatness:
        for k, run_json in enumerate(sorted(root.glob("*/run.json"))):
            method = json.loads(run_json.read_text())["method"]
            scale = 1.0 if method == "sgd" else 0.6
            est = [FLAT["lambda_max"] * scale * (1 + 0.05 * k), FLAT["hessian_trace"] * scale * (1 + 0.03 * k),
                   2.0 + 0.1 * k, 1.5 + 0.05 * k]
            write_table(run_json.parent / "flatness.parquet", pd.DataFrame({
                "step": np.zeros(4, dtype="int64"), "quantity": ["lambda_max", "hessian_trace", "rho", "rho"],
                "source": [None, None, "sgd", "dropout"], "estimate": est}))
    return root


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    logs = _simulate(tmp / "logs", random=4, flatness=True, seed=11)
    res = analyze(logs, equivalence_margin=0.25, resamples=99, seed=0)
    json_path, _ = res.write(tmp / "test" / "results.json")
    return logs, json_path, json.loads(json_path.read_text())


# ---------------------------------------------------------------------------- header-driven parse back

CI_KEYS = {"b": ("slope", "ci_low", "ci_high"), "A − B": ("difference", "ci_low", "ci_high"),
           "Hess./random var.": ("ratio", "ratio_ci_low", "ratio_ci_high"),
           "Estimate": ("estimate", "ci_low", "ci_high"),
           "λ_max": ("lambda_max", None, None), "Tr(H)": ("hessian_trace", None, None)}
P_KEYS = {"p (one-sided)": "p_value", "p": "p_value", "Holm p": "p_adjusted", "Spearman p": "spearman_p",
          "isotropy p": "isotropy_p", "curvature p": "curvature_p", "TOST p": "tost_p"}
INT_KEYS = {"n runs": "n_runs", "n dir.": "n_directions", "n excl.": "n_excluded", "K": "n_samples",
            "Step": "step"}


def check_table(header: list[str], rows: list[list[str]], records: list[dict], *, flat=None) -> int:
    """Compare every numeric cell with its JSON value; return the number of cells checked."""
    assert len(rows) == len(records)
    checked = 0
    for cells, rec in zip(rows, records):
        for h, cell in zip(header, cells):
            name = h.split(" [")[0]
            if " [" in h and name in CI_KEYS:
                key, lo, hi = CI_KEYS[name]
                if lo is None:  # flatness column of the groups table
                    f = flat[(group_label(rec.get("group"), rec), key)]
                    assert_est_ci(cell, f["estimate"], f["ci_low"], f["ci_high"])
                elif rec.get(key) is None:
                    assert cell.startswith("—")
                else:
                    assert_est_ci(cell, rec[key], rec[lo], rec[hi])
            elif h in P_KEYS:
                assert_p(cell, rec.get(P_KEYS[h]))
            elif h in INT_KEYS:
                assert cell == ("—" if rec.get(INT_KEYS[h]) is None else str(rec[INT_KEYS[h]]))
            elif h == "Spearman r":
                text = cell.replace(MINUS + ".", MINUS + "0.") if cell.startswith(MINUS) else (
                    "0" + cell if cell.startswith(".") else cell)
                got, half = parse_number(text)
                assert abs(got - rec["spearman_r"]) <= half + 1e-12
            elif h == "align. k":
                got, half = parse_number(cell)
                assert abs(got - rec["alignment_k"]) <= half + 1e-12
            elif h == "Run":
                assert cell == rec["run_id"]
            elif h in ("Group A", "Group B"):
                assert cell == unit_label(rec["group_a" if h == "Group A" else "group_b"])
            else:
                continue
            checked += 1
    return checked


def _flat_index(results):
    return {(group_label(f.get("group"), f), f["quantity"]): f for f in results.get("flatness") or []
            if f.get("source") is None}


def test_tables_equal_real_json(full, tmp_path):
    _, json_path, results = full
    res = build_report(json_path, tmp_path / "out", formats="md,tex,csv", figures=False)
    for name, title, key in (("groups", "Exponent b per group", "groups"),
                             ("relations", "Per-run relation", "relations"),
                             ("comparisons", "Comparisons", "comparisons"),
                             ("flatness", "Flatness per group", "flatness")):
        header, rows = _cells_md(res.path("table", name, "md").read_text(), title)
        n = check_table(header, rows, results[key], flat=_flat_index(results))
        assert n >= 3 * len(results[key]), (name, n)
        th, trows = _cells_tex(res.path("table", name, "tex").read_text())
        assert check_table([_delatex(c) for c in th], [[_delatex(c) for c in r] for r in trows], results[key],
                           flat=_flat_index(results)) == n
        csv = pd.read_csv(res.path("table", name, "csv"))
        est = "estimate" if key == "flatness" else "difference" if key == "comparisons" else "slope"
        assert np.array_equal(csv[est].to_numpy(float),
                              np.array([r[est] for r in results[key]], dtype=float), equal_nan=True)
    # optional content of the real analysis is shown
    header, _ = _cells_md(res.path("table", "relations", "md").read_text(), "Per-run relation")
    assert "Hess./random var. [95% CI]" in header and "align. k" in header
    header, _ = _cells_md(res.path("table", "groups", "md").read_text(), "Exponent b per group")
    # the flatness columns close the numbers; a Caveats column follows when any group row has a note
    body = header[:-1] if header[-1] == "Caveats" else header
    assert body[-2:] == ["λ_max [95% CI]", "Tr(H) [95% CI]"]
    cmp_md = res.path("table", "comparisons", "md").read_text()
    assert "log λ_max" in cmp_md and "control" in cmp_md and "Paired" in cmp_md
    assert results["settings"]["comparison_test"] in cmp_md  # the analysis' own method description


def test_every_figure_written_for_real_output(full, tmp_path):
    _, json_path, _ = full
    res = build_report(json_path, tmp_path / "out", formats="html", dpi=40)
    drawn = {f.name for f in res.files if f.kind == "figure"}
    assert drawn == {"loglog_runs", "loglog_pooled", "forest", "flatness"}
    assert all(f.path.stat().st_size > 5000 for f in res.files if f.kind == "figure")
    assert set(dict(res.skipped_figures)) == {"variance_flatness", "loss_profiles"}


def test_figures_without_optional_tables_real(tmp_path):
    logs = _simulate(tmp_path / "logs", random=0, flatness=False, seed=5)
    res = analyze(logs, resamples=0)
    json_path, _ = res.write(tmp_path / "results.json")
    rep = build_report(json_path, tmp_path / "out", formats="md", dpi=40)
    drawn = {f.name for f in rep.files if f.kind == "figure"}
    # without flatness.parquet the group-summary figure shows only the curvature alignment
    assert drawn == {"loglog_runs", "loglog_pooled", "forest", "flatness"}
    assert all(f.path.stat().st_size > 5000 for f in rep.files if f.kind == "figure")
    assert {r["quantity"] for r in json.loads(json_path.read_text())["flatness"]} == {"curvature_alignment"}
    header, rows = _cells_md(rep.path("table", "relations", "md").read_text(), "Per-run relation")
    assert "Hess./random var. [95% CI]" not in header
    assert check_table(header, rows, res.to_json_dict()["relations"]) > 0


def test_report_on_logdir_equals_test_json(full, tmp_path, capsys):
    logs, _, _ = full
    assert main(["test", str(logs), "--json", str(tmp_path / "t" / "results.json")]) == 0
    assert main(["report", str(logs), "--out", str(tmp_path / "r"), "--format", "md", "--no-figures"]) == 0
    capsys.readouterr()
    t = json.loads((tmp_path / "t" / "results.json").read_text())
    r = json.loads((tmp_path / "r" / "results.json").read_text())
    assert (tmp_path / "r" / "results.directions.parquet").exists()
    for key in ("settings", "relations", "groups", "comparisons", "flatness"):
        assert r[key] == t[key], key
    header, rows = _cells_md((tmp_path / "r" / "tables" / "groups.md").read_text(), "Exponent b per group")
    assert check_table(header, rows, t["groups"], flat=_flat_index(t)) >= 4 * len(t["groups"])
    page = (tmp_path / "r" / "report.md").read_text()
    assert f"varprinciple report {logs} --out {tmp_path / 'r'}" in page and str(logs.resolve()) in page


def test_report_on_directory_without_runs_fails(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "empty" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_blocks_and_steps_panels(tmp_path):
    from varprinciple.report import load_results
    from varprinciple.report.figures.forest import forest_plot
    from varprinciple.report.figures.loglog import loglog_pooled, loglog_runs

    simulate(tmp_path / "logs", methods={"sgd": 1.0, "dropout": 1.0}, runs_per_method=2, sources=("sgd", "dropout"),
             n_directions=8, n_samples=40, steps=(0, 50), blocks=("l1", "l2"), rng=np.random.default_rng(2))
    json_path, _ = analyze(tmp_path / "logs", resamples=0).write(tmp_path / "results.json")
    data = load_results(json_path)
    titles = {ax.get_title() for ax in forest_plot(data).axes if ax.get_visible()}
    # group level: each run's last probe step only, one panel per source x block
    assert titles == {f"source {s} · step 50 · {b}" for s in ("sgd", "dropout") for b in ("l1", "l2")}
    assert {ax.get_title() for ax in loglog_pooled(data).axes if ax.get_visible()} == titles
    runs = {ax.get_title() for ax in loglog_runs(data).axes if ax.get_visible()}
    assert len(runs) == 4 * 2 * 2 and "sgd-s0 · step 0 · l1" in runs
    header, rows = _cells_md(build_report(json_path, tmp_path / "out", formats="md", figures=False)
                             .path("table", "groups", "md").read_text(), "Exponent b per group")
    assert header[3] == "Block" and {r[3] for r in rows} == {"l1", "l2"}


EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example"


@pytest.mark.skipif(not (EXAMPLE / "sgd-s0" / "run.json").exists(), reason="shipped example log set not present")
def test_report_on_shipped_example_matches_test_json(tmp_path, capsys):
    assert main(["test", str(EXAMPLE), "--json", str(tmp_path / "t.json")]) == 0
    assert main(["report", str(EXAMPLE), "--out", str(tmp_path / "r"), "--dpi", "40"]) == 0
    capsys.readouterr()
    t = json.loads((tmp_path / "t.json").read_text())
    out = tmp_path / "r"
    for rel in ("report.md", "report.tex", "report.html", "tables/groups.md", "tables/groups.tex",
                "tables/groups.csv", "figures/forest.png", "figures/forest.svg", "figures/loglog_runs.svg"):
        assert (out / rel).stat().st_size > 0, rel
    for key in ("groups", "comparisons", "relations"):
        name, title = {"groups": ("groups", "Exponent b per group"), "comparisons": ("comparisons", "Comparisons"),
                       "relations": ("relations", "Per-run relation")}[key]
        header, rows = _cells_md((out / "tables" / f"{name}.md").read_text(), title)
        assert check_table(header, rows, t[key]) >= 3 * len(t[key])


def test_report_runs_with_torch_unimportable(full, tmp_path):
    import subprocess
    import sys

    blocker = ("import importlib.abc, sys\n"
               "class _NoTorch(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'torch' or name.startswith('torch.'):\n"
               "            raise ImportError('torch is blocked in this test')\n"
               "sys.meta_path.insert(0, _NoTorch())\n")
    _, json_path, _ = full
    code = blocker + (
        "import sys\nfrom varprinciple.cli import main\n"
        f"rc = main(['report', {str(json_path)!r}, '--out', {str(tmp_path / 'o')!r}, '--format', 'md', "
        "'--dpi', '30'])\n"
        "assert 'torch' not in sys.modules\nsys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "o" / "tables" / "groups.md").exists() and (tmp_path / "o" / "figures" / "forest.png").exists()


def test_latex_output_is_ascii(full, tmp_path):
    """Every symbol the report uses is mapped to LaTeX (pdflatex needs no extra packages)."""
    _, json_path, _ = full
    res = build_report(json_path, tmp_path / "out", formats="tex", figures=False)
    for f in res.files:
        text = f.path.read_text()
        bad = sorted({ch for ch in text if ord(ch) > 127})
        assert not bad, (f.path.name, bad)
