"""Sweeps: expand a config into runs, each named from its own configuration, with its seeds.

Sweep expansion (:func:`expand_sweep`): the product of ``[train] method`` x ``lr`` x
``seed`` x ``batch_size`` (minibatch methods only) x ``drop_prob`` (dropout methods only).
Each run is named from its own configuration (:func:`varprinciple.run_json.run_name`), e.g.
``sgd-lr0.1-bs32-seed0`` or ``dropout-lr0.1-drop0.1-seed3``; the name is also its ``run_id``
and, without the seed, its ``group``. Its seeds are hashes of its own resolved configuration
(training seed: the ``[data]``, ``[model]`` and ``[train]`` sections; probe seed: all
sections), so adding a value to a sweep list changes no existing run, and results do not
depend on the order of runs or on the worker count.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import schema
from ..errors import InputError
from ..run_json import run_name
from .config import CollectConfig, Method

__all__ = ["RunSpec", "expand_sweep", "derive_seed", "canonical_json", "walk_batch"]


def canonical_json(obj: Any) -> str:
    """The canonical JSON text of ``obj`` (sorted keys, no spaces): what seeds and hashes hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from a hash of ``parts`` (stable across processes and platforms).

    Examples
    --------
    >>> derive_seed("probe", 3) == derive_seed("probe", 3) != derive_seed("probe", 4)
    True
    """
    h = hashlib.sha256(canonical_json(list(parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


#: [train] keys that only decide what is logged or saved; they do not enter the training seed.
#: The stop rule's keys are among them: its loss checks draw no random numbers, so a run
#: stopped by ``target_loss`` is an exact prefix of the same run without it.
_UNSEEDED_TRAIN_KEYS = ("checkpoints", "log_every", "target_loss", "target_check_every", "seed_scheme")
#: [train] keys added after log sets existed, at the value that reproduces the older behaviour:
#: at that value they enter no seed, so older runs keep their seeds (and resume).
_SEED_NEUTRAL_TRAIN = {"sampler": "epochs"}


def _seeded_train(train: Mapping[str, Any], unseeded: tuple[str, ...]) -> dict:
    """The [train] keys a seed hashes: all but ``unseeded`` and the seed-neutral defaults."""
    return {k: v for k, v in train.items()
            if k not in unseeded and not (k in _SEED_NEUTRAL_TRAIN and _SEED_NEUTRAL_TRAIN[k] == v)}


def walk_batch(t: Mapping[str, Any], p: Mapping[str, Any]) -> int:
    """The batch size whose SGD noise sets the random-walk control's default step: the run's
    [train] batch_size, or the [probe] batch_size for full-batch methods."""
    return t["batch_size"] or p["batch_size"]


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its name, resolved configuration (scalars only) and seeds."""

    run_id: str
    group: str
    method: str
    seed: int
    config: dict
    train_seed: int
    probe_seed: int
    config_hash: str
    #: seed_scheme "matched" only: the initial weights' and the data order's seeds
    init_seed: int | None = None
    order_seed: int | None = None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], config: dict) -> "RunSpec":
        """The spec of a collected run from its ``run.json`` (re-probes, profiles)."""
        return cls(meta["run_id"], meta.get("group", ""), meta["method"], meta.get("seed", 0), config,
                   meta.get("train_seed", 0), meta.get("probe_seed", 0), meta.get("config_hash", ""),
                   init_seed=meta.get("init_seed"), order_seed=meta.get("order_seed"))

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike, *, missing_hint: str = "") -> tuple["RunSpec", dict]:
        """The spec and run.json of a run collected by ``collect`` (one-line InputError if the
        directory has no readable run.json with a collect config; ``missing_hint`` is appended)."""
        run_dir = Path(run_dir)
        try:
            meta = json.loads((run_dir / schema.RUN_JSON).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{run_dir}: cannot read run.json ({exc})") from None
        cfg = meta.get("config") if isinstance(meta, dict) else None
        if not isinstance(cfg, dict) or "train" not in cfg:
            raise InputError(f"{run_dir}: run.json has no collect 'config'{missing_hint}")
        return cls.from_meta(meta, cfg), meta

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "group": self.group, "method": self.method, "seed": self.seed,
                "train_seed": self.train_seed, "probe_seed": self.probe_seed,
                "config_hash": self.config_hash, "init_seed": self.init_seed, "order_seed": self.order_seed}


def _probe_seed_part(c: dict) -> dict:
    """The configuration the probe seed hashes: all of it but the stop rule's keys and the
    ``[trajectory]`` section (which draws from its own streams), so adding them moves no seed."""
    part = {k: v for k, v in c.items() if k != "trajectory"}
    # per-layer blocks draw from their own stream after the whole-network probe's draws
    part["probe"] = {k: v for k, v in c["probe"].items() if k != "blocks"}
    part["train"] = _seeded_train(c["train"], ("target_loss", "target_check_every", "seed_scheme"))
    return part


def expand_sweep(cfg: CollectConfig) -> list[RunSpec]:
    """Expand the sweep lists of a config into runs, in a fixed order.

    Examples
    --------
    >>> from varprinciple.collect.config import validate_config
    >>> cfg = validate_config({"train": {"method": ["gd", "sgd"], "seed": [0, 1],
    ...                                  "batch_size": [16, 32]}, "probe": {"batch_size": 16}})
    >>> [s.run_id for s in expand_sweep(cfg)]  # doctest: +NORMALIZE_WHITESPACE
    ['gd-lr0.1-seed0', 'gd-lr0.1-seed1', 'sgd-lr0.1-bs16-seed0', 'sgd-lr0.1-bs16-seed1',
     'sgd-lr0.1-bs32-seed0', 'sgd-lr0.1-bs32-seed1']
    """
    base = cfg.to_dict()
    tr = base["train"]
    specs: list[RunSpec] = []
    seen = set()
    for method, lr in itertools.product(tr["method"], tr["lr"]):
        m = Method(method)
        bss = tr["batch_size"] if m.minibatch else [None]
        dps = tr["drop_prob"] if m.dropout else [None]
        for bs, dp, seed in itertools.product(bss, dps, tr["seed"]):
            c = json.loads(json.dumps(base))
            t = c["train"]
            t.update(method=m.value, lr=lr, batch_size=bs, drop_prob=dp, seed=seed)
            if t["steps"] is None and t["epochs"] is None:
                t["steps"] = 1000
            p = c["probe"]
            if p["batch_size"] is None:  # validation: [train] batch_size then has one value
                p["batch_size"] = tr["batch_size"][0]
            if p["drop_prob"] is None:
                p["drop_prob"] = dp if dp is not None else tr["drop_prob"][0]
            if p["dropout_layers"] is None:
                p["dropout_layers"] = c["model"]["dropout_layers"]
            group = run_name(m.value, lr=lr, batch_size=bs, drop_prob=dp)
            name = run_name(m.value, lr=lr, batch_size=bs, drop_prob=dp, seed=seed)
            if name in seen:  # pragma: no cover - lists are checked for duplicates
                continue
            seen.add(name)
            train_part = {k: c[k] for k in ("data", "model", "train")}
            # bookkeeping keys (what is logged or saved) do not enter the training seed
            train_part["train"] = _seeded_train(t, _UNSEEDED_TRAIN_KEYS)
            matched = t.get("seed_scheme") == "matched"
            specs.append(RunSpec(
                run_id=name, group=group, method=m.value, seed=int(seed), config=c,
                train_seed=derive_seed("train", train_part),
                probe_seed=derive_seed("probe", _probe_seed_part(c)),
                config_hash=hashlib.sha256(canonical_json(c).encode()).hexdigest()[:16],
                init_seed=derive_seed("init", c["data"], c["model"], int(seed)) if matched else None,
                order_seed=derive_seed("order", c["data"], int(seed)) if matched else None))
    return specs
