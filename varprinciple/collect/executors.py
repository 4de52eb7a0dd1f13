"""The Dask executor: the runs of a sweep on a Dask cluster (this machine's process pool, the
choice between them and :func:`executor_iv` live in :mod:`.local_executor`, re-exported here).

:func:`varprinciple.collect.run.collect` dispatches here: :func:`run_local` (this machine), or with ``executor="dask"``
(``varprinciple collect CONFIG --out LOGDIR --executor dask``; the ``dask`` extra). The
cluster is a ``LocalCluster`` (processes, one thread each, no dashboard), a running
scheduler given by address or scheduler file, or a ``distributed.Client`` the caller made
(e.g. on a dask-jobqueue ``SLURMCluster``). See docs/cluster.md.

What makes a distributed sweep correct under faults:

- Workers receive plain run specs (dicts of scalars, lists and strings), never modules,
  tensors or arrays; each task sets torch's thread count itself (Dask's worker pins the BLAS
  pools to one thread).
- Each attempt of a run writes into its own leased staging directory
  ``LOGDIR/.<run_id>.<attempt>.partial`` (:mod:`varprinciple.collect.staging`); the first
  complete, verified attempt is renamed into place and any later one (a presumed-dead
  worker that was still writing, or a task of an earlier sweep whose client was killed)
  finds the run finished and deletes its own directory. A task whose run is already
  published returns at once. Directories of attempts that died are deleted when the sweep
  ends (or, owner on another machine, once their lease expires); those of live attempts
  never.
- Each result is released as soon as the client has read it, so a worker lost later
  holds no result the scheduler would recompute: a lost worker costs only the runs in
  flight on it.
- A run that fails inside the task (a diverging run, a bad config, any exception) returns
  its error: it is not retried, since it would fail the same way again. A lost worker
  (killed, out of memory, node gone) makes the scheduler run the task elsewhere, up to
  ``distributed.scheduler.allowed-failures`` times (default 3), after which the run is
  reported failed (``KilledWorker``).
- Before any run, on every worker (``Client.run`` of a self-contained check, so a worker
  without varprinciple answers too): varprinciple must import, the worker must see the
  output directory (the log set's marker file ``LOGDIR/.varprinciple-logset``, a random
  token written once and kept, read back there) and run the same Python, varprinciple,
  torch and numpy as this machine; tasks (their function also sent by value) repeat these
  checks, for workers that join later. A refusal is one line naming the worker.
- Failures are reported per run; the sweep goes on and :func:`collect` raises one summary
  error at the end.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError, VarPrincipleError
from .local_executor import Executor, executor_iv, run_local

__all__ = ["Executor", "executor_iv", "run_local", "run_dask", "check_workers", "version_mismatch",
           "VERSION_PACKAGES", "WAIT_FOR_WORKERS_S", "MARKER"]

logger = logging.getLogger(__name__)

#: Packages whose versions must agree between this machine and every worker.
VERSION_PACKAGES = ("python", "varprinciple", "torch", "numpy")
#: How long a sweep waits for the first worker of a cluster given by address or file.
WAIT_FOR_WORKERS_S = 300
#: Test hook (never set it in real use): a directory; a run with a file ``<run_id>`` there
#: holding "arm" rewrites it to "killed", writes a fragment into its staging directory and
#: SIGKILLs its worker process (so only its first attempt dies).
TEST_KILL_ENV = "VARPRINCIPLE_TEST_KILL_FIRST_ATTEMPT"
#: The log set's marker (hidden, kept): a random token workers must read to prove they see LOGDIR.
MARKER = ".varprinciple-logset"

# ------------------------------------------------------------------ worker-side checks


def _versions_here() -> dict[str, str | None]:
    from ..provenance import package_versions
    v = package_versions()
    return {k: v.get(k) for k in VERSION_PACKAGES}


def version_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any], where: str) -> str | None:
    """One line naming the first package whose version differs, or None.

    Examples
    --------
    >>> version_mismatch({"torch": "2.13.0"}, {"torch": "2.1.0"}, "dask worker tcp://n1:4000")
    'dask worker tcp://n1:4000 runs torch 2.1.0, this machine torch 2.13.0; install the same python, varprinciple, torch and numpy on every worker'
    >>> version_mismatch({"torch": "2.13.0"}, {"torch": "2.13.0"}, "w") is None
    True
    """
    for k in VERSION_PACKAGES:
        if k in expected and expected[k] != found.get(k):
            return (f"{where} runs {k} {found.get(k)}, this machine {k} {expected[k]}; install the same "
                    f"{', '.join(VERSION_PACKAGES[:-1])} and {VERSION_PACKAGES[-1]} on every worker")
    return None


def _sees_marker(out: str, marker: str, token: str) -> bool:
    try:
        return (Path(out) / marker).read_text() == token
    except OSError:
        return False


def _worker_name() -> Any:
    try:
        from distributed import get_worker
        return get_worker().name
    except (ImportError, ValueError):
        return None


def _where() -> str:
    """This worker in messages ("dask worker tcp://host:port"), or "this process"."""
    try:
        from distributed import get_worker
        return f"dask worker {get_worker().address}"
    except (ImportError, ValueError):
        return "this process"


def _task_device(device: str) -> str:
    """The device of a run on this worker: plain "cuda" picks GPU ``name % count`` on a
    worker named by an integer (a LocalCluster), else cuda:0 (one visible GPU per worker)."""
    from .assembly import device_iv
    if device == "cuda":
        import torch
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        name = _worker_name()
        idx = name % n if isinstance(name, int) and n > 1 else 0
        return device_iv(f"cuda:{idx}" if n else "cuda")
    return device_iv(device)


def _worker_info(out: str, marker: str, token: str, device: str, dask_worker: Any = None) -> dict:
    """What a worker reports before the sweep (run on every worker through ``Client.run``,
    which passes the worker as ``dask_worker``)."""
    info: dict[str, Any] = {"versions": _versions_here(), "sees_out": _sees_marker(out, marker, token),
                            "device_error": None, "nthreads": 1, "gpus": 0}
    if dask_worker is not None:
        state = dask_worker.state
        info["nthreads"], info["gpus"] = int(state.nthreads), float(state.total_resources.get("GPU", 0))
    try:
        _task_device(device)
    except ConfigError as exc:
        info["device_error"] = str(exc)
    return info


def _preflight_check():
    """The function ``Client.run`` sends to every worker before a sweep.

    It is made inside this function so that cloudpickle sends its code by value: a worker
    without varprinciple (or unable to import it) can run it and say why, instead of failing
    to unpickle a reference to this module.
    """
    def varprinciple_preflight(out, marker, token, device, dask_worker=None):
        try:
            from varprinciple.collect.executors import _worker_info
        except BaseException as exc:  # noqa: BLE001 - reported as this worker's cause, in one line
            return {"import_error": " ".join(f"{type(exc).__name__}: {exc}".split())}
        return dict(_worker_info(out, marker, token, device, dask_worker), import_error=None)
    return varprinciple_preflight


def _task_function():
    """The function each run's task calls, sent by value like :func:`_preflight_check`: a
    worker that joins after the pre-flight check without varprinciple can load it, and the
    run fails with one line naming the worker instead of a task the worker cannot unpickle."""
    def varprinciple_run(payload):
        try:
            from varprinciple.collect.executors import _run_task
        except BaseException as exc:  # noqa: BLE001 - reported as this run's error, in one line
            try:
                from distributed import get_worker
                where = f"dask worker {get_worker().address}"
            except Exception:  # noqa: BLE001
                where = "a dask worker"
            cause = " ".join(f"{type(exc).__name__}: {exc}".split())
            return {"run_id": payload["spec"]["run_id"], "path": None,
                    "error": f"{where} cannot import varprinciple ({cause}); install the same python, "
                             f"varprinciple, torch and numpy on every worker"}
        return _run_task(payload)
    return varprinciple_run


def _run_preflight(client, out: Path, token: str, device: str) -> dict[str, dict]:
    """Every worker's pre-flight answer by address (an exception a worker raised, e.g. one
    that cannot even load the check, becomes its ``preflight_error``)."""
    infos = client.run(_preflight_check(), str(out), MARKER, token, device, on_error="return")
    return {a: ({"preflight_error": " ".join(f"{type(r).__name__}: {r}".split())}
                if isinstance(r, BaseException) else r) for a, r in infos.items()}


def check_workers(infos: Mapping[str, Mapping[str, Any]], *, out: str | Path,
                  expected_versions: Mapping[str, Any], device: str) -> None:
    """Refuse, in one line, a sweep some worker cannot run (sorted by worker address).

    Examples
    --------
    >>> ok = {"versions": {"torch": "2.13.0"}, "sees_out": True, "device_error": None}
    >>> check_workers({"tcp://a:1": ok}, out="/shared/logs", expected_versions={"torch": "2.13.0"},
    ...               device="cpu")
    >>> check_workers({"tcp://a:1": ok, "tcp://b:1": dict(ok, sees_out=False)}, out="/tmp/logs",
    ...               expected_versions={"torch": "2.13.0"}, device="cpu")
    Traceback (most recent call last):
    ...
    varprinciple.errors.ConfigError: --out /tmp/logs: not visible to dask worker tcp://b:1 (1 of 2 workers); put LOGDIR on storage every worker mounts at the same path (docs/cluster.md)
    """
    if not infos:
        raise ConfigError("--executor dask: the cluster has no worker")
    same = f"install the same {', '.join(VERSION_PACKAGES[:-1])} and {VERSION_PACKAGES[-1]} on every worker"
    for a in sorted(infos):
        if infos[a].get("preflight_error"):
            raise ConfigError(f"dask worker {a} cannot run varprinciple's pre-flight check "
                              f"({infos[a]['preflight_error'][:300]}); {same} (docs/cluster.md)")
        if infos[a].get("import_error"):
            raise ConfigError(f"dask worker {a} cannot import varprinciple ({infos[a]['import_error'][:300]}); "
                              f"{same} (docs/cluster.md)")
    multi = [a for a in sorted(infos) if infos[a].get("nthreads", 1) > 1]
    if multi:  # two runs in one process would share torch's thread setting and random stream
        raise ConfigError(f"dask worker {multi[0]} runs {infos[multi[0]]['nthreads']} threads; start workers "
                          f"with --nthreads 1 (one run per worker process; torch threads per run: "
                          f"--threads)")
    blind = [a for a in sorted(infos) if not infos[a]["sees_out"]]
    if blind:
        raise ConfigError(f"--out {out}: not visible to dask worker {blind[0]} ({len(blind)} of "
                          f"{len(infos)} workers); put LOGDIR on storage every worker mounts at the "
                          f"same path (docs/cluster.md)")
    for a in sorted(infos):
        msg = version_mismatch(expected_versions, infos[a]["versions"], f"dask worker {a}")
        if msg:
            raise ConfigError(msg)
    for a in sorted(infos):
        if infos[a]["device_error"]:
            raise ConfigError(f"{infos[a]['device_error']} on dask worker {a}")
    if device.startswith("cuda") and not any(i.get("gpus", 0) >= 1 for i in infos.values()):
        raise ConfigError(f"--device {device}: no dask worker offers the GPU resource; start one worker per "
                          f"GPU with `--resources GPU=1` (docs/cluster.md)")


# ------------------------------------------------------------------------- the task


def _test_kill_hook(run_id: str) -> None:
    """Test-only fault injection (see ``TEST_KILL_ENV``): die half-way through writing."""
    d = os.environ.get(TEST_KILL_ENV)
    flag = Path(d) / run_id if d else None
    if flag is None or not flag.is_file() or flag.read_text() != "arm":
        return
    flag.write_text("killed")
    from .. import io as vio
    from .. import schema

    def die(stage, meta, **kwargs):  # the run is trained and probed; its tables half written
        (Path(stage) / schema.EIGEN_FILE).write_bytes(b"PAR1 half a file")
        os.kill(os.getpid(), signal.SIGKILL)

    vio.write_run = die


def _run_task(payload: Mapping[str, Any]) -> dict:
    """One attempt of one run on a worker; returns ``{"run_id", "error", "path"}``.

    Errors raised by the run come back as values (never retried: they are deterministic).
    """
    from .one_run import run_one
    from .sweep import RunSpec
    from .staging import run_is_complete
    spec = RunSpec(**payload["spec"])
    out = Path(payload["out"])
    if run_is_complete(out / spec.run_id):  # e.g. an attempt of an earlier sweep finished it
        return {"run_id": spec.run_id, "path": str(out / spec.run_id), "error": None, "already": True}
    where = _where()
    if not _sees_marker(payload["out"], payload["marker"], payload["token"]):
        return {"run_id": spec.run_id, "path": None,
                "error": f"--out {out}: not visible to {where}; put LOGDIR on shared storage"}
    msg = version_mismatch(payload["versions"], _versions_here(), where)
    if msg:
        return {"run_id": spec.run_id, "path": None, "error": msg}
    import torch
    torch.set_num_threads(int(payload["threads"]))
    attempt = uuid.uuid4().hex[:12]
    try:
        device = _task_device(payload["device"])
        _test_kill_hook(spec.run_id)
        path = run_one(spec, out, base_dir=payload["base_dir"], device=device, progress=False,
                       extra_meta=payload["extra"], attempt=attempt)
    except Exception as exc:  # noqa: BLE001 - every failure is reported per run, none retried
        text = str(exc) if isinstance(exc, VarPrincipleError) else f"{type(exc).__name__}: {exc}"
        return {"run_id": spec.run_id, "path": None, "error": text}
    return {"run_id": spec.run_id, "path": str(path), "error": None}


# ------------------------------------------------------------------------ the sweep


def _connect(workers: int, scheduler: Any, scheduler_file: str | Path | None, cuda: bool):
    """(client, cluster, own_client): a client of the chosen cluster."""
    from distributed import Client, LocalCluster
    if isinstance(scheduler, Client):
        return scheduler, None, False
    if scheduler_file is not None:
        if not Path(scheduler_file).is_file():
            raise ConfigError(f"--scheduler-file {scheduler_file}: no such file (written by "
                              f"`dask scheduler --scheduler-file FILE`)")
        what, kwargs = f"--scheduler-file {scheduler_file}", {"scheduler_file": str(scheduler_file)}
    elif scheduler is not None:
        what, kwargs = f"--scheduler {scheduler}", {"address": str(scheduler)}
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, resources={"GPU": 1} if cuda else None,
                               # no dashboard; the scheduler's small HTTP server on a free local port
                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        return Client(cluster), cluster, True
    try:
        return Client(timeout="30s", **kwargs), None, True
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"{what}: cannot connect to the Dask scheduler "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def _marker_token(out: Path) -> str:
    """The token of the log set's marker file, written once (first writer wins) and kept."""
    path = out / MARKER
    try:
        with open(path, "x") as f:
            f.write(uuid.uuid4().hex)
    except FileExistsError:
        pass
    return path.read_text()


def run_dask(todo: Sequence, out: Path, *, base_dir: str, threads: int, device: str, extra: Mapping,
             workers: int = 1, scheduler: Any = None, scheduler_file: str | Path | None = None,
             progress: bool = False) -> list[tuple[str, VarPrincipleError]]:
    """Run ``todo`` (:class:`~varprinciple.collect.sweep.RunSpec`) on a Dask cluster.

    Returns the failed runs as ``(run_id, error)``; the others are written to ``out``.
    Called by :func:`varprinciple.collect.run.collect` (which checks the config, skips
    finished runs and raises the summary); see the module docstring for the guarantees.
    """
    from distributed import KilledWorker, as_completed
    out = Path(out).resolve()
    if not todo:
        return []
    cuda = device.startswith("cuda")
    client, cluster, own = _connect(workers, scheduler, scheduler_file, cuda)
    token = _marker_token(out)
    failures: list[tuple[str, VarPrincipleError]] = []
    pending: dict[str, Any] = {}  # key -> future, until its result is read
    try:
        try:
            client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        except TimeoutError:
            raise ConfigError(f"--executor dask: no worker joined the cluster within "
                              f"{WAIT_FOR_WORKERS_S} s") from None
        expected = _versions_here()
        infos = _run_preflight(client, out, token, device)
        check_workers(infos, out=out, expected_versions=expected, device=device)
        resources = {"GPU": 1} if cuda else None
        n_threads = sum(int(i.get("nthreads", 1)) for i in infos.values())
        logger.info("collecting %d run%s into %s on %d dask worker%s, %d thread%s in all (%s); %d torch "
                    "thread%s per run", len(todo), "s" if len(todo) != 1 else "", out, len(infos),
                    "s" if len(infos) != 1 else "", n_threads, "s" if n_threads != 1 else "",
                    client.scheduler.address, threads, "s" if threads != 1 else "")
        base = {"out": str(out), "base_dir": str(Path(base_dir).resolve()), "threads": int(threads),
                "device": device, "extra": dict(extra), "marker": MARKER, "token": token,
                "versions": expected}
        by_key = {}
        task = _task_function()
        for s in todo:
            payload = dict(base, spec=asdict(s))
            f = client.submit(task, payload, key=f"varprinciple-{s.run_id}-{uuid.uuid4().hex[:8]}", pure=False,
                              retries=0, resources=resources)
            by_key[f.key] = s.run_id
            pending[f.key] = f
        done = as_completed(list(pending.values()))
        del f  # the futures live in `pending` (and `done` until each is yielded) only
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(pending), desc="runs", unit="run")
        try:
            for f in done:
                rid = by_key[f.key]
                try:
                    res = f.result()
                except KilledWorker:
                    err = VarPrincipleError("its worker died on every attempt (KilledWorker; see "
                                            "distributed.scheduler.allowed-failures)")
                except Exception as exc:  # noqa: BLE001 - reported per run
                    err = VarPrincipleError(f"{type(exc).__name__}: {exc}".splitlines()[0])
                else:
                    err = VarPrincipleError(res["error"]) if res["error"] else None
                # release the result now: a worker lost later holds nothing to recompute
                del pending[f.key]
                del f
                if err is None:
                    logger.info("finished %s", rid)
                else:
                    failures.append((rid, err))
                    logger.error("%s failed: %s", rid, err)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    finally:
        if pending:
            client.cancel(list(pending.values()))
            pending.clear()
        if own:
            client.close()
        if cluster is not None:
            cluster.close()
    order = {s.run_id: i for i, s in enumerate(todo)}
    return sorted(failures, key=lambda f: order[f[0]])
