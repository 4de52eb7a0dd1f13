"""Staging, publishing and clean-up of collected runs: a published run is complete by construction.

Every attempt to write a run (one per call of :func:`varprinciple.collect.run.run_one`;
on a cluster, a retried task is a new attempt) owns one staging directory,
``LOGDIR/.<run_id>.<attempt>.partial``, where ``<attempt>`` is a random hex token:

- **Created once, never recreated.** The directory is made under a temporary name with its
  lease file inside and renamed into place; files are written only into directories the
  attempt made. A write into a directory someone else deleted fails, or (a writer that
  creates missing parents) recreates it without the lease, which the attempt finds before
  it publishes: it then publishes nothing.
- **Leased.** The lease file ``.lease`` (JSON: attempt token, host, process id and start
  time, with the host's boot id and PID namespace) is touched every
  :data:`LEASE_HEARTBEAT_S` seconds by a thread of the attempt's process. A clean-up
  deletes a staging directory only when its owner is gone: its process is one of this
  machine (same host, boot and PID namespace) and has ended, or its lease was last
  touched more than :data:`LEASE_EXPIRY_S` seconds ago (an owner elsewhere, presumed
  dead). A directory without a lease (a leftover of an older varprinciple) has no owner.
- **Deleted by claiming.** Whoever deletes a staging directory first renames it to a
  ``….deleting`` name (one atomic rename) and then removes it, so a clean-up and the
  owner's publishing rename cannot both succeed.
- **Verified, then published.** Before the publishing rename the attempt checks that its
  lease is still its own and that every file the run lists (tables, ``model.pt``, each
  checkpoint) exists; it records each one's size and SHA-256 in ``run.json`` under
  ``files`` (:data:`varprinciple.schema.RUN_FILES`), renames the directory to
  ``LOGDIR/<run_id>`` and removes the lease from it. The first attempt to do so wins; a
  later one finds the run complete and deletes its own directory.

Readers (:func:`varprinciple.io.read_logset`) refuse a run whose ``run.json`` lists a file
that is missing or has another size.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import schema
from ..errors import VarPrincipleError

__all__ = ["PARTIAL_SUFFIX", "LEASE_FILE", "LEASE_HEARTBEAT_S", "LEASE_EXPIRY_S", "Attempt", "stage_dir",
           "stages_of", "lease_is_live", "reap_stages", "discard", "discard_unfinished", "run_is_complete",
           "file_manifest", "listed_files"]

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
#: The lease file inside a staging directory (removed from the run once it is published).
LEASE_FILE = ".lease"
#: Seconds between two touches of a live attempt's lease.
LEASE_HEARTBEAT_S = 10.0
#: A lease not touched for this many seconds has no live owner (unless its owner is a
#: process of this machine that still runs). Generous against NFS attribute caching (up to
#: 60 s) and loaded nodes; the clocks of the machines must agree within a minute.
LEASE_EXPIRY_S = 180.0
_CLAIMED = ".deleting"
_HOST = socket.gethostname()


def _read_id(path: str, how) -> str | None:
    try:
        return how(path).strip()
    except OSError:
        return None


#: Where a process id means this machine's process: the host name, its boot and the PID
#: namespace (containers sharing the host name, e.g. with host networking, have their own).
_PROCESS_SPACE = {"host": _HOST,
                  "boot_id": _read_id("/proc/sys/kernel/random/boot_id", lambda p: Path(p).read_text()),
                  "pid_ns": _read_id("/proc/self/ns/pid", os.readlink)}


def stage_dir(out: str | os.PathLike, run_id: str, attempt: str | None = None) -> Path:
    """The hidden staging directory of one attempt of a run (without ``attempt``: the name
    older versions used, cleaned up like any ownerless staging directory).

    Examples
    --------
    >>> stage_dir("logs", "gd-lr0.1-seed0", "a1b2").name, stage_dir("logs", "gd-lr0.1-seed0").name
    ('.gd-lr0.1-seed0.a1b2.partial', '.gd-lr0.1-seed0.partial')
    """
    mid = f".{attempt}" if attempt else ""
    return Path(out) / f".{run_id}{mid}{PARTIAL_SUFFIX}"


def _stage_pattern(run_id: str) -> re.Pattern:
    # .<run_id>[.<hex>].partial, its claimed form …partial.deleting, and .<run_id>.<hex>.init
    # (an attempt's directory before it is renamed into place, lease inside)
    return re.compile(re.escape(f".{run_id}") + r"(?:(?:\.[0-9a-f]+)?" + re.escape(PARTIAL_SUFFIX)
                      + r"(?:" + re.escape(_CLAIMED) + r")?|\.[0-9a-f]+\.init)")


def stages_of(out: str | os.PathLike, run_id: str) -> list[Path]:
    """Every staging directory of ``run_id`` under ``out`` (any attempt, claimed ones too)."""
    out = Path(out)
    if not out.is_dir():
        return []
    pat = _stage_pattern(run_id)
    return sorted(p for p in out.iterdir() if pat.fullmatch(p.name))


# ------------------------------------------------------------------------------ leases


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux ``/proc``; None elsewhere or if gone), which
    tells a process from a later one that reused its id."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]  # a zombie has ended


def _process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    except OSError:
        return True
    if Path("/proc/self/stat").exists():
        now = _proc_start(pid)
        return now is not None and (start is None or now == start)
    return True


def lease_is_live(stage: str | os.PathLike, *, now: float | None = None) -> bool:
    """True if the staging directory ``stage`` may still have a live owner (see the module
    docstring): its lease names a process of this machine that still runs, or (owner
    elsewhere) was touched within :data:`LEASE_EXPIRY_S` seconds. A claimed directory, one
    without a readable lease, or one whose owner process here has ended has none.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> lease_is_live(d)  # no lease: a leftover without an owner
    False
    """
    stage = Path(stage)
    if stage.name.endswith(_CLAIMED):
        return False
    lease = stage / LEASE_FILE
    try:
        info = json.loads(lease.read_text())
        mtime = lease.stat().st_mtime
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict):
        return False
    pid = info.get("pid")
    here = all(info.get(k) == v for k, v in _PROCESS_SPACE.items())
    if here and isinstance(pid, int) and not _process_alive(pid, info.get("pid_start")):
        return False
    return (time.time() if now is None else now) - mtime <= LEASE_EXPIRY_S


def discard(path: str | os.PathLike) -> bool:
    """Delete a staging (or unfinished run) directory by claiming it first: one atomic rename
    to a hidden ``….deleting`` name, then removal. False if someone else moved it first."""
    path = Path(path)
    if path.name.endswith(_CLAIMED):
        shutil.rmtree(path, ignore_errors=True)
        return True
    hidden = path.name if path.name.startswith(".") else f".{path.name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"
    claimed = path.with_name(hidden + _CLAIMED)
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return False
    shutil.rmtree(claimed, ignore_errors=True)
    return True


def discard_unfinished(run_dir: str | os.PathLike) -> bool:
    """Delete ``run_dir`` if it is not a complete run (:func:`run_is_complete`); True if it
    was deleted. Safe beside attempts that publish: a directory found complete once claimed
    (one published in between) is put back, or dropped if another complete one took its place."""
    run_dir = Path(run_dir)
    if not run_dir.exists() or run_is_complete(run_dir):
        return False
    claimed = run_dir.with_name(f".{run_dir.name}.{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}{_CLAIMED}")
    try:
        os.rename(run_dir, claimed)
    except FileNotFoundError:
        return False
    if run_is_complete(claimed):
        try:
            os.rename(claimed, run_dir)
            return False
        except OSError:  # another attempt's complete run is in place now
            pass
    shutil.rmtree(claimed, ignore_errors=True)
    return True


def reap_stages(out: str | os.PathLike, run_ids: Iterable[str]) -> list[Path]:
    """Delete the staging directories of ``run_ids`` that have no live owner; returns the
    ones left because their owner may still be writing (they delete themselves)."""
    live = []
    for rid in run_ids:
        for st in stages_of(out, rid):
            if lease_is_live(st):
                live.append(st)
            else:
                discard(st)
    return live


# ----------------------------------------------------------------------- completeness


def file_manifest(run_dir: str | os.PathLike, files: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes": size, "sha256": hex}}`` of ``files`` in ``run_dir``
    (the ``run.json`` key :data:`varprinciple.schema.RUN_FILES`); a missing file raises
    :class:`~varprinciple.errors.VarPrincipleError` naming it."""
    from ..io import file_record
    run_dir = Path(run_dir)
    out = {}
    for rel in dict.fromkeys(files):
        try:
            out[rel] = file_record(run_dir / rel)
        except FileNotFoundError:
            raise VarPrincipleError(f"{run_dir}: {rel} is missing; the run was not published") from None
    return out


def run_is_complete(run_dir: str | os.PathLike) -> bool:
    """True if ``run_dir`` holds ``run.json`` and every file it lists (with the recorded size)."""
    from ..io import listed_file_problems
    run_dir = Path(run_dir)
    try:
        meta = json.loads((run_dir / schema.RUN_JSON).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and not listed_file_problems(run_dir, meta)


# ---------------------------------------------------------------------------- attempts


class Attempt:
    """One attempt's staging directory: created with its lease, heartbeat while open,
    verified and renamed into place by :meth:`publish`, deleted on failure.

    Use as a context manager; ``token`` (hex) defaults to a fresh random one.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> with Attempt(out, "r0", "ab12") as att:
    ...     sorted(p.name for p in att.stage.iterdir()), lease_is_live(att.stage)
    (['.lease'], True)
    >>> list(out.iterdir())  # not published: the attempt deletes its directory
    []
    """

    def __init__(self, out: str | os.PathLike, run_id: str, token: str | None = None):
        if token is not None and not re.fullmatch(r"[0-9a-f]+", token):
            raise ValueError(f"attempt token must be hex; got {token!r}")
        self.out = Path(out)
        self.run_id = run_id
        self.token = token or uuid.uuid4().hex[:12]
        self.stage = stage_dir(self.out, run_id, self.token)
        self.final = self.out / run_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    # -- lifetime
    def __enter__(self) -> "Attempt":
        self.out.mkdir(parents=True, exist_ok=True)
        init = self.out / f".{self.run_id}.{self.token}.init"
        init.mkdir()  # fails if the token were ever reused
        lease = {"attempt": self.token, **_PROCESS_SPACE, "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
                 "created": time.time(), "heartbeat_s": LEASE_HEARTBEAT_S, "expiry_s": LEASE_EXPIRY_S}
        (init / LEASE_FILE).write_text(json.dumps(lease))
        os.rename(init, self.stage)
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.token}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._halt()
        if self.stage.exists():  # not published (failed or lost): remove our own directory
            discard(self.stage)

    def _beat(self) -> None:
        while not self._stop.wait(LEASE_HEARTBEAT_S):
            try:
                os.utime(self.stage / LEASE_FILE)
            except FileNotFoundError:  # deleted under us: never recreate it
                self.lost = True
                return
            except OSError:  # transient (NFS): the next beat retries
                pass

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- writing
    def mkdir(self, name: str) -> Path:
        """A subdirectory of the stage (its parent must exist: nothing deleted is recreated)."""
        p = self.stage / name
        p.mkdir(exist_ok=True)
        return p

    def check(self) -> None:
        """Raise unless the staging directory is still this attempt's own (lease present, ours)."""
        try:
            ours = json.loads((self.stage / LEASE_FILE).read_text()).get("attempt") == self.token
        except (OSError, ValueError, AttributeError):
            ours = False
        if self.lost or not ours:
            raise VarPrincipleError(f"{self.stage}: this attempt's staging directory was deleted by another "
                                    f"process (its lease had expired); run {self.run_id} was not published")

    def publish(self, files: Sequence[str]) -> bool:
        """Verify ``files`` (paths relative to the stage), record them in ``run.json`` and rename
        the stage to ``LOGDIR/<run_id>``; True if this attempt published the run, False if
        another attempt had (this stage is then deleted).

        ``run.json`` must already be in the stage; it gains the key ``files``.
        """
        from ..io import write_json
        self.check()
        meta_path = self.stage / schema.RUN_JSON
        meta = json.loads(meta_path.read_text())
        meta[schema.RUN_FILES] = file_manifest(self.stage, files)  # (hashing: the lease still beats)
        self._halt()
        write_json(meta_path, meta)
        self.check()  # written into our own directory, not into one recreated by write_json
        for _ in range(2):
            try:
                # POSIX: fails on an existing non-empty directory. The lease goes with it (a
                # clean-up never meets this stage without one) and is removed from the run.
                os.rename(self.stage, self.final)
                (self.final / LEASE_FILE).unlink(missing_ok=True)
                return True
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise VarPrincipleError(f"{self.stage}: deleted by another process before publishing; "
                                            f"run {self.run_id} was not published") from None
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
            if run_is_complete(self.final):  # another attempt finished first
                discard(self.stage)
                return False
            logger.warning("%s: an incomplete run directory is in the way; replacing it", self.final)
            discard_unfinished(self.final)
        raise VarPrincipleError(f"{self.final}: cannot publish run {self.run_id} (the directory keeps "
                                f"reappearing incomplete)")


def listed_files(meta: Mapping[str, Any], tables: Iterable[str]) -> list[str]:
    """The files a collected run's ``run.json`` lists: its tables, model file and checkpoints."""
    out = list(tables)
    if isinstance(meta.get("model_file"), str):
        out.append(meta["model_file"])
    out += [c for c in meta.get("checkpoints") or [] if isinstance(c, str)]
    return out
