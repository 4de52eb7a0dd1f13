"""A Dask worker preload for tests/test_dask_faults.py (``dask worker --preload FILE`` or
``LocalCluster(preload=[FILE])``); importing it does nothing, ``dask_setup`` acts at worker
start, driven by environment variables of the worker process:

- ``VP_TEST_WORKER_MODE=hide``: varprinciple cannot be imported (as on a worker whose
  environment lacks it); ``=version``: varprinciple reports version 0.0.0+other.
- ``VP_TEST_CHECKPOINT_DELAY``: a file holding seconds; each checkpoint a run saves is
  followed by that long a sleep (wall time, no CPU), so a test can kill a sweep's client
  while its runs are half-way through their checkpoints.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


class _Hide:
    """An import finder for which varprinciple is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "varprinciple" or name.startswith("varprinciple."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def dask_setup(worker) -> None:  # noqa: ARG001 - the preload hook's signature
    mode = os.environ.get("VP_TEST_WORKER_MODE", "")
    if mode == "hide":
        for name in [m for m in sys.modules if m == "varprinciple" or m.startswith("varprinciple.")]:
            del sys.modules[name]  # (a spawned process may have imported it with its parent's main)
        sys.meta_path.insert(0, _Hide())
        return
    if mode == "version":
        import importlib.metadata as md
        real = md.version
        md.version = lambda name: "0.0.0+other" if name == "varprinciple" else real(name)
    delay = os.environ.get("VP_TEST_CHECKPOINT_DELAY")
    if delay:
        from varprinciple.collect import one_run as run
        save = run._save_state

        def slow_save(model, path):
            save(model, path)
            if path.parent.name == "checkpoints":
                try:
                    time.sleep(float(Path(delay).read_text() or 0))
                except (OSError, ValueError):
                    pass

        run._save_state = slow_save
