"""One run's assembly and pre-flight: its data, loss, model and tensors from its resolved
configuration, the probe settings of its ``[probe]`` section, and the checks made before any
training (batch sizes against the data, dropout layers, ``top_k`` against the parameters,
block and parameter names, the torch device).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .config import LossName, Method, loss_task_iv
from .probe_settings import batch_fits_iv, fits_model_iv
from .sweep import RunSpec, canonical_json, walk_batch

__all__ = ["build_run", "preflight", "probe_settings", "unprobed_dropout", "dropout_switched_off",
           "steps_of", "probe_schedule", "device_iv", "device_syntax_iv"]


_DATA_CACHE: dict[str, Any] = {}


def _load_data_cached(data: Mapping[str, Any], base_dir: str):
    from .data import load_data
    key = canonical_json([data, base_dir])
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_data(data, base_dir=base_dir)
    return _DATA_CACHE[key]


def _resolve_loss(loss: str, task: str) -> str:
    if loss == LossName.AUTO:
        return "cross_entropy" if task == "classification" else "mse"
    return loss


def steps_of(t: Mapping[str, Any], n_train: int) -> int:
    if t["steps"] is not None:
        return int(t["steps"])
    per_epoch = n_train // t["batch_size"] if Method(t["method"]).minibatch else 1
    return int(t["epochs"]) * per_epoch


def probe_schedule(every: int, steps: int) -> list[int]:
    out = list(range(every, steps, every)) if every else []
    return out + [steps]


def build_run(spec: RunSpec, base_dir: str, device: str):
    """Data, model and tensors of a run (also the pre-flight check of :func:`preflight`):
    ``(dataset, loss name, model, generator, ((X, y, labels), (X_test, y_test, labels_test)),
    dropout module names of the probe)``."""
    import torch

    from .models import build_model
    from .train import prepare_tensors
    c = spec.config
    ds = _load_data_cached(c["data"], base_dir)
    t, p, mdl = c["train"], c["probe"], c["model"]
    if t["batch_size"] is not None:
        batch_fits_iv(t["batch_size"], ds.n_train, key="[train] batch_size")
    if "sgd" in p["sources"]:  # before any training (top_k is checked once the model exists)
        batch_fits_iv(p["batch_size"], ds.n_train, key="[probe] batch_size")
    traj = c.get("trajectory") or {}
    if traj.get("window") and traj.get("dynamics") == "random_walk" and traj.get("walk_sd") is None:
        from .trajectory import check_walk_batch
        check_walk_batch(walk_batch(t, p), ds.n_train)
    loss_task_iv(t["loss"], ds.task)  # file data: the task is known once loaded
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
    # the built model's fact (the config refuses what it can see: an arch without hidden layers,
    # an empty layer list); a resolved configuration that bypassed validation stops here
    if m.dropout and not n_train_drop:
        raise ConfigError(f"[model] dropout_layers: method {m.value!r} needs at least one dropout "
                          f"layer in the model; got {mdl['dropout_layers']}")
    from .models import n_params
    fits_model_iv(sources=p["sources"], batch_size=p["batch_size"], top_k=p["top_k"], n_train=ds.n_train,
                  n_params=n_params(model), diag_params=p.get("diag_params", 0), section="[probe]")
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
    >>> from varprinciple.collect.sweep import expand_sweep
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
        blocks=p.get("blocks") if isinstance(p.get("blocks"), (str, type(None))) else tuple(p["blocks"]),
        diag_params=int(p.get("diag_params", 0)))


def preflight(specs: list[RunSpec], base_dir: str) -> None:
    """Build the data and model of every distinct run shape of ``specs`` (on CPU) and check
    its probe settings, before any training: a one-line ConfigError names what does not fit."""
    checked = set()
    for s in specs:
        key = canonical_json([s.config["data"], s.config["model"], s.config["train"]["batch_size"],
                              s.config["probe"]["batch_size"], s.config["train"]["method"]])
        if key not in checked:
            _, _, _, _, _, names = build_run(s, base_dir, "cpu")
            try:
                probe_settings(s.config["probe"], names if "dropout" in s.config["probe"]["sources"] else [])
            except ConfigError as exc:
                raise ConfigError(f"[probe] {str(exc).replace('`', '')}") from None
            checked.add(key)


def device_iv(device: Any) -> str:
    """Check ``--device`` before any pre-flight or output: a torch device string that is
    available here (cpu, cuda[:N], mps); returns its canonical form."""
    import torch
    d = torch.device(device_syntax_iv(device))
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


def device_syntax_iv(device: Any) -> str:
    """A torch device string, parsed but not looked for on this machine (workers check it)."""
    import torch
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"--device: not a torch device (cpu, cuda, cuda:N, mps); got {device!r}") from None
    if d.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device: must be cpu, cuda, cuda:N or mps; got {device!r}")
    return str(d)
