"""``varprinciple test``: CLI output equals API output; exit codes and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from varprinciple.cli import main
from varprinciple.io import write_run
from varprinciple.stats import analyze


def _write(root, n_runs=3, seed=0):
    rng = np.random.default_rng(seed)
    lam = np.geomspace(8.0, 0.2, 6)
    for method in ("sgd", "dropout"):
        for r in range(n_runs):
            x = rng.standard_normal((40, 6)) * lam ** 0.5
            noise = pd.DataFrame({"step": 0, "source": "sgd", "basis": "hessian",
                                  "direction": np.tile(np.arange(6), 40),
                                  "sample": np.repeat(np.arange(40), 6), "value": x.ravel()})
            eig = pd.DataFrame({"step": 0, "rank": np.arange(6), "eigenvalue": lam})
            write_run(root / f"{method}{r}", {"run_id": f"{method}{r}", "method": method}, eigen=eig, noise=noise)
    return root


@pytest.fixture()
def logs(tmp_path):
    return _write(tmp_path / "logs")


def _strip(d):
    d = json.loads(json.dumps(d))
    d["provenance"].pop("created")
    d.pop("directions_file", None)  # the file names its table; the in-memory dict has no path
    return d


def test_cli_output_equals_api_output(logs, tmp_path, capsys):
    out = tmp_path / "res.json"
    rc = main(["test", str(logs), "--json", str(out), "--resamples", "199", "--seed", "5",
               "--equivalence-margin", "0.3", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    api = analyze(logs, resamples=199, seed=5, equivalence_margin=0.3, progress=False)
    assert _strip(json.loads(out.read_text())) == _strip(api.to_json_dict())
    # the findings block first (one line per claim-like result, caveats beside), then the summary
    from varprinciple.report.findings import findings_text
    assert printed.startswith(findings_text(api.to_json_dict()))
    assert printed.startswith("Findings (")
    assert api.summary(caveats=False) in printed
    assert printed.index("Findings (") < printed.index(api.summary(caveats=False).splitlines()[0])
    cli_dirs = pq.read_table(tmp_path / "res.directions.parquet")
    assert cli_dirs.equals(api.directions_table())
    assert f"wrote {out}" in printed


def test_cli_options_reach_the_api(logs, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["test", str(logs), "--json", str(out), "--resamples", "0", "--confidence", "0.9",
               "--alpha", "0.1", "--group-by", "method", "--step", "0", "--compare", "sgd vs dropout",
               "--no-progress"])
    assert rc == 0
    s = json.loads(out.read_text())["settings"]
    assert (s["confidence"], s["alpha"], s["resamples"], s["group_by"], s["step"], s["compare"]) == (
        0.9, 0.1, 0, ["method"], 0, ["sgd vs dropout"])


def test_invalid_log_set_exit_2_lists_every_problem(logs, capsys):
    (logs / "sgd0" / "noise.parquet").unlink()
    (logs / "dropout1" / "eigen.parquet").write_text("garbage")
    rc = main(["test", str(logs), "--resamples", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "2 problems in the log set" in err
    assert "run 'sgd0': noise.parquet: missing file" in err
    assert "run 'dropout1': eigen.parquet: unreadable Parquet" in err
    assert "Traceback" not in err


def test_skip_invalid_reports_skipped_runs(logs, tmp_path, capsys):
    (logs / "sgd0" / "noise.parquet").unlink()
    out = tmp_path / "s.json"
    rc = main(["test", str(logs), "--resamples", "0", "--skip-invalid", "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "SKIPPED 1 invalid run(s):" in printed and "sgd0" in printed
    sk = json.loads(out.read_text())["skipped"]
    assert sk[0]["run_id"] == "sgd0" and "missing file" in sk[0]["problems"][0]


@pytest.mark.parametrize("args, match", [
    (["--confidence", "1.5"], r"`confidence` must be in \(0, 1\); got 1.5"),
    (["--alpha", "0"], r"`alpha` must be in \(0, 0.5\)"),
    (["--equivalence-margin", "0"], "`equivalence_margin` must be a positive number"),
    (["--resamples", "-3"], "`resamples` must be an integer >= 0"),
    (["--seed", "-1"], "`seed` must be an integer >= 0"),
    (["--step", "7"], r"`step` 7 was probed in no run"),
    (["--compare", "sgd versus dropout"], "`compare` pairs must read"),
    (["--compare", "gd vs sgd"], "`compare`: no unit 'gd'"),
    (["--group-by", ","], "`group_by` must be run.json keys"),
    (["--group-by", "metod"], r"`group_by`: no run's run.json has the key\(s\) 'metod'"),
    (["--resamples", "1000001"], "`resamples` must be at most 100000"),
    (["--compare", "sgd vs sgd"], "`compare`: 'sgd' vs 'sgd' gives no comparison"),
    (["--json", "/proc/version/x.json"], "/proc/version is not a directory"),
    (["--json", "/"], r"/: is a directory; `--json` wants a file path"),
])
def test_argument_errors_exit_2_with_one_line(logs, capsys, args, match):
    rc = main(["test", str(logs), "--no-progress", *args])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("varprinciple: error:")]
    assert len(lines) == 1
    import re
    assert re.search(match, lines[0])


def test_missing_directory_exit_2(tmp_path, capsys):
    rc = main(["test", str(tmp_path / "nope")])
    assert rc == 2 and "no such directory" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["r.json", "r.out", "r", "r.JSON", "x.json.bak", "d/e/r.results"])
def test_report_reads_every_json_test_writes(logs, tmp_path, capsys, name):
    """`varprinciple test --json OUT` then `varprinciple report OUT`, whatever OUT's suffix."""
    from varprinciple.results import directions_path
    out = tmp_path / "x" / name
    assert main(["test", str(logs), "--json", str(out), "--resamples", "0", "--no-progress"]) == 0
    assert directions_path(out).exists()
    # exactly one table beside the JSON, named by the JSON
    assert json.loads(out.read_text())["directions_file"] == directions_path(out).name
    capsys.readouterr()
    rc = main(["report", str(out), "--out", str(tmp_path / "rep"), "--format", "md", "--no-figures"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "rep" / "tables" / "groups.md").exists()


def test_report_finds_table_of_a_renamed_json(logs, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["test", str(logs), "--json", str(out), "--resamples", "0", "--no-progress"]) == 0
    moved = out.rename(tmp_path / "renamed.json")
    capsys.readouterr()
    assert main(["report", str(moved), "--out", str(tmp_path / "rep"), "--format", "md", "--no-figures"]) == 0


def test_json_path_may_not_end_like_a_directions_table(logs, tmp_path, capsys):
    rc = main(["test", str(logs), "--json", str(tmp_path / "r.directions.parquet"), "--resamples", "0"])
    assert rc == 2
    assert "may not end in '.directions.parquet'" in capsys.readouterr().err
