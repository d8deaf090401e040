"""The verification layer above :mod:`torch_svm`, in three subsystems:

* :mod:`verification.checks`: the references (naive loops, autograd, ``MultiMarginLoss``),
  kink-aware finite differences, :func:`~verification.checks.kinkcheck.kinkcheck`, the
  cross-check and :func:`grad_check_sparse`;
* :mod:`verification.judge`: :func:`verify`, the judge of a user's loss function (loading it,
  running it in a worker process, the evaluation, the diagnosis and the report);
* :mod:`verification.study`: the kink study (``torch-svm kinks``).

In the assignment's notebook, ``from verification import verify`` judges a function object,
and ``from verification import grad_check_sparse`` replaces the assignment's own check,
adding whether each mismatch straddles a kink.
"""
from verification.checks.sparse import grad_check_sparse
from verification.judge.devdata import load_verify_data
from verification.judge.verify import VerifyConfig, verify

__all__ = ["verify", "VerifyConfig", "load_verify_data", "grad_check_sparse"]
