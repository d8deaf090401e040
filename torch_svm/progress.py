"""Progress bars for long work, on stderr, silent where nobody watches."""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Optional

__all__: list = []    # internal: used by torch_svm itself

def progress(iterable: Optional[Iterable] = None, *, total: Optional[int] = None,
             desc: str = "", enabled: bool = True, **kwargs: Any):
    """A tqdm progress bar on stderr; silent when ``enabled`` is False or stderr is not a TTY
    unless TORCH_SVM_PROGRESS=1 forces it on."""
    force = os.environ.get("TORCH_SVM_PROGRESS") == "1"
    disable = not enabled or (not force and not sys.stderr.isatty())
    if disable:   # tqdm.auto warns in a Jupyter kernel without ipywidgets, even for no bar
        from tqdm import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False,
                dynamic_ncols=True, file=sys.stderr, **kwargs)
