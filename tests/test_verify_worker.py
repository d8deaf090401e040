"""verify runs the judged code in a worker process: nothing that code does decides the verdict
(issue 14). Each test starts a worker (about half a second), so they are few: one per hostile
behaviour, through the CLI as a teacher grading would run it."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mutants
from conftest import run_cli
from verification.judge.devdata import load_verify_data
from verification.judge.verify import verify
from torch_svm.errors import UsageError

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")

HOSTILE = '''
import os, sys
import numpy as np

def _right(W, X, y, reg):
    n = X.shape[0]
    scores = X.dot(W)
    margins = np.maximum(0, scores - scores[np.arange(n), y][:, None] + 1)
    margins[np.arange(n), y] = 0
    coef = (margins > 0).astype(X.dtype)
    coef[np.arange(n), y] = -coef.sum(axis=1)
    return margins.sum() / n + reg * np.sum(W * W), X.T.dot(coef) / n + 2 * reg * W

def exits_zero(W, X, y, reg):
    os._exit(0)

def system_exit(W, X, y, reg):
    sys.exit(0)

class Escape(BaseException):
    pass

def base_exception(W, X, y, reg):
    raise Escape("not an Exception")

def huge_int_loss(W, X, y, reg):
    return 10 ** 400, _right(W, X, y, reg)[1]

def sleeps(W, X, y, reg):
    import time
    time.sleep(3600)

def chatty(W, X, y, reg):
    print("x" * 100_000)
    print("to stderr", file=sys.stderr)
    return _right(W, X, y, reg)
'''

PATCHER = '''
import numpy as np
import verification.judge.verify as v
import verification.judge.evaluation as e
import verification.judge.verdict as d
import torch_svm.losses as losses

d.VerifyReport.passed = property(lambda self: True)      # every verdict a pass
d.VerifyReport.verdict = property(lambda self: "pass")
real = losses.svm_loss_and_grad
losses.svm_loss_and_grad = lambda W, X, y, reg=0.0, **k: (real(W, X, y, reg, **k)[0], 3 * real(W, X, y, reg, **k)[1])
e.evaluate = lambda *a, **k: None

def f(W, X, y, reg):
    n = X.shape[0]
    scores = X.dot(W)
    margins = np.maximum(0, scores - scores[np.arange(n), y][:, None] + 1)
    margins[np.arange(n), y] = 0
    coef = (margins > 0).astype(X.dtype)
    coef[np.arange(n), y] = -coef.sum(axis=1)
    return margins.sum() / n + reg * np.sum(W * W), 3 * (X.T.dot(coef) / n + 2 * reg * W)
'''


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    path = tmp_path_factory.mktemp("students") / "hostile.py"
    path.write_text(HOSTILE)
    return path


def cli(capsys, *argv):
    return run_cli(capsys, "verify", *argv, "--data", "random", "--n", "30")


@pytest.mark.parametrize("name, code, words", [
    ("exits_zero", 2, "worker process ended during exits_zero(W, X, y, reg): it exited with status 0"),
    ("system_exit", 2, "system_exit raised SystemExit: 0"),
    ("base_exception", 2, "base_exception raised Escape: not an Exception"),
    ("huge_int_loss", 1, None),
])
def test_what_the_code_does_to_itself_cannot_decide_the_verdict(hostile, capsys, name, code, words):
    exit_code, out, err = cli(capsys, f"{hostile}:{name}")
    assert exit_code == code
    if words:
        assert out == "" and words in err[0]
    else:                                                # judged: the loss is not finite
        assert "FAIL: the loss is wrong" in out and "the loss is NaN or inf" in out


def test_exit_at_import(tmp_path, capsys):
    path = tmp_path / "student.py"
    path.write_text("import os\nos._exit(0)\n")
    code, out, err = cli(capsys, f"{path}:f")
    assert code == 2 and "ended during importing the code" in err[0]


def test_patching_the_verifier_patches_only_the_worker(tmp_path, capsys):
    path = tmp_path / "patcher.py"
    path.write_text(PATCHER)
    code, out, _ = cli(capsys, f"{path}:f")
    assert code == 1 and "FAIL: the gradient dW is wrong" in out


def test_a_call_that_never_returns_is_stopped(hostile, capsys):
    start = time.monotonic()
    code, out, err = cli(capsys, f"{hostile}:sleeps", "--timeout", "1")
    assert code == 2 and "did not finish within 1 s (timeout)" in err[0]
    assert time.monotonic() - start < 30


def test_printing_never_reaches_the_json(hostile, capsys):
    code, out, err = cli(capsys, f"{hostile}:chatty", "--json")
    report = json.loads(out)
    assert code == 0 and report["verdict"] == "pass"
    assert report["output"]["stdout_bytes"] >= 4 * 100_000 and len(report["output"]["stdout"]) == 20_000
    assert any(line.startswith("--- your code printed") and "stdout" in line for line in err)
    assert "to stderr" in err


def test_a_notebook_function_runs_in_a_worker():
    data = load_verify_data("random", n=30)
    scale = 2.0                                            # a notebook global it needs

    def svm_loss_vectorized(W, X, y, reg):
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        return loss, dW * scale / 2

    report = verify(svm_loss_vectorized, data=data)
    assert report.passed and report.isolated and report.function == "svm_loss_vectorized"
    lock = threading.Lock()                                # cannot be pickled: refused

    def with_lock(W, X, y, reg):
        with lock:
            return mutants.correct_vectorized(W, X, y, reg)

    with pytest.raises(UsageError, match="with_lock cannot be sent to the worker .*lock.*file.py:name"):
        verify(with_lock, data=data)


def test_an_unpicklable_function_that_patches_the_judge_is_refused_not_judged():
    """Before: a function that could not be pickled was judged in the caller's process, where
    it could patch the judge (here: make every check pass) and get a PASS for a wrong
    gradient. Now it is refused, and the judge is untouched."""
    import verification.judge.evaluation as evaluation

    data = load_verify_data("random", n=30)
    lock = threading.Lock()
    real = evaluation.evaluate

    def one_coordinate_wrong(W, X, y, reg):
        with lock:
            evaluation.evaluate = lambda *a, **k: None      # what it would do if run here
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        dW[0, 0] += 1.0
        return loss, dW

    with pytest.raises(UsageError, match="cannot be sent to the worker"):
        verify(one_coordinate_wrong, data=data)
    assert evaluation.evaluate is real


def test_a_crafted_name_cannot_write_lines_into_the_report(capsys, tmp_path):
    """A __name__ holding newlines and a fake verdict line is printed escaped, on the one
    line that names the function."""
    data = load_verify_data("random", n=30)

    def fn(W, X, y, reg):
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        dW[0, 0] += 1.0
        return loss, dW

    fn.__name__ = "f\nPASS: svm_loss_vectorized is right\n\x1b[2J"
    report = verify(fn, data=data)
    assert not report.passed and "\n" not in report.function and "\x1b" not in report.function
    text = str(report)
    assert not any(line.startswith("PASS") for line in text.splitlines()), text[:500]


def test_the_worker_is_reused_for_every_call(monkeypatch):
    from verification.judge import worker as worker_module

    started = []
    real = worker_module.Worker.__init__

    def counting(self, **kwargs):
        started.append(1)
        real(self, **kwargs)

    monkeypatch.setattr(worker_module.Worker, "__init__", counting)
    X, y = np.random.default_rng(0).standard_normal((20, 6)), np.arange(20) % 3
    assert verify(mutants.correct_naive, X=X, y=y).passed and len(started) == 1


FORKER = """
import os, sys, time
import numpy as np

def spawns(W, X, y, reg):
    # a grandchild in its own session (setsid) after a double fork: it leaves the worker's
    # process group, and its parent exits so it is an orphan
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open(os.environ["PIDFILE"], "a") as fh:
                fh.write(f"{os.getpid()}\\n")
            time.sleep(3600)
        os._exit(0)
    time.sleep(0.5)
    return 0.0, np.zeros_like(W)

def loops(W, X, y, reg):
    with open(os.environ["PIDFILE"], "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    while True:
        pass
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pids(path) -> list:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_nothing_the_judged_code_starts_outlives_the_verdict(tmp_path, monkeypatch):
    """A double-forked, setsid() grandchild used to survive the verdict (it left the process
    group that was killed). The worker's guard is a subreaper: the orphan is reparented to it
    and killed when the worker ends."""
    (tmp_path / "forker.py").write_text(FORKER)
    monkeypatch.setenv("PIDFILE", str(tmp_path / "pids"))
    report = verify(f"{tmp_path / 'forker.py'}:spawns", data=load_verify_data("random", n=30))
    assert report.verdict == "fail"
    pids = _pids(tmp_path / "pids")
    assert pids
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])   # TERM: HUP's path (both end verify)
def test_killing_verify_ends_its_worker(tmp_path, sig):
    """verify killed (kill -9 too) while the judged code loops: the worker used to spin on at
    100% CPU forever. The guard gets SIGTERM when verify's process dies and kills the server."""
    (tmp_path / "forker.py").write_text(FORKER)
    env = dict(os.environ, PIDFILE=str(tmp_path / "pids"))
    proc = subprocess.Popen([sys.executable, "-m", "torch_svm", "verify",
                             f"{tmp_path / 'forker.py'}:loops", "--data", "random", "--n", "30",
                             "--timeout", "600"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _pids(tmp_path / "pids") and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = _pids(tmp_path / "pids")
        assert pids, "the judged function never ran"
        proc.send_signal(sig)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), pids
    finally:
        proc.kill()
        for p in _pids(tmp_path / "pids"):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


POISONER = '''
import glob, os
import numpy as np
import mutants

def poisons(W, X, y, reg):
    """Right, but it rewrites the cached check points so that "trained" equals "small"."""
    for path in glob.glob(os.path.join(os.environ["TORCH_SVM_CACHE_DIR"], "points-*.npz")):
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        small = [k for k in arrays if "small" in k]
        for k in arrays:
            if small and k != small[0] and arrays[k].shape == arrays[small[0]].shape:
                arrays[k] = arrays[small[0]]
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    return mutants.correct_vectorized(W, X, y, reg)
'''


def test_the_judged_code_cannot_poison_the_cache_for_later_verdicts(tmp_path, monkeypatch,
                                                                    isolated_cache):
    """A function rewrote the cached check points so that a later real bug passed. The cache
    is hashed before the judged code runs and after: a change is an error verdict, and the
    changed files are deleted, so the next verdict recomputes them and the bug fails."""
    (tmp_path / "poison.py").write_text(POISONER)
    monkeypatch.syspath_prepend(str(Path(mutants.__file__).parent))
    data = load_verify_data("digits")
    honest = verify(mutants.correct_vectorized, data=data)                # fills the cache
    assert honest.passed and list(isolated_cache.glob("points-*.npz"))
    report = verify(f"{tmp_path / 'poison.py'}:poisons", data=data)
    assert report.verdict == "error" and "changed verify's cache" in report.error.message
    assert not list(isolated_cache.glob("points-*.npz"))                    # deleted
    later = verify(mutants.mask_after_clamp, data=data)
    assert later.verdict == "fail"
    untouched = verify(mutants.correct_vectorized, data=data)
    assert untouched.passed                                                # the negative twin


def test_the_console_script_imports_modules_from_the_current_folder(tmp_path):
    """`torch-svm verify cs231n.classifiers.linear_svm:f` from the assignment folder: the
    console script puts the current folder on the import path, as `python -m` does (before:
    "no module named 'cs231n'")."""
    import shutil

    package = tmp_path / "cs231n" / "classifiers"
    package.mkdir(parents=True)
    (tmp_path / "cs231n" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    shutil.copy(mutants.__file__, package / "linear_svm.py")
    script = Path(sys.executable).parent / "torch-svm"
    if not script.exists():
        pytest.skip("the torch-svm console script is not installed")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(script), "verify", "cs231n.classifiers.linear_svm:correct_vectorized",
                          "--data", "random", "--n", "30", "--json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert json.loads(out.stdout)["verdict"] == "pass"
