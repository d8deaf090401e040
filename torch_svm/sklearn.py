r"""A scikit-learn classifier for the linear SVM: :class:`LinearSVMClassifier`.

Optional: it needs scikit-learn (``pip install "torch-svm[sklearn]"``); ``import torch_svm``
never imports scikit-learn, only ``import torch_svm.sklearn`` does.

Training is the library's own: :func:`torch_svm.train.train` (``torch.optim.SGD``) on a
:class:`~torch_svm.model.LinearSVM` whose ``backward`` is the hand-written gradient, fed by
:func:`torch_svm.data.from_arrays` (the same preprocessing as every other source). Labels may
be any values (``classes_``, sorted); they are mapped to ``0..C-1`` for training.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError('torch_svm.sklearn needs scikit-learn, which is not installed: '
                      'pip install "torch-svm[sklearn]"') from exc
try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6: the same check was a method  # pragma: no cover
    def validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

from torch_svm.data import DataConfig, Preprocessing, from_arrays
from torch_svm.device import resolve_device
from torch_svm.data.config import DATA_DTYPES
from torch_svm.errors import ArgumentError, check_choice, check_int, clip
from torch_svm.model import LinearSVM
from torch_svm.train import TrainConfig, train

__all__ = ["LinearSVMClassifier"]


class LinearSVMClassifier(ClassifierMixin, BaseEstimator):
    r"""The CS231n multiclass SVM, trained by torch-svm's minibatch SGD and hand-written gradient.

    Minimises the Weston-Watkins multiclass hinge loss over ``W: (D + fit_intercept, C)``

    .. math::

        L(W) = \frac{1}{N} \sum_i \sum_{j \ne y_i} \max(0,\; s_{ij} - s_{iy_i} + \Delta)^p
               + \lambda \sum W^2, \qquad s_i = [z_i, 1]\, W,

    where :math:`z_i` is row :math:`x_i` standardized with the training set's mean and standard
    deviation (``standardize``) and the column of ones is the bias trick (``fit_intercept``;
    its row of W, the intercept, is regularized too, as in the assignment).

    Parameters
    ----------
    lr : float, default=0.03
        SGD learning rate.
    reg : float, default=1e-3
        L2 strength :math:`\lambda` (the loss's ``reg * sum(W**2)``).
    delta : float, default=1.0
        Hinge margin :math:`\Delta` (> 0).
    p : {1, 2}, default=1
        1: hinge, 2: squared hinge.
    iters : int, default=1000
        SGD steps in :meth:`fit`, each on ``batch_size`` rows drawn with replacement (the
        assignment's sampling). :meth:`partial_fit` ignores it: see there.
    batch_size : int, default=200
        Rows per step.
    momentum : float, default=0.0
        SGD momentum, in [0, 1); the buffer starts at zero in each fit / partial_fit call.
    fit_intercept : bool, default=True
        Append a column of ones (the bias trick). False: the decision function goes through
        the origin, and ``standardize`` then only scales (does not centre).
    standardize : bool, default=True
        Scale each feature to unit variance (and centre it, with ``fit_intercept``) with the
        statistics of the data passed to :meth:`fit` or to the first :meth:`partial_fit`.
        The defaults of ``lr`` / ``reg`` assume it; without it, scale the features yourself.
    dtype : {"float64", "float32"}, default="float64"
        Dtype of the training computation.
    device : str, default="cpu"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``, for training; predictions are
        computed with numpy from ``coef_`` and ``intercept_``.
    random_state : int, RandomState instance or None, default=None
        Seeds W's initialisation and the minibatch draws. Global random generators are left
        as they were.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels, sorted; column ``c`` of W scores ``classes_[c]``.
    coef_ : ndarray of shape (1, n_features) if n_classes == 2 else (n_classes, n_features)
        Weights on the original (unstandardized) features; for two classes, the second
        class's minus the first's, as in :class:`sklearn.svm.LinearSVC`.
    intercept_ : ndarray of shape (1,) or (n_classes,)
        The matching intercepts, so ``decision_function(X) = X @ coef_.T + intercept_``.
    W_ : ndarray of shape (n_features + fit_intercept, n_classes)
        The trained LinearSVM's W, on the standardized features (float64).
    mean_, scale_ : ndarray of shape (n_features,)
        The standardization: ``z = (x - mean_) / scale_`` (zeros and ones when off).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when X has feature names that are all strings.
    n_iter_ : int
        SGD steps of the last fit / partial_fit call.
    t_ : int
        SGD steps since the last :meth:`fit`, partial_fit calls included.
    loss_curve_ : list of float
        The minibatch loss of every step of the last call.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from torch_svm.sklearn import LinearSVMClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LinearSVMClassifier(random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    """

    def __init__(self, *, lr: float = 0.03, reg: float = 1e-3, delta: float = 1.0, p: int = 1,
                 iters: int = 1000, batch_size: int = 200, momentum: float = 0.0,
                 fit_intercept: bool = True, standardize: bool = True, dtype: str = "float64",
                 device: str = "cpu", random_state=None) -> None:
        self.lr = lr
        self.reg = reg
        self.delta = delta
        self.p = p
        self.iters = iters
        self.batch_size = batch_size
        self.momentum = momentum
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.dtype = dtype
        self.device = device
        self.random_state = random_state

    # ------------------------------------------------------------------------------ fit

    def fit(self, X, y) -> "LinearSVMClassifier":
        """Train from a fresh W for ``iters`` SGD steps on ``X: (n_samples, n_features)``, ``y``."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self._set_classes(np.unique(y))
        self.t_ = 0
        return self._train(X, np.searchsorted(self.classes_, y), None, self.iters, "replacement")

    def partial_fit(self, X, y, classes=None) -> "LinearSVMClassifier":
        """One epoch of SGD over ``X, y`` (``ceil(n_samples / batch_size)`` steps, each row once),
        continuing from the current W (from a fresh one on the first call).

        ``classes`` (every label y may take) is required on the first call and must match
        ``classes_`` afterwards. The standardization is fixed by the first call's X.
        """
        first = not hasattr(self, "W_")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], reset=first)
        check_classification_targets(y)
        if first:
            if classes is None:
                raise ArgumentError("classes must be passed on the first call to partial_fit "
                                 "(every label y may take), got None")
            self._set_classes(np.unique(classes))
            self.t_ = 0
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ArgumentError(f"classes must equal classes_ {self.classes_.tolist()} from the first "
                             f"partial_fit call, got {np.unique(classes).tolist()}")
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ArgumentError(f"y holds labels that are not in classes_ "
                             f"{self.classes_.tolist()}: {unknown.tolist()}")
        iters = math.ceil(len(y) / check_int("batch_size", self.batch_size, min=1))
        return self._train(X, np.searchsorted(self.classes_, y), None if first else self.W_,
                           iters, "epoch")

    # ------------------------------------------------------------------------------ predict

    def decision_function(self, X) -> np.ndarray:
        """Scores ``(n_samples, n_classes)``; for two classes ``(n_samples,)``, > 0 for ``classes_[1]``."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        scores = X @ self.coef_.T + self.intercept_
        return scores.ravel() if len(self.classes_) == 2 else scores

    def predict(self, X) -> np.ndarray:
        """The highest-scoring class of each row."""
        scores = self.decision_function(X)
        best = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[best]

    # ------------------------------------------------------------------------------ private

    def _set_classes(self, classes: np.ndarray) -> None:
        if len(classes) < 2:
            raise ArgumentError(f"y must hold at least 2 classes to train a classifier, got 1 class: "
                             f"{classes.tolist()}")
        self.classes_ = classes

    def _train(self, X: np.ndarray, y: np.ndarray, W: Optional[np.ndarray], iters: int,
               sampling: str) -> "LinearSVMClassifier":
        """``iters`` SGD steps of torch_svm.train.train from W (None: a fresh one, and the
        standardization taken from X); sets the fitted attributes."""
        bias, standardize = self._flag("fit_intercept"), self._flag("standardize")
        check_choice("dtype", self.dtype, DATA_DTYPES)
        device = resolve_device(self.device)
        seed = int(check_random_state(self.random_state).randint(2**31 - 1) + self.t_) % 2**31
        config = TrainConfig(lr=self.lr, reg=self.reg, iters=iters, batch_size=self.batch_size,
                             momentum=self.momentum, sampling=sampling, delta=self.delta, p=self.p,
                             init_scale=0.001, seed=seed, device=str(device))
        record = None if W is None else Preprocessing(
            torch.from_numpy(self.mean_) if bias and standardize else None,
            torch.from_numpy(self.scale_) if standardize else None, bias)
        data = from_arrays(X, y, name="sklearn", preprocessing=record, config=DataConfig(
            num_val=0, num_test=0, num_dev=0, center=bias and standardize,
            standardize=standardize, bias=bias, num_classes=len(self.classes_), dtype=self.dtype))
        if W is None:
            d = X.shape[1]
            p = data.preprocessing
            self.mean_ = np.zeros(d) if p.mean is None else p.mean.numpy().copy()
            self.scale_ = np.ones(d) if p.scale is None else p.scale.numpy().copy()
        model = None
        if W is not None:
            model = LinearSVM(W.shape[0], W.shape[1], dtype=data.dtype)
            with torch.no_grad():
                model.W.copy_(torch.from_numpy(W))
        result = train(data, config, model=model)
        self.W_ = result.model.W.detach().cpu().to(torch.float64).numpy()        # (D', C)
        self.n_iter_, self.loss_curve_ = int(config.iters), result.loss_history
        self.t_ += self.n_iter_
        d = X.shape[1]
        Wx = self.W_[:d] / self.scale_[:, None]                                   # (D, C) raw units
        b = (self.W_[d] if bias else 0.0) - self.mean_ @ Wx                      # (C,)
        if len(self.classes_) == 2:
            self.coef_, self.intercept_ = (Wx[:, 1] - Wx[:, 0])[None, :], np.array([b[1] - b[0]])
        else:
            self.coef_, self.intercept_ = Wx.T.copy(), b
        return self

    def _flag(self, name: str) -> bool:
        value = getattr(self, name)
        if not isinstance(value, (bool, np.bool_)):
            raise ArgumentError(f"{name} must be True or False, got {clip(repr(value), 100)}")
        return bool(value)

