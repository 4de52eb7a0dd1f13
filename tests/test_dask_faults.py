"""Dask sweeps under faults (issue 21), on a LocalCluster and on a scheduler + workers started
as subprocesses with a scheduler file (``dask scheduler --scheduler-file S.json``, ``dask
worker --scheduler-file S.json --nthreads 1``): the client SIGKILLed with checkpoints in
flight, then re-run; a worker SIGKILLed after it finished a run; a worker that cannot import
varprinciple or runs another version.

Workers load tests/_dask_worker_preload.py: a file makes every checkpoint save sleep (so a
kill lands while runs are half-way through), and the worker's environment can hide
varprinciple or fake its version. Every process a test starts is killed in its teardown.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
distributed = pytest.importorskip("distributed")

from _tiny_config import tiny_toml  # noqa: E402
from varprinciple.cli import main  # noqa: E402
from varprinciple.collect.config import load_config  # noqa: E402
from varprinciple.collect.executors import MARKER, TEST_KILL_ENV  # noqa: E402
from varprinciple.collect.run import collect  # noqa: E402
from varprinciple.errors import ConfigError  # noqa: E402
from varprinciple.io import read_logset  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = str(Path(__file__).with_name("_dask_worker_preload.py"))
TABLES = ("eigen.parquet", "noise.parquet", "flatness.parquet", "exact_variance.parquet", "training.parquet")
PROBED = (3, 6, 9, 12)
# 4 runs (gd and sgd, seeds 0 and 1), each probed and checkpointed at steps 3, 6, 9 and 12
TOML = tiny_toml(methods='["gd", "sgd"]', seeds="[0, 1]", steps=12, log_every=3, every=3)


def hidden(logs: Path) -> list[str]:
    return sorted(p.name for p in logs.iterdir() if p.name.startswith(".") and p.name != MARKER)


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def assert_same_run(ref: Path, got: Path) -> None:
    """Tables equal bit for bit (but wall-clock time); every listed file present; checkpoints
    and final weights equal."""
    meta = json.loads((got / "run.json").read_text())
    assert meta["checkpoints"] == [f"checkpoints/step_{s}.pt" for s in PROBED]
    assert set(meta["files"]) == {*TABLES, "model.pt", *meta["checkpoints"]}
    for rel, rec in meta["files"].items():
        assert (got / rel).stat().st_size == rec["bytes"], rel
    for f in TABLES:
        a, b = pd.read_parquet(ref / f), pd.read_parquet(got / f)
        if "elapsed_s" in a:
            a, b = a.drop(columns=["elapsed_s"]), b.drop(columns=["elapsed_s"])
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=f"{got.name}/{f}")
    for rel in ["model.pt", *meta["checkpoints"]]:
        sa = torch.load(ref / rel, weights_only=True)
        sb = torch.load(got / rel, weights_only=True)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), rel


def _spawn(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    """End a process started by ``_spawn`` and its children (its own session)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # children the nanny left behind
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class Cluster:
    kind: str
    client: object
    address: str
    scheduler_file: Path | None
    dir: Path
    env: dict
    procs: list = field(default_factory=list)

    @property
    def kills(self) -> Path:
        return self.dir / "kills"

    @property
    def delay(self) -> Path:
        return self.dir / "delay"

    def api(self) -> dict:
        return {"scheduler_file": self.scheduler_file} if self.scheduler_file else {"scheduler": self.address}

    def cli(self) -> list[str]:
        return (["--scheduler-file", str(self.scheduler_file)] if self.scheduler_file
                else ["--scheduler", self.address])

    def start_worker(self, name: str, **env) -> subprocess.Popen:
        """One more ``dask worker`` subprocess (subprocess clusters only)."""
        p = _spawn([sys.executable, "-m", "dask", "worker", "--scheduler-file", str(self.scheduler_file),
                    "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1", "--name", name,
                    "--preload", PRELOAD, "--local-directory", str(self.dir / "work")],
                   dict(self.env, **env), self.dir / f"{name}.log")
        self.procs.append(p)
        return p


def _env(d: Path) -> dict:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                **{TEST_KILL_ENV: str(d / "kills"), "VP_TEST_CHECKPOINT_DELAY": str(d / "delay")})


@pytest.fixture(scope="module", params=["local", "subprocess"])
def cluster(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"cluster-{request.param}")
    (d / "kills").mkdir()
    (d / "delay").write_text("0")
    env = _env(d)
    if request.param == "local":
        lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, preload=[PRELOAD],
                                      env={k: env[k] for k in (TEST_KILL_ENV, "VP_TEST_CHECKPOINT_DELAY",
                                                               "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
        client = distributed.Client(lc)
        try:
            yield Cluster("local", client, lc.scheduler_address, None, d, env)
        finally:
            client.close()
            lc.close()
        return
    sched = d / "S.json"
    c = Cluster("subprocess", None, "", sched, d, env)
    try:
        c.procs.append(_spawn([sys.executable, "-m", "dask", "scheduler", "--scheduler-file", str(sched),
                               "--host", "127.0.0.1", "--port", "0", "--no-dashboard"], env, d / "scheduler.log"))
        wait_until(sched.exists, 60, "the scheduler file")
        for i in range(2):
            c.start_worker(f"w{i}")
        c.client = distributed.Client(scheduler_file=str(sched), timeout="60s")
        c.client.wait_for_workers(2, timeout=120)
        c.address = c.client.scheduler.address
        yield c
    finally:
        if c.client is not None:
            c.client.close()
        for p in c.procs:
            _kill(p)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The local executor's log set of the sweep (one torch thread per run)."""
    d = tmp_path_factory.mktemp("local")
    (d / "c.toml").write_text(TOML)
    res = collect(load_config(d / "c.toml"), d / "logs", workers=1, threads=1)
    assert len(res.ran) == 4
    return d / "logs", res.ran


def _with_checkpoints(logs: Path) -> list[str]:
    """Staging directories that hold at least one checkpoint (runs in flight)."""
    if not logs.is_dir():
        return []
    return [p.name for p in logs.iterdir() if p.name.endswith(".partial") and any((p / "checkpoints").glob("*.pt"))]


def test_client_killed_with_checkpoints_in_flight_then_rerun_is_complete(cluster, reference, tmp_path, caplog):
    """The issue's data loss: the old tasks keep running after their client dies; the re-run
    must not delete their staging directories under them, and whichever attempt publishes a
    run publishes it complete. Every run's listed files and tables equal the local executor's."""
    ref, run_ids = reference
    caplog.set_level(logging.INFO, logger="varprinciple")
    (tmp_path / "c.toml").write_text(TOML)
    logs = tmp_path / "logs"
    cluster.delay.write_text("0.4")  # each run takes >= 1.6 s, most of it between checkpoints
    try:
        proc = subprocess.Popen([sys.executable, "-m", "varprinciple.cli", "-q", "collect", str(tmp_path / "c.toml"),
                                 "--out", str(logs), "--executor", "dask", *cluster.cli()], env=cluster.env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: len(_with_checkpoints(logs)) >= 2 or proc.poll() is not None, 120,
                       "two runs with checkpoints in flight")
            assert proc.poll() is None, "the sweep ended before the kill"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the client only: the cluster is not its child
            proc.wait()
        assert len(_with_checkpoints(logs)) >= 1
        again = collect(load_config(tmp_path / "c.toml"), logs, executor="dask", **cluster.api())
        assert set(again.ran) | set(again.skipped) == set(run_ids)
        # the killed sweep's attempts were still writing when the re-run cleaned up: kept
        assert "of attempts still running (before the sweep" in caplog.text
        assert "on 2 dask workers, 2 threads in all" in caplog.text
        assert sorted(r.run_id for r in read_logset(logs).runs) == sorted(run_ids)
        for rid in run_ids:
            assert_same_run(ref / rid, logs / rid)
        # the old attempts end, find their runs published and delete their own directories
        wait_until(lambda: hidden(logs) == [], 60, "the old attempts to clean up")
    finally:
        cluster.delay.write_text("0")
    third = collect(load_config(tmp_path / "c.toml"), logs, executor="dask", **cluster.api())
    assert third.ran == () and third.skipped == run_ids


def test_worker_killed_recomputes_no_finished_run(cluster, reference, tmp_path):
    """A worker SIGKILLed while it writes its second run: only that run is redone. The
    scheduler's transition log shows every other run's task sent to a worker exactly once
    (a result kept by the client would be recomputed when its worker dies)."""
    ref, run_ids = reference
    (tmp_path / "c.toml").write_text(TOML)
    logs = tmp_path / "logs"
    # the third run submitted starts when a worker has finished one (2 workers, one thread
    # each): its first attempt SIGKILLs that worker while writing its tables
    armed = run_ids[2]
    flag = cluster.kills / armed
    flag.write_text("arm")
    t0 = time.time()
    try:
        res = collect(load_config(tmp_path / "c.toml"), logs, executor="dask", **cluster.api())
        assert flag.read_text() == "killed"
    finally:
        flag.unlink(missing_ok=True)
    assert res.ran == run_ids

    def states(dask_scheduler, since):  # sent by value to the scheduler: each task's states in order
        out = {}
        for key, _start, finish, *_rest, stamp in dask_scheduler.transition_log:
            if stamp >= since and str(key).startswith("varprinciple-"):
                out.setdefault(str(key), []).append(finish)
        return out

    log = cluster.client.run_on_scheduler(states, since=t0)
    by_run = {k.removeprefix("varprinciple-").rsplit("-", 1)[0]: v for k, v in log.items()}
    assert sorted(by_run) == sorted(run_ids)
    # recomputed = sent to a worker again after its result was in memory: never
    recomputed = {rid: v[v.index("memory"):].count("processing") for rid, v in by_run.items()}
    assert recomputed == {rid: 0 for rid in run_ids}, log
    # the killed run went to a worker twice (its first attempt died), the others once
    assert {rid: v.count("processing") for rid, v in by_run.items()} == {
        rid: 2 if rid == armed else 1 for rid in run_ids}, log
    assert hidden(logs) == []
    for rid in run_ids:
        assert_same_run(ref / rid, logs / rid)


@pytest.mark.parametrize("mode, cause", [
    ("hide", r"cannot import varprinciple \(ModuleNotFoundError: No module named 'varprinciple'\); install the "
             r"same python, varprinciple, torch and numpy on every worker \(docs/cluster\.md\)"),
    ("version", r"runs varprinciple 0\.0\.0\+other, this machine varprinciple \S+; install the same python, "
                r"varprinciple, torch and numpy on every worker"),
])
def test_misconfigured_worker_is_refused_in_one_line_naming_it(cluster, tmp_path, capsys, mode, cause):
    (tmp_path / "c.toml").write_text(TOML)
    logs = tmp_path / "logs"
    if cluster.kind == "local":  # a LocalCluster of one such worker
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, preload=[PRELOAD],
                                      env={"VP_TEST_WORKER_MODE": mode}) as lc, distributed.Client(lc) as c:
            bad = next(iter(c.scheduler_info()["workers"]))
            with pytest.raises(ConfigError) as err:
                collect(load_config(tmp_path / "c.toml"), logs, executor="dask", scheduler=c)
            if mode == "hide":  # a worker that joins after the pre-flight check: the run fails in one line
                from varprinciple.collect.executors import _task_function
                got = c.submit(_task_function(), {"spec": {"run_id": "r"}}, pure=False).result()
                assert got == {"run_id": "r", "path": None, "error": f"dask worker {bad} cannot import varprinciple "
                               f"(ModuleNotFoundError: No module named 'varprinciple'); install the same python, "
                               f"varprinciple, torch and numpy on every worker"}
        assert "\n" not in str(err.value)
        assert re.fullmatch(f"dask worker {re.escape(bad)} {cause}", str(err.value)), str(err.value)
    else:  # a third worker joins the scheduler: the CLI names it, in one line, exit code 2
        p = cluster.start_worker(f"bad-{mode}", VP_TEST_WORKER_MODE=mode)
        try:
            cluster.client.wait_for_workers(3, timeout=120)
            bad = next(a for a, w in cluster.client.scheduler_info()["workers"].items() if w["name"] == f"bad-{mode}")
            rc = main(["collect", str(tmp_path / "c.toml"), "--out", str(logs), "--executor", "dask", *cluster.cli()])
            err = capsys.readouterr().err
            assert rc == 2
            assert re.fullmatch(f"varprinciple: error: dask worker {re.escape(bad)} {cause}\n", err), err
        finally:
            _kill(p)
            cluster.procs.remove(p)
            wait_until(lambda: len(cluster.client.scheduler_info()["workers"]) == 2, 60, "the bad worker to leave")
    assert hidden(logs) == [] and not any(p.is_dir() for p in logs.iterdir())
