"""Which executor runs a sweep, and the local one: this machine's process pool.

:func:`varprinciple.collect.run.collect` checks the choice (:func:`executor_iv`) and
dispatches to :func:`run_local` or, with ``executor="dask"``,
:func:`varprinciple.collect.executors.run_dask` (the Dask cluster; docs/cluster.md). Both are
importable from :mod:`varprinciple.collect.executors`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import ConfigError, VarPrincipleError

__all__ = ["Executor", "executor_iv", "run_local", "DASK_INSTALL"]

logger = logging.getLogger(__name__)

#: How to install what ``executor="dask"`` needs.
DASK_INSTALL = 'pip install "varprinciple[dask]"'


class Executor(StrEnum):
    """Where the runs of a sweep execute."""

    LOCAL = "local"
    DASK = "dask"


def executor_iv(executor: Any, *, workers: int, scheduler: Any = None,
                scheduler_file: str | Path | None = None) -> Executor:
    """Check the executor choice and its options; returns the :class:`Executor`.

    Examples
    --------
    >>> executor_iv("local", workers=2)
    <Executor.LOCAL: 'local'>
    >>> executor_iv("slurm", workers=1)
    Traceback (most recent call last):
    ...
    varprinciple.errors.ConfigError: --executor: must be one of local, dask; got 'slurm'
    """
    try:
        ex = Executor(executor)
    except ValueError:
        raise ConfigError(f"--executor: must be one of {', '.join(e.value for e in Executor)}; "
                          f"got {executor!r}") from None
    if ex is Executor.LOCAL:
        if scheduler is not None or scheduler_file is not None:
            raise ConfigError("--scheduler/--scheduler-file: need --executor dask")
        return ex
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError(f"--executor dask: needs the dask extra ({DASK_INSTALL})") from None
    if scheduler is not None and scheduler_file is not None:
        raise ConfigError("--scheduler and --scheduler-file: give one of them, not both")
    if (scheduler is not None or scheduler_file is not None) and workers != 1:
        raise ConfigError(f"--workers: sizes the LocalCluster started without --scheduler; a running "
                          f"cluster uses its own workers; got --workers {workers} with a scheduler")
    return ex


def _worker_init(threads: int, level: int) -> None:
    import torch
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _worker_run(spec, out: str, base_dir: str, device: str, extra: dict) -> str:
    from .one_run import run_one
    try:
        return str(run_one(spec, out, base_dir=base_dir, device=device, progress=False, extra_meta=extra))
    except VarPrincipleError as exc:  # subclasses with custom __init__ do not unpickle; keep the message
        raise VarPrincipleError(str(exc)) from None


def run_local(todo: Sequence, out: Path, *, base_dir: str, threads: int, device: str, extra: Mapping,
              workers: int, progress: bool) -> list[tuple[str, BaseException]]:
    """Run ``todo`` (:class:`~varprinciple.collect.sweep.RunSpec`) on this machine: in this
    process with ``workers=1`` (or one run), else in a pool of ``workers`` spawned processes.
    Returns the failed runs ``(run_id, error)``; an error that is not a VarPrincipleError is raised."""
    from .one_run import run_one
    failures: list[tuple[str, BaseException]] = []
    if workers == 1 or len(todo) <= 1:
        import torch
        old_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        bar = None
        if progress and len(todo) > 1:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(todo), desc="runs", unit="run")
        try:
            for s in todo:
                try:
                    run_one(s, out, base_dir=base_dir, device=device, progress=progress,
                            extra_meta=extra)
                except VarPrincipleError as exc:
                    failures.append((s.run_id, exc))
                    logger.error("%s failed: %s", s.run_id, exc)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            torch.set_num_threads(old_threads)
    else:
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(todo), desc="runs", unit="run")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(threads, logging.getLogger().getEffectiveLevel())) as pool:
            futs = {pool.submit(_worker_run, s, str(out), base_dir, device, extra): s for s in todo}
            pending = set(futs)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    s = futs[f]
                    exc = f.exception()
                    if exc is None:
                        logger.info("finished %s", s.run_id)
                    elif isinstance(exc, VarPrincipleError):
                        failures.append((s.run_id, exc))
                        logger.error("%s failed: %s", s.run_id, exc)
                    else:
                        for other in pending:
                            other.cancel()
                        raise exc
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
    return failures
