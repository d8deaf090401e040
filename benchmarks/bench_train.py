"""Whole training runs side by side, on the same data in one run: the assignment's numpy SGD
loop, torch-svm's three gradients, and what a user would pick instead, accuracy next to time.

    python benchmarks/bench_train.py                            # digits (about a minute on 2 cores)
    python benchmarks/bench_train.py --data-dir /tmp/cifar      # + the CIFAR-10 recipe
    python benchmarks/bench_train.py --quick --json             # the CI smoke run (seconds)
    python benchmarks/bench_train.py --device cuda --compile    # torch-svm rows on a GPU

Rows, per data set, all with the data set's default recipe (``torch_svm.defaults.DEFAULT_HYPERS``:
digits lr 1e-3, reg 1; CIFAR-10 lr 1e-7, reg 2.5e4), 1500 iterations of batch 200, seed 0:

* ``numpy float32`` / ``float64``: the assignment's loop, written below as the peer
  (``np.random.choice``, ``X[idx]``, the vectorised loss and gradient, ``W -= lr * dW``), with
  numpy's BLAS on its default threads, and on one thread (``threadpoolctl``);
* ``torch-svm hand`` / ``autograd`` / ``mml``: :func:`torch_svm.train.train` with ``grad`` set,
  threads chosen automatically (``TrainConfig.threads=0``: the idle cores for a step of 4 M
  multiply-adds or more, fewer once a neighbour takes one; else one); ``hand`` also on one
  thread and on every core (torch's own default) and, with ``--compile``, compiled;
* ``GEMM floor``: the step's two GEMMs alone at the data's shape (``plain_loops.gemm_floor``,
  ``torch.mm(..., out=)``, each GEMM in its faster layout), on one thread and on every core;
  ``of the floor`` is its time over each row's at the same thread count (above 100 %: the row
  beats MKL's GEMMs, with oneDNN's, or does less than those GEMMs);
* ``plain PyTorch``: the loop a PyTorch user writes instead (``benchmarks/plain_loops.py``:
  ``nn.Linear``, ``nn.MultiMarginLoss`` x C, ``torch.optim.SGD`` with the same lr and weight
  decay ``2 reg``), with index gathers (on torch's default threads and on one) and with a
  ``DataLoader``;
* ``sklearn SGDClassifier`` (``loss="hinge"``, one-vs-rest), ``sklearn LinearSVC`` (one-vs-rest)
  and ``LinearSVC crammer_singer`` (a multiclass SVM), scikit-learn's defaults, fit on the same
  features (``--no-sklearn`` skips them);
* then, with a busy neighbour (a second process spinning on one core, pinned with ``--pin``),
  numpy float32 and torch-svm hand again.

Time is the training loop's wall-clock time (torch-svm: ``TrainResult.seconds``; numpy: its loop;
scikit-learn: ``fit``), the median of ``--repeat`` runs, the methods taking turns (each round
runs every method once, starting further down the list each time); ``first`` is the first run, which pays one-time costs (compilation); ``CPU s`` is the process's CPU time meanwhile, all threads
together (on a busy machine it stays near the work done while the wall-clock time grows, and
threads that spin waiting for each other show up in it). Before the table, one untimed run pays
torch.optim's first use (it imports torch._dynamo), reported as ``optim_import_s``. ``/ numpy``
is the time over numpy float32's on its default threads; ``busy / quiet`` compares a
busy-neighbour row with the same method's quiet row. The machine's load average before and after is
in the header: timings on a shared machine are noisy, so compare rows of one run.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from torch_svm.data import Dataset, load_dataset
from torch_svm.defaults import DEFAULT_HYPERS
from torch_svm.train import TrainConfig, train
from torch_svm.device import cpu_cores
from torch_svm.files import jsonable

BATCH = 200
METHODS = ("numpy", "torch", "plain", "sklearn")


@dataclass
class Row:
    """One method on one data set, timed ``repeat`` times."""

    data: str                       # digits | cifar10
    method: str                     # e.g. "torch-svm hand"
    threads: Optional[int]          # CPU threads it ran on (None: not known)
    neighbour: str                  # quiet | busy
    seconds: float                  # median training time over the repeats
    first: float                    # the first repeat's time (one-time costs included)
    cpu_seconds: float              # median CPU time of the process meanwhile, all threads
    train_accuracy: Optional[float]     # None: the GEMM floor, which trains nothing
    val_accuracy: Optional[float]
    vs_numpy: Optional[float] = None    # seconds / numpy float32's (quiet, default threads)
    of_floor: Optional[float] = None    # the GEMM floor's seconds (same threads) / seconds
    busy_vs_quiet: Optional[float] = None  # busy rows: seconds / the same method's quiet seconds
    note: str = ""


# --------------------------------------------------------------------------- the numpy peer


def numpy_svm_loss(W, X, y, reg):
    """The assignment's ``svm_loss_vectorized``: loss and dW, in X's dtype."""
    num_train = X.shape[0]
    rows = np.arange(num_train)
    scores = X.dot(W)                                            # (B, C)
    margins = np.maximum(0, scores - scores[rows, y][:, None] + 1)
    margins[rows, y] = 0
    loss = margins.sum() / num_train + reg * np.sum(W * W)
    binary = (margins > 0).astype(X.dtype)
    binary[rows, y] = -binary.sum(axis=1)
    dW = X.T.dot(binary) / num_train + 2 * reg * W
    return loss, dW


def numpy_sgd(X, y, num_classes, lr, reg, iters, batch_size=BATCH, seed=0):
    """The assignment's ``LinearClassifier.train``: W, and the loop's seconds and CPU seconds."""
    rng = np.random.RandomState(seed)
    W = (0.001 * rng.randn(X.shape[1], num_classes)).astype(X.dtype)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(iters):
        idx = rng.choice(X.shape[0], batch_size)
        loss, grad = numpy_svm_loss(W, X[idx], y[idx], reg)
        W -= lr * grad
    return W, time.perf_counter() - start, time.process_time() - cpu_start


def _accuracy(W, X, y) -> float:
    return float(np.mean(np.argmax(X.dot(W), axis=1) == y))


# --------------------------------------------------------------------------- the runs


@dataclass
class Outcome:
    """What one run of a method gives."""

    seconds: float
    cpu_seconds: float
    train_accuracy: Optional[float]
    val_accuracy: Optional[float]
    threads: Optional[int]          # the CPU threads it ran on, where known
    note: str = ""


#: The row of the step's two GEMMs alone (:func:`_floor_run`): each row's ``of_floor`` is its
#: seconds at the same threads over this one's.
FLOOR = "GEMM floor (the step's two GEMMs)"

#: A method, ready to run on one data set: () -> Outcome.
Run = Callable[[], Outcome]


def _numpy_run(data: Dataset, dtype, iters: int, blas_threads: Optional[int]) -> Run:
    X, y = data.tensors("train")[0].numpy().astype(dtype, copy=False), data.tensors("train")[1].numpy()
    Xv, yv = data.tensors("val")[0].numpy().astype(dtype, copy=False), data.tensors("val")[1].numpy()
    lr, reg = DEFAULT_HYPERS[data.name]

    def run():
        with _blas_threads(blas_threads) as threads:
            W, seconds, cpu = numpy_sgd(X, y, data.num_classes, lr, reg, iters)
        return Outcome(seconds, cpu, _accuracy(W, X, y), _accuracy(W, Xv, yv), threads)
    return run


def _torch_run(data: Dataset, iters: int, device: str, **config) -> Run:
    def run():
        r = train(data, TrainConfig(iters=iters, device=device, **config))
        auto = "" if config.get("threads") else "threads chosen by torch-svm"
        return Outcome(r.seconds, r.cpu_seconds, r.train_accuracy, r.val_accuracy, r.threads, auto)
    return run


def _plain_run(data: Dataset, iters: int, kind: str, threads: Optional[int]) -> Run:
    """The loop a PyTorch user writes (``benchmarks/plain_loops.py``) on the same inputs (the
    bias column included, so ``nn.Linear(bias=False)``), the data set's recipe."""
    from plain_loops import accuracy, plain_sgd
    from torch_svm.device import using_threads

    X, y = data.tensors("train")
    Xv, yv = data.tensors("val")
    lr, reg = DEFAULT_HYPERS[data.name]

    def run():
        with using_threads(threads or torch.get_num_threads()) as used:
            model, seconds, cpu = plain_sgd(X, y, data.num_classes, lr, reg, iters, kind=kind,
                                            bias=False)
        return Outcome(seconds, cpu, accuracy(model, X, y), accuracy(model, Xv, yv), used)
    return run


def _floor_run(data: Dataset, iters: int, threads: int) -> Run:
    """The step's two GEMMs alone at this data's shape (``plain_loops.gemm_floor``)."""
    from plain_loops import gemm_floor
    from torch_svm.device import using_threads

    def run():
        with using_threads(threads) as used:
            seconds, cpu = gemm_floor(BATCH, data.num_features, data.num_classes, iters)
        return Outcome(seconds, cpu, None, None, used)
    return run


def _sklearn_run(data: Dataset, estimator) -> Run:
    X, y = data.tensors("train")[0].numpy(), data.tensors("train")[1].numpy()
    Xv, yv = data.tensors("val")[0].numpy(), data.tensors("val")[1].numpy()

    def run():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start, cpu_start = time.perf_counter(), time.process_time()
            estimator.fit(X, y)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        note = "did not converge" if any("converge" in str(w.message) for w in caught) else ""
        return Outcome(seconds, cpu, estimator.score(X, y), estimator.score(Xv, yv), 1, note)
    return run


@contextlib.contextmanager
def _blas_threads(threads: Optional[int]) -> Iterator[Optional[int]]:
    """numpy's BLAS limited to ``threads`` (None: left alone); yields its thread count
    (None when threadpoolctl, which scikit-learn installs, is missing)."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        if threads is not None:
            raise
        yield None
        return
    with threadpool_limits(threads, user_api="blas"):
        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        yield max(blas, default=None)


def _spin(core: Optional[int]) -> None:  # pragma: no cover - runs in the neighbour process
    if core is not None:
        os.sched_setaffinity(0, {core})
    while True:
        pass


@contextlib.contextmanager
def busy_neighbour(core: Optional[int] = None) -> Iterator[None]:
    """A second process spinning on one core (pinned to ``core`` when given) for the block."""
    neighbour = multiprocessing.get_context("fork").Process(target=_spin, args=(core,), daemon=True)
    neighbour.start()
    try:
        time.sleep(0.2)                                          # let it take its core
        yield
    finally:
        neighbour.terminate()
        neighbour.join()


#: (method, threads asked for: None for the method's default, run).
Spec = Tuple[str, Optional[int], Run]


def _numpy_specs(data: Dataset, args, float64: bool) -> List[Spec]:
    if "numpy" not in args.methods:
        return []
    specs = [("numpy float32", None, _numpy_run(data, np.float32, args.iters, None)),
             ("numpy float32", 1, _numpy_run(data, np.float32, args.iters, 1))]
    if float64:
        specs.append(("numpy float64", None, _numpy_run(data, np.float64, args.iters, None)))
    return specs


def _hand_specs(data: Dataset, args) -> List[Spec]:
    """torch-svm's hand-written step, on the threads it chooses, on one and on every core."""
    if "torch" not in args.methods:
        return []
    specs = [("torch-svm hand", None, _torch_run(data, args.iters, args.device))]
    cores = cpu_cores()
    if cores > 1 and args.device == "cpu":
        specs += [("torch-svm hand", t, _torch_run(data, args.iters, args.device, threads=t))
                  for t in (1, cores)]
    return specs


def quiet_runs(data: Dataset, args) -> List[Spec]:
    out = _numpy_specs(data, args, float64=True) + _hand_specs(data, args)
    if "torch" in args.methods and args.device == "cpu":
        out += [(FLOOR, t, _floor_run(data, args.iters, t)) for t in sorted({1, cpu_cores()})]
    if "torch" in args.methods:
        if args.compile:
            out.append(("torch-svm hand, compiled", None,
                        _torch_run(data, args.iters, args.device, compile=True)))
        for grad in ("autograd", "mml"):
            out.append((f"torch-svm {grad}", None,
                        _torch_run(data, args.iters, args.device, grad=grad)))
    if "plain" in args.methods:
        out += [("plain PyTorch, index gather", None, _plain_run(data, args.iters, "gather", None)),
                ("plain PyTorch, index gather", 1, _plain_run(data, args.iters, "gather", 1)),
                ("plain PyTorch, DataLoader", None, _plain_run(data, args.iters, "dataloader", None))]
    if "sklearn" in args.methods:
        from sklearn.linear_model import SGDClassifier
        from sklearn.svm import LinearSVC

        cap = dict(max_iter=20) if args.quick else {}           # the smoke run: a few passes
        out += [("sklearn SGDClassifier(hinge)", None,
                 _sklearn_run(data, SGDClassifier(loss="hinge", random_state=0, **cap))),
                ("sklearn LinearSVC", None, _sklearn_run(data, LinearSVC(random_state=0, **cap))),
                ("sklearn LinearSVC crammer_singer", None,
                 _sklearn_run(data, LinearSVC(multi_class="crammer_singer", random_state=0,
                                              **cap)))]
    return out


def busy_runs(data: Dataset, args) -> List[Spec]:
    """The rows run again next to a busy neighbour: numpy float32 and torch-svm hand."""
    return _numpy_specs(data, args, float64=False) + _hand_specs(data, args)


def bench(data: Dataset, args) -> List[Row]:
    """Every row of one data set: the quiet ones, then the busy-neighbour ones."""
    rows: List[Row] = []
    quiet = {}

    def measure(specs: List[Spec], neighbour: str) -> List[Row]:
        """Each spec ``--repeat`` times, the methods taking turns, each round starting further
        down the list, so that no method runs every time just after the same other one (runs
        just after numpy's float64 loop, with its 1.2 GB array, were 10-40 % slower)."""
        outcomes: List[List[Outcome]] = [[] for _ in specs]
        for r in range(args.repeat):
            turn = r * len(specs) // args.repeat
            for i in list(range(turn, len(specs))) + list(range(turn)):
                (method, _, run), done = specs[i], outcomes[i]
                done.append(run())
                print(f"{data.name} {method} ({neighbour}, {done[-1].threads} threads): "
                      f"{done[-1].seconds:.3f} s", file=sys.stderr, flush=True)  # progress
        out = []
        for (method, _, _), runs in zip(specs, outcomes):
            last = runs[-1]
            out.append(Row(data.name, method, last.threads, neighbour,
                           statistics.median(o.seconds for o in runs), runs[0].seconds,
                           statistics.median(o.cpu_seconds for o in runs), last.train_accuracy,
                           last.val_accuracy, note=last.note))
        rows.extend(out)
        return out

    specs = quiet_runs(data, args)
    for (method, asked, _), row in zip(specs, measure(specs, "quiet")):
        quiet[method, asked] = row
    if not args.no_busy:
        with busy_neighbour(args.pin):
            specs = busy_runs(data, args)
            for (method, asked, _), row in zip(specs, measure(specs, "busy")):
                row.busy_vs_quiet = row.seconds / quiet[method, asked].seconds
    numpy = quiet.get(("numpy float32", None))
    floor = {row.threads: row.seconds for row in rows if row.method == FLOOR}
    for row in rows:
        row.vs_numpy = None if numpy is None else row.seconds / numpy.seconds
        if row.threads in floor and row.method != FLOOR:
            row.of_floor = floor[row.threads] / row.seconds
    return rows


# --------------------------------------------------------------------------- output


def _meta(args, optim_import_s: float) -> dict:
    return dict(torch=torch.__version__, numpy=np.__version__, python=platform.python_version(),
                cores=cpu_cores(), device=args.device, iters=args.iters, batch=BATCH,
                repeat=args.repeat, tf32=args.tf32, optim_import_s=optim_import_s,
                gpu=torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                loadavg_before=None, loadavg_after=None)


def markdown(meta: dict, rows: List[Row]) -> str:
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    lines = [f"torch {meta['torch']}, numpy {meta['numpy']}, {meta['cores']} cores, "
             f"torch-svm on {meta['device']}{' (TF32)' if meta['tf32'] else ''}; "
             f"{meta['iters']} iterations of batch {meta['batch']}, median of {meta['repeat']}; "
             f"load average {meta['loadavg_before']} before, {meta['loadavg_after']} after; "
             f"torch.optim's first use {meta['optim_import_s']:.1f} s (untimed)", "",
             "| data | method | threads | neighbour | seconds | first | CPU s | / numpy "
             "| of the floor | busy / quiet | train acc | val acc | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        threads = "?" if r.threads is None else str(r.threads)
        of_floor = "-" if r.of_floor is None else f"{100 * r.of_floor:.0f}%"
        lines.append(f"| {r.data} | {r.method} | {threads} | {r.neighbour} | {r.seconds:.3f} | "
                     f"{r.first:.3f} | {r.cpu_seconds:.3f} | {f(r.vs_numpy, '.2f')} | "
                     f"{of_floor} | {f(r.busy_vs_quiet, '.2f')} | "
                     f"{f(r.train_accuracy, '.3f')} | {f(r.val_accuracy, '.3f')} | {r.note} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data-dir", default=None,
                    help="CIFAR-10 folder: adds the CIFAR-10 recipe (default: digits only)")
    ap.add_argument("--iters", type=int, default=1500, help="SGD iterations")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per row (median)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {METHODS}")
    ap.add_argument("--device", default="cpu", help="device of the torch-svm rows")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile'd hand row")
    ap.add_argument("--no-busy", action="store_true", help="skip the busy-neighbour rows")
    ap.add_argument("--pin", type=int, default=None, help="pin the busy neighbour to this core")
    ap.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn's rows")
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke run: digits only, 20 iterations, one repeat, scikit-learn "
                         "capped at 20 passes")
    ap.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = ap.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    if not set(args.methods) <= set(METHODS):
        ap.error(f"--methods must be a subset of {METHODS}, got {args.methods}")
    if args.no_sklearn and "sklearn" in args.methods:
        args.methods.remove("sklearn")
    if args.quick:
        args.iters, args.repeat, args.data_dir = 20, 1, None
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True

    datasets = [load_dataset("digits")]
    if args.data_dir is not None:
        datasets.append(load_dataset("cifar10", args.data_dir))
    start = time.perf_counter()                                  # torch.optim's first use
    train(datasets[0], TrainConfig(iters=1, device=args.device))
    meta = _meta(args, time.perf_counter() - start)
    meta["loadavg_before"] = [round(v, 2) for v in os.getloadavg()]
    rows = [row for data in datasets for row in bench(data, args)]
    meta["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        json.dump(jsonable({"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}),
                  sys.stdout, indent=2)
        print()
    else:
        print(markdown(meta, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
