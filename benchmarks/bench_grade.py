"""Grade a class of about 60 submissions, as a teacher runs ``torch-svm grade``, and check
that every verdict is the one ``torch-svm verify`` gives alone.

    python benchmarks/bench_grade.py [--students 60] [--jobs 1,2] [--spin] [--keep DIR]

The class is built from ``tests/mutants.py``: each student's ``linear_svm.py`` (in the
assignment's ``cs231n/classifiers/`` layout) holds the helper code and two functions,
``svm_loss_naive`` and ``svm_loss_vectorized``, drawn so that every correct variant and every
bug kind verify knows appears, in the naive and in the vectorized slot; a few students have no
file, two files, a syntax error or code that exits. Each ``--jobs`` count grades the class in
a fresh ``--out`` (the CLI as a subprocess, timed end to end), then a rerun with nothing
changed (every student kept). ``--loop`` times the shell loop a teacher would otherwise
write (one ``torch-svm verify`` process per function) on a sample. Then every (student, function) is judged alone by the verify
CLI's own path (:func:`verification.judge.verify.verify` on the file) and compared with the
grade row. ``--spin`` runs a process spinning on one core throughout (the busy neighbour).
"""
from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import mutants  # noqa: E402

HELPERS = ("_scores_margins", "_vectorized", "correct_vectorized", "correct_class_not_subtracted")
BROKEN = {
    "no_file": None,
    "two_files": "two",
    "syntax_error": "def svm_loss_naive(W, X, y, reg)\n    return 0\n",
    "exits": "import os\n\ndef svm_loss_naive(W, X, y, reg):\n    os._exit(1)\n",
}


def _renamed(name: str, as_name: str) -> str:
    return inspect.getsource(getattr(mutants, name)).replace(f"def {name}(", f"def {as_name}(", 1)


def solution(naive: str, vectorized: str) -> str:
    parts = ["import numpy as np", *(inspect.getsource(getattr(mutants, h)) for h in HELPERS),
             _renamed(naive, "svm_loss_naive"), _renamed(vectorized, "svm_loss_vectorized")]
    return "\n\n".join(parts)


def build_class(root: Path, students: int, seed: int = 0) -> dict:
    """{student: (naive mutant, vectorized mutant)} written under ``root``."""
    rng = random.Random(seed)
    correct, buggy = list(mutants.CORRECT), list(mutants.BUGGY)
    honest = students - len(BROKEN)
    plan = {}
    for i in range(honest):
        # the first students cover every bug once in each slot; the rest are drawn, a third
        # of them correct in both functions
        if i < len(buggy):
            pair = (buggy[i], rng.choice(correct))
        elif i < 2 * len(buggy):
            pair = (rng.choice(correct), buggy[i - len(buggy)])
        elif rng.random() < 1 / 3:
            pair = (rng.choice(correct), rng.choice(correct))
        else:
            pair = (rng.choice(correct + buggy), rng.choice(correct + buggy))
        plan[f"student{i:03d}"] = pair
    for name, (naive, vectorized) in plan.items():
        path = root / name / "cs231n" / "classifiers" / "linear_svm.py"
        path.parent.mkdir(parents=True)
        path.write_text(solution(naive, vectorized))
    for name, source in BROKEN.items():
        folder = root / name
        folder.mkdir()
        if source == "two":
            for sub in ("a", "b"):
                (folder / sub).mkdir()
                (folder / sub / "linear_svm.py").write_text(solution("correct_naive", "correct_vectorized"))
        elif source is not None:
            (folder / "linear_svm.py").write_text(source)
    return plan


def grade(root: Path, out: Path, jobs: int, *extra: str):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torch_svm", "grade", str(root), "--out", str(out),
                           "--jobs", str(jobs), "--json", *extra], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"grade exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=60)
    parser.add_argument("--jobs", default="1,2")
    parser.add_argument("--spin", action="store_true", help="a busy neighbour on one core")
    parser.add_argument("--keep", default=None, help="build the class here and keep it")
    parser.add_argument("--loop", type=int, default=10,
                        help="time this many `torch-svm verify` processes, the shell loop a "
                             "teacher would write, and scale to the class (0: skip)")
    args = parser.parse_args()
    spinner = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.spin else None)
    try:
        work = Path(args.keep or tempfile.mkdtemp(prefix="bench-grade-"))
        root = work / "class"
        plan = build_class(root, args.students)
        print(f"class: {args.students} students ({len(plan)} with code, {len(BROKEN)} broken), "
              f"load average {os.getloadavg()[0]:.1f}, cpus {os.cpu_count()}"
              + (", busy neighbour on" if spinner else ""))
        results = {}
        for jobs in (int(j) for j in args.jobs.split(",")):
            out = work / f"grades-jobs{jobs}"
            wall, summary = grade(root, out, jobs, "--force")
            again, kept = grade(root, out, jobs)
            results[jobs] = (wall, summary, again, kept)
            print(f"--jobs {jobs}: {wall:6.1f} s for {summary['rows']} functions "
                  f"({wall / summary['rows']:.2f} s each); verdicts {summary['verdicts']}; "
                  f"rerun with nothing changed {again:.1f} s ({kept['reused']} students kept)")
        if args.loop:
            names = list(plan)[:args.loop]
            start = time.perf_counter()
            for name in names:
                path = root / name / "cs231n" / "classifiers" / "linear_svm.py"
                subprocess.run([sys.executable, "-m", "torch_svm", "verify", f"{path}:svm_loss_naive"],
                               capture_output=True)
            each = (time.perf_counter() - start) / len(names)
            results["loop"] = each
            print(f"shell loop, one `torch-svm verify` per function: {each:.2f} s each, "
                  f"{each * 2 * args.students:.0f} s for the class")
        from verification.judge.devdata import load_verify_data
        from verification.judge.verify import verify
        from torch_svm.errors import TorchSVMError

        data = load_verify_data("digits")
        loop = results.pop("loop", None)
        out = work / f"grades-jobs{max(results)}"
        with open(out / "grades.csv", newline="") as fh:
            rows = {(r["student"], r["function"]): r for r in csv.DictReader(fh)}
        differ, compared = [], 0
        for name in plan:
            path = root / name / "cs231n" / "classifiers" / "linear_svm.py"
            for fn in ("svm_loss_naive", "svm_loss_vectorized"):
                try:
                    alone = verify(f"{path}:{fn}", data=data).verdict
                except TorchSVMError:
                    alone = "error"
                compared += 1
                if rows[name, fn]["verdict"] != alone:
                    differ.append((name, fn, rows[name, fn]["verdict"], alone))
        print(f"verdicts equal to verify alone: {compared - len(differ)} of {compared}"
              + (f"; differ: {differ}" if differ else ""))
        print(json.dumps({"students": args.students, "jobs": {j: {"seconds": round(r[0], 1),
                          "rerun_seconds": round(r[2], 1), "verdicts": r[1]["verdicts"],
                          "diagnoses": r[1]["diagnoses"]} for j, r in results.items()},
                          "shell_loop_seconds_each": loop,
                          "equal_to_verify": compared - len(differ), "compared": compared}))
        if differ:
            sys.exit(1)
    finally:
        if spinner is not None:
            spinner.kill()


if __name__ == "__main__":
    main()
