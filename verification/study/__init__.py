"""The kink study: when and how often kinks make finite differences disagree (torch-svm kinks)."""
