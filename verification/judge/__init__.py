"""The judge of a user's loss function: verify, its worker, evaluation, diagnosis and report."""
