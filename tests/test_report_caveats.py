"""Every caveat of a results file is rendered beside its number: terminal, report.md, report.html.

The walker (report/caveats.py) is the one definition of a caveat; these tests walk a committed
results file and a synthetic one with a note on every row kind (and on fields and lists the
renderer has never heard of) and find each caveat, with its number, in all three outputs.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from varprinciple.report import build_report
from varprinciple.report.caveats import iter_caveats, row_number
from varprinciple.report.findings import findings_text

RESULTS = Path(__file__).resolve().parents[1] / "reports" / "replication" / "results"


def _synthetic() -> dict:
    rel = {"run_id": "sgd-lr0.1-bs32-seed0", "method": "sgd", "group": "sgd-lr0.1-bs32", "source": "sgd",
           "basis": "hessian", "step": 100, "block": None, "slope": 0.9, "ci_low": None, "ci_high": None,
           "p_value": None, "n_directions": 12, "note": "no interval: n_eff 4 < 10 along PC 7 (docs/flatness.md)"}
    grp = {"group": "sgd-lr0.1-bs32", "group_label": "sgd-lr0.1-bs32", "source": "sgd", "block": None,
           "step": None, "steps": [90, 100], "slope": 0.95, "ci_low": 0.8, "ci_high": 1.1, "p_value": 0.001,
           "se": 0.05, "df": 4, "n_runs": 5, "note": "robust location differs from the mean",
           "n_eff": 4.2, "robust_slope": 0.93}
    refused = dict(grp, source="dropout", slope=0.7, ci_low=None, ci_high=None, note=None, steps=[100])
    cmp_ = {"quantity": "log_lambda_max", "group_a": {"label": "dropout-lr0.1-drop0.1", "source": None},
            "group_b": {"label": "gd-lr0.1", "source": None}, "block": None, "difference": -0.8, "ci_low": -0.9,
            "ci_high": -0.7, "p_value": 1e-5, "p_adjusted": 1e-4, "confirmatory": True, "se": 0.04, "df": 8.0,
            "n_a": 5, "n_b": 5, "loss_a": 0.003, "loss_b": 0.0045, "loss_mismatch": True,
            "loss_note": "training losses differ by 47% (0.003 vs 0.0045): not a matched-loss comparison",
            "note": "heavy tails: Welch interval checked by bootstrap", "new_field": [1, 2]}
    flat = {"group": "sgd-lr0.1-bs32", "group_label": "sgd-lr0.1-bs32", "quantity": "psi", "source": None,
            "block": None, "step": 100, "estimate": 2.1, "ci_low": 0.4, "ci_high": 3.8, "p_value": 0.02,
            "n_runs": 5, "psi_note": "window shorter than 10 decorrelation times"}
    vf = {"run_id": "sgd-lr0.1-bs32-seed0", "group": "sgd-lr0.1-bs32", "psi": None, "ci_low": None,
          "ci_high": None, "problem": "fewer than 5 non-drift components"}
    return {"schema_version": 1, "settings": {"confidence": 0.95, "alpha": 0.05},
            "notes": ["slope: no comparison in the default family (only one group)."],
            "skipped": [{"path": "logs/bad", "run_id": "bad-seed0", "problems": ["run.json: missing key 'method'"]}],
            "identical": [["a-seed0", "a-seed1"]],
            "relations": [rel], "groups": [grp, refused], "comparisons": [cmp_], "flatness": [flat],
            "variance_flatness": [vf],
            "robust_groups": [{"group": "sgd-lr0.1-bs32", "estimate": 0.93, "ci_low": 0.81, "ci_high": 1.05,
                               "note": "Huber location, 2 runs down-weighted"}]}


def _rendered(results: dict, tmp_path: Path) -> tuple[str, str, str]:
    build_report(results, tmp_path / "out", formats="md,html", figures=False)
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    return findings_text(results), md, page


def _num_of(c, text: str) -> bool:
    """The number as the findings block prints it (2 decimals for b and differences)."""
    from varprinciple.report.format import format_fixed, format_sig
    return c.value is not None and (format_fixed(c.value) in text or format_sig(c.value) in text)


def _collapsed(results: dict) -> set:
    """(table, index, text) of the per-probe caveats the terminal shows as one line per kind and source."""
    from varprinciple.report.findings import collapse_probe_caveats
    _, groups = collapse_probe_caveats(results, list(iter_caveats(results)))
    return {(c.table, c.index, c.text) for g in groups for c in g[2]}


def _check_all(results: dict, tmp_path: Path) -> int:
    terminal, md, page = _rendered(results, tmp_path)
    cav = list(iter_caveats(results))
    collapsed = _collapsed(results)
    for c in cav:
        if (c.table, c.index, c.text) in collapsed:  # the terminal: one line per kind and source, with a count
            from varprinciple.report.findings import caveat_head
            assert any(caveat_head(c.text) in ln and " probes of " in ln for ln in terminal.splitlines()), c.line()
        for name, text, esc in (("terminal", terminal, str), ("report.md", md, str),
                                ("report.html", page, html.escape)):
            if name == "terminal" and (c.table, c.index, c.text) in collapsed:
                continue
            assert esc(c.text) in text, f"{name}: caveat not rendered: {c.line()}"
            if c.number:  # beside its number: on its line or under it (a finding's caveat lines)
                lines = text.splitlines()
                near = [" ".join(lines[max(0, i - 4):i + 1]) for i, ln in enumerate(lines) if esc(c.text) in ln]
                assert any(esc(c.number) in x or _num_of(c, x) for x in near), \
                    f"{name}: {c.line()} not beside its number"
    return len(cav)


def test_synthetic_caveat_on_every_row_kind_is_rendered_everywhere(tmp_path):
    res = _synthetic()
    cav = list(iter_caveats(res))
    texts = {c.text for c in cav}
    # every kind the walker knows: row notes (incl. *_note and problem), refusals, pooled steps,
    # top-level notes, skipped runs, identical runs, and a list it has never heard of
    assert {"no interval: n_eff 4 < 10 along PC 7 (docs/flatness.md)", "robust location differs from the mean",
            "training losses differ by 47% (0.003 vs 0.0045): not a matched-loss comparison",
            "heavy tails: Welch interval checked by bootstrap", "window shorter than 10 decorrelation times",
            "fewer than 5 non-drift components", "Huber location, 2 runs down-weighted",
            "slope: no comparison in the default family (only one group).", "run.json: missing key 'method'",
            "runs a-seed0, a-seed1 have identical noise tables: they are not independent replicates",
            "no interval (no reason recorded in the row)", "pools runs analysed at different steps (90, 100)"} <= texts
    assert {c.table for c in cav} >= {"relations", "groups", "comparisons", "flatness", "variance_flatness",
                                      "robust_groups", "notes", "skipped", "identical"}
    refused = next(c for c in cav if c.text.startswith("no interval (no reason"))
    assert refused.number == "0.700 (no interval)"
    assert _check_all(res, tmp_path) == len(cav)


def test_number_formats():
    assert row_number({"slope": 0.5, "ci_low": 0.4, "ci_high": 0.6}) == "0.500 [0.400, 0.600]"
    assert row_number({"psi": None, "ci_low": None, "ci_high": None}) == "no estimate"


@pytest.mark.parametrize("name", ["eos_mse", "digits_mlp", "random_walk_control"])
def test_committed_results_caveats_rendered_everywhere(name, tmp_path):
    res = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    res.pop("directions_file", None)
    assert _check_all(res, tmp_path) > 0


def test_main_job_flatness_line_carries_the_loss_note():
    res = _synthetic()
    text = findings_text(res)
    line = next(ln for ln in text.splitlines() if "log λ_max" in ln)
    assert "−0.80 [−0.90, −0.70]" in line and "training losses 0.00300 vs 0.00450" in line
    after = text.splitlines()[text.splitlines().index(line) + 1]
    assert "not a matched-loss comparison" in after and "at matched loss" not in line


def test_terminal_prints_each_caveat_once(tmp_path, capsys):
    """`varprinciple test` prints the findings block and then the summary tables: every caveat
    of the results (row notes, study-wide notes, skipped and identical runs) appears on the
    terminal exactly as often as the walker lists it — beside its number, never a second time
    as a NOTE line of the summary."""
    import shutil

    import numpy as np
    import pandas as pd

    from varprinciple.cli import main
    from varprinciple.io import write_run

    rng = np.random.default_rng(3)
    lam = np.geomspace(8.0, 0.2, 6)
    root = tmp_path / "logs"
    for method in ("sgd", "dropout"):
        for r in range(3):
            x = rng.standard_normal((40, 6)) * lam ** 0.5
            noise = pd.DataFrame({"step": 0, "source": "sgd", "basis": "hessian",
                                  "direction": np.tile(np.arange(6), 40),
                                  "sample": np.repeat(np.arange(40), 6), "value": x.ravel()})
            eig = pd.DataFrame({"step": 0, "rank": np.arange(6), "eigenvalue": lam})
            write_run(root / f"{method}{r}", {"run_id": f"{method}{r}", "method": method}, eigen=eig, noise=noise)
    shutil.copytree(root / "sgd0", root / "sgd3")  # identical noise tables: a caveat
    meta = json.loads((root / "sgd3" / "run.json").read_text())
    meta["run_id"] = "sgd3"
    (root / "sgd3" / "run.json").write_text(json.dumps(meta))
    (root / "dropout2" / "noise.parquet").unlink()  # a skipped run: a caveat
    out = tmp_path / "r.json"
    assert main(["test", str(root), "--resamples", "0", "--skip-invalid", "--no-progress", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    cav = list(iter_caveats(res))
    assert {c.table for c in cav} >= {"skipped", "identical"} and len(cav) >= 3
    collapsed = {t for _, _, t in _collapsed(res)}
    for text in {c.text for c in cav}:
        expected = sum(text in c.text for c in cav)
        if text in collapsed:  # one line for all probes with that kind of caveat: at most once
            assert printed.count(text) <= 1, text
        else:
            assert printed.count(text) == expected, (text, printed.count(text), expected)
    assert "NOTE " not in printed and "WARNING identical" not in printed
    # the Python summary alone still carries them
    from varprinciple.stats import analyze
    alone = analyze(root, resamples=0, skip_invalid=True, progress=False).summary()
    assert "WARNING identical" in alone and "missing file" in alone


def test_terminal_collapses_a_per_probe_caveat_that_recurs_across_probes():
    """15 probes of one source that all lose isotropy_p: the terminal shows one line with the
    count (the reports keep each probe's reason beside its row)."""
    from varprinciple.report.findings import findings_text
    rows = [{"run_id": f"sgd-seed{i}", "group": "sgd-lr0.1-bs32", "source": "sgd", "step": 100, "block": None,
             "slope": 1.0 + i / 100, "ci_low": 0.8, "ci_high": 1.2,
             "note": f"no isotropy_p: one draw carries {7 + i % 4}% of a direction's variance"} for i in range(15)]
    rows += [{"run_id": "drop-seed0", "group": "d", "source": "dropout", "step": 100, "block": None, "slope": 1.0,
              "ci_low": 0.8, "ci_high": 1.2, "note": "no isotropy_p: a single probe"}]
    res = {"settings": {"confidence": 0.95}, "relations": rows}
    text = findings_text(res)
    assert text.count("no isotropy_p") == 2
    assert "no isotropy_p in 15 of 15 probes of SGD noise (e.g. relations run sgd-seed0:sgd step 100" in text
    assert "drop-seed0:dropout step 100 — 1.00 [0.800, 1.20]: no isotropy_p: a single probe" in text
    assert "Other caveats (16, 15 of them in 1 line):" in text
