r"""The kink study (``torch-svm kinks``): when and how often the CS231n gradient check of the SVM
loss mismatches, as distributions over independent draws.

:func:`run_study` measures five things on the assignment's preprocessing (mean-subtracted
unscaled pixels, bias column) and returns a typed :class:`~verification.study.results.StudyResults`;
:func:`verification.study.report.write_report` turns it into ``report.md``, ``results.json``
and PNG figures. Words (kink, crossing, crossed coordinate, crossing term, tie) as in
:mod:`verification.study.kinks`.

1. *Mismatch rate* at the assignment's check point (``W = init_scale * randn``, the dev set,
   reg 0) for each ``delta`` and step ``h``: the share of the ``D C`` coordinates whose
   central difference has a relative error above ``threshold`` against the hand-written
   gradient, over ``draws`` draws of the dev set and W (:mod:`verification.study.checks`);
   ``exact`` differences at every draw, ``naive`` ones (two float64 losses, what students
   run, ``C`` times slower) at the first ``naive_draws``.
2. *Prediction*: the distribution of that rate predicted from the density of the scaled
   margins at 0 (:func:`verification.study.kinks.simulate_crossed_rates`) against the measured one.
3. *Where*: the same check at the check point's W and after ``burn_in_iters`` SGD steps, with
   ``N`` examples, over ``where_draws`` draws (the training seed is the draw's seed).
4. *Ties*: exact zero margins during SGD by precision, counted with the loss's own margins
   through the trainer's callback, and what the kink value changes
   (:mod:`verification.study.ties`), over ``tie_seeds`` training seeds.
5. :func:`verification.study.kinks.one_dimensional_example`.

Draw ``d`` of every part uses seed ``seed + d``.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

from torch_svm.data import DATASETS, DataConfig, Dataset, load_dataset
from torch_svm.defaults import DEFAULT_HYPERS
from torch_svm.train import TrainConfig
from torch_svm.device import resolve_device, resolve_dtype
from torch_svm.errors import ArgumentError, ArgumentTypeError, check_choice, check_int, check_real
from torch_svm.progress import progress
from verification.study.kinks import one_dimensional_example
from verification.study.checks import measure_sweep, measure_where
from verification.study.results import StudyResults
from verification.study.ties import measure_ties, precisions

__all__ = ["StudyConfig", "run_study"]

#: The check point's W scale per data set. CIFAR-10: the assignment's 1e-4, whose margins
#: spread about +-0.5 around delta on the unscaled pixels. Digits' 65 pixels of 0-16 would
#: leave them within +-0.005 of delta at 1e-4, where no step crosses a kink and the study
#: would measure rounding only; 1e-2 gives them CIFAR-10's spread.
CHECK_POINT_SCALES = {"cifar10": 1e-4, "digits": 1e-2}

#: What ``StudyConfig.quick()`` (``torch-svm kinks --quick``) changes: fewer draws and steps.
QUICK: Dict[str, Any] = dict(draws=10, naive_draws=2, where_draws=3, burn_in_iters=100,
                             tie_seeds=2, tie_iters=50, tie_digits=False, prediction_samples=20)
#: What ``StudyConfig.dry_run()`` (``--dry-run``) changes: one tiny pass through every part.
DRY_RUN: Dict[str, Any] = dict(draws=2, naive_draws=1, deltas=(1.0, 1000.0), hs=(1e-3, 1e-5),
                               ns=(10, 50), where_draws=2, burn_in_iters=5, batch_size=50,
                               tie_seeds=1, tie_iters=5, tie_digits=False, prediction_samples=5)


@dataclass
class StudyConfig:
    """One kink study; the defaults are the full run. Validated on construction."""

    dataset: str = "digits"                     # "digits" (embedded) or "cifar10"
    data_dir: Optional[str] = None              # cifar10: the batches folder, its parent or the tar.gz
    draws: int = 40                             # parts 1-2: draws of the dev set and W
    naive_draws: int = 3                        # part 1: of those, how many also get naive differences
    deltas: Tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)   # part 1: margins delta
    hs: Tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)   # part 1: finite-difference steps
    threshold: float = 1e-7                     # relative error above which a coordinate mismatches
    init_scale: Optional[float] = None          # the check point: W = init_scale * randn; None:
                                                # CHECK_POINT_SCALES (the assignment's on cifar10)
    reg: float = 0.0                            # L2 strength of the checked loss (assignment: 0)
    bandwidth: Optional[float] = None           # KDE bandwidth of the density at 0; None: Silverman
    prediction_samples: int = 25                # parts 2-3: simulated rates per draw
    point_delta: float = 1.0                    # parts 2-4: delta of the check point; one of deltas
    point_h: float = 1e-5                       # parts 2-3: the assignment's h; one of hs
    ns: Tuple[int, ...] = (10, 50, 500, 5000)   # part 3: examples; capped at the train split
    where_draws: int = 10                       # part 3: draws (and training seeds)
    burn_in_iters: int = 200                    # part 3: SGD steps to the trained point
    batch_size: int = 200                       # SGD minibatch (assignment: 200)
    lr: Optional[float] = None                  # SGD learning rate; None: DEFAULT_HYPERS[dataset]
    train_reg: Optional[float] = None           # L2 strength while training; None: DEFAULT_HYPERS
    train_init_scale: float = 1e-3              # SGD starts at train_init_scale * randn (assignment)
    tie_dtypes: Tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")  # part 4
    tie_tf32: bool = True                       # part 4 on CUDA: also float32 with TF32 matmuls
    tie_kinks: Tuple[float, ...] = (0.0, 0.5, 1.0)   # part 4: derivative taken at m == 0
    tie_seeds: int = 5                          # part 4: training seeds per precision
    tie_iters: int = 100                        # part 4: SGD steps per run
    tie_digits: bool = True                     # part 4: also on digits when dataset is cifar10
    seed: int = 0                               # draw d uses seed + d
    device: str = "auto"                        # cpu | cuda | cuda:N | auto

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        if self.data_dir is not None and self.dataset != "cifar10":
            raise ArgumentError(f"data_dir only applies to dataset='cifar10', got {self.data_dir!r:.100}")
        for name in ("draws", "prediction_samples", "where_draws", "burn_in_iters", "batch_size",
                     "tie_seeds", "tie_iters"):
            check_int(name, getattr(self, name), min=1)
        check_int("naive_draws", self.naive_draws, min=0, max=self.draws)
        check_int("seed", self.seed, min=0, max=2**63 - 1 - max(self.draws, self.where_draws,
                                                                 self.tie_seeds))
        for name in ("deltas", "hs", "ns", "tie_dtypes", "tie_kinks"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or not value:
                raise ArgumentError(f"{name} must be a non-empty tuple, got {value!r:.100}")
            setattr(self, name, tuple(value))
        for v in self.deltas + self.hs:
            check_real("deltas and hs", v, min=0, min_open=True)
        for n in self.ns:
            check_int("ns", n, min=1)
        for k in self.tie_kinks:
            check_real("tie_kinks", k, min=0, max=1)
        for name in self.tie_dtypes:
            resolve_dtype(name)
        if self.init_scale is None:
            self.init_scale = CHECK_POINT_SCALES[self.dataset]
        for name in ("threshold", "init_scale", "point_delta", "point_h", "train_init_scale"):
            check_real(name, getattr(self, name), min=0, min_open=True)
        check_real("reg", self.reg, min=0)
        for name in ("bandwidth", "lr"):
            if getattr(self, name) is not None:
                check_real(name, getattr(self, name), min=0, min_open=True)
        if self.train_reg is not None:
            check_real("train_reg", self.train_reg, min=0)
        if self.point_delta not in self.deltas or self.point_h not in self.hs:
            raise ArgumentError(f"point_delta and point_h must be among deltas {self.deltas} and hs "
                             f"{self.hs}, got {self.point_delta!r} and {self.point_h!r}")
        for name in ("tie_tf32", "tie_digits"):
            if not isinstance(getattr(self, name), bool):
                raise ArgumentError(f"{name} must be True or False, got {getattr(self, name)!r:.100}")
        if not isinstance(self.device, (str, torch.device)):
            raise ArgumentError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r:.100}")

    @classmethod
    def quick(cls, **overrides: Any) -> "StudyConfig":
        """The full study with :data:`QUICK`'s fewer draws and steps."""
        return cls(**{**QUICK, **overrides})

    @classmethod
    def dry_run(cls, **overrides: Any) -> "StudyConfig":
        """One tiny pass through every part (:data:`DRY_RUN`), for smoke tests."""
        return cls(**{**DRY_RUN, **overrides})


def _load(name: str, data_dir: Optional[str], device: torch.device) -> Dataset:
    data = load_dataset(name, data_dir, DataConfig(dtype="float64"))
    data.tensors("train", device=device)         # kept for the study's draws and SGD runs
    return data


def _train_config(config: StudyConfig, name: str, device: torch.device, iters: int) -> TrainConfig:
    """SGD as the study runs it: the data set's default lr / reg unless the config sets them."""
    lr, reg = DEFAULT_HYPERS[name]
    return TrainConfig(lr=lr if config.lr is None else config.lr,
                       reg=reg if config.train_reg is None else config.train_reg,
                       iters=iters, batch_size=config.batch_size, delta=config.point_delta,
                       init_scale=config.train_init_scale, device=str(device))


def run_study(config: Optional[StudyConfig] = None, *, progress_bar: bool = False) -> StudyResults:
    """Run the five parts of the study (module docstring) and return every number, typed.

    Raises ValueError / TypeError for a bad config, FileNotFoundError for missing CIFAR-10.
    """
    config = StudyConfig() if config is None else config
    if not isinstance(config, StudyConfig):
        raise ArgumentTypeError(f"config must be a StudyConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    seconds: Dict[str, float] = {}
    start = time.perf_counter()
    data = _load(config.dataset, config.data_dir, device)
    tie_sets = [data] + ([_load("digits", None, device)]
                         if config.tie_digits and data.name != "digits" else [])
    tie_precisions = precisions(config.tie_dtypes, device, config.tie_tf32)
    grid = len(config.deltas) * len(config.hs)
    total = ((config.draws + config.naive_draws) * grid
             + config.where_draws * (1 + 2 * len(config.ns))
             + len(tie_sets) * len(tie_precisions) * config.tie_seeds * len(config.tie_kinks))
    seconds["load"] = time.perf_counter() - start

    with progress(total=total, desc="kinks", enabled=progress_bar) as bar:
        def tick(what: str) -> None:
            bar.set_postfix_str(what, refresh=False)
            bar.update()

        t0 = time.perf_counter()
        sweep, prediction = measure_sweep(
            data, deltas=config.deltas, hs=config.hs, draws=config.draws,
            naive_draws=config.naive_draws, init_scale=config.init_scale, reg=config.reg,
            threshold=config.threshold, bandwidth=config.bandwidth,
            samples=config.prediction_samples, seed=config.seed, tick=tick, device=device)
        seconds["sweep"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        where, burn_in, margins = measure_where(
            data, ns=config.ns, draws=config.where_draws, delta=config.point_delta,
            h=config.point_h, init_scale=config.init_scale,
            burn_in=_train_config(config, data.name, device, config.burn_in_iters),
            reg=config.reg, threshold=config.threshold, bandwidth=config.bandwidth,
            samples=config.prediction_samples, seed=config.seed, tick=tick, device=device)
        seconds["where"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        ties = []
        for tie_data in tie_sets:
            ties += measure_ties(
                tie_data, precisions=tie_precisions, kinks=config.tie_kinks,
                seeds=range(config.seed, config.seed + config.tie_seeds),
                config=_train_config(config, tie_data.name, device, config.tie_iters),
                init_scale=config.train_init_scale, tick=tick)
        seconds["ties"] = time.perf_counter() - t0

    seconds["total"] = time.perf_counter() - start
    return StudyResults(
        config=dataclasses.asdict(config),
        data={"name": data.name, "n_dev": data.config.num_dev, "n_train": data.num_examples("train"),
              "features": data.num_features, "classes": data.num_classes, "device": str(device),
              "threads": torch.get_num_threads(),
              "dtype": "float64", "preprocessing": "mean-subtracted unscaled pixels, bias column"},
        sweep=sweep, prediction=prediction, where=where, burn_in=burn_in, margins=margins,
        ties=ties, one_d=one_dimensional_example(), seconds=seconds)
