"""Figures for a run: the loss curve, the learned class templates, and a tuning map.

Figures are built on ``matplotlib.figure.Figure`` directly (the Agg renderer, no pyplot and
no display), rendered to PNG in memory and written atomically. Every function returns the path.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from torch_svm.errors import ArgumentError
from torch_svm.files import atomic_write_bytes

__all__ = ["plot_loss", "plot_weights", "plot_tune"]


def _save(fig: Figure, path: Union[str, Path]) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_loss(loss_history: Sequence[float], path: Union[str, Path], *,
              title: str = "training loss") -> Path:
    """The minibatch loss per iteration (as the notebook's plot), with a running mean."""
    losses = np.asarray(loss_history, dtype=np.float64)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.6, label="minibatch loss")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window, len(losses) + 1), smooth, lw=1.5,
                label=f"running mean ({window} iterations)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def weight_images(W: torch.Tensor, image_shape: Tuple[int, int, int], *,
                  bias: bool = True) -> np.ndarray:
    """Class templates ``(C, H, W, channels)`` as uint8 0..255 from ``W: (D [+1], C)``.

    The bias row is dropped, each column reshaped to ``image_shape`` and all of them rescaled
    together by the global min and max, as the CS231n notebook does (so brightness compares
    across classes).
    """
    w = W.detach().to("cpu", torch.float64).numpy()
    if bias:
        w = w[:-1]                                             # drop the bias row
    d = int(np.prod(image_shape))
    if w.shape[0] != d:
        raise ArgumentError(f"W must have {d} rows (+1 with bias) for image_shape {tuple(image_shape)}, "
                         f"got {W.shape[0]} (bias={bias})")
    w = w.T.reshape(w.shape[1], *image_shape)                   # (C, H, W, channels)
    lo, hi = w.min(), w.max()
    scaled = 255.0 * (w - lo) / (hi - lo) if hi > lo else np.zeros_like(w)
    return scaled.astype(np.uint8)


def plot_weights(W: torch.Tensor, image_shape: Tuple[int, int, int],
                 class_names: Sequence[str], path: Union[str, Path], *,
                 bias: bool = True) -> Path:
    """One template image per class, titled with the class names (grey for 1 channel)."""
    images = weight_images(W, image_shape, bias=bias)
    if len(class_names) != len(images):
        raise ArgumentError(f"class_names must name the {len(images)} classes, got {len(class_names)}")
    cols = min(len(images), 10)
    rows = math.ceil(len(images) / cols)
    fig = Figure(figsize=(1.3 * cols, 1.5 * rows))
    for i, (image, name) in enumerate(zip(images, class_names)):
        ax = fig.add_subplot(rows, cols, i + 1)
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image)
        ax.set_title(str(name), fontsize=9)
        ax.axis("off")
    return _save(fig, path)


def plot_tune(table: Sequence[Dict[str, Any]], path: Union[str, Path]) -> Path:
    """Validation accuracy over lr x reg (log axes), one marker per setting.

    A full grid is drawn as a heat map (the best over iterations per cell); anything else
    (random search) as a scatter coloured by validation accuracy. Diverged settings are red
    crosses in both.
    """
    if not table:
        raise ArgumentError("table must hold at least one row, got an empty table")
    lrs = sorted({row["lr"] for row in table})
    regs = sorted({row["reg"] for row in table})
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    ok = [r for r in table if not r["diverged"]]
    bad = [r for r in table if r["diverged"]]
    cells = {(r["lr"], r["reg"]) for r in table}
    if len(cells) == len(lrs) * len(regs) and len(lrs) * len(regs) > 1:
        grid = np.full((len(regs), len(lrs)), np.nan)          # rows: reg, columns: lr
        for r in ok:
            i, j = regs.index(r["reg"]), lrs.index(r["lr"])
            grid[i, j] = np.fmax(grid[i, j], r["val_accuracy"])
        image = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
        middle = (np.nanmin(grid) + np.nanmax(grid)) / 2 if ok else 0.0
        for (i, j), value in np.ndenumerate(grid):
            if math.isnan(value):
                label, color = "diverged", "red"
            else:
                label, color = f"{value:.3f}", "black" if value > middle else "white"
            ax.text(j, i, label, ha="center", va="center", fontsize=9, color=color)
        ax.set_xticks(range(len(lrs)), [f"{v:.2g}" for v in lrs], rotation=45)
        ax.set_yticks(range(len(regs)), [f"{v:.2g}" for v in regs])
    else:
        image = ax.scatter([r["lr"] for r in ok], [r["reg"] for r in ok],
                           c=[r["val_accuracy"] for r in ok], cmap="viridis", s=60)
        if bad:
            ax.scatter([r["lr"] for r in bad], [r["reg"] for r in bad], marker="x", c="red",
                       s=60, label="diverged")
            ax.legend()
        ax.set_xscale("log")
        ax.set_yscale("log" if min(regs) > 0 else "symlog")
    if ok:
        fig.colorbar(image, ax=ax, label="validation accuracy")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("regularization strength")
    ax.set_title("validation accuracy by setting")
    return _save(fig, path)
