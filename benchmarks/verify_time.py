"""How long ``torch-svm verify`` takes for one verdict, start to exit, as a user runs it.

    python benchmarks/verify_time.py [--cifar DIR] [--runs 5] [--spin]

Runs the CLI as a subprocess on a correct vectorized solution (``tests/mutants.py``):
on digits, and on CIFAR-10 when ``--cifar`` names the python-version folder, first with an
empty cache (reads the 50,000 training images once) and then warm. ``--spin`` starts a
neighbour process that spins on one core for the whole measurement (the "busy neighbour").
Prints the median and range of the wall time and of the CPU time (parent and worker). Then
the cost of the worker process: ``verify(..., isolate=True)`` against ``isolate=False`` (judged
in this process), side by side in one process, warm.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTION = f"{ROOT / 'tests' / 'mutants.py'}:correct_vectorized"


def _run(argv, cache: str):
    env = dict(os.environ, TORCH_SVM_CACHE_DIR=cache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import sys; from torch_svm.cli import main; "
                           "sys.exit(main())", "verify", FUNCTION, *argv],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"verify exited {done.returncode}: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _row(name, samples):
    walls, cpus = zip(*samples)
    print(f"{name:<28} wall median {statistics.median(walls):5.2f} s (range {min(walls):.2f}-{max(walls):.2f}), "
          f"cpu median {statistics.median(cpus):5.2f} s, {len(samples)} runs")


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _isolation(data, name: str, runs: int) -> None:
    from verification import verify

    verify(FUNCTION, data=data)                                       # warm
    for isolate in (False, True):
        samples = []
        for _ in range(runs):
            cpu, start = _cpu(), time.perf_counter()
            assert verify(FUNCTION, data=data, isolate=isolate).passed
            samples.append((time.perf_counter() - start, _cpu() - cpu))
        _row(f"{name}, isolate={isolate}", samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", default=None, help="CIFAR-10 python-version folder (optional)")
    parser.add_argument("--runs", type=int, default=5, help="runs per case (default 5)")
    parser.add_argument("--spin", action="store_true", help="a neighbour spinning on one core")
    args = parser.parse_args()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.spin else None
    try:
        print(f"load average before: {os.getloadavg()[0]:.1f}; busy neighbour: {'yes' if spinner else 'no'}")
        with tempfile.TemporaryDirectory() as cache:
            _run([], cache)                                            # warm the page cache
            _row("digits, warm cache", [_run([], cache) for _ in range(args.runs)])
            if args.cifar:
                cifar = ["--data", "cifar10", "--data-dir", args.cifar]
                cold = []
                for _ in range(max(1, args.runs // 2)):
                    with tempfile.TemporaryDirectory() as empty:
                        cold.append(_run(cifar, empty))
                _row("cifar10, empty cache", cold)
                _run(cifar, cache)                                      # fill the cache
                _row("cifar10, warm cache", [_run(cifar, cache) for _ in range(args.runs)])
            os.environ["TORCH_SVM_CACHE_DIR"] = cache
            from verification import load_verify_data

            _isolation(load_verify_data("digits"), "digits in-process", args.runs)
            if args.cifar:
                _isolation(load_verify_data("cifar10", args.cifar), "cifar10 in-process", args.runs)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


if __name__ == "__main__":
    main()
