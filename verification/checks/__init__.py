"""The gradient checks: references, finite differences, kinks, the cross-check and grad_check_sparse."""
