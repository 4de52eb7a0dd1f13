"""Sweeps on Dask distributed (``collect --executor dask``), on LocalClusters in CI.

Tiny configs; one shared 2-worker LocalCluster for most tests (passed as a ``Client`` or an
address), and one started by the CLI for the killed-worker test, whose workers inherit the
fault-injection environment variable.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
distributed = pytest.importorskip("distributed")

from _tiny_config import tiny_toml  # noqa: E402
from varprinciple.cli import main  # noqa: E402
from varprinciple.collect.config import load_config  # noqa: E402
from varprinciple.collect.executors import (MARKER, TEST_KILL_ENV, _run_task,  # noqa: E402
                                            check_workers, executor_iv)
from varprinciple.collect.run import collect, expand_sweep  # noqa: E402
from varprinciple.errors import ConfigError, VarPrincipleError  # noqa: E402
from varprinciple.io import read_logset  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

TABLES = ("eigen.parquet", "noise.parquet", "flatness.parquet", "exact_variance.parquet", "training.parquet")


def tiny(tmp_path, name="c.toml", *, methods='["gd", "sgd", "dropout"]', seeds="[0]", lr="0.1"):
    p = tmp_path / name
    p.write_text(tiny_toml(steps=12, log_every=6, every=6, methods=methods, seeds=seeds, lr=lr))
    return load_config(p)


def assert_same_tables(a: Path, b: Path):
    for f in TABLES:
        ta, tb = pd.read_parquet(a / f), pd.read_parquet(b / f)
        if "elapsed_s" in ta:  # wall-clock time, the one column that differs between runs
            ta, tb = ta.drop(columns=["elapsed_s"]), tb.drop(columns=["elapsed_s"])
        pd.testing.assert_frame_equal(ta, tb, check_exact=True, obj=f"{a.name}/{f}")


def hidden(logs: Path) -> list[str]:
    """Staging directories and other hidden files left in a log set (there must be none
    besides the log set's marker, kept on purpose)."""
    return sorted(p.name for p in logs.iterdir() if p.name.startswith(".") and p.name != MARKER)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None,
                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The local executor's log set of the tiny sweep (one thread per run)."""
    d = tmp_path_factory.mktemp("local")
    cfg = tiny(d)
    res = collect(cfg, d / "logs", workers=1, threads=1)
    assert len(res.ran) == 3
    return d / "logs", res.ran


def test_tables_equal_local_executor_bit_for_bit(tmp_path, client, reference):
    ref, run_ids = reference
    res = collect(tiny(tmp_path), tmp_path / "logs", executor="dask", scheduler=client, threads=1)
    assert res.ran == run_ids and res.skipped == ()
    for rid in run_ids:
        assert_same_tables(ref / rid, tmp_path / "logs" / rid)
    assert hidden(tmp_path / "logs") == []
    assert client.status == "running"  # a client given by the caller stays open


def test_deterministic_failure_is_reported_per_run_and_not_retried(tmp_path, client):
    # lr 1e20 diverges: its run fails once, its staging directory is removed, the others finish
    cfg = tiny(tmp_path, methods='["gd", "sgd"]', lr="[0.1, 1e20]")
    with pytest.raises(VarPrincipleError, match=r"^run gd-lr1e\+20-seed0 failed: training diverged at step 6 "
                                                r".*\(1 more failed: sgd-lr1e\+20-bs8-seed0\); 2 of 4 runs "
                                                r"written$"):
        collect(cfg, tmp_path / "logs", executor="dask", scheduler=client)
    logs = tmp_path / "logs"
    assert sorted(r.run_id for r in read_logset(logs).runs) == ["gd-lr0.1-seed0", "sgd-lr0.1-bs8-seed0"]
    assert hidden(logs) == []
    # the scheduler sent each failing run to a worker exactly once (no retry)
    starts = client.run_on_scheduler(
        lambda dask_scheduler: [str(e[0]) for e in dask_scheduler.transition_log
                                if "lr1e+20" in str(e[0]) and e[2] == "processing"])
    assert len(starts) == 2 and len(set(starts)) == 2, starts


def test_resume_after_interrupted_distributed_sweep(tmp_path, client, reference):
    """A distributed sweep killed (client, scheduler and workers: SIGKILL to its process
    group) after its first run; re-running skips the finished run and redoes the others."""
    ref, run_ids = reference
    cfg_path = tmp_path / "c.toml"
    tiny(tmp_path)
    logs = tmp_path / "logs"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "varprinciple.cli", "-q", "collect", str(cfg_path), "--out",
                             str(logs), "--executor", "dask", "--workers", "1"], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while not any((logs / r / "run.json").exists() for r in run_ids):
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended or hung"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = [r for r in run_ids if (logs / r / "run.json").exists()]
    assert 1 <= len(done) < len(run_ids)
    stamps = {r: (logs / r / "run.json").stat().st_mtime_ns for r in done}
    todo = tuple(r for r in run_ids if r not in done)
    # also: a run directory without run.json (e.g. written by an older tool) is redone
    (logs / todo[-1]).mkdir()
    (logs / todo[-1] / "junk.tmp").write_text("half a file")
    address = client.scheduler.address  # the API's other form: a scheduler address
    again = collect(load_config(cfg_path), logs, executor="dask", scheduler=address)
    assert again.skipped == tuple(done) and again.ran == todo
    assert {r: (logs / r / "run.json").stat().st_mtime_ns for r in done} == stamps
    assert hidden(logs) == []
    assert not (logs / todo[-1] / "junk.tmp").exists()
    for rid in run_ids:
        assert_same_tables(ref / rid, logs / rid)
    third = collect(load_config(cfg_path), logs, executor="dask", scheduler=address)
    assert third.ran == () and third.skipped == run_ids


def test_cuda_without_gpu_workers_is_refused_in_one_line(tmp_path, client):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match=r"^--device: 'cuda' is not available \(no CUDA device; use cpu\) "
                                          r"on dask worker tcp://"):
        collect(tiny(tmp_path, methods='["gd"]'), tmp_path / "logs", executor="dask", scheduler=client,
                device="cuda")
    assert hidden(tmp_path / "logs") == []


def test_killed_worker_is_retried_and_nothing_is_half_written(tmp_path, monkeypatch, reference, capsys):
    """Two runs' first attempts write a fragment into their staging directories and kill
    their worker processes (os._exit); the nannies restart them, the scheduler reruns the tasks."""
    ref, run_ids = reference
    kills = tmp_path / "kills"
    kills.mkdir()
    for rid in run_ids[1:]:
        (kills / rid).write_text("arm")
    monkeypatch.setenv(TEST_KILL_ENV, str(kills))
    (tmp_path / "c.toml").write_text(tiny_toml(steps=12, log_every=6, every=6, methods='["gd", "sgd", "dropout"]'))
    rc = main(["collect", str(tmp_path / "c.toml"), "--out", str(tmp_path / "logs"), "--executor", "dask",
               "--workers", "2"])
    assert rc == 0, capsys.readouterr().err
    assert {p.name: p.read_text() for p in kills.iterdir()} == {r: "killed" for r in run_ids[1:]}
    logs = tmp_path / "logs"
    assert sorted(r.run_id for r in read_logset(logs).runs) == sorted(run_ids)
    assert hidden(logs) == []
    for rid in run_ids:
        assert_same_tables(ref / rid, logs / rid)
    assert "3 runs written" in capsys.readouterr().out


def test_late_attempt_loses_to_finished_run_and_cleans_up(tmp_path, reference, one_torch_thread):
    """A presumed-dead attempt that finishes after the retry finds the run complete."""
    from varprinciple.collect.run import run_one
    ref, run_ids = reference
    spec = expand_sweep(tiny(tmp_path))[0]
    logs = tmp_path / "logs"
    shutil.copytree(ref / spec.run_id, logs / spec.run_id)
    stamp = (logs / spec.run_id / "run.json").stat().st_mtime_ns
    path = run_one(spec, logs, base_dir=str(tmp_path), attempt="ab12")
    assert path == logs / spec.run_id
    assert (logs / spec.run_id / "run.json").stat().st_mtime_ns == stamp  # the winner is untouched
    assert hidden(logs) == []


def _payload(tmp_path, **over):
    spec = expand_sweep(tiny(tmp_path, methods='["gd"]'))[0]
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "logs" / ".m").write_text("tok")
    from dataclasses import asdict

    from varprinciple.collect.executors import _versions_here
    p = {"spec": asdict(spec), "out": str(tmp_path / "logs"), "base_dir": str(tmp_path), "threads": 1,
         "device": "cpu", "extra": {}, "marker": ".m", "token": "tok", "versions": _versions_here()}
    p.update(over)
    return p


def test_task_checks_versions_and_output_visibility(tmp_path):
    # the checks a task repeats for workers that join after the sweep started
    res = _run_task(_payload(tmp_path, versions={"torch": "0.0.1"}))
    assert res["path"] is None
    assert re.fullmatch(r"this process runs torch \S+, this machine torch 0\.0\.1; install the same "
                        r"python, varprinciple, torch and numpy on every worker", res["error"])
    res = _run_task(_payload(tmp_path, token="other"))
    assert res["error"].startswith(f"--out {tmp_path / 'logs'}: not visible to this process; put LOGDIR")
    assert not any(p.is_dir() for p in (tmp_path / "logs").iterdir())


def test_check_workers_refuses_in_one_line():
    ok = {"versions": {"python": "3.12.1", "varprinciple": "0.3.0", "torch": "2.13.0", "numpy": "2.1.0"},
          "sees_out": True, "device_error": None}
    want = ok["versions"]
    check_workers({"tcp://a:1": ok, "tcp://b:1": ok}, out="/s/logs", expected_versions=want, device="cpu")
    with pytest.raises(ConfigError, match=r"^--out /s/logs: not visible to dask worker tcp://a:1 \(2 of 2 "
                                          r"workers\); put LOGDIR on storage every worker mounts"):
        check_workers({"tcp://a:1": dict(ok, sees_out=False), "tcp://b:1": dict(ok, sees_out=False)},
                      out="/s/logs", expected_versions=want, device="cpu")
    bad = dict(ok, versions=dict(want, numpy="1.26.4"))
    with pytest.raises(ConfigError, match=r"^dask worker tcp://b:1 runs numpy 1\.26\.4, this machine numpy "
                                          r"2\.1\.0; install the same python, varprinciple, torch and numpy"):
        check_workers({"tcp://a:1": ok, "tcp://b:1": bad}, out="/s/logs", expected_versions=want, device="cpu")
    with pytest.raises(ConfigError, match=r"^--device: 'cuda' is not available \(x\) on dask worker tcp://a:1$"):
        check_workers({"tcp://a:1": dict(ok, device_error="--device: 'cuda' is not available (x)")},
                      out="/s/logs", expected_versions=want, device="cuda")
    with pytest.raises(ConfigError, match=r"^dask worker tcp://b:1 runs 4 threads; start workers with "
                                          r"--nthreads 1 \(one run per worker process"):
        check_workers({"tcp://a:1": ok, "tcp://b:1": dict(ok, nthreads=4)}, out="/s/logs",
                      expected_versions=want, device="cpu")
    with pytest.raises(ConfigError, match=r"^--device cuda: no dask worker offers the GPU resource; start one "
                                          r"worker per GPU with `--resources GPU=1`"):
        check_workers({"tcp://a:1": dict(ok, gpus=0)}, out="/s/logs", expected_versions=want, device="cuda")
    check_workers({"tcp://a:1": dict(ok, gpus=1)}, out="/s/logs", expected_versions=want, device="cuda")
    with pytest.raises(ConfigError, match=r"^--executor dask: the cluster has no worker$"):
        check_workers({}, out="/s/logs", expected_versions=want, device="cpu")
    # a worker that cannot import varprinciple, or cannot even run the check, comes first
    with pytest.raises(ConfigError, match=r"^dask worker tcp://b:1 cannot import varprinciple \(ModuleNotFoundError: "
                                          r"No module named 'varprinciple'\); install the same python, varprinciple, "
                                          r"torch and numpy on every worker \(docs/cluster\.md\)$"):
        check_workers({"tcp://a:1": dict(ok, nthreads=4),
                       "tcp://b:1": {"import_error": "ModuleNotFoundError: No module named 'varprinciple'"}},
                      out="/s/logs", expected_versions=want, device="cpu")
    with pytest.raises(ConfigError, match=r"^dask worker tcp://a:1 cannot run varprinciple's pre-flight check "
                                          r"\(TypeError: code\(\) argument 13 must be str\); install the same"):
        check_workers({"tcp://a:1": {"preflight_error": "TypeError: code() argument 13 must be str"}},
                      out="/s/logs", expected_versions=want, device="cpu")


def test_executor_options_are_checked(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^--executor: must be one of local, dask; got 'ray'$"):
        executor_iv("ray", workers=1)
    with pytest.raises(ConfigError, match=r"^--scheduler/--scheduler-file: need --executor dask$"):
        executor_iv("local", workers=1, scheduler="tcp://x:1")
    with pytest.raises(ConfigError, match=r"^--scheduler and --scheduler-file: give one of them, not both$"):
        executor_iv("dask", workers=1, scheduler="tcp://x:1", scheduler_file="f.json")
    with pytest.raises(ConfigError, match=r"^--workers: sizes the LocalCluster started without --scheduler; "
                                          r"a running cluster uses its own workers; got --workers 4"):
        executor_iv("dask", workers=4, scheduler="tcp://x:1")
    with pytest.raises(ConfigError, match=r"^--scheduler-file .*nope\.json: no such file"):
        collect(tiny(tmp_path, methods='["gd"]'), tmp_path / "logs", executor="dask",
                scheduler_file=tmp_path / "nope.json")
    rc = main(["collect", str(tmp_path / "c.toml"), "--out", str(tmp_path / "l2"), "--executor", "dask",
               "--scheduler", "tcp://x:1", "--workers", "3"])
    assert rc == 2
    assert capsys.readouterr().err.startswith("varprinciple: error: --workers: sizes the LocalCluster")


def test_dask_extra_missing_is_one_line(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r'^--executor dask: needs the dask extra \(pip install '
                                          r'"varprinciple\[dask\]"\)$'):
        executor_iv("dask", workers=1)


def test_plain_cuda_picks_one_gpu_per_worker(monkeypatch):
    """Device plumbing without a GPU: on a LocalCluster worker named ``i``, "cuda" means
    cuda:(i mod #GPUs); with one visible GPU per worker (dask-jobqueue, CUDA_VISIBLE_DEVICES)
    it means cuda:0; an explicit index is kept."""
    from varprinciple.collect import executors
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(executors, "_worker_name", lambda: 3)
    assert executors._task_device("cuda") == "cuda:1"
    assert executors._task_device("cuda:0") == "cuda:0"
    monkeypatch.setattr(executors, "_worker_name", lambda: "SLURMCluster-0")
    assert executors._task_device("cuda") == "cuda:0"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(executors, "_worker_name", lambda: 1)
    assert executors._task_device("cuda") == "cuda:0"
    with pytest.raises(ConfigError, match=r"^--device: 'cuda:1' is not available \(1 CUDA device: cuda:0\.\.cuda:0\)$"):
        executors._task_device("cuda:1")


def test_worker_with_several_threads_is_refused(tmp_path):
    # an in-process cluster (fast to start) whose worker would run two runs at once
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster, \
            distributed.Client(cluster) as c:
        with pytest.raises(ConfigError, match=r"^dask worker inproc://\S+ runs 2 threads; start workers with "
                                              r"--nthreads 1"):
            collect(tiny(tmp_path, methods='["gd"]'), tmp_path / "logs", executor="dask", scheduler=c)
    assert hidden(tmp_path / "logs") == []
