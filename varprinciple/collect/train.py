"""Training: GD (full batch), SGD (batch size B, shuffled epochs), dropout with either.

One update per step with ``torch.optim.SGD`` (optional momentum and weight decay). SGD
draws a fresh permutation of the training set each epoch from an explicit
``torch.Generator`` and takes consecutive batches of exactly B samples (the last
incomplete batch of an epoch is dropped, so every update sees B samples). Dropout
methods train with the model in train mode (``nn.Dropout`` active); dropout masks come
from PyTorch's global generator, which :func:`train` seeds from ``generator`` inside
``torch.random.fork_rng`` and restores afterwards, so training is reproducible on CPU for
a given seed and leaves the caller's global state untouched.

Training curves (full-batch loss and accuracy on the train and test splits, dropout
off) are recorded every ``log_every`` steps, at every probe step and at the last step; they are written as the
optional table ``training.parquet`` (:data:`varprinciple.schema.OPTIONAL_TABLES`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import schema
from ..errors import InputError
from .config import Method
from .losses import Loss, mean_loss, per_sample_loss

__all__ = ["TrainResult", "train", "prepare_tensors", "evaluate", "TRAINING_FILE", "SAMPLERS"]

logger = logging.getLogger(__name__)

TRAINING_FILE = schema.TRAINING.file
#: minibatch samplers of :func:`train` (the ``[train] sampler`` key)
SAMPLERS = ("epochs", "independent")


@dataclass(frozen=True)
class TrainResult:
    """What training produced: the curves (one row per logged step) and the wall time."""

    curves: pd.DataFrame
    steps: int
    wall_s: float
    final_train_loss: float
    target_loss: float | None = None
    target_reached: bool | None = None
    stop_step: int | None = None
    loss_at_stop: float | None = None

    def target_info(self) -> dict | None:
        """The matched-loss stop record for run.json (None when no target was set)."""
        if self.target_loss is None:
            return None
        return {"loss": self.target_loss, "reached": bool(self.target_reached),
                "stop_step": self.stop_step, "loss_at_stop": self.loss_at_stop,
                "final_train_loss": self.final_train_loss, "steps_trained": self.steps}

    def to_frame(self) -> pd.DataFrame:
        return self.curves.copy()


def prepare_tensors(X: np.ndarray, y: np.ndarray, *, loss: Loss, n_outputs: int,
                    dtype: torch.dtype, device: str | torch.device = "cpu",
                    task: str = "classification") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Inputs, loss targets and class labels (None for regression) as tensors.

    MSE on class labels uses one-hot targets.
    """
    Xt = torch.as_tensor(X, dtype=dtype, device=device)
    if task == "classification":
        labels = torch.as_tensor(y, dtype=torch.long, device=device)
        if Loss(loss) is Loss.MSE:
            target = torch.nn.functional.one_hot(labels, n_outputs).to(dtype)
        else:
            target = labels
        return Xt, target, labels
    return Xt, torch.as_tensor(y, dtype=dtype, device=device), None


@torch.no_grad()
def evaluate(model: nn.Module, loss: Loss, X: torch.Tensor, y: torch.Tensor,
             labels: torch.Tensor | None, *, chunk: int = 4096) -> tuple[float, float]:
    """Full-batch loss (dropout off) and accuracy (NaN without labels) of ``model``."""
    if len(X) == 0:
        return math.nan, math.nan
    was = model.training
    model.eval()
    try:
        tot, correct = 0.0, 0
        for a in range(0, len(X), chunk):
            out = model(X[a:a + chunk])
            tot += float(per_sample_loss(Loss(loss), out, y[a:a + chunk]).sum())
            if labels is not None:
                correct += int((out.argmax(1) == labels[a:a + chunk]).sum())
    finally:
        model.train(was)
    return tot / len(X), (correct / len(X) if labels is not None else math.nan)


def train(model: nn.Module, loss: Loss | str, X: torch.Tensor, y: torch.Tensor, *,
          method: Method | str, lr: float, steps: int, batch_size: int | None,
          generator: torch.Generator, labels: torch.Tensor | None = None,
          X_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
          labels_test: torch.Tensor | None = None, momentum: float = 0.0,
          weight_decay: float = 0.0, log_every: int = 50, probe_steps: Iterable[int] = (),
          on_probe: Callable[[int, nn.Module], None] | None = None,
          progress: bool = False, target_loss: float | None = None,
          target_check_every: int = 10, sampler: str = "epochs") -> TrainResult:
    """Train ``model`` in place.

    Parameters
    ----------
    model : nn.Module
        Trained in place; dropout layers are active only for dropout methods.
    loss : Loss or str
    X, y : Tensor
        Training inputs and loss targets (see :func:`prepare_tensors`).
    method : Method or str
        ``gd``, ``sgd``, ``dropout`` (full batch) or ``sgd+dropout``.
    lr : float
    steps : int
        Parameter updates.
    batch_size : int or None
        B for minibatch methods (must be < n); ignored by full-batch methods.
    generator : torch.Generator
        Shuffling stream; the dropout masks' seed is drawn from it.
    labels, X_test, y_test, labels_test : Tensor, optional
        Class labels (for accuracy) and the test split, for the curves.
    log_every : int, default 50
    probe_steps : iterable of int
        Steps (0..steps) at which ``on_probe(step, model)`` is called, before that step's
        update (step ``steps`` is after the last update).
    progress : bool
        Show a tqdm bar.
    target_loss : float, optional
        Matched-loss stop rule (docs/flatness.md): the full-batch training loss (dropout
        off) is checked before the update of every ``target_check_every``-th step and at
        the last step; training stops at the first checked step where it is
        ``<= target_loss``. That step becomes the last one: ``on_probe`` is called there
        (also when it is not in ``probe_steps``) and later probe steps are skipped.
    target_check_every : int, default 10
    sampler : {"epochs", "independent"}, default "epochs"
        How minibatch methods draw their batches: ``epochs`` walks through a fresh random
        permutation of the data, ``floor(n/B)`` batches per epoch (random reshuffling: the
        noise of one epoch's steps sums to zero); ``independent`` draws every batch as a new
        uniform subset of size B without replacement, independently across steps (the SGD
        model of DESIGN.md, C_B exactly, with no cancellation between steps; what the
        theory of SGD as a stochastic process assumes, docs/flatness.md).

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        If ``batch_size`` is not below the number of samples for a minibatch method, or
        the loss becomes NaN/Inf (lower the learning rate).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(40, 3, generator=g); y = X @ torch.ones(3, 1)
    >>> model = torch.nn.Linear(3, 1)
    >>> _ = torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
    >>> res = train(model, "mse", X, y, method="sgd", lr=0.1, steps=100, batch_size=8,
    ...             generator=g, log_every=50)
    >>> list(res.curves["step"]), res.final_train_loss < 1e-3
    ([0, 50, 100], True)

    With a target loss the run stops at the first checked step below it:

    >>> _ = torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
    >>> res = train(model, "mse", X, y, method="gd", lr=0.1, steps=500, batch_size=None,
    ...             generator=g, target_loss=0.01, target_check_every=5)
    >>> res.target_reached, res.stop_step, res.loss_at_stop <= 0.01, int(res.curves["step"].iloc[-1])
    (True, 25, True, 25)
    """
    method = Method(method)
    loss = Loss(loss)
    n = len(X)
    if sampler not in SAMPLERS:
        raise InputError(f"`sampler` must be one of {list(SAMPLERS)}; got {sampler!r}")
    if method.minibatch:
        if batch_size is None or not 1 <= batch_size < n:
            raise InputError(f"`batch_size` must be in [1, {n}) for method {method.value!r} "
                             f"(n = {n} training samples); got {batch_size}")
    if target_loss is not None and not (math.isfinite(target_loss) and target_loss >= 0):
        raise InputError(f"`target_loss` must be a finite number >= 0; got {target_loss}")
    if isinstance(target_check_every, bool) or not isinstance(target_check_every, int) \
            or target_check_every < 1:
        raise InputError(f"`target_check_every` must be an integer >= 1; got {target_check_every!r}")
    probe_set = {int(s) for s in probe_steps}
    stop_step, loss_at_stop = None, None
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    rows = []
    t0 = time.perf_counter()
    mask_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    devices = [X.device.index or 0] if X.device.type == "cuda" else []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"train {method.value}", unit="step", leave=False)
    perm, pos = None, n
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(mask_seed)
        for step in range(steps + 1):
            check = target_loss is not None and (step % target_check_every == 0 or step == steps)
            tr_now = evaluate(model, loss, X, y, labels) if check else None
            stop = tr_now is not None and tr_now[0] <= target_loss
            if step % log_every == 0 or step == steps or step in probe_set or stop:
                tr = tr_now if tr_now is not None else evaluate(model, loss, X, y, labels)
                te = (evaluate(model, loss, X_test, y_test, labels_test) if X_test is not None
                      else (math.nan, math.nan))
                rows.append((step, tr[0], tr[1], te[0], te[1], time.perf_counter() - t0))
                if not math.isfinite(tr[0]):
                    raise InputError(f"training diverged at step {step} (train loss {tr[0]}); "
                                     f"lower the learning rate (lr = {lr})")
                if bar is None:
                    logger.debug("step %d: train loss %.4g, test loss %.4g", step, tr[0], te[0])
            if (step in probe_set or stop) and on_probe is not None:
                model.eval()
                on_probe(step, model)
            if stop:
                stop_step, loss_at_stop = step, float(tr_now[0])
                logger.info("target loss %.4g reached at step %d (train loss %.4g)", target_loss, step,
                            tr_now[0])
                break
            if step == steps:
                break
            if method.minibatch and sampler == "independent":
                idx = torch.randperm(n, generator=generator, device="cpu")[:batch_size].to(X.device)
                Xb, yb = X[idx], y[idx]
            elif method.minibatch:
                if pos + batch_size > n:
                    perm, pos = torch.randperm(n, generator=generator, device="cpu").to(X.device), 0
                idx = perm[pos:pos + batch_size]
                pos += batch_size
                Xb, yb = X[idx], y[idx]
            else:
                Xb, yb = X, y
            model.train(method.dropout)
            opt.zero_grad(set_to_none=True)
            value = mean_loss(loss, model(Xb), yb)
            value.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
    model.eval()
    if bar is not None:
        bar.close()
    curves = pd.DataFrame(rows, columns=["step", "train_loss", "train_accuracy", "test_loss",
                                         "test_accuracy", "elapsed_s"])
    curves["step"] = curves["step"].astype("int64")
    wall = time.perf_counter() - t0
    trained = steps if stop_step is None else stop_step
    logger.info("trained %s for %d steps in %.1f s: train loss %.4g", method.value, trained, wall,
                curves["train_loss"].iloc[-1])
    if target_loss is not None and stop_step is None:
        logger.warning("target loss %.4g NOT reached within %d steps (train loss %.4g): the run is "
                       "not at the matched loss", target_loss, steps, curves["train_loss"].iloc[-1])
    return TrainResult(curves, trained, wall, float(curves["train_loss"].iloc[-1]),
                       target_loss=None if target_loss is None else float(target_loss),
                       target_reached=None if target_loss is None else stop_step is not None,
                       stop_step=stop_step, loss_at_stop=loss_at_stop)
