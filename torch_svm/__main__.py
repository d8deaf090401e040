"""``python -m torch_svm``: the ``torch-svm`` command line."""
from torch_svm.cli import main

raise SystemExit(main())
