"""The verification layer above :mod:`torch_svm`: references, kink-aware finite differences,
cross-checks, the kink study, and :func:`verify` for students' code.

In the assignment's notebook, ``from verification import verify`` judges a function object
(the function of :mod:`verification.verify`, which it shadows here: import the module's other
names with ``from verification.verify import ...``), and
``from verification import grad_check_sparse`` replaces the assignment's own check
(:mod:`verification.sparse`), adding whether each mismatch straddles a kink.
"""
from verification.devdata import load_verify_data
from verification.sparse import grad_check_sparse
from verification.verify import VerifyConfig, verify

__all__ = ["verify", "VerifyConfig", "load_verify_data", "grad_check_sparse"]
