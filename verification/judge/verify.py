r"""Judge a student's SVM loss-and-gradient function ``f(W, X, y, reg) -> (loss, dW)``.

The function has the CS231n assignment's signature: ``W: (D, C)``, ``X: (N, D)``, ``y: (N,)``
int labels, ``reg`` a float; numpy arrays (the assignment's convention) or torch tensors, and it
returns the loss (a scalar) and ``dW: (D, C)``. It is meant to compute

.. math::

    L(W) = \frac{1}{N} \sum_i \sum_{j \ne y_i} \max(0,\; S_{ij} - S_{iy_i} + \Delta)
           + \mathrm{reg} \sum W^2, \qquad S = XW

(the 2020 assignment; ``reg_convention="half"`` judges the older course's
``0.5 * reg * sum W^2`` instead). In a notebook::

    from verification import verify
    report = verify(svm_loss_vectorized)                      # the embedded digits dev split
    report = verify(svm_loss_vectorized, X=X_dev, y=y_dev, W=W)   # your own data and W
    report.passed, print(report)                              # or just `report` for HTML

:func:`verify` calls it at every combination of

* two **points** (:func:`default_points`): ``small``, ``W = 1e-4 * randn`` as in the assignment
  (or your ``W``), where most margins are about ``delta`` and active (the report prints the
  share), so a wrong mask barely shows; and ``trained``,
  the small point after gradient-descent steps of the SVM loss, stopped once at most half of
  the margins are active;
* two **regularization strengths**: 0 and :attr:`VerifyConfig.reg` (the notebook's 5e1),
  multiplied by 10 until a halved regularization gradient stands out of the floating-point
  allowance at most coordinates of every point;

and judges each call with :func:`verification.judge.evaluation.evaluate` (loss against three
references, dW against the reference gradient with any value at an exact kink, and against
kink-aware finite differences). When it fails, :func:`verification.judge.diagnose.diagnose` names
the bug if the difference fits a known one.

The function runs in a worker process (:mod:`verification.judge.worker`), spawned once per verdict:
nothing it does (exiting, hanging, patching the verifier, printing) can change the verdict,
which is computed here. A function that cannot be sent there is refused.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from torch_svm.losses import svm_loss_and_grad, validate_svm_inputs
from torch_svm.device import DTYPES, auto_threads, using_threads
from torch_svm.errors import (ArgumentError, ArgumentTypeError, UsageError, check_choice,
                              check_int, check_real, clip)
from torch_svm.progress import progress as progress_bar
from verification.judge.devdata import VerifyData, cache_snapshot, cache_tampered, load_verify_data
from verification.judge.diagnose import diagnose
from verification.judge.evaluation import Evaluation, evaluate
from verification.judge.points import active_share, cached_points, default_points
from verification.judge.usercode import (BACKENDS, UserCodeError, check_signature, function_name,
                                   load_function, printable)
from verification.judge.verdict import CodeFailure, PointInfo, VerifyReport, worst_coordinates
from verification.judge.worker import CapturedOutput, InProcess, Worker

__all__ = ["VerifyConfig", "verify"]

#: The coefficient of ``reg * sum(W^2)`` in each course's loss.
REG_CONVENTIONS = {"2020": 1.0, "half": 0.5}
_INPUT_DTYPES = ("float32", "float64")     # what W and X can be handed to the function in
_F64 = torch.float64


@dataclass
class VerifyConfig:
    """How to judge; every field has the CLI flag of the same name (``--reg-convention`` ...)."""

    delta: float = 1.0            # the margin the user's code uses
    h: float = 1e-5               # finite-difference step (the assignment's grad_check_sparse)
    reg: float = 50.0             # the large reg (the notebook's 5e1); raised x10 until visible
    reg_convention: str = "2020"  # "2020": reg * sum(W^2); "half": 0.5 * reg * sum(W^2)
    sparse: Optional[int] = None  # judge only this many random coordinates by finite differences
    backend: str = "auto"         # "numpy", "torch", or "auto": numpy first, then torch
    dtype: str = "float64"        # dtype of W and X handed to the function
    seed: int = 0                 # seeds the points and the sparse sample
    worst: int = 5                # how many wrong coordinates to list
    fp_factor: float = 4.0        # safety factor of every rounding allowance
    isolate: bool = True          # run the function in a worker process (False: in this process)
    timeout: float = 60.0         # seconds one import or call may take in the worker
    memory: Optional[float] = None  # GiB of address space the worker may use (None: no cap)

    def __post_init__(self) -> None:
        self.delta = check_real("delta", self.delta, min=0, min_open=True)
        self.h = check_real("h", self.h, min=0, min_open=True)
        self.reg = check_real("reg", self.reg, min=0, min_open=True)
        check_choice("reg_convention", self.reg_convention, tuple(REG_CONVENTIONS))
        if self.sparse is not None:
            self.sparse = check_int("sparse", self.sparse, min=1)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("dtype", self.dtype, _INPUT_DTYPES)
        self.seed = check_int("seed", self.seed, min=0, max=2**63 - 1)
        self.worst = check_int("worst", self.worst, min=0)
        self.fp_factor = check_real("fp_factor", self.fp_factor, min=0, min_open=True)
        if not isinstance(self.isolate, bool):
            raise ArgumentError(f"isolate must be True or False, got {self.isolate!r:.100}")
        self.timeout = check_real("timeout", self.timeout, min=0, min_open=True)
        if self.memory is not None:
            self.memory = check_real("memory", self.memory, min=0.0625)


# --------------------------------------------------------------------------- calling the code

def _start_worker(config: VerifyConfig, **load: Any) -> Worker:
    worker = Worker(timeout=config.timeout, memory=config.memory)
    try:
        worker.load(**load)
    except BaseException:
        worker.close()
        raise
    return worker


def _open(fn: Union[Callable, str], config: VerifyConfig, notes: List[str]) -> Union[Worker, InProcess]:
    """A started caller: a :class:`Worker` with the function loaded, or :class:`InProcess`
    when the caller asked for ``isolate=False`` (their own trusted code, for speed). The judged
    code never runs in this process otherwise: a function that cannot be sent to a worker is
    refused, not judged here, where it could patch the judge."""
    if not config.isolate:
        notes.append("judged in this process (isolate=False): the code could change the verdict")
        return InProcess(load_function(fn) if isinstance(fn, str) else fn)
    if os.name != "posix":
        raise UsageError("verify runs the judged code in a worker process, which needs a POSIX "
                         "system; pass isolate=False to judge your own code in this process")
    if isinstance(fn, str):
        return _start_worker(config, spec=fn)
    try:
        import cloudpickle

        pickled = cloudpickle.dumps(fn)
    except Exception as exc:  # noqa: BLE001 - unpicklable closures, no cloudpickle
        raise UsageError(
            f"{function_name(fn)} cannot be sent to the worker process that judges it "
            f"({type(exc).__name__}: {clip(str(exc), 100)}): it holds something that cannot be "
            f"pickled (a lock, an open file, a generator). Define it without that, or put it in "
            f"a .py file and pass 'file.py:name'") from None
    return _start_worker(config, pickled=pickled)


def _tampered(name: str, data, caller, notes: List[str], output: CapturedOutput,
              before: Optional[Dict[str, str]]) -> Optional[VerifyReport]:
    """An error verdict when the judged code changed verify's cache files while it ran (they
    are deleted: no later verdict reads them); None when the cache is as it was (or is not
    watched: ``before`` None)."""
    changed = cache_tampered(before) if before is not None else []
    if not changed:
        return None
    shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
    return VerifyReport(
        function=name, data=data.description, isolated=isinstance(caller, Worker), notes=notes,
        output=output, error=CodeFailure(
            f"the code changed verify's cache while it was judged ({printable(shown, 200)}): no "
            f"verdict is given, and those files were deleted so that no later verdict reads them",
            "", "a loss function has no reason to write files; remove what writes them"))


# --------------------------------------------------------------------------- inputs

def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.from_numpy(np.array(value))
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}") from exc


def _user_data(X: Any, y: Any, W: Any) -> Tuple[VerifyData, Optional[torch.Tensor]]:
    """Your X, y (and W) as float64 / int64 tensors, checked like the loss's own inputs."""
    X = _as_tensor("X", X)
    if X.is_complex() or X.dtype == torch.bool:
        raise ArgumentTypeError(f"X must hold real numbers, got dtype {X.dtype}")
    X = X.to(_F64)
    y = _as_tensor("y", y)
    start = None if W is None else _as_tensor("W", W).to(_F64)
    if start is not None:
        probe = start
    else:
        classes = int(y.max()) + 1 if y.numel() and not y.is_floating_point() else 2
        probe = torch.zeros(X.shape[-1] if X.dim() else 0, max(classes, 2), dtype=_F64)
    y = validate_svm_inputs(probe, X, y)
    if not bool(torch.isfinite(X).all()) or (start is not None and not bool(torch.isfinite(start).all())):
        raise ArgumentError("X and W must be finite, got NaN or inf")
    return VerifyData(X, y, probe.shape[1], f"your data ({X.shape[0]} examples)"), start


def _finite_at(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor, ref_reg: float, delta: float) -> bool:
    """Whether the reference loss and gradient are finite at ``W`` (else no verdict is possible)."""
    loss, grad = svm_loss_and_grad(W, X, y, ref_reg, delta=delta)
    return bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())


def _check_finite(Ws: Dict[str, torch.Tensor], X, y, ref_reg: float, delta: float, reg: float) -> None:
    for name, W in Ws.items():
        if not _finite_at(W, X, y, ref_reg, delta):
            raise ArgumentError(f"the reference loss or gradient is not finite at the {name} point with "
                             f"reg {reg:g}: it overflows float64 there, so no verdict is possible; "
                             f"use a smaller reg or smaller data values")


# --------------------------------------------------------------------------- verify

def verify(fn: Union[Callable, str], X: Any = None, y: Any = None, W: Any = None, *,
           data: Optional[VerifyData] = None, config: Optional[VerifyConfig] = None,
           points: Optional[Dict[str, Tuple[torch.Tensor, str]]] = None, progress: bool = False,
           **options: Any) -> VerifyReport:
    """Judge ``fn(W, X, y, reg) -> (loss, dW)``; see the module docstring.

    Args:
        fn: the function, or ``"PATH.py:FUNC"`` / ``"package.module:FUNC"`` (imported only in
            the worker process).
        X, y: your data, ``(N, D)`` and ``(N,)`` numpy arrays or tensors (with the bias column
            if your W has a bias row). Default: ``data``, else the embedded digits dev split.
        W: your ``(D, C)`` point (e.g. ``0.0001 * randn``): judged there and at a point trained
            from it, instead of at ``1e-4 * randn``.
        data: a :class:`~verification.judge.devdata.VerifyData` (:func:`load_verify_data`).
        config: :class:`VerifyConfig`; ``options`` override its fields
            (``verify(f, reg_convention="half")``).
        points: ``{name: (W (D, C), description)}`` instead of the two default points.
        progress: a progress bar over the checks on stderr.

    Returns:
        :class:`~verification.judge.verdict.VerifyReport`: ``report.passed``, ``report.verdict``
        ("pass", "fail", or "error" when the code does not run), ``print(report)``.

    Raises:
        ValueError / TypeError: bad options or inputs, a bad spec (no such file or function),
            or a reference loss that is not finite at a check (no verdict is possible).
    """
    config = dataclasses.replace(config or VerifyConfig(), **options)
    if not isinstance(fn, str):
        if not callable(fn):
            raise ArgumentTypeError(f"fn must be a function or 'PATH.py:FUNC', got {type(fn).__name__}")
        check_signature(fn, function_name(fn))
    start = None
    if X is not None or y is not None:
        if X is None or y is None or data is not None:
            raise ArgumentError("pass X and y together, and not with data")
        data, start = _user_data(X, y, W)
    elif W is not None:
        raise ArgumentError("W needs your X and y too: verify(f, X=X_dev, y=y_dev, W=W)")
    data = data or load_verify_data("digits", seed=config.seed)
    with using_threads(auto_threads(data.X.shape[0] * data.X.shape[1] * data.num_classes)):
        if points is None:
            points = check_points(data, config, start=start)
        return judge(fn, data, points, config, progress=progress)


def check_points(data: VerifyData, config: VerifyConfig, *, start: Optional[torch.Tensor] = None
                 ) -> Dict[str, Tuple[torch.Tensor, str]]:
    """The two check points :func:`verify` judges at on ``data`` (from the cache when the data
    has a key and no ``start`` W is given)."""
    if start is not None or data.cache_key is None:
        return default_points(data.X.to(DTYPES[config.dtype]), data.y, data.num_classes,
                              config.delta, config.seed, start=start)
    return cached_points(data, config.delta, config.dtype, config.seed)


def _sparse_mask(shape: Tuple[int, int], sparse: Optional[int], seed: int) -> torch.Tensor:
    """``(D, C)`` bool: every coordinate, or ``sparse`` of them drawn with ``seed``."""
    numel = shape[0] * shape[1]
    if sparse is None or sparse >= numel:
        return torch.ones(shape, dtype=torch.bool)
    judged = torch.zeros(numel, dtype=torch.bool)
    judged[torch.randperm(numel, generator=torch.Generator().manual_seed(seed))[:sparse]] = True
    return judged.reshape(shape)


def judge(fn: Union[Callable, str], data: VerifyData, points: Dict[str, Tuple[torch.Tensor, str]],
          config: VerifyConfig, *, progress: bool = False, watch_cache: bool = True) -> VerifyReport:
    """:func:`verify` with the data and check points given (once for many verdicts, as grade
    does); ``watch_cache=False``: no error verdict when the code changes the cache (for a
    caller that holds the points in memory and watches the cache over its whole run)."""
    in_dtype = DTYPES[config.dtype]
    X = data.X.to(in_dtype).to(_F64)                  # references see the values fn sees
    y = data.y
    Ws = {name: W.detach().cpu().to(in_dtype).to(_F64) for name, (W, _) in points.items()}
    scale = REG_CONVENTIONS[config.reg_convention]
    _check_finite(Ws, X, y, 0.0, config.delta, 0.0)
    D, C = next(iter(Ws.values())).shape
    judged = _sparse_mask((D, C), config.sparse, config.seed)
    # the function's name, as the worker reports it once loaded ("PATH.py:FUNC" -> "FUNC")
    name = fn.rsplit(":", 1)[-1] if isinstance(fn, str) else function_name(fn)
    notes: List[str] = []
    found: Dict[str, Any] = {"backend": config.backend, "dtypes": set(), "loss_types": set()}
    evaluations: Dict[Tuple[str, float], Evaluation] = {}
    caller = None
    cache_before = cache_snapshot() if watch_cache else None   # before any judged code runs
    try:
        caller = _open(fn, config, notes)
        name = caller.name
        caller.set_data(X.to(in_dtype).numpy(), y.numpy())

        def check(point: str, reg: float) -> Evaluation:
            found["backend"], returned = caller.call(Ws[point].to(in_dtype).numpy(), reg, found["backend"])
            found["dtypes"].add(returned.dtype)
            found["loss_types"].add(returned.loss_type)
            notes.extend(n for n in returned.notes if n not in notes)
            dtype = DTYPES[returned.dtype]
            compute = min((dtype, in_dtype), key=lambda t: -torch.finfo(t).eps)
            loss_dtype = min((_loss_dtype(returned.loss_type), in_dtype),
                             key=lambda t: -torch.finfo(t).eps)
            earlier = evaluations.get((point, 0.0))
            ev = evaluate(point, Ws[point], X, y, reg, returned.loss,
                          torch.from_numpy(returned.dW).to(_F64), compute, reg_scale=scale,
                          delta=config.delta, h=config.h, fp_factor=config.fp_factor, judged=judged,
                          naive_data_loss=earlier.naive_data_loss if earlier else None,
                          loss_dtype=loss_dtype)
            evaluations[point, reg] = ev
            return ev

        with progress_bar(total=2 * len(Ws), desc="verify", enabled=progress) as bar:
            at_zero = []
            for point in Ws:
                at_zero.append(check(point, 0.0))
                bar.update(1)
            top = min(torch.finfo(DTYPES[t]).max for t in found["dtypes"]) / 100
            regs = [0.0, _visible_reg(config.reg, scale, at_zero, X, y, config.delta, top, notes)]
            _check_finite(Ws, X, y, scale * regs[1], config.delta, regs[1])
            for point in Ws:
                check(point, regs[1])
                bar.update(1)
    except UserCodeError as exc:
        output = caller.close() if caller is not None else CapturedOutput()
        return _tampered(name, data, caller, notes, output, cache_before) or VerifyReport(
            function=name, data=data.description,
            error=CodeFailure(str(exc), exc.user_traceback, exc.hint),
            isolated=isinstance(caller, Worker), notes=notes, output=output)
    except BaseException:
        if caller is not None:
            caller.close()
        raise
    output = caller.close()
    tampered = _tampered(name, data, caller, notes, output, cache_before)
    if tampered is not None:
        return tampered
    ordered = [evaluations[point, reg] for point in Ws for reg in regs]
    dtypes = sorted(found["dtypes"], key=lambda t: torch.finfo(DTYPES[t]).eps)
    report = VerifyReport(
        function=name, data=data.description, backend=found["backend"], input_dtype=config.dtype,
        output_dtype=dtypes[-1], loss_type=" / ".join(sorted(found["loss_types"])),
        n=X.shape[0], d=D, c=C, delta=config.delta, h=config.h, reg_convention=config.reg_convention,
        regs=regs, points=[PointInfo(p, desc, active_share(evaluations[p, 0.0].margins),
                                     int((evaluations[p, 0.0].margins == 0).sum()))
                           for p, (_, desc) in points.items()],
        checks=[ev.result for ev in ordered], worst=worst_coordinates(ordered, config.worst),
        notes=notes, isolated=isinstance(caller, Worker), output=output, evaluations=ordered)
    if not report.passed:
        report.diagnosis = diagnose(ordered, X, y, config.delta, scale)
    elif report.output_dtype in LOW_PRECISION or any(
            _loss_dtype(t) in (torch.float16, torch.bfloat16) for t in found["loss_types"]):
        raise UsageError(
            f"{name}: cannot judge at this precision: it returns dW as {report.output_dtype} and "
            f"the loss as {report.loss_type}; a 16-bit float rounds at about 1e-3 relative, so "
            f"an error of a few percent (a wrong reg factor, a missing term) would pass. Return "
            f"the loss and dW in float32 or float64 to be judged")
    return report


#: Precisions too coarse to PASS: their allowances hide bugs the mutation suite holds.
LOW_PRECISION = ("float16", "bfloat16")


def _loss_dtype(loss_type: str) -> torch.dtype:
    """The precision of a returned loss, from how it was returned ("numpy float16",
    "torch bfloat16 tensor", "python float"): a Python number is float64."""
    for name, dtype in DTYPES.items():
        if name in loss_type.split():
            return dtype
    return _F64


def _visible_reg(reg: float, scale: float, at_zero: List[Evaluation], X, y, delta: float,
                 top: float, notes: List[str]) -> float:
    """``reg``, times 10 until ``scale * reg |W|`` (the error of a halved regularization
    gradient) is over 10x the rounding allowance ``fp_tol`` of the reg-0 check at half of the
    coordinates of every point (at most 6 times, never past a finite reference, and never past
    ``top``: 1/100 of the largest number the returned dtype holds)."""
    chosen = reg
    for _ in range(7):
        if all(float((scale * chosen * ev.W.abs() > 10 * ev.fp_tol).double().mean()) >= 0.5
               for ev in at_zero):
            if chosen != reg:
                notes.append(f"reg {reg:g} leaves the regularization gradient within rounding at "
                             f"some point; used reg {chosen:g}")
            return chosen
        bigger = chosen * 10
        if bigger > top or not all(_finite_at(ev.W, X, y, scale * bigger, delta) for ev in at_zero):
            break
        chosen = bigger
    notes.append(f"the regularization gradient stays within rounding up to reg {chosen:g}; "
                 f"regularization bugs may go unseen")
    return reg
