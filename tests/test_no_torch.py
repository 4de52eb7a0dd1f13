"""Analysing logs needs no torch: the CLI runs in a process where ``import torch`` fails."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd

from varprinciple.io import write_run

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys

    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, _NoTorch())
""")


def _run(code: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def test_blocker_blocks_torch(tmp_path):
    r = _run("import torch", tmp_path)
    assert r.returncode != 0 and "torch is blocked" in r.stderr


def test_cli_test_runs_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    lam = np.geomspace(5.0, 0.5, 5)
    for i in range(2):
        x = rng.standard_normal((30, 5)) * lam ** 0.5
        noise = pd.DataFrame({"step": 0, "source": "sgd", "basis": "hessian",
                              "direction": np.tile(np.arange(5), 30),
                              "sample": np.repeat(np.arange(30), 5), "value": x.ravel()})
        eig = pd.DataFrame({"step": 0, "rank": np.arange(5), "eigenvalue": lam})
        write_run(tmp_path / "logs" / f"r{i}", {"run_id": f"r{i}", "method": "sgd"}, eigen=eig, noise=noise)
    out = tmp_path / "out.json"
    r = _run("""
        import sys
        from varprinciple.cli import main
        rc = main(sys.argv[1:])
        assert "torch" not in sys.modules, "torch got imported"
        sys.exit(rc)
    """, tmp_path, "test", str(tmp_path / "logs"), "--json", str(out), "--resamples", "99")
    assert r.returncode == 0, r.stderr
    assert "Groups" in r.stdout
    d = json.loads(out.read_text())
    assert len(d["relations"]) == 2 and d["groups"][0]["n_runs"] == 2
    assert (tmp_path / "out.directions.parquet").exists()
