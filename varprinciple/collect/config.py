"""The collection config: a TOML file validated before any training starts.

A config has five sections, ``[data]``, ``[model]``, ``[train]``, ``[probe]`` and
``[trajectory]`` (weight-trajectory logging, off by default); every key,
its type, default and range is declared once in :data:`CONFIG_KEYS` (``docs/collection.md``
lists them). Keys marked *sweep* accept a list; lists expand into a sweep, one run each
(:func:`varprinciple.collect.run.expand_sweep`).

Validation reports the first problem as one line naming the key::

    [train] lr: must be > 0; got -1

An unknown key or section is rejected with the closest valid name suggested (difflib).
This module imports no torch.
"""

from __future__ import annotations

import copy
import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .choices import IMAGE_DATA, REGRESSION_DATA, Activation, Arch, DatasetName, Function1D, LossName, Method
from .config_key import ConfigKey
from .probe_settings import PROBE_KEYS, dropout_samples_problem, isotropic_reference_sampled, tr_hc_in_range

__all__ = [
    "mnist1d_samples_iv",
    "loss_task_iv",
    "Method",
    "DatasetName",
    "Arch",
    "Activation",
    "LossName",
    "ConfigKey",
    "CONFIG_KEYS",
    "SWEEP_KEYS",
    "CollectConfig",
    "load_config",
    "validate_config",
    "default_study_path",
    "config_reference",
]


def _c(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(e.value for e in enum)


#: Every config key by section. ``docs/collection.md`` is generated from this table.
CONFIG_KEYS: dict[str, dict[str, ConfigKey]] = {
    "data": {
        "name": ConfigKey("str", "digits", "data source", choices=_c(DatasetName)),
        "path": ConfigKey("str", None, "file (npz) or directory (idx); relative paths are "
                          "relative to the config file"),
        "n_train": ConfigKey("int", None, "train on the first n samples of the training split "
                             "(default: all)", lo=2),
        "n_test": ConfigKey("int", None, "keep the first n samples of the test split (default: all)",
                            lo=0),
        "test_fraction": ConfigKey("float", 0.2, "fraction held out as the test split (sources "
                                   "without their own split)", lo=0, hi=1, hi_open=True),
        "split_seed": ConfigKey("int", 0, "seed of the train/test permutation and of generated "
                                "data (shared by all runs)", lo=0),
        "standardize": ConfigKey("bool", True, "z-score each input feature with training-split "
                                 "statistics"),
        "n_samples": ConfigKey("int", None, "samples generated (mnist1d: 5000, teacher_student: "
                               "1250, function_1d: 250)", lo=2),
        "n_features": ConfigKey("int", 10, "teacher_student: input dimension", lo=1),
        "n_outputs": ConfigKey("int", 1, "teacher_student: output dimension", lo=1),
        "teacher_width": ConfigKey("int", 0, "teacher_student: hidden width of the tanh teacher "
                                   "(0 = linear teacher)", lo=0),
        "noise": ConfigKey("float", 0.1, "teacher_student, function_1d: std of Gaussian label noise",
                           lo=0),
        "function": ConfigKey("str", "sin", "function_1d: target, sin(pi x), |x| or x^3 on [-1, 1]",
                              choices=_c(Function1D)),
    },
    "model": {
        "arch": ConfigKey("str", "mlp", "architecture", choices=_c(Arch)),
        "widths": ConfigKey("int_list", [50, 50], "mlp: hidden-layer widths", lo=1),
        "channels": ConfigKey("int_list", [8, 16], "cnn: channels of each conv block "
                              "(3x3 conv, activation, 2x2 average pool)", lo=1),
        "activation": ConfigKey("str", "relu", "hidden activation", choices=_c(Activation)),
        "bias": ConfigKey("bool", True, "biases in linear/conv layers"),
        "dropout_layers": ConfigKey("int_list", None, "hidden layers (mlp) or conv blocks (cnn), "
                                    "0-based, followed by dropout in dropout runs (default: all)",
                                    lo=0, unique=True),
    },
    "train": {
        "method": ConfigKey("str", "sgd", "training method", choices=_c(Method), sweep=True),
        "lr": ConfigKey("float", 0.1, "learning rate", lo=0, lo_open=True, sweep=True),
        "batch_size": ConfigKey("int", 32, "minibatch size B of sgd methods (also the default "
                                "SGD-probe batch size)", lo=1, sweep=True),
        "drop_prob": ConfigKey("float", 0.1, "DROP probability of dropout methods (PyTorch's "
                               "nn.Dropout p; keep probability = 1 - drop_prob)", lo=0, hi=1,
                               lo_open=True, hi_open=True, sweep=True),
        "seed": ConfigKey("int", 0, "seed; each run's own seeds are derived from it and the "
                          "run's configuration", lo=0, sweep=True),
        "steps": ConfigKey("int", None, "parameter updates (default 1000 unless epochs is set)",
                           lo=0),
        "epochs": ConfigKey("int", None, "epochs instead of steps (an sgd epoch is "
                            "floor(n/B) steps; a gd epoch is one step)", lo=0),
        "momentum": ConfigKey("float", 0.0, "heavy-ball momentum", lo=0, hi=1, hi_open=True),
        "weight_decay": ConfigKey("float", 0.0, "L2 weight decay", lo=0),
        "loss": ConfigKey("str", "auto", "loss", choices=_c(LossName)),
        "log_every": ConfigKey("int", 50, "training-curve interval in steps", lo=1),
        "dtype": ConfigKey("str", "float32", "training dtype", choices=("float32", "float64")),
        "checkpoints": ConfigKey("bool", True, "save checkpoints/step_<n>.pt at every probe step"),
        "target_loss": ConfigKey("float", None, "matched-loss stop rule: stop when the full-batch "
                                 "training loss (dropout off) first reaches this value; steps/epochs "
                                 "become the budget, runs that never reach it are reported "
                                 "(docs/flatness.md)", lo=0),
        "target_check_every": ConfigKey("int", 10, "steps between the stop rule's loss checks",
                                        lo=1),
        "seed_scheme": ConfigKey("str", "per_run", "how a run's seed becomes its random streams: "
                                 "'per_run' hashes the whole resolved configuration (every run its own "
                                 "initialisation); 'matched' draws the initial weights from [data] + "
                                 "[model] + seed and the data order and dropout masks from [data] + seed, "
                                 "so runs of different methods with one seed start from the same "
                                 "weights and are compared paired (docs/collection.md)",
                                 choices=("per_run", "matched")),
        "sampler": ConfigKey("str", "epochs", "minibatch draws of sgd methods: 'epochs' (random "
                             "reshuffling: a fresh permutation per epoch, batches without overlap) or "
                             "'independent' (every step a new uniform B-subset, independent across "
                             "steps: the SGD model of the theory; docs/flatness.md)",
                             choices=("epochs", "independent")),
    },
    "probe": PROBE_KEYS,  # declared beside ProbeSettings, their one owner
    "trajectory": {
        "window": ConfigKey("int", 0, "steps trained after training stops, with weight snapshots "
                            "(0: off; 2000 recommended; docs/flatness.md)", lo=0),
        "every": ConfigKey("int", 10, "steps between weight snapshots", lo=1),
        "params": ConfigKey("str_list", None, "parameter subset by named_parameters() name, e.g. "
                            "[\"fc1.weight\"], the hidden-to-hidden matrix of a two-hidden-layer "
                            "mlp (default: all parameters)", unique=True),
        "n_components": ConfigKey("int", 20, "principal components of the first half measured "
                                  "on the second half", lo=2),
        "profile_points": ConfigKey("int", 21, "loss-profile grid points along each PC (odd: the "
                                    "grid includes t = 0)", lo=3),
        "max_memory_mb": ConfigKey("int", 1024, "snapshots kept in memory up to this size; "
                                   "above it an incremental PCA", lo=1),
        "random_profiles": ConfigKey("int", 0, "filter-normalised random directions profiled around "
                                     "the final weights (loss_profiles.parquet; 0: none)", lo=0),
        "profile_radius": ConfigKey("float", 1.0, "random profiles span t in [-radius, radius] "
                                    "(filter-normalised units)", lo=0, lo_open=True),
        "dynamics": ConfigKey("str", "train", "what moves the weights in the window: 'train' (the run's "
                              "own method) or 'random_walk' (the control: isotropic Gaussian steps, no "
                              "gradient; docs/flatness.md)", choices=("train", "random_walk")),
        "settle_steps": ConfigKey("int", 0, "steps trained (the run's own method) after training stops "
                                  "and before the window, so that it starts at stationarity, e.g. a fixed "
                                  "number after the target loss (docs/flatness.md)", lo=0),
        "plateau_tol": ConfigKey("float", None, "then train on in blocks of plateau_steps until the "
                                 "training loss changed by less than this fraction over the last block "
                                 "(e.g. 0.02; default: off; docs/flatness.md)", lo=0, lo_open=True),
        "plateau_steps": ConfigKey("int", 500, "block length M of the plateau rule (steps)", lo=1),
        "max_settle_steps": ConfigKey("int", 20000, "most steps trained before the window by settle_steps "
                                      "and the plateau rule together (a window that starts unlevelled is "
                                      "logged and recorded in run.json)", lo=0),
        "window_n_eff": ConfigKey("float", None, "choose the window from the measured relaxation time: "
                                  "when the smallest n_eff over the non-drift PCs is below this (e.g. 20), "
                                  "a longer window follows (the short one counts as settling; default: "
                                  "off; docs/flatness.md)", lo=0, lo_open=True),
        "max_window": ConfigKey("int", 200000, "longest window window_n_eff may choose (steps)", lo=1),
        "walk_sd": ConfigKey("float", None, "random_walk: per-coordinate step sd (default: the SGD noise "
                             "of one update, lr * sqrt(Tr(C_B) / D) at the window's start, B the [train] "
                             "batch_size or, for full-batch methods, the [probe] batch_size)", lo=0,
                             lo_open=True),
    },
}

#: Keys that accept a list (expanded into a sweep), as (section, key).
SWEEP_KEYS: tuple[tuple[str, str], ...] = tuple(
    (s, k) for s, keys in CONFIG_KEYS.items() for k, spec in keys.items() if spec.sweep)



@dataclass(frozen=True)
class CollectConfig:
    """A validated collection config with every default filled in.

    ``sections`` maps section -> key -> value; sweep keys hold a list of values (length
    one when the config gave a scalar). ``base_dir`` resolves relative data paths.
    """

    sections: dict[str, dict[str, Any]]
    source: str | None = None
    base_dir: str = "."

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.sections[section]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """A deep copy of the sections (TOML-compatible)."""
        return copy.deepcopy(self.sections)


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(options))}"


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


def _check_scalar(where: str, spec: ConfigKey, v: Any) -> Any:
    kind = spec.kind.removesuffix("_list")
    given = v
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: must be an integer; got {_fmt(v)}")
    elif kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: must be a number; got {_fmt(v)}")
        v = float(v)
        if not math.isfinite(v):
            raise ConfigError(f"{where}: must be finite; got {v}")
    elif kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: must be true or false; got {_fmt(v)}")
    elif kind == "str":
        if not isinstance(v, str):
            raise ConfigError(f"{where}: must be a string; got {_fmt(v)}")
    choices = spec.allowed()
    if choices is not None and v not in choices:
        close = difflib.get_close_matches(v, list(choices), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: must be one of {', '.join(map(repr, choices))}; got {_fmt(v)}{hint}")
    if kind in ("int", "float"):
        if spec.lo is not None and (v <= spec.lo if spec.lo_open else v < spec.lo):
            raise ConfigError(f"{where}: must be {'>' if spec.lo_open else '>='} {_fmt_num(spec.lo)}; "
                              f"got {_fmt(given)}")
        if spec.hi is not None and (v >= spec.hi if spec.hi_open else v > spec.hi):
            raise ConfigError(f"{where}: must be {'<' if spec.hi_open else '<='} {_fmt_num(spec.hi)}; "
                              f"got {_fmt(given)}")
    return v


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _check_value(section: str, key: str, spec: ConfigKey, v: Any) -> Any:
    where = f"[{section}] {key}"
    if spec.kind.endswith("_list"):
        if spec.scalar_choices and isinstance(v, str):
            if v not in spec.scalar_choices:
                raise ConfigError(f"{where}: must be a list or one of {', '.join(map(repr, spec.scalar_choices))}; "
                                  f"got {_fmt(v)}")
            return v
        if not isinstance(v, list):
            raise ConfigError(f"{where}: must be a list; got {_fmt(v)}")
        out = [_check_scalar(f"{where}[{i}]", spec, x) for i, x in enumerate(v)]
        if spec.unique and len(set(out)) != len(out):
            raise ConfigError(f"{where}: duplicate values in {out}")
        return out
    if spec.sweep:
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise ConfigError(f"{where}: an empty list (give one value or a list of values)")
        out = [_check_scalar(f"{where}[{i}]" if isinstance(v, list) else where, spec, x)
               for i, x in enumerate(vals)]
        if len(set(out)) != len(out):
            raise ConfigError(f"{where}: duplicate values in {out}")
        return out
    return _check_scalar(where, spec, v)


def validate_config(raw: Mapping[str, Any], *, source: str | None = None,
                    base_dir: str | Path = ".") -> CollectConfig:
    """Validate a config mapping (as parsed from TOML) and fill in the defaults.

    Parameters
    ----------
    raw : mapping
        Sections ``data``, ``model``, ``train``, ``probe`` (each optional).
    source : str, optional
        Where the config came from (for run.json).
    base_dir : path, default "."
        Directory that relative ``[data] path`` values are relative to.

    Returns
    -------
    CollectConfig

    Raises
    ------
    ConfigError
        On the first problem, naming the section and key.

    Examples
    --------
    >>> cfg = validate_config({"train": {"method": ["gd", "sgd"], "lr": 0.05}})
    >>> cfg["train"]["method"], cfg["train"]["lr"], cfg["model"]["widths"]
    (['gd', 'sgd'], [0.05], [50, 50])
    >>> validate_config({"train": {"lrr": 0.1}})
    Traceback (most recent call last):
    ...
    varprinciple.errors.ConfigError: [train] lrr: unknown key; did you mean 'lr'?
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: must be a table of sections; got {type(raw).__name__}")
    sections: dict[str, dict[str, Any]] = {}
    for sec in raw:
        if sec not in CONFIG_KEYS:
            close = difflib.get_close_matches(sec, list(CONFIG_KEYS), n=1, cutoff=0.5)
            hint = f"; did you mean [{close[0]}]?" if close else \
                f"; valid sections: {', '.join(f'[{s}]' for s in CONFIG_KEYS)}"
            raise ConfigError(f"[{sec}]: unknown section{hint}")
        if not isinstance(raw[sec], Mapping):
            raise ConfigError(f"[{sec}]: must be a table of keys; got {_fmt(raw[sec])}")
    for sec, keys in CONFIG_KEYS.items():
        given = dict(raw.get(sec, {}))
        for k in given:
            if k not in keys:
                raise ConfigError(f"[{sec}] {k}: unknown key{_suggest(k, keys)}")
        out = {}
        for k, spec in keys.items():
            if k in given:
                out[k] = _check_value(sec, k, spec, given[k])
            else:
                d = copy.deepcopy(spec.default)
                out[k] = [d] if spec.sweep else d
        sections[sec] = out
    _cross_check(sections)
    return CollectConfig(sections, source=source, base_dir=str(base_dir))


def mnist1d_samples_iv(n_samples) -> None:
    """mnist1d makes equal numbers of its 10 classes: ``n_samples`` a multiple of 10 (>= 10).
    The one check, made by the config and by :func:`~varprinciple.collect.data.make_mnist1d`."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 10 or n_samples % 10:
        raise ConfigError(f"[data] n_samples: mnist1d makes equal numbers of the 10 classes; give a "
                          f"multiple of 10 (>= 10); got {n_samples!r}")


def loss_task_iv(loss: str, task: str) -> None:
    """``cross_entropy`` needs class labels: refused for a regression task. The one check, made by
    the config for named data and by the run's assembly for data read from files."""
    if loss == LossName.CROSS_ENTROPY and task == "regression":
        raise ConfigError("[train] loss: 'cross_entropy' needs class labels; the data are a regression task "
                          "(use 'mse')")


def _cross_check(s: dict[str, dict[str, Any]]) -> None:
    data, model, train, probe = s["data"], s["model"], s["train"], s["probe"]
    if data["name"] in (DatasetName.NPZ, DatasetName.IDX) and data["path"] is None:
        raise ConfigError(f"[data] path: required for name = {data['name']!r}")
    if data["name"] == DatasetName.MNIST1D and data["n_samples"] is not None:
        mnist1d_samples_iv(data["n_samples"])
    if train["steps"] is not None and train["epochs"] is not None:
        raise ConfigError("[train] epochs: give either steps or epochs, not both")
    if data["name"] in REGRESSION_DATA:  # named data: the task is known before loading
        loss_task_iv(train["loss"], "regression")
    if model["arch"] == Arch.CNN and data["name"] not in IMAGE_DATA:
        raise ConfigError(f"[model] arch: 'cnn' needs image data ({', '.join(map(repr, IMAGE_DATA))}); "
                          f"got dataset {data['name']!r}")
    n_hidden = {Arch.LINEAR: 0, Arch.MLP: len(model["widths"]), Arch.CNN: len(model["channels"])}[
        Arch(model["arch"])]
    if model["arch"] == Arch.MLP and not model["widths"]:
        raise ConfigError("[model] widths: an mlp needs at least one hidden layer (use arch = 'linear')")
    if model["arch"] == Arch.CNN and not model["channels"]:
        raise ConfigError("[model] channels: a cnn needs at least one conv block")
    for sec, key in (("model", "dropout_layers"), ("probe", "dropout_layers")):
        layers = s[sec][key]
        if layers is not None and not layers:
            raise ConfigError(f"[{sec}] {key}: give at least one layer (or omit the key)")
        if layers is not None and n_hidden and max(layers, default=-1) >= n_hidden:
            raise ConfigError(f"[{sec}] {key}: layer {max(layers)} does not exist; the {model['arch']} "
                              f"has {n_hidden} hidden layer{'s' if n_hidden != 1 else ''} (0-based)")
    if n_hidden == 0:
        dm = [m for m in train["method"] if Method(m).dropout]
        if dm:
            raise ConfigError(f"[train] method: {dm[0]!r} needs hidden layers; arch 'linear' has none")
        if "dropout" in probe["sources"]:
            raise ConfigError("[probe] sources: 'dropout' needs hidden layers; arch 'linear' has none")
    if not tr_hc_in_range(probe["tr_hc_samples"], probe["n_samples"]):
        raise ConfigError(f"[probe] tr_hc_samples: must be 0 or in [3, n_samples = {probe['n_samples']}]; "
                          f"got {probe['tr_hc_samples']}")
    why = dropout_samples_problem(probe["dropout_samples"], probe["exact_variance"], probe["tr_hc_samples"])
    if why:
        raise ConfigError(f"[probe] dropout_samples: {why}")
    if len(train["batch_size"]) > 1 and probe["batch_size"] is None:
        raise ConfigError(f"[probe] batch_size: required when [train] batch_size lists several values "
                          f"({train['batch_size']}), so that the probe B of gd runs does not depend "
                          f"on the list")
    if (len(train["drop_prob"]) > 1 and probe["drop_prob"] is None and "dropout" in probe["sources"]
            and any(not Method(m).dropout for m in train["method"])):
        raise ConfigError(f"[probe] drop_prob: required when [train] drop_prob lists several values "
                          f"({train['drop_prob']}) and some methods train without dropout, so that their "
                          f"dropout probe does not depend on the list")
    traj = s["trajectory"]
    if traj["window"]:
        half = traj["window"] // traj["every"] // 2
        if half < 4:
            raise ConfigError(f"[trajectory] window: needs >= 8 snapshots (window / every); got "
                              f"{traj['window']} / {traj['every']}")
        if traj["n_components"] >= half:
            raise ConfigError(f"[trajectory] n_components: must be < the snapshots per half window "
                              f"({half}); got {traj['n_components']}")
    if probe["blocks"] is not None and not probe["blocks"]:
        raise ConfigError("[probe] blocks: give at least one block name, or \"layers\" (or omit the key)")
    if traj["profile_points"] % 2 == 0:  # the grid must hold t = 0, the centre every width is read from
        raise ConfigError(f"[trajectory] profile_points: must be odd (the grid must include t = 0); "
                          f"got {traj['profile_points']}")
    if traj["settle_steps"] > traj["max_settle_steps"]:
        raise ConfigError(f"[trajectory] settle_steps: must be <= max_settle_steps ({traj['max_settle_steps']}); "
                          f"got {traj['settle_steps']}")
    if traj["params"] is not None and not traj["params"]:
        raise ConfigError("[trajectory] params: give at least one parameter name (or omit the key)")
    if not probe["sources"]:
        raise ConfigError("[probe] sources: give at least one noise source")
    if not isotropic_reference_sampled(probe["sources"], probe["isotropic_of"]):
        raise ConfigError(f"[probe] isotropic_of: {probe['isotropic_of']!r} is not among the sources "
                          f"{probe['sources']}")


def load_config(path: str | Path) -> CollectConfig:
    """Read and validate a TOML config file.

    Raises
    ------
    ConfigError
        If the file cannot be read or parsed, or fails :func:`validate_config`; the
        message names the file.

    Examples
    --------
    >>> cfg = load_config(default_study_path())
    >>> cfg["data"]["name"], cfg["train"]["method"]
    ('digits', ['gd', 'sgd', 'dropout'])
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    try:
        return validate_config(raw, source=str(path), base_dir=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def default_study_path() -> Path:
    """Path of the packaged default study config (``default_study.toml``)."""
    return Path(str(resources.files("varprinciple.collect").joinpath("default_study.toml")))


def config_reference() -> str:
    """The config reference as a Markdown table (used for ``docs/collection.md``)."""
    lines = []
    for sec, keys in CONFIG_KEYS.items():
        lines += [f"### [{sec}]", "", "| key | type | default | allowed | sweep | meaning |",
                  "|---|---|---|---|---|---|"]
        for k, spec in keys.items():
            if spec.allowed():
                allowed = ", ".join(f"`{c}`" for c in spec.allowed())
            else:
                parts = []
                if spec.lo is not None:
                    parts.append(f"{'>' if spec.lo_open else '>='} {_fmt_num(spec.lo)}")
                if spec.hi is not None:
                    parts.append(f"{'<' if spec.hi_open else '<='} {_fmt_num(spec.hi)}")
                allowed = " and ".join(parts) or "any"
                if spec.scalar_choices:
                    allowed = " or ".join(f"`\"{c}\"`" for c in spec.scalar_choices) + " or a list"
            default = "unset" if spec.default is None else f"`{_fmt(spec.default)}`".replace("'", '"')
            lines.append(f"| `{k}` | {spec.kind.replace('_list', ' list')} | {default} | {allowed} | "
                         f"{'yes' if spec.sweep else ''} | {spec.doc} |")
        lines.append("")
    return "\n".join(lines)
