"""Simulated log sets with a known truth (numpy only).

:func:`simulate` writes a log set that follows log schema v1 (``docs/log-schema.md``)
through :func:`varprinciple.io.write_run`; :func:`simulate_logset` builds the same runs in
memory (no files), which :mod:`varprinciple.stats.power` uses. Every run records its truth
in ``run.json`` under ``"truth"`` and the whole set's truth is written to ``truth.json``
at the top of the log set.

The model (one run ``r`` of training method ``m``, one noise source ``s``, one probe step,
one parameter block) is the variance principle of DESIGN.md with known parameters:

* eigenvalues ``lambda_i = lambda_max_r * (i + 1) ** (-eigen_decay)`` for the first
  ``n_directions - n_nonpositive`` ranks, with ``lambda_max_r = lambda_max * exp(0.2 z)``;
  the last ``n_nonpositive`` ranks get eigenvalues ``<= 0`` (zero, then negative ones);
* the run's exponent ``b_rs = slopes[m] + source_offsets[s] + slope_sd * z_r`` (one draw
  per run and source, shared by its steps and blocks);
* direction variances ``log sigma_i^2 = intercept + b_rs log lambda_i + e_i``,
  ``e_i ~ N(0, scatter^2)``, a fresh ``e`` per (run, source, step, block); directions
  with ``lambda_i <= 0`` take the smallest positive eigenvalue in place of ``lambda_i``;
* random directions behave like directions of curvature ``random_curvature * lambda_max_r``;
* the noise draws of the probed directions have covariance
  ``Sigma = D^(1/2) R D^(1/2)`` with ``D = diag(sigma^2)`` and a correlation matrix
  ``R = (1 - correlation) I + correlation * C`` (``C`` a random unit-diagonal
  correlation matrix of rank 2), so projections are correlated across directions;
* noise families: ``gaussian``; ``student-t`` (``x = L t``, ``t`` iid Student-t with ``df``
  degrees of freedom scaled to unit variance, ``L L^T = Sigma``); ``masked`` (dropout-like:
  ``x = L Q (m * g) / c`` with Bernoulli keep masks ``m`` over ``n_units`` units
  (``drop_prob`` is the DROP probability, as in ``torch.nn.Dropout``), Gaussian unit
  features ``g ~ N(1, 1)``, ``Q`` with orthonormal rows: the draws are non-Gaussian and
  have a non-zero mean, their covariance is exactly ``Sigma``);
* the source named ``"isotropic"`` is the control of DESIGN.md: isotropic Gaussian noise
  with the same variance ``exp(intercept)`` along every direction, so ``b = 0``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ._simulate_draws import ISOTROPIC, NoiseFamily, generate, noise_table
from .errors import InputError
from .io import LogSet, RunLog, write_json, write_run

__all__ = [
    "NoiseFamily",
    "ISOTROPIC",
    "SimulationTruth",
    "simulate",
    "simulate_logset",
    "read_truth",
]

logger = logging.getLogger(__name__)

TRUTH_FILE = "truth.json"


@dataclass(frozen=True)
class SimulationTruth:
    """The known truth of a simulated log set.

    ``runs`` has one row per (run, source): ``run_id``, ``method``, ``seed``, ``source``,
    ``noise`` (family), ``slope`` (the run's exponent b), ``mean_slope`` (the method's mean
    exponent for that source, the group-level truth), ``intercept``.
    ``settings`` holds every option of the simulation.
    """

    settings: dict[str, Any]
    runs: pd.DataFrame = field(repr=False)

    def to_frame(self) -> pd.DataFrame:
        """The per-(run, source) truth table."""
        return self.runs.copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``truth.json`` holds)."""
        groups = (self.runs.groupby(["method", "source"], sort=True)["mean_slope"].first()
                  .reset_index().to_dict(orient="records"))
        return {"settings": self.settings, "groups": groups,
                "runs": self.runs.to_dict(orient="records")}


# ============================================================================ validation


def _as_families(noise, sources: Sequence[str]) -> dict[str, NoiseFamily]:
    allowed = [f.value for f in NoiseFamily]
    if noise is None:
        noise = {}
    if isinstance(noise, str):
        if noise not in allowed:
            raise InputError(f"`noise` must be one of {allowed} (or a mapping source -> family); got {noise!r}.")
        noise = {s: noise for s in sources if s != ISOTROPIC}
    if not isinstance(noise, Mapping):
        raise InputError(f"`noise` must be a family name or a mapping source -> family; got {noise!r}.")
    out = {}
    for s in sources:
        if s == ISOTROPIC:
            out[s] = NoiseFamily.GAUSSIAN
            continue
        fam = noise.get(s, "masked" if s == "dropout" else "gaussian")
        if fam not in allowed:
            raise InputError(f"`noise` for source {s!r} must be one of {allowed}; got {fam!r}.")
        out[s] = NoiseFamily(fam)
    unknown = sorted(set(noise) - set(sources))
    if unknown:
        raise InputError(f"`noise` names source(s) {unknown} that are not in `sources` {list(sources)}.")
    bad = [s for s in noise if s == ISOTROPIC and noise[s] != NoiseFamily.GAUSSIAN.value]
    if bad:
        raise InputError("`noise` for source 'isotropic' must be 'gaussian' (it is the isotropic Gaussian control).")
    return out


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"`{name}` must be an integer >= {low}; got {value!r}.")
    return int(value)


def _check_float(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"`{name}` must be a number; got {value!r}.") from None
    if isinstance(value, bool) or not np.isfinite(v):
        raise InputError(f"`{name}` must be a finite number; got {value!r}.")
    lo_bad = low is not None and (v <= low if low_open else v < low)
    hi_bad = high is not None and (v >= high if high_open else v > high)
    if lo_bad or hi_bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        rng_txt = f"in {lo}, {hi}" if low is not None and high is not None else (
            f"{'>' if low_open else '>='} {low}" if low is not None else f"{'<' if high_open else '<='} {high}")
        raise InputError(f"`{name}` must be {rng_txt}; got {value!r}.")
    return v


def _simulate_iv(methods, runs_per_method, sources, source_offsets, slope_sd, scatter, intercept,
                 n_directions, n_random, n_samples, steps, noise, df, drop_prob, n_units, correlation,
                 n_nonpositive, eigen_decay, lambda_max, random_curvature, blocks, rng) -> dict:
    if not isinstance(methods, Mapping) or not methods:
        raise InputError(f"`methods` must be a non-empty mapping method -> mean slope; got {methods!r}.")
    meths = {}
    for m, b in methods.items():
        if not isinstance(m, str) or not m.strip() or "/" in m:
            raise InputError(f"`methods` keys must be non-empty names without '/'; got {m!r}.")
        meths[m] = _check_float(f"methods[{m!r}]", b)
    runs_per_method = _check_int("runs_per_method", runs_per_method, 1)
    if isinstance(sources, str) or not isinstance(sources, Sequence) or not sources:
        raise InputError(f"`sources` must be a non-empty sequence of names; got {sources!r}.")
    if len(set(sources)) != len(sources) or any(not isinstance(s, str) or not s.strip() for s in sources):
        raise InputError(f"`sources` must be distinct non-empty names; got {list(sources)!r}.")
    offsets = dict(source_offsets or {})
    unknown = sorted(set(offsets) - set(sources))
    if unknown:
        raise InputError(f"`source_offsets` names source(s) {unknown} that are not in `sources` {list(sources)}.")
    if offsets.get(ISOTROPIC, 0.0) != 0.0:
        raise InputError("`source_offsets` cannot shift 'isotropic' (its slope is 0 by construction).")
    offsets = {s: _check_float(f"source_offsets[{s!r}]", offsets.get(s, 0.0)) for s in sources}
    n_directions = _check_int("n_directions", n_directions, 3)
    n_random = _check_int("n_random", n_random, 0)
    n_samples = _check_int("n_samples", n_samples, 3)
    n_nonpositive = _check_int("n_nonpositive", n_nonpositive, 0)
    if n_directions - n_nonpositive < 3:
        raise InputError(f"`n_nonpositive` must leave at least 3 positive eigenvalues; got n_nonpositive="
                         f"{n_nonpositive} with n_directions={n_directions}.")
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        steps = [steps]
    if isinstance(steps, str) or not isinstance(steps, Sequence) or not steps:
        raise InputError(f"`steps` must be a non-empty sequence of integers >= 0; got {steps!r}.")
    steps = [_check_int("steps", s, 0) for s in steps]
    if len(set(steps)) != len(steps):
        raise InputError(f"`steps` must be distinct; got {steps!r}.")
    families = _as_families(noise, sources)
    df = _check_float("df", df, low=5.0)
    drop_prob = _check_float("drop_prob", drop_prob, low=0.0, high=1.0, low_open=True, high_open=True)
    d = n_directions + n_random
    if n_units is None:
        n_units = d
    n_units = _check_int("n_units", n_units, 1)
    if n_units < d:
        raise InputError(f"`n_units` must be >= n_directions + n_random = {d} (the masked noise needs a "
                         f"full-rank covariance); got {n_units}.")
    correlation = _check_float("correlation", correlation, low=0.0, high=1.0, high_open=True)
    slope_sd = _check_float("slope_sd", slope_sd, low=0.0)
    scatter = _check_float("scatter", scatter, low=0.0)
    intercept = _check_float("intercept", intercept)
    eigen_decay = _check_float("eigen_decay", eigen_decay, low=0.0, low_open=True)
    lambda_max = _check_float("lambda_max", lambda_max, low=0.0, low_open=True)
    random_curvature = _check_float("random_curvature", random_curvature, low=0.0, high=1.0,
                                    low_open=True)
    if blocks is not None:
        if isinstance(blocks, str) or not isinstance(blocks, Sequence) or not blocks:
            raise InputError(f"`blocks` must be None or a non-empty sequence of names; got {blocks!r}.")
        if len(set(blocks)) != len(blocks) or any(not isinstance(b, str) or not b.strip() for b in blocks):
            raise InputError(f"`blocks` must be distinct non-empty names; got {list(blocks)!r}.")
        blocks = list(blocks)
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"`rng` must be a numpy.random.Generator (np.random.default_rng(seed)); got {rng!r}.")
    return dict(methods=meths, runs_per_method=runs_per_method, sources=list(sources), source_offsets=offsets,
                slope_sd=slope_sd, scatter=scatter, intercept=intercept, n_directions=n_directions,
                n_random=n_random, n_samples=n_samples, steps=steps,
                noise={s: f.value for s, f in families.items()}, df=df, drop_prob=drop_prob,
                n_units=n_units, correlation=correlation, n_nonpositive=n_nonpositive,
                eigen_decay=eigen_decay, lambda_max=lambda_max, random_curvature=random_curvature,
                blocks=blocks)


def simulate_logset(
    *,
    methods: Mapping[str, float] | None = None,
    runs_per_method: int = 4,
    sources: Sequence[str] = ("sgd", "dropout", ISOTROPIC),
    source_offsets: Mapping[str, float] | None = None,
    slope_sd: float = 0.1,
    scatter: float = 0.2,
    intercept: float = -3.5,
    n_directions: int = 20,
    n_random: int = 0,
    n_samples: int = 200,
    steps: Sequence[int] = (0,),
    noise: str | Mapping[str, str] | None = None,
    df: float = 8.0,
    drop_prob: float = 0.5,
    n_units: int | None = None,
    correlation: float = 0.3,
    n_nonpositive: int = 2,
    eigen_decay: float = 1.0,
    lambda_max: float = 10.0,
    random_curvature: float = 1e-3,
    blocks: Sequence[str] | None = None,
    rng: np.random.Generator,
) -> tuple[LogSet, SimulationTruth]:
    """Simulate a log set in memory (no files); the runs are what reading them would give.

    Takes the options of :func:`simulate` except ``out`` and ``overwrite``.

    Returns
    -------
    (LogSet, SimulationTruth)

    Examples
    --------
    >>> import numpy as np
    >>> from varprinciple.simulate import simulate_logset
    >>> logset, truth = simulate_logset(methods={"sgd": 1.0}, runs_per_method=2,
    ...                                 rng=np.random.default_rng(0))
    >>> [r.run_id for r in logset.runs]
    ['sgd-s0', 'sgd-s1']
    >>> logset.runs[0].blocks[0].values.shape
    (200, 20)
    """
    s = _simulate_iv(methods if methods is not None else {"sgd": 1.0, "dropout": 1.0}, runs_per_method,
                     sources, source_offsets, slope_sd, scatter, intercept, n_directions, n_random,
                     n_samples, steps, noise, df, drop_prob, n_units, correlation, n_nonpositive,
                     eigen_decay, lambda_max, random_curvature, blocks, rng)
    return _memory_logset(s, rng, tables=True)


def _memory_logset(s: dict, rng: np.random.Generator, *, tables: bool) -> tuple[LogSet, SimulationTruth]:
    """In-memory runs from validated settings; ``tables=False`` leaves the long tables empty
    (the analysis reads the noise blocks only; :mod:`varprinciple.stats.power` saves the time)."""
    runs, rows = [], []
    root = Path("<memory>")
    for meta, blks, eig, truth_rows in generate(s, rng):
        if tables:
            et, nt = pa.Table.from_pandas(eig, preserve_index=False), noise_table(blks)
        else:
            et, nt = pa.table({}), pa.table({})
        runs.append(RunLog(root / meta["run_id"], meta, et, nt, blocks=blks, fingerprint=meta["run_id"]))
        rows += truth_rows
    runs.sort(key=lambda r: r.run_id)  # the reader sorts runs by path (= run_id here)
    return LogSet(root, runs), SimulationTruth(s, pd.DataFrame(rows))


def simulate(
    out: str | os.PathLike,
    *,
    methods: Mapping[str, float] | None = None,
    runs_per_method: int = 4,
    sources: Sequence[str] = ("sgd", "dropout", ISOTROPIC),
    source_offsets: Mapping[str, float] | None = None,
    slope_sd: float = 0.1,
    scatter: float = 0.2,
    intercept: float = -3.5,
    n_directions: int = 20,
    n_random: int = 0,
    n_samples: int = 200,
    steps: Sequence[int] = (0,),
    noise: str | Mapping[str, str] | None = None,
    df: float = 8.0,
    drop_prob: float = 0.5,
    n_units: int | None = None,
    correlation: float = 0.3,
    n_nonpositive: int = 2,
    eigen_decay: float = 1.0,
    lambda_max: float = 10.0,
    random_curvature: float = 1e-3,
    blocks: Sequence[str] | None = None,
    float32: bool = False,
    overwrite: bool = False,
    rng: np.random.Generator,
) -> SimulationTruth:
    """Write a simulated log set (schema v1) with a known truth to ``out``.

    Parameters
    ----------
    out : path
        Log-set directory to create. Each run goes to ``out/<run_id>/``; the truth of the
        whole set goes to ``out/truth.json``.
    methods : mapping, default ``{"sgd": 1.0, "dropout": 1.0}``
        Training-method label -> mean exponent b of its runs (group-level truth).
    runs_per_method : int, default 4
        Runs (seeds) per method.
    sources : sequence of str, default ``("sgd", "dropout", "isotropic")``
        Noise sources logged in every run; ``"isotropic"`` is the b = 0 control.
    source_offsets : mapping, optional
        Added to the method's mean exponent for a source (default 0 for each).
    slope_sd : float, default 0.1
        Run-to-run standard deviation of the exponent (per run and source).
    scatter : float, default 0.2
        Standard deviation of the direction-level deviations ``e_i`` (natural log units).
    intercept : float, default -3.5
        ``a`` of ``log sigma^2 = a + b log lambda + e``.
    n_directions, n_random : int, default 20, 0
        Hessian directions (ranks 0..n-1) and random directions per probe.
    n_samples : int, default 200
        Noise draws per probe and source.
    steps : sequence of int, default ``(0,)``
        Probe steps.
    noise : str or mapping, optional
        Noise family (``gaussian``, ``student-t``, ``masked``) of every non-isotropic source,
        or a mapping source -> family. Default: ``masked`` for a source named ``dropout``,
        ``gaussian`` otherwise.
    df : float, default 8.0
        Degrees of freedom of ``student-t`` noise (>= 5).
    drop_prob : float, default 0.5
        DROP probability of the ``masked`` noise's unit masks (``torch.nn.Dropout``'s p).
    n_units : int, optional
        Units of the ``masked`` noise (>= n_directions + n_random, the default).
    correlation : float, default 0.3
        Strength in [0, 1) of the correlation between projections on different directions.
    n_nonpositive : int, default 2
        Directions with eigenvalue <= 0 (the last ranks).
    eigen_decay, lambda_max : float, default 1.0, 10.0
        ``lambda_i = lambda_max_r (i + 1) ** -eigen_decay`` for positive eigenvalues.
    random_curvature : float, default 1e-3
        Random directions behave like directions of curvature ``random_curvature * lambda_max``.
    blocks : sequence of str, optional
        Parameter blocks; if given every table carries a ``block`` column.
    float32 : bool, default False
        Store ``value`` as float32 (half the size; readers upcast losslessly). The truth
        then describes draws rounded to float32.
    overwrite : bool, default False
        Replace ``out`` if it already holds a log set.
    rng : numpy.random.Generator
        Source of randomness (the output is a deterministic function of its state).

    Returns
    -------
    SimulationTruth

    Raises
    ------
    InputError
        For an invalid option (the message names it), or if ``out`` holds runs and
        ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from varprinciple.simulate import simulate
    >>> from varprinciple.io import read_logset
    >>> out = tempfile.mkdtemp() + "/sim"
    >>> truth = simulate(out, methods={"sgd": 1.0, "dropout": 0.5}, runs_per_method=2,
    ...                  n_random=5, rng=np.random.default_rng(0))
    >>> sorted(r.run_id for r in read_logset(out).runs)
    ['dropout-s0', 'dropout-s1', 'sgd-s0', 'sgd-s1']
    >>> truth.to_frame().query("source == 'isotropic'")["slope"].tolist()
    [0.0, 0.0, 0.0, 0.0]
    """
    s = _simulate_iv(methods if methods is not None else {"sgd": 1.0, "dropout": 1.0}, runs_per_method,
                     sources, source_offsets, slope_sd, scatter, intercept, n_directions, n_random,
                     n_samples, steps, noise, df, drop_prob, n_units, correlation, n_nonpositive,
                     eigen_decay, lambda_max, random_curvature, blocks, rng)
    out = Path(out)
    if out.exists():
        if out.is_file():
            raise InputError(f"`out` {out} is a file; expected a directory for the log set.")
        if any(out.iterdir()):
            if not overwrite:
                raise InputError(f"`out` {out} is not empty; choose a new directory or pass overwrite=True "
                                 "(--overwrite).")
            if not (out / TRUTH_FILE).exists():
                raise InputError(f"`out` {out} is not empty and holds no {TRUTH_FILE}: refusing to overwrite "
                                 "a directory that simulate did not write.")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for meta, blks, eig, truth_rows in generate(s, rng):
        write_run(out / meta["run_id"], meta, eigen=eig, noise=noise_table(blks, float32=float32))
        rows += truth_rows
        logger.debug("wrote run %s", meta["run_id"])
    truth = SimulationTruth(s, pd.DataFrame(rows))
    write_json(out / TRUTH_FILE, truth.to_dict())
    logger.info("simulated %d runs into %s", len(rows) // len(s["sources"]), out)
    return truth


def read_truth(logdir: str | os.PathLike) -> SimulationTruth:
    """Read ``truth.json`` of a simulated log set."""
    p = Path(logdir) / TRUTH_FILE
    if not p.exists():
        raise InputError(f"{p}: no such file (not a log set written by varprinciple simulate).")
    d = json.loads(p.read_text())
    return SimulationTruth(d["settings"], pd.DataFrame(d["runs"]))
