"""run.json: the one builder of a run's metadata and of run names.

- :func:`build_run_json` builds the run.json of every writer (``collect``,
  ``probe_model``/``probe_checkpoints``, the recorder): the required keys, the writer's
  fields (each declared in :data:`varprinciple.schema.RUN_KEYS`), the provenance
  (:mod:`varprinciple.provenance`), then the caller's own ``meta``;
- :func:`run_name` builds a collected run's name and group label from its configuration,
  and :func:`parse_run_name` reads them back.

Examples
--------
>>> run_name("sgd+dropout", lr=0.1, batch_size=32, drop_prob=0.1, seed=3)
'sgd+dropout-lr0.1-bs32-drop0.1-seed3'
>>> parse_run_name("sgd+dropout-lr0.1-bs32-drop0.1")
{'method': 'sgd+dropout', 'lr': 0.1, 'batch_size': 32, 'drop_prob': 0.1}
>>> meta = build_run_json("r0", "gd", {"seed": 0})
>>> meta["schema_version"], sorted(k for k in ("versions", "git_revision", "created") if k in meta)
(1, ['created', 'git_revision', 'versions'])
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import provenance, schema

__all__ = ["build_run_json", "run_name", "parse_run_name"]


def build_run_json(run_id: str, method: str, fields: Mapping[str, Any], *,
                   meta: Mapping[str, Any] | None = None) -> dict:
    """The run.json of a run: required keys, ``fields``, provenance, then ``meta``.

    ``fields`` are the writer's keys, each declared in :data:`~varprinciple.schema.RUN_KEYS`
    (a ``ValueError`` names an undeclared one: declare it there, with what it holds);
    ``versions``, ``git_revision`` and ``created`` are added unless given; ``meta`` (a user's
    own keys) is applied last, as given.
    """
    undeclared = [k for k in fields if k not in schema.RUN_KEYS]
    if undeclared:
        raise ValueError(f"run.json key {undeclared[0]!r} is not declared in varprinciple.schema.RUN_KEYS")
    out = {"schema_version": schema.SCHEMA_VERSION, "run_id": run_id, "method": method, **fields}
    out.setdefault("versions", provenance.package_versions())
    out.setdefault("git_revision", provenance.git_revision())
    out.setdefault("created", provenance.created())
    out.update(dict(meta or {}))
    return out


def _num(x: float) -> str:
    return f"{x:g}"


def run_name(method: str, *, lr: float, batch_size: int | None = None, drop_prob: float | None = None,
             seed: int | None = None) -> str:
    """A collected run's name (with ``seed``) or group label (without): ``sgd-lr0.1-bs32-seed0``."""
    name = f"{method}-lr{_num(lr)}"
    if batch_size is not None:
        name += f"-bs{batch_size}"
    if drop_prob is not None:
        name += f"-drop{_num(drop_prob)}"
    return name if seed is None else f"{name}-seed{seed}"


_LABEL = re.compile(r"^(?P<method>[a-z+_]+?)(?:-lr(?P<lr>[0-9.eE+-]+?))?(?:-bs(?P<bs>\d+))?"
                    r"(?:-drop(?P<drop>[0-9.eE+-]+))?$")


def parse_run_name(label: str) -> dict:
    """Method, lr, batch size and drop probability from a group label of :func:`run_name`
    (``sgd+dropout-lr0.1-bs32-drop0.1``); missing parts (or another label) are None."""
    m = _LABEL.match(str(label))
    if not m:
        return {"method": None, "lr": None, "batch_size": None, "drop_prob": None}
    return {"method": m["method"], "lr": float(m["lr"]) if m["lr"] else None,
            "batch_size": int(m["bs"]) if m["bs"] else None, "drop_prob": float(m["drop"]) if m["drop"] else None}
