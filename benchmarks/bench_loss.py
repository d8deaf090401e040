"""Time and memory of one loss + gradient evaluation, every implementation in one run.

    python benchmarks/bench_loss.py                    # CPU, float32, N = 500 and 49000
    python benchmarks/bench_loss.py --threads 1        # torch and numpy's BLAS on one thread
    python benchmarks/bench_loss.py --device cuda --compile --tf32 --json
    python benchmarks/bench_loss.py --sparse           # the gradient's GEMM vs its sparse path

Methods: the hand-written gradient (``svm_loss_and_grad``: loss and gradient in one pass over
X, block by block on a CPU), its ``autograd.Function`` (``svm_loss`` + ``backward``: two passes),
``torch.autograd`` on ``svm_loss_autograd``, PyTorch's own ``MultiMarginLoss`` kernel
(``C * F.multi_margin_loss`` + autograd), numpy vectorized in the same dtype and, at small N,
the numpy naive loops; with ``--compile``, ``torch.compile(svm_loss_and_grad)`` too (its
compilation, in the warm-up call, is reported apart). Each is timed as the median of
``--repeat`` runs after a warm-up (CUDA: synchronised). Ratios are against the hand-written
gradient. The GEMM layouts are timed too: forward ``X @ W`` with W as (D, C) or as (C, D),
backward ``X.T @ B`` or ``(B.T @ X).T``. Peak
memory: the extra peak RSS (VmHWM over VmRSS before the call) of a fresh process that runs the
method once (CPU), or ``torch.cuda.max_memory_allocated`` (CUDA). Threads: torch and numpy's
BLAS alike, per N as :func:`torch_svm.device.auto_threads` chooses (one at N = 500, every core
at 49000) or ``--threads``. The methods take turns, one run of each per round, so a change in
the machine's load slows them alike, and each timed run follows an untimed run of the same
method (a warm measurement: numpy's BLAS threads spin for a while after a call, and a method
run right after them is slowed by up to 1.5x).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from torch_svm import svm_loss_autograd, svm_loss_and_grad, svm_loss
from torch_svm.device import auto_threads, resolve_device, resolve_dtype, using_threads
from verification.checks.reference import svm_loss_naive, svm_loss_vectorized

REG = 2.5e4


def make_problem(n, d, c, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.empty(n, d, dtype=dtype).uniform_(-128, 127, generator=g).to(device)  # pixel-like
    W = (torch.randn(d, c, generator=g) * 1e-3).to(device, dtype)
    y = torch.randint(c, (n,), generator=g).to(device)
    return W, X, y


def methods(W, X, y, compiled=None):
    """name -> zero-argument callable doing one loss + dW evaluation; ``compiled`` is
    ``torch.compile(svm_loss_and_grad)`` when given."""
    c = W.shape[1]

    def hand():
        return svm_loss_and_grad(W, X, y, REG)

    def function():
        Wr = W.detach().requires_grad_(True)
        svm_loss(Wr, X, y, REG).backward()
        return Wr.grad

    def autograd():
        Wr = W.detach().requires_grad_(True)
        return torch.autograd.grad(svm_loss_autograd(Wr, X, y, REG), Wr)

    def mml():
        Wr = W.detach().requires_grad_(True)
        loss = c * F.multi_margin_loss(X @ Wr, y) + REG * (Wr * Wr).sum()
        return torch.autograd.grad(loss, Wr)

    out = {"hand": hand, "function": function, "autograd": autograd, "mml": mml}
    if compiled is not None:
        out["hand, compiled"] = lambda: compiled(W, X, y, REG)
    if W.device.type == "cpu":
        Wn, Xn, yn = W.numpy(), X.numpy(), y.numpy()
        out["numpy"] = lambda: svm_loss_vectorized(Wn, Xn, yn, REG, dtype=Xn.dtype)
        if X.shape[0] <= 500:
            out["numpy naive"] = lambda: svm_loss_naive(Wn, Xn, yn, REG)
    return out


def layouts(W, X, y):
    """The two GEMMs in each layout: forward with W as (D, C) or laid out as (C, D),
    backward as ``X.T @ B`` or ``(B.T @ X).T``; and both through oneDNN's linear (float32 on
    a CPU), which the hand-written step uses there."""
    from torch_svm.losses import _onednn_linear

    B = torch.randn(X.shape[0], W.shape[1], dtype=X.dtype, device=X.device)
    Wt = W.T.contiguous()                                       # (C, D)
    out = {"X @ W": lambda: X @ W, "X @ W, W as (C, D)": lambda: X @ Wt.T,
           "X.T @ B": lambda: X.T @ B, "(B.T @ X).T": lambda: (B.T @ X).T}
    op = _onednn_linear() if X.device.type == "cpu" and X.dtype == torch.float32 else None
    if op is not None:
        out["oneDNN X @ W, W as (C, D)"] = lambda: op(X, Wt, None, "none", [], "")
        out["oneDNN (B.T @ X)"] = lambda: op(B.T, X.T, None, "none", [], "")
    return out


def sparse_rows(n, d, c, dtype, repeat, reg=1e-3):
    """``X^T B + 2 reg W`` for a class-major W (LinearSVM's), the GEMM against the sparse path
    (``torch_svm.losses._sparse_grad_W``, counting and finding B's nonzeros included), at
    densities of B around :data:`torch_svm.losses.SPARSE_DENSITY`; milliseconds."""
    from torch_svm.losses import SPARSE_DENSITY, _sparse_grad_W, svm_coefficients

    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    W = torch.randn(c, d, generator=g, dtype=dtype).T           # (D, C) stored (C, D)
    y = torch.randint(c, (n,), generator=g)
    rows = []
    for density in (0.01, 0.02, 0.05, 0.08, 0.12, 0.2, 0.5):
        slopes = (torch.rand(n, c, generator=g) < density).to(dtype).scatter_(1, y[:, None], 0)
        B = svm_coefficients(slopes, y).div_(n)

        def sparse():                                           # as _svm_grad_W runs it
            nonzero = B.numpy() != 0
            np.count_nonzero(nonzero)
            return _sparse_grad_W(W, X, B, reg, torch.from_numpy(np.flatnonzero(nonzero)))

        fns = {"GEMM": lambda: torch.addmm(W.T, B.T, X, beta=2 * reg).T, "sparse": sparse}
        timed = timeit(fns, repeat, torch.device("cpu"))
        rows.append(dict(density=float((B != 0).double().mean()), gemm_ms=timed["GEMM"][0] * 1e3,
                         sparse_ms=timed["sparse"][0] * 1e3, chosen="sparse" if
                         float((B != 0).double().mean()) <= SPARSE_DENSITY else "GEMM"))
    return rows


def timeit(fns, repeat, device):
    """name -> (median seconds of ``repeat`` runs, seconds of the first run).

    The methods take turns, one timed run of each per round, so that a machine whose load
    changes during the benchmark slows them alike; each timed run directly follows an untimed
    one of the same method, so that it does not pay for what the method before it left behind
    (its data in the caches, numpy's BLAS threads still spinning after their call)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def once(fn):
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    first = {name: once(fn) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            once(fn)
            times[name].append(once(fn))
    return {name: (statistics.median(times[name]), first[name]) for name in fns}


@contextlib.contextmanager
def threads(n):
    """torch and numpy's BLAS on ``n`` threads (numpy's through threadpoolctl)."""
    from threadpoolctl import threadpool_limits
    with using_threads(n), threadpool_limits(n, user_api="blas"):
        yield


def peak_memory(name, n, d, c, dtype, device):
    """Extra peak memory (MiB) of one evaluation of method ``name``."""
    if device.type == "cuda":
        W, X, y = make_problem(n, d, c, dtype, device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        methods(W, X, y)[name]()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    # ru_maxrss survives fork/exec (the parent's peak would leak in): reset the child's
    # high-water mark through /proc/self/clear_refs after set-up and read VmHWM instead.
    code = ("import sys; sys.path.insert(0, %r); import bench_loss as b, torch\n"
            "def kb(key):\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith(key): return int(line.split()[1])\n"
            "W, X, y = b.make_problem(%d, %d, %d, torch.%s, torch.device('cpu'))\n"
            "m = b.methods(W, X, y)[%r]\n"
            "open('/proc/self/clear_refs', 'w').write('5')\n"
            "base = kb('VmRSS:'); m(); print((kb('VmHWM:') - base) / 1024)\n"
            % (os.path.dirname(os.path.abspath(__file__)), n, d, c, str(dtype).split(".")[1], name))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--n", default="500,49000", help="comma-separated numbers of examples")
    ap.add_argument("--d", type=int, default=3073, help="input dimension (CIFAR-10 + bias)")
    ap.add_argument("--c", type=int, default=10, help="classes")
    ap.add_argument("--dtype", default="float32", help="float32 or float64")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per method (median)")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for torch and numpy's BLAS alike (0: chosen per N by "
                         "torch_svm.device.auto_threads: one for N = 500, every core for 49000)")
    ap.add_argument("--compile", action="store_true",
                    help="add torch.compile(svm_loss_and_grad) (CUDA: mode reduce-overhead)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    ap.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    ap.add_argument("--sparse", action="store_true",
                    help="instead: the gradient's GEMM against its sparse path at a linear "
                         "probe's shape (--n 200 --d 513 --c 1000 unless given), by density of B")
    args = ap.parse_args(argv)
    if args.sparse:
        n = 200 if args.n == "500,49000" else int(args.n.split(",")[0])
        d, c = (513, 1000) if (args.d, args.c) == (3073, 10) else (args.d, args.c)
        with threads(args.threads or 1):
            rows = sparse_rows(n, d, c, resolve_dtype(args.dtype), args.repeat)
        if args.json:
            json.dump(dict(n=n, d=d, c=c, threads=args.threads or 1, rows=rows), sys.stdout, indent=2)
            print()
            return
        print(f"X^T B + 2 reg W, N={n}, D={d}, C={c}, {args.dtype}, {args.threads or 1} thread(s), "
              f"median of {args.repeat}, load average {os.getloadavg()[0]:.1f}\n")
        print("| density of B | GEMM ms | sparse ms | GEMM / sparse | the library takes |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {100 * r['density']:.1f}% | {r['gemm_ms']:.2f} | {r['sparse_ms']:.2f} | "
                  f"{r['gemm_ms'] / r['sparse_ms']:.2f} | {r['chosen']} |")
        return
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    compiled = None
    if args.compile:
        compiled = torch.compile(svm_loss_and_grad, dynamic=False,
                                 mode="reduce-overhead" if device.type == "cuda" else None)

    rows = []
    for n in (int(v) for v in args.n.split(",")):
        W, X, y = make_problem(n, args.d, args.c, dtype, device)
        nthreads = args.threads or auto_threads(n * args.d * args.c)
        with threads(nthreads):
            timed = timeit(methods(W, X, y, compiled), args.repeat, device)
            lay = timeit(layouts(W, X, y), args.repeat, device)
        hand = timed["hand"][0]
        for name, (sec, warmup) in timed.items():
            mem = None if args.no_memory or "naive" in name or "compiled" in name else \
                peak_memory(name, n, args.d, args.c, dtype, device)
            rows.append(dict(n=n, threads=nthreads, method=name, ms=sec * 1e3, vs_hand=sec / hand,
                             peak_mib=mem, warmup_s=warmup if "compiled" in name else None))
        for name, (sec, _) in lay.items():
            rows.append(dict(n=n, threads=nthreads, method=f"GEMM {name}", ms=sec * 1e3,
                             vs_hand=sec / hand, peak_mib=None, warmup_s=None))
    meta = dict(device=str(device), dtype=args.dtype, d=args.d, c=args.c, torch=torch.__version__,
                numpy=np.__version__, tf32=args.tf32, loadavg=[round(v, 2) for v in os.getloadavg()],
                gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    if args.json:
        json.dump(dict(meta=meta, rows=rows), sys.stdout, indent=2)
        print()
        return
    where = f" ({meta['gpu']})" if meta["gpu"] else ""
    print(f"device {meta['device']}{where}, {args.dtype}{', TF32' if args.tf32 else ''}, "
          f"D={args.d}, C={args.c}, torch {meta['torch']}, numpy {meta['numpy']}, median of "
          f"{args.repeat}, load average {meta['loadavg']} at the end\n")
    print("| N | threads | method | ms per loss+grad | time / hand-written | extra peak memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mem = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        warm = "" if r["warmup_s"] is None else f" (compiling: {r['warmup_s']:.1f} s)"
        print(f"| {r['n']} | {r['threads']} | {r['method']}{warm} | {r['ms']:.2f} | "
              f"{r['vs_hand']:.2f} | {mem} |")


if __name__ == "__main__":
    main()
