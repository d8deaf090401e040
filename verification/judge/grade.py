"""Grade a class: every student's functions judged as :func:`verification.judge.verify.verify`
judges one, ``jobs`` students at a time, with the results a teacher and an autograder read.

``torch-svm grade SUBMISSIONS`` (:mod:`torch_svm.cli.grade`) is the front end. Here:

* :func:`find_students`: each immediate subfolder of SUBMISSIONS is a student (a ``.py`` file
  there is one too); the judged file is the one ``linear_svm.py`` in the folder, or ``file``.
  Every ``.py`` file of a student is read into memory once, before any student's code runs,
  and hashed: that content is what is judged and what a rerun compares.
* :func:`grade`: the dev set and check points are given once (the caller computes them before
  any judged code runs). Each student is judged from a private copy of their files, written
  just before their turn, each function in its own worker process (time and memory limits).
  A student whose copy changed while other students ran beside it is judged again at the end,
  alone. The cache of :mod:`verification.judge.devdata` is watched over the whole run: no
  verdict reads it once judging starts, and what the judged code changed there is deleted.
* :mod:`verification.judge.gradebook` writes the results and reads them back for a rerun.

This is process isolation, not a sandbox: the judged code runs as the grader's user. What it
cannot do is decide its own verdict or another student's, or leave processes behind; what it
could do (change files the grader's user can write, such as the installed packages) is why
untrusted classes are best graded in a container, one submission at a time, as Gradescope does.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from torch_svm.errors import ArgumentError, TorchSVMError, clip
from verification.judge.devdata import VerifyData, cache_snapshot, cache_tampered
from verification.judge.usercode import printable
from verification.judge.verdict import VerifyReport, format_output
from verification.judge.verify import VerifyConfig, judge
from verification.judge.worker import stop_all

__all__: list = []      # internal: torch_svm.cli.grade composes these

#: The file a student's functions are looked for in, unless ``file`` says otherwise.
DEFAULT_FILE = "linear_svm.py"
_SKIPPED_DIRS = {"__pycache__", ".ipynb_checkpoints", ".git"}
_MAX_SOURCE = 10 << 20          # bytes of .py files read per student


@dataclass
class Student:
    """One submission: a name, its ``.py`` files (read once) and the file to judge."""

    name: str
    files: Dict[str, bytes] = field(default_factory=dict)   # relative path -> content
    target: Optional[str] = None          # the judged file's relative path (None: problem)
    problem: str = ""                     # why nothing can be judged ("" when target is set)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.files):
            h.update(path.encode("utf-8", "surrogateescape") + b"\0")
            h.update(hashlib.sha256(self.files[path]).digest())
        h.update(f"\0{self.target}\0{self.problem}".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


@dataclass
class Row:
    """One (student, function) result: a row of grades.csv and a section of the feedback."""

    student: str
    function: str
    verdict: str                          # "pass", "fail" or "error"
    diagnosis: str                        # the named bugs ("; "-joined) or the error, one line
    seconds: float
    feedback: str                         # verify's words: the report, or the error


# --------------------------------------------------------------------------- finding the class

def find_students(root: Path, file: Optional[str] = None, *, single: bool = False,
                  exclude: Optional[Path] = None) -> List[Student]:
    """The students of ``root`` (or ``root`` itself as one submission when ``single``), not
    counting the folder ``exclude`` (grade's own --out, when it lies in the class folder).

    Raises:
        ArgumentError: ``root`` is not a folder, or holds no submission.
    """
    root = Path(root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise ArgumentError(f"SUBMISSIONS {printable(str(root), 300)} {what}: give the folder with "
                            f"one subfolder (or .py file) per student")
    if single:
        return [_folder_student("submission", root, file)]
    students = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in _SKIPPED_DIRS or entry.is_symlink():
            continue
        if exclude is not None and os.path.realpath(entry.path) == os.path.realpath(exclude):
            continue
        if entry.is_dir():
            students.append(_folder_student(entry.name, Path(entry.path), file))
        elif entry.is_file() and entry.name.endswith(".py"):
            taken = (root / entry.name[:-3]).is_dir()      # alice/ and alice.py: two students
            student = Student(entry.name if taken else entry.name[:-3])
            _read(student, Path(entry.path), entry.name)
            student.target = None if student.problem else entry.name
            students.append(student)
    if not students:
        raise ArgumentError(f"SUBMISSIONS {printable(str(root), 300)} holds no submission: expected "
                            f"one subfolder (or .py file) per student")
    return students


def _read(student: Student, path: Path, rel: str) -> None:
    try:
        size = path.stat().st_size
        if sum(map(len, student.files.values())) + size > _MAX_SOURCE:
            student.problem = f"more than {_MAX_SOURCE >> 20} MB of .py files: not graded"
            return
        student.files[rel] = path.read_bytes()
    except OSError as exc:
        student.problem = f"cannot read {printable(rel, 200)}: {exc.strerror or exc}"


def _folder_student(name: str, folder: Path, file: Optional[str]) -> Student:
    student = Student(name)
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
        for leaf in sorted(names):
            path = Path(top) / leaf
            if leaf.endswith(".py") and path.is_file() and not path.is_symlink():
                _read(student, path, path.relative_to(folder).as_posix())
                if student.problem:
                    return student
    shown = printable(name, 100)
    if file is not None:
        wanted = Path(file).as_posix()
        if wanted in student.files:
            student.target = wanted
        else:
            student.problem = f"no {printable(wanted, 200)} in {shown}/"
        return student
    found = sorted(p for p in student.files if p.rsplit("/", 1)[-1] == DEFAULT_FILE)
    if len(found) == 1:
        student.target = found[0]
    elif not found:
        others = (f"its .py files: {', '.join(printable(p, 100) for p in sorted(student.files)[:5])}"
                  if student.files else "it holds no .py file")
        student.problem = f"no {DEFAULT_FILE} in {shown}/ ({others}); give the path with --file"
    else:
        listed = ", ".join(printable(p, 100) for p in found[:5])
        student.problem = f"{len(found)} files named {DEFAULT_FILE} in {shown}/ ({listed}): give the one to grade with --file"
    return student


# --------------------------------------------------------------------------- judging

def _error_row(student: Student, function: str, message: str, seconds: float = 0.0) -> Row:
    return Row(student.name, function, "error", clip(message, 300), seconds, f"error: {message}")


def _feedback(report: VerifyReport, private: str, shown: str) -> str:
    """What verify prints for ``report`` (its report, or that the code does not run with the
    user's traceback and a hint), with the private copy's path written as the student's folder."""
    text = str(report)
    printed = format_output(report.output)
    if printed:
        text += "\n\nwhat the code printed:\n" + printed
    return text.replace(private, shown)


def _diagnosis(report: VerifyReport) -> str:
    if report.error is not None:
        return " ".join(report.error.message.split())
    return "; ".join(d.pattern for d in report.diagnosis or [])


def judge_student(student: Student, functions, data: VerifyData, points, config: VerifyConfig,
                  workdir: Path, stopping: Optional[threading.Event] = None) -> Tuple[List[Row], bool]:
    """Judge each function of ``student`` from a private copy of their files; returns the rows
    and whether the copy was changed while they ran (by them, or by code running beside)."""
    if student.problem:
        return [_error_row(student, fn, student.problem) for fn in functions], False
    shown = printable(student.name, 100)
    job = Path(tempfile.mkdtemp(prefix="student-", dir=workdir))
    try:
        for rel, content in student.files.items():
            path = job / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        rows = []
        for fn in functions:
            if stopping is not None and stopping.is_set():
                break
            start = time.monotonic()
            try:
                report = judge(f"{job / student.target}:{fn}", data, points, config,
                               watch_cache=False)
            except TorchSVMError as exc:
                message = " ".join(str(exc).replace(str(job), shown).split())
                rows.append(_error_row(student, fn, message, round(time.monotonic() - start, 3)))
                continue
            rows.append(Row(student.name, fn, report.verdict,
                            clip(_diagnosis(report).replace(str(job), shown), 300),
                            round(time.monotonic() - start, 3), _feedback(report, str(job), shown)))
        changed = any(_content(job / rel) != content for rel, content in student.files.items())
        return rows, changed
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _content(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes() if path.is_file() and not path.is_symlink() else None
    except OSError:
        return None


@dataclass
class Graded:
    """A run's results: the rows per student (in the class's order), what was reused from an
    earlier run, and what the run noticed."""

    students: List[Student]
    rows: Dict[str, List[Row]]
    reused: List[str] = field(default_factory=list)
    rejudged: List[str] = field(default_factory=list)
    cache_changed: List[str] = field(default_factory=list)
    seconds: float = 0.0

    def all_rows(self) -> List[Row]:
        return [row for s in self.students for row in self.rows[s.name]]

    def summary(self) -> Dict[str, Any]:
        rows = self.all_rows()
        verdicts = {v: sum(r.verdict == v for r in rows) for v in ("pass", "fail", "error")}
        diagnoses: Dict[str, int] = {}
        for r in rows:
            if r.verdict == "fail":
                for pattern in filter(None, r.diagnosis.split("; ")):
                    diagnoses[pattern] = diagnoses.get(pattern, 0) + 1
        return {"students": len(self.students), "rows": len(rows), "verdicts": verdicts,
                "diagnoses": dict(sorted(diagnoses.items(), key=lambda kv: (-kv[1], kv[0]))),
                "graded": len(self.students) - len(self.reused), "reused": len(self.reused),
                "rejudged_alone": self.rejudged, "cache_changed": self.cache_changed,
                "seconds": round(self.seconds, 1)}


def grade(students: List[Student], functions, data: VerifyData, points, config: VerifyConfig, *,
          jobs: int = 1, previous: Optional[Dict[str, List[Row]]] = None,
          on_done: Optional[Callable[[Student, List[Row]], None]] = None) -> Graded:
    """Judge every student (``previous``: rows to reuse, by student name, for students whose
    files are unchanged); ``on_done(student, rows)`` after each."""
    started = time.monotonic()
    previous = previous or {}
    graded = Graded(students, {})
    todo = []
    for s in students:
        if s.name in previous:
            graded.rows[s.name] = previous[s.name]
            graded.reused.append(s.name)
            if on_done:
                on_done(s, previous[s.name])
        else:
            todo.append(s)
    cache_before = cache_snapshot()
    lock = threading.Lock()
    again: List[Student] = []
    stopping = threading.Event()
    with tempfile.TemporaryDirectory(prefix="torch-svm-grade-") as workdir:
        def one(student: Student) -> None:
            if stopping.is_set():
                return
            rows, changed = judge_student(student, functions, data, points, config, Path(workdir),
                                          stopping)
            if stopping.is_set():
                return
            with lock:
                if changed and jobs > 1:
                    again.append(student)        # judged again alone, below
                    return
                graded.rows[student.name] = rows
            if on_done:
                on_done(student, rows)

        if jobs == 1 or len(todo) <= 1:
            for student in todo:
                one(student)
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                try:
                    for future in as_completed([pool.submit(one, s) for s in todo]):
                        future.result()
                except BaseException:            # Ctrl-C, or a bug: stop now, not after the class
                    stopping.set()
                    pool.shutdown(wait=False, cancel_futures=True)
                    stop_all()
                    raise
        for student in sorted(again, key=lambda s: s.name):
            rows, _ = judge_student(student, functions, data, points, config, Path(workdir))
            graded.rows[student.name] = rows
            graded.rejudged.append(student.name)
            if on_done:
                on_done(student, rows)
    graded.cache_changed = cache_tampered(cache_before)
    graded.seconds = time.monotonic() - started
    return graded
