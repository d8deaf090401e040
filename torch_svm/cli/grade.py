"""``torch-svm grade SUBMISSIONS``: judge a whole class as ``torch-svm verify`` judges one
function, and write what a teacher and an autograder read (:mod:`verification.judge.grade`)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from torch_svm.cli._common import (add_json_arg, check_out, float_flag, int_flag, new_parser,
                                   print_json)
from torch_svm.cli.verify import add_judging_args, judging
from torch_svm.errors import UsageError

#: What grade writes into --out.
GRADE_FILES = ("grades.csv", "grades.json", "feedback/", "gradescope/")


def _functions(text: str):
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if not n.isidentifier()]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"must be comma-separated function names, got {text[:200]!r}")
    return tuple(dict.fromkeys(names))


def add_parser(subparsers) -> None:
    p = new_parser(
        subparsers, "grade", help="judge a class's submissions as verify does; grades.csv, "
                                  "feedback and Gradescope results",
        description="Each subfolder of SUBMISSIONS (or .py file in it) is one student. The "
                    "functions are looked up in the student's one linear_svm.py (or --file) and "
                    "each is judged exactly as `torch-svm verify` judges it, in its own worker "
                    "process with the --timeout and --memory limits, --jobs students at a time. "
                    "Writes --out/grades.csv (student, function, verdict, diagnosis, seconds), "
                    "feedback/STUDENT.md (verify's words), gradescope/STUDENT/results.json and "
                    "grades.json (what a rerun reads: students whose files did not change keep "
                    "their rows unless --force). Exit 0 when the grading ran, whatever the "
                    "verdicts; 2 for bad input.",
        epilog="Gradescope: a run_autograder script of one line, `torch-svm grade "
               "/autograder/submission --gradescope /autograder/results/results.json`, grades "
               "the one submission Gradescope unpacks there.")
    p.add_argument("submissions", metavar="SUBMISSIONS",
                   help="folder with one subfolder (or .py file) per student; with --gradescope, "
                        "one student's submission")
    p.add_argument("--out", default="grades", help="folder for the results (replaced whole)")
    p.add_argument("--jobs", type=int_flag(1, 256), default=min(4, os.cpu_count() or 1),
                   help="students judged at once")
    p.add_argument("--functions", type=_functions, default="svm_loss_naive,svm_loss_vectorized",
                   help="comma-separated names of the functions to judge")
    p.add_argument("--file", default=None, metavar="RELPATH",
                   help="the judged file's path inside each student's folder (default: the one "
                        "file named linear_svm.py, wherever it is)")
    p.add_argument("--points", type=float_flag(0, 1e6), default=1.0,
                   help="points per function that passes (Gradescope's score)")
    p.add_argument("--force", action="store_true",
                   help="judge every student again, even those whose files did not change")
    p.add_argument("--gradescope", default=None, metavar="RESULTS_JSON",
                   help="SUBMISSIONS is one student's submission (Gradescope's "
                        "/autograder/submission): write Gradescope's results.json there "
                        "(--out only when given explicitly)")
    add_judging_args(p, memory=4.0)
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch_svm
    from torch_svm.device import auto_threads, using_threads
    from torch_svm.files import atomic_write_json
    from torch_svm.progress import progress
    from verification.judge import grade as g, gradebook
    from verification.judge.verify import check_points

    single = args.gradescope is not None
    functions = args.functions
    if args.file is not None and (not args.file.strip() or Path(args.file).is_absolute()
                                  or ".." in Path(args.file).parts):
        raise UsageError(f"--file must be a path inside a student's folder, got {args.file[:200]!r}")
    explicit_out = not single or args.out != "grades"
    out = check_out(args.out, GRADE_FILES) if explicit_out else None
    if single:
        _check_results_path(args.gradescope)
    students = g.find_students(Path(args.submissions), args.file, single=single, exclude=out)
    config, data = judging(args)
    with using_threads(auto_threads(data.X.shape[0] * data.X.shape[1] * data.num_classes)):
        points = check_points(data, config)          # once, before any judged code runs
    settings = {"version": torch_svm.__version__, "functions": list(functions), "file": args.file,
                "data": data.description, "n": int(data.X.shape[0]),
                "config": dict(vars(config))}
    previous = {} if args.force or out is None else gradebook.read_previous(out, settings, students)
    counts = {"pass": 0, "fail": 0, "error": 0}
    with progress(total=len(students), desc="grade", unit="student", enabled=not args.json) as bar:
        def done(student, rows):
            for row in rows:
                counts[row.verdict] += 1
            bar.set_postfix(counts, refresh=False)
            bar.update(1)

        graded = g.grade(students, functions, data, points, config, jobs=args.jobs,
                         previous=previous, on_done=done)
    if out is not None:
        gradebook.write_results(out, graded, settings, args.points)
    if single:
        atomic_write_json(args.gradescope, gradebook.gradescope_results(graded.rows[students[0].name],
                                                                args.points))
    summary = dict(graded.summary(), out=str(out) if out is not None else None,
                   gradescope=args.gradescope)
    if args.json:
        print_json(summary)
    else:
        _print_summary(summary, len(functions), args.jobs)
    return 0


def _check_results_path(path: str) -> None:
    """--gradescope's file can be written (its folder made), before any work."""
    import tempfile

    target = Path(path)
    try:
        if target.is_dir():
            raise UsageError(f"--gradescope {path[:200]!r} is a folder; give the results.json path")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target.parent):
            pass
    except OSError as exc:
        raise UsageError(f"--gradescope {path[:200]!r} cannot be written: "
                         f"{exc.strerror or type(exc).__name__}") from None


def _print_summary(s, functions: int, jobs: int) -> None:
    v = s["verdicts"]
    print(f"torch-svm grade: {s['students']} students x {functions} functions in "
          f"{s['seconds']:g} s (jobs {jobs}): pass {v['pass']}, fail {v['fail']}, error {v['error']}"
          + (f"; {s['reused']} students unchanged since the last run, kept" if s["reused"] else ""))
    if s["diagnoses"]:
        print("  diagnoses: " + ", ".join(f"{k} {n}" for k, n in s["diagnoses"].items()))
    if s["rejudged_alone"]:
        print(f"  judged again alone (their files changed while others ran): "
              f"{', '.join(s['rejudged_alone'][:10])}")
    if s["cache_changed"]:
        print(f"  judged code changed verify's cache ({len(s['cache_changed'])} files): deleted, "
              f"no verdict read them")
    if s["out"]:
        print(f"  wrote {s['out']}/grades.csv, feedback/, gradescope/")
    if s["gradescope"]:
        print(f"  wrote {s['gradescope']}")
