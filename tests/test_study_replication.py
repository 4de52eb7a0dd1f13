"""CI runs the replication study's --quick variant end to end: it checks the pipeline, not the verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from varprinciple.cli import main  # noqa: E402
from varprinciple.errors import ConfigError  # noqa: E402
from varprinciple.study.claims import Verdict  # noqa: E402
from varprinciple.study import load_manifest  # noqa: E402
from varprinciple.study.runner import run_manifest  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

MANIFEST = Path(__file__).resolve().parents[1] / "studies" / "replication.toml"


def test_quick_study_end_to_end(tmp_path):
    m = load_manifest(MANIFEST)
    res = run_manifest(m, tmp_path / "q", quick=True, workers=1, command="pytest quick study")
    out = res.out
    # every experiment collected, tested and reported
    for e in m.experiments:
        assert (out / "logs" / e.name).is_dir()
        r = json.loads((out / "results" / f"{e.name}.json").read_text())
        assert r["schema_version"] == 1 and r["relations"]
    # the claims table: every declared claim has at least one row, verdicts from the closed set
    claims = json.loads((out / "claims.json").read_text())["claims"]
    assert {c["claim_id"] for c in claims} == {c.id for c in m.claims}
    allowed = {v.value for v in Verdict}
    assert all(c["verdict"] in allowed for c in claims)
    for c in claims:
        if c["verdict"] == "not evaluated":
            assert c["note"]
        else:
            assert c["ci_low"] <= c["estimate"] <= c["ci_high"] and 0 <= c["p_holm"] <= 1
    evaluated = [c for c in claims if c["verdict"] != "not evaluated"]
    assert {c["claim_id"] for c in evaluated} >= {"flatter_lambda_max", "b_dropout", "b_sgd", "b_similar",
                                                    "aligned_rho_sgd", "control_linear_b1", "control_eos"}
    # issue-18 designs: rows per probe rate, test accuracy / gap and the profile width compared
    rate_rows = [c for c in claims if c["claim_id"] == "b_similar_probe_rate"]
    assert {c["experiment"] for c in rate_rows} == {"digits_mlp_probe_drop005", "digits_mlp_probe_drop03"}
    assert {c["claim_id"] for c in evaluated} >= {"flatter_filter_width", "better_test_accuracy", "smaller_gap"}
    # the sweep re-probes the SAME networks as digits_mlp (same configs, matched seeds)
    for run in (out / "logs" / "digits_mlp_probe_drop03").iterdir():
        fp = json.loads((run / "run.json").read_text())["checkpoint_fingerprint"]
        assert fp == json.loads((out / "logs" / "digits_mlp" / run.name / "run.json").read_text())["checkpoint_fingerprint"]
    assert (out / "claims.csv").read_text().startswith("claim_id,")
    # the study page leads with the findings, then the design statement
    html = (out / "report.html").read_text()
    assert html.index('id="findings"') < html.index('id="claims-table"') < html.index('id="design"')
    assert "QUICK variant" in html and 'src="data:image/png;base64,' in html
    md = (out / "report.md").read_text()
    assert md.index("## Findings") < md.index("## Design") < md.index("## Reproduce")
    st = json.loads((out / "study.json").read_text())
    assert st["quick"] is True and st["wall_s"] > 0 and st["peak_rss_mb"] > 0
    assert set(st["experiments"]) == {e.name for e in m.experiments}
    assert st["runs_reused"] == 0 and st["runs_collected"] == sum(t["runs"] for t in st["experiments"].values())
    # the log sets' manifest: every file with its size and hash (committed instead of large logs)
    lm = json.loads((out / "logs_manifest.json").read_text())
    some = lm["files"][0]
    import hashlib
    assert hashlib.sha256((out / "logs" / some["path"]).read_bytes()).hexdigest() == some["sha256"]
    assert lm["total_bytes"] == sum(f["bytes"] for f in lm["files"]) > 0
    # re-running resumes: no run is collected again
    again = run_manifest(m, out, quick=True, workers=1, report=False, experiments=["linear_control"])
    assert again.results["linear_control"]["provenance"]["n_runs"] == 3
    # the statement keeps the collection's own wall time and memory, and records the re-analysis
    st2 = json.loads((out / "study.json").read_text())
    assert st2["wall_s"] == st["wall_s"] and st2["peak_rss_mb"] == st["peak_rss_mb"]
    assert st2["reanalysed"]["wall_s"] > 0 and st2["created"] == st["created"]
    assert (st2["runs_collected"], st2["runs_reused"]) == (st["runs_collected"], 0)


def test_study_design_cli_prints_the_minimum_detectable_effect(capsys):
    assert main(["study", "--study", str(MANIFEST), "--design"]) == 0
    out = capsys.readouterr().out
    assert "minimum detectable difference" in out and "TOST ±0.3" in out and "TOST ±0.15" in out


def test_quick_needs_a_manifest(capsys):
    assert main(["study", "--quick"]) == 2
    assert "--quick, --design, --render and --experiment need --study MANIFEST" in capsys.readouterr().err
    from varprinciple.commands.study import handler
    import argparse
    with pytest.raises(ConfigError, match="need --study"):
        handler(argparse.Namespace(study=None, quick=False, design=True, experiment=None, out=None, render=False))
