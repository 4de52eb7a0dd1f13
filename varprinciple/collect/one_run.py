"""One run: train, probe at the scheduled steps (:class:`~varprinciple.collect.probe_runner.ProbeSeries`),
run the ``[trajectory]`` window, and write the run (run.json by
:func:`varprinciple.run_json.build_run_json`) through a leased staging directory
(:mod:`varprinciple.collect.staging`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .. import schema
from ..io import atomic_write
from ..run_json import build_run_json
from .assembly import build_run, probe_schedule, probe_settings, steps_of, unprobed_dropout
from .probe_runner import ProbeSeries
from .staging import Attempt, listed_files
from .sweep import RunSpec, derive_seed, walk_batch

__all__ = ["run_one"]

logger = logging.getLogger(__name__)


def _save_state(model, path: Path) -> None:
    """Save a state_dict atomically into an existing directory (never recreated: staging)."""
    import torch
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


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
        tables[schema.LOSS_PROFILES.file] = prof
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
                             sampler=t.get("sampler", "epochs"), dynamics=dynamics, walk_sd=walk_sd,
                             # the [trajectory] window keys, resolved with their defaults by the config
                             **{k: traj[k] for k in ("settle_steps", "plateau_tol", "plateau_steps",
                                                     "max_settle_steps", "window_n_eff", "max_window")})
    for name, frame in res.tables().items():
        tables[name] = _concat([tables.get(name), frame])
    return {"window": traj["window"], "every": traj["every"], "params": traj["params"],
            "dynamics": dynamics, **({"walk_sd": walk_sd} if dynamics == "random_walk" else {}),
            "start_step": start_step, "n_components": traj["n_components"],
            "n_snapshots_second_half": int(res.pcs["n_snapshots"].iloc[0]), **res.window}


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

    from .models import describe_model, n_params
    from .train import TRAINING_FILE, train

    t_start = time.perf_counter()
    stage, final = att.stage, att.final
    c = spec.config
    t, p = c["train"], c["probe"]
    if t["checkpoints"]:
        att.mkdir("checkpoints")
    ds, loss, model, g, ((X, y, lab), (Xt, yt, labt)), drop_names = build_run(spec, base_dir, device)
    steps = steps_of(t, ds.n_train)
    probe_at = ([0] if p.get("at_start") else []) + probe_schedule(p["every"], steps)
    settings = probe_settings(p, drop_names if "dropout" in p["sources"] else [])
    # trained dropout outside `[probe] dropout_layers`: off for the probe (recorded in run.json)
    drop_off = unprobed_dropout(model, drop_names) if "dropout" in p["sources"] else []
    series = ProbeSeries(loss, X, y, settings=settings, seed=spec.probe_seed, progress=progress,
                         switched_off=drop_off)
    state = {"probe_s": 0.0}

    def on_probe(step: int, mdl) -> None:
        t_probe = time.perf_counter()
        if t["checkpoints"]:
            _save_state(mdl, stage / "checkpoints" / f"step_{step}.pt")
        res = series.probe(mdl, step)
        used = res.info["noise_extra"].get("dropout", {}).get("sites")
        if used is not None:
            state["dropout_sites"] = list(used)
        if res.info.get("dropout_sites") is not None:
            state["dropout_sites_detected"] = res.info["dropout_sites"]
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
    probe_at = _with_probe_losses(series.info, result.curves)  # the steps actually probed
    traj = _trajectory(model, loss, X, y, g, t, c["trajectory"], result.steps, progress, tables,
                       profile_seed=derive_seed(spec.probe_seed, "profiles"), walk_batch=walk_batch(t, p))
    for name, frames in ((schema.EXACT_VARIANCE.file, [r.exact_variance for r in series.results]),
                         (schema.FLATNESS.file, [r.flatness for r in series.results]),
                         (schema.DIAGONAL.file, [r.diagonal for r in series.results])):
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
        "checkpoint_fingerprint": series.fingerprints,
        "probe_sources": list(p["sources"]),
        "probe_steps": probe_at,
        "probes": series.info,
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
    write_run(stage, meta, eigen=_concat([r.eigen for r in series.results]),
              noise=_concat([r.noise for r in series.results]), tables=tables)
    if att.publish(listed_files(meta, [schema.EIGEN_FILE, schema.NOISE_FILE, *tables])):
        logger.info("%s: done in %.1f s", spec.run_id, meta["wall_s"]["total"])
    else:
        logger.info("%s: done in %.1f s; another attempt had published it first", spec.run_id,
                    meta["wall_s"]["total"])
    return final
