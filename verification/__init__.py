"""The verification layer above :mod:`torch_svm`: references, kink-aware finite differences,
cross-checks, the kink study, and :func:`verify` for students' code.

``from verification import verify`` is the notebook entry point (the function of
:mod:`verification.verify`, which it shadows here: import the module's other names with
``from verification.verify import ...``).
"""
from verification.devdata import load_verify_data
from verification.verify import VerifyConfig, verify

__all__ = ["verify", "VerifyConfig", "load_verify_data"]
