"""docs/notebook.ipynb, executed in a real Jupyter kernel (nbclient + ipykernel): the assignment's
cells with grad_check_sparse and verify, on a correct and a buggy svm_loss_vectorized.

The committed notebook carries its outputs (readable on GitHub); the test executes the committed
file itself and checks that those outputs are the ones it produces now.
"""
import os
import re
from pathlib import Path

import pytest

if os.environ.get("CI") == "true":          # CI installs the test extra: never skip there
    import nbclient
    import nbformat
else:
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbclient, ipykernel)")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebook.ipynb"
KINK = "kink: the step straddles a kink, the mismatch is expected (Inline Question 1)"
REAL = "no kink explains it: a real mismatch"


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    """(committed, executed): the notebook as committed, and a fresh run of it in a kernel
    whose working directory, cache, IPython and Jupyter runtime folders are temporary."""
    tmp = tmp_path_factory.mktemp("notebook")
    committed = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(committed)
    env = {"TORCH_SVM_CACHE_DIR": str(tmp / "cache"), "IPYTHONDIR": str(tmp / "ipython"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "MPLBACKEND": "Agg"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        executed = nbformat.read(NOTEBOOK, as_version=4)
        nbclient.NotebookClient(executed, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp)}}).execute()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert not [p for p in tmp.iterdir() if p.is_file()]      # the notebook writes no file
    return committed, executed


def cell(nb, snippet: str):
    """The one code cell whose source contains ``snippet``."""
    found = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    assert len(found) == 1, snippet
    return found[0]


def stdout(c) -> str:
    return "".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def result(c, mime: str) -> str:
    out = [o.data[mime] for o in c.outputs if o.output_type in ("execute_result", "display_data")
           and mime in o.data]
    assert len(out) == 1, (mime, c.source)
    return out[0]


def checks(text: str):
    """Each grad_check_sparse run in a cell's output: (its lines, its verdict line)."""
    runs, lines = [], []
    for line in text.splitlines():
        if line.startswith("numerical: "):
            lines.append(line)
        elif line.startswith("verdict: "):
            runs.append((lines, line))
            lines = []
    return runs


def test_runs_without_errors_or_warnings(notebooks):
    _, nb = notebooks
    for c in nb.cells:
        if c.cell_type == "code":
            kinds = {(o.output_type, o.get("name")) for o in c.outputs}
            assert ("stream", "stderr") not in kinds and ("error", None) not in kinds, c.source


def test_grad_check_sparse_cells(notebooks):
    _, nb = notebooks
    (correct0, v0), (correct50, v50) = checks(stdout(cell(nb, "svm_loss_vectorized(W, X_dev, y_dev, 0.0)\n")))
    assert v0 == v50 == "verdict: all 10 match" and len(correct0) == len(correct50) == 10
    assert all(line.endswith("  ok") for line in correct0 + correct50)
    (buggy0, b0), (buggy50, b50) = checks(stdout(cell(nb, "svm_loss_vectorized_buggy(W, X_dev, y_dev, 0.0)")))
    assert b0 == "verdict: all 10 match"        # reg = 0 cannot see this bug
    assert b50 == "verdict: 10 of 10 unexplained mismatches: the loss or the gradient is wrong (a finite difference cannot tell which): verify(f) compares both with the reference"
    assert all(line.endswith("  " + REAL) for line in buggy50)
    [(kinked, verdict)] = checks(stdout(cell(nb, "W_trained, grad, h=1e-3")))
    explained = [line for line in kinked if line.endswith("  " + KINK)]
    assert explained and all(line.endswith("  ok") for line in kinked if line not in explained)
    assert verdict.startswith(f"verdict: {10 - len(explained)} of 10 match; the other "
                              f"{len(explained)} mismatch only where the step straddles a kink")
    assert "passed=True" in result(cell(nb, "grad_numerical, grad_numerical_buggy.verdict"), "text/plain")


def test_verify_cells_render_verdicts_and_diagnosis(notebooks):
    _, nb = notebooks
    good = cell(nb, "report = verify(svm_loss_vectorized, X=X_dev, y=y_dev, W=W)")
    html = result(good, "text/html")
    assert "PASS: the loss and dW agree with every reference" in html and "<img src='data:image/png" in html
    assert "isolated=True" in result(good, "text/plain")    # sent to the worker by cloudpickle
    bad = cell(nb, "report_buggy = verify(svm_loss_vectorized_buggy)")
    html = result(bad, "text/html")
    assert "FAIL: the gradient dW is wrong (the loss is right)" in html
    assert "diagnosis: the regularization gradient is divided by N = 100" in html
    assert "<table>" in html and "<img src='data:image/png" in html
    assert "isolated=True" in result(bad, "text/plain")
    printed = cell(nb, "print(report_buggy)")
    assert "diagnosis: the regularization gradient is divided by N" in stdout(printed)
    assert result(printed, "text/plain") == "(True, False)"


def _stable(c) -> list:
    """What a cell shows, less what varies between machines: rounding-level relative errors,
    the figure's bytes and the reports' full reprs."""
    shown = [re.sub(r"relative error: \S+", "relative error: *", stdout(c))]
    for o in c.outputs:
        if o.output_type in ("execute_result", "display_data"):
            html = o.data.get("text/html", "")
            shown.append(re.findall(r"<b style='color:#[0-9a-f]+'>([^<]*)</b>", html)
                         or o.data["text/plain"])
    return shown


def test_committed_outputs_are_current(notebooks):
    committed, executed = notebooks
    code = [(a, b) for a, b in zip(committed.cells, executed.cells) if a.cell_type == "code"]
    assert [a.execution_count for a, _ in code] == list(range(1, len(code) + 1))   # top to bottom
    for a, b in code:
        assert _stable(a) == _stable(b), a.source
