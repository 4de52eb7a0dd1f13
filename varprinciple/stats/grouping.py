"""Which runs are replicates of the same training procedure (a *group*).

Default rule (documented in docs/statistics.md):

1. A run whose ``run.json`` has a ``group`` value belongs to the group of that value.
2. Otherwise its group is its ``method`` plus its *non-seed hyper-parameters*:
   every scalar entry of the ``hyperparameters`` object (nested objects flattened with
   dots), and the top-level keys in :data:`HYPERPARAMETER_KEYS` (plus ``dataset``,
   ``model`` and ``loss``). Keys whose name contains ``seed`` never count, nor do
   ``run_id``, paths, versions, ``truth`` or ``config``. Only fields whose values differ
   between runs of the log set appear in the label (constant fields distinguish nothing).

``group_by`` (``--group-by``) replaces the rule: the group is the tuple of the named
run.json keys (dotted paths reach into objects, e.g. ``hyperparameters.lr``); a run
lacking a key gets ``null`` for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InputError

__all__ = ["HYPERPARAMETER_KEYS", "group_keys", "group_label", "parse_group_by"]

#: Top-level run.json keys that count as hyper-parameters for the default grouping.
HYPERPARAMETER_KEYS = (
    "dataset", "model", "loss", "lr", "learning_rate", "batch_size", "drop_prob", "keep_prob",
    "dropout", "weight_decay", "momentum", "optimizer", "epochs", "n_steps", "steps", "width",
    "depth", "n_train", "train_size", "probe_batch_size",
)

_NEVER = ("run_id", "schema_version", "truth", "config", "path", "versions", "package_versions",
          "created", "time", "n_params")


def _excluded(name: str) -> bool:
    low = name.lower()
    return "seed" in low or low in _NEVER or low.endswith(("_path", "_dir", "version", "versions"))


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _flatten(obj: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if _excluded(str(k)):
            continue
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        elif _scalar(v):
            out[name] = v
        elif isinstance(v, (list, tuple)) and all(_scalar(x) for x in v):
            out[name] = ",".join(str(x) for x in v)
    return out


def _lookup(meta: Mapping, dotted: str) -> Any:
    cur: Any = meta
    for part in dotted.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            return None
    if isinstance(cur, (list, tuple)):
        return ",".join(str(x) for x in cur)
    if isinstance(cur, Mapping):
        return ",".join(f"{k}={v}" for k, v in cur.items())
    return cur


def parse_group_by(group_by: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Normalise ``--group-by`` (comma-separated string or sequence of keys) to a tuple.

    Examples
    --------
    >>> parse_group_by("method, hyperparameters.lr")
    ('method', 'hyperparameters.lr')
    """
    if group_by is None:
        return None
    items = group_by.split(",") if isinstance(group_by, str) else list(group_by)
    keys = tuple(str(k).strip() for k in items)
    if not keys or any(not k or any(not p for p in k.split(".")) for k in keys):
        raise InputError(f"`group_by` must be run.json keys separated by commas (dotted paths allowed), "
                         f"e.g. 'method,hyperparameters.lr'; got {group_by!r}.")
    return keys


def group_keys(metas: Sequence[Mapping], *, group_by: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The key fields of every run's group (one dict per run, in order).

    Parameters
    ----------
    metas : sequence of mapping
        The ``run.json`` contents.
    group_by : sequence of str, optional
        run.json keys (dotted paths allowed) replacing the default rule.

    Returns
    -------
    list of dict
        Runs with equal dicts are replicates of one group.

    Examples
    --------
    >>> metas = [{"method": "sgd", "seed": 0, "hyperparameters": {"lr": 0.1, "seed": 0}},
    ...          {"method": "sgd", "seed": 1, "hyperparameters": {"lr": 0.1, "seed": 1}},
    ...          {"method": "sgd", "seed": 0, "hyperparameters": {"lr": 0.2}}]
    >>> [group_label(k) for k in group_keys(metas)]
    ['sgd lr=0.1', 'sgd lr=0.1', 'sgd lr=0.2']
    >>> [group_label(k) for k in group_keys(metas, group_by=["method"])]
    ['sgd', 'sgd', 'sgd']
    """
    if group_by is not None:
        out = [{k: _lookup(m, k) for k in group_by} for m in metas]
        absent = [k for k in group_by if all(d[k] is None for d in out)]
        if absent:
            raise InputError(f"`group_by`: no run's run.json has the key(s) {', '.join(map(repr, absent))}.")
        return out
    cand: list[dict[str, Any] | None] = []
    for m in metas:
        if m.get("group") is not None:
            cand.append(None)
            continue
        fields: dict[str, Any] = {}
        hp = m.get("hyperparameters")
        if isinstance(hp, Mapping):
            fields.update(_flatten(hp))
        for k in HYPERPARAMETER_KEYS:
            if k in m and _scalar(m[k]) and k not in fields:
                fields[k] = m[k]
        cand.append(fields)
    # keep only the fields that vary across the runs grouped by the default rule
    default = [c for c in cand if c is not None]
    names: list[str] = []
    for c in default:
        for k in c:
            if k not in names:
                names.append(k)
    varying = [k for k in names if len({repr(c.get(k)) for c in default}) > 1]
    out = []
    for m, c in zip(metas, cand):
        if c is None:
            g = m["group"]
            out.append({"group": g if _scalar(g) else str(g)})
        else:
            d = {"method": m.get("method")}
            d.update({k: c.get(k) for k in varying})
            out.append(d)
    return out


def unique_labels(keys: Sequence[Mapping[str, Any]]) -> list[str]:
    """:func:`group_label` of each key, made unique: distinct keys that would share a label
    (an explicit ``group`` equal to another group's method, ``1`` vs ``"1"``) get their key
    fields appended, so that they are never pooled.

    Examples
    --------
    >>> unique_labels([{"group": "sgd"}, {"method": "sgd"}, {"method": "sgd"}])
    ["sgd [group='sgd']", "sgd [method='sgd']", "sgd [method='sgd']"]
    """
    labels = [group_label(k) for k in keys]
    distinct: dict[str, set[str]] = {}
    for lab, k in zip(labels, keys):
        distinct.setdefault(lab, set()).add(repr(sorted((str(a), repr(b)) for a, b in k.items())))
    return [lab if len(distinct[lab]) == 1 else
            f"{lab} [{' '.join(f'{a}={b!r}' for a, b in k.items())}]"
            for lab, k in zip(labels, keys)]


def group_label(key: Mapping[str, Any]) -> str:
    """A readable label of a group's key fields.

    ``{"group": "A"}`` -> ``"A"``; ``{"method": "sgd", "lr": 0.1}`` -> ``"sgd lr=0.1"``;
    with ``--group-by`` keys: ``"k1=v1 k2=v2"``.

    Examples
    --------
    >>> group_label({"method": "dropout", "drop_prob": 0.5})
    'dropout drop_prob=0.5'
    """
    keys = list(key)
    if keys == ["group"]:
        return str(key["group"])
    if keys and keys[0] == "method":
        rest = " ".join(f"{k}={key[k]}" for k in keys[1:])
        return f"{key['method']}{' ' + rest if rest else ''}"
    return " ".join(f"{k}={v}" for k, v in key.items())
