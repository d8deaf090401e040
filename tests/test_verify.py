"""``verification.judge.verify`` and ``torch-svm verify``: every correct student implementation passes,
every buggy one fails (at delta 1 and 100, steps 1e-3 to 1e-7), each bug gets its diagnosis and
no other, exact kinks are accepted with either convention, every numeric return type is judged,
and the report leads with what failed.

Most tests judge in this process (``isolate=False``, fast); the worker process is tested in
``test_verify_worker.py``."""
import base64
import functools
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch_svm.data.load
import pytest
import torch

import mutants
from conftest import integer_problem, run_cli
from torch_svm.data import DataConfig, load_dataset
from verification.judge.devdata import cached_arrays, load_verify_data
from torch_svm.errors import UsageError
from verification.judge.usercode import UserCodeError, load_function, missing_module_hint, parse_output
from verification.judge.verify import VerifyConfig, default_points, verify

MUTANTS = str(Path(__file__).with_name("mutants.py"))

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")


@pytest.fixture(scope="module")
def digits():
    return load_verify_data("digits", cache=False)


@functools.lru_cache(maxsize=None)
def _points(delta):
    data = load_verify_data("digits", cache=False)
    return default_points(data.X, data.y, 10, delta)


def judge(fn, digits, delta=1.0, **options):
    return verify(functools.partial(fn, delta=delta), data=digits, points=_points(delta),
                  delta=delta, isolate=False, **options)


def patterns(report):
    return {(d.what, d.pattern) for d in report.diagnosis}


# ----------------------------------------------------------------------------- the mutation suite

@pytest.mark.parametrize("h", [1e-3, 1e-5, 1e-7])
@pytest.mark.parametrize("delta", [1.0, 100.0])
@pytest.mark.parametrize("name", sorted(mutants.CORRECT))
def test_correct_implementation_passes(name, delta, h, digits):
    report = judge(mutants.CORRECT[name], digits, delta, h=h)
    assert report.passed, [c for c in report.checks if not c.passed]
    assert report.diagnosis == [] and report.worst == []


@pytest.mark.parametrize("h", [1e-3, 1e-7])
@pytest.mark.parametrize("delta", [1.0, 100.0])
@pytest.mark.parametrize("name", sorted(mutants.BUGGY))
def test_buggy_implementation_fails(name, delta, h, digits):
    report = judge(mutants.BUGGY[name], digits, delta, h=h)
    assert report.verdict == "fail" and not report.passed
    assert report.failed in ("loss", "gradient", "both")


@pytest.mark.parametrize("name", sorted(mutants.BUGGY))
def test_each_bug_gets_its_diagnosis_and_no_other(name, digits):
    """Every diagnosis is tested against the bug it names and against every other bug."""
    report = judge(mutants.BUGGY[name], digits)
    assert patterns(report) == mutants.EXPECTED_DIAGNOSIS[name], [d.message for d in report.diagnosis]
    assert all(d.residual < 0.05 for d in report.diagnosis)
    if name in mutants.EXPECTED_WORDS:
        assert any(mutants.EXPECTED_WORDS[name] in d.message for d in report.diagnosis), report.diagnosis


def test_reg_gradient_over_n_is_not_called_missing(digits):
    """Added before the division: coefficient 1/N - 1 = -0.99, not -1."""
    (found,) = judge(mutants.reg_grad_divided_by_n, digits).diagnosis
    assert found.coefficients[0] == pytest.approx(1 / 100 - 1, abs=1e-6)
    assert "missing" not in found.message and "before dW /= num_train" in found.message
    (missing,) = judge(mutants.reg_grad_missing, digits).diagnosis
    assert missing.coefficients[0] == pytest.approx(-1, abs=1e-6) and "divided by N" not in missing.message


def test_examples_left_out_are_fitted_per_example(digits):
    found = {d.what: d for d in judge(mutants.return_inside_loop, digits).diagnosis}
    assert found["gradient"].examples == list(range(1, 100)) == found["loss"].examples
    assert "normalisation" not in {d.pattern for d in found.values()}


def test_reg_convention_half_judges_the_older_course(digits):
    assert judge(mutants.correct_half_convention, digits, reg_convention="half").passed
    report = judge(mutants.correct_vectorized, digits, reg_convention="half")
    assert patterns(report) == {("both", "full_reg_convention")}
    bug = judge(mutants.reg_grad_missing, digits, reg_convention="half")   # the 2020 loss, no reg grad
    assert not bug.passed and "half_reg_convention" not in {d.pattern for d in bug.diagnosis}


def test_mask_bug_is_invisible_at_the_assignment_point_only(digits):
    report = judge(mutants.mask_after_clamp, digits)
    by_point = {c.point: c.passed for c in report.checks}
    assert by_point == {"small": True, "trained": False}
    shares = {p.name: p.active_share for p in report.points}
    assert shares["small"] == 1.0 and shares["trained"] <= 0.5


def test_reg_bugs_show_only_with_reg(digits):
    report = judge(mutants.reg_grad_halved, digits)
    assert [c.passed for c in report.checks if c.reg == 0] == [True, True]
    assert not any(c.passed for c in report.checks if c.reg > 0)


# ----------------------------------------------------------------------------- exact kinks

def test_either_value_at_an_exact_kink_is_accepted():
    X, y, W = integer_problem()
    reports = {name: verify(fn, X, y, isolate=False, points={"integer": (W, "integer W")})
               for name, fn in (("gt", mutants.correct_vectorized), ("ge", mutants.correct_ge_kink))}
    assert reports["gt"].points[0].exact_kinks >= 10
    for report in reports.values():
        assert report.passed
        assert report.totals()["kink_explained"] > 0
    # the two conventions really give different gradients here
    dW_gt = mutants.correct_vectorized(W.numpy(), X.numpy(), y.numpy(), 0.0)[1]
    dW_ge = mutants.correct_ge_kink(W.numpy(), X.numpy(), y.numpy(), 0.0)[1]
    assert np.abs(dW_gt - dW_ge).max() > 0.1


def test_value_outside_the_kink_interval_is_rejected():
    X, y, W = integer_problem()

    def kink_value_two(W, X, y, reg):                       # 2 at a kink: not a subgradient
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        _, dW_ge = mutants.correct_ge_kink(W, X, y, reg)
        return loss, dW + 2 * (dW_ge - dW)

    report = verify(kink_value_two, X, y, isolate=False, points={"integer": (W, "integer W")})
    assert not report.passed and report.failed == "gradient"
    assert all(c.grad_mismatched > 0 for c in report.checks)


# ----------------------------------------------------------------------------- the report

def test_loss_only_failure_reads_as_a_loss_failure(digits):
    report = judge(mutants.loss_counts_delta_only, digits)
    text = str(report).splitlines()
    verdict = next(i for i, line in enumerate(text) if line.startswith("FAIL"))
    assert text[verdict] == "FAIL: the loss is wrong (dW is right)"
    assert text[verdict + 1].startswith("  loss: wrong at 4 of 4 checks")
    assert "coordinates" not in "\n".join(text[verdict:]) and report.worst == []
    out = report.to_dict()
    assert (out["verdict"], out["failed"], out["loss_wrong_checks"], out["wrong_coordinates"]) == ("fail", "loss", 4, 0)


def test_gradient_failure_lists_only_wrong_coordinates(digits):
    report = judge(mutants.reg_grad_halved, digits, worst=7)
    text = str(report)
    assert "FAIL: the gradient dW is wrong (the loss is right)" in text
    assert re.search(r"dW: \d+ of 2600 coordinates wrong, at 2 of 4 checks", text)
    assert len(report.worst) == 7
    assert all(w.reg > 0 and not w.matches_reference for w in report.worst)
    assert "straddles" not in text


def test_kink_dense_pass_is_one_line_not_alarming_rows():
    X, y, W = integer_problem()
    report = verify(mutants.correct_vectorized, X, y, isolate=False, points={"integer": (W, "integer W")})
    ke = report.totals()["kink_explained"]
    tail = str(report).split("PASS:")[1]
    assert f"{ke} of {report.totals()['coordinates']} finite differences differ" in tail
    assert "W[" not in tail and report.worst == []


def test_print_and_html_of_the_report(digits):
    report = judge(mutants.mask_without_delta, digits)
    html = report._repr_html_()
    assert "FAIL: the gradient dW is wrong" in html and "mask leaves delta out" in html
    assert "<table>" in html and html.count("<tr>") == 1 + len(report.worst)
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)", html).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    fig = report.figure()
    assert len(fig.axes) == 4
    assert "PASS" in judge(mutants.correct_naive, digits)._repr_html_()


# ----------------------------------------------------------------------------- return types

@pytest.mark.parametrize("convert, judged_as", [
    (lambda l, g: (np.longdouble(l), g.astype(np.longdouble)), "float64"),
    (lambda l, g: (np.array(l), g.astype(np.float32)), "float32"),
    (lambda l, g: (np.float16(l), g.astype(np.float16)), "float16"),
    (lambda l, g: (torch.tensor([l]), torch.from_numpy(g).to(torch.bfloat16)), "bfloat16"),
    (lambda l, g: (int(round(l)), g), "float64"),
])
def test_every_numeric_return_type_is_accepted(convert, judged_as):
    loss, dW = convert(2.6, np.ones((3, 4)))
    returned = parse_output((loss, dW), (3, 4), "f")
    assert returned.dtype == judged_as and returned.dW.shape == (3, 4)
    assert returned.loss == pytest.approx(2.6, abs=0.5)
    if judged_as == "float64" and isinstance(loss, np.longdouble):
        assert any("float128" in n or "longdouble" in n for n in returned.notes)


class _ShapeRaises:
    """An object whose .shape (and everything else) raises."""

    def __getattr__(self, name):
        raise RuntimeError(f"no {name} here")


@pytest.mark.parametrize("out, words", [
    ((1.0, torch.ones(2, 2, device="meta")), "dW as a torch.strided tensor on device 'meta'"),
    ((1.0, torch.ones(2, 2).to_sparse()), "dW as a torch.sparse_coo tensor"),
    ((1.0, torch.ones(2, 2).to_sparse_csr()), "dW as a torch.sparse_csr tensor"),
    ((torch.ones((), device="meta"), np.ones((2, 2))), "loss as a torch.strided tensor on device 'meta'"),
    ((_ShapeRaises(), np.ones((2, 2))), "test_verify._ShapeRaises, numpy.ndarray), which could not be read"),
    ((1.0, _ShapeRaises()), "must return dW as a numpy array or torch tensor, got _ShapeRaises"),
])
def test_odd_return_values_are_named_not_a_crash(out, words):
    """Objects that hold no values, or whose attributes raise: one UserCodeError that names
    what came back (before: an internal traceback, or "error: shape" as if the spec were bad)."""
    with pytest.raises(UserCodeError) as info:
        parse_output(out, (2, 2), "f")
    assert words in str(info.value), str(info.value)


def test_a_huge_int_loss_is_inf_not_a_crash():
    returned = parse_output((10**400, np.ones((2, 2))), (2, 2), "f")
    assert returned.loss == float("inf") and "too large" in returned.notes[0]


@pytest.mark.parametrize("out, words", [
    ((np.ones(3), np.ones((2, 2))), "loss as a number"),
    ((True, np.ones((2, 2))), "loss as a number"),
    ((1.0, np.ones((2, 2), dtype=np.int64)), "floating array"),
    ((1.0, [[1.0, 2.0], [3.0, 4.0]]), "numpy array or torch tensor"),
    ((1.0, np.ones((2, 3))), "W's shape"),
    (1.0, "must return (loss, dW)"),
])
def test_wrong_returns_are_named(out, words):
    with pytest.raises(UserCodeError, match=re.escape(words)):
        parse_output(out, (2, 2), "f")


def test_swapped_and_transposed_returns_say_so():
    with pytest.raises(UserCodeError, match=re.escape("returned (dW, loss): the assignment's order is (loss, dW)")):
        parse_output((np.ones((2, 3)), 1.5), (2, 3), "f")
    with pytest.raises(UserCodeError, match=re.escape("(W.T's shape: is dW transposed?)")):
        parse_output((1.5, np.ones((3, 2))), (2, 3), "f")
    with pytest.raises(UserCodeError) as info:                  # another shape: no guess
        parse_output((1.5, np.ones((4, 2))), (2, 3), "f")
    assert "transposed" not in str(info.value)
    assert parse_output((1.5, np.ones((2, 3))), (2, 3), "f").loss == 1.5


def test_float128_is_judged_in_float64_and_said(digits):
    report = judge(mutants.correct_longdouble, digits)
    assert report.passed and report.output_dtype == "float64"
    assert any("judged in float64 after conversion" in n for n in report.notes)


def test_float16_is_judged_in_float16(digits):
    """Right float16 code gets no PASS (see test_a_pass_at_16_bit_precision_is_refused_not_given),
    but a bug float16 can see still fails, named."""
    with pytest.raises(UsageError, match="returns dW as float16 and the loss as numpy float16"):
        judge(mutants.correct_float16, digits)

    def halved(W, X, y, reg, delta=1.0):
        loss, dW = mutants.correct_float16(W, X, y, reg, delta)
        return loss, dW - np.float16(reg) * W.astype(np.float16)

    assert judge(halved, digits).failed == "gradient"


def test_float32_inputs_and_outputs(digits):
    for fn in (mutants.correct_vectorized, mutants.correct_torch):
        report = judge(fn, digits, dtype="float32")
        assert report.passed and report.output_dtype == "float32"
    assert not judge(mutants.reg_grad_halved, digits, dtype="float32").passed


def test_sparse_judges_k_coordinates(digits):
    report = judge(mutants.correct_class_not_subtracted, digits, sparse=20)
    assert all(c.coordinates == 20 for c in report.checks)
    assert not report.passed


def test_torch_backend_detected(digits):
    assert judge(mutants.correct_torch, digits).backend == "torch"
    assert judge(mutants.correct_naive, digits).backend == "numpy"


# ----------------------------------------------------------------------------- code that does not run

def test_raising_function_does_not_run_with_its_traceback(digits):
    def broken(W, X, y, reg):
        return np.maximum(0, X.dot(W.T)), W                  # shapes do not fit: ValueError

    report = verify(broken, data=digits, points=_points(1.0), isolate=False)
    assert report.verdict == "error" and not report.passed
    assert "broken" in report.error.traceback and "verification/" not in report.error.traceback
    assert "torch inputs raise too" in report.error.message
    assert str(report).startswith("verify broken: DOES NOT RUN")


def test_a_wrong_return_is_not_retried_with_torch(digits):
    def ints(W, X, y, reg):
        return 1.0, np.zeros(W.shape, dtype=np.int64)

    report = verify(ints, data=digits, points=_points(1.0), isolate=False)
    assert report.verdict == "error" and "torch" not in report.error.message


def test_exiting_function_does_not_run(digits):
    """sys.exit in the user's code must not become verify's own exit status."""
    def exits(W, X, y, reg):
        raise SystemExit(0)

    report = verify(exits, data=digits, points=_points(1.0), isolate=False)
    assert report.verdict == "error" and "SystemExit" in report.error.message


@pytest.mark.parametrize("sparse", [None, 5])
def test_non_finite_gradient_fails_even_where_not_sampled(sparse, digits):
    def nan_one(W, X, y, reg):
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        dW = dW.copy()
        dW[3, 4] = np.nan
        return loss, dW

    report = verify(nan_one, data=digits, points=_points(1.0), isolate=False, sparse=sparse)
    assert not report.passed
    assert report.diagnosis[0].pattern == "non_finite" and "W[3, 4]" in report.diagnosis[0].message


def test_missing_module_hint(tmp_path, monkeypatch):
    assert missing_module_hint("past.builtins") == ("the module 'past' comes from the 'future' "
                                                    "package: pip install future")
    assert "install the package that provides the module 'zzz'" in missing_module_hint("zzz.sub")
    student = tmp_path / "linear_svm.py"
    student.write_text("from past.builtins import xrange\n\ndef f(W, X, y, reg):\n    pass\n")
    monkeypatch.setitem(sys.modules, "past", None)          # as if `future` were not installed
    with pytest.raises(UserCodeError) as info:
        load_function(f"{student}:f")
    assert info.value.hint.endswith("pip install future") and "linear_svm.py" in info.value.user_traceback


# Old solutions (2015-2016: Python 2, the 2015 layout) as students left them: each gets its own
# traceback and a hint.
_OLD_CODE = {
    "xrange": ("def f(W, X, y, reg):\n    for i in xrange(3):\n        pass\n",
               "hint: xrange is Python 2 .*use range"),
    "iteritems": ("def f(W, X, y, reg):\n    for k, v in {}.iteritems():\n        pass\n",
                  r"hint: dict.iteritems is Python 2 .*use items"),
    "tabs": ("def f(W, X, y, reg):\n    if reg:\n\treturn 0\n    return 1\n",
             "hint: the file mixes tabs and spaces .*expand -t 8"),
    "print": ("def f(W, X, y, reg):\n    print 'loss'\n", r"hint: print is a function in Python 3"),
    "2015 layout": ("def f(W, X, y, reg):\n    scores = W.dot(X)\n    return 0.0, W\n",
                    r"hint: a product's shapes do not fit: .*W \(C, D\) and X \(D, N\)"),
}


@pytest.mark.parametrize("case", sorted(_OLD_CODE))
def test_old_code_gets_a_hint(tmp_path, capsys, case):
    source, hint = _OLD_CODE[case]
    student = tmp_path / "linear_svm.py"
    student.write_text(source)
    code, out, err = run_cli(capsys, "verify", f"{student}:f")
    assert code == 2 and out == ""
    assert any(re.search(hint, line) for line in err), err
    assert "linear_svm.py" in "\n".join(err)                   # the student's own traceback


def test_no_hint_for_an_ordinary_error(tmp_path, capsys):     # the twin: no made-up advice
    student = tmp_path / "linear_svm.py"
    student.write_text("def f(W, X, y, reg):\n    return undefined_name\n")
    code, _, err = run_cli(capsys, "verify", f"{student}:f")
    assert code == 2 and not any(line.startswith("hint:") for line in err), err


def test_load_function(tmp_path):
    assert load_function(f"{MUTANTS}:correct_naive").__name__ == "correct_naive"
    assert load_function("verification.checks.reference:svm_loss_naive").__name__ == "svm_loss_naive"
    with pytest.raises(FileNotFoundError):
        load_function(f"{tmp_path}/missing.py:f")
    with pytest.raises(ValueError, match="no function 'nope'"):
        load_function(f"{MUTANTS}:nope")
    two = tmp_path / "two.py"
    two.write_text("def g(W, X):\n    return 0\n")
    with pytest.raises(ValueError, match="signature"):
        load_function(f"{two}:g")
    with pytest.raises(ValueError, match="no module"):
        load_function("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="expected"):
        load_function("no_colon")
    bad = tmp_path / "bad.py"
    bad.write_text("def f(W, X, y, reg)\n    return 0\n")
    with pytest.raises(UserCodeError, match="SyntaxError"):
        load_function(f"{bad}:f")


# ----------------------------------------------------------------------------- the Python API

def test_your_own_data_and_w(digits):
    X, y = digits.X.numpy(), digits.y.numpy()
    W = 1e-4 * np.random.default_rng(1).standard_normal((X.shape[1], 10))
    report = verify(mutants.correct_vectorized, X=X, y=y, W=W, isolate=False)
    assert report.passed and [p.name for p in report.points] == ["yours", "trained"]
    assert report.data == "your data (100 examples)"
    assert verify(mutants.correct_vectorized, X=torch.from_numpy(X), y=torch.from_numpy(y),
                  isolate=False).passed
    with pytest.raises(ValueError, match="W needs your X and y"):
        verify(mutants.correct_vectorized, W=W)
    with pytest.raises(ValueError, match="y"):
        verify(mutants.correct_vectorized, X=X, y=y[:5], isolate=False)


def test_a_non_finite_reference_loss_is_a_usage_error(digits):
    """No verdict when the loss itself overflows float64 at a check point (issue 16)."""
    with pytest.raises(ValueError, match="reference loss or gradient is not finite at the yours point"):
        verify(mutants.correct_vectorized, X=digits.X.numpy() * 1e300, y=digits.y.numpy(),
               W=np.full((65, 10), 1e10), isolate=False)
    with pytest.raises(ValueError, match="not finite at the small point with reg 1e[+]308"):
        verify(mutants.correct_vectorized, data=digits, points=_points(1.0), reg=1e308, isolate=False)
    report = verify(mutants.correct_vectorized, data=digits, points=_points(1.0), reg=1e307, isolate=False)
    assert report.passed                                 # the x10 escalation stops before overflow


def test_config_is_validated_once():
    with pytest.raises(ValueError, match="reg_convention"):
        VerifyConfig(reg_convention="2019")
    with pytest.raises(ValueError, match="timeout"):
        VerifyConfig(timeout=0)
    with pytest.raises(ValueError, match="isolate"):
        VerifyConfig(isolate="yes")


# ----------------------------------------------------------------------------- data and cache

def test_dev_split_matches_load_dataset():
    ds = load_dataset("digits", config=DataConfig(dtype="float32", seed=3))
    data = load_verify_data("digits", seed=3, cache=False)
    assert torch.equal(data.X, ds.tensors("dev")[0].to(torch.float64)) and torch.equal(data.y, ds.tensors("dev")[1])


def test_cache_reads_back_and_recomputes_a_bad_file(isolated_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3.0)}

    def check(a):
        return set(a) == {"a"} and a["a"].shape == (3,)

    assert cached_arrays("t", "k", compute, check)["a"].tolist() == [0, 1, 2] and len(calls) == 1
    assert cached_arrays("t", "k", compute, check)["a"].tolist() == [0, 1, 2] and len(calls) == 1
    (isolated_cache / "t-k.npz").write_bytes(b"not a zip")
    assert cached_arrays("t", "k", compute, check)["a"].tolist() == [0, 1, 2] and len(calls) == 2


def test_cifar_dev_split_is_cached_by_file_stamp(tmp_path, monkeypatch, isolated_cache):
    """The 50,000 images are read once; a changed file is read again (fake reader: no CIFAR)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"x")
    reads = []
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8)

    def fake_read(source):
        reads.append(source)
        labels = np.arange(50000) % 10
        return images, labels, images[:1000], labels[:1000], tuple("abcdefghij")

    monkeypatch.setattr(torch_svm.data.load, "read_cifar10", fake_read)
    first = load_verify_data("cifar10", folder, n=20)
    second = load_verify_data("cifar10", folder, n=20)
    assert len(reads) == 1 and torch.equal(first.X, second.X) and first.X.shape == (20, 3073)
    (folder / "data_batch_1").write_bytes(b"xy")
    load_verify_data("cifar10", folder, n=20)
    assert len(reads) == 2


# ----------------------------------------------------------------------------- the CLI (in-process judge)

def test_cli_text_is_print_report(capsys):
    code, out, _ = run_cli(capsys, "verify", f"{MUTANTS}:margin_as_coefficient", "--data", "random")
    report = verify(f"{MUTANTS}:margin_as_coefficient", data=load_verify_data("random"))
    assert code == 1 and out == str(report) + "\n"


def test_cli_json_shape(capsys):
    code, out, _ = run_cli(capsys, "verify", f"{MUTANTS}:mask_without_delta", "--json", "--data", "random")
    out = json.loads(out)
    assert code == 1 and out["verdict"] == "fail" and out["failed"] == "gradient"
    for key in ("coordinates", "mismatched", "kink_explained", "unexplained", "wrong_coordinates",
                "diagnosis", "checks", "output"):
        assert key in out
    assert out["mismatched"] == out["kink_explained"] + out["unexplained"] > 0
    worst = out["worst"][0]
    assert set(worst) >= {"index", "analytic", "numeric", "reference", "rel_error", "kinks"}
    assert out["diagnosis"][0]["pattern"] == "mask_without_delta"


def test_cli_pass_with_options(capsys):
    code, out, _ = run_cli(capsys, "verify", f"{MUTANTS}:correct_half_convention", "--reg-convention",
                           "half", "--backend", "numpy", "--sparse", "50", "--no-cache")
    assert code == 0 and "reg convention half" in out and "trained" in out
    assert "PASS" in out and "all 200 judged coordinates agree" in out
    code, _, err = run_cli(capsys, "verify", f"{MUTANTS}:correct_naive", "--reg", "1e308")
    assert code == 2 and len(err) == 1 and "--reg" in err[0]


@pytest.mark.parametrize("source, expect", [
    ("def f(W, X, y, reg)\n    return 0\n", "SyntaxError"),
    ("import numpy as np\ndef f(W, X, y, reg):\n    return 0.0, np.zeros(3)\n", "shape"),
])
def test_a_file_that_does_not_run(tmp_path, source, expect):
    path = tmp_path / "student.py"
    path.write_text(source)
    report = verify(f"{path}:f", data=load_verify_data("random"), isolate=False)
    assert report.verdict == "error" and expect in report.error.message


@pytest.mark.parametrize("source, expect", [
    ("def f(W, X, y, reg):\n    return helper(W)\n\ndef helper(W):\n    raise ValueError('oops')\n",
     "oops"),
    ("import no_such_package_xyz\ndef f(W, X, y, reg):\n    pass\n", "no_such_package_xyz"),
])
def test_cli_does_not_run(tmp_path, capsys, source, expect):
    path = tmp_path / "student.py"
    path.write_text(source)
    code, out, err = run_cli(capsys, "verify", f"{path}:f", "--data", "random")
    assert code == 2 and out == ""
    assert err[0].startswith("torch-svm verify: error: ") and expect in err[0]
    if expect == "oops":                                      # the user's own frames, not ours
        assert 'student.py", line 5' in "\n".join(err) and "helper" in "\n".join(err)
        assert not any("verification/" in line for line in err)
    else:
        assert err[-1] == ("hint: install the package that provides the module "
                           "'no_such_package_xyz' (often: pip install no_such_package_xyz)")


def test_cli_missing_function(capsys):
    code, _, err = run_cli(capsys, "verify", f"{MUTANTS}:nope")
    assert code == 2 and len(err) == 1 and "no function 'nope'" in err[0]


@pytest.mark.parametrize("name, content, words", [
    ("notes.txt", "x", "cannot import notes.txt: not a Python source file"),   # was: no module 'notes'
    ("svm.ipynb", "{}", "svm.ipynb is a notebook; verify imports .py files"),
])
def test_a_spec_that_is_not_a_python_file_says_what_it_is(tmp_path, monkeypatch, capsys, name,
                                                          content, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(content)
    code, _, err = run_cli(capsys, "verify", f"{name}:f")
    assert code == 2 and len(err) == 1 and words in err[0], err
    if name.endswith(".ipynb"):
        assert "linear_svm.py" in err[0] and "verify(svm_loss_vectorized)" in err[0]


@pytest.mark.parametrize("argv, words, api", [
    (["verify", f"{MUTANTS}:f", "--data", "cifar10"], "--data 'cifar10' needs --data-dir:", "data_dir"),
    (["train", "--data", "cifar10"], "cifar10 needs its folder, --data-dir:", "download=True"),
    (["train", "--num-train", "5000"], "--num-train + --num-val + --num-test must be", "num_train"),
    (["train", "--data", "nothing-here"], "--data 'nothing-here' is neither", "error: data 'nothing"),
])
def test_cli_errors_speak_in_flags_not_python_names(capsys, argv, words, api):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and len(err) == 1 and words in err[0] and api not in err[0], err
    if "download=True" == api:
        assert "(--download)" in err[0]


def _returns(loss_as, dW_as, scale=1.0):
    def fn(W, X, y, reg):
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        return loss_as(loss * scale), dW_as(dW * scale)
    return fn


@pytest.mark.parametrize("loss_as, dW_as", [
    (float, lambda g: g.astype(np.float16)),                    # the forged PASS of issue 21
    (float, lambda g: torch.from_numpy(g).to(torch.bfloat16)),
    (np.float16, lambda g: g),
    (float, lambda g: g),                                       # the float64 control
])
def test_each_value_is_judged_by_its_own_precision(digits, loss_as, dW_as):
    """A loss 5% off fails whatever dtype dW comes in: a float16 dW no longer lends the
    loss float16's allowance (a float64 loss is judged at float64). At 3% in both, too."""
    for scale in (1.05, 1.03):
        report = verify(_returns(loss_as, dW_as, scale), data=digits, points=_points(1.0),
                        isolate=False)
        assert report.verdict == "fail", (scale, report.output_dtype, report.loss_type)


@pytest.mark.parametrize("loss_as, dW_as", [
    (np.float16, lambda g: g.astype(np.float16)),
    (float, lambda g: torch.from_numpy(g).to(torch.bfloat16)),
    (lambda v: torch.tensor(v, dtype=torch.bfloat16), lambda g: g),
])
def test_a_pass_at_16_bit_precision_is_refused_not_given(digits, loss_as, dW_as):
    """Right code returning 16-bit floats: its rounding (1e-3 relative) would hide bugs of a
    few percent, so instead of a PASS that means nothing, a usage error (exit 2) says so;
    the same code in float32 passes (the negative twin)."""
    with pytest.raises(UsageError, match="cannot judge at this precision.*float32 or float64"):
        verify(_returns(loss_as, dW_as), data=digits, points=_points(1.0), isolate=False)
    f32 = verify(_returns(np.float32, lambda g: g.astype(np.float32)), data=digits,
                 points=_points(1.0), isolate=False)
    assert f32.passed


def _squared_hinge_loss(W, X, y, reg, delta=1.0):
    """A loss with no name in the diagnosis: the squared hinge, with the hinge's right dW."""
    n = X.shape[0]
    margins = mutants._scores_margins(W, X, y, 1.0)
    return (np.maximum(0, margins) ** 2).sum() / n + reg * np.sum(W * W), \
        mutants.correct_vectorized(W, X, y, reg)[1]


def _column_three_scaled(W, X, y, reg, delta=1.0):
    loss, dW = mutants.correct_vectorized(W, X, y, reg)
    dW[:, 3] *= 1.3
    return loss, dW


@pytest.mark.parametrize("fn, words", [
    (mutants.bias_row_not_regularized, ["only with reg > 0: the regularization term of the gradient",
                                        "in row 64 of dW only (the last row: the bias row"]),
    (_squared_hinge_loss, ["the data term of the loss, not the regularization",
                           "yours minus the reference: small reg=0:"]),
    (_column_three_scaled, ["the data term of the gradient", "in column 3 of dW only"]),
])
def test_when_no_known_bug_fits_the_report_says_where_the_difference_lives(digits, fn, words):
    """"no known bug fits" used to be a dead end (issue 23): it now says which term (reg or
    data), which rows and columns, and the numbers, from which the next step follows."""
    report = judge(fn, digits)
    (unknown,) = [d for d in report.diagnosis if d.pattern == "no_known_pattern"]
    for w in words:
        assert w in unknown.message, unknown.message
    assert "row" not in unknown.message or fn is mutants.bias_row_not_regularized
