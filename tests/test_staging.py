"""Staging and publishing (collect/staging.py): leases, claims, verification before the
publishing rename, readers refusing an incomplete run, resume redoing one (issue 21)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from _tiny_config import tiny_toml
from varprinciple.cli import main
from varprinciple.collect.config import load_config
from varprinciple.collect.executors import _run_task, _versions_here
from varprinciple.collect.run import collect, expand_sweep
from varprinciple.collect import staging
from varprinciple.collect.staging import (LEASE_EXPIRY_S, LEASE_FILE, Attempt, discard_unfinished, lease_is_live,
                                          reap_stages, stage_dir)
from varprinciple.errors import LogValidationError, VarPrincipleError
from varprinciple.io import read_logset


def _stage(out: Path, rid: str, token: str, **lease) -> Path:
    st = stage_dir(out, rid, token)
    st.mkdir(parents=True)
    if lease:
        (st / LEASE_FILE).write_text(json.dumps(lease))
    return st


def test_reap_keeps_live_owners_and_deletes_the_others(tmp_path):
    here = staging._PROCESS_SPACE
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    live = _stage(tmp_path, "r", "a1", **here, pid=os.getpid(), pid_start=staging._proc_start(os.getpid()))
    dead = _stage(tmp_path, "r", "a2", **here, pid=dead_pid, pid_start="1")
    # the same host name and a dead process id, but another PID namespace (a container
    # sharing the host name): the process id says nothing here, the lease's age decides
    other_ns = _stage(tmp_path, "r", "a7", **dict(here, pid_ns="pid:[1]"), pid=dead_pid)
    far_fresh = _stage(tmp_path, "r", "a3", host="elsewhere.example", pid=1)
    far_old = _stage(tmp_path, "r", "a4", host="elsewhere.example", pid=1)
    old = time.time() - LEASE_EXPIRY_S - 5
    os.utime(far_old / LEASE_FILE, (old, old))
    legacy = stage_dir(tmp_path, "r")  # an older version's staging directory: no lease
    legacy.mkdir()
    claimed = tmp_path / ".r.a5.partial.deleting"  # a clean-up that was interrupted
    claimed.mkdir()
    other = _stage(tmp_path, "r0", "a6")  # another run's (a run id that extends this one)
    for p in (live, dead, far_fresh, far_old):
        (p / "eigen.parquet").write_text("x")
    assert lease_is_live(live) and lease_is_live(far_fresh) and lease_is_live(other_ns)
    assert not lease_is_live(dead) and not lease_is_live(far_old) and not lease_is_live(legacy)
    kept = reap_stages(tmp_path, ["r"])
    assert kept == [live, far_fresh, other_ns]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, far_fresh.name, other_ns.name,
                                                                 other.name])
    # a lease of this machine whose process id was reused by another process is no owner
    reused = _stage(tmp_path, "q", "b1", **here, pid=os.getpid(), pid_start="not-my-start")
    assert not lease_is_live(reused)


def test_attempt_heartbeat_and_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "LEASE_HEARTBEAT_S", 0.05)
    with pytest.raises(VarPrincipleError, match=r"staging directory was deleted by another process \(its lease had "
                                                r"expired\); run r was not published$"):
        with Attempt(tmp_path, "r") as att:
            lease = att.stage / LEASE_FILE
            old = time.time() - 100
            os.utime(lease, (old, old))
            deadline = time.monotonic() + 10
            while lease.stat().st_mtime < old + 50:  # the heartbeat touches it
                assert time.monotonic() < deadline
                time.sleep(0.02)
            shutil.rmtree(att.stage)  # a clean-up took it: the heartbeat must not recreate it
            time.sleep(0.3)
            assert att.lost and not att.stage.exists()
            att.stage.mkdir()  # a writer that creates missing parents recreates it, without the lease
            (att.stage / "eigen.parquet").write_text("x")
            att.publish(["eigen.parquet"])
    assert list(tmp_path.iterdir()) == []  # nothing published; the recreated directory removed


def test_publish_verifies_listed_files_and_first_attempt_wins(tmp_path):
    with pytest.raises(VarPrincipleError, match=r"^\S+\.r\.c1\.partial: checkpoints/step_5\.pt is missing; the run "
                                                r"was not published$"):
        with Attempt(tmp_path, "r", "c1") as att:
            (att.stage / "run.json").write_text('{"run_id": "r", "method": "gd"}')
            (att.stage / "eigen.parquet").write_text("e")
            att.publish(["eigen.parquet", "checkpoints/step_5.pt"])
    assert list(tmp_path.iterdir()) == []
    # an unfinished run directory in the way is replaced; a complete one wins over a later attempt
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "junk").write_text("half")
    for token, body in (("c2", "first"), ("c3", "second")):
        with Attempt(tmp_path, "r", token) as att:
            (att.stage / "run.json").write_text('{"run_id": "r", "method": "gd"}')
            (att.stage / "eigen.parquet").write_text(body)
            assert att.publish(["eigen.parquet"]) is (token == "c2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["eigen.parquet", "run.json"]
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["files"] == {"eigen.parquet": {"bytes": 5, "sha256": "a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b"
                                                                      "84cd99541461a08e"}}
    assert (tmp_path / "r" / "eigen.parquet").read_text() == "first"
    # a re-run's clean-up keeps a complete run and deletes an unfinished one
    assert discard_unfinished(tmp_path / "r") is False and (tmp_path / "r" / "run.json").exists()
    (tmp_path / "r" / "eigen.parquet").write_text("longer than recorded")
    assert discard_unfinished(tmp_path / "r") is True
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A collected log set of two tiny runs (needs torch)."""
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("staged")
    (d / "c.toml").write_text(tiny_toml(methods='["gd"]', seeds="[0, 1]", steps=6, log_every=3, every=3))
    res = collect(load_config(d / "c.toml"), d / "logs")
    assert len(res.ran) == 2
    return d


@pytest.mark.torch
def test_published_run_lists_every_file_with_size_and_hash(logs):
    run = logs / "logs" / "gd-lr0.1-seed0"
    meta = json.loads((run / "run.json").read_text())
    assert sorted(meta["files"]) == sorted(["eigen.parquet", "noise.parquet", "flatness.parquet",
                                            "exact_variance.parquet", "training.parquet", "model.pt",
                                            "checkpoints/step_3.pt", "checkpoints/step_6.pt"])
    for rel, rec in meta["files"].items():
        assert rec["bytes"] == (run / rel).stat().st_size
        assert re.fullmatch(r"[0-9a-f]{64}", rec["sha256"])
    assert not (run / LEASE_FILE).exists()


@pytest.mark.torch
def test_incomplete_run_is_refused_in_one_line_and_redone_on_resume(logs, tmp_path, capsys):
    d = tmp_path / "logs"
    shutil.copytree(logs / "logs", d)
    run = d / "gd-lr0.1-seed1"
    (run / "checkpoints" / "step_3.pt").unlink()  # as an older version's interrupted sweep published it
    with pytest.raises(LogValidationError, match=r"^run 'gd-lr0\.1-seed1': checkpoints/step_3\.pt: missing file "
                                                 r"\(listed in run\.json\)$"):
        read_logset(d)
    assert main(["test", str(d)]) == 2
    err = capsys.readouterr().err
    # the CLI's usual form for log problems: a header, then one line per problem
    assert err.splitlines()[1:] == ["  run 'gd-lr0.1-seed1': checkpoints/step_3.pt: missing file (listed in run.json)"]
    with open(run / "noise.parquet", "ab") as f:  # and a truncated/replaced table
        f.write(b"x")
    with pytest.raises(LogValidationError, match=r"noise\.parquet: \d+ bytes, run\.json lists \d+ \(truncated or "
                                                 r"replaced\)"):
        read_logset(d)
    again = collect(load_config(logs / "c.toml"), d)
    assert again.ran == ("gd-lr0.1-seed1",) and again.skipped == ("gd-lr0.1-seed0",)
    assert sorted(r.run_id for r in read_logset(d).runs) == ["gd-lr0.1-seed0", "gd-lr0.1-seed1"]
    assert (run / "checkpoints" / "step_3.pt").exists()


@pytest.mark.torch
def test_task_of_a_published_run_returns_at_once(logs, tmp_path):
    spec = expand_sweep(load_config(logs / "c.toml"))[0]
    out = tmp_path / "logs"
    shutil.copytree(logs / "logs" / spec.run_id, out / spec.run_id)
    stamp = (out / spec.run_id / "run.json").stat().st_mtime_ns
    (out / ".m").write_text("tok")
    payload = {"spec": asdict(spec), "out": str(out), "base_dir": str(logs), "threads": 1, "device": "cpu",
               "extra": {}, "marker": ".m", "token": "tok", "versions": _versions_here()}
    t = time.perf_counter()
    res = _run_task(payload)
    assert res == {"run_id": spec.run_id, "path": str(out / spec.run_id), "error": None, "already": True}
    assert time.perf_counter() - t < 1.0  # no training: the run is only looked at
    assert (out / spec.run_id / "run.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in out.iterdir()) == [".m", spec.run_id]


def test_publish_refusals(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"^attempt token must be hex; got 'x/y'$"):
        Attempt(tmp_path, "r", "x/y")
    real_rename = os.rename

    def claimed_first(src, dst):  # a clean-up claims the stage just before the publishing rename
        if str(src).endswith(".partial"):
            shutil.rmtree(src)
        return real_rename(src, dst)

    monkeypatch.setattr(staging.os, "rename", claimed_first)
    with pytest.raises(VarPrincipleError, match=r"\.r\.d1\.partial: deleted by another process before publishing; "
                                                r"run r was not published$"):
        with Attempt(tmp_path, "r", "d1") as att:
            (att.stage / "run.json").write_text("{}")
            att.publish([])
    monkeypatch.setattr(staging.os, "rename", real_rename)
    assert list(tmp_path.iterdir()) == []
    # an incomplete run directory that cannot be removed stops the attempt, naming it
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "junk").write_text("half")
    monkeypatch.setattr(staging, "discard_unfinished", lambda path: False)
    with pytest.raises(VarPrincipleError, match=r"r: cannot publish run r \(the directory keeps reappearing "
                                                r"incomplete\)$"):
        with Attempt(tmp_path, "r", "d2") as att:
            (att.stage / "run.json").write_text("{}")
            att.publish([])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_reader_checks_the_listing_itself(tmp_path):
    from varprinciple.io import listed_file_problems
    assert [str(p) for p in listed_file_problems(tmp_path, {"run_id": "r", "files": ["a"]})] == [
        "run 'r': run.json: key 'files': must map file paths to {\"bytes\": int, \"sha256\": str}"]
    (tmp_path / "m.pt").write_text("x")
    got = [str(p) for p in listed_file_problems(tmp_path, {"run_id": "r", "model_file": "m.pt",
                                                           "checkpoints": ["../x.pt", "/etc/passwd"]})]
    assert got == ["run 'r': run.json: lists '../x.pt', not a path inside the run directory",
                   "run 'r': run.json: lists '/etc/passwd', not a path inside the run directory"]


def test_reader_checks_the_listed_sha256(tmp_path):
    """A listed file replaced by one of the same size is refused by its sha256, naming it."""
    import hashlib

    from varprinciple.io import listed_file_problems
    (tmp_path / "m.pt").write_bytes(b"abcd")
    meta = {"run_id": "r", "files": {"m.pt": {"bytes": 4, "sha256": hashlib.sha256(b"abcd").hexdigest()}}}
    assert listed_file_problems(tmp_path, meta) == []
    (tmp_path / "m.pt").write_bytes(b"abce")  # same size, other content
    assert [str(p) for p in listed_file_problems(tmp_path, meta)] == [
        "run 'r': m.pt: content differs from the sha256 run.json lists (replaced or corrupted)"]
