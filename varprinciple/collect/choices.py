"""The closed choice sets of a collect config (``StrEnum`` classes; the CLI and the TOML accept the
same strings) and which datasets are regression or image data.

Re-exported by :mod:`varprinciple.collect.config` (import from there). No torch.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Method", "DatasetName", "Arch", "Activation", "LossName", "Function1D", "REGRESSION_DATA",
           "IMAGE_DATA"]


class Method(StrEnum):
    """Training method: full-batch GD, minibatch SGD, and dropout with either."""

    GD = "gd"
    SGD = "sgd"
    DROPOUT = "dropout"
    SGD_DROPOUT = "sgd+dropout"

    @property
    def minibatch(self) -> bool:
        return self in (Method.SGD, Method.SGD_DROPOUT)

    @property
    def dropout(self) -> bool:
        return self in (Method.DROPOUT, Method.SGD_DROPOUT)


class DatasetName(StrEnum):
    """Data sources; none is downloaded."""

    DIGITS = "digits"
    MNIST = "mnist"
    MNIST1D = "mnist1d"
    TEACHER_STUDENT = "teacher_student"
    FUNCTION_1D = "function_1d"
    NPZ = "npz"
    IDX = "idx"


class Arch(StrEnum):
    LINEAR = "linear"
    MLP = "mlp"
    CNN = "cnn"


class Activation(StrEnum):
    RELU = "relu"
    TANH = "tanh"


class LossName(StrEnum):
    """Loss choice in a config; ``auto`` is cross-entropy for classification, MSE otherwise."""

    AUTO = "auto"
    MSE = "mse"
    CROSS_ENTROPY = "cross_entropy"


class Function1D(StrEnum):
    SIN = "sin"
    ABS = "abs"
    CUBIC = "cubic"


#: Named datasets that are regression tasks (``cross_entropy`` is refused for them).
REGRESSION_DATA = (DatasetName.TEACHER_STUDENT.value, DatasetName.FUNCTION_1D.value)
#: Datasets with images (``arch = "cnn"`` needs one).
IMAGE_DATA = (DatasetName.DIGITS.value, DatasetName.MNIST.value, DatasetName.IDX.value, DatasetName.NPZ.value)
