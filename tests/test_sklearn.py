"""torch_svm.sklearn.LinearSVMClassifier: scikit-learn's own estimator checks, Pipeline and
GridSearchCV, the folding of the standardization into coef_ / intercept_, partial_fit, and
scikit-learn staying optional. References: sklearn's StandardScaler, LinearSVC and a plain
float64 product with W_.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits, load_iris  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from torch_svm.sklearn import LinearSVMClassifier  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = dict(iters=50, lr=0.3, random_state=0)   # converged on these small, easy sets


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


@parametrize_with_checks([LinearSVMClassifier(iters=30, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_standardization_is_folded_into_coef_and_intercept(iris):
    X, _, y, _ = iris
    for bias in (True, False):
        clf = LinearSVMClassifier(fit_intercept=bias, **FAST).fit(X, y)
        Z = (X - clf.mean_) / clf.scale_
        if bias:
            Z = np.hstack([Z, np.ones((len(Z), 1))])
        np.testing.assert_allclose(clf.decision_function(X), Z @ clf.W_, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(clf.mean_, X.mean(axis=0) if bias else 0, rtol=1e-12)
        np.testing.assert_allclose(clf.scale_, X.std(axis=0), rtol=1e-12)
        assert clf.W_.shape == (X.shape[1] + bias, 3)
    assert np.all(clf.intercept_ == 0)                        # through the origin, exactly
    binary = LinearSVMClassifier(**FAST).fit(X, y == 2)
    Z = np.hstack([(X - binary.mean_) / binary.scale_, np.ones((len(X), 1))])
    np.testing.assert_allclose(binary.decision_function(X), Z @ (binary.W_[:, 1] - binary.W_[:, 0]),
                               rtol=1e-10, atol=1e-10)
    assert binary.coef_.shape == (1, 4) and binary.intercept_.shape == (1,)


def test_inside_a_pipeline_equals_its_own_standardization(iris):
    """StandardScaler then standardize=False trains on the same z: the same model."""
    X, X_te, y, y_te = iris
    own = LinearSVMClassifier(**FAST).fit(X, y)
    piped = make_pipeline(StandardScaler(), LinearSVMClassifier(standardize=False, **FAST)).fit(X, y)
    np.testing.assert_allclose(piped[-1].W_, own.W_, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(piped.predict(X_te), own.predict(X_te))
    assert piped.score(X_te, y_te) > 0.9


def test_grid_search(iris):
    X, X_te, y, y_te = iris
    search = GridSearchCV(LinearSVMClassifier(**FAST),
                          {"lr": [1e-4, 0.3], "reg": [1e-4, 0.1]}, cv=3).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_["lr"] == 0.3 and search.best_score_ > 0.85
    assert search.score(X_te, y_te) > 0.85


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # older liblinear
def test_accuracy_is_close_to_linear_svc():
    """digits, standardized: within 3 points of LinearSVC's test accuracy (0.96 or so)."""
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    reference = LinearSVC(random_state=0).fit(scaler.transform(X_tr), y_tr)
    ours = LinearSVMClassifier(iters=150, lr=0.1, random_state=0).fit(X_tr, y_tr)
    assert ours.score(X_te, y_te) > reference.score(scaler.transform(X_te), y_te) - 0.03


def test_any_labels():
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = LinearSVMClassifier(**FAST).fit(X, names)
    assert clf.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert set(clf.predict(X)) == set(names) and clf.score(X, names) > 0.9
    signed = np.where(y == 0, -1, 1)
    clf = LinearSVMClassifier(**FAST).fit(X, signed)
    assert clf.classes_.tolist() == [-1, 1] and clf.decision_function(X).shape == (150,)
    np.testing.assert_array_equal(clf.predict(X), np.where(clf.decision_function(X) > 0, 1, -1))


def test_partial_fit_continues_from_W(iris):
    X, X_te, y, y_te = iris
    clf = LinearSVMClassifier(batch_size=32, lr=0.3, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:50], y[:50], classes=[0, 1, 2])
    assert clf.n_iter_ == 2 and clf.t_ == 2                  # one epoch: ceil(50 / 32) steps
    first = clf.W_.copy()
    np.testing.assert_allclose(clf.mean_, X[:50].mean(axis=0))  # fixed by the first call
    for _ in range(8):
        clf.partial_fit(X, y)
    assert clf.t_ == 2 + 8 * 4 and not np.allclose(clf.W_, first)
    np.testing.assert_allclose(clf.mean_, X[:50].mean(axis=0))
    assert clf.score(X_te, y_te) > 0.85
    # the same epoch from the same W with a fresh estimator: continuing really starts from W
    fresh = LinearSVMClassifier(batch_size=32, lr=0.3, random_state=0).partial_fit(X[:50], y[:50],
                                                                          classes=[0, 1, 2])
    np.testing.assert_array_equal(fresh.W_, first)
    with pytest.raises(ValueError, match=r"y holds labels that are not in classes_ \[0, 1, 2\]: \[7\]"):
        clf.partial_fit(X[:2], [0, 7])
    with pytest.raises(ValueError, match=r"classes must equal classes_ \[0, 1, 2\].*got \[0, 1\]"):
        clf.partial_fit(X[:2], [0, 1], classes=[0, 1])
    clf.fit(X, y)                                            # fit starts over
    assert clf.t_ == 1000


def test_reproducible_and_leaves_global_generators_alone(iris):
    X, _, y, _ = iris
    np.random.seed(123)
    torch.manual_seed(123)
    expected_np, expected_torch = np.random.rand(), torch.rand(1)
    np.random.seed(123)
    torch.manual_seed(123)
    a = LinearSVMClassifier(**FAST).fit(X, y)
    assert np.random.rand() == expected_np and torch.equal(torch.rand(1), expected_torch)
    b = LinearSVMClassifier(**FAST).fit(X, y)
    c = LinearSVMClassifier(**{**FAST, "random_state": 1}).fit(X, y)
    np.testing.assert_array_equal(a.W_, b.W_)
    assert not np.array_equal(a.W_, c.W_)
    f32 = LinearSVMClassifier(dtype="float32", **FAST).fit(X, y)
    np.testing.assert_allclose(f32.W_, a.W_, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("params, message", [
    ({"dtype": "float16"}, "dtype must be one of .*got 'float16'"),
    ({"fit_intercept": "yes"}, "fit_intercept must be True or False, got 'yes'"),
    ({"standardize": 1}, "standardize must be True or False, got 1"),
    ({"lr": -1.0}, "lr must be .*> 0, got -1.0"),
    ({"reg": "a lot"}, "reg must be a finite number >= 0, got 'a lot'"),
    ({"iters": 0}, "iters must be an integer >= 1 and <= 100000000, got 0"),
    ({"batch_size": 2.5}, "batch_size must be an integer >= 1.*, got 2.5"),
    ({"p": 3}, "p must be 1 or 2, got 3"),
    ({"delta": 0.0}, "delta must be a finite number > 0, got 0.0"),
    ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
])
def test_bad_hyperparameters_are_named(iris, params, message):
    X, _, y, _ = iris
    with pytest.raises(ValueError, match=message):
        LinearSVMClassifier(**{**FAST, **params}).fit(X, y)


def test_numpy_integer_hyperparameters_work(iris):
    """GridSearchCV over np.arange gives numpy scalars."""
    X, _, y, _ = iris
    clf = LinearSVMClassifier(iters=np.int64(5), batch_size=np.int32(64), lr=np.float32(0.01),
                              random_state=0).fit(X, y)
    assert clf.n_iter_ == 5


def test_scikit_learn_stays_optional():
    code = (
        "import sys\n"
        "import torch_svm, torch_svm.data, torch_svm.train, torch_svm.cli\n"
        "assert 'sklearn' not in sys.modules, sorted(m for m in sys.modules if 'sklearn' in m)\n"
        "sys.modules['sklearn'] = None  # as if it were not installed\n"
        "try:\n"
        "    import torch_svm.sklearn\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert 'pip install "torch-svm[sklearn]"' in run.stdout
