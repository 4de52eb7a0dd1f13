"""Runs and sweeps: expand a config, train, probe, write one schema-v1 run per configuration.

Sweep expansion (:func:`expand_sweep`): the product of ``[train] method`` x ``lr`` x
``seed`` x ``batch_size`` (minibatch methods only) x ``drop_prob`` (dropout methods only).
Each run is named from its own configuration, e.g. ``sgd-lr0.1-bs32-seed0`` or
``dropout-lr0.1-drop0.1-seed3``; the name is also its ``run_id`` and, without the seed,
its ``group``. Its seeds are hashes of its own resolved configuration (training seed: the
``[data]``, ``[model]`` and ``[train]`` sections; probe seed: all sections), so adding a
value to a sweep list changes no existing run, and results do not depend on the order of
runs or on the worker count.

Resume (:func:`collect`): each attempt at a run writes into its own hidden staging
directory ``LOGDIR/.<run_id>.<attempt>.partial`` (readers skip hidden directories), leased
by a heartbeat, and renames it to ``LOGDIR/<run_id>`` only when every file it lists is
verified (:mod:`varprinciple.collect.staging`). Re-running skips finished runs (same
configuration hash; a different one is an error), deletes staging directories that have no
live owner and unfinished run directories, and redoes those runs; a staging directory whose
owner may still be writing (e.g. a task of a sweep whose client was killed) is left to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import schema
from ..provenance import git_revision, package_versions
from ..run_json import build_run_json, run_name
from ..errors import ConfigError, InputError, VarPrincipleError
from .config import CollectConfig, LossName, Method
from .staging import PARTIAL_SUFFIX, Attempt, discard_unfinished, listed_files, reap_stages, run_is_complete, stage_dir

__all__ = ["RunSpec", "CollectResult", "expand_sweep", "collect", "run_one", "derive_seed",
           "package_versions", "git_revision", "PARTIAL_SUFFIX", "stage_dir"]

logger = logging.getLogger(__name__)


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from a hash of ``parts`` (stable across processes and platforms).

    Examples
    --------
    >>> derive_seed("probe", 3) == derive_seed("probe", 3) != derive_seed("probe", 4)
    True
    """
    h = hashlib.sha256(_canon(list(parts)).encode()).digest()
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


def _walk_batch(t: Mapping[str, Any], p: Mapping[str, Any]) -> int:
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
                config_hash=hashlib.sha256(_canon(c).encode()).hexdigest()[:16],
                init_seed=derive_seed("init", c["data"], c["model"], int(seed)) if matched else None,
                order_seed=derive_seed("order", c["data"], int(seed)) if matched else None))
    return specs


# ---------------------------------------------------------------------------- one run

_DATA_CACHE: dict[str, Any] = {}


def _load_data_cached(data: Mapping[str, Any], base_dir: str):
    from .data import load_data
    key = _canon([data, base_dir])
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_data(data, base_dir=base_dir)
    return _DATA_CACHE[key]


def _resolve_loss(loss: str, task: str) -> str:
    if loss == LossName.AUTO:
        return "cross_entropy" if task == "classification" else "mse"
    return loss


def _steps_of(t: Mapping[str, Any], n_train: int) -> int:
    if t["steps"] is not None:
        return int(t["steps"])
    per_epoch = n_train // t["batch_size"] if Method(t["method"]).minibatch else 1
    return int(t["epochs"]) * per_epoch


def _probe_steps(every: int, steps: int) -> list[int]:
    out = list(range(every, steps, every)) if every else []
    return out + [steps]


def _build(spec: RunSpec, base_dir: str, device: str):
    """Data, model and tensors of a run (also the pre-flight check of :func:`collect`)."""
    import torch

    from .models import build_model
    from .train import prepare_tensors
    c = spec.config
    ds = _load_data_cached(c["data"], base_dir)
    t, p, mdl = c["train"], c["probe"], c["model"]
    if t["batch_size"] is not None and t["batch_size"] >= ds.n_train:
        raise ConfigError(f"[train] batch_size: must be < the number of training samples "
                          f"({ds.n_train}); got {t['batch_size']}")
    if "sgd" in p["sources"] and p["batch_size"] >= ds.n_train:
        raise ConfigError(f"[probe] batch_size: must be < the number of training samples "
                          f"({ds.n_train}); got {p['batch_size']}")
    traj = c.get("trajectory") or {}
    if traj.get("window") and traj.get("dynamics") == "random_walk" and traj.get("walk_sd") is None:
        from .trajectory import check_walk_batch
        check_walk_batch(_walk_batch(t, p), ds.n_train)
    if ds.task == "regression" and t["loss"] == LossName.CROSS_ENTROPY:
        raise ConfigError(f"[train] loss: 'cross_entropy' needs class labels; the data are a "
                          f"regression task")
    loss = _resolve_loss(t["loss"], ds.task)
    dtype = torch.float64 if t["dtype"] == "float64" else torch.float32
    # seed_scheme "matched": initial weights from init_seed, then the data order and dropout
    # masks from order_seed (same for every method at one seed); else one stream from train_seed
    g = torch.Generator().manual_seed(spec.train_seed if spec.init_seed is None else spec.init_seed)
    # Dropout layers exist in every model (p = 0 when training has none) so that the
    # dropout probe source and checkpoints see the same architecture for every method.
    m = Method(t["method"])
    model_cfg = dict(mdl)
    hidden = len(mdl["widths"] if mdl["arch"] == "mlp" else mdl["channels"]) if mdl["arch"] != "linear" else 0
    train_layers = list(range(hidden)) if mdl["dropout_layers"] is None else list(mdl["dropout_layers"])
    probe_layers = list(range(hidden)) if p["dropout_layers"] is None else list(p["dropout_layers"])
    model_cfg["dropout_layers"] = sorted(set(train_layers) | set(probe_layers))
    model = build_model(model_cfg, input_shape=ds.input_shape, n_outputs=ds.n_outputs,
                        drop_prob=0.0 if hidden else None, generator=g, dtype=dtype)
    from torch import nn
    n_train_drop = 0
    for i in model_cfg["dropout_layers"]:
        mod = getattr(model, f"drop{i}", None)
        if isinstance(mod, nn.Dropout) and m.dropout and i in train_layers:
            mod.p = float(t["drop_prob"])
            n_train_drop += 1
    if m.dropout and not n_train_drop:
        raise ConfigError(f"[model] dropout_layers: method {m.value!r} needs at least one dropout "
                          f"layer in the model; got {mdl['dropout_layers']}")
    from .models import n_params
    if p["top_k"] > n_params(model):
        raise ConfigError(f"[probe] top_k: must be <= the number of parameters ({n_params(model)}); "
                          f"got {p['top_k']}")
    if (c.get("trajectory") or {}).get("params"):  # unknown names fail here, before any training
        from .trajectory import parameter_subset
        parameter_subset(model, c["trajectory"]["params"])
    if p.get("blocks") is not None:  # unknown block names fail here, before any training
        from .blocks import resolve_blocks
        named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
        try:
            resolve_blocks(p["blocks"], [n for n, _ in named], [q.numel() for _, q in named])
        except ConfigError as exc:
            raise ConfigError(f"[probe] blocks: {str(exc).removeprefix('`blocks`: ')}") from None
    model.to(device)
    if spec.order_seed is not None:
        g = torch.Generator().manual_seed(spec.order_seed)
    tensors = (prepare_tensors(ds.X_train, ds.y_train, loss=loss, n_outputs=ds.n_outputs, dtype=dtype,
                               device=device, task=ds.task),
               prepare_tensors(ds.X_test, ds.y_test, loss=loss, n_outputs=ds.n_outputs, dtype=dtype,
                               device=device, task=ds.task))
    return ds, loss, model, g, tensors, [f"drop{i}" for i in probe_layers]


def unprobed_dropout(model, probe_modules: list[str]) -> list[str]:
    """The model's ``nn.Dropout`` modules that drop in training (``p > 0``) but are not layers of
    the dropout source (``[probe] dropout_layers`` a subset of the trained dropout layers).

    The dropout source measures the mask noise of its layers only, so the pipeline switches these
    off for the probe (:func:`dropout_switched_off`) and records their names in run.json
    (``probe_dropout_disabled``); training keeps them.
    """
    from torch import nn
    keep = set(probe_modules)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Dropout) and m.p > 0 and n not in keep]


@contextlib.contextmanager
def dropout_switched_off(model, names: list[str]):
    """Set ``p = 0`` on the named ``nn.Dropout`` modules of ``model`` for the duration (restored after)."""
    mods = dict(model.named_modules())
    old = {n: mods[n].p for n in names}
    for n in names:
        mods[n].p = 0.0
    try:
        yield
    finally:
        for n, v in old.items():
            mods[n].p = v


def probe_settings(p: Mapping[str, Any], dropout_modules: list[str]):
    """The :class:`~varprinciple.collect.probe.ProbeSettings` of a resolved ``[probe]`` section.

    Examples
    --------
    >>> from varprinciple.collect.config import validate_config
    >>> spec = expand_sweep(validate_config({"probe": {"top_k": 5}}))[0]
    >>> s = probe_settings(spec.config["probe"], ["drop0", "drop1"])
    >>> s.top_k, s.batch_size, s.drop_prob, s.dropout_layers
    (5, 32, 0.1, ('drop0', 'drop1'))
    """
    from .probe import ProbeSettings
    return ProbeSettings(
        top_k=p["top_k"], n_samples=p["n_samples"], sources=tuple(p["sources"]),
        batch_size=p["batch_size"], n_random=p["n_random"], drop_prob=p["drop_prob"],
        dropout_layers=tuple(dropout_modules) if "dropout" in p["sources"] else None,
        isotropic_of=p["isotropic_of"], dtype=p["dtype"], eig_tol=p["eig_tol"],
        exact_variance=p["exact_variance"], hutchinson_probes=p["hutchinson_probes"],
        tr_hc_samples=p["tr_hc_samples"], store_vectors_max_params=p["store_vectors_max_params"],
        memory_budget_mb=p["memory_budget_mb"], dropout_samples=p.get("dropout_samples"),
        frozen_batchnorm=bool(p.get("frozen_batchnorm", False)),
        blocks=p.get("blocks") if isinstance(p.get("blocks"), (str, type(None))) else tuple(p["blocks"]))


def _save_state(model, path: Path) -> None:
    """Save a state_dict atomically into an existing directory (never recreated: staging)."""
    import torch
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)


def _concat(frames: list) -> pd.DataFrame | None:
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


def _with_probe_losses(probe_info: list[dict], curves: pd.DataFrame) -> list[int]:
    """Add each probe's full-batch training loss (its training-curve row) to ``probe_info``."""
    by_step = dict(zip(curves["step"].tolist(), curves["train_loss"].tolist()))
    for pi in probe_info:
        pi["train_loss"] = by_step.get(pi["step"])
    return [pi["step"] for pi in probe_info]


def _trajectory(model, loss, X, y, g, t, traj, start_step: int, progress: bool, tables: dict, *,
                profile_seed: int, walk_batch: int | None = None):
    """Random loss profiles around the final weights, then the ``[trajectory]`` window after
    training (docs/flatness.md); their tables into ``tables``."""
    if not traj:
        return None
    if traj.get("random_profiles"):
        import torch

        from .profiles import random_profiles
        prof = random_profiles(model, loss, X, y, n_directions=traj["random_profiles"],
                               points=traj["profile_points"], radius=traj["profile_radius"],
                               generator=torch.Generator().manual_seed(profile_seed))
        tables["loss_profiles.parquet"] = prof
    if not traj["window"]:
        return None
    from .trajectory import collect_trajectory, matched_walk_sd
    dynamics, walk_sd = traj.get("dynamics", "train"), traj.get("walk_sd")
    if dynamics == "random_walk" and walk_sd is None:
        walk_sd = matched_walk_sd(model, loss, X, y, lr=t["lr"], batch_size=walk_batch)
        logger.info("random-walk control: step sd %.3g (SGD noise of one update)", walk_sd)
    res = collect_trajectory(model, loss, X, y, method=t["method"], lr=t["lr"], batch_size=t["batch_size"],
                             generator=g, window=traj["window"], every=traj["every"], params=traj["params"],
                             n_components=traj["n_components"], profile_points=traj["profile_points"],
                             max_memory_mb=traj["max_memory_mb"], momentum=t["momentum"],
                             weight_decay=t["weight_decay"], start_step=start_step, progress=progress,
                             sampler=t.get("sampler", "epochs"), dynamics=dynamics, walk_sd=walk_sd)
    for name, frame in res.tables().items():
        tables[name] = _concat([tables.get(name), frame])
    return {"window": traj["window"], "every": traj["every"], "params": traj["params"],
            "dynamics": dynamics, **({"walk_sd": walk_sd} if dynamics == "random_walk" else {}),
            "start_step": start_step, "n_components": traj["n_components"],
            "n_snapshots_second_half": int(res.pcs["n_snapshots"].iloc[0])}


def run_one(spec: RunSpec, out: str | Path, *, base_dir: str = ".", device: str = "cpu",
            progress: bool = False, extra_meta: Mapping[str, Any] | None = None,
            attempt: str | None = None) -> Path:
    """Train and probe one run; write it to ``out/<run_id>`` (via a hidden staging directory).

    The attempt (token ``attempt``, hex; default a random one) writes into its own leased
    staging directory and publishes it only if no other attempt finished first; a failed
    attempt deletes its directory (:mod:`varprinciple.collect.staging`). Returns the run
    directory.
    """
    with Attempt(out, spec.run_id, attempt) as att:
        return _run_attempt(spec, att, base_dir=base_dir, device=device, progress=progress,
                            extra_meta=extra_meta)


def _run_attempt(spec: RunSpec, att: Attempt, *, base_dir: str, device: str, progress: bool,
                 extra_meta: Mapping[str, Any] | None) -> Path:
    import torch

    from ._model import state_fingerprint
    from .models import describe_model, n_params
    from .probe import probe
    from .train import TRAINING_FILE, train

    t_start = time.perf_counter()
    stage, final = att.stage, att.final
    c = spec.config
    t, p = c["train"], c["probe"]
    if t["checkpoints"]:
        att.mkdir("checkpoints")
    ds, loss, model, g, ((X, y, lab), (Xt, yt, labt)), drop_names = _build(spec, base_dir, device)
    steps = _steps_of(t, ds.n_train)
    probe_at = ([0] if p.get("at_start") else []) + _probe_steps(p["every"], steps)
    settings = probe_settings(p, drop_names if "dropout" in p["sources"] else [])
    # trained dropout outside `[probe] dropout_layers`: off for the probe (recorded in run.json)
    drop_off = unprobed_dropout(model, drop_names) if "dropout" in p["sources"] else []
    eig, noise, exact, flat, probe_info = [], [], [], [], []
    state = {"v0": None, "probe_s": 0.0}
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []

    def on_probe(step: int, mdl) -> None:
        t_probe = time.perf_counter()
        state.setdefault("fingerprints", {})[str(step)] = state_fingerprint(mdl)
        if t["checkpoints"]:
            _save_state(mdl, stage / "checkpoints" / f"step_{step}.pt")
        pseed = derive_seed(spec.probe_seed, step)
        gen = torch.Generator().manual_seed(pseed)  # CPU stream: the probes draw on CPU, then move
        with torch.random.fork_rng(devices=devices), dropout_switched_off(mdl, drop_off):
            torch.manual_seed(derive_seed(pseed, "global"))
            res = probe(mdl, loss, X, y, settings=settings, step=step, generator=gen, v0=state["v0"],
                        progress=progress)
        state["v0"] = res.top_vector
        eig.append(res.eigen)
        noise.append(res.noise)
        exact.append(res.exact_variance)
        flat.append(res.flatness)
        used = res.info["noise_extra"].get("dropout", {}).get("sites")
        if used is not None:
            state["dropout_sites"] = list(used)
        if res.info.get("dropout_sites") is not None:
            state["dropout_sites_detected"] = res.info["dropout_sites"]
        probe_info.append({"step": step, "n_hvp": int(res.n_hvp),
                           "timings": {k: float(v) for k, v in dict(res.timings).items()},
                           **({"plan": res.info["plan"]} if res.info.get("plan") is not None else {}),
                           **({"blocks": res.info["blocks"]} if "blocks" in res.info else {})})
        state["probe_s"] += time.perf_counter() - t_probe
        logger.info("%s: probed step %d (%d HVPs)", spec.run_id, step, res.n_hvp)

    result = train(model, loss, X, y, method=t["method"], lr=t["lr"], steps=steps,
                   batch_size=t["batch_size"], generator=g, labels=lab,
                   X_test=Xt if ds.n_test else None, y_test=yt, labels_test=labt,
                   momentum=t["momentum"], weight_decay=t["weight_decay"], log_every=t["log_every"],
                   probe_steps=probe_at, on_probe=on_probe, progress=progress,
                   target_loss=t["target_loss"], target_check_every=t["target_check_every"],
                   sampler=t.get("sampler", "epochs"))
    _save_state(model, stage / "model.pt")
    last = result.curves.iloc[-1]
    tables = {TRAINING_FILE: result.curves}
    probe_at = _with_probe_losses(probe_info, result.curves)  # the steps actually probed
    traj = _trajectory(model, loss, X, y, g, t, c["trajectory"], result.steps, progress, tables,
                       profile_seed=derive_seed(spec.probe_seed, "profiles"), walk_batch=_walk_batch(t, p))
    for name, frames in (("exact_variance.parquet", exact), ("flatness.parquet", flat)):
        f = _concat(frames)
        if f is not None:
            tables[name] = f
    meta = build_run_json(spec.run_id, spec.method, {
        "group": spec.group,
        "seed": spec.seed,
        "train_seed": spec.train_seed,
        "probe_seed": spec.probe_seed,
        "seed_scheme": t.get("seed_scheme", "per_run"),
        **({"init_seed": spec.init_seed, "order_seed": spec.order_seed} if spec.init_seed is not None else {}),
        "dataset": ds.name,
        "model": describe_model(model),
        "arch": c["model"]["arch"],
        "loss": loss,
        "n_params": n_params(model),
        "lr": t["lr"],
        "batch_size": t["batch_size"],
        "drop_prob": t["drop_prob"],
        "keep_prob": None if t["drop_prob"] is None else 1.0 - t["drop_prob"],
        "steps": steps,
        "epochs": t["epochs"],
        "momentum": t["momentum"],
        "weight_decay": t["weight_decay"],
        "sampler": t.get("sampler", "epochs"),
        "hyperparameters": {"lr": t["lr"], "batch_size": t["batch_size"], "drop_prob": t["drop_prob"],
                            "steps": steps, "momentum": t["momentum"],
                            "weight_decay": t["weight_decay"],
                            # a non-default sampler is a different training procedure (its own group)
                            **({"sampler": t["sampler"]} if t.get("sampler", "epochs") != "epochs" else {})},
        "probe_batch_size": p["batch_size"],
        "probe_drop_prob": p["drop_prob"] if "dropout" in p["sources"] else None,
        # the sites the dropout probe actually used (not just the configured names)
        "probe_dropout_layers": state.get("dropout_sites", drop_names) if "dropout" in p["sources"] else None,
        # trained dropout layers outside `[probe] dropout_layers`, switched off for the probe
        "probe_dropout_disabled": drop_off if "dropout" in p["sources"] else None,
        # every random op the model applies in train mode, as detected by the probe (API runs alike)
        "dropout_sites": state.get("dropout_sites_detected"),
        # hash of the probed network per step: re-probes of its checkpoints count once in `test`
        "checkpoint_fingerprint": state.get("fingerprints", {}),
        "probe_sources": list(p["sources"]),
        "probe_steps": probe_at,
        "probes": probe_info,
        "target": result.target_info(),
        "trained_steps": result.steps,
        "trajectory": traj,
        "data_split": ds.split_info(),
        "final": {"train_loss": float(last["train_loss"]), "train_accuracy": float(last["train_accuracy"]),
                  "test_loss": float(last["test_loss"]), "test_accuracy": float(last["test_accuracy"])},
        "checkpoints": [f"checkpoints/step_{s}.pt" for s in probe_at] if t["checkpoints"] else [],
        "model_file": "model.pt",
        "config": c,
        "config_hash": spec.config_hash,
        "config_source": (extra_meta or {}).get("config_source"),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "wall_s": {"train": result.wall_s - state["probe_s"], "probes": state["probe_s"],
                   "total": time.perf_counter() - t_start},
    })
    from ..io import write_run
    att.check()  # still our own directory (write_run would recreate a deleted one)
    write_run(stage, meta, eigen=_concat(eig), noise=_concat(noise), tables=tables)
    if att.publish(listed_files(meta, [schema.EIGEN_FILE, schema.NOISE_FILE, *tables])):
        logger.info("%s: done in %.1f s", spec.run_id, meta["wall_s"]["total"])
    else:
        logger.info("%s: done in %.1f s; another attempt had published it first", spec.run_id,
                    meta["wall_s"]["total"])
    return final


# ------------------------------------------------------------------------------ sweep


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
                if _canon(old_sec[key]) != _canon(value):
                    return False
            elif key not in CONFIG_KEYS.get(sec, {}) or _canon(CONFIG_KEYS[sec][key].default) != _canon(value):
                return False
    return True


def _report_live(live: list[Path], when: str) -> None:
    if live:
        logger.info("%d staging director%s of attempts still running (%s the sweep; each deletes its own "
                    "when it ends, or a later run once its lease expires): %s", len(live),
                    "y" if len(live) == 1 else "ies", when, ", ".join(p.name for p in live))


def _worker_init(threads: int, level: int) -> None:
    import torch
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _worker_run(spec: RunSpec, out: str, base_dir: str, device: str, extra: dict) -> str:
    try:
        return str(run_one(spec, out, base_dir=base_dir, device=device, progress=False, extra_meta=extra))
    except VarPrincipleError as exc:  # subclasses with custom __init__ do not unpickle; keep the message
        raise VarPrincipleError(str(exc)) from None


def _device_iv(device: Any) -> str:
    """Check ``--device`` before any pre-flight or output: a torch device string that is
    available here (cpu, cuda[:N], mps); returns its canonical form."""
    import torch
    d = torch.device(_device_syntax_iv(device))
    if d.type == "cpu":
        return str(d)
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not n:
            raise ConfigError(f"--device: {device!r} is not available (no CUDA device; use cpu)")
        if d.index is not None and d.index >= n:
            raise ConfigError(f"--device: {device!r} is not available ({n} CUDA device"
                              f"{'s' if n != 1 else ''}: cuda:0..cuda:{n - 1})")
        return str(d)
    if d.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device: {device!r} is not available (no MPS device; use cpu)")
    return str(d)


def _device_syntax_iv(device: Any) -> str:
    """A torch device string, parsed but not looked for on this machine (workers check it)."""
    import torch
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"--device: not a torch device (cpu, cuda, cuda:N, mps); got {device!r}") from None
    if d.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device: must be cpu, cuda, cuda:N or mps; got {device!r}")
    return str(d)


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
    from .executors import Executor, executor_iv
    executor = executor_iv(executor, workers=workers, scheduler=scheduler, scheduler_file=scheduler_file)
    # on a cluster the device must exist on the workers (checked there), not here
    device = _device_iv(device) if executor is Executor.LOCAL else _device_syntax_iv(device)
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; expected a directory")
    specs = expand_sweep(cfg)
    if progress is None:
        progress = sys.stderr.isatty()
    # pre-flight: data and model of every distinct run shape, before any training
    checked = set()
    for s in specs:
        key = _canon([s.config["data"], s.config["model"], s.config["train"]["batch_size"],
                      s.config["probe"]["batch_size"], s.config["train"]["method"]])
        if key not in checked:
            _, _, _, _, _, names = _build(s, cfg.base_dir, "cpu")
            try:
                probe_settings(s.config["probe"], names if "dropout" in s.config["probe"]["sources"] else [])
            except ConfigError as exc:
                raise ConfigError(f"[probe] {str(exc).replace('`', '')}") from None
            checked.add(key)
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
        from .executors import run_dask
        failures = run_dask(todo, out, base_dir=cfg.base_dir, threads=threads, device=device, extra=extra,
                            workers=workers, scheduler=scheduler, scheduler_file=scheduler_file,
                            progress=progress)
    elif workers == 1 or len(todo) <= 1:
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
                    run_one(s, out, base_dir=cfg.base_dir, device=device, progress=progress,
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
            futs = {pool.submit(_worker_run, s, str(out), cfg.base_dir, device, extra): s for s in todo}
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
