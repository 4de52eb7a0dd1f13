"""The collect() driver: check a sweep, skip finished runs, hand the rest to an executor.

Runs and sweeps are built elsewhere, each module with one job: sweep expansion, run names
and seeds in :mod:`varprinciple.collect.sweep`; a run's data, model and pre-flight checks in
:mod:`varprinciple.collect.assembly`; one run (train, probe, write) in
:mod:`varprinciple.collect.one_run` around the one probe runner
(:mod:`varprinciple.collect.probe_runner`); the local and Dask executors in
:mod:`varprinciple.collect.executors`; staging and publishing in
:mod:`varprinciple.collect.staging`. Their public names are importable from here too.

Resume (:func:`collect`): each attempt at a run writes into its own hidden staging
directory ``LOGDIR/.<run_id>.<attempt>.partial`` (readers skip hidden directories), leased
by a heartbeat, and renames it to ``LOGDIR/<run_id>`` only when every file it lists is
verified (:mod:`varprinciple.collect.staging`). Re-running skips finished runs (same
configuration hash; a different one is an error), deletes staging directories that have no
live owner and unfinished run directories, and redoes those runs; a staging directory whose
owner may still be writing (e.g. a task of a sweep whose client was killed) is left to it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import schema
from ..errors import ConfigError, VarPrincipleError
from ..provenance import git_revision, package_versions
from .assembly import (build_run, device_iv, device_syntax_iv, dropout_switched_off, preflight, probe_settings,
                       unprobed_dropout)
from .config import CollectConfig
from .executors import Executor, executor_iv, run_dask, run_local
from .one_run import run_one
from .staging import PARTIAL_SUFFIX, discard_unfinished, reap_stages, run_is_complete, stage_dir
from .sweep import RunSpec, canonical_json, derive_seed, expand_sweep

__all__ = ["RunSpec", "CollectResult", "expand_sweep", "collect", "run_one", "derive_seed",
           "package_versions", "git_revision", "PARTIAL_SUFFIX", "stage_dir", "build_run", "probe_settings",
           "unprobed_dropout", "dropout_switched_off"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectResult:
    """Outcome of :func:`collect`: the log set and which runs were run or skipped."""

    out: Path
    run_ids: tuple[str, ...]
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    wall_s: float

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"run_id": list(self.run_ids),
                             "status": ["ran" if r in self.ran else "skipped" for r in self.run_ids],
                             "path": [str(self.out / r) for r in self.run_ids]})


def _finished_hash(run_dir: Path) -> str | None:
    """The config hash of a finished run at ``run_dir`` ("" if it has none), None if unfinished."""
    p = run_dir / schema.RUN_JSON
    if not p.exists():
        return None
    try:
        meta = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return str(meta.get("config_hash", "")) if isinstance(meta, dict) else None


def _same_but_newer_defaults(run_dir: Path, config: Mapping[str, Any]) -> bool:
    """True if the finished run's recorded ``config`` equals ``config`` except for keys (or
    sections) it does not record that ``config`` holds at their declared defaults: the run
    was collected by an older varprinciple, before those keys existed, with the same
    settings (so resuming an old log set after an upgrade does not redo it)."""
    from .config import CONFIG_KEYS
    try:
        old = json.loads((run_dir / schema.RUN_JSON).read_text()).get("config")
    except (OSError, json.JSONDecodeError, AttributeError):
        return False
    if not isinstance(old, dict) or set(old) - set(config):
        return False
    for sec, new_sec in config.items():
        old_sec = old.get(sec, {})
        if not isinstance(old_sec, dict) or not isinstance(new_sec, dict) or set(old_sec) - set(new_sec):
            return False
        for key, value in new_sec.items():
            if key in old_sec:
                if canonical_json(old_sec[key]) != canonical_json(value):
                    return False
            elif key not in CONFIG_KEYS.get(sec, {}) or canonical_json(CONFIG_KEYS[sec][key].default) != canonical_json(value):
                return False
    return True


def _report_live(live: list[Path], when: str) -> None:
    if live:
        logger.info("%d staging director%s of attempts still running (%s the sweep; each deletes its own "
                    "when it ends, or a later run once its lease expires): %s", len(live),
                    "y" if len(live) == 1 else "ies", when, ", ".join(p.name for p in live))


def collect(cfg: CollectConfig, out: str | Path, *, workers: int = 1, threads: int = 1,
            device: str = "cpu", progress: bool | None = None, executor: str = "local",
            scheduler: Any = None, scheduler_file: str | Path | None = None) -> CollectResult:
    """Collect every run of a config's sweep into the log set ``out``.

    Everything is checked before any training starts: the config (already validated),
    the data of the config, batch sizes against the training-set size, the model, and
    finished runs whose configuration differs from this one (an error: use another
    ``out``). Finished runs are skipped; unfinished ones are redone.

    Parameters
    ----------
    cfg : CollectConfig
    out : path
        The log-set directory (created).
    workers : int, default 1
        Runs in parallel, in separate processes (spawned; a script calling this needs the
        ``if __name__ == "__main__":`` guard). Results do not depend on it. With
        ``executor="dask"`` and no scheduler: the worker processes of the LocalCluster.
    threads : int, default 1
        Torch threads per run (per worker). Floating-point reductions split across
        threads round differently, so results are bitwise reproducible for a given
        ``threads``; use ``workers`` to use more cores.
    device : str, default "cpu"
        Torch device of every stage (training and probes): cpu, cuda, cuda:N or mps. On a
        Dask cluster, "cuda" runs each run on its worker's GPU (one worker per GPU).
    progress : bool, optional
        Progress bars (default: when stderr is a terminal); logging otherwise.
    executor : {"local", "dask"}, default "local"
        "local": this machine's process pool. "dask": a Dask cluster (the ``dask`` extra;
        see :func:`varprinciple.collect.executors.run_dask` and docs/cluster.md).
    scheduler : str or distributed.Client, optional
        With ``executor="dask"``: a scheduler address or a connected client (left open);
        default a LocalCluster of ``workers`` processes, one thread each, no dashboard.
    scheduler_file : path, optional
        With ``executor="dask"``: a scheduler file written by ``dask scheduler
        --scheduler-file`` (instead of ``scheduler``).

    Raises
    ------
    ConfigError
        If the config does not fit the data, or ``out`` holds a run of the same name made
        with a different configuration.
    VarPrincipleError
        If a run fails (the others still finish; the first failure is named, then the
        other failed runs).

    Examples
    --------
    >>> import tempfile
    >>> from varprinciple.collect.config import validate_config
    >>> from varprinciple.io import read_logset
    >>> cfg = validate_config({"data": {"n_train": 50}, "model": {"widths": [3]},
    ...                        "train": {"method": ["gd", "sgd"], "steps": 5, "batch_size": 10},
    ...                        "probe": {"top_k": 2, "n_samples": 6, "hutchinson_probes": 2,
    ...                                  "tr_hc_samples": 0}})
    >>> out = tempfile.mkdtemp()
    >>> collect(cfg, out).ran
    ('gd-lr0.1-seed0', 'sgd-lr0.1-bs10-seed0')
    >>> collect(cfg, out).skipped  # re-running skips finished runs
    ('gd-lr0.1-seed0', 'sgd-lr0.1-bs10-seed0')
    >>> sorted(run.method for run in read_logset(out).runs)
    ['gd', 'sgd']
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers: must be an integer >= 1; got {workers!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"--threads: must be an integer >= 1; got {threads!r}")
    executor = executor_iv(executor, workers=workers, scheduler=scheduler, scheduler_file=scheduler_file)
    # on a cluster the device must exist on the workers (checked there), not here
    device = device_iv(device) if executor is Executor.LOCAL else device_syntax_iv(device)
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a directory")
    specs = expand_sweep(cfg)
    if progress is None:
        progress = sys.stderr.isatty()
    preflight(specs, cfg.base_dir)  # data and model of every distinct run shape, before any training
    todo, skipped = [], []
    for s in specs:
        h = _finished_hash(out / s.run_id)
        if h is None:
            todo.append(s)
        elif h != s.config_hash and not _same_but_newer_defaults(out / s.run_id, s.config):
            raise ConfigError(f"{out / s.run_id}: a finished run of this name was made with a different "
                              f"configuration (hash {h or 'none'}, now {s.config_hash}); collect into "
                              f"another --out or delete it")
        elif not run_is_complete(out / s.run_id):  # published without a file it lists (older versions)
            logger.warning("%s: run.json lists a file that is missing; redoing the run", out / s.run_id)
            todo.append(s)
        else:
            skipped.append(s.run_id)
    # staging directories without a live owner, and unfinished run directories, go; a staging
    # directory whose owner may still write (an attempt of an interrupted sweep) is left to it
    reap_stages(out, skipped)
    for s in todo:  # (one an earlier sweep's attempt has published meanwhile is kept)
        discard_unfinished(out / s.run_id)
    _report_live(reap_stages(out, [s.run_id for s in todo]), "before")
    if skipped:
        logger.info("skipping %d finished run%s", len(skipped), "s" if len(skipped) > 1 else "")
    if executor is Executor.LOCAL:  # a cluster's own worker count is logged once it is reached
        logger.info("collecting %d run%s into %s with %d worker%s", len(todo), "s" if len(todo) != 1 else "",
                    out, workers, "s" if workers > 1 else "")
    out.mkdir(parents=True, exist_ok=True)
    extra = {"config_source": cfg.source}
    failures: list[tuple[str, BaseException]] = []
    if executor is Executor.DASK:
        failures = run_dask(todo, out, base_dir=cfg.base_dir, threads=threads, device=device, extra=extra,
                            workers=workers, scheduler=scheduler, scheduler_file=scheduler_file,
                            progress=progress)
    else:
        failures = run_local(todo, out, base_dir=cfg.base_dir, threads=threads, device=device, extra=extra,
                             workers=workers, progress=progress)
    # attempts that died left their staging directories; live ones (an earlier sweep's) delete
    # their own when they end
    _report_live(reap_stages(out, [s.run_id for s in todo]), "after")
    if failures:
        rid, exc = failures[0]
        others = [r for r, _ in failures[1:]]
        more = f" ({len(others)} more failed: {', '.join(others)})" if others else ""
        raise VarPrincipleError(f"run {rid} failed: {exc}{more}; {len(todo) - len(failures)} of "
                                f"{len(todo)} runs written")
    ran = tuple(s.run_id for s in todo)
    wall = time.perf_counter() - t0
    logger.info("collected %d run%s (%d skipped) in %.1f s: %s", len(ran), "s" if len(ran) != 1 else "",
                len(skipped), wall, out)
    return CollectResult(out, tuple(s.run_id for s in specs), ran, tuple(skipped), wall)
