r"""The kink study: when and why the CS231n gradient check of the SVM loss mismatches.

:func:`run_study` measures, on the assignment's preprocessing (mean-subtracted unscaled pixels,
bias column), five things and returns them as one JSON-ready dict; :func:`write_report` turns
that dict into a report folder (``report.md``, ``results.json``, PNG figures).

1. ``sweep``: at the assignment's check point (``W = 1e-4 randn``, the dev set, reg 0), for each
   ``delta`` and step ``h``, the share of the ``D C`` gradient coordinates whose central
   difference has a CS231n relative error :math:`|a - b| / \max(|a|, |b|)` above ``threshold``
   against the hand-written gradient, and the share of those that straddle a kink. Two finite
   differences: ``exact`` (per-term differences, no rounding, :func:`svm_finite_differences`)
   and ``naive`` (the loss evaluated twice in float64, what students run).
2. ``prediction``: expected crossings from the margin density at 0
   (:func:`verification.kinks.predict_crossings`) against the measured ones.
3. ``where``: the same check at initialisation and after a burn-in of SGD, with ``N`` examples.
4. ``ties``: exact zero margins in minibatches during SGD by dtype, and whether the kink value
   (0, 1/2, 1) changes the trajectory and the validation accuracy, over several seeds.
5. ``one_d``: :func:`verification.kinks.one_dimensional_example`.

The minimal SGD loop here (:func:`_sgd`) exists because the tie count needs the margins of
every minibatch and the kink value per run; it uses :func:`torch_svm.losses.svm_loss` and
``torch.optim.SGD`` with the trainer's minibatch draws and default hyperparameters.
"""
from __future__ import annotations

import dataclasses
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from torch_svm.data import DataConfig, Dataset, load_dataset
from torch_svm.losses import svm_loss_and_grad, svm_loss
from torch_svm.train import DEFAULT_HYPERS, batch_indices
from torch_svm.utils import (atomic_write_bytes, atomic_write_json, atomic_write_text, progress,
                             resolve_device, resolve_dtype, set_seed)
from verification.kinks import (count_ties, margin_density_at_zero, one_dimensional_example,
                                predict_crossings, predict_terms_near_kink, term_margins,
                                terms_near_kink)
from verification.numeric import OK, UNEXPLAINED, classify_svm_gradient, svm_finite_differences

__all__ = ["StudyConfig", "run_study", "write_report", "FIGURES"]

#: File names of the figures :func:`write_report` writes.
FIGURES = ("mismatch.png", "prediction.png", "margins.png", "where.png")


@dataclass
class StudyConfig:
    """One kink study. Defaults are the full run; :meth:`quick` is the ~1 minute version."""

    dataset: str = "digits"                     # "digits" (embedded) or "cifar10"
    data_dir: Optional[str] = None              # cifar10: the batches folder, its parent or the tar.gz
    deltas: Tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)   # margins delta swept (part 1)
    hs: Tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)  # finite-difference steps
    naive: bool = True                          # also the naive two-loss float64 difference
    threshold: float = 1e-7                     # relative error above which a coordinate mismatches
    init_scale: float = 1e-4                    # the check point: W = init_scale * randn (assignment)
    reg: float = 0.0                            # L2 strength of the checked loss (assignment: 0)
    bandwidth: Optional[float] = None           # KDE bandwidth of the margin density at 0; None: Silverman
    point_delta: float = 1.0                    # part 3 (and training): delta
    point_h: float = 1e-5                       # part 3: step (the assignment's h)
    ns: Tuple[int, ...] = (10, 50, 500, 5000)   # part 3: examples; capped at the train split
    naive_max_n: int = 500                      # part 3: naive differences only up to this N
    burn_in_iters: int = 200                    # part 3: SGD steps to the "characteristic" point
    batch_size: int = 200                       # SGD minibatch (assignment: 200)
    lr: Optional[float] = None                  # SGD learning rate; None: DEFAULT_HYPERS[dataset]
    train_reg: Optional[float] = None           # L2 strength while training; None: DEFAULT_HYPERS
    train_init_scale: float = 1e-3              # SGD starts at train_init_scale * randn (assignment)
    tie_dtypes: Tuple[str, ...] = ("float16", "bfloat16", "float32", "float64")  # part 4
    tie_kinks: Tuple[float, ...] = (0.0, 0.5, 1.0)   # part 4: derivative taken at m == 0
    tie_seeds: int = 3                          # part 4: seeds per (dtype, kink): seed, seed+1, ...
    tie_iters: int = 100                        # part 4: SGD steps per run
    tie_digits: bool = True                     # part 4: also on digits when dataset is cifar10
    seed: int = 0                               # seeds W, subsets, the dev draw and minibatches
    device: str = "auto"                        # cpu | cuda | cuda:N | auto

    @classmethod
    def quick(cls, **overrides: Any) -> "StudyConfig":
        """The version the tests run: digits, fewer steps and runs (about a minute on 2 cores)."""
        base = dict(dataset="digits", burn_in_iters=100, tie_seeds=2, tie_digits=False)
        base.update(overrides)
        return cls(**base)


# --------------------------------------------------------------------------- checks


def _check_config(config: StudyConfig) -> StudyConfig:
    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}")
    if config.dataset not in ("digits", "cifar10"):
        raise ValueError(f"dataset must be 'digits' or 'cifar10', got {config.dataset!r}")
    for name in ("deltas", "hs"):
        values = getattr(config, name)
        if not values or any(not (math.isfinite(v) and v > 0) for v in values):
            raise ValueError(f"{name} must be a non-empty list of finite numbers > 0, got {values!r}")
    for name in ("threshold", "init_scale", "point_delta", "point_h", "train_init_scale"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if config.bandwidth is not None and not config.bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0 or None, got {config.bandwidth!r}")
    for name in ("burn_in_iters", "batch_size", "tie_seeds", "tie_iters", "naive_max_n"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not config.ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in config.ns):
        raise ValueError(f"ns must be a non-empty list of integers >= 1, got {config.ns!r}")
    if any(not 0 <= k <= 1 for k in config.tie_kinks) or not config.tie_kinks:
        raise ValueError(f"tie_kinks must be values in [0, 1], got {config.tie_kinks!r}")
    for name in config.tie_dtypes:
        resolve_dtype(name)
    if config.reg < 0:
        raise ValueError(f"reg must be >= 0, got {config.reg!r}")
    return config


# --------------------------------------------------------------------------- measurements


def _compare(analytic: Tensor, fd, threshold: float, status: Optional[Tensor] = None) -> Dict[str, Any]:
    """Mismatch and kink counts of one analytic gradient against one finite difference.

    With ``status`` (:func:`classify_svm_gradient`, exact differences only) also the mismatches
    that straddle no kink and are within rounding of the analytic value (``rounding_share``:
    near-zero coordinates, where the relative error is rounding over a tiny denominator) and
    the coordinates it cannot explain.
    """
    a, b = analytic.double(), fd.grad.double()
    denom = torch.maximum(a.abs(), b.abs())
    rel = torch.where(denom > 0, (a - b).abs() / denom, torch.zeros_like(denom))   # (D, C)
    bad = rel > threshold
    straddle = fd.crossings > 0
    n_bad = int(bad.sum())
    n_bad_kink = int((bad & straddle).sum())
    row = {
        "coordinates": a.numel(),
        "mismatches": n_bad,
        "mismatch_rate": n_bad / a.numel(),
        "mismatches_straddling": n_bad_kink,
        "kink_share": n_bad_kink / n_bad if n_bad else None,
        "straddling": int(straddle.sum()),
        "straddle_rate": float(straddle.double().mean()),
        "crossings": int(fd.crossings.sum()),
        "max_rel_error": float(rel.max()),
        "median_rel_error": float(rel.median()),
    }
    if status is not None:
        n_round = int((bad & ~straddle & (status == OK)).sum())
        row["mismatches_rounding"] = n_round
        row["rounding_share"] = n_round / n_bad if n_bad else None
        row["unexplained"] = int((status == UNEXPLAINED).sum())
    return row


def _check_point(W: Tensor, X: Tensor, y: Tensor, *, reg: float, delta: float, h: float,
                 naive: bool, threshold: float) -> Tuple[Dict[str, Any], Tensor]:
    """Analytic (kink = 0) vs central differences at every coordinate of W: the counts and
    the (D, C) crossings."""
    start = time.perf_counter()
    _, analytic = svm_loss_and_grad(W, X, y, reg, delta=delta)
    fd = svm_finite_differences(W, X, y, reg, delta=delta, h=h, naive=naive)
    status = None if naive else classify_svm_gradient(analytic, fd).status
    row = _compare(analytic, fd, threshold, status)
    row["terms_near_kink"] = terms_near_kink(W, X, y, delta, h)
    row["seconds"] = time.perf_counter() - start
    return row, fd.crossings


def _prediction(W: Tensor, X: Tensor, y: Tensor, delta: float, h: float,
                bandwidth: Optional[float], measured: Tensor) -> Dict[str, Any]:
    """Predicted crossings from the margin density at 0, against the measured (D, C) counts."""
    density = margin_density_at_zero(term_margins(W, X, y, delta), bandwidth)
    pred = predict_crossings(X, y, W.shape[1], h, density)                      # (D, C)
    meas = measured.double()
    corr = None
    if float(pred.std()) > 0 and float(meas.std()) > 0:
        corr = float(torch.corrcoef(torch.stack([pred.flatten(), meas.flatten()]))[0, 1])
    return {"density_at_0": density, "predicted": float(pred.sum()), "measured": float(meas.sum()),
            "coordinate_corr": corr,
            "predicted_terms": predict_terms_near_kink(X, W.shape[1], h, density)}


def _sgd(X: Tensor, y: Tensor, W0: Tensor, *, lr: float, reg: float, delta: float, kink: float,
         iters: int, batch_size: int, dtype: torch.dtype, seed: int) -> Tuple[Tensor, List[int]]:
    """Plain minibatch SGD in ``dtype`` from ``W0``; the final W and the exact ties per step.

    Minibatches are the trainer's draws with replacement from a generator seeded with ``seed``,
    so runs that differ only in ``dtype`` or ``kink`` see the same examples.
    """
    W = W0.detach().to(dtype).clone().requires_grad_(True)
    optimizer = torch.optim.SGD([W], lr=lr)
    generator = torch.Generator(device=X.device).manual_seed(seed)
    ties = []
    for idx in batch_indices(X.shape[0], batch_size, iters, generator=generator, device=X.device):
        Xb, yb = X[idx].to(dtype), y[idx]                                       # (B, D), (B,)
        ties.append(count_ties(W.detach(), Xb, yb, delta))
        optimizer.zero_grad()
        svm_loss(W, Xb, yb, reg, delta=delta, kink=kink).backward()
        optimizer.step()
    return W.detach(), ties


def _accuracy(W: Tensor, X: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float(((X @ W.double()).argmax(1) == y).double().mean())


def _init(shape: Tuple[int, int], scale: float, seed: int, device: torch.device) -> Tensor:
    set_seed(seed)
    return (scale * torch.randn(*shape, dtype=torch.float64)).to(device)


def _load(name: str, data_dir: Optional[str], seed: int, device: torch.device) -> Dataset:
    return load_dataset(name, data_dir if name == "cifar10" else None,
                        DataConfig(dtype="float64", seed=seed)).to(device)


def _hypers(config: StudyConfig, name: str) -> Tuple[float, float]:
    lr, reg = DEFAULT_HYPERS[name]
    return (lr if config.lr is None else config.lr,
            reg if config.train_reg is None else config.train_reg)


# --------------------------------------------------------------------------- the study


def run_study(config: Optional[StudyConfig] = None, *, progress_bar: bool = False) -> Dict[str, Any]:
    """Run the five parts of the study (module docstring); return every number as a dict.

    Raises ValueError / TypeError for a bad config, FileNotFoundError for missing CIFAR-10.
    """
    config = _check_config(config or StudyConfig())
    device = resolve_device(config.device)
    t_start = time.perf_counter()
    seconds: Dict[str, float] = {}
    data = _load(config.dataset, config.data_dir, config.seed, device)
    X, y = data.X_dev, data.y_dev                                               # (N, D), (N,)
    D, C = data.num_features, data.num_classes
    lr, train_reg = _hypers(config, data.name)
    ns = sorted({min(n, data.X_train.shape[0]) for n in config.ns})
    tie_sets = [data.name] + (["digits"] if config.tie_digits and data.name != "digits" else [])
    methods = ("exact", "naive") if config.naive else ("exact",)
    total = (len(config.deltas) * len(config.hs) * len(methods) + 1
             + 2 * len(ns) + sum(n <= config.naive_max_n for n in ns) * 2 * config.naive
             + len(tie_sets) * len(config.tie_dtypes) * len(config.tie_kinks) * config.tie_seeds)
    seconds["load"] = time.perf_counter() - t_start

    with progress(total=total, desc="kinks", enabled=progress_bar) as bar:
        # 1 + 2. the assignment's check point: delta x h, exact and naive
        t0 = time.perf_counter()
        W = _init((D, C), config.init_scale, config.seed, device)
        sweep, prediction = [], []
        for delta in config.deltas:
            for h in config.hs:
                for method in methods:
                    bar.set_postfix_str(f"sweep delta={delta:g} h={h:g} {method}", refresh=False)
                    row, crossings = _check_point(W, X, y, reg=config.reg, delta=delta, h=h,
                                                  naive=method == "naive", threshold=config.threshold)
                    sweep.append({"delta": delta, "h": h, "method": method, **row})
                    if method == "exact":
                        prediction.append({"delta": delta, "h": h, "terms_near_kink": row["terms_near_kink"],
                                           **_prediction(W, X, y, delta, h, config.bandwidth, crossings)})
                    bar.update()
        seconds["sweep"] = time.perf_counter() - t0

        # 3. where the check is made: init vs burn-in, N examples
        t0 = time.perf_counter()
        bar.set_postfix_str("burn-in", refresh=False)
        W_burn, _ = _sgd(data.X_train, data.y_train,
                         _init((D, C), config.train_init_scale, config.seed, device),
                         lr=lr, reg=train_reg, delta=config.point_delta, kink=0.0,
                         iters=config.burn_in_iters, batch_size=config.batch_size,
                         dtype=torch.float64, seed=config.seed)
        bar.update()
        g = torch.Generator().manual_seed(config.seed)
        perm = torch.randperm(data.X_train.shape[0], generator=g).to(device)
        points = {"init": W, "burn_in": W_burn}
        where = []
        for point, Wp in points.items():
            for n in ns:
                Xn, yn = data.X_train[perm[:n]], data.y_train[perm[:n]]
                for method in methods:
                    if method == "naive" and n > config.naive_max_n:
                        continue
                    bar.set_postfix_str(f"{point} N={n} {method}", refresh=False)
                    row, crossings = _check_point(Wp, Xn, yn, reg=config.reg, delta=config.point_delta,
                                                  h=config.point_h, naive=method == "naive",
                                                  threshold=config.threshold)
                    entry = {"point": point, "n": n, "method": method, **row,
                             "exact_ties": count_ties(Wp, Xn, yn, config.point_delta)}
                    if method == "exact":
                        pred = _prediction(Wp, Xn, yn, config.point_delta, config.point_h,
                                           config.bandwidth, crossings)
                        entry["predicted_crossings"] = pred["predicted"]
                        entry["predicted_terms"] = pred["predicted_terms"]
                    where.append(entry)
                    bar.update()
        margins = {point: term_margins(Wp, X, y, config.point_delta).cpu().numpy().tolist()
                   for point, Wp in points.items()}
        burn_in = {"iters": config.burn_in_iters, "lr": lr, "reg": train_reg,
                   "batch_size": config.batch_size, "val_accuracy": _accuracy(W_burn, data.X_val, data.y_val)}
        seconds["where"] = time.perf_counter() - t0

        # 4. exact ties during training, by dtype, and what the kink value changes
        t0 = time.perf_counter()
        ties = []
        for name in tie_sets:
            tdata = data if name == data.name else _load(name, None, config.seed, device)
            t_lr, t_reg = _hypers(config, name)
            for dtype_name in config.tie_dtypes:
                dtype = resolve_dtype(dtype_name)
                for s in range(config.seed, config.seed + config.tie_seeds):
                    W0 = _init((tdata.num_features, tdata.num_classes), config.train_init_scale, s, device)
                    finals = {}
                    for kink in config.tie_kinks:
                        bar.set_postfix_str(f"ties {name} {dtype_name} seed={s} kink={kink:g}", refresh=False)
                        Wk, per_step = _sgd(tdata.X_train, tdata.y_train, W0, lr=t_lr, reg=t_reg,
                                            delta=config.point_delta, kink=kink, iters=config.tie_iters,
                                            batch_size=config.batch_size, dtype=dtype, seed=s)
                        finals[kink] = Wk
                        ref = finals[config.tie_kinks[0]]
                        terms = config.tie_iters * config.batch_size * (tdata.num_classes - 1)
                        ties.append({
                            "dataset": name, "dtype": dtype_name, "seed": s, "kink": kink,
                            "iters": config.tie_iters, "batch_size": config.batch_size,
                            "lr": t_lr, "reg": t_reg, "ties": sum(per_step),
                            "steps_with_ties": sum(t > 0 for t in per_step),
                            "tie_rate": sum(per_step) / terms,
                            "first_tie_step": next((i + 1 for i, t in enumerate(per_step) if t), None),
                            "identical_to_first_kink": bool(torch.equal(Wk, ref)),
                            "max_abs_diff_to_first_kink": float((Wk.double() - ref.double()).abs().max()),
                            "rel_diff_to_first_kink": float((Wk.double() - ref.double()).norm()
                                                            / ref.double().norm()),
                            "finite": bool(torch.isfinite(Wk).all()),
                            "val_accuracy": _accuracy(Wk, tdata.X_val, tdata.y_val),
                        })
                        bar.update()
        seconds["ties"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    one_d = one_dimensional_example()
    results = {
        "config": dataclasses.asdict(config),
        "data": {"name": data.name, "n_dev": X.shape[0], "n_train": data.X_train.shape[0],
                 "features": D, "classes": C, "device": str(device), "dtype": "float64",
                 "preprocessing": "mean-subtracted unscaled pixels, bias column"},
        "sweep": sweep,
        "prediction": {"cells": prediction, **_prediction_summary(prediction)},
        "where": where,
        "burn_in": burn_in,
        "margins": _margin_summary(margins),
        "ties": ties,
        "ties_summary": _ties_summary(ties, config.tie_kinks),
        "one_d": one_d,
    }
    seconds["summary"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    results["seconds"] = seconds
    results["summary"] = _summary(results)
    results["_margins"] = margins          # raw, for the figures; dropped from results.json
    return results


def _prediction_summary(cells: List[Dict[str, Any]]) -> Dict[str, Any]:
    both = [(c["predicted"], c["measured"]) for c in cells if c["predicted"] > 0 and c["measured"] > 0]
    out: Dict[str, Any] = {"cells_compared": len(both), "log_corr": None, "ratio_median": None,
                           "ratio_min": None, "ratio_max": None}
    if both:
        ratios = [m / p for p, m in both]
        out.update(ratio_median=float(np.median(ratios)), ratio_min=min(ratios), ratio_max=max(ratios))
    if len(both) >= 3:
        lp, lm = np.log10([p for p, _ in both]), np.log10([m for _, m in both])
        out["log_corr"] = float(np.corrcoef(lp, lm)[0, 1])
    return out


def _margin_summary(margins: Dict[str, List[float]]) -> Dict[str, Any]:
    out = {}
    for point, m in margins.items():
        a = np.asarray(m)
        out[point] = {"terms": a.size, "mean": float(a.mean()), "std": float(a.std()),
                      "share_negative": float((a < 0).mean()),
                      "share_within_0.01": float((np.abs(a) < 0.01).mean()),
                      "exact_zeros": int((a == 0).sum())}
    return out


def _ties_summary(ties: List[Dict[str, Any]], kinks: Tuple[float, ...]) -> List[Dict[str, Any]]:
    """Per (data set, dtype): ties (kink = first) and, per kink, identical runs and accuracy."""
    out = []
    keys = list(dict.fromkeys((t["dataset"], t["dtype"]) for t in ties))       # run order
    for name, dtype in keys:
        rows = [t for t in ties if t["dataset"] == name and t["dtype"] == dtype]
        first = [t for t in rows if t["kink"] == kinks[0]]
        entry: Dict[str, Any] = {
            "dataset": name, "dtype": dtype, "seeds": len(first),
            "ties_mean": float(np.mean([t["ties"] for t in first])),
            "ties_per_seed": [t["ties"] for t in first],
            "tie_rate_mean": float(np.mean([t["tie_rate"] for t in first])),
            "steps_with_ties_mean": float(np.mean([t["steps_with_ties"] for t in first])),
            "per_kink": {},
        }
        for kink in kinks:
            kr = [t for t in rows if t["kink"] == kink]
            acc = [t["val_accuracy"] for t in kr]
            entry["per_kink"][str(kink)] = {
                "identical": sum(t["identical_to_first_kink"] for t in kr), "runs": len(kr),
                "max_abs_diff": max(t["max_abs_diff_to_first_kink"] for t in kr),
                "rel_diff_max": max(t["rel_diff_to_first_kink"] for t in kr),
                "val_accuracy_mean": float(np.mean(acc)), "val_accuracy_std": float(np.std(acc)),
                "val_accuracy": acc,
            }
        out.append(entry)
    return out


def _summary(results: Dict[str, Any]) -> Dict[str, Any]:
    """The headline numbers: the main table (mismatch rate by delta x h, both methods) and more."""
    table = {}
    for r in results["sweep"]:
        table.setdefault(r["method"], {}).setdefault(f"{r['delta']:g}", {})[f"{r['h']:g}"] = {
            "mismatch_rate": r["mismatch_rate"], "kink_share": r["kink_share"],
            "straddle_rate": r["straddle_rate"]}
    return {
        "data": results["data"]["name"],
        "mismatch": table,
        "prediction": {k: v for k, v in results["prediction"].items() if k != "cells"},
        "where": [{k: w[k] for k in ("point", "n", "method", "mismatch_rate", "kink_share",
                                     "straddle_rate", "exact_ties")} for w in results["where"]],
        "ties": [{k: t[k] for k in ("dataset", "dtype", "ties_mean", "tie_rate_mean")}
                 | {"identical_runs": {k: v["identical"] for k, v in t["per_kink"].items()},
                    "val_accuracy_mean": {k: v["val_accuracy_mean"] for k, v in t["per_kink"].items()}}
                 for t in results["ties_summary"]],
        "one_d": {"central": results["one_d"]["svm"]["central"],
                  "forward": results["one_d"]["svm"]["forward"],
                  "analytic": results["one_d"]["svm"]["analytic"]},
        "seconds": results["seconds"]["total"],
    }


# --------------------------------------------------------------------------- the report


def write_report(results: Dict[str, Any], out_dir: Union[str, Path]) -> List[Path]:
    """Write ``report.md``, ``results.json`` and the :data:`FIGURES` into ``out_dir``, atomically.

    Returns the paths written.
    """
    out = Path(out_dir)
    margins = results.get("_margins", {})
    clean = {k: v for k, v in results.items() if not k.startswith("_")}
    paths = [atomic_write_json(out / "results.json", clean)]
    for name, png in _figures(clean, margins).items():
        paths.append(atomic_write_bytes(out / name, png))
    paths.append(atomic_write_text(out / "report.md", _render_markdown(clean)))
    return paths


def _pct(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{100 * x:.3g}%" if x >= 1e-4 else f"{100 * x:.1e}%"


def _main_table(results: Dict[str, Any], method: str) -> str:
    """Markdown: mismatch rate (share of mismatches straddling a kink / within rounding of a
    zero coordinate, exact only) by delta (rows) x h."""
    rows = [r for r in results["sweep"] if r["method"] == method]
    hs = sorted({r["h"] for r in rows}, reverse=True)
    deltas = sorted({r["delta"] for r in rows})
    lines = ["| delta \\ h | " + " | ".join(f"{h:g}" for h in hs) + " |",
             "|---|" + "---|" * len(hs)]
    for d in deltas:
        cells = []
        for h in hs:
            r = next(r for r in rows if r["delta"] == d and r["h"] == h)
            shares = _pct(r["kink_share"])
            if "rounding_share" in r:
                shares += f" / {_pct(r['rounding_share'])}"
            cells.append(f"{_pct(r['mismatch_rate'])} ({shares})")
        lines.append(f"| {d:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _render_markdown(results: Dict[str, Any]) -> str:
    """The report as Markdown, every number from ``results``."""
    cfg, data = results["config"], results["data"]
    n_coord = results["sweep"][0]["coordinates"]
    one = results["one_d"]
    s, sc = one["svm"], one["scalar"]
    pred = results["prediction"]
    L = [f"# Kinks in the SVM gradient check ({data['name']})", "",
         f"Check point: W = {cfg['init_scale']:g} * randn, the {data['n_dev']}-example dev set, "
         f"{data['preprocessing']}, D = {data['features']}, C = {data['classes']} "
         f"({n_coord} coordinates, every one checked), reg = {cfg['reg']:g}, float64, seed {cfg['seed']}. "
         f"A coordinate *mismatches* when the CS231n relative error |a - b| / max(|a|, |b|) between "
         f"the analytic gradient (kink value 0) and the central difference exceeds {cfg['threshold']:g}; "
         f"it *straddles a kink* when some hinge margin changes sign inside the step.", "",
         "## 1. Mismatch rate by delta and h", "",
         "Cells: share of coordinates that mismatch (share of those mismatches that straddle a kink; "
         "exact only: / share that straddle none and are within floating-point rounding of the analytic "
         "value, i.e. coordinates whose true gradient is 0 up to cancellation, where the relative error "
         "divides rounding by a tiny number).", "",
         "**Exact** central differences (per-term, no rounding error):", "",
         _main_table(results, "exact"), ""]
    if any(r["method"] == "naive" for r in results["sweep"]):
        L += ["**Naive** central differences (the loss evaluated twice in float64, as "
              "`grad_check_sparse` does):", "", _main_table(results, "naive"), ""]
    L += ["Share of coordinates that straddle at least one kink (exact):", "",
          _straddle_table(results), "", "![mismatch](mismatch.png)", "",
          "## 2. Predicted against measured crossings", "",
          f"Prediction: a term crosses when |m| < h|x_ik|; with the density of the margins at 0, f(0) "
          f"(Gaussian KDE, {'Silverman bandwidth' if cfg['bandwidth'] is None else 'bandwidth ' + str(cfg['bandwidth'])}), coordinate (k, j) expects sum over its terms of "
          f"min(1, 2 h f(0) |x_ik|) crossings.", "",
          "| delta | h | f(0) | crossings predicted | crossings measured | terms predicted | terms measured | per-coordinate corr |",
          "|---|---|---|---|---|---|---|---|"]
    for c in pred["cells"]:
        corr = "-" if c["coordinate_corr"] is None else f"{c['coordinate_corr']:.2f}"
        L.append(f"| {c['delta']:g} | {c['h']:g} | {c['density_at_0']:.3g} | {c['predicted']:.3g} | "
                 f"{c['measured']:.0f} | {c['predicted_terms']:.3g} | {c['terms_near_kink']} | {corr} |")
    L += ["", f"Over the {pred['cells_compared']} cells where both are positive: measured / predicted "
          f"median {_num(pred['ratio_median'])} (range {_num(pred['ratio_min'])} to {_num(pred['ratio_max'])}), "
          f"correlation of log10 totals {_num(pred['log_corr'])}. A term near its kink crosses in "
          f"every coordinate (k, j) and (k, y_i) with h|x_ik| > |m|, so crossings come in clusters of "
          f"up to 2D per term: the number of *terms* crossing (expected (C - 1) sum_i min(1, 2h f(0) "
          f"max_k |x_ik|)) is the Poisson-like count behind them, and where it is a handful the "
          f"per-coordinate correlation is low and the crossing count swings with which terms they are.", "",
          "![prediction](prediction.png)", "",
          "## 3. Where the check is made", "",
          f"delta = {cfg['point_delta']:g}, h = {cfg['point_h']:g}. `init`: W = {cfg['init_scale']:g} * randn; "
          f"`burn_in`: after {results['burn_in']['iters']} SGD steps (lr {results['burn_in']['lr']:g}, "
          f"reg {results['burn_in']['reg']:g}, batch {results['burn_in']['batch_size']}, float64, from "
          f"{cfg['train_init_scale']:g} * randn; val accuracy {results['burn_in']['val_accuracy']:.3f}). "
          f"N examples from the training split.", "",
          "| point | N | method | mismatch | of which at kinks | of which rounding at ~0 | straddling | crossings | predicted | terms crossing | predicted | exact ties |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in results["where"]:
        p, pt = w.get("predicted_crossings"), w.get("predicted_terms")
        L.append(f"| {w['point']} | {w['n']} | {w['method']} | {_pct(w['mismatch_rate'])} | "
                 f"{_pct(w['kink_share'])} | {_pct(w.get('rounding_share'))} | {_pct(w['straddle_rate'])} | {w['crossings']} | "
                 f"{'-' if p is None else f'{p:.3g}'} | {w['terms_near_kink']} | "
                 f"{'-' if pt is None else f'{pt:.3g}'} | {w['exact_ties']} |")
    L += [""]
    for point, m in results["margins"].items():
        L.append(f"- margins on the dev set at `{point}`: mean {m['mean']:.3g}, std {m['std']:.3g}, "
                 f"{_pct(m['share_negative'])} negative, {_pct(m['share_within_0.01'])} within 0.01 of "
                 f"the kink, {m['exact_zeros']} exactly 0.")
    L += ["", "![margins](margins.png) ![where](where.png)", "",
          "## 4. Exact ties during SGD, by dtype", ""]
    t0 = results["ties"][0] if results["ties"] else None
    if t0:
        L += [f"{t0['iters']} SGD steps, batch {t0['batch_size']}, delta {cfg['point_delta']:g}, "
              f"{cfg['tie_seeds']} seeds; W starts at {cfg['train_init_scale']:g} * randn in float64 and is "
              f"cast; the same minibatches for every dtype and kink value of a seed. Ties: margins "
              f"exactly 0 in a minibatch before the step (kink value {cfg['tie_kinks'][0]:g} run). "
              f"Identical: final W bitwise equal to the kink = {cfg['tie_kinks'][0]:g} run.", "",
              "| data | dtype | lr, reg | ties (per seed) | tie rate | " +
              " | ".join(f"kink {k:g}: identical, max abs diff, val acc" for k in cfg["tie_kinks"]) + " |",
              "|---|---|---|---|---|" + "---|" * len(cfg["tie_kinks"])]
        for e in results["ties_summary"]:
            tr = next(t for t in results["ties"] if t["dataset"] == e["dataset"])
            cells = []
            for k, v in e["per_kink"].items():
                cells.append(f"{v['identical']}/{v['runs']}, {v['max_abs_diff']:.2g}, "
                             f"{v['val_accuracy_mean']:.3f} ± {v['val_accuracy_std']:.3f}")
            L.append(f"| {e['dataset']} | {e['dtype']} | {tr['lr']:g}, {tr['reg']:g} | "
                     f"{', '.join(str(t) for t in e['ties_per_seed'])} | {_pct(e['tie_rate_mean'])} | "
                     + " | ".join(cells) + " |")
    L += ["", "## 5. The one-dimensional example", "",
          f"f(w) = max(0, w x + b) with x = {sc['x']:g}, b = {sc['b']:g} at w = {sc['w']:g} (the kink), "
          f"h = 2^-16 = {sc['h']:.6g}:", "",
          f"- central difference (f(h) - f(-h)) / 2h = **{sc['central']!r}**",
          f"- forward difference (f(h) - f(0)) / h = **{sc['forward']!r}**, backward = {sc['backward']!r}",
          f"- subgradient the code takes (`margin > 0`) = **{sc['subgradient']!r}**", "",
          f"The same through the library: the SVM loss with one example x = [1], y = 0, delta = 1, "
          f"W = {s['W']}, whose margin is exactly {s['margin']!r}: central difference at W[0, 1] = "
          f"{s['central']!r}, forward {s['forward']!r}, backward {s['backward']!r}; "
          f"`svm_loss_and_grad` gives " +
          ", ".join(f"{v!r} with kink={k}" for k, v in s["analytic"].items()) + ".", "",
          "Near the kink (margin b at w = 0):", "", "| margin | central difference | subgradient |", "|---|---|---|"]
    for r in one["near"]:
        L.append(f"| {r['margin']:.4g} | {r['central']!r} | {r['subgradient']!r} |")
    secs = results["seconds"]
    L += ["", "## Runtime", "", ", ".join(f"{k} {v:.1f} s" for k, v in secs.items()) + ".", ""]
    return "\n".join(L)


def _straddle_table(results: Dict[str, Any]) -> str:
    rows = [r for r in results["sweep"] if r["method"] == "exact"]
    hs = sorted({r["h"] for r in rows}, reverse=True)
    lines = ["| delta \\ h | " + " | ".join(f"{h:g}" for h in hs) + " |", "|---|" + "---|" * len(hs)]
    for d in sorted({r["delta"] for r in rows}):
        cells = [_pct(next(r for r in rows if r["delta"] == d and r["h"] == h)["straddle_rate"]) for h in hs]
        lines.append(f"| {d:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3g}"


def _figures(results: Dict[str, Any], margins: Dict[str, List[float]]) -> Dict[str, bytes]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(fig) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    out = {}
    methods = sorted({r["method"] for r in results["sweep"]})
    fig, axes = plt.subplots(1, len(methods), figsize=(5.2 * len(methods), 3.8), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for d in sorted({r["delta"] for r in results["sweep"]}):
            rows = sorted((r for r in results["sweep"] if r["method"] == method and r["delta"] == d),
                          key=lambda r: r["h"])
            ax.plot([r["h"] for r in rows], [r["mismatch_rate"] for r in rows], "o-", label=f"delta={d:g}")
            if method == "exact":
                ax.plot([r["h"] for r in rows], [r["straddle_rate"] for r in rows], ":", color=ax.lines[-1].get_color())
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_ylim(0, 1)
        ax.set_xlabel("h")
        ax.set_ylabel(f"share of coordinates with rel. error > {results['config']['threshold']:g}")
        ax.set_title(f"{method} central differences" + (" (dotted: straddling a kink)" if method == "exact" else ""),
                     fontsize=9)
        ax.legend(fontsize=8)
    out["mismatch.png"] = png(fig)

    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    cells = [c for c in results["prediction"]["cells"] if c["predicted"] > 0 and c["measured"] > 0]
    for d in sorted({c["delta"] for c in cells}):
        cs = [c for c in cells if c["delta"] == d]
        ax.loglog([c["predicted"] for c in cs], [c["measured"] for c in cs], "o", label=f"delta={d:g}")
    where = [{"predicted": w["predicted_crossings"], "measured": w["crossings"], "point": w["point"]}
             for w in results["where"] if w["method"] == "exact" and w["predicted_crossings"] > 0
             and w["crossings"] > 0]
    for point, marker in (("init", "x"), ("burn_in", "+")):
        ws = [w for w in where if w["point"] == point]
        if ws:
            ax.loglog([w["predicted"] for w in ws], [w["measured"] for w in ws], marker, ms=8,
                      label=f"{point}, N examples (part 3)")
    cells = cells + where
    if cells:
        lo = min(min(c["predicted"], c["measured"]) for c in cells) / 2
        hi = max(max(c["predicted"], c["measured"]) for c in cells) * 2
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="measured = predicted")
        ax.legend(fontsize=8)
    ax.set_xlabel("predicted crossings (sum over coordinates)")
    ax.set_ylabel("measured crossings")
    ax.set_title("kink crossings; dots: one (delta, h) at the check point", fontsize=9)
    out["prediction.png"] = png(fig)

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for point, m in margins.items():
        ax.hist(np.asarray(m), bins=100, histtype="step", label=point, log=True)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(f"margin m (delta = {results['config']['point_delta']:g}, dev set)")
    ax.set_ylabel("terms")
    ax.legend(fontsize=8)
    out["margins.png"] = png(fig)

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for point in ("init", "burn_in"):
        for method, style in (("exact", "o-"), ("naive", "s--")):
            rows = [w for w in results["where"] if w["point"] == point and w["method"] == method]
            if rows:
                ax.plot([w["n"] for w in rows], [w["mismatch_rate"] for w in rows], style, label=f"{point}, {method}")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylim(0, 1)
    ax.set_xlabel("N examples")
    ax.set_ylabel("mismatch rate")
    ax.set_title(f"delta = {results['config']['point_delta']:g}, h = {results['config']['point_h']:g}", fontsize=9)
    ax.legend(fontsize=8)
    out["where.png"] = png(fig)
    return out
