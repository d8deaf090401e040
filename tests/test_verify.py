"""``verification.verify`` and ``torch-svm verify``: every correct student implementation passes,
every buggy one fails (at delta 1 and 100, steps 1e-3 to 1e-7), common bugs are named, exact
kinks are accepted with either convention, and bad user code is a usage error with its traceback."""
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mutants
from torch_svm.cli import main
from torch_svm.data import DataConfig, load_dataset
from verification.verify import UserCodeError, VerifyConfig, default_points, load_function, verify

MUTANTS = str(Path(__file__).with_name("mutants.py"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", config=DataConfig(dtype="float64"))
    return ds.X_dev, ds.y_dev


@functools.lru_cache(maxsize=None)
def _points(delta):
    ds = load_dataset("digits", config=DataConfig(dtype="float64"))
    return default_points(ds.X_dev, ds.y_dev, 10, delta)


def judge(fn, digits, delta=1.0, **config):
    X, y = digits
    return verify(functools.partial(fn, delta=delta), X, y, 10, VerifyConfig(delta=delta, **config),
                  points=_points(delta))


# ----------------------------------------------------------------------------- the mutation suite

@pytest.mark.parametrize("h", [1e-3, 1e-4, 1e-5, 1e-6, 1e-7])
@pytest.mark.parametrize("delta", [1.0, 100.0])
@pytest.mark.parametrize("name", sorted(mutants.CORRECT))
def test_correct_implementation_passes(name, delta, h, digits):
    report = judge(mutants.CORRECT[name], digits, delta, h=h)
    assert report.passed, [c for c in report.checks if not c.passed]
    assert report.diagnosis == []


@pytest.mark.parametrize("h", [1e-3, 1e-5, 1e-7])
@pytest.mark.parametrize("delta", [1.0, 100.0])
@pytest.mark.parametrize("name", sorted(mutants.BUGGY))
def test_buggy_implementation_fails(name, delta, h, digits):
    report = judge(mutants.BUGGY[name], digits, delta, h=h)
    assert not report.passed
    assert report.totals()["unexplained"] > 0 or not all(c.loss_ok for c in report.checks)


@pytest.mark.parametrize("name", sorted(mutants.EXPECTED_DIAGNOSIS))
def test_common_bugs_are_named(name, digits):
    report = judge(mutants.BUGGY[name], digits)
    found = {(d["what"], d["pattern"]) for d in report.diagnosis}
    assert mutants.EXPECTED_DIAGNOSIS[name] in found, report.diagnosis
    assert all(d["residual"] < 0.05 for d in report.diagnosis)


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

def _integer_problem(seed=0, n=60, d=12, c=5):
    """Integer X and W: margins are exact integers, many exactly 0 with delta = 1."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(-2, 3, (n, d), generator=g).double()
    W = torch.randint(-1, 2, (d, c), generator=g).double()
    return X, torch.randint(c, (n,), generator=g), W


def test_either_value_at_an_exact_kink_is_accepted():
    X, y, W = _integer_problem()
    reports = {name: verify(fn, X, y, 5, points={"integer": (W, "integer W")})
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
    X, y, W = _integer_problem()

    def kink_value_two(W, X, y, reg):                       # 2 at a kink: not a subgradient
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        _, dW_ge = mutants.correct_ge_kink(W, X, y, reg)
        return loss, dW + 2 * (dW_ge - dW)

    report = verify(kink_value_two, X, y, 5, points={"integer": (W, "integer W")})
    assert not report.passed
    assert all(c.grad_mismatched > 0 for c in report.checks)


# ----------------------------------------------------------------------------- precision, sparse

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


# ----------------------------------------------------------------------------- bad user code

def test_raising_function_is_a_user_error_with_its_traceback(digits):
    def broken(W, X, y, reg):
        return np.maximum(0, X.dot(W.T)), W                  # shapes do not fit: ValueError

    with pytest.raises(UserCodeError) as info:
        verify(broken, *digits, 10, points=_points(1.0))
    assert "broken" in info.value.user_traceback and "verification/verify.py" not in info.value.user_traceback


def test_exiting_function_is_a_user_error(digits):
    """sys.exit in the user's code must not become verify's own exit status."""
    def exits(W, X, y, reg):
        raise SystemExit(0)

    with pytest.raises(UserCodeError, match="SystemExit"):
        verify(exits, *digits, 10, points=_points(1.0))


@pytest.mark.parametrize("sparse", [None, 5])
def test_non_finite_gradient_fails_even_where_not_sampled(sparse, digits):
    def nan_one(W, X, y, reg):
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        dW = dW.copy()
        dW[3, 4] = np.nan
        return loss, dW

    report = verify(nan_one, *digits, 10, VerifyConfig(sparse=sparse), points=_points(1.0))
    assert not report.passed
    assert report.diagnosis[0]["pattern"] == "non_finite" and "W[3, 4]" in report.diagnosis[0]["message"]


@pytest.mark.parametrize("returned", ["scalar", "shape", "vector_loss"])
def test_wrong_return_is_a_user_error(returned, digits):
    def fn(W, X, y, reg):
        loss, dW = mutants.correct_vectorized(W, X, y, reg)
        return {"scalar": loss, "shape": (loss, dW.T), "vector_loss": (np.ones(3), dW)}[returned]

    with pytest.raises(UserCodeError):
        verify(fn, *digits, 10, points=_points(1.0))


def test_load_function(tmp_path):
    assert load_function(f"{MUTANTS}:correct_naive").__name__ == "correct_naive"
    assert load_function("verification.reference:svm_loss_naive").__name__ == "svm_loss_naive"
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


# ----------------------------------------------------------------------------- the CLI

def test_cli_pass_and_fail(capsys):
    assert main(["verify", f"{MUTANTS}:correct_naive"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "trained" in out
    assert main(["verify", f"{MUTANTS}:reg_grad_halved"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "regularization gradient halved" in out and "W[" in out


def test_cli_json_shape(capsys):
    assert main(["verify", f"{MUTANTS}:mask_without_delta", "--json", "--data", "random"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "fail"
    for key in ("coordinates", "mismatched", "kink_explained", "unexplained", "diagnosis", "checks"):
        assert key in out
    assert out["mismatched"] == out["kink_explained"] + out["unexplained"] > 0
    worst = out["worst"][0]
    assert set(worst) >= {"index", "analytic", "numeric", "reference", "rel_error", "kinks"}
    assert out["diagnosis"][0]["pattern"] == "mask_without_delta"


def test_cli_delta_and_backend(capsys):
    assert main(["verify", f"{MUTANTS}:correct_torch", "--backend", "torch", "--delta", "1",
                 "--sparse", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["coordinates"] == 4 * 50


@pytest.mark.parametrize("source, expect", [
    ("def f(W, X, y, reg)\n    return 0\n", "SyntaxError"),
    ("def f(W, X, y, reg):\n    return helper(W)\n\ndef helper(W):\n    raise ValueError('oops')\n",
     "oops"),
    ("import numpy as np\ndef f(W, X, y, reg):\n    return 0.0, np.zeros(3)\n", "shape"),
])
def test_cli_usage_errors(tmp_path, capsys, source, expect):
    path = tmp_path / "student.py"
    path.write_text(source)
    assert main(["verify", f"{path}:f"]) == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) >= 1
    if expect == "oops":                                      # the user's own frames, not ours
        assert "helper" in err and 'student.py", line 5' in err and "verification/verify.py" not in err


def test_cli_missing_function(capsys):
    assert main(["verify", f"{MUTANTS}:nope"]) == 2
    assert "no function 'nope'" in capsys.readouterr().err
