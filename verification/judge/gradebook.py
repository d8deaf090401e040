"""What ``torch-svm grade`` writes: ``grades.csv``, ``feedback/STUDENT.md``,
``gradescope/STUDENT/results.json`` (Gradescope's autograder format) and ``grades.json`` (the
rows and each student's content hash, which a rerun reads to keep unchanged students), all
replaced whole (:func:`torch_svm.files.atomic_directory`)."""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

from torch_svm.files import atomic_directory, atomic_write_json
from verification.judge.grade import Graded, Row, Student
from verification.judge.usercode import printable

__all__: list = []      # internal: torch_svm.cli.grade composes these

_STATE = "grades.json"
_STATE_VERSION = 1


def read_previous(out: Path, settings: Dict[str, Any], students: List[Student]) -> Dict[str, List[Row]]:
    """The rows of ``out/grades.json`` that a rerun can keep: same settings, same files. Read
    before any judged code runs; anything unreadable or malformed is ignored (all regraded)."""
    path = Path(out) / _STATE
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 256 << 20:
            return {}
        state = json.loads(path.read_text(encoding="utf-8"))
        if state.get("version") != _STATE_VERSION or state.get("settings") != settings:
            return {}
        digests = {s.name: s.digest for s in students}
        kept = {}
        for name, entry in state["students"].items():
            if digests.get(name) == entry["digest"]:
                rows = [Row(**{k: r[k] for k in Row.__dataclass_fields__}) for r in entry["rows"]]
                if all(isinstance(r.verdict, str) and r.verdict in ("pass", "fail", "error")
                       and r.student == name for r in rows):
                    kept[name] = rows
        return kept
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _cell(text: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: one starting with = + - @ is not a formula."""
    if isinstance(text, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def grades_csv(graded: Graded) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "function", "verdict", "diagnosis", "seconds"])
    for r in graded.all_rows():
        writer.writerow([_cell(r.student), r.function, r.verdict, _cell(r.diagnosis),
                         f"{r.seconds:.2f}"])
    return buffer.getvalue()


def feedback_markdown(student: Student, rows: List[Row]) -> str:
    lines = [f"# {printable(student.name, 100)}: {', '.join(r.function for r in rows)}", ""]
    if student.target:
        lines += [f"File graded: `{printable(student.target, 200)}` (sha256 "
                  f"{hashlib.sha256(student.files[student.target]).hexdigest()[:12]})", ""]
    for r in rows:
        lines += [f"## {r.function}: {r.verdict.upper()}", "", "```", r.feedback.rstrip("\n")
                  .replace("```", "'''"), "```", ""]
    return "\n".join(lines)


def gradescope_results(rows: List[Row], points: float) -> Dict[str, Any]:
    """Gradescope's autograder results: one test per function, ``points`` each when it passes."""
    tests = [{"name": r.function, "score": points if r.verdict == "pass" else 0.0,
              "max_score": points, "status": "passed" if r.verdict == "pass" else "failed",
              "output": r.feedback} for r in rows]
    return {"score": sum(t["score"] for t in tests), "tests": tests,
            "execution_time": round(sum(r.seconds for r in rows), 3),
            "output": "Judged by torch-svm verify: the loss and dW against float64 references, "
                      "a kink of the hinge never counted as an error.",
            "test_output_format": "text", "visibility": "visible"}


def _file_name(name: str) -> str:
    """A student's name as one path component (folder names already are; a name from a file
    stem with odd characters gets them replaced)."""
    safe = "".join(c if c.isprintable() and c not in "/\\\0" else "_" for c in name)[:200]
    return safe if safe not in ("", ".", "..") else "_" + safe


def write_results(out: Path, graded: Graded, settings: Dict[str, Any], points: float) -> None:
    """Everything under ``out``, replaced whole (:func:`torch_svm.files.atomic_directory`)."""
    with atomic_directory(out) as tmp:
        (tmp / "grades.csv").write_text(grades_csv(graded), encoding="utf-8")
        (tmp / "feedback").mkdir()
        (tmp / "gradescope").mkdir()
        state = {"version": _STATE_VERSION, "settings": settings, "summary": graded.summary(),
                 "students": {}}
        taken = set()
        for s in graded.students:
            rows = graded.rows[s.name]
            name = base = _file_name(s.name)
            while name.casefold() in taken:           # "a\nb" and "a_b"; "Ann" and "ann"
                name = f"{base}-{len(taken)}"
            taken.add(name.casefold())
            (tmp / "feedback" / f"{name}.md").write_text(feedback_markdown(s, rows), encoding="utf-8")
            (tmp / "gradescope" / name).mkdir()
            atomic_write_json(tmp / "gradescope" / name / "results.json",
                              gradescope_results(rows, points))
            state["students"][s.name] = {"digest": s.digest, "file": s.target,
                                         "rows": [asdict(r) for r in rows]}
        atomic_write_json(tmp / _STATE, state)
