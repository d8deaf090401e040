r"""Minibatch SGD for :class:`~torch_svm.model.LinearSVM`, and a search over its hyperparameters.

:func:`train` is the canonical PyTorch loop (``model.train()``, ``zero_grad``, loss,
``backward``, ``step``) with ``torch.optim.SGD``; ``backward`` runs the hand-written gradient
unless ``grad`` says otherwise. :func:`tune` runs it over a grid or a random sample of learning
rate x regularization (x iterations), picks the setting with the best validation accuracy and
reports test accuracy for that one model only.

Regularization stays in the loss as :math:`\lambda \sum W^2`, whose gradient is
:math:`2 \lambda W`. That is exactly SGD's ``weight_decay = 2 * reg`` (which adds
``weight_decay * W`` to the gradient), but keeping it in the loss means the logged loss is the
assignment's loss, the three ``grad`` paths (and the hand-written gradient under test) cover
the whole objective, and ``momentum`` treats it as the assignment's formula does.

Host-device traffic. The data move to the device once; minibatch indices are drawn there
(``torch.randint`` / ``torch.randperm`` with a device generator); each step's loss is stored in
a device tensor. The loss history is read back only every ``log_every`` iterations and at the
end, and that is also where divergence (an inf or NaN loss) is detected: a diverged run is
stopped at most ``log_every`` iterations late, and each check costs one host-device
synchronisation, so ``log_every`` trades those two.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from torch_svm.data import Dataset
from torch_svm.model import GRADS, LinearSVM
from torch_svm.utils import progress as progress_bar
from torch_svm.utils import resolve_device, set_seed

__all__ = ["TrainConfig", "TrainResult", "DivergenceError", "train", "batch_indices",
           "dataset_to", "DEFAULT_HYPERS", "SCHEDULES", "SAMPLINGS",
           "TuneConfig", "TuneResult", "tune"]

#: Default (lr, reg) per data set, used where TrainConfig leaves them None.
#: cifar10: the assignment's recipe. digits: pixels 0..16 (not 0..255) in 65 columns give
#: gradients about 1e4 times smaller than CIFAR's, so the step is larger and the
#: regularization weaker. Chosen on the validation split from lr 1e-4..1e-2 x reg 0..10 (val
#: accuracy 0.93-0.97 over that whole range: digits are forgiving).
DEFAULT_HYPERS: Dict[str, Tuple[float, float]] = {
    "cifar10": (1e-7, 2.5e4),
    "digits": (1e-3, 1.0),
}
SCHEDULES = ("none", "step", "cosine")
SAMPLINGS = ("replacement", "epoch")


@dataclass
class TrainConfig:
    """One training run. ``lr`` / ``reg`` None take :data:`DEFAULT_HYPERS` for the data set."""

    lr: Optional[float] = None      # SGD learning rate; None: the data set's default
    reg: Optional[float] = None     # L2 strength lambda in the loss (= weight_decay / 2); None: default
    iters: int = 1500               # SGD steps (the assignment's num_iters)
    batch_size: int = 200           # examples per step
    momentum: float = 0.0           # SGD momentum (0: the assignment's plain SGD)
    schedule: str = "none"          # lr schedule: none | step (x lr_gamma every lr_step) | cosine
    lr_step: int = 500              # schedule="step": iterations between decays
    lr_gamma: float = 0.1           # schedule="step": factor applied at each decay
    sampling: str = "replacement"   # replacement (assignment) | epoch (shuffle, no replacement)
    delta: float = 1.0              # hinge margin Delta
    p: int = 1                      # 1: hinge, 2: squared hinge
    kink: float = 0.0               # derivative used at a margin of exactly 0 (grad="hand" only)
    grad: str = "hand"              # hand (hand-written backward) | autograd | mml (PyTorch's kernel)
    init_scale: float = 0.001       # W starts as init_scale * randn (the assignment's 0.001)
    seed: int = 0                   # seeds W's init and the minibatch draws
    device: str = "auto"            # cpu | cuda | cuda:N | auto
    log_every: int = 10             # iterations between reading the loss back (a sync) and checking it


@dataclass
class TrainResult:
    """What a run produced. Accuracies are fractions in [0, 1]."""

    model: LinearSVM
    config: TrainConfig             # with lr, reg filled in
    loss_history: List[float]       # the minibatch loss of every iteration
    train_accuracy: float
    val_accuracy: float
    seconds: float                  # the loop only (data transfer and accuracies excluded)


class DivergenceError(RuntimeError):
    """The loss became inf or NaN; ``iteration`` (1-based) is the first step where it was seen."""

    def __init__(self, message: str, iteration: int, lr: float, reg: float) -> None:
        super().__init__(message)
        self.iteration, self.lr, self.reg = iteration, lr, reg


# --------------------------------------------------------------------------- checks


def _resolve(config: TrainConfig, dataset: str) -> TrainConfig:
    """Fill lr / reg from DEFAULT_HYPERS and check every field, naming the bad one."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    lr, reg = DEFAULT_HYPERS.get(dataset, DEFAULT_HYPERS["cifar10"])
    config = dataclasses.replace(config, lr=lr if config.lr is None else config.lr,
                                 reg=reg if config.reg is None else config.reg)
    for name in ("lr", "reg", "momentum", "lr_gamma", "init_scale"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if config.lr <= 0:
        raise ValueError(f"lr must be > 0, got {config.lr!r}")
    if config.reg < 0:
        raise ValueError(f"reg must be >= 0, got {config.reg!r}")
    if not 0 <= config.momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {config.momentum!r}")
    if not 0 < config.lr_gamma <= 1:
        raise ValueError(f"lr_gamma must be in (0, 1], got {config.lr_gamma!r}")
    for name in ("iters", "batch_size", "lr_step", "log_every"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name, allowed in (("schedule", SCHEDULES), ("sampling", SAMPLINGS), ("grad", GRADS)):
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(config, name)!r}")
    return config


# --------------------------------------------------------------------------- pieces


def dataset_to(data: Dataset, device: torch.device) -> Dataset:
    """The data set with every split on ``device`` (no copy for splits already there)."""
    moved = {f.name: getattr(data, f.name).to(device) for f in dataclasses.fields(data)
             if f.name.startswith(("X_", "y_"))}
    return dataclasses.replace(data, **moved)


def batch_indices(n: int, batch_size: int, iters: int, *, sampling: str = "replacement",
                  generator: Optional[torch.Generator] = None,
                  device: Optional[torch.device] = None) -> Iterator[Tensor]:
    """Yield ``iters`` index tensors into ``range(n)``, drawn on ``device``.

    ``"replacement"``: each batch is ``batch_size`` independent uniform draws (the assignment's
    ``np.random.choice(num_train, batch_size)``). ``"epoch"``: a fresh permutation per epoch cut
    into batches, so every example is used exactly once per epoch; the last batch of an epoch
    is smaller when ``batch_size`` does not divide ``n`` (and ``batch_size`` is capped at ``n``).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if sampling == "replacement":
        for _ in range(iters):
            yield torch.randint(n, (batch_size,), generator=generator, device=device)
        return
    done = 0
    while done < iters:
        perm = torch.randperm(n, generator=generator, device=device)
        for start in range(0, n, batch_size):
            if done == iters:
                return
            yield perm[start:start + batch_size]
            done += 1


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, gamma=config.lr_gamma)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.iters)
    return None


def _divergence(what: str, k: int, config: TrainConfig) -> DivergenceError:
    return DivergenceError(
        f"training diverged: {what} at iteration {k} of {config.iters} with lr={config.lr:g} "
        f"(reg={config.reg:g}); try a smaller learning rate, e.g. --lr {config.lr / 10:g}",
        k, config.lr, config.reg)


def _check_finite(losses: Tensor, start: int, config: TrainConfig) -> List[float]:
    """Read ``losses[start:]`` back (one sync); DivergenceError at the first inf/NaN."""
    chunk = losses.cpu().tolist()
    for offset, value in enumerate(chunk):
        if not math.isfinite(value):
            raise _divergence(f"the loss became {value}", start + offset + 1, config)
    return chunk


# --------------------------------------------------------------------------- train


def train(data: Dataset, config: Optional[TrainConfig] = None, *,
          model: Optional[LinearSVM] = None, progress: bool = False) -> TrainResult:
    """Train a LinearSVM on ``data.X_train`` with minibatch SGD; report train and val accuracy.

    Args:
        data: the splits (:func:`torch_svm.data.load_dataset`); moved to the device once.
        config: hyperparameters; default ``TrainConfig()`` with the data set's lr and reg.
        model: continue from this model (moved to the device); default a fresh
            ``LinearSVM`` initialised from ``config.seed``.
        progress: show a progress bar with the running loss on stderr.

    The same seed gives the same W on the CPU (run to run); on CUDA, minibatch draws come
    from a CUDA generator, so the trajectory differs from the CPU's but not its quality.

    Raises:
        DivergenceError: the loss became inf or NaN (checked every ``log_every`` iterations
            and at the end).
        ValueError / TypeError: a bad config value, named.
    """
    config = _resolve(config or TrainConfig(), data.name)
    device = resolve_device(config.device)
    data = dataset_to(data, device)
    X, y = data.X_train, data.y_train                           # (N, D), (N,)
    set_seed(config.seed)
    if model is None:
        model = LinearSVM(X.shape[1], data.num_classes, init_scale=config.init_scale,
                          dtype=X.dtype)
    model = model.to(device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    scheduler = _scheduler(optimizer, config)
    losses = torch.empty(config.iters, dtype=X.dtype, device=device)  # stays on the device
    history: List[float] = []

    start = time.perf_counter()
    model.train()
    batches = batch_indices(X.shape[0], config.batch_size, config.iters,
                            sampling=config.sampling, generator=generator, device=device)
    with progress_bar(total=config.iters, desc="train", enabled=progress) as bar:
        for it, idx in enumerate(batches):
            optimizer.zero_grad()
            loss = model.loss(X[idx], y[idx], config.reg, grad=config.grad, delta=config.delta,
                              p=config.p, kink=config.kink)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses[it] = loss.detach()
            if (it + 1) % config.log_every == 0 or it + 1 == config.iters:
                history += _check_finite(losses[len(history):it + 1], len(history), config)
                bar.set_postfix(loss=f"{history[-1]:.4g}", refresh=False)
                bar.update(it + 1 - bar.n)
    if not bool(torch.isfinite(model.W).all()):  # the last step can overflow W after the loss
        raise _divergence("W became inf/NaN", config.iters, config)
    seconds = time.perf_counter() - start

    model.eval()
    return TrainResult(model=model, config=config, loss_history=history,
                       train_accuracy=model.accuracy(X, y),
                       val_accuracy=model.accuracy(data.X_val, data.y_val), seconds=seconds)


# --------------------------------------------------------------------------- tune


@dataclass
class TuneConfig:
    """A search over lr x reg x iters; every other hyperparameter comes from ``base``."""

    lrs: Sequence[float] = (1e-7, 5e-7)              # grid values, or (random) the log range min..max
    regs: Sequence[float] = (1e3, 5e3, 2.5e4)        # grid values, or (random) the log range min..max
    iters: Sequence[int] = (1500,)                   # grid values, or (random) choices
    random: int = 0                                  # 0: full grid; K > 0: K log-uniform random draws
    base: TrainConfig = field(default_factory=TrainConfig)  # everything else (seed, device, ...)


@dataclass
class TuneResult:
    """The table (one row per setting, in the order tried) and the best setting's model."""

    table: List[Dict[str, Any]]     # lr, reg, iters, train_accuracy, val_accuracy, seconds, diverged
    best: Dict[str, Any]            # the row with the highest val_accuracy (first on ties)
    best_result: TrainResult        # the best setting's run, model included
    test_accuracy: float            # the best model on the test split, measured once
    seconds: float                  # the whole search


def _settings(config: TuneConfig) -> List[Tuple[float, float, int]]:
    """(lr, reg, iters) to try: the grid, or ``random`` draws log-uniform in each range."""
    lrs, regs, iters = list(config.lrs), list(config.regs), list(config.iters)
    for name, values in (("lrs", lrs), ("regs", regs), ("iters", iters)):
        if not values:
            raise ValueError(f"{name} must hold at least one value, got {values!r}")
    if min(lrs) <= 0:
        raise ValueError(f"lrs must all be > 0, got {lrs!r}")
    if min(regs) < 0:
        raise ValueError(f"regs must all be >= 0, got {regs!r}")
    if isinstance(config.random, bool) or not isinstance(config.random, int) or config.random < 0:
        raise ValueError(f"random must be an integer >= 0, got {config.random!r}")
    if config.random == 0:
        return list(itertools.product(lrs, regs, iters))
    rng = np.random.default_rng(config.base.seed)

    def log_uniform(values: List[float]) -> float:
        lo, hi = min(values), max(values)
        if lo == 0:  # reg = 0 cannot be log-spaced: draw from (hi * 1e-3, hi) instead
            lo = hi * 1e-3 if hi > 0 else 0.0
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if lo > 0 else 0.0

    return [(log_uniform(lrs), log_uniform(regs), int(rng.choice(iters)))
            for _ in range(config.random)]


def tune(data: Dataset, config: Optional[TuneConfig] = None, *,
         progress: bool = False) -> TuneResult:
    """Train once per setting, pick the best validation accuracy, test that model once.

    A diverged setting is a row with ``diverged=True`` (and its message in ``error``), not an
    exception; if every setting diverges, the DivergenceError of the last one is raised.
    Every setting uses ``config.base.seed``, so rows differ only by their hyperparameters.
    """
    config = config or TuneConfig()
    settings = _settings(config)
    data = dataset_to(data, resolve_device(config.base.device))  # once for the whole search
    table: List[Dict[str, Any]] = []
    best_row, best_result, last_error = None, None, None
    start = time.perf_counter()
    for lr, reg, iters in progress_bar(settings, desc="tune", enabled=progress):
        run_config = dataclasses.replace(config.base, lr=lr, reg=reg, iters=iters)
        row: Dict[str, Any] = {"lr": lr, "reg": reg, "iters": iters}
        try:
            result = train(data, run_config)
        except DivergenceError as exc:
            last_error = exc
            row.update(train_accuracy=None, val_accuracy=None, final_loss=None, seconds=None,
                       diverged=True, error=str(exc))
            table.append(row)
            continue
        row.update(train_accuracy=result.train_accuracy, val_accuracy=result.val_accuracy,
                   final_loss=result.loss_history[-1], seconds=result.seconds, diverged=False)
        table.append(row)
        if best_row is None or result.val_accuracy > best_row["val_accuracy"]:
            best_row, best_result = row, result
    if best_result is None:
        raise last_error
    test_accuracy = best_result.model.accuracy(data.X_test, data.y_test)
    return TuneResult(table=table, best=best_row, best_result=best_result,
                      test_accuracy=test_accuracy, seconds=time.perf_counter() - start)
