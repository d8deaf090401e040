r"""Minibatch SGD for :class:`~torch_svm.model.LinearSVM`.

:func:`train` is the canonical PyTorch loop (``model.train()``, loss and gradient,
``optimizer.step()``) with ``torch.optim.SGD``. With ``grad="hand"`` the step computes the loss
and the hand-written gradient together and hands the gradient to the optimizer
(``loss, W.grad = ...``, which replaces the old gradient: no ``zero_grad`` needed), so there
is no graph for ``backward()`` to build and walk back; ``grad="autograd"`` and ``"mml"`` call
``zero_grad`` and ``backward()``. The loop knows nothing of who watches
it: ``callback`` is called with each minibatch before its step (minGPT's ``on_batch_end``
pattern), so a study or a benchmark observes the loop instead of copying it.
:mod:`torch_svm.tune` searches its hyperparameters.

Data. ``data`` is a :class:`~torch_svm.data.Dataset` of any source; the loop draws its
minibatches from :meth:`~torch_svm.data.Dataset.batches` (gathered on the device into buffers
allocated once for data in memory, read from the memory map for a file larger than memory)
and measures accuracy with :func:`torch_svm.evaluate.accuracy`. In a process group started by torchrun
(:mod:`torch_svm.distributed`), every process draws the same minibatch indices, computes on
its share of them, and the loss and gradient are summed over processes, weighted by the
shares, before the step: data-parallel SGD on the same trajectory as one process.

Per step. The data are checked once per run, not at every step; the loss and the hand-written
gradient come from one call (what :func:`torch_svm.losses.svm_loss_and_grad` runs after its
checks: two GEMMs and a dozen small ops); plain SGD (momentum 0) is torch.optim.SGD's own
update, ``W -= lr * W.grad``, written in the loop, with momentum its single-tensor path. The
step's GEMMs are small (200 x 3073 x 10 for CIFAR-10): unless ``threads`` says otherwise, a
step of :data:`~torch_svm.device.SPLIT_WORK` multiply-adds or more runs on the cores idle
when the loop starts, gives a thread back as soon as another process keeps a core busy and
takes it again once the core is idle (:class:`~torch_svm.device.CoreWatch`): small GEMMs split over two threads run many times
slower next to a busy core (``benchmarks/bench_train.py`` measures both); smaller steps run
on one thread. ``compile=True`` compiles the
loss and gradient with ``torch.compile`` (C++ kernels on a CPU; CUDA graphs on a GPU), at
the cost of a compilation in the first step.

Regularization stays in the loss as :math:`\lambda \sum W^2`, whose gradient is
:math:`2 \lambda W`. That is exactly SGD's ``weight_decay = 2 * reg`` (which adds
``weight_decay * W`` to the gradient), but keeping it in the loss means the logged loss is the
assignment's loss, the three ``grad`` paths (and the hand-written gradient under test) cover
the whole objective, and ``momentum`` treats it as the assignment's formula does.

Host-device traffic. In-memory data move to the device once; minibatch indices are drawn there
(``torch.randint`` / ``torch.randperm`` with a device generator); each step's loss is stored in
a device tensor. The loss history is read back only every ``log_every`` iterations and at the
end, and that is also where divergence (an inf or NaN loss) is detected: a diverged run is
stopped at most ``log_every`` iterations late, and each check costs one host-device
synchronisation, so ``log_every`` trades those two.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor

from torch_svm.checkpoint import checkpoint_metadata, save_checkpoint
from torch_svm.data import Dataset
from torch_svm.defaults import default_hypers, default_init_scale
from torch_svm.device import SPLIT_WORK, CoreWatch, auto_threads, resolve_device, using_threads
from torch_svm.distributed import (all_reduce_sum, check_same_data, current_world,
                                   report_progress)
from torch_svm.errors import (ArgumentError, ArgumentTypeError, TorchSVMError, check_choice,
                              check_int, check_memory, check_real, clip)
from torch_svm.evaluate import accuracy
from torch_svm.losses import _svm_loss_and_grad, validate_hyperparameters
from torch_svm.model import GRADS, LinearSVM
from torch_svm.progress import progress as progress_bar

__all__ = ["TrainConfig", "TrainResult", "DivergenceError", "train", "save_run"]

SCHEDULES = ("none", "step", "cosine")
#: How minibatch indices are drawn (:func:`batch_indices`).
SAMPLINGS = ("replacement", "epoch")
#: Most SGD steps a run may take (the loss history is kept for every step).
MAX_ITERS = 10**8


@dataclass
class TrainConfig:
    """One training run. ``lr`` / ``reg`` / ``init_scale`` None take the data's defaults
    (:func:`default_hypers`, :func:`default_init_scale`)."""

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
    init_scale: Optional[float] = None  # W starts as init_scale * randn; None: the data's default
    seed: int = 0                   # seeds W's init and the minibatch draws
    device: str = "auto"            # cpu | cuda | cuda:N | auto
    threads: int = 0                # CPU threads for the loop; 0: idle cores (CoreWatch) or one, by the step's size
    compile: bool = False           # torch.compile the loss + gradient (the first step compiles)
    log_every: int = 10             # iterations between reading the loss back (a sync) and checking it

    def __post_init__(self) -> None:
        for name in ("lr", "reg"):
            if getattr(self, name) is not None:
                check_real(name, getattr(self, name), min=0, min_open=name == "lr")
        validate_hyperparameters(reg=self.reg or 0.0, delta=self.delta, p=self.p, kink=self.kink)
        check_real("momentum", self.momentum, min=0, max=1, max_open=True)
        check_real("lr_gamma", self.lr_gamma, min=0, max=1, min_open=True)
        if self.init_scale is not None:
            check_real("init_scale", self.init_scale, min=0)
        for name in ("iters", "batch_size", "lr_step", "log_every"):
            check_int(name, getattr(self, name), min=1, max=MAX_ITERS)
        check_int("seed", self.seed, min=0, max=2**63 - 1)
        check_int("threads", self.threads, min=0, max=1024)
        if not isinstance(self.compile, bool):
            raise ArgumentError(f"compile must be True or False, got {clip(repr(self.compile), 100)}")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("sampling", self.sampling, SAMPLINGS)
        check_choice("grad", self.grad, GRADS)
        if self.kink != 0 and self.grad != "hand":
            raise ArgumentError(f"kink must be 0 with grad={self.grad!r} (only grad='hand' takes "
                             f"another value at the hinge's kink), got {self.kink!r}")
        if not isinstance(self.device, (str, torch.device)):
            raise ArgumentTypeError(f"device must be a string such as 'cpu' or 'cuda', got "
                                    f"{clip(repr(self.device), 100)}")


@dataclass
class TrainResult:
    """What a run produced. Accuracies are fractions in [0, 1] (None: the split is empty)."""

    model: LinearSVM
    config: TrainConfig             # with lr, reg filled in
    loss_history: List[float]       # the minibatch loss of every iteration
    train_accuracy: Optional[float]
    val_accuracy: Optional[float]
    seconds: float                  # the loop only (data transfer and accuracies excluded)
    cpu_seconds: float              # CPU time of the process over the loop, all threads together
    threads: int                    # CPU threads torch used at the loop's end (CoreWatch may give some back)
    world_size: int = 1             # processes that trained it together (torchrun), 1 alone


class DivergenceError(TorchSVMError, RuntimeError):
    """The loss became inf or NaN; ``iteration`` (1-based) is the first step where it was seen."""

    def __init__(self, message: str, iteration: int, lr: float, reg: float) -> None:
        super().__init__(message)
        self.iteration, self.lr, self.reg = iteration, lr, reg


# --------------------------------------------------------------------------- pieces


def _resolve(config: TrainConfig, data: Dataset) -> TrainConfig:
    """Fill lr / reg / init_scale left None with the data's defaults."""
    if not isinstance(config, TrainConfig):
        raise ArgumentTypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.lr is None or config.reg is None:
        lr, reg = default_hypers(data)
        config = dataclasses.replace(config, lr=lr if config.lr is None else config.lr,
                                     reg=reg if config.reg is None else config.reg)
    if config.init_scale is None:
        config = dataclasses.replace(config, init_scale=default_init_scale(data))
    return config


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


#: ``callback(iteration, model, X_batch, y_batch)``, called with each minibatch before its step.
Callback = Callable[[int, LinearSVM, Tensor, Tensor], None]


def _loss_and_grad(config: TrainConfig) -> Callable[[Tensor, Tensor, Tensor], Tuple[Tensor, Tensor]]:
    """``step(W, Xb, yb) -> (loss, dW)`` for ``grad="hand"``: the hand-written loss and
    gradient of a minibatch whose inputs the caller checked, compiled when ``config.compile``."""
    reg, delta, p, kink = config.reg, config.delta, config.p, config.kink

    @torch.no_grad()
    def step(W: Tensor, Xb: Tensor, yb: Tensor) -> Tuple[Tensor, Tensor]:
        return _svm_loss_and_grad(W, Xb, yb, reg, delta, p, kink)

    return _compiled(step, config) if config.compile else step


def _compiled(fn: Callable, config: TrainConfig) -> Callable:
    """``torch.compile(fn)``: inductor's C++/OpenMP kernels on a CPU; CUDA graphs on a GPU
    ("reduce-overhead"), where launching a step's dozen small kernels costs more than running
    them. Shapes are static except the last batch of an epoch (one recompilation)."""
    cuda = resolve_device(config.device).type == "cuda"
    return torch.compile(fn, mode="reduce-overhead" if cuda else None, dynamic=False)


def batch_indices(n: int, batch_size: int, iters: int, *, sampling: str = "replacement",
                  generator: Optional[torch.Generator] = None,
                  device: Optional[torch.device] = None) -> Iterator[Tensor]:
    """Yield ``iters`` index tensors into ``range(n)``, drawn on ``device``.

    ``"replacement"``: each batch is ``batch_size`` independent uniform draws (the assignment's
    ``np.random.choice(num_train, batch_size)``). ``"epoch"``: a fresh permutation per epoch cut
    into batches, so every example is used exactly once per epoch; the last batch of an epoch
    is smaller when ``batch_size`` does not divide ``n`` (and ``batch_size`` is capped at ``n``).
    """
    check_choice("sampling", sampling, SAMPLINGS)
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


def train(data: Dataset, config: Optional[TrainConfig] = None, *,
          model: Optional[LinearSVM] = None, progress: bool = False,
          callback: Optional[Callback] = None) -> TrainResult:
    """Train a LinearSVM on the train split with minibatch SGD; report train and val accuracy.

    Args:
        data: a :class:`~torch_svm.data.Dataset` (:func:`torch_svm.data.load_dataset`,
            :func:`torch_svm.data.from_arrays`): digits, CIFAR-10, a file larger than memory.
        config: hyperparameters; default ``TrainConfig()`` with the data's lr and reg
            (:func:`default_hypers`).
        model: continue from this model (moved to the device); its W must be
            ``(data.num_features, data.num_classes)``. Default: a fresh ``LinearSVM``
            initialised from ``config.seed``.
        progress: show a progress bar with the running loss on stderr.
        callback: called as ``callback(it, model, X_batch, y_batch)`` (``it`` from 0) before
            each step, e.g. to count the minibatch's exact ties; it must not change its
            arguments, and must copy the batch to keep it (its buffers are reused). In a
            process group it sees this process's share of the batch.

    Randomness comes from generators of its own, seeded with ``config.seed`` (W's start, the
    minibatch draws): a call changes no global random state. The same seed gives the same W
    on the CPU (run to run, at a given thread count), from a file as from the same arrays in
    memory (the same indices, the same inputs). On CUDA, in-memory minibatch draws come from a
    CUDA generator, so the trajectory differs from the CPU's but not its quality. The loop
    sets torch's CPU thread count (``config.threads``; else, by the step's size, the idle cores
    of :class:`~torch_svm.device.CoreWatch`, fewer once another process takes one, or
    :func:`~torch_svm.device.auto_threads`) and restores it when it ends. In a process group
    (:mod:`torch_svm.distributed`) every process must call it with the same data and config.

    Raises:
        DivergenceError: the loss became inf or NaN (checked every ``log_every`` iterations
            and at the end).
        ArgumentError / ArgumentTypeError: a bad config value, named, or a model that does not
            fit the data.
    """
    config = _resolve(config or TrainConfig(), data)
    device = resolve_device(config.device)
    world = current_world()
    lo, hi = world.share(config.batch_size)
    share = hi - lo                                             # the most rows a step takes here
    if device.type == "cpu":   # W, its gradient and SGD's buffer; a step's scores and margins
        D, C, size = data.num_features, data.num_classes, data.dtype.itemsize
        check_memory(f"training {C:,} classes on {D:,} features with batches of {share}",
                     size * (4 * D * C + 4 * share * C + 2 * share * D))
    if model is None:
        model = LinearSVM(data.num_features, data.num_classes, init_scale=config.init_scale,
                          dtype=data.dtype, generator=torch.Generator().manual_seed(config.seed))
    model = model.to(device)
    data.check_model(model.W)                                   # once: the steps skip it
    check_same_data(data.fingerprint(), data.FINGERPRINT)       # a process group: one data set
    source = data.batches("train", device, share)
    generator = torch.Generator(device=source.index_device).manual_seed(config.seed)
    # foreach=False: for one parameter on a CPU, the plain loop is the cheapest step with
    # momentum (29 us against 40 us for the default, which re-decides foreach at every step)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                foreach=False if device.type == "cpu" else None)
    scheduler = _scheduler(optimizer, config)
    losses = torch.empty(config.iters, dtype=model.W.dtype, device=device)  # stays on the device
    history: List[float] = []
    hand = _loss_and_grad(config) if config.grad == "hand" else None
    reduced = model.W.new_empty(model.W.numel() + 1) if world.size > 1 else None  # (D C + 1,)
    work, watch = share * model.num_features * model.num_classes, None
    if not config.threads and device.type == "cpu" and world.size == 1 and work >= SPLIT_WORK:
        watch = CoreWatch()                     # every idle core, fewer once others are busy
    threads = config.threads or (watch.start if watch else auto_threads(work))

    with using_threads(threads):
        start, cpu_start = time.perf_counter(), time.process_time()
        model.train()
        batches = batch_indices(source.num_examples, config.batch_size, config.iters,
                                sampling=config.sampling, generator=generator,
                                device=source.index_device)
        with progress_bar(total=config.iters, desc="train", enabled=progress) as bar:
            for it, idx in enumerate(batches):
                lo, hi = world.share(idx.shape[0])              # this process's rows of it
                Xb, yb = source.batch(idx[lo:hi])               # (B_r, D), (B_r,)
                if callback is not None:
                    callback(it, model, Xb, yb)
                if hi == lo:                    # a batch smaller than the world: none here
                    loss, model.W.grad = model.W.new_zeros(()), torch.zeros_like(model.W)
                elif hand is not None:          # loss and hand-written dL/dW (sets W.grad)
                    loss, model.W.grad = hand(model.W, Xb, yb)
                else:                           # autograd / PyTorch's kernel
                    optimizer.zero_grad()
                    loss = model.loss(Xb, yb, config.reg, grad=config.grad,
                                      delta=config.delta, p=config.p, kink=config.kink)
                    loss.backward()
                if reduced is not None:         # the whole batch's loss and gradient
                    report_progress(it)         # the roll call a failure message reads (7 us)
                    loss = _sum_over_processes(model.W, loss, (hi - lo) / idx.shape[0], reduced)
                if config.momentum:
                    optimizer.step()
                else:   # SGD's single-tensor step, W -= lr W.grad, without its bookkeeping
                    _plain_sgd_step(model.W, optimizer.param_groups[0]["lr"])
                if scheduler is not None:
                    scheduler.step()
                losses[it] = loss.detach()
                if (it + 1) % config.log_every == 0 or it + 1 == config.iters:
                    if watch is not None:
                        threads = watch.threads(threads)
                    history += _check_finite(losses[len(history):it + 1], len(history), config)
                    bar.set_postfix(loss=f"{history[-1]:.4g}", refresh=False)
                    bar.update(it + 1 - bar.n)
        if not bool(torch.isfinite(model.W).all()):  # the last step can overflow W after the loss
            raise _divergence("W became inf/NaN", config.iters, config)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()
    return TrainResult(model=model, config=config, loss_history=history,
                       train_accuracy=accuracy(model, data, "train", progress=progress),
                       val_accuracy=accuracy(model, data, "val", progress=progress),
                       seconds=seconds,
                       cpu_seconds=cpu_seconds, threads=threads, world_size=world.size)


@torch.no_grad()
def _plain_sgd_step(W: Tensor, lr: float) -> None:
    """What ``torch.optim.SGD(momentum=0, weight_decay=0).step()`` computes for one parameter,
    ``W.add_(W.grad, alpha=-lr)``, bit for bit, without the 30-90 us its step spends around it
    (a twentieth of a CIFAR-10 step); the optimizer still holds the lr, which schedulers set."""
    W.add_(W.grad, alpha=-lr)


def _sum_over_processes(W: Tensor, loss: Tensor, weight: float, buffer: Tensor) -> Tensor:
    """``(sum_r w_r L_r, sum_r w_r g_r)`` over processes in one collective, with this
    process's ``weight`` ``w_r = B_r / B`` (:mod:`torch_svm.distributed`); sets W.grad to the
    sum (a view of ``buffer``) and returns the loss."""
    grad = buffer[:-1].view(W.shape[::-1]).T if W.T.is_contiguous() else buffer[:-1].view_as(W)
    grad.copy_(W.grad)                                          # in W's layout, as SGD reads it
    buffer[-1] = loss.detach()
    all_reduce_sum(buffer.mul_(weight))
    W.grad = grad
    return buffer[-1]


def save_run(out: Union[str, Path], data: Dataset, result: TrainResult,
             metrics: Dict[str, Any]) -> List[Path]:
    """Write a run into the folder ``out``: ``model.pt`` (:func:`torch_svm.checkpoint.save_checkpoint`
    with :func:`torch_svm.checkpoint.checkpoint_metadata`), ``metrics.json`` (``metrics`` plus the
    loss history), ``loss.png`` and, when rows are images (digits, CIFAR-10, a data file whose
    X is ``(N, H, W)`` or ``(N, H, W, C)``; a row of features is no image), ``weights.png``,
    each atomically. Returns the paths."""
    from torch_svm.files import atomic_write_json
    from torch_svm.plots import plot_loss, plot_weights

    folder = Path(out)
    c = result.config
    paths = [
        save_checkpoint(folder / "model.pt", result.model,
                        checkpoint_metadata(data, dataclasses.asdict(c))),
        atomic_write_json(folder / "metrics.json", {**metrics, "loss_history": result.loss_history}),
        plot_loss(result.loss_history, folder / "loss.png",
                  title=f"{Path(data.name).name}: lr={c.lr:g}, reg={c.reg:g}, batch {c.batch_size}"),
    ]
    if data.image_shape[0] > 1:    # rows are images: (1, D, 1) is a row of features
        paths.append(plot_weights(result.model.W, data.image_shape, data.class_names,
                                  folder / "weights.png", bias=data.bias))
    return paths
