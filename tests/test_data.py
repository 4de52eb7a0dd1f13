"""Data sources: shapes, splits, standardisation, and the errors of user files (npz, IDX)."""

from __future__ import annotations

import gzip
import random

import numpy as np
import pytest

from varprinciple.collect.config import validate_config
from varprinciple.collect.data import load_data, make_mnist1d, read_idx, write_idx
from varprinciple.errors import ConfigError, InputError


def data_cfg(**kw):
    return validate_config({"data": kw})["data"]


def test_digits_split_and_first_n():
    full = load_data(data_cfg(name="digits"))
    assert full.n_train + full.n_test == 1797
    assert full.n_test == round(0.2 * 1797)
    assert full.input_shape == (8, 8) and full.task == "classification" and full.n_outputs == 10
    # standardised with training statistics
    flat = full.X_train.reshape(full.n_train, -1)
    used = flat.std(0) > 0
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(flat.std(0)[used], 1, rtol=1e-12)
    # first n samples of the same split
    sub = load_data(data_cfg(name="digits", n_train=100, n_test=50))
    assert (sub.n_train, sub.n_test) == (100, 50)
    raw = load_data(data_cfg(name="digits", standardize=False))
    raw_sub = load_data(data_cfg(name="digits", standardize=False, n_train=100))
    np.testing.assert_array_equal(raw_sub.X_train, raw.X_train[:100])
    info = sub.split_info()
    assert info["n_train"] == 100 and "split_seed 0" in info["split"] and len(info["data_hash"]) == 16
    other = load_data(data_cfg(name="digits", n_train=100, split_seed=1))
    assert other.split_info()["data_hash"] != info["data_hash"]


def test_n_train_larger_than_the_split():
    with pytest.raises(ConfigError, match=r"^\[data\] n_train: data 'digits' has 1438 training samples; got 5000$"):
        load_data(data_cfg(name="digits", n_train=5000))


def test_mnist1d_generated_offline_and_leaves_global_state():
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.random())
    random.seed(123)
    np.random.seed(123)
    ds = load_data(data_cfg(name="mnist1d", n_samples=200))
    after = (random.random(), np.random.random())
    assert before == after
    assert ds.input_shape == (40,) and ds.n_train == 160 and ds.n_outputs == 10
    again = load_data(data_cfg(name="mnist1d", n_samples=200))
    np.testing.assert_array_equal(ds.X_train, again.X_train)


@pytest.mark.parametrize("n", [2, 9, 15, 205])
def test_mnist1d_n_samples_must_be_a_multiple_of_ten(n):
    # review defect: < 10 crashed inside mnist1d, non-multiples were silently truncated
    with pytest.raises(ConfigError, match=rf"^\[data\] n_samples: mnist1d makes equal numbers of the 10 "
                                          rf"classes; give a multiple of 10 \(>= 10\); got {n}$"):
        data_cfg(name="mnist1d", n_samples=n)
    with pytest.raises(ConfigError, match=rf"^\[data\] n_samples: .*; got {n}$"):
        make_mnist1d(n)
    # other generated sources keep their own lower bound
    assert data_cfg(name="teacher_student", n_samples=n)["n_samples"] == n


def test_mnist1d_ten_samples_gives_one_per_class():
    X, y = make_mnist1d(10)
    assert X.shape == (10, 40) and sorted(y.tolist()) == list(range(10))


def test_teacher_student_and_function_1d():
    ts = load_data(data_cfg(name="teacher_student", n_samples=100, n_features=4, n_outputs=2, teacher_width=5))
    assert ts.task == "regression" and ts.y_train.shape == (80, 2) and ts.X_train.shape == (80, 4)
    f = load_data(data_cfg(name="function_1d", n_samples=50, noise=0.0, function="abs", standardize=False))
    np.testing.assert_allclose(f.y_train[:, 0], np.abs(f.X_train[:, 0]))
    assert f.X_train.min() >= -1 and f.X_train.max() <= 1


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npz"
    np.savez(p, X=rng.normal(size=(30, 3)), y=rng.integers(0, 3, 30))
    ds = load_data(data_cfg(name="npz", path="d.npz", test_fraction=0.1), base_dir=tmp_path)
    assert ds.task == "classification" and ds.n_train == 27 and ds.n_outputs == 3
    q = tmp_path / "r.npz"
    np.savez(q, X=rng.normal(size=(20, 2)), y=rng.normal(size=20), X_test=rng.normal(size=(5, 2)),
             y_test=rng.normal(size=5))
    ds = load_data(data_cfg(name="npz", path=str(q)))
    assert ds.task == "regression" and (ds.n_train, ds.n_test) == (20, 5) and ds.split.startswith("the source")


@pytest.mark.parametrize("arrays, match", [
    ({"X": np.zeros((3, 2))}, r"m.npz: missing array 'y' \(found \['X'\]\)"),
    ({"y": np.zeros(3)}, r"m.npz: missing array 'X'"),
    ({"X": np.zeros((3, 2)), "y": np.zeros(4)}, r"m.npz: 'X' has 3 rows but 'y' has 4"),
    ({"X": np.zeros((3, 2)), "y": np.zeros(3), "X_test": np.zeros((2, 2))}, r"give both 'X_test' and 'y_test'"),
    ({"X": np.zeros((3, 2)), "y": np.zeros(3), "X_test": np.zeros((2, 2)), "y_test": np.zeros(1)},
     r"'X_test' has 2 rows but 'y_test' has 1"),
    ({"X": np.zeros((3, 2)), "y": np.zeros(3), "X_test": np.zeros((2, 5)), "y_test": np.zeros(2)},
     r"'X_test' samples have shape \(5,\), 'X' samples \(2,\)"),
    ({"X": np.zeros(3), "y": np.zeros(3)}, r"array 'X' must be \(n, features\) or \(n, height, width\)"),
    ({"X": np.array([[np.nan], [1], [2]]), "y": np.zeros(3)}, r"array 'X' holds NaN or Inf"),
    ({"X": np.array([["a"], ["b"]]), "y": np.zeros(2)}, r"array 'X' has dtype <U1; expected numbers"),
    ({"X": np.zeros((3, 2)), "y": np.array([0, -1, 1])}, r"integer labels 'y' must be >= 0"),
    ({"X": np.zeros((4, 2)), "y": np.array([1, 1, 1, 1])}, r"the training split holds a single class"),
])
def test_npz_errors_name_file_and_key(tmp_path, arrays, match):
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(InputError, match=match):
        load_data(data_cfg(name="npz", path=str(tmp_path / "m.npz"), test_fraction=0.0))


def test_npz_unreadable(tmp_path):
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(InputError, match=r"junk.npz: cannot read the .npz file"):
        load_data(data_cfg(name="npz", path=str(tmp_path / "junk.npz")))


def write_mnist_dir(d, *, n=20, m=6, test=True, gz=False):
    rng = np.random.default_rng(0)
    d.mkdir(exist_ok=True)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
             "train-labels-idx1-ubyte": (np.arange(n) % 10).astype(np.uint8)}
    if test:
        files["t10k-images-idx3-ubyte"] = rng.integers(0, 256, (m, 28, 28), dtype=np.uint8)
        files["t10k-labels-idx1-ubyte"] = (np.arange(m) % 10).astype(np.uint8)
    for name, a in files.items():
        write_idx(d / name, a)
        if gz:
            (d / (name + ".gz")).write_bytes(gzip.compress((d / name).read_bytes()))
            (d / name).unlink()
    return files


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory(tmp_path, gz):
    files = write_mnist_dir(tmp_path / "mnist", gz=gz)
    ds = load_data(data_cfg(name="idx", path="mnist", standardize=False), base_dir=tmp_path)
    assert ds.input_shape == (28, 28) and (ds.n_train, ds.n_test) == (20, 6)
    np.testing.assert_array_equal(ds.X_train, files["train-images-idx3-ubyte"].astype(float))
    np.testing.assert_array_equal(ds.y_test, files["t10k-labels-idx1-ubyte"])
    write_mnist_dir(tmp_path / "notest", test=False)
    ds = load_data(data_cfg(name="idx", path=str(tmp_path / "notest"), test_fraction=0.25))
    assert (ds.n_train, ds.n_test) == (15, 5)


def test_idx_roundtrip_dtypes(tmp_path):
    for a in (np.arange(6, dtype=np.int16).reshape(2, 3), np.linspace(0, 1, 4).astype(np.float32),
              np.linspace(0, 1, 4), np.arange(3, dtype=np.int32)):
        write_idx(tmp_path / "a-idx", a)
        b = read_idx(tmp_path / "a-idx")
        assert b.dtype == a.dtype
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match=r"write_idx: dtype int64 has no IDX code"):
        write_idx(tmp_path / "b-idx", np.arange(3, dtype=np.int64))


def test_idx_errors(tmp_path):
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(InputError, match=r"bad-idx1-ubyte: not an IDX file \(bad magic number\)"):
        read_idx(bad)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(bytes([0, 0, 8, 2, 0, 0]))
    with pytest.raises(InputError, match=r"short-idx1-ubyte: not an IDX file \(truncated header\)"):
        read_idx(short)
    trunc = tmp_path / "trunc-idx1-ubyte"
    write_idx(trunc, np.arange(10, dtype=np.uint8))
    trunc.write_bytes(trunc.read_bytes()[:-3])
    with pytest.raises(InputError, match=r"trunc-idx1-ubyte: IDX data has 7 bytes; the header's shape \(10,\) needs 10"):
        read_idx(trunc)
    with pytest.raises(InputError, match=r"missing-idx: cannot read the IDX file"):
        read_idx(tmp_path / "missing-idx")
    d = tmp_path / "d"
    write_mnist_dir(d, test=False)
    (d / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(InputError, match=r"d: no train labels IDX file"):
        load_data(data_cfg(name="idx", path=str(d)))
    write_idx(d / "train-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte has 20 images but train-labels-idx1-ubyte has 3"):
        load_data(data_cfg(name="idx", path=str(d)))
    write_idx(d / "train-labels-idx1-ubyte", (np.arange(20) % 10).astype(np.uint8))
    write_idx(d / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(InputError, match=r"test labels IDX file missing"):
        load_data(data_cfg(name="idx", path=str(d)))
    write_idx(d / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(InputError, match=r"t10k-images-idx3-ubyte has 2 images but t10k-labels-idx1-ubyte has 3"):
        load_data(data_cfg(name="idx", path=str(d)))
    write_idx(d / "test-labels-idx1-ubyte", np.zeros(2, dtype=np.uint8))
    with pytest.raises(InputError, match=r"several t10k/test labels IDX files: t10k-labels-idx1-ubyte, "
                                         r"test-labels-idx1-ubyte"):
        load_data(data_cfg(name="idx", path=str(d)))
    with pytest.raises(InputError, match=r"not a directory"):
        load_data(data_cfg(name="idx", path=str(tmp_path / "nowhere")))
