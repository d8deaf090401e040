r"""A search over the hyperparameters of :func:`torch_svm.train.train`.

:func:`tune` trains once per setting of learning rate x regularization (x iterations), from a
grid or a log-uniform random sample, picks the setting with the best validation accuracy and
reports test accuracy for that one model only. The default search is
:func:`torch_svm.defaults.default_grid`.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from torch_svm.data import Dataset
from torch_svm.errors import ArgumentError, ArgumentTypeError, check_int, check_real, clip
from torch_svm.evaluate import accuracy
from torch_svm.progress import progress as progress_bar
from torch_svm.train import MAX_ITERS, DivergenceError, TrainConfig, TrainResult, train

__all__ = ["TuneConfig", "TuneResult", "tune"]

@dataclass
class TuneConfig:
    """A search over lr x reg x iters; every other hyperparameter comes from ``base``."""

    lrs: Sequence[float] = (1e-7, 5e-7)              # grid values, or (random) the log range min..max
    regs: Sequence[float] = (1e3, 5e3, 2.5e4)        # grid values, or (random) the log range min..max
    iters: Sequence[int] = (1500,)                   # grid values, or (random) choices
    random: int = 0                                  # 0: full grid; K > 0: K log-uniform random draws
    base: TrainConfig = field(default_factory=TrainConfig)  # everything else (seed, device, ...)

    def __post_init__(self) -> None:
        self.lrs, self.regs, self.iters = list(self.lrs), list(self.regs), list(self.iters)
        for name, values in (("lrs", self.lrs), ("regs", self.regs), ("iters", self.iters)):
            if not values:
                raise ArgumentError(f"{name} must hold at least one value, got {values!r}")
        for v in self.lrs:
            check_real("lrs", v, min=0, min_open=True)
        for v in self.regs:
            check_real("regs", v, min=0)
        for v in self.iters:
            check_int("iters", v, min=1, max=MAX_ITERS)
        check_int("random", self.random, min=0)
        if not isinstance(self.base, TrainConfig):
            raise ArgumentTypeError(f"base must be a TrainConfig, got {type(self.base).__name__}")


@dataclass
class TuneResult:
    """The table (one row per setting, in the order tried) and the best setting's model."""

    table: List[Dict[str, Any]]     # lr, reg, iters, train_accuracy, val_accuracy, seconds, diverged
    best: Dict[str, Any]            # the row with the highest val_accuracy (first on ties)
    best_result: TrainResult        # the best setting's run, model included
    test_accuracy: Optional[float]  # the best model on the test split, measured once (None: empty)
    seconds: float                  # the whole search


def _settings(config: TuneConfig) -> List[Tuple[float, float, int]]:
    """(lr, reg, iters) to try: the grid, or ``random`` draws log-uniform in each range."""
    lrs, regs, iters = config.lrs, config.regs, config.iters
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
    if not isinstance(data, Dataset):
        raise ArgumentTypeError(f"data must be a torch_svm.data.Dataset, got {type(data).__name__}")
    if data.num_examples("val") == 0:
        raise ArgumentError(f"the val split of {clip(data.name, 200)} is empty, and tune ranks "
                            f"settings by validation accuracy: give it rows (num_val, --num-val)")
    settings = _settings(config)
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
        if best_row is None or (result.val_accuracy or 0.0) > (best_row["val_accuracy"] or 0.0):
            best_row, best_result = row, result
    if best_result is None:
        raise last_error
    test_accuracy = accuracy(best_result.model, data, "test", progress=progress)
    return TuneResult(table=table, best=best_row, best_result=best_result,
                      test_accuracy=test_accuracy, seconds=time.perf_counter() - start)
