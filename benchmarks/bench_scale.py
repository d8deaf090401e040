"""Training from a memory-mapped file at linear-probe shape: speed, memory, processes.

Usage::

    python benchmarks/bench_scale.py                  # N = 200,000, D = 512, C = 1,000 (0.4 GB)
    python benchmarks/bench_scale.py --big            # N = 2,000,000 (4.1 GB on disk)
    python benchmarks/bench_scale.py --procs 1,2      # one process, then two under torchrun
    python benchmarks/bench_scale.py --device cuda    # minibatches gathered on the CPU, SGD on the GPU
    python benchmarks/bench_scale.py --quick --json   # a few seconds: what the tests run

Writes synthetic features as ``X.npy`` (float32, ``(N, D)``, in chunks: never whole in memory)
and ``y.npy`` into a folder (a temporary one under ``--dir``, removed afterwards unless
``--keep``): C class means drawn at random, each row its class's mean plus unit noise. Then,
in a fresh process (``torchrun --standalone --nproc-per-node K`` for ``--procs K > 1``), the
library trains on it exactly as ``torch-svm train --data DIR`` does: :func:`torch_svm.data.load_dataset`
(one streaming pass: finite check, moments), :func:`train` reading every minibatch from the
map (val and test 10 % of the rows each, the default lr / reg / init for user data, batch
200 sampled with replacement), then one evaluation of every row of the file (train, val and
test accuracy, streamed in chunks). It reports

* ``load_seconds``; ``examples_per_second`` of the SGD loop (iterations x batch / loop time,
  the gathers from the map included); ``evaluate_seconds`` and ``rows_per_second`` of the
  full evaluation;
* memory from ``/proc/self/status`` (Linux): the peak resident set ``VmHWM`` and the
  anonymous (really allocated, ``RssAnon``) and file-backed (mapped page cache, ``RssFile``)
  parts at the end, in MiB, each also as growth over the process's baseline after imports;
  with several processes, the largest over ranks (and the sum of the peaks).

Numbers from a shared 2-core machine are noisy: compare orders of magnitude and ratios
measured in one run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

_SIZES = {"default": (200_000, 512, 1000), "big": (2_000_000, 512, 1000), "quick": (20_000, 64, 10)}


def write_data(folder: Path, n: int, d: int, c: int, seed: int = 0, chunk: int = 65536) -> int:
    """``X.npy`` (n, d) float32 and ``y.npy`` (n,) int32 written chunk by chunk; returns bytes."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(c, d)).astype(np.float32) * 0.25                  # (c, d)
    y = rng.integers(0, c, n).astype(np.int32)
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        part = rng.standard_normal((stop - start, d), dtype=np.float32)
        part += means[y[start:stop]]
        X[start:stop] = part
    X.flush()
    del X
    np.save(folder / "y.npy", y)
    return (folder / "X.npy").stat().st_size + (folder / "y.npy").stat().st_size


def _status() -> Dict[str, float]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process in MiB (empty off Linux)."""
    fields = {}
    path = Path("/proc/self/status")
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def measure(folder: str, iters: int, batch_size: int, device: str, threads: int,
            stream: bool = False) -> dict:
    """Load, train and evaluate in this process (one rank of a torchrun group, if started by
    one); the numbers of rank 0, memory the largest (and summed) over ranks."""
    import torch

    from torch_svm.data import DataConfig, load_dataset
    from torch_svm.evaluate import accuracy
    from torch_svm.distributed import all_reduce_sum, process_group
    from torch_svm.train import TrainConfig, train

    base = _status()
    with process_group(device) as world:
        start = time.perf_counter()
        # --stream: minibatches read from the file (bounded memory); default: as `torch-svm
        # train` does, the train split read into memory once when it fits in a quarter of RAM
        data = load_dataset(folder, config=DataConfig(in_memory=False if stream else None))
        load_seconds = time.perf_counter() - start
        result = train(data, TrainConfig(iters=iters, batch_size=batch_size, device=device,
                                         threads=threads))
        start = time.perf_counter()
        accuracies = {s: accuracy(result.model, data, s) for s in ("train", "val", "test")}
        evaluate_seconds = time.perf_counter() - start
        rows = sum(data.num_examples(s) for s in ("train", "val", "test"))
        end = _status()
        memory = {k: end[k] for k in end}
        memory.update({f"{k}_growth": end[k] - base[k] for k in end})
        if world.size > 1:   # the largest over ranks, and the sum of the peaks
            keys = sorted(memory)
            t = torch.tensor([memory[k] for k in keys], dtype=torch.float64)
            peaks = all_reduce_sum(torch.tensor([memory.get("VmHWM", 0.0)], dtype=torch.float64))
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            memory = dict(zip(keys, t.tolist()))
            memory["VmHWM_sum"] = float(peaks)
    return {"world_size": result.world_size, "device": str(result.model.W.device),
            "threads": result.threads, "lr": result.config.lr, "reg": result.config.reg,
            "load_seconds": load_seconds, "train_seconds": result.seconds,
            "examples_per_second": iters * batch_size / result.seconds,
            "evaluate_seconds": evaluate_seconds, "rows_evaluated": rows,
            "rows_per_second": rows / evaluate_seconds,
            "final_loss": result.loss_history[-1], **{f"{s}_accuracy": a for s, a in accuracies.items()},
            "memory_mb": memory, "rank0": world.main}


def plain(folder: str, iters: int, batch_size: int, threads: int, kind: str) -> dict:
    """What a user writes instead (``benchmarks/plain_loops.py``: ``dataloader`` or ``gather``)
    with the library's default lr and reg, features standardized once in memory (10 % each
    for val and test, drawn with seed 0); ``gemm``: the two GEMMs of a step alone,
    ``torch.mm(..., out=)``, each in its faster layout (``plain_loops.gemm_floor``), the floor."""
    import torch

    from plain_loops import accuracy as plain_accuracy, gemm_floor, plain_sgd
    from torch_svm.data import load_dataset
    from torch_svm.defaults import default_hypers

    torch.set_num_threads(threads)
    lr, reg = default_hypers(load_dataset(folder))          # the library's recipe, same numbers
    X = torch.from_numpy(np.load(Path(folder) / "X.npy"))
    y = torch.from_numpy(np.load(Path(folder) / "y.npy").astype(np.int64))
    n, d = X.shape
    c = int(y.max()) + 1
    if kind == "gemm":
        seconds, _ = gemm_floor(batch_size, d, c, iters)
        return {"kind": kind, "threads": threads, "examples_per_second": iters * batch_size / seconds,
                "train_seconds": seconds, "val_accuracy": None}
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_val = n // 10
    val, train_rows = order[:n_val], order[2 * n_val:]
    Xtr, ytr = X[train_rows], y[train_rows]
    mean, std = Xtr.mean(0), Xtr.std(0).clamp_min(1e-12)
    Xtr = (Xtr - mean) / std
    model, seconds, _ = plain_sgd(Xtr, ytr, c, lr, reg, iters, batch_size, kind=kind)
    return {"kind": kind, "threads": threads, "examples_per_second": iters * batch_size / seconds,
            "train_seconds": seconds,
            "val_accuracy": plain_accuracy(model, (X[val] - mean) / std, y[val])}


def _child(args) -> int:
    if args.kind != "torch-svm":
        print(json.dumps(plain(args.child, args.iters, args.batch_size, args.threads, args.kind)))
        return 0
    from plain_loops import _warm_optim

    _warm_optim()
    report = measure(args.child, args.iters, args.batch_size, args.device, args.threads,
                     args.stream)
    if report.pop("rank0"):
        print(json.dumps(report))
    return 0


def _run_child(folder: Path, procs: int, args, kind: str = "torch-svm", threads=None) -> dict:
    """measure() (or plain()) in a fresh process (or ``procs`` processes under torchrun)."""
    threads = args.threads if threads is None else threads
    flags = ["--child", str(folder), "--iters", str(args.iters), "--batch-size",
             str(args.batch_size), "--device", args.device, "--threads", str(threads),
             "--kind", kind]
    flags += ["--stream"] if args.stream else []
    script = str(Path(__file__).resolve())
    if procs == 1:
        command = [sys.executable, script, *flags]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={procs}", script, *flags]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(script).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"bench_scale: the {procs}-process run failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="rows (default: 200,000; --big 2,000,000)")
    parser.add_argument("--d", type=int, default=None, help="features (default: 512)")
    parser.add_argument("--c", type=int, default=None, help="classes (default: 1,000)")
    parser.add_argument("--big", action="store_true", help="N = 2,000,000: 4.1 GB on disk")
    parser.add_argument("--quick", action="store_true",
                        help="N = 20,000, D = 64, C = 10, 50 iterations, in this process")
    parser.add_argument("--iters", type=int, default=300, help="SGD iterations (default: 300)")
    parser.add_argument("--batch-size", type=int, default=200, help="global batch (default: 200)")
    parser.add_argument("--procs", default="1",
                        help="process counts to run, e.g. 1,2 (> 1: torchrun, gloo or NCCL) (default: 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per process; 0: the library's choice (default: 0)")
    parser.add_argument("--dir", default=None, help="where to write the data (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--stream", action="store_true",
                        help="read every minibatch from the file (in_memory=False): the bounded-"
                             "memory path a file larger than RAM takes")
    parser.add_argument("--compare", action="store_true",
                        help="side by side in one run, at 1 and 2 threads: torch-svm, plain "
                             "PyTorch with a DataLoader, plain PyTorch with index gathers, and "
                             "the two GEMMs of a step alone (the floor); then torch-svm on the "
                             "threads it chooses (auto), against the 2-thread floor and loops; "
                             "--repeat runs each")
    parser.add_argument("--repeat", type=int, default=3, help="--compare: runs per row (default: 3)")
    parser.add_argument("--spin", action="store_true",
                        help="--compare with a busy neighbour: a process spinning on one core")
    parser.add_argument("--kind", default="torch-svm", help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("bench_scale: --device cuda needs a CUDA device; none here")
    n, d, c = _SIZES["quick" if args.quick else "big" if args.big else "default"]
    n, d, c = args.n or n, args.d or d, args.c or c
    if args.quick:
        args.iters = min(args.iters, 50)
    procs = [int(p) for p in args.procs.split(",")]
    need = n * d * 4 + n * 4
    parent = Path(args.dir or tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if need > 0.9 * free:
        raise SystemExit(f"bench_scale: the data need {need / 2**30:.1f} GiB, {parent} has "
                         f"{free / 2**30:.1f} GiB free; pass --dir elsewhere or a smaller --n")
    folder = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=parent))
    try:
        start = time.perf_counter()
        size = write_data(folder, n, d, c)
        write_seconds = time.perf_counter() - start
        if args.compare:
            return _compare(folder, args, n, d, c)
        if args.quick:   # in this process: what the tests run (memory is then this process's)
            rows = [measure(str(folder), args.iters, args.batch_size, args.device, args.threads)]
            rows[0].pop("rank0")
        else:
            rows = [_run_child(folder, k, args) for k in procs]
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    result = {"n": n, "d": d, "c": c, "data_mb": size / 2**20, "write_seconds": write_seconds,
              "iters": args.iters, "batch_size": args.batch_size, "folder": str(folder),
              "kept": args.keep, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"X: ({n}, {d}) float32 + y, {size / 2**20:.0f} MiB on disk (written in "
          f"{write_seconds:.1f} s); C = {c}; {args.iters} iterations of batch {args.batch_size}, "
          f"trained from the memory map on {args.device}")
    print("| processes | threads each | load s | train examples/s | full evaluation s (rows/s) | "
          "peak RSS MiB (growth) | RssAnon MiB | RssFile MiB | val acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["memory_mb"]
        print(f"| {r['world_size']} | {r['threads']} | {r['load_seconds']:.1f} | "
              f"{r['examples_per_second']:,.0f} | {r['evaluate_seconds']:.1f} "
              f"({r['rows_per_second']:,.0f}) | {m.get('VmHWM', 0):.0f} "
              f"({m.get('VmHWM_growth', 0):+.0f}) | {m.get('RssAnon', 0):.0f} | "
              f"{m.get('RssFile', 0):.0f} | {r['val_accuracy']:.3f} |")
    return 0


KINDS = (("torch-svm", "torch-svm train --data DIR"),
         ("dataloader", "plain PyTorch, DataLoader over a TensorDataset"),
         ("gather", "plain PyTorch, index gather on an in-memory tensor"),
         ("gemm", "the step's two GEMMs alone (floor)"))


def _compare(folder: Path, args, n: int, d: int, c: int) -> int:
    import statistics

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.spin else None
    results = []

    def row(threads, kind: str) -> dict:
        runs = [_run_child(folder, 1, args, kind, threads) for _ in range(args.repeat)]
        rates = [r["examples_per_second"] for r in runs]
        accs = [r["val_accuracy"] for r in runs if r.get("val_accuracy") is not None]
        return {"threads": threads, "kind": kind, "median": statistics.median(rates),
                "min": min(rates), "max": max(rates), "ended_on": [r["threads"] for r in runs],
                "val_accuracy": statistics.median(accs) if accs else None}

    try:
        for threads in (1, 2):
            results += [row(threads, kind) for kind, _ in KINDS]
        results.append(row(0, "torch-svm"))     # the library's choice (CoreWatch)
    finally:
        if spinner is not None:
            spinner.kill()
    floor = {r["threads"]: r["median"] for r in results if r["kind"] == "gemm"}
    plain_best = {t: max(r["median"] for r in results if r["threads"] == t
                         and r["kind"] in ("dataloader", "gather")) for t in (1, 2)}
    for r in results:      # the library's choice against what every core gives the others
        t = r["threads"] or 2
        r["of_floor"] = r["median"] / floor[t]
        r["vs_best_plain"] = r["median"] / plain_best[t]
    if args.json:
        print(json.dumps({"n": n, "d": d, "c": c, "iters": args.iters, "repeat": args.repeat,
                          "busy_neighbour": args.spin, "load_average": os.getloadavg()[0],
                          "rows": results}, indent=2))
        return 0
    print(f"X: ({n}, {d}) float32, C = {c}; {args.iters} SGD steps of batch {args.batch_size}; "
          f"{args.repeat} fresh processes per row (median [min, max]); load average "
          f"{os.getloadavg()[0]:.1f}" + ("; a neighbour spins on one core" if args.spin else ""))
    print("| threads | method | examples/s | of the GEMM floor | / best plain loop | val acc |")
    print("|---|---|---|---|---|---|")
    names = dict(KINDS)
    for r in results:
        acc = "-" if r["val_accuracy"] is None else f"{r['val_accuracy']:.3f}"
        threads = r["threads"] or "auto (ended on " + ", ".join(map(str, r["ended_on"])) + ")"
        print(f"| {threads} | {names[r['kind']]} | {r['median']:,.0f} [{r['min']:,.0f}, "
              f"{r['max']:,.0f}] | {100 * r['of_floor']:.0f}% | {r['vs_best_plain']:.2f} | {acc} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
