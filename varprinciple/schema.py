"""Log schema v1: the one owner of file names, column names, dtypes and their checks.

A *log set* is a directory; every directory below it holding ``run.json`` is one run.
A run holds ``run.json``, ``eigen.parquet`` and ``noise.parquet`` (the required tables)
and may hold optional tables listed in :data:`OPTIONAL_TABLES`. ``docs/log-schema.md``
describes the contract in prose with a worked example.

This module validates *one table at a time* (columns, dtypes, finiteness, allowed
values) and normalises accepted lossless upcasts (int32 -> int64, float32 -> float64,
large_string/dictionary -> string). Cross-table checks live in :mod:`varprinciple.io`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "SCHEMA_VERSION",
    "RUN_JSON",
    "EIGEN_FILE",
    "NOISE_FILE",
    "RUN_REQUIRED_KEYS",
    "RUN_KEYS",
    "RUN_FILES",
    "RUN_FILE_LIST_KEYS",
    "Basis",
    "ColumnSpec",
    "TableSpec",
    "EIGEN",
    "NOISE",
    "OPTIONAL_TABLES",
    "normalize_table",
    "key_problems",
]

SCHEMA_VERSION = 1
RUN_JSON = "run.json"
EIGEN_FILE = "eigen.parquet"
NOISE_FILE = "noise.parquet"

#: run.json keys every run must carry, with the Python types accepted for each.
RUN_REQUIRED_KEYS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "run_id": (str,),
    "method": (str,),
}

#: Every run.json key a varprinciple writer sets (``collect``, ``probe_model``/``probe_checkpoints``,
#: the recorder, ``reprobe_run``), with what it holds: the one declaration of the run.json
#: contract's optional keys (:func:`varprinciple.run_json.build_run_json` refuses others;
#: callers' own ``meta`` keys are passed through as given).
RUN_KEYS: dict[str, str] = {
    "schema_version": "log schema version (1)",
    "run_id": "the run's name (collect: built by varprinciple.run_json.run_name)",
    "method": "gd, sgd, dropout, sgd+dropout, ...",
    "group": "the run's group label (its name without the seed)",
    "seed": "the sweep's seed value (collect) or the probes' seed (own-model API)",
    "train_seed": "seed of training, a hash of the [data], [model] and [train] sections",
    "probe_seed": "seed of the probes, a hash of the whole configuration",
    "seed_scheme": "per_run or matched",
    "init_seed": "seed_scheme matched: the initial weights' seed",
    "order_seed": "seed_scheme matched: the data order's seed",
    "dataset": "dataset name",
    "model": "model description",
    "arch": "[model] arch",
    "loss": "loss name (mse, cross_entropy or a custom loss)",
    "loss_normalisation": "own-model API: the loss's normalisation in words",
    "n_params": "trainable parameters",
    "n_train": "own-model API: training samples probed on",
    "lr": "learning rate", "batch_size": "training batch size (None: full batch)",
    "drop_prob": "training dropout probability", "keep_prob": "1 - drop_prob",
    "steps": "planned training steps", "epochs": "[train] epochs", "momentum": "[train] momentum",
    "weight_decay": "[train] weight_decay", "sampler": "[train] sampler",
    "hyperparameters": "the hyperparameters that define the run's group",
    "probe_batch_size": "batch size of the SGD noise source",
    "probe_drop_prob": "drop probability of the dropout noise source",
    "probe_dropout_layers": "the sites the dropout probe used",
    "probe_dropout_disabled": "trained dropout layers switched off for the probe",
    "dropout_sites": "every random op the model applies in train mode, as the probe detected",
    "checkpoint_fingerprint": "hash of the probed network per step",
    "probe_sources": "noise sources probed", "probe_steps": "steps probed",
    "probe_settings": "own-model API: the ProbeSettings as a dict",
    "probes": "per probe: step, HVP count, timings",
    "target": "the stop rule's outcome", "trained_steps": "steps actually trained",
    "trajectory": "the [trajectory] window's settings and outcome",
    "data_split": "the data split", "final": "final train/test loss and accuracy",
    "checkpoints": "checkpoint files (relative paths)", "model_file": "the final weights' file",
    "config": "the resolved collect configuration", "config_hash": "hash of config",
    "config_source": "the config file", "versions": "package versions (varprinciple.provenance)",
    "git_revision": "git commit of the package source", "device": "torch device",
    "torch_threads": "torch threads", "created": "UTC time written", "wall_s": "wall-clock seconds",
    "recorder": "Recorder settings", "reprobed_from": "the run a re-probe came from",
    "files": "size and SHA-256 of every file of the run",
}

#: Optional run.json key: ``{path: {"bytes": int, "sha256": str}}`` for files of the run
#: (paths relative to the run directory), recorded by ``collect`` when it publishes a run.
#: Readers refuse a run whose listed file is missing or has another size.
RUN_FILES = "files"
#: Optional run.json keys naming files of the run (a relative path, or a list of them):
#: readers refuse a run where one is missing, with or without :data:`RUN_FILES`.
RUN_FILE_LIST_KEYS = ("model_file", "checkpoints")


class Basis(StrEnum):
    """The kind of direction a noise sample is projected on."""

    HESSIAN = "hessian"
    RANDOM = "random"


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its name, logical type and whether it must be present.

    ``kind`` is one of ``"int64"``, ``"float64"``, ``"string"``, ``"bool"`` or
    ``"list<float32>"``/``"list<float64>"`` (a list of floats per row; the checks below apply to
    every element). ``finite`` asks float values to be finite (no NaN/Inf);
    ``nonnegative`` asks values >= 0; ``allowed`` restricts string values.
    """

    name: str
    kind: str
    required: bool = True
    finite: bool = True
    nonnegative: bool = False
    allowed: tuple[str, ...] | None = None
    nullable: bool = False


@dataclass(frozen=True)
class TableSpec:
    """A Parquet table of a run: its file name, columns and natural key.

    ``unique_key`` names the columns that identify a row: no two rows of a valid table
    share their values (null counts as a value; a key column the table does not carry,
    such as an absent optional ``block``, is left out of the key).
    """

    file: str
    columns: tuple[ColumnSpec, ...]
    description: str = ""
    unique_key: tuple[str, ...] = ()

    @property
    def required_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


EIGEN = TableSpec(
    EIGEN_FILE,
    (
        ColumnSpec("step", "int64", nonnegative=True),
        ColumnSpec("rank", "int64", nonnegative=True),
        ColumnSpec("eigenvalue", "float64"),
        ColumnSpec("residual", "float64", required=False, nonnegative=True),
        ColumnSpec("vector", "list<float32>", required=False, finite=False),
        ColumnSpec("block", "string", required=False, nullable=True),
    ),
    "One row per Hessian eigenpair per probe; rank 0 is the largest eigenvalue.",
    unique_key=("step", "block", "rank"),
)

NOISE = TableSpec(
    NOISE_FILE,
    (
        ColumnSpec("step", "int64", nonnegative=True),
        ColumnSpec("source", "string"),
        ColumnSpec("basis", "string", allowed=tuple(b.value for b in Basis)),
        ColumnSpec("direction", "int64", nonnegative=True),
        ColumnSpec("sample", "int64", nonnegative=True),
        ColumnSpec("value", "float64"),
        ColumnSpec("block", "string", required=False, nullable=True),
    ),
    "One row per noise sample per direction per probe (long format).",
    unique_key=("step", "source", "block", "sample", "basis", "direction"),
)

#: Optional tables a run may carry, by file name. Readers validate them when present
#: (``io.read_table``); the analysis of ``varprinciple test`` never needs them.
OPTIONAL_TABLES: dict[str, TableSpec] = {}


def register_optional_table(spec: TableSpec) -> TableSpec:
    """Add an optional table to :data:`OPTIONAL_TABLES` (one place per table)."""
    OPTIONAL_TABLES[spec.file] = spec
    return spec


# --------------------------------------------------------------------------- dtypes

_INT_OK = (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32())
_FLOAT_OK = (pa.float16(), pa.float32(), pa.float64())


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _cast_column(col: pa.ChunkedArray, spec: ColumnSpec) -> tuple[pa.ChunkedArray | None, str | None]:
    """Cast ``col`` to the spec's type if that is a lossless upcast; else explain."""
    t = col.type
    if spec.kind == "int64":
        if t == pa.int64():
            return col, None
        if any(t == ok for ok in _INT_OK):
            return col.cast(pa.int64()), None
        if t == pa.uint64():
            if len(col) and pc.max(col).as_py() > np.iinfo(np.int64).max:
                return None, "uint64 values overflow int64"
            return col.cast(pa.int64()), None
        return None, f"has dtype {t}, expected int64 (or a narrower integer)"
    if spec.kind == "float64":
        if t == pa.float64():
            return col, None
        if any(t == ok for ok in _FLOAT_OK):
            return col.cast(pa.float64()), None
        return None, f"has dtype {t}, expected float64 (or float32)"
    if spec.kind == "string":
        if t == pa.string():
            return col, None
        if _is_string(t):
            return col.cast(pa.string()), None
        return None, f"has dtype {t}, expected string"
    if spec.kind == "bool":
        if t == pa.bool_():
            return col, None
        return None, f"has dtype {t}, expected bool"
    if spec.kind in ("list<float32>", "list<float64>"):
        if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) and (
            pa.types.is_floating(t.value_type)
        ):
            return col, None
        return None, f"has dtype {t}, expected {spec.kind}"
    raise ValueError(f"unknown column kind {spec.kind!r}")  # pragma: no cover - programming error


def normalize_table(table: pa.Table, spec: TableSpec, *,
                    check_key: bool = True) -> tuple[pa.Table | None, list[tuple[str | None, str]]]:
    """Validate one table against ``spec`` and return it with canonical dtypes.

    Returns ``(table, problems)``; each problem is ``(column or None, message)``.
    ``table`` is None when a problem prevents normalisation. Extra columns are kept.
    Checks: required columns present, dtypes (lossless upcasts accepted), nulls,
    NaN/Inf in float columns, negative values where not allowed, allowed strings,
    that the table is not empty, and (``check_key``) that ``spec.unique_key`` is unique
    (:func:`key_problems`; the reader of ``noise.parquet`` checks its key itself while
    sorting the draws, so it passes False).
    """
    problems: list[tuple[str | None, str]] = []
    names = set(table.column_names)
    for name in spec.required_names:
        if name not in names:
            problems.append((f"column {name!r}", "missing"))
    if problems:
        return None, problems
    if table.num_rows == 0:
        return None, [(None, "table is empty")]
    out = table
    for c in spec.columns:
        if c.name not in names:
            continue
        col = table.column(c.name)
        cast, why = _cast_column(col, c)
        label = f"column {c.name!r}"
        if why is not None:
            problems.append((label, why))
            continue
        nnull = cast.null_count
        if nnull and not c.nullable:
            what = "null/NaN" if c.kind == "float64" else "null"
            problems.append((label, f"{nnull} {what} value{'s' if nnull > 1 else ''}"))
            continue
        if c.kind == "float64" and c.finite:
            arr = (pc.drop_null(cast) if nnull else cast).to_numpy()  # nulls of a nullable column are fine
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                problems.append((label, f"{bad} NaN/Inf value{'s' if bad > 1 else ''}"))
        if c.kind.startswith("list<") and (c.finite or c.nonnegative):  # every element of every list
            arr = np.asarray(pc.list_flatten(pc.drop_null(cast) if nnull else cast).to_numpy(zero_copy_only=False),
                             dtype=float)
            if c.finite and (bad := int(np.count_nonzero(~np.isfinite(arr)))):
                problems.append((label, f"{bad} NaN/Inf list element{'s' if bad > 1 else ''}"))
            if c.nonnegative and arr.size and np.nanmin(arr) < 0:
                problems.append((label, f"negative list elements (min {np.nanmin(arr)})"))
        if c.nonnegative and c.kind in ("int64", "float64"):
            mn = pc.min(cast).as_py()
            if mn is not None and mn < 0:
                problems.append((label, f"negative values (min {mn})"))
        if c.allowed is not None:
            uniq = pc.unique(cast).to_pylist()
            bad_vals = sorted(str(u) for u in uniq if u not in c.allowed)
            if bad_vals:
                problems.append((label, f"values {bad_vals} not in {list(c.allowed)}"))
        if c.kind == "string" and c.name != "block":
            empty = pc.sum(pc.equal(pc.utf8_length(cast), 0)).as_py() or 0
            if empty:
                problems.append((label, f"{empty} empty string{'s' if empty > 1 else ''}"))
        out = out.set_column(out.schema.get_field_index(c.name), c.name, cast)
    if not problems and check_key:
        problems += key_problems(out, spec)
    if problems:
        return None, problems
    return out, problems


def _combined_codes(table: pa.Table, key: list[str]) -> np.ndarray | None:
    """One int64 per row, equal exactly when the rows' key values are equal (mixed radix
    of per-column codes; null is a code of its own), or None if the radix overflows."""
    code = np.zeros(table.num_rows, dtype=np.int64)
    radix_total = 1
    for k in key:
        col = table.column(k).combine_chunks()
        if pa.types.is_integer(col.type):
            v = col.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            lo, hi = int(v.min()), int(v.max())
            if hi - lo + 2 >= 2 ** 62:
                return None
            c = v - lo + 1
            if col.null_count:
                c[col.is_null().to_numpy(zero_copy_only=False)] = 0
            radix = hi - lo + 2
        else:
            enc = col.dictionary_encode()
            c = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
            radix = len(enc.dictionary) + 1
        radix_total *= radix
        if radix_total >= 2 ** 62:
            return None
        code = code * radix + c
    return code


def key_problems(table: pa.Table, spec: TableSpec) -> list[tuple[str | None, str]]:
    """Rows that share ``spec.unique_key`` (one problem naming the key and an example).

    Examples
    --------
    >>> t = pa.table({"step": [0, 0, 1], "quantity": ["lambda_max"] * 3, "estimate": [1.0, 2.0, 3.0]})
    >>> key_problems(t, OPTIONAL_TABLES["flatness.parquet"])
    [("columns ('step', 'quantity')", "1 duplicate row (the key must be unique; e.g. step=0, quantity='lambda_max')")]
    """
    key = [k for k in spec.unique_key if k in table.column_names]
    if not key or table.num_rows < 2:
        return []
    code = _combined_codes(table, key)
    if code is not None:  # fast path: one int64 per row, sorted
        srt = np.sort(code)
        same = srt[1:] == srt[:-1]
        extra = int(np.count_nonzero(same))
        if not extra:
            return []
    counts = table.select(key).group_by(key, use_threads=False).aggregate([([], "count_all")])
    n = counts.column("count_all").to_numpy()
    extra = int(np.sum(n - 1))
    if not extra:
        return []
    first = counts.slice(int(np.flatnonzero(n > 1)[0]), 1).to_pylist()[0]
    example = ", ".join(f"{k}={first[k]!r}" for k in key)
    return [(f"columns {tuple(key)}", f"{extra} duplicate row{'s' if extra > 1 else ''} "
             f"(the key must be unique; e.g. {example})")]


# ------------------------------------------------------------------ optional tables
# Each optional table is declared once here. The analysis never requires them.

#: Exact projected noise variance (e.g. SGD's, from per-sample gradients with
#: DESIGN.md's formula), one row per direction per probe, beside the sampled values.
EXACT_VARIANCE = register_optional_table(TableSpec(
    "exact_variance.parquet",
    (
        ColumnSpec("step", "int64", nonnegative=True),
        ColumnSpec("source", "string"),
        ColumnSpec("basis", "string", allowed=tuple(b.value for b in Basis)),
        ColumnSpec("direction", "int64", nonnegative=True),
        ColumnSpec("variance", "float64", nonnegative=True),
        ColumnSpec("block", "string", required=False, nullable=True),
        ColumnSpec("se", "float64", required=False, nullable=True, nonnegative=True),
        ColumnSpec("group_variance", "list<float64>", required=False, nullable=True, nonnegative=True),
    ),
    "Noise variance along each probed direction from its exact formula: SGD's from the per-sample "
    "gradients (exact), dropout's unbiased two-masks-per-sample estimate (sampling error far below "
    "the K draws'); optional `se`: the standard error of an estimated variance (dropout; null when "
    "exact); optional `group_variance`: the estimate's contributions of J random groups of samples "
    "(float64 list summing to `variance`; dropout), from which the statistics fit b without draws.",
    unique_key=("step", "source", "block", "basis", "direction"),
))

#: Per-parameter diagonals of the Hessian and of the SGD noise covariance (``[probe]
#: diag_params``; varprinciple.collect.diagonal): per probe and block a uniform sample of
#: parameters (flat coordinate ``param`` of theta) with exact h_ii (HVPs with unit vectors, any
#: sign) and c_ii (per-sample gradient variance times (n-B)/(B(n-1)), B the probe batch size).
DIAGONAL = register_optional_table(TableSpec(
    "diagonal.parquet",
    (
        ColumnSpec("step", "int64", nonnegative=True),
        ColumnSpec("block", "string"),
        ColumnSpec("param", "int64", nonnegative=True),
        ColumnSpec("h_ii", "float64"),
        ColumnSpec("c_ii", "float64", nonnegative=True),
    ),
    "Exact per-parameter Hessian diagonal h_ii and SGD-noise variance c_ii on a random sample of "
    "parameters per layer (C_ii ~ H_ii^gamma, Zhang, Yang & Tu 2026).",
    unique_key=("step", "block", "param"),
))

#: Flatness and alignment scalars per probe: quantity is one of lambda_max,
#: hessian_trace, rho (Zhu et al.'s D Tr(HC) / (Tr(H) Tr(C)), per noise source),
#: tr_hc, tr_c; se is the estimator's standard error (null when exact).
FLATNESS = register_optional_table(TableSpec(
    "flatness.parquet",
    (
        ColumnSpec("step", "int64", nonnegative=True),
        ColumnSpec("quantity", "string"),
        ColumnSpec("source", "string", required=False, nullable=True),
        ColumnSpec("estimate", "float64"),
        ColumnSpec("se", "float64", required=False, nullable=True, nonnegative=True),
        ColumnSpec("block", "string", required=False, nullable=True),
    ),
    "Flatness (lambda_max, Tr(H)) and noise-alignment (rho) scalars per probe.",
    unique_key=("step", "quantity", "source", "block"),
))

# collect: further tables (training curves, ...) are registered below this line.

#: Training curves of a collected run (varprinciple.collect.train): one row per logged
#: step; losses are full-batch means with dropout off, accuracy is null for regression,
#: test columns are null without a test split; elapsed_s is wall time since training began.
TRAINING = register_optional_table(TableSpec(
    "training.parquet",
    (
        ColumnSpec("step", "int64", nonnegative=True),
        ColumnSpec("train_loss", "float64", nonnegative=True),
        ColumnSpec("train_accuracy", "float64", required=False, nullable=True, finite=False),
        ColumnSpec("test_loss", "float64", required=False, nullable=True, finite=False),
        ColumnSpec("test_accuracy", "float64", required=False, nullable=True, finite=False),
        ColumnSpec("elapsed_s", "float64", required=False, nonnegative=True),
    ),
    "Training curves: full-batch loss and accuracy on the train and test splits per logged step.",
    unique_key=("step",),
))

# trajectory and loss profiles (varprinciple.collect.trajectory / .profiles; docs/flatness.md)

#: Weight-trajectory PCA of a late window, one row per principal component (0 = PC1, the
#: drift direction). PCs come from the window's first half; variance (ddof 1),
#: variance_short (first half of the second half) and the widths (f = e: width, f = 2:
#: width_2; null when censored) around the second half's mean weights from its second half.
TRAJECTORY = register_optional_table(TableSpec(
    "trajectory.parquet",
    (
        ColumnSpec("component", "int64", nonnegative=True),
        ColumnSpec("variance", "float64", nonnegative=True),
        ColumnSpec("variance_short", "float64", nonnegative=True),
        ColumnSpec("variance_ratio", "float64", required=False, nullable=True, nonnegative=True),
        ColumnSpec("variance_fit", "float64", required=False, nonnegative=True),
        ColumnSpec("width", "float64", nullable=True, nonnegative=True),
        ColumnSpec("width_2", "float64", required=False, nullable=True, nonnegative=True),
        ColumnSpec("t_minus", "float64", required=False, nullable=True, nonnegative=True),
        ColumnSpec("t_plus", "float64", required=False, nullable=True, nonnegative=True),
        ColumnSpec("loss0", "float64", nonnegative=True),
        ColumnSpec("drift", "bool"),
        ColumnSpec("n_snapshots", "int64", nonnegative=True),
        ColumnSpec("params", "string", required=False),
    ),
    "Split-half PCA of the weight trajectory: variance and landscape width per component.",
    unique_key=("params", "component"),
))

#: The second half's snapshots projected on the PCs (centred on the first half's mean):
#: the time series behind trajectory.parquet's variances (psi's stationary variances are fitted to it).
TRAJECTORY_PROJECTIONS = register_optional_table(TableSpec(
    "trajectory_projections.parquet",
    (
        ColumnSpec("step", "int64", nonnegative=True),
        ColumnSpec("component", "int64", nonnegative=True),
        ColumnSpec("value", "float64"),
    ),
    "Second-half weight snapshots projected on the trajectory PCs, one row per snapshot per PC.",
    unique_key=("step", "component"),
))

#: 1-D loss profiles L(centre + t d): kind 'pc' (d = trajectory PC `direction`, centre the
#: second half's mean), 'random' (filter-normalised random direction), 'interpolation'
#: (t = 0: this run, t = 1: run `other_run`); loss0 = the loss at the centre.
LOSS_PROFILES = register_optional_table(TableSpec(
    "loss_profiles.parquet",
    (
        ColumnSpec("kind", "string", allowed=("pc", "random", "interpolation")),
        ColumnSpec("direction", "int64", nonnegative=True),
        ColumnSpec("t", "float64"),
        ColumnSpec("loss", "float64", finite=False, nullable=True),
        ColumnSpec("loss0", "float64", required=False, finite=False),
        ColumnSpec("other_run", "string", required=False, nullable=True),
    ),
    "1-D loss profiles along trajectory PCs, filter-normalised random directions and run-to-run lines.",
    unique_key=("kind", "other_run", "direction", "t"),
))
