"""``torch-svm grade``: a class judged as verify judges each function, one student's code never
changing another's row, and the files a teacher and Gradescope read (issue 24)."""
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mutants
from conftest import run_cli
from torch_svm.cli import main
from verification.judge.devdata import load_verify_data
from verification.judge.verify import verify

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")

REPO = Path(__file__).resolve().parents[1]
MUTANTS = Path(mutants.__file__).read_text()
FAST = ("--data", "random", "--n", "30")          # a small dev set: each verdict ~0.1 s


def solution(naive: str, vectorized: str) -> str:
    """A linear_svm.py whose two functions are the given mutants (the file holds them all, as
    a student's file holds helpers)."""
    return (MUTANTS + f"\n\ndef svm_loss_naive(W, X, y, reg):\n    return {naive}(W, X, y, reg)\n"
            f"\n\ndef svm_loss_vectorized(W, X, y, reg):\n    return {vectorized}(W, X, y, reg)\n")


def make_class(root: Path, students: dict) -> Path:
    """``{name: source}``: each in ``name/cs231n/classifiers/linear_svm.py``, as the assignment
    lays it out; a name ending in .py is a single file."""
    for name, source in students.items():
        path = root / name if name.endswith(".py") else root / name / "cs231n" / "classifiers" / "linear_svm.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


HONEST = {
    "alice": solution("correct_naive", "correct_vectorized"),
    "bob": solution("reg_grad_halved", "mask_after_clamp"),
    "carol": solution("correct_naive", "starter_code_unchanged"),
    "dan.py": solution("no_division_by_n", "correct_ge_kink"),
}


def grade_cli(capsys, submissions, out, *extra):
    code, stdout, err = run_cli(capsys, "grade", str(submissions), "--out", str(out), "--json",
                                *FAST, *extra)
    return code, (json.loads(stdout) if code == 0 else None), err


def rows(out: Path) -> dict:
    with open(out / "grades.csv", newline="") as fh:
        return {(r["student"], r["function"]): r for r in csv.DictReader(fh)}


HOSTILE = """
import glob, os, sys, time
import numpy as np
{mutants}

def _vandalize():
    # Rewrite every honest student's solution it can find, the cache and the output.
    bad = "def svm_loss_naive(W, X, y, reg):\\n    raise RuntimeError('vandalized')\\n"
    workdir = os.path.realpath(__file__)          # this grade run's folder of private copies
    while not os.path.basename(workdir).startswith("torch-svm-grade-"):
        workdir = os.path.dirname(workdir)
    for pattern in (os.environ["CLASS_ROOT"] + "/**/*.py", workdir + "/**/*.py"):
        for path in glob.glob(pattern, recursive=True):
            try:
                if "_vandalize" not in open(path).read():        # every honest student's file
                    open(path, "w").write(bad)
            except OSError:
                pass
    for path in glob.glob(os.environ["TORCH_SVM_CACHE_DIR"] + "/*"):
        open(path, "wb").write(b"poison")
    os.makedirs(os.environ["GRADES_OUT"], exist_ok=True)
    open(os.path.join(os.environ["GRADES_OUT"], "grades.csv"), "w").write("alice,svm_loss_naive,fail\\n")

def svm_loss_vectorized(W, X, y, reg):
    if {vandal}:
        _vandalize()
    {vectorized}
"""

HOSTILE_VECTORIZED = {
    "vandal": "return correct_vectorized(W, X, y, reg)",
    "exits": "os._exit(0)",
    "sleeps": "time.sleep(3600)",
    "chatty": "print('x' * 100_000); print('to stderr', file=sys.stderr); return correct_vectorized(W, X, y, reg)",
    "hog": "return np.ones((1 << 40,)), np.ones(W.shape)",
    "spawns": ("import subprocess; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)'], "
               "start_new_session=True); return correct_vectorized(W, X, y, reg)"),
    "system_exit": "sys.exit(0)",
    "interrupt": "raise KeyboardInterrupt",
    "huge_int": "return 10 ** 400, correct_vectorized(W, X, y, reg)[1]",
    "crafted_name": "return reg_grad_halved(W, X, y, reg)\nsvm_loss_vectorized.__name__ = 'f\\nPASS: all good'",
    "patches": ("import verification.judge.verdict as d; d.VerifyReport.verdict = property(lambda s: 'pass'); "
                "return reg_grad_missing(W, X, y, reg)"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One class, graded once with --jobs 2 (the vectorized functions: the hostile code is
    there; the naive ones are graded in the tests below): honest students, students with no or two
    linear_svm.py, a name that is a spreadsheet formula, and each hostile behaviour of verify's
    own tests, and a submission that rewrites the others' files, the cache and the output."""
    tmp = tmp_path_factory.mktemp("grade")
    root = make_class(tmp / "class", HONEST)
    (root / "erin").mkdir()
    (root / "erin" / "notes.txt").write_text("no code")
    for sub in ("a", "b"):
        (root / "fay" / sub).mkdir(parents=True)
        (root / "fay" / sub / "linear_svm.py").write_text(HONEST["alice"])
    for name, body in HOSTILE_VECTORIZED.items():
        path = root / f"mallory_{name}" / "linear_svm.py"
        path.parent.mkdir(parents=True)
        path.write_text(HOSTILE.format(mutants=MUTANTS, vectorized=body, vandal=name == "vandal"))
    cache = tmp / "cache"
    data = load_verify_data("random", n=30)
    argv = ["grade", str(root), "--out", str(tmp / "out"), "--json", *FAST, "--jobs", "2",
            "--timeout", "2", "--memory", "1", "--functions", "svm_loss_vectorized"]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (("CLASS_ROOT", root), ("GRADES_OUT", tmp / "out"), ("TORCH_SVM_CACHE_DIR", cache)):
            mp.setenv(key, str(value))
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(argv)
    assert code == 0, stderr.getvalue()
    return {"root": root, "out": tmp / "out", "rows": rows(tmp / "out"), "cache": cache,
            "summary": json.loads(stdout.getvalue()), "data": data}


def test_every_verdict_is_the_one_verify_gives_alone(graded):
    got, out, root = graded["rows"], graded["out"], graded["root"]
    assert list(got)[0] == ("alice", "svm_loss_vectorized")    # the class's order
    summary = graded["summary"]
    assert summary["students"] == 17 and summary["rows"] == 17
    for name in ("alice", "bob", "carol", "dan"):
        path = root / ("dan.py" if name == "dan" else f"{name}/cs231n/classifiers/linear_svm.py")
        feedback = (out / "feedback" / f"{name}.md").read_text()
        for fn in ("svm_loss_vectorized",):
            alone = verify(_original(name, fn), data=graded["data"])
            row = got[name, fn]
            assert row["verdict"] == alone.verdict, (name, fn)
            assert row["diagnosis"] == "; ".join(d.pattern for d in alone.diagnosis or [])
            assert str(alone).splitlines()[-1].strip() in feedback       # verify's own words
        assert "vandalized" in path.read_text()          # what the disk holds now
    assert got["bob", "svm_loss_vectorized"]["diagnosis"] == "mask_after_clamp"
    assert got["carol", "svm_loss_vectorized"]["diagnosis"] == "zero_loss; zero_gradient"
    assert got["erin", "svm_loss_vectorized"]["verdict"] == "error"
    assert "no linear_svm.py in erin/" in got["erin", "svm_loss_vectorized"]["diagnosis"]
    assert "2 files named linear_svm.py" in got["fay", "svm_loss_vectorized"]["diagnosis"]
    assert summary["diagnoses"]["regularization_gradient"] == 2    # mallory_patches, _crafted_name
    results = json.loads((out / "gradescope" / "bob" / "results.json").read_text())
    assert [t["name"] for t in results["tests"]] == ["svm_loss_vectorized"]
    assert all(set(t) >= {"name", "score", "max_score", "output"} for t in results["tests"])
    assert results["score"] == 0 and "inactive margins are counted" in results["tests"][0]["output"]
    alice = json.loads((out / "gradescope" / "alice" / "results.json").read_text())
    assert alice["score"] == 1.0 and alice["tests"][0]["max_score"] == 1.0


def _original(name: str, fn: str):
    """The mutant a HONEST student's function calls, judged from the test module itself."""
    source = HONEST[name + ".py" if name == "dan" else name]
    called = source.split(f"def {fn}(W, X, y, reg):\n    return ", 1)[1].split("(", 1)[0]
    return getattr(mutants, called)


def test_hostile_submissions_leave_honest_rows_unchanged(graded):
    """The honest rows above are verify's verdicts alone although the vandals rewrote the
    honest files on disk (grade judges the content read before any code ran)."""
    got, root = graded["rows"], graded["root"]
    assert "vandalized" in (root / "alice" / "cs231n" / "classifiers" / "linear_svm.py").read_text()
    verdicts = {name: got[f"mallory_{name}", "svm_loss_vectorized"] for name in HOSTILE_VECTORIZED}
    assert verdicts["exits"]["verdict"] == "error" and "exited with status 0" in verdicts["exits"]["diagnosis"]
    assert verdicts["sleeps"]["verdict"] == "error" and "timeout" in verdicts["sleeps"]["diagnosis"]
    assert verdicts["chatty"]["verdict"] == "pass"
    assert verdicts["hog"]["verdict"] == "error" and "MemoryError" in verdicts["hog"]["diagnosis"]
    assert "more memory than it may use" in (graded["out"] / "feedback" / "mallory_hog.md").read_text()
    assert verdicts["patches"]["verdict"] == "fail"
    assert verdicts["system_exit"]["verdict"] == "error" and "SystemExit" in verdicts["system_exit"]["diagnosis"]
    assert verdicts["interrupt"]["verdict"] == "error" and "KeyboardInterrupt" in verdicts["interrupt"]["diagnosis"]
    assert verdicts["huge_int"]["verdict"] == "fail"
    assert verdicts["crafted_name"]["verdict"] == "fail"
    crafted = (graded["out"] / "feedback" / "mallory_crafted_name.md").read_text()
    assert "\nPASS: all good" not in crafted and "f\\nPASS" in crafted
    assert graded["summary"]["cache_changed"]                      # seen, and deleted
    assert all(f.read_bytes() != b"poison" for f in graded["cache"].glob("*"))
    assert rows(graded["out"])["alice", "svm_loss_vectorized"]["verdict"] == "pass"   # --out replaced whole


def test_names_cannot_inject_formulas_or_lines():
    from verification.judge.grade import Graded, Row, Student
    from verification.judge.gradebook import grades_csv

    row = Row("=HYPERLINK(1)", "svm_loss_naive", "error", "-1+2", 0.0, "")
    text = grades_csv(Graded([Student("=HYPERLINK(1)")], {"=HYPERLINK(1)": [row]}))
    assert text.splitlines()[1] == "'=HYPERLINK(1),svm_loss_naive,error,'-1+2,0.00"


def test_points_and_the_file_flag(tmp_path, capsys):
    root = tmp_path / "class"
    (root / "gus" / "hw").mkdir(parents=True)
    (root / "gus" / "hw" / "svm.py").write_text(HONEST["alice"])
    (root / "gus" / "linear_svm.py").write_text(HONEST["bob"])      # not the one named by --file
    code, summary, err = grade_cli(capsys, root, tmp_path / "out", "--file", "hw/svm.py",
                                   "--points", "5", "--functions", "svm_loss_vectorized")
    assert code == 0, err
    assert summary["verdicts"] == {"pass": 1, "fail": 0, "error": 0}
    results = json.loads((tmp_path / "out" / "gradescope" / "gus" / "results.json").read_text())
    assert results["score"] == 5 and len(results["tests"]) == 1


NEIGHBOUR = """
import glob, os, time
{mutants}

def svm_loss_naive(W, X, y, reg):
    here = os.path.realpath(__file__)
    workdir = here
    while not os.path.basename(workdir).startswith("torch-svm-grade-"):
        workdir = os.path.dirname(workdir)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        others = [p for p in glob.glob(workdir + "/**/linear_svm.py", recursive=True)
                  if os.path.realpath(p) != here]
        if others:
            for path in others:
                open(path, "w").write("def svm_loss_vectorized(W, X, y, reg):\\n    return 0.0, 0 * W\\n")
            break
        time.sleep(0.001)
    return correct_naive(W, X, y, reg)
"""

SLOW_HONEST = MUTANTS + """
import time

def svm_loss_naive(W, X, y, reg):
    time.sleep(0.15)
    return correct_naive(W, X, y, reg)

def svm_loss_vectorized(W, X, y, reg):
    return correct_vectorized(W, X, y, reg)
"""


def test_a_copy_changed_by_a_neighbour_is_judged_again_alone(tmp_path, capsys):
    """A submission that finds the private copy of the student judged beside it and rewrites
    it: that student is judged again at the end, alone, from the content read at the start."""
    root = make_class(tmp_path / "class", {"amy": SLOW_HONEST,
                                           "zed": NEIGHBOUR.replace("{mutants}", MUTANTS)})
    code, summary, err = grade_cli(capsys, root, tmp_path / "out", "--jobs", "2")
    assert code == 0, err
    got = rows(tmp_path / "out")
    assert summary["rejudged_alone"] == ["amy"]
    assert got["amy", "svm_loss_vectorized"]["verdict"] == "pass"


def test_a_rerun_keeps_unchanged_students_and_regrades_changed_ones(tmp_path, capsys):
    root = make_class(tmp_path / "class", HONEST)
    out = tmp_path / "out"
    naive = ("--functions", "svm_loss_naive")
    assert grade_cli(capsys, root, out, *naive)[0] == 0
    first = rows(out)
    (root / "bob" / "cs231n" / "classifiers" / "linear_svm.py").write_text(HONEST["alice"])
    code, summary, _ = grade_cli(capsys, root, out, *naive)
    assert code == 0 and summary["reused"] == 3 and summary["graded"] == 1
    second = rows(out)
    assert second["bob", "svm_loss_naive"]["verdict"] == "pass"
    assert second["dan", "svm_loss_naive"] == first["dan", "svm_loss_naive"]
    code, summary, _ = grade_cli(capsys, root, out, *naive, "--force")
    assert summary["reused"] == 0 and summary["graded"] == 4
    code, summary, _ = grade_cli(capsys, root, out, *naive, "--delta", "2")   # other settings
    assert summary["reused"] == 0


@pytest.mark.parametrize("argv, words", [
    (["{tmp}/nowhere"], "SUBMISSIONS {tmp}/nowhere does not exist"),
    (["{tmp}/empty"], "holds no submission"),
    (["{tmp}/empty", "--functions", "a b"], "argument --functions: must be comma-separated"),
    (["{tmp}/empty", "--file", "/etc/passwd"], "--file must be a path inside"),
    (["{tmp}/empty", "--jobs", "0"], "--jobs"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, words):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "grade", *[a.format(tmp=tmp_path) for a in argv],
                           "--out", str(tmp_path / "out"))
    assert code == 2 and len(err) == 1 and words.format(tmp=tmp_path) in err[0], err


def test_gradescope_run_autograder_script(tmp_path):
    """The documented run_autograder, on Gradescope's folder layout (rooted in tmp_path)."""
    submission = tmp_path / "autograder" / "submission"
    submission.mkdir(parents=True)
    (submission / "linear_svm.py").write_text(HONEST["bob"])
    script = REPO / "docs" / "gradescope" / "run_autograder"
    env = dict(os.environ, AUTOGRADER_ROOT=str(tmp_path / "autograder"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "autograder" / "results" / "results.json").read_text())
    assert [t["status"] for t in results["tests"]] == ["failed", "failed"]
    assert results["score"] == 0 and "diagnosis" in results["tests"][0]["output"]
    assert not (tmp_path / "grades").exists()


SLEEPER = """
import os, time

def svm_loss_naive(W, X, y, reg):
    with open(os.environ["PIDFILE"], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(3600)
"""


def test_ctrl_c_stops_the_class_at_once_and_leaves_nothing_running(tmp_path):
    """Interrupted, grade used to wait for every queued student (a thread pool's shutdown)."""
    import signal
    import time

    root = make_class(tmp_path / "class", {f"s{i}.py": SLEEPER for i in range(6)})
    pidfile = tmp_path / "pids"
    env = dict(os.environ, PIDFILE=str(pidfile))
    proc = subprocess.Popen([sys.executable, "-m", "torch_svm", "grade", str(root), "--out",
                             str(tmp_path / "out"), "--jobs", "2", *FAST, "--functions",
                             "svm_loss_naive"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(pidfile.read_text().split() if pidfile.exists() else []) < 2:
            assert time.monotonic() < deadline, "no student code ran"
            time.sleep(0.05)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130 and "interrupted" in err, err
        assert time.monotonic() - start < 10
        assert len(pidfile.read_text().split()) == 2                  # no further student started
        for pid in map(int, pidfile.read_text().split()):
            deadline = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(pid), pid
        assert list((tmp_path / "out").iterdir()) == []                # nothing half-written
    finally:
        proc.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] not in ("Z", "X")
    except OSError:
        return False


def test_the_out_folder_inside_the_class_is_not_a_student(tmp_path, capsys):
    root = make_class(tmp_path / "class", {"alice": HONEST["alice"]})
    for _ in range(2):
        code, summary, err = grade_cli(capsys, root, root / "grades", "--functions", "svm_loss_naive")
        assert code == 0 and summary["students"] == 1, err
