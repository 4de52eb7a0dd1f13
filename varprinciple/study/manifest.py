"""The study manifest: experiments (collect configs), margins, power inputs and claims, in one TOML.

Written before any run (``studies/replication.toml``); :func:`load_manifest` validates it
and resolves config paths relative to the manifest. Layout::

    [study]       name, title, workers, confidence, alpha, resamples, seed
    [margins]     named margins (numbers) with a ``<name>_why`` justification each
    [power]       sd, runs_per_arm, target_power, kind ("paired" or "welch"), why,
                  family_size (rows in the margin's claim family: Holm's m for the power statement)
    [[experiment]] name, role, configs = [...], quick = [...], equivalence_margin (a margins name)
    [[claim]]     id, family, text, quantity, table, kind, null, margin (a margins name),
                  experiments, select = {...}, scale, pending, controls (ids of the claims
                  that control it: shown beside it on the study page)

This module imports no torch.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..stats.defaults import ALPHA, CONFIDENCE, RESAMPLES
from .claims import ClaimSpec

__all__ = ["Experiment", "StudyManifest", "load_manifest"]

_STUDY_KEYS = {"name": str, "title": str, "workers": int, "confidence": float, "alpha": float, "limits": str,
               "resamples": int, "seed": int, "quick_resamples": int}
_EXP_KEYS = {"name", "role", "configs", "quick", "equivalence_margin", "description"}
_CLAIM_KEYS = {"id", "family", "text", "quantity", "table", "kind", "null", "margin", "experiments", "select",
               "scale", "pending", "controls"}
_POWER_KEYS = {"sd", "runs_per_arm", "target_power", "kind", "why", "effects", "family_size"}


@dataclass(frozen=True)
class Experiment:
    """One log set: the collect configs collected into it (full and quick variants)."""

    name: str
    role: str
    configs: tuple[Path, ...]
    quick: tuple[Path, ...]
    equivalence_margin: float | None = None
    description: str = ""

    def config_paths(self, quick: bool) -> tuple[Path, ...]:
        return self.quick if quick else self.configs


@dataclass(frozen=True)
class StudyManifest:
    """A validated study manifest (see the module docstring)."""

    path: Path
    name: str
    title: str
    workers: int
    confidence: float
    alpha: float
    resamples: int
    quick_resamples: int
    seed: int
    margins: Mapping[str, float]
    margin_why: Mapping[str, str]
    power: Mapping[str, Any]
    experiments: tuple[Experiment, ...]
    claims: tuple[ClaimSpec, ...]
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: known limits of the study in words (``[study] limits``), shown on the study page
    limits: str = ""

    def experiment(self, name: str) -> Experiment:
        for e in self.experiments:
            if e.name == name:
                return e
        raise InputError(f"{self.path}: no experiment {name!r}.")


def _err(path, msg) -> ConfigError:
    return ConfigError(f"{path}: {msg}")


def _typed(path, section, key, value, typ):
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or isinstance(value, bool):
        raise _err(path, f"[{section}] {key}: must be {typ.__name__}; got {value!r}")
    return value


def load_manifest(path: str | os.PathLike) -> StudyManifest:
    """Read and validate a study manifest; errors name the file and key.

    Examples
    --------
    >>> from pathlib import Path
    >>> m = load_manifest(Path(__file__).resolve().parents[2] / "studies" / "replication.toml")
    >>> m.name, [e.name for e in m.experiments][:2]
    ('replication', ['digits_mlp', 'mnist1d_mlp'])
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: study manifest not found.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _err(path, f"not valid TOML ({exc})") from None
    unknown = sorted(set(raw) - {"study", "margins", "power", "experiment", "claim"})
    if unknown:
        raise _err(path, f"unknown section [{unknown[0]}]")
    st = raw.get("study") or {}
    for k in st:
        if k not in _STUDY_KEYS:
            raise _err(path, f"[study] {k}: unknown key (allowed: {', '.join(sorted(_STUDY_KEYS))})")
    vals = {k: _typed(path, "study", k, st[k], t) for k, t in _STUDY_KEYS.items() if k in st}
    if "name" not in vals:
        raise _err(path, "[study] name: required")
    conf, alpha = vals.get("confidence", CONFIDENCE), vals.get("alpha", ALPHA)
    if not 0 < conf < 1:
        raise _err(path, f"[study] confidence: must be in (0, 1); got {conf}")
    if not 0 < alpha < 0.5:
        raise _err(path, f"[study] alpha: must be in (0, 0.5); got {alpha}")
    margins, why = {}, {}
    for k, v in (raw.get("margins") or {}).items():
        if k.endswith("_why"):
            why[k[:-4]] = str(v)
            continue
        v = _typed(path, "margins", k, v, float)
        if v <= 0:
            raise _err(path, f"[margins] {k}: must be > 0; got {v}")
        margins[k] = v
    for k in margins:
        if not why.get(k, "").strip():
            raise _err(path, f"[margins] {k}_why: every margin needs its justification, written before any run")
    power = dict(raw.get("power") or {})
    for k in power:
        if k not in _POWER_KEYS:
            raise _err(path, f"[power] {k}: unknown key (allowed: {', '.join(sorted(_POWER_KEYS))})")
    fs = power.get("family_size")
    if fs is not None and not (isinstance(fs, int) and not isinstance(fs, bool) and fs >= 1):
        raise _err(path, f"[power] family_size: must be an integer >= 1; got {fs!r}")
    base = path.parent
    exps = []
    for i, e in enumerate(raw.get("experiment") or []):
        bad = sorted(set(e) - _EXP_KEYS)
        if bad:
            raise _err(path, f"[[experiment]] {i}: unknown key {bad[0]!r}")
        if not e.get("name") or not e.get("configs"):
            raise _err(path, f"[[experiment]] {i}: `name` and `configs` are required")
        em = e.get("equivalence_margin")
        if em is not None and em not in margins:
            raise _err(path, f"[[experiment]] {e['name']}: equivalence_margin {em!r} is not a [margins] name")
        cfgs = tuple(base / c for c in e["configs"])
        quick = tuple(base / c for c in e.get("quick", e["configs"]))
        for c in cfgs + quick:
            if not c.is_file():
                raise _err(path, f"[[experiment]] {e['name']}: config {c} not found")
        exps.append(Experiment(str(e["name"]), str(e.get("role", "main")), cfgs, quick,
                               None if em is None else margins[em], str(e.get("description", ""))))
    names = [e.name for e in exps]
    if len(set(names)) != len(names):
        raise _err(path, "[[experiment]] names must be unique")
    claims = []
    for i, c in enumerate(raw.get("claim") or []):
        bad = sorted(set(c) - _CLAIM_KEYS)
        if bad:
            raise _err(path, f"[[claim]] {c.get('id', i)}: unknown key {bad[0]!r}")
        for k in ("id", "family", "text", "quantity", "table", "kind"):
            if k not in c:
                raise _err(path, f"[[claim]] {c.get('id', i)}: `{k}` is required")
        m = c.get("margin")
        if m is not None and m not in margins:
            raise _err(path, f"[[claim]] {c['id']}: margin {m!r} is not a [margins] name")
        for x in c.get("experiments", []):
            if x not in names:
                raise _err(path, f"[[claim]] {c['id']}: experiment {x!r} is not declared")
        try:
            claims.append(ClaimSpec(id=c["id"], family=c["family"], text=c["text"], quantity=c["quantity"],
                                    table=c["table"], kind=c["kind"], null=float(c.get("null", 0.0)),
                                    margin=None if m is None else margins[m],
                                    experiments=tuple(c.get("experiments", ())), select=dict(c.get("select", {})),
                                    scale=c.get("scale"), pending=c.get("pending"),
                                    controls=tuple(c.get("controls", ()))))
        except InputError as exc:
            raise _err(path, str(exc)) from None
    ids = {c.id for c in claims}
    for c in claims:
        for x in c.controls:
            if x not in ids:
                raise _err(path, f"[[claim]] {c.id}: control {x!r} is not a declared claim id")
    return StudyManifest(path=path, name=vals["name"], title=vals.get("title", vals["name"]),
                         workers=vals.get("workers", 2), confidence=conf, alpha=alpha,
                         resamples=vals.get("resamples", RESAMPLES), quick_resamples=vals.get("quick_resamples", 0),
                         seed=vals.get("seed", 0), margins=margins, margin_why=why, power=power,
                         experiments=tuple(exps), claims=tuple(claims), raw=raw,
                         limits=" ".join(vals.get("limits", "").split()))
